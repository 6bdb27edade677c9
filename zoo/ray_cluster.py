"""Joining Ray, the same way for sweeps (Ray Tune) and batch prediction (Ray Data): the
cluster's address is probed first (one line within seconds when nothing answers), and a local
instance gets the environment zoo's workers need."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from zoo.errors import ZooError

# what a local worker inherits: zoo's and MLflow's settings, TensorFlow's log level, the GPUs
_INHERITED = ("ZOO_", "MLFLOW_", "TF_CPP_")


def check_address(address: str | None, what: str = "--address") -> None:
    """A cluster address of the form HOST:PORT (or ray://HOST:PORT) must answer; ``local``,
    ``auto`` and forms Ray resolves itself are left to Ray."""
    if not address or address in ("local", "auto"):
        return
    from zoo.store import PROBE_TIMEOUT_S

    hostport = address.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise ZooError(f"{what} {address}: the Ray cluster cannot be reached: {why}; start "
                       "it (`ray start --head`), or leave --address and RAY_ADDRESS out to run "
                       "on this machine") from None


def inherited_env() -> dict[str, str]:
    """What a worker inherits from this process: zoo's and MLflow's settings, TensorFlow's log
    level and which GPUs it may see."""
    return {k: v for k, v in os.environ.items()
            if k.startswith(_INHERITED) or k == "CUDA_VISIBLE_DEVICES"}


def init(address: str | None, env: dict[str, str] | None = None) -> None:
    """``ray.init`` on ``address`` (None or ``local``: a local instance sized to this machine,
    whose workers import zoo from where this process did, a checkout on PYTHONPATH included,
    with ``env`` and zoo's inherited settings)."""
    import ray

    if not address or address == "local":
        root = str(Path(__file__).resolve().parent.parent)
        env_vars = {**inherited_env(), **(env or {})}
        env_vars["PYTHONPATH"] = os.pathsep.join(
            p for p in [root, os.environ.get("PYTHONPATH", "")] if p)
        ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False,
                 log_to_driver=False, runtime_env={"env_vars": env_vars},
                 configure_logging=True, logging_level="ERROR")
    else:
        ray.init(address=address, log_to_driver=False, logging_level="ERROR")
