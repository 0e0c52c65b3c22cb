"""Config groups: named partial configs that a config file, a sweep or a test picks by name.

A group is a folder ``experiments/configs/<group>/`` of options
``<name>.yaml``; each option is a partial config tree written from the top
(``data: {kind: miniworld, image_size: 64}``). A config file chooses options
with a ``groups:`` mapping at its top, and the command line with
``--set <group>=<name>``::

    groups: {data: miniworld, model: mini, zoo: mini}
    stage1: {epochs: 20}

Composition, later wins: the chosen options in the fixed order of
:data:`GROUP_KEYS` (whatever order the file lists them in), then the file's
own keys, then the dotted ``--set key.path=value`` overrides.

Every key path belongs to one group, the one with the longest matching
prefix in :data:`GROUP_KEYS` (``attack.surrogates`` is the zoo's, not the
attack's); an option may set only its group's keys, so two groups never
fight over a value and what an option changes is read off its file.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

# group -> the key paths (prefixes) it owns. Order = composition order.
GROUP_KEYS: dict[str, tuple[str, ...]] = {
    "data": ("data", "attack.target"),  # the data set and the target identities/photos taken from it
    "model": ("model",),  # AttGAN sizes
    "attack": ("attack",),  # the attack and its hyper-parameters (later: the competitors)
    "zoo": ("attack.surrogates", "attack.black_box"),  # which FR models are white-box / black-box
    "compute": ("compute",),  # where and how it runs: not in the config digest
    "tracking": ("tracking",),  # where it is recorded: not in the config digest
}


class ConfigError(ValueError):
    """A config file, group option or override is invalid; the message names the file, key path or group."""


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """Parse a config YAML file that must hold a non-empty mapping at the top level.

    An empty file is refused (it used to become the schema defaults silently), and so is a
    binary or non-UTF-8 one; every message names the file.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file '{path}' is not UTF-8 text (byte {exc.start}: {exc.reason}); "
                          f"give a YAML text file") from None
    except IsADirectoryError:
        raise ConfigError(f"config file '{path}' is a folder; give a YAML file") from None
    if "\x00" in text:
        raise ConfigError(f"config file '{path}' holds NUL bytes (a binary file?); give a YAML text file")
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file '{path}' is not valid YAML: {exc}") from None
    if tree is None or tree == {}:
        raise ConfigError(f"config file '{path}' is empty; write the keys to change (e.g. `groups: {{data: "
                          f"miniworld, zoo: mini}}`), or use the shipped `paper` config for the paper's values")
    if not isinstance(tree, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping (key: value lines) at the top level, "
                          f"not a {type(tree).__name__}")
    return tree


def load_file_model(path: Path, overrides: list[str] | None, model: type, *, what: str, example: str) -> Any:
    """A side file (sweep, comparison): its YAML mapping, dotted ``key=value`` overrides on top, validated by ``model``.

    Args:
        path: the YAML file. overrides: ``"a.b=value"`` strings (values parsed as YAML).
        model: the pydantic model of the file. what: ``"sweep"``, ``"comparison"`` (for messages).
        example: an override shown when one is malformed.

    Raises:
        ConfigError: the file, a malformed override, or every invalid key (one line each), naming the file.
    """
    from pydantic import ValidationError

    tree = read_yaml_mapping(path)
    for ov in overrides or []:
        key, sep, raw = ov.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{what} override '{ov}' must look like key=value (e.g. {example})")
        node = tree
        parts = key.strip().split(".")
        for k in parts[:-1]:
            node = node.setdefault(k, {})
        node[parts[-1]] = yaml.safe_load(raw)
    try:
        return model.model_validate(tree)
    except ValidationError as err:
        lines = [f"invalid {what} file ({path}):"]
        for e in err.errors():
            loc = ".".join(str(x) for x in e["loc"]) or "(top level)"
            msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
            lines.append(f"  {loc}: {msg} (got {e.get('input')!r})")
        raise ConfigError("\n".join(lines)) from None


def owner(key_path: str) -> str | None:
    """The group that owns a dotted key path (longest matching prefix), or None (no group: a file's own key)."""
    best: tuple[int, str | None] = (0, None)
    for group, prefixes in GROUP_KEYS.items():
        for prefix in prefixes:
            if (key_path == prefix or key_path.startswith(prefix + ".")) and len(prefix) > best[0]:
                best = (len(prefix), group)
    return best[1]


def options(config_dir: Path, group: str) -> list[str]:
    """The option names of ``group`` shipped in ``config_dir/<group>/``."""
    return sorted(p.stem for p in (config_dir / group).glob("*.yaml"))


def available(config_dir: Path) -> dict[str, list[str]]:
    """Every group with its options, e.g. ``{"data": ["celebahq", "miniworld"], ...}``."""
    return {group: options(config_dir, group) for group in GROUP_KEYS}


def leaf_paths(tree: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    """Dotted paths of the non-mapping values of ``tree`` (``{"a": {"b": 1}}`` -> ``"a.b"``)."""
    for key, value in tree.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            yield from leaf_paths(value, path)
        else:
            yield path


def deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``top`` merged in: mappings merge key by key, anything else (lists too) is replaced."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def check_selection(config_dir: Path, group: str, name: object, source: str) -> None:
    """Raise ConfigError unless ``group`` is a known group with an option ``name``."""
    if group not in GROUP_KEYS:
        raise ConfigError(f"{source}: unknown config group '{group}'; groups: {list(GROUP_KEYS)}")
    if not isinstance(name, str) or not (config_dir / group / f"{name}.yaml").is_file():
        raise ConfigError(
            f"{source}: config group '{group}' has no option {name!r}; "
            f"available: {options(config_dir, group)} (files in {config_dir / group})"
        )


def read_option(config_dir: Path, group: str, name: str) -> dict[str, Any]:
    """The partial config tree of option ``name`` of ``group``, checked to set only the group's keys."""
    check_selection(config_dir, group, name, f"{group}={name}")
    path = config_dir / group / f"{name}.yaml"
    tree = read_yaml_mapping(path)
    foreign = [p for p in leaf_paths(tree) if owner(p) != group]
    if foreign:
        raise ConfigError(
            f"config group file '{path}' sets {foreign}, which group '{group}' does not own "
            f"(it owns {list(GROUP_KEYS[group])}); move them to the config file or to their own group"
        )
    return tree


def compose(config_dir: Path, chosen: Mapping[str, str], own: Mapping[str, Any]) -> dict[str, Any]:
    """The chosen options in :data:`GROUP_KEYS` order, then ``own`` (a config file's keys) on top."""
    tree: dict[str, Any] = {}
    for group in GROUP_KEYS:
        if group in chosen:
            tree = deep_merge(tree, read_option(config_dir, group, chosen[group]))
    return deep_merge(tree, own)
