"""Atomic writes, once for the whole project (state dicts: :mod:`erasablemask.models.state_dicts`).

- :func:`atomic_path` / :func:`write_text_atomic`: every file the project
  writes goes to a temporary name in the destination folder and is renamed
  onto the destination (``os.replace``) only when complete, so a reader (or
  a crash) never sees half a file; on error the temporary file is removed.
  :func:`atomic_dir` does the same for a folder (checkpoints).
- :func:`file_lock`: the one advisory lock between processes (a cached
  model trained once, a file downloaded once, a shared stage-1 checkpoint).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "atomic_dir", "write_text_atomic"]


@contextmanager
def atomic_path(path: str | Path, *, mode: int = 0o644) -> Iterator[Path]:
    """A temporary path beside ``path``; renamed onto ``path`` when the block ends without error.

    The parent folder is created. The file gets permissions ``mode`` (mkstemp
    creates 0600), so cache files stay readable by other users. If the block
    raises, the temporary file is deleted and ``path`` is left as it was.

    Example::

        with atomic_path(out / "grid.png") as tmp:
            image.save(tmp, format="PNG")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """An empty temporary folder beside ``path``; renamed onto ``path`` when the block ends without error.

    An existing ``path`` is first renamed aside and deleted after the new
    folder is in place, so ``path`` is always either the old folder or the
    complete new one. If the block raises, the temporary folder is deleted
    and ``path`` is left as it was. The parent folder is created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        if path.exists():
            trash = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, trash)
            os.replace(tmp, path)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)




@contextmanager
def file_lock(lock_path: str | Path) -> Iterator[float]:
    """Hold an exclusive advisory ``flock`` on ``lock_path`` (created, with its folder, if absent).

    Serialises processes on one machine or a shared file system (two trainings of the same cached model, two
    downloads of one file); yields the seconds spent waiting for it.
    """
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(lock_path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield time.perf_counter() - t0
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
