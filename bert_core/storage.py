"""Paths behind one interface: read, write, list, exists, copy, with atomic writes.

Every stage reads and writes through these functions, so a killed stage leaves either a whole file
under its final name or none: writes go to a temporary name in the same directory and are renamed
into place after an fsync. Local paths are supported here; object storage (gs://) plugs in behind the
same functions.
"""

from __future__ import annotations

import contextlib
import glob as _glob
import json
import os
import shutil
import tempfile
from typing import IO, Iterator

from bert_core.errors import UserError

_SCHEMES = ("gs://",)


def _local(path: str) -> str:
    if str(path).startswith(_SCHEMES):
        raise UserError(f"{path}: object storage paths are not supported by this build (local paths only)")
    return os.fspath(path)


def exists(path: str) -> bool:
    return os.path.exists(_local(path))


def isdir(path: str) -> bool:
    return os.path.isdir(_local(path))


def makedirs(path: str) -> None:
    os.makedirs(_local(path), exist_ok=True)


def glob(pattern: str) -> list[str]:
    """Sorted matches of a glob pattern (a plain path matches itself if it exists)."""
    return sorted(_glob.glob(_local(pattern)))


def size(path: str) -> int:
    return os.path.getsize(_local(path))


def open_read(path: str, mode: str = "rb") -> IO:
    local = _local(path)
    try:
        return open(local, mode)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, expected a file") from None
    except PermissionError:
        raise UserError(f"{path}: permission denied") from None


def read_bytes(path: str) -> bytes:
    with open_read(path, "rb") as f:
        return f.read()


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def read_json(path: str):
    try:
        return json.loads(read_text(path))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside `path`; on success fsync and rename it to `path`, else remove it."""
    local = _local(path)
    directory = os.path.dirname(os.path.abspath(local))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(local)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, local)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_path(path: str):
    """Context manager yielding a temporary local path that is renamed to `path` on success.

    For writers that want a filename rather than a file object (e.g. TFRecordWriter)."""
    return _AtomicPath(_local(path))


class _AtomicPath:
    def __init__(self, path: str):
        self.path = path

    def __enter__(self) -> str:
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(prefix=f".{os.path.basename(self.path)}.", suffix=".tmp", dir=directory)
        os.close(fd)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            with open(self.tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(self.tmp, self.path)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp)


def write_bytes(path: str, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def copy(src: str, dst: str) -> None:
    with open_read(src, "rb") as fin, atomic_open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)


def remove_stale_temporaries(directory: str) -> int:
    """Delete `.name.*.tmp` files a killed writer left behind; returns how many."""
    removed = 0
    for tmp in _glob.glob(os.path.join(_local(directory), ".*.tmp")):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
            removed += 1
    return removed
