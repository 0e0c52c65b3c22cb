"""Loading a config: a YAML file (or a shipped one by name) plus dotted overrides, validated.

Unknown keys, wrong types and out-of-range values fail before anything runs,
naming the key path and the allowed values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from erasablemask.experiments.config.schema import ErasableMaskConfig

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key path."""


def _set_dotted(tree: dict[str, Any], dotted: str) -> None:
    if "=" not in dotted:
        raise ConfigError(f"override '{dotted}' must look like key.path=value (e.g. stage2.lambda_adv=100)")
    path, raw = dotted.split("=", 1)
    keys = path.strip().split(".")
    node = tree
    for k in keys[:-1]:
        child = node.setdefault(k, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override '{dotted}': '{k}' is a value, not a section")
        node = child
    node[keys[-1]] = yaml.safe_load(raw)


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid config ({source}):"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key; check the spelling against `erasablemask config show`"
        elif e["type"] == "literal_error":
            msg = f"{msg}"
        lines.append(f"  {loc}: {msg} (got {e.get('input')!r})")
    return "\n".join(lines)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ErasableMaskConfig:
    """Load and validate a config.

    Args:
        path: a YAML file, a bare name of a file in ``experiments/configs``
            (``"miniworld_demo"``), or ``None`` for the paper defaults.
        overrides: dotted ``key.path=value`` strings (values parsed as YAML).

    Raises:
        ConfigError: naming the file, the key path and what is allowed.
    """
    tree: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        p = Path(path)
        if not p.is_file() and (CONFIG_DIR / f"{p.name}.yaml").is_file():
            p = CONFIG_DIR / f"{p.name}.yaml"
        if not p.is_file():
            known = sorted(q.stem for q in CONFIG_DIR.glob("*.yaml"))
            raise ConfigError(f"config file '{path}' not found; give a YAML path or one of {known}")
        source = str(p)
        try:
            tree = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file '{p}' is not valid YAML: {exc}") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"config file '{p}' must hold a mapping at the top level")
    for ov in overrides or []:
        _set_dotted(tree, ov)
    if overrides:
        source += " + " + " ".join(overrides)
    try:
        return ErasableMaskConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def dump_config(cfg: ErasableMaskConfig) -> str:
    """The resolved config as YAML."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
