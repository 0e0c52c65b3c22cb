"""Resumable, checksum-verified download of model weights (urllib only).

:func:`fetch` downloads ``url`` into ``dest``:

1. If ``dest`` already exists with the expected sha256 it is returned as is
   (a file with another digest is deleted and downloaded again).
2. Bytes go to ``dest.part``. If a ``.part`` file is left over from an
   interrupted run, the request carries ``Range: bytes=<size>-``; a ``206``
   answer continues it, a ``200`` answer (server ignores ranges) restarts it.
   A connection that drops mid-transfer is retried ``retries`` times, each
   retry resuming from what is on disk.
3. The sha256 of the whole file is checked; on mismatch the ``.part`` file is
   deleted and :class:`ValueError` names the URL and both digests.
4. ``dest.part`` is renamed onto ``dest`` atomically (``os.replace``).

A lock file (``dest.lock``, ``fcntl.flock``) serialises concurrent fetches of
the same file, e.g. by several Ray workers building the same model.

Set ``ERASABLEMASK_OFFLINE=1`` to forbid network access: a file that is not
cached then raises :class:`OfflineError` at once.

FR factories do not call :func:`fetch` themselves:
:func:`erasablemask.models.fr.weights.resolve_weights` does, for ``url``
weights.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from erasablemask.models.atomic_files import file_lock

__all__ = ["OfflineError", "fetch", "sha256_file"]

_CHUNK = 1 << 16
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_USER_AGENT = "erasablemask-fetch/0.1 (+urllib)"


class OfflineError(ConnectionError):
    """Raised when a download is needed but ``ERASABLEMASK_OFFLINE`` is set."""


def sha256_file(path: Path) -> str:
    """Hex sha256 digest of the file at ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _content_range_start(header: str | None) -> int | None:
    """First byte of a ``Content-Range: bytes a-b/total`` header, or None."""
    m = re.match(r"\s*bytes\s+(\d+)-", header or "")
    return int(m.group(1)) if m else None


def _transfer(url: str, part: Path, timeout: float, progress: bool) -> None:
    """One HTTP request appending to (or restarting) ``part``.

    Raises ``OSError``/``http.client.HTTPException`` on a dropped connection,
    leaving what was received in ``part`` for the next attempt.
    """
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # range past the end: the .part may be complete
            e.close()
            return
        raise
    with resp:
        if resp.status == 206 and _content_range_start(resp.headers.get("Content-Range")) == have:
            mode, start = "ab", have
        else:  # 200 (ranges ignored) or an unexpected range: start over
            mode, start = "wb", 0
        length = resp.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        with open(part, mode) as f, tqdm(
            total=total,
            initial=start,
            unit="B",
            unit_scale=True,
            desc=Path(url).name or "download",
            disable=not progress,
            leave=False,
        ) as bar:
            while True:
                chunk = resp.read(_CHUNK)
                if not chunk:
                    break
                f.write(chunk)
                bar.update(len(chunk))
        if total is not None and part.stat().st_size < total:
            raise http.client.IncompleteRead(b"", total - part.stat().st_size)


def fetch(
    url: str,
    sha256: str,
    dest: Path,
    *,
    progress: bool = True,
    retries: int = 3,
    timeout: float = 30.0,
) -> Path:
    """Download ``url`` to ``dest`` resumably and verify its sha256.

    Args:
        url: ``http(s)://`` URL of the file.
        sha256: expected lowercase hex digest (64 characters).
        dest: final path; its folder is created. ``dest.part`` holds partial data.
        progress: show a tqdm bar in bytes.
        retries: how many times a dropped connection is resumed within this call.
        timeout: socket timeout in seconds for each request.

    Returns:
        ``dest``, whose content has digest ``sha256``.

    Raises:
        ValueError: ``sha256`` malformed, or the downloaded file's digest differs
            (the file is deleted; the message names URL, expected and got digest).
        OfflineError: the file is not cached and ``ERASABLEMASK_OFFLINE`` is set.
        OSError: the download kept failing (the ``.part`` file is kept, so the
            next call resumes it).
    """
    sha256 = sha256.strip().lower()
    if not _HEX64.match(sha256):
        raise ValueError(f"sha256 for {url} must be 64 hex characters; got {sha256!r}")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with file_lock(dest.with_name(dest.name + ".lock")):
        if dest.is_file():
            if sha256_file(dest) == sha256:
                return dest
            dest.unlink()  # stale or corrupted: download again
        if os.environ.get("ERASABLEMASK_OFFLINE", "") not in ("", "0"):
            raise OfflineError(
                f"{dest} is not cached and ERASABLEMASK_OFFLINE is set; download {url} "
                f"(sha256 {sha256}) to that path, or unset ERASABLEMASK_OFFLINE"
            )
        for attempt in range(retries + 1):
            try:
                _transfer(url, part, timeout, progress)
                break
            except urllib.error.HTTPError:
                raise  # 404/403/...: retrying will not help
            except (OSError, http.client.HTTPException) as e:
                if attempt == retries:
                    raise OSError(
                        f"download of {url} failed after {retries + 1} attempts ({e!r}); "
                        f"{part} is kept and the next call resumes it"
                    ) from e
                time.sleep(min(2.0**attempt * 0.1, 5.0))
        got = sha256_file(part) if part.exists() else hashlib.sha256(b"").hexdigest()
        if got != sha256:
            part.unlink(missing_ok=True)
            raise ValueError(
                f"download of {url} failed the sha256 check: expected {sha256}, got {got}; "
                "the file was deleted. Check the URL and the digest in the model's spec"
            )
        os.replace(part, dest)
    return dest
