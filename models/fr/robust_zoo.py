"""Robust FR models: adversarially fine-tuned copies of registered models, saved as zoo entries.

``erasablemask fr robustify BASE`` (the algorithm:
:mod:`erasablemask.experiments.fr_tools.robustify`) fine-tunes ``BASE`` with
PGD examples in the loop and saves the result here as an *entry*: the JSON
``cache_dir()/robust_fr/<name>.json`` (written atomically) naming the base
model, the recipe, the data it was trained on and the weights file
``cache_dir()/robust_fr/<name>-<key>.safetensors`` (its sha256 in the sidecar
``<file>.sha256``, checked on every load). The entry's name (default
``<BASE>_robust``) is then a registry name like any other: ``build(name)``
loads the entry's file into the base architecture, with the thresholds
calibrated for exactly those weights.

Entries are registered lazily: :func:`~erasablemask.models.fr.registry.get_spec`
asks :func:`register_saved` about a name it does not know, so an entry saved
by another process (or an earlier run) is found by name, and the registry
(``available()``) does not change with whatever the cache holds.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

from erasablemask.models.atomic_files import atomic_path
from erasablemask.models.fr import registry
from erasablemask.models.fr.recognizer import FaceRecognizer
from erasablemask.models.fr.spec import RANDOM_INIT, FRSpec, WeightsSource
from erasablemask.models.fr.weights import cache_dir
from erasablemask.models.integrity import read_json, read_safetensors, sidecar_path, verify_file
from erasablemask.models.state_dicts import load_state_dict_checked

__all__ = ["ROBUST_SUFFIX", "robust_dir", "entry_path", "check_entry_name", "read_entry", "save_entry", "register_saved", "register_all_saved",
           "unregister"]

ROBUST_SUFFIX = "_robust"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$")


def robust_dir() -> Path:
    """``cache_dir()/robust_fr``: entries and their weights files."""
    return cache_dir() / "robust_fr"


def entry_path(name: str) -> Path:
    """The entry JSON of robust model ``name`` (may not exist)."""
    if not _NAME.match(name):
        raise ValueError(f"robust model name {name!r} must be letters, digits and _ . + - (a file name)")
    return robust_dir() / f"{name}.json"


def check_entry_name(name: str) -> None:
    """Refuse a name that is not a file name or that a non-robust registered model has.

    Raises:
        ValueError: naming the name and the fix.
    """
    entry_path(name)
    if name in registry.available() and not registry.get_spec(name).role_hint.startswith("robust:"):
        raise ValueError(f"robust model name '{name}' is a registered FR model; choose another --name "
                         f"(default: MODEL{ROBUST_SUFFIX})")


def read_entry(name: str) -> dict | None:
    """The saved entry of ``name``, or None when there is none.

    Raises:
        IntegrityError: the entry file is not readable JSON (names it; the fix: delete it).
    """
    path = entry_path(name)
    if not path.is_file():
        return None
    return read_json(path, what=f"robust FR entry '{name}'", fix=f"delete '{path}' and run `erasablemask fr robustify` again")


def _spec(name: str, entry: dict) -> FRSpec:
    base = registry.get_spec(entry["base"])
    r = entry.get("recipe", {})
    note = (f"{entry['base']} fine-tuned adversarially (PGD eps {r.get('eps_255', '?')}/255, {r.get('steps', '?')} "
            f"steps, {r.get('epochs', '?')} epochs) by `erasablemask fr robustify`; data {entry.get('data_id', '?')}")
    return replace(
        base,
        name=name,
        weights=WeightsSource(kind="path", location=str(robust_dir() / entry["weights"]), sha256=entry.get("sha256"),
                              note=note),
        thresholds={},  # the base's published thresholds do not hold for other weights
        threshold_source=f"none: calibrated by `erasablemask fr robustify` ({entry.get('calibration_set', '?')})",
        role_hint=f"robust:{entry['base']}",
    )


def _factory(name: str):
    def factory(weights: str | Path | None = None) -> FaceRecognizer:
        entry = read_entry(name)
        if entry is None:
            raise registry.WeightsUnavailable(
                f"robust FR model '{name}' has no entry '{entry_path(name)}' on this machine; create it with "
                f"`erasablemask fr robustify BASE --name {name}`")
        spec = _spec(name, entry)
        base = registry.build(entry["base"], weights=RANDOM_INIT, calibration=registry.PUBLISHED)
        path = registry.resolve_weights(spec, weights)
        if path is not None:
            what = f"weights of robust FR model '{name}'"
            fix = (f"delete '{path}' and '{sidecar_path(path).name}' and run `erasablemask fr robustify` again"
                   if sidecar_path(path).is_file() else "use an undamaged copy of the file")
            verify_file(path, what=what, fix=fix)
            load_state_dict_checked(base.backbone, read_safetensors(path, what=what, fix=fix),
                                    source=f"'{path}' (robust FR model '{name}')",
                                    fix=f"It was saved for another architecture than '{entry['base']}'.")
        return FaceRecognizer(base.backbone, spec, embed=base._embed)

    factory.__name__ = f"build_{name}"
    return factory


def save_entry(entry: dict) -> Path:
    """Write ``entry`` (keys ``name``, ``base``, ``weights`` (file name in :func:`robust_dir`), ...) atomically and register it.

    Returns:
        The entry's JSON path.
    """
    check_entry_name(entry["name"])
    path = entry_path(entry["name"])
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(entry, indent=2, sort_keys=True), encoding="utf-8")
    unregister(entry["name"])  # its spec names the entry's weights file: register the new one
    register_saved(entry["name"])
    return path


def register_saved(name: str) -> bool:
    """Register robust entry ``name`` if it is saved here and not registered yet; True when it is registered now."""
    if name in registry._SPECS:
        return True
    if not _NAME.match(name):  # not a possible entry name
        return False
    entry = read_entry(name)  # a damaged entry is refused, naming it
    if entry is None or entry.get("base") not in registry.available():
        return False
    registry.register(_spec(name, entry))(_factory(name))
    return True


def register_all_saved() -> list[str]:
    """Register every entry saved in :func:`robust_dir` (for listings such as ``fr list``); their names."""
    folder = robust_dir()
    names = sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []
    return [n for n in names if register_saved(n)]


def unregister(name: str) -> None:
    """Forget robust entry ``name`` in this process (its files stay); for tests and re-registration."""
    spec = registry._SPECS.get(name)
    if spec is not None and spec.role_hint.startswith("robust:"):
        del registry._SPECS[name], registry._REGISTRY[name]
