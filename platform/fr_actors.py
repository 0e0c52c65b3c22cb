"""Start the FR actors of a config in a placement group, and hand their proxies to a stage's ``build_fr_models``.

``compute.remote_fr`` (``experiments/config/schema.py``) names the FR models
served by actors, the CPUs, (fractional) GPUs and custom resources (node
labels such as ``fr_node``) of each actor, the
placement strategy and ``max_restarts``. :func:`start_fr_actors` reserves one
bundle per actor in a placement group (``"pack"``: the same node when they
fit, beside the training workers; ``"spread"``: one per node where possible)
and starts one :class:`~erasablemask.platform.remote_fr.FRActor` per model;
each builds its model once, with the same ``build_fr_models`` the worker would
use, so a remote model is the local one. A dead actor is restarted up to
``max_restarts`` times and the call it was serving is retried
(``max_task_retries``): the calls carry all their inputs, so the retry is exact.

The Ray runner starts the actors on the driver (they outlive a restarted
worker group and serve every epoch of the stage), passes the handles to the
workers, and the workers install :meth:`FRActorGroup.provider` with
``experiments.fr_tools.zoo.fr_model_provider``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn

from erasablemask.experiments.config.schema import ErasableMaskConfig, RemoteFRConfig
from erasablemask.platform.remote_fr import FRActor, FRFactory, RemoteFaceRecognizer

__all__ = ["FRActorGroup", "build_one_fr_model", "start_fr_actors", "start_fr_actors_for_config"]

_PG_TIMEOUT_S = 120.0


def build_one_fr_model(cfg_json: dict[str, Any], name: str) -> nn.Module:
    """The actor's factory: the FR model ``name`` of this config, as ``build_fr_models`` builds it locally."""
    from erasablemask.experiments.fr_tools.zoo import build_fr_models

    cfg = ErasableMaskConfig.model_validate(cfg_json)
    return build_fr_models(cfg, [name], progress=False)[name]  # on compute.device; FRActor moves it to its own


@dataclass
class FRActorGroup:
    """Running FR actors: name -> actor handle, their placement group and the proxies' metadata.

    Picklable (handles and metadata only), so the driver can pass it to Ray Train workers.
    """

    handles: dict[str, Any]
    meta: dict[str, dict[str, Any]]
    placement_group: Any = None
    _proxies: dict[str, RemoteFaceRecognizer] = field(default_factory=dict, repr=False)

    def proxy(self, name: str) -> RemoteFaceRecognizer:
        """The drop-in ``FaceRecognizer`` for ``name`` (one proxy per name and process)."""
        if name not in self._proxies:
            self._proxies[name] = RemoteFaceRecognizer(self.handles[name], name, self.meta[name])
        return self._proxies[name]

    def provider(self, name: str, device: torch.device | str) -> nn.Module | None:
        """An ``experiments.fr_tools.zoo.FRProvider``: the proxy for served names, None for the rest."""
        return self.proxy(name) if name in self.handles else None

    def pids(self) -> dict[str, int]:
        """Each actor's current process id."""
        import ray

        return dict(zip(self.handles, ray.get([h.pid.remote() for h in self.handles.values()])))

    def shutdown(self) -> None:
        """Kill the actors (no restart) and free their placement group."""
        import ray
        from ray.util.placement_group import remove_placement_group

        for handle in self.handles.values():
            ray.kill(handle, no_restart=True)
        if self.placement_group is not None:
            remove_placement_group(self.placement_group)
        self.handles, self._proxies, self.placement_group = {}, {}, None

    def __getstate__(self) -> dict[str, Any]:
        return {"handles": self.handles, "meta": self.meta, "placement_group": self.placement_group}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)


def start_fr_actors(factories: Mapping[str, FRFactory], settings: RemoteFRConfig) -> FRActorGroup:
    """One :class:`FRActor` per factory, in one placement group (module docstring).

    Args:
        factories: registry name -> picklable ``() -> FaceRecognizer``.
        settings: ``compute.remote_fr`` (CPUs/GPUs per actor, placement, ``max_restarts``).

    Returns:
        The running :class:`FRActorGroup` (call ``shutdown()`` when the stage is done).

    Raises:
        RuntimeError: the placement group could not be reserved in time (too few CPUs/GPUs).
    """
    import ray
    from ray.util.placement_group import placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    if not factories:
        return FRActorGroup(handles={}, meta={})
    bundle: dict[str, float] = {"CPU": settings.cpus_per_actor}
    if settings.gpus_per_actor > 0:
        bundle["GPU"] = settings.gpus_per_actor
    bundle.update(settings.resources)  # custom node labels, e.g. {"fr_node": 0.5}
    pg = placement_group([dict(bundle) for _ in factories], strategy=settings.placement.upper())
    try:
        ray.get(pg.ready(), timeout=_PG_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError as err:
        from ray.util.placement_group import remove_placement_group

        remove_placement_group(pg)
        raise RuntimeError(
            f"could not reserve {len(factories)} FR actor(s) of {bundle} ({settings.placement}) in "
            f"{_PG_TIMEOUT_S:.0f} s; lower compute.remote_fr.cpus_per_actor / gpus_per_actor or add nodes"
        ) from err
    env = {k: os.environ[k] for k in ("ERASABLEMASK_HOME",) if k in os.environ}
    actor_cls = ray.remote(FRActor)
    handles = {}
    for i, (name, factory) in enumerate(factories.items()):
        handles[name] = actor_cls.options(
            num_cpus=settings.cpus_per_actor,
            num_gpus=settings.gpus_per_actor,
            resources=dict(settings.resources) or None,
            max_restarts=settings.max_restarts,
            max_task_retries=settings.max_restarts,
            scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=pg, placement_group_bundle_index=i),
            runtime_env={"env_vars": env} if env else None,
        ).remote(factory, "auto", max(1, int(settings.cpus_per_actor)))  # auto: the GPU Ray assigned, if any
    meta = dict(zip(handles, ray.get([h.describe.remote() for h in handles.values()])))
    return FRActorGroup(handles=handles, meta=meta, placement_group=pg)


def start_fr_actors_for_config(cfg: ErasableMaskConfig) -> FRActorGroup:
    """The actors of ``compute.remote_fr.models``, each building its model from ``cfg`` (empty group if none)."""
    cfg_json = cfg.model_dump(mode="json")
    names = list(dict.fromkeys(cfg.compute.remote_fr.models))
    return start_fr_actors({n: partial(build_one_fr_model, cfg_json, n) for n in names}, cfg.compute.remote_fr)
