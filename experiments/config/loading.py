"""Loading a config: group options, a YAML file (or a shipped one by name) and dotted overrides, validated.

A config file may start with ``groups: {data: miniworld, zoo: mini}``
(experiments/config/groups.py); ``--set <group>=<name>`` picks an option
from the command line. Composition, later wins: the chosen group options,
then the file's own keys, then the dotted ``key.path=value`` overrides.
Unknown groups, options, keys, wrong types and out-of-range values fail
before anything runs, naming the key path and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from erasablemask.experiments.config.groups import GROUP_KEYS, ConfigError, check_selection, compose, read_yaml_mapping
from erasablemask.experiments.config.schema import ErasableMaskConfig

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def _set_dotted(tree: dict[str, Any], dotted: str) -> None:
    if "=" not in dotted:
        raise ConfigError(
            f"override '{dotted}' must look like key.path=value (e.g. stage2.lambda_adv=100) or group=option "
            f"(e.g. data=miniworld)"
        )
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
        elif e["type"] == "value_error":  # a validator's own message names the keys and the fix
            lines.append(f"  {loc}: {msg.removeprefix('Value error, ')}")
            continue
        lines.append(f"  {loc}: {msg} (got {e.get('input')!r})")
    if len(lines) == 2:  # one problem: one line
        return f"{lines[0]} {lines[1].strip()}"
    return "\n".join(lines)


def _read_file(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """Find a config file (a path, or the name of a shipped one) and parse it."""
    p = Path(path)
    if not p.is_file() and (CONFIG_DIR / f"{p.name}.yaml").is_file():
        p = CONFIG_DIR / f"{p.name}.yaml"
    if not p.is_file():
        known = sorted(q.stem for q in CONFIG_DIR.glob("*.yaml"))
        raise ConfigError(f"config file '{path}' not found; give a YAML path or one of {known}")
    return p, read_yaml_mapping(p)


def _group_selection(override: str) -> tuple[str, Any] | None:
    """``"data=miniworld"`` -> ``("data", "miniworld")``: a group name and an option; else None.

    ``data={kind: ffhq}`` (a mapping) stays an ordinary override of the section.
    """
    key, sep, raw = override.partition("=")
    if not sep or key.strip() not in GROUP_KEYS:
        return None
    value = yaml.safe_load(raw)
    return None if isinstance(value, dict) else (key.strip(), value)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ErasableMaskConfig:
    """Load and validate a config.

    Args:
        path: a YAML file, a bare name of a file in ``experiments/configs``
            (``"miniworld_demo"``), or ``None`` for the paper defaults.
        overrides: ``group=option`` selections (``"data=miniworld"``) and
            dotted ``key.path=value`` strings (values parsed as YAML), in order.

    Returns:
        The validated config; ``cfg.groups`` holds the chosen group options.

    Raises:
        ConfigError: naming the file, the group or key path and what is allowed.
    """
    own: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        p, own = _read_file(path)
        source = str(p)
    chosen = own.pop("groups", None) or {}
    if not isinstance(chosen, dict):
        raise ConfigError(f"{source}: 'groups' must map group to option, e.g. groups: {{data: miniworld}}")
    for group, name in chosen.items():
        check_selection(CONFIG_DIR, str(group), name, source)
    dotted = []
    for ov in overrides or []:
        picked = _group_selection(ov)
        if picked:
            check_selection(CONFIG_DIR, picked[0], picked[1], f"--set {ov}")
            chosen[picked[0]] = picked[1]
        else:
            dotted.append(ov)
    tree = compose(CONFIG_DIR, chosen, own)
    for ov in dotted:
        _set_dotted(tree, ov)
    if overrides:
        source += " + " + " ".join(overrides)
    try:
        cfg = ErasableMaskConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None
    cfg.groups = {g: chosen[g] for g in GROUP_KEYS if g in chosen}
    return cfg


def dump_config(cfg: ErasableMaskConfig) -> str:
    """The resolved config as YAML."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
