"""Who owns Ray: the caller. Join a cluster or start a local instance around a block of work.

The Ray runner (:mod:`erasablemask.platform.runners.ray_train`) and the
pipeline never start or stop Ray: they use whatever Ray this process is
connected to (:func:`require_ray` fails with the fix otherwise). That is what
lets the pipeline run inside a Ray Tune trial, whose Ray belongs to Tune. The
CLI wraps its work in :func:`ray_session`:

- ``address`` given: connect this driver to that cluster and disconnect at
  the end; the cluster keeps running.
- no ``address``: start a local instance sized for the config and shut it
  down at the end. The dashboard is included on purpose: without the State
  API it serves, finished Ray Train V2 trainers cannot free their placement
  groups, and a second stage would wait for CPUs forever.
- Ray already initialised in this process (a test, a notebook, a Tune
  trial): use it and leave it as it is.

Every driver connection sets ``RAY_TRAIN_V2_ENABLED=1`` for the workers, and
``log_to_driver`` stays on so that the workers' progress lines and errors
reach this console (Ray Train's own INFO chatter is turned off where the
trainer is built: ``ray_train.QUIET_TRAIN_LOGS``).
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Any, Iterator

from erasablemask.experiments.config.schema import ErasableMaskConfig

__all__ = ["RAY_RUNTIME_ENV", "RayNotRunning", "local_num_cpus", "ray_session", "require_ray"]

RAY_RUNTIME_ENV = {"env_vars": {"RAY_TRAIN_V2_ENABLED": "1"}}


class RayNotRunning(RuntimeError):
    """The Ray runner was asked to run a stage while this process is not connected to Ray."""


def require_ray() -> None:
    """Fail unless this process is connected to Ray (the caller owns the Ray lifecycle).

    Raises:
        RayNotRunning: naming the three ways to fix it.
    """
    import ray

    if not ray.is_initialized():
        raise RayNotRunning(
            "the Ray runner needs a running Ray and this process is not connected to one; wrap the call in "
            "`with erasablemask.platform.ray_session.ray_session(cfg=cfg):` (a local instance) or "
            "`ray_session(address=...)` (a cluster), call ray.init(...) yourself, or use runner='in-process'"
        )


def local_num_cpus(cfg: ErasableMaskConfig | None) -> int:
    """CPUs a local instance advertises: the machine's, or more if the workers ask for more.

    ``compute.num_workers * compute.cpus_per_worker`` rounded up, so that a
    config asking for more CPUs than the machine has (fractional CPUs, tests
    with two workers on one core) still gets its placement group.
    """
    wanted = 1 if cfg is None else int(cfg.compute.num_workers * cfg.compute.cpus_per_worker + 0.999)
    return max(os.cpu_count() or 1, wanted)


LOCAL_START_ATTEMPTS = 2  # a loaded machine can miss Ray's start-up deadlines once; a second start usually works


def _start_local(ray: Any, num_cpus: int) -> None:
    """Start a local Ray instance; a start that fails (e.g. a node start-up timeout on a loaded
    machine) is shut down and tried again, up to :data:`LOCAL_START_ATTEMPTS` times, saying so."""
    for attempt in range(1, LOCAL_START_ATTEMPTS + 1):
        try:
            ray.init(num_cpus=num_cpus, num_gpus=None, include_dashboard=True,
                     runtime_env=RAY_RUNTIME_ENV, log_to_driver=True)
            return
        except Exception as exc:  # Ray raises plain Exception/RuntimeError/TimeoutError on start-up failures
            ray.shutdown()
            if attempt == LOCAL_START_ATTEMPTS:
                raise
            print(f"erasablemask: starting local Ray failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                  f"trying again ({attempt + 1}/{LOCAL_START_ATTEMPTS})", file=sys.stderr, flush=True)


@contextmanager
def ray_session(*, address: str | None = None, cfg: ErasableMaskConfig | None = None) -> Iterator[None]:
    """Connect to Ray for the block (module docstring): join ``address``, or start a local instance.

    Args:
        address: a Ray cluster (``host:port`` or ``ray://...``) to join and leave
            running; ``None`` starts a local instance, shut down at the end.
        cfg: sizes the local instance (:func:`local_num_cpus`); ignored when joining.

    Nothing is started or stopped when this process is already connected.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    if address:
        ray.init(address=address, runtime_env=RAY_RUNTIME_ENV, log_to_driver=True)
    else:
        _start_local(ray, local_num_cpus(cfg))
    try:
        yield
    finally:
        ray.shutdown()  # a joined cluster: this driver disconnects, the cluster keeps running
