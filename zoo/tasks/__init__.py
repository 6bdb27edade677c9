"""Tasks: plug-ins that give the one engine its data, input, head, loss and metrics.

Each module in this package defines one :class:`~zoo.tasks.base.Task` subclass registered with
:func:`register_task`.  Adding a task is adding one file here.  Importing this package imports
the task modules, which must not import TensorFlow at module level.
"""

from __future__ import annotations

import importlib
import pkgutil

from zoo.errors import ZooError, did_you_mean

_TASKS: dict[str, type] = {}
_loaded = False


def register_task(cls: type) -> type:
    if cls.name in _TASKS:
        raise ZooError(f"task {cls.name!r} is already registered")
    _TASKS[cls.name] = cls
    return cls


def _ensure_loaded() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for mod in pkgutil.iter_modules(__path__):
            if mod.name != "base":
                importlib.import_module(f"{__name__}.{mod.name}")


def list_tasks() -> list[str]:
    _ensure_loaded()
    return sorted(_TASKS)


def get_task(name: str, where: str = "task"):
    _ensure_loaded()
    try:
        return _TASKS[name]
    except KeyError:
        raise ZooError(f"{where}: unknown task {name!r}{did_you_mean(name, _TASKS)}; "
                       f"tasks: {', '.join(sorted(_TASKS))}") from None
