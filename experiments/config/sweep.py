"""The sweep file: a base experiment, a search space over dotted config keys, the objectives, how to search.

A sweep (``erasablemask sweep SWEEP``, :mod:`erasablemask.platform.sweep`)
is a YAML file, or the name of one shipped in ``experiments/configs/sweeps/``::

    name: tiny                         # the sweep's folder under storage, and its MLflow run name
    base: miniworld_demo               # a config file or the name of a shipped one
    overrides: [stage1.epochs=1, ...]  # dotted overrides / group=option, as on the command line
    space:                             # dotted config keys -> one distribution each
      stage2.lambda_adv: {loguniform: [50, 400]}
      protection.beta: {uniform: [0.3, 0.7]}
      attack.method: {choice: [meta_auxiliary, first_order]}
      protection.gamma: {grid: [0.0, 0.05, 0.1]}    # every value (search.algorithm: grid)
    points:                            # explicit configurations (search.algorithm: grid), crossed with the
      - {protection.gamma: 0.1, protection.beta: 0.5}   # grid axes and the seeds: e.g. Fig. 5's two 1-D lines
    objectives:                        # evaluation summary keys (asr/black_box_mean, esr/..., idr/..., cos/...)
      - {metric: asr/black_box_mean, mode: max}
    num_samples: 8                     # trials (grid: repeats of the whole grid)
    max_concurrent: 2
    seeds: [0]                         # config seeds; with the grid algorithm every seed is a grid axis
    search: {algorithm: optuna, scheduler: asha, grace_period: 1, reduction_factor: 2, seed: 0}

Everything is checked here, before Ray starts: every dotted key must be a
key of :class:`~erasablemask.experiments.config.schema.ErasableMaskConfig`
and every value a distribution can take (both ends of a range, every choice
and grid value) must pass the same validation as ``erasablemask config
show``; the error names the key. Objectives name the keys of the
evaluation's summary (``summary_metrics``): the trial reports them from the
test-split evaluation at the end and, per epoch of stages 2 and 3, from the
validation split (what ASHA stops on).
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from erasablemask.experiments.config.groups import ConfigError, load_file_model
from erasablemask.experiments.config.loading import CONFIG_DIR, load_config
from erasablemask.experiments.config.schema import ErasableMaskConfig

__all__ = ["SWEEP_DIR", "Distribution", "Objective", "SearchSettings", "SweepConfig", "load_sweep", "shipped_sweeps"]

SWEEP_DIR = CONFIG_DIR / "sweeps"
# Prefixes of the evaluation summary keys a sweep may optimise (experiments/evaluation/metrics.summary_metrics).
OBJECTIVE_METRICS = ("asr", "esr", "idr", "cos", "esr_unrestored")
OBJECTIVE_GROUPS = ("black_box_mean", "surrogates_mean")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Distribution(_Strict):
    """Exactly one of: ``uniform: [lo, hi]``, ``loguniform: [lo, hi]`` (lo > 0), ``choice: [...]``, ``grid: [...]``."""

    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    choice: list[Any] | None = None
    grid: list[Any] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Distribution:
        given = [k for k in ("uniform", "loguniform", "choice", "grid") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of uniform, loguniform, choice, grid (got {given or 'none'})")
        for kind in ("uniform", "loguniform"):
            rng = getattr(self, kind)
            if rng is not None:
                lo, hi = rng
                if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                    raise ValueError(f"{kind}: [{lo}, {hi}] must be finite with low < high")
                if kind == "loguniform" and lo <= 0:
                    raise ValueError(f"loguniform: low {lo} must be > 0")
        for kind in ("choice", "grid"):
            values = getattr(self, kind)
            if values is not None and not values:
                raise ValueError(f"{kind}: give at least one value")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("uniform", "loguniform", "choice", "grid") if getattr(self, k) is not None)

    def probe_values(self) -> list[Any]:
        """The values checked against the config schema: both ends of a range, every choice / grid value."""
        return list(getattr(self, self.kind))


class Objective(_Strict):
    metric: str  # an evaluation summary key, e.g. asr/black_box_mean
    mode: Literal["max", "min"]

    @model_validator(mode="after")
    def _known_metric(self) -> Objective:
        name, _, group = self.metric.partition("/")
        base = name.split("@")[0]
        if base not in OBJECTIVE_METRICS or group not in OBJECTIVE_GROUPS:
            raise ValueError(
                f"objective metric {self.metric!r}: use <metric>[@<transform>]/<group> with metric one of "
                f"{list(OBJECTIVE_METRICS)} and group one of {list(OBJECTIVE_GROUPS)} (e.g. asr/black_box_mean)"
            )
        return self

    @property
    def key(self) -> str:
        """The name Tune sees: ``objective/<metric>`` with ``@`` spelled ``_at_``."""
        return "objective/" + self.metric.replace("@", "_at_")


class SearchSettings(_Strict):
    # optuna: TPE (one objective) or NSGA-II (several); grid/random: Tune's BasicVariantGenerator
    # (grid values crossed, ranges sampled at random).
    algorithm: Literal["optuna", "grid", "random"] = "optuna"
    # asha: early stopping on the per-epoch validation score (one objective only); fifo: none.
    scheduler: Literal["asha", "fifo"] = "asha"
    grace_period: Annotated[int, Field(gt=0)] = 1  # epochs (reports) before ASHA may stop a trial
    reduction_factor: Annotated[float, Field(gt=1)] = 2.0
    seed: Annotated[int, Field(ge=0)] = 0  # the sampler's seed


class SweepConfig(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    base: str = "miniworld_demo"
    overrides: list[str] = []
    space: dict[str, Distribution] = {}
    # Explicit configurations, each {dotted key: value}: one grid axis whose values are whole points (the
    # paper's one-at-a-time curves, which a crossed grid would multiply). search.algorithm grid only.
    points: list[dict[str, Any]] = []
    objectives: Annotated[list[Objective], Field(min_length=1)]
    num_samples: Annotated[int, Field(gt=0)] = 4
    max_concurrent: Annotated[int, Field(gt=0)] = 1
    seeds: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)] = [0]
    search: SearchSettings = SearchSettings()
    stages: list[Literal[1, 2, 3]] = [1, 2, 3]
    cpus_per_trial: Annotated[float, Field(gt=0)] | None = (
        None  # the trial's training worker; null: cores / concurrency
    )
    max_steps_per_epoch: Annotated[int, Field(gt=0)] | None = None  # cut epochs short (tests, benchmarks)
    reuse_stage1: bool = True  # trials with one stage-1 config share one checkpoint (false: each trains its own)
    report: bool = False  # write the analysis report (Fig. 5 when γ or β vary) to <sweep>/report at the end
    storage: Path = Path("runs/sweeps")  # sweep folders live in <storage>/<name>; the stage-1 cache in <storage>

    @model_validator(mode="after")
    def _consistent(self) -> SweepConfig:
        if self.stages != sorted(set(self.stages)) or self.stages[-1] < 2:
            raise ValueError(f"stages {self.stages}: increasing, ending with 2 or 3 (the trial is evaluated)")
        grids = [k for k, d in self.space.items() if d.kind == "grid"]
        if self.search.algorithm == "optuna":
            if grids:
                raise ValueError(
                    f"space keys {grids} use grid, which Optuna cannot sample; use choice, or search.algorithm: grid"
                )
            if len(self.seeds) > 1:
                raise ValueError(
                    f"seeds {self.seeds}: Optuna runs one seed; use search.algorithm: grid to "
                    "repeat every configuration over seeds"
                )
        if self.search.scheduler == "asha" and len(self.objectives) > 1:
            raise ValueError(
                "search.scheduler: asha needs one objective (it stops on a scalar score); "
                "use fifo with several objectives"
            )
        if "seed" in self.space or any("seed" in pt for pt in self.points):
            raise ValueError("space/points key 'seed': list seeds under seeds: instead")
        if not self.space and not self.points:
            raise ValueError("give a search space (space:) or explicit configurations (points:)")
        if self.points:
            if self.search.algorithm != "grid":
                raise ValueError("points: explicit configurations need search.algorithm: grid")
            if any(not pt for pt in self.points):
                raise ValueError("points: every point needs at least one key: value")
            both = sorted({k for pt in self.points for k in pt} & set(self.space))
            if both:
                raise ValueError(f"keys {both} are in both space: and points:; give each key in one of them")
        return self

    @property
    def swept_keys(self) -> list[str]:
        """The dotted keys the trials vary: the space's, then the points' (in order, once each)."""
        return list(dict.fromkeys([*self.space, *(k for pt in self.points for k in pt)]))

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def base_config(self, extra: list[str] | None = None) -> ErasableMaskConfig:
        """The base config with the sweep's overrides (and ``extra``), validated."""
        return load_config(self.base, [*self.overrides, *(extra or [])])

    def trial_values(self, params: dict[str, Any]) -> dict[str, Any]:
        """A trial's values by dotted key: Tune's ``params`` with the ``point`` index expanded into its keys."""
        values = {k: v for k, v in params.items() if k != "point"}
        if "point" in params:
            values.update(self.points[int(params["point"])])
        return values

    def trial_overrides(self, params: dict[str, Any]) -> list[str]:
        """Dotted overrides of one trial: the base overrides, then its sampled values (``seed`` included)."""
        return [*self.overrides, *(f"{k}={_yaml_value(v)}" for k, v in self.trial_values(params).items())]


def _yaml_value(value: Any) -> str:
    """A value as the right-hand side of a dotted override (parsed back with yaml.safe_load)."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _unknown_key(where: str, key: str, keys: Any) -> ConfigError:
    """``<where> '<key>' is not a config key``, with the closest keys as a hint."""
    close = difflib.get_close_matches(key, list(keys), n=3, cutoff=0.8)
    hint = f"; did you mean {close}?" if close else "; see `erasablemask config show`"
    return ConfigError(f"{where} '{key}' is not a config key{hint}")


def _check_space(sweep: SweepConfig, source: str) -> None:
    """Every space key is a config key, and every value it may take validates (names the key)."""
    base = sweep.base_config()
    keys = base.flat()
    for key, dist in sweep.space.items():
        if key not in keys:
            raise _unknown_key(f"{source}: space key", key, keys)
        for value in dist.probe_values():
            try:
                sweep.base_config([f"{key}={_yaml_value(value)}"])
            except ConfigError as err:
                raise ConfigError(
                    f"{source}: space key '{key}' ({dist.kind}) value {value!r} is not allowed:\n{err}"
                ) from None
            except ValueError as err:  # a cross-field check of the schema
                raise ConfigError(f"{source}: space key '{key}' ({dist.kind}) value {value!r}: {err}") from None
    for i, point in enumerate(sweep.points):
        for key in point:
            if key not in keys:
                raise _unknown_key(f"{source}: points[{i}] key", key, keys)
        try:
            sweep.base_config([f"{k}={_yaml_value(v)}" for k, v in point.items()])
        except ValueError as err:  # ConfigError included
            raise ConfigError(f"{source}: points[{i}] {point} is not allowed:\n{err}") from None


def shipped_sweeps() -> list[str]:
    return sorted(p.stem for p in SWEEP_DIR.glob("*.yaml"))


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> SweepConfig:
    """Read, validate and check a sweep file (a path or a shipped name) before anything runs.

    Args:
        path: a YAML file, or the name of one in ``experiments/configs/sweeps/``.
        overrides: dotted overrides of the sweep file itself (``num_samples=2``, ``storage=/tmp/s``).

    Raises:
        ConfigError: naming the file and the offending key.
    """
    p = Path(path)
    if not p.is_file() and (SWEEP_DIR / f"{p.name}.yaml").is_file():
        p = SWEEP_DIR / f"{p.name}.yaml"
    if not p.is_file():
        raise ConfigError(f"sweep file '{path}' not found; give a YAML path or one of {shipped_sweeps()}")
    sweep = load_file_model(p, overrides, SweepConfig, what="sweep", example="num_samples=2")
    _check_space(sweep, str(p))
    return sweep
