"""File integrity, once for the project: sha256 manifests written last and verified first; unreadable files named.

Every artifact the project writes and later reads back as a whole — a
training checkpoint (a folder), a cached model file (the mini FR zoo, the
converted real-model weights) — records the sha256 of each file it consists
of, and is verified before anything is read from it:

- a folder gets ``manifest.json`` (:func:`write_manifest`, :func:`verify_manifest`):
  ``{"format": ..., "files": {name: {"sha256": hex, "bytes": n}}}``, written
  atomically *after* the files it lists, so a folder whose manifest exists is
  complete;
- a single cached file ``X`` gets the sidecar ``X.sha256``
  (:func:`seal_file`, :func:`verify_file`) in ``sha256sum`` format
  (``<hex>  <name>``; ``sha256sum -c X.sha256`` checks it by hand).

A mismatch, a missing listed file or an unreadable manifest raises
:class:`IntegrityError` — one sentence naming the file and the fix the
caller supplies (resume from the previous checkpoint, delete the cache
entry). :func:`read_safetensors` and :func:`read_json` turn a corrupt or
truncated file into the same kind of error (never a bare ``SafetensorError``
or ``JSONDecodeError`` without the file's name).

Cost: one sha256 pass per file and load (:func:`file_sha256` remembers the
digest of a file whose inode, size and modification time are unchanged, so
verifying and then loading the same file in one process hashes it once).
Reuses :func:`erasablemask.models.fr.download.sha256_file` and
:mod:`erasablemask.models.atomic_files`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Union

import torch

from erasablemask.models.atomic_files import write_text_atomic
from erasablemask.models.fr.download import sha256_file

__all__ = [
    "MANIFEST",
    "MANIFEST_FORMAT",
    "IntegrityError",
    "file_sha256",
    "write_manifest",
    "verify_manifest",
    "sidecar_path",
    "seal_file",
    "verify_file",
    "read_safetensors",
    "read_json",
]

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "erasablemask-manifest-v1"

_DIGESTS: dict[tuple[str, int, int, int], str] = {}

# The sentence telling the user what to do, or a function computing it (only when an error is raised).
Fix = Union[str, Callable[[], str]]


def _fix(fix: Fix) -> str:
    return fix() if callable(fix) else fix


class IntegrityError(ValueError):
    """A file does not hold what was written (digest mismatch, truncated, unparsable); the message names it."""


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of ``path``, remembered while its inode, size and mtime stay the same."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(Path(path))
    return _DIGESTS[key]


def write_manifest(folder: str | Path, files: Iterable[str]) -> Path:
    """Write ``folder/manifest.json`` with the sha256 and size of ``files`` (names inside ``folder``), atomically.

    Call it after the listed files are complete: the manifest is the last thing written.
    """
    folder = Path(folder)
    entries = {}
    for name in sorted(files):
        f = folder / name
        entries[name] = {"sha256": file_sha256(f), "bytes": f.stat().st_size}
    blob = {"format": MANIFEST_FORMAT, "algorithm": "sha256", "files": entries}
    return write_text_atomic(folder / MANIFEST, json.dumps(blob, indent=1, sort_keys=True))


def _check(path: Path, expected: str, size: int | None, what: str, fix: Fix) -> None:
    if not path.is_file():
        raise IntegrityError(f"{what}: '{path}' is missing (listed in its sha256 manifest); {_fix(fix)}")
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise IntegrityError(
            f"{what}: '{path}' is damaged ({actual_size} bytes, {size} written: truncated or overwritten); {_fix(fix)}"
        )
    got = file_sha256(path)
    if got != expected:
        raise IntegrityError(
            f"{what}: '{path}' is damaged (sha256 {got[:16]}..., {expected[:16]}... written); {_fix(fix)}"
        )


def verify_manifest(folder: str | Path, *, what: str, fix: Fix) -> bool:
    """Check every file listed in ``folder/manifest.json`` against its size and sha256.

    Args:
        folder: the artifact's folder.
        what: how the error names the artifact (e.g. ``"checkpoint '/r/stage1/...'"``).
        fix: the sentence telling the user what to do (or a function computing it on error).

    Returns:
        True when verified; False when the folder has no manifest (written
        before manifests existed: the caller decides).

    Raises:
        IntegrityError: a listed file is missing, of another size or digest,
            or the manifest itself is unreadable.
    """
    manifest = Path(folder) / MANIFEST
    if not manifest.is_file():
        return False
    blob = read_json(manifest, what=what, fix=fix)
    files = blob.get("files") if isinstance(blob, dict) else None
    if blob.get("format") != MANIFEST_FORMAT or not isinstance(files, dict) or not files:
        raise IntegrityError(
            f"{what}: '{manifest}' is not a sha256 manifest of format {MANIFEST_FORMAT!r}; {_fix(fix)}"
        )
    for name, entry in files.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str) or "/" in name or ".." in name:
            raise IntegrityError(f"{what}: '{manifest}' has a malformed entry {name!r}; {_fix(fix)}")
        _check(Path(folder) / name, entry["sha256"], entry.get("bytes"), what, fix)
    return True


def sidecar_path(path: str | Path) -> Path:
    """``X.sha256`` beside ``X``."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def seal_file(path: str | Path) -> Path:
    """Write ``path``'s sidecar ``path.sha256`` (``sha256sum`` format), atomically; after ``path`` is complete."""
    path = Path(path)
    return write_text_atomic(sidecar_path(path), f"{file_sha256(path)}  {path.name}\n")


def verify_file(path: str | Path, *, what: str, fix: Fix) -> bool:
    """Check ``path`` against its sidecar ``path.sha256``.

    Returns:
        True when verified; False when there is no sidecar (the caller decides).

    Raises:
        IntegrityError: the digest differs, or the sidecar is unreadable.
    """
    path = Path(path)
    side = sidecar_path(path)
    if not side.is_file():
        return False
    try:
        expected = side.read_text(encoding="ascii").split()[0].lower()
    except (OSError, UnicodeDecodeError, IndexError):
        expected = ""
    if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
        raise IntegrityError(f"{what}: its digest file '{side}' is unreadable; {_fix(fix)}")
    _check(path, expected, None, what, fix)
    return True


def read_safetensors(path: str | Path, *, what: str, fix: Fix, device: str = "cpu") -> dict[str, torch.Tensor]:
    """``safetensors.torch.load_file`` with a corrupt or truncated file named (:class:`IntegrityError`)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: '{path}' does not exist; {_fix(fix)}")
    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise IntegrityError(f"{what}: '{path}' is not a readable safetensors file ({err}); {_fix(fix)}") from None


def read_json(path: str | Path, *, what: str, fix: Fix) -> Any:
    """``json.loads`` of a UTF-8 file with a corrupt or truncated file named (:class:`IntegrityError`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: '{path}' does not exist; {_fix(fix)}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise IntegrityError(f"{what}: '{path}' is not readable JSON ({err}); {_fix(fix)}") from None
