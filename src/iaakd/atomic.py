"""Atomic file writes: a file is either its old self or complete, never half-written, whatever kills the
process and whoever else writes the same file at the same time.

Each write goes to a temporary file of its own, in the target's folder (a rename is atomic only within
one file system): a unique name, so two processes writing the same target never share a staging file.
The temporary file is flushed and fsynced, then renamed over the target, and the folder is fsynced so the
rename itself survives a power cut. On any failure the temporary file is removed and the target is left
as it was.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

TEMPORARY_MARK = ".tmp-"  # in every temporary name: ``.<name>.tmp-<random><suffix>``


def temporary_name(path: Path) -> Path:
    """A fresh hidden name beside ``path`` that ends in ``path``'s suffix (writers that choose the format
    by the suffix still see it)."""
    return path.with_name(f".{path.name}{TEMPORARY_MARK}{secrets.token_hex(6)}{path.suffix}")


def _create_exclusively(path: Path) -> Path:
    """Creates an empty file under a new temporary name beside ``path``; permissions as a plain
    ``open(..., "w")`` gives them (0o666 less the umask, unlike mkstemp's 0o600)."""
    for _ in range(100):
        candidate = temporary_name(path)
        try:
            os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"no free temporary name beside {path}")


def _fsync_file(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_folder(path: Path) -> None:
    """Makes a rename in ``path`` durable; where a folder cannot be opened or synced (Windows, some
    network file systems) the rename is still atomic, only not yet on disk."""
    with contextlib.suppress(OSError):
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path beside ``path`` for a writer that takes a path (``torch.save``,
    ``pyarrow.parquet.write_table``, ``DataFrame.to_csv``); when the block ends without an error, that
    file is fsynced and renamed to ``path``. An empty file exists at the temporary path when the block
    starts (it reserves the name); the writer overwrites it. On an error (or KeyboardInterrupt) the
    temporary file is removed, ``path`` is untouched, and the error propagates. The folder is created
    when missing.

        with atomic_path("data/labels.parquet") as temporary:
            pyarrow.parquet.write_table(table, temporary)

    (``torch.save`` given a path names its archive after it: :func:`iaakd.checkpoints.save_atomically`.)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _create_exclusively(path)
    try:
        yield temporary
        _fsync_file(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """``data`` as the whole content of ``path``, atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    """``text`` as the whole content of ``path``, atomically (see :func:`atomic_path`)."""
    atomic_write_bytes(path, text.encode(encoding))
