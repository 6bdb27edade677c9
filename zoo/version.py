"""zoo's version, in a module of its own so that anything may read it without import loops."""

__version__ = "0.1.0"
