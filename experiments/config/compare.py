"""The comparison file: one experiment (data, targets, FR models, thresholds, transforms) and the methods to run on it.

``erasablemask compare COMPARE`` (:mod:`erasablemask.platform.compare`) reads
a YAML file, or the name of one shipped in ``experiments/configs/compare/``::

    name: miniworld                # the comparison's MLflow run name and output folder prefix
    config: miniworld_demo         # the experiment config (file or shipped name); ignored when `run` is set
    run: null                      # an ErasableMask run folder: its config.yaml is the experiment config, its
                                   # checkpoint is `erasablemask`, its AttGAN G is SemanticAdv's generator
    overrides: [evaluation.max_images=32]   # dotted overrides of the experiment config
    split: test
    n_boot: 1000                   # bootstrap replicates of the 95 % intervals
    methods:                       # registry name -> hyper-parameters over the official defaults
      fgsm: {eps: 0.0156862745}    # the paper's ε = 4/255 (§V-A), [0, 1]-image units
      pgd: {eps: 0.0156862745}
      sibling: {}
      semanticadv: {}
      erasablemask: {}

Every method name must be registered (:func:`erasablemask.experiments.attacks.names`)
and every hyper-parameter one of its fields; both are checked here, before
any model is built. Resources a method needs that are not hyper-parameters
(the experiment config, the run's generator, the attribute-recognition model)
are supplied by ``compare`` by parameter name (:mod:`erasablemask.platform.compare`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from erasablemask.experiments.config.groups import ConfigError, load_file_model
from erasablemask.experiments.config.loading import CONFIG_DIR

__all__ = ["COMPARE_DIR", "CompareConfig", "load_compare", "shipped_comparisons", "RESOURCE_PARAMETERS"]

COMPARE_DIR = CONFIG_DIR / "compare"
# Factory parameters that `compare` fills itself; a comparison file may not set them.
RESOURCE_PARAMETERS = ("cfg", "generator", "ar_model", "device", "train_dir", "inputs")


class CompareConfig(BaseModel):
    """A validated comparison file (module docstring)."""

    model_config = ConfigDict(extra="forbid")

    name: str = "compare"
    config: str = "miniworld_demo"
    run: Path | None = None
    overrides: list[str] = []
    split: Literal["val", "test"] = "test"
    n_boot: Annotated[int, Field(ge=0)] = 1000
    methods: dict[str, dict[str, Any]]

    @field_validator("methods")
    @classmethod
    def _some_methods(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        if not v:
            raise ValueError("list at least one method (e.g. fgsm: {})")
        return {k: dict(hp or {}) for k, hp in v.items()}

    def select(self, methods: list[str] | None) -> CompareConfig:
        """This comparison restricted to ``methods`` (in that order); unknown ones are refused.

        Raises:
            ConfigError: a name not in ``methods``.
        """
        if not methods:
            return self
        missing = [m for m in methods if m not in self.methods]
        if missing:
            raise ConfigError(
                f"--methods {' '.join(missing)}: not in the comparison file's methods "
                f"({', '.join(self.methods)}); add them there with their hyper-parameters"
            )
        return self.model_copy(update={"methods": {m: self.methods[m] for m in methods}})


def shipped_comparisons() -> list[str]:
    return sorted(p.stem for p in COMPARE_DIR.glob("*.yaml"))


def check_methods(cmp: CompareConfig) -> None:
    """Every method registered, every hyper-parameter one of its own, no resource set by hand.

    Raises:
        LookupError: an unregistered method (the registered ones listed).
        ConfigError: an unknown hyper-parameter or a resource parameter in the file.
    """
    from erasablemask.experiments import attacks
    from erasablemask.experiments.attacks.registry import allowed_hparams

    for name, hp in cmp.methods.items():
        if name not in attacks.names():
            raise LookupError(
                f"comparison method '{name}' is not a registered attack; registered: {', '.join(attacks.names())}"
            )
        set_resources = sorted(set(hp) & set(RESOURCE_PARAMETERS))
        if set_resources:
            raise ConfigError(f"methods.{name}: {', '.join(set_resources)} is supplied by compare; remove it")
        allowed = allowed_hparams(name)
        if allowed is not None:
            unknown = sorted(set(hp) - set(allowed))
            if unknown:
                raise ConfigError(
                    f"methods.{name}: no hyper-parameter {', '.join(unknown)}; allowed: "
                    f"{', '.join(a for a in allowed if a not in RESOURCE_PARAMETERS)}"
                )


def load_compare(path: str | Path, overrides: list[str] | None = None) -> CompareConfig:
    """Read, validate and check a comparison file (a path or a shipped name) before anything runs.

    Args:
        path: a YAML file, or the name of one in ``experiments/configs/compare/``.
        overrides: dotted overrides of the file itself (``methods.pgd.steps=20``, ``run=/path``).

    Raises:
        ConfigError: naming the file and the offending key.
        LookupError: an unregistered method.
    """
    p = Path(path)
    if not p.is_file() and (COMPARE_DIR / f"{p.name}.yaml").is_file():
        p = COMPARE_DIR / f"{p.name}.yaml"
    if not p.is_file():
        raise ConfigError(f"comparison file '{path}' not found; give a YAML path or one of {shipped_comparisons()}")
    cmp = load_file_model(p, overrides, CompareConfig, what="comparison", example="methods.pgd.steps=20")
    if cmp.run is not None and not Path(cmp.run).is_dir():
        raise FileNotFoundError(
            f"comparison file {p}: run '{cmp.run}' is not a folder; pass an ErasableMask run "
            f"folder (with config.yaml) or remove `run` (then erasablemask and semanticadv "
            f"cannot be compared)"
        )
    check_methods(cmp)
    return cmp
