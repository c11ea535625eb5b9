"""Paths behind one interface: read, write, list, exists, copy, with atomic writes.

Every stage reads and writes through these functions, so a killed stage leaves either a whole file
under its final name or none. A path is local (`/data/x`, `runs/a`) or object storage:
`gs://bucket/key` (Cloud Storage), `s3://bucket/key` (Amazon S3 or any S3-compatible store) or
`minio://bucket/key` (the S3 API of Kubeflow Pipelines' MinIO, as KFP writes its artifact URIs).
The same function serves all of them; any other `scheme:/...` is a one-line UserError.

Local: writes go to a temporary name in the same directory and are renamed into place after an fsync.

Object storage: a write first completes into a local temporary file (or memory), then goes to the
final object name in one upload. The store creates an object only when its upload completes (a
Cloud Storage upload is finalized, an S3 PutObject or CompleteMultipartUpload returns), so a writer
killed at any point leaves no object, or the previous version, under the final name; two writers
racing on one name leave exactly one writer's bytes (the last to complete wins, as with rename).
`exclusive=True` asks for create-only semantics instead (gs: `if_generation_match=0`; S3:
`If-None-Match: *`): the first to complete wins and the others get `AlreadyExists`. Reads pin the
version they opened (gs: the generation; S3: the ETag, sent as `If-Match`), so a reader never mixes
bytes of two versions. Transient errors (429, 5xx, dropped connections) are retried with backoff up
to a deadline; 403, 404 and 412 are not.

The stores themselves are small modules of primitives (stat, list, upload, ranged and whole
downloads, server-side copy, delete): bert_core/storage_gcs.py and bert_core/storage_s3.py. What is
built on them (exists and isdir on prefixes, glob, recursive listing, seekable readers, atomic
directories with their marker) is written once, here. See docs/storage.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fnmatch
import glob as _glob
import io
import json
import os
import posixpath
import re
import shutil
import tempfile
from typing import IO, Callable, Iterator

from bert_core.errors import UserError

#: The object storage schemes a path may start with.
REMOTE_SCHEMES = ("gs://", "s3://", "minio://")

#: The object a completed `atomic_dir` writes last; readers check it with `is_complete(prefix)`.
COMPLETE_MARKER = "_COMPLETE"


class AlreadyExists(FileExistsError):
    """An `exclusive=True` write found the target already there (another writer won)."""


class VersionChanged(Exception):
    """A conditional write or delete (`write_version`, `remove_version`) found another version of the
    object than the one it named, or none (another writer came first)."""


class StorageUnavailable(UserError):
    """Object storage kept failing with transient errors until the retry deadline passed."""

    exit_code = 75  # EX_TEMPFAIL: worth retrying the step


class NoSuchBucket(UserError):
    """The bucket of an object storage path does not exist."""


@dataclasses.dataclass(frozen=True)
class FileInfo:
    path: str
    size: int
    updated: datetime.datetime | None  # timezone-aware UTC
    # The object's version, which changes when its bytes do: gs:// the generation (an int), S3 the
    # ETag (a str; a rewrite with the same bytes in the same parts keeps it). None locally.
    generation: int | str | None = None


def is_remote(path) -> bool:
    """True for object storage: gs://, s3:// or minio://."""
    return str(path).startswith(REMOTE_SCHEMES)


def join(base: str, *parts: str) -> str:
    """`os.path.join` for local paths, '/'-joined for object storage (no double slashes)."""
    if is_remote(base):
        out = str(base)
        for p in parts:
            out = out.rstrip("/") + "/" + str(p).lstrip("/") if p else out
        return out
    return os.path.join(base, *parts)


def basename(path: str) -> str:
    return posixpath.basename(str(path).rstrip("/")) if is_remote(path) else os.path.basename(path)


def dirname(path: str) -> str:
    if is_remote(path):
        bucket, key = split(path)
        return f"{scheme_of(path)}{bucket}/{posixpath.dirname(key.rstrip('/'))}".rstrip("/")
    return os.path.dirname(path)


_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):/")


def check_scheme(path: str) -> str:
    """`path` itself if it is local or object storage; any other `scheme:/...` (`hdfs://`, `gs:/b`
    with one slash) is a one-line UserError naming the supported forms. Every storage function checks
    this; a stage can call it on its path flags to fail at its start."""
    if is_remote(path):
        return path
    url = _URL.match(os.fspath(path))
    if url:
        scheme = url.group(1)
        hint = ""
        if f"{scheme.lower()}://" in REMOTE_SCHEMES:
            hint = f" (did you mean {scheme.lower()}://{path[len(scheme) + 1:].lstrip('/')}?)"
        *others, last = [f"{s}BUCKET/KEY" for s in REMOTE_SCHEMES]
        raise UserError(f"{path}: unsupported storage URL{hint}; use a local path, {', '.join(others)} or {last}")
    return path


def _local(path: str) -> str:
    """`path` as a local path; object storage, or any other `scheme:/`, is a one-line UserError."""
    if is_remote(path):
        raise UserError(f"{path}: object storage path given where a local path is needed")
    return check_scheme(os.fspath(path))


# --------------------------------------------------------------------------------------------------
# Public functions: each dispatches to the local or the object storage implementation.


def exists(path: str) -> bool:
    """A file, a directory, an object, or a prefix holding objects (a bucket: if it exists)."""
    if is_remote(path):
        return _remote_exists(path)
    return os.path.exists(_local(path))


def isdir(path: str) -> bool:
    """A local directory, or a bucket / prefix with at least one object under `prefix/`."""
    if is_remote(path):
        return _remote_isdir(path)
    return os.path.isdir(_local(path))


def makedirs(path: str) -> None:
    """Create a local directory (and parents). Object storage has no directories: a no-op there."""
    if is_remote(path):
        split(path)  # validates the path
        return
    os.makedirs(_local(path), exist_ok=True)


def glob(pattern: str) -> list[str]:
    """Sorted matches of a glob pattern (a plain path matches itself if it exists).

    On object storage as locally: `*`, `?` and `[...]` match within one path segment, a segment starting with
    '.' matches only a pattern segment starting with '.', and a prefix with objects under it matches
    like a directory."""
    if is_remote(pattern):
        return _remote_glob(pattern)
    return sorted(_glob.glob(_local(pattern)))


def size(path: str) -> int:
    if is_remote(path):
        return _store(path).stat(path).size
    return os.path.getsize(_local(path))


def stat(path: str) -> FileInfo:
    """Size, time and version of one file or object; a missing one is a one-line UserError."""
    if is_remote(path):
        return _store(path).stat(path)
    try:
        return _local_info(_local(path))
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None


def open_read(path: str, mode: str = "rb") -> IO:
    """Open for reading: "rb" (seekable; on object storage byte ranges are fetched on demand) or "r"
    (UTF-8)."""
    if is_remote(path):
        return _remote_open_read(path, mode)
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
    if is_remote(path):
        return _store(path).read_bytes(path)
    with open_read(path, "rb") as f:
        return f.read()


def read_text(path: str) -> str:
    """A whole file as UTF-8 text; a missing file or bytes that are not UTF-8 are one-line UserErrors."""
    try:
        return read_bytes(path).decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not valid UTF-8 ({err.reason} at byte {err.start})") from None


def read_json(path: str):
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "wb", exclusive: bool = False) -> Iterator[IO]:
    """Open a temporary file; on success it becomes `path` whole, on an exception it is removed.

    Local: the temporary sits beside `path` and is fsynced and renamed into place. Otherwise it is a
    local temporary file, uploaded to `path` when the block ends without an exception (object storage).
    `exclusive=True`: fail with `AlreadyExists` instead of replacing an existing `path`."""
    with atomic_path(path, exclusive=exclusive) as tmp:
        with open(tmp, mode) as f:
            yield f


def atomic_path(path: str, exclusive: bool = False):
    """Context manager yielding a temporary local path that becomes `path` on success.

    For writers that want a filename rather than a file object (e.g. TFRecordWriter). Local: renamed
    into place; object storage: uploaded (see the module docstring). On an exception the temporary
    is removed and `path` is untouched."""
    if is_remote(path):
        return _RemoteAtomicPath(path, exclusive)
    return _AtomicPath(_local(path), exclusive)


class _AtomicPath:
    def __init__(self, path: str, exclusive: bool = False):
        self.path = path
        self.exclusive = exclusive

    def __enter__(self) -> str:
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(prefix=f".{os.path.basename(self.path)}.", suffix=".tmp", dir=directory)
        os.close(fd)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                with open(self.tmp, "rb+") as f:
                    os.fsync(f.fileno())
                    # mkstemp creates 0600; a published artifact gets the usual 0666 & ~umask
                    os.fchmod(f.fileno(), 0o666 & ~_umask())
                if self.exclusive:
                    try:
                        os.link(self.tmp, self.path)  # atomic create-only: fails if path exists
                    except FileExistsError:
                        raise AlreadyExists(f"{self.path}: already exists") from None
                else:
                    os.replace(self.tmp, self.path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.tmp)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp)


def write_bytes(path: str, data: bytes, exclusive: bool = False) -> None:
    if is_remote(path):
        _store(path).upload(path, data=bytes(data), exclusive=exclusive)
        return
    with atomic_open(path, "wb", exclusive=exclusive) as f:
        f.write(data)


def write_text(path: str, text: str, exclusive: bool = False) -> None:
    write_bytes(path, text.encode("utf-8"), exclusive=exclusive)


def write_json(path: str, obj, exclusive: bool = False) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n", exclusive=exclusive)


def copy(src: str, dst: str, exclusive: bool = False) -> None:
    """Copy one file/object to another, atomically at `dst`. Within one store (same scheme) the copy
    is server-side; an exclusive one, or one between stores, goes through a local temporary."""
    if is_remote(src) and is_remote(dst):
        if scheme_of(src) == scheme_of(dst) and not exclusive:
            _store(dst).server_copy(_store(src).stat(src), dst)
        else:
            info = _store(src).stat(src)
            with atomic_path(dst, exclusive=exclusive) as tmp:
                _store(src).download(info, tmp)
        return
    if is_remote(dst):
        with open_read(src, "rb"):  # the clear error for a missing local source
            pass
        _store(dst).upload(dst, filename=_local(src), exclusive=exclusive)
        return
    if is_remote(src):
        download(src, dst, exclusive=exclusive)
        return
    with open_read(src, "rb") as fin, atomic_open(dst, "wb", exclusive=exclusive) as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)


def download(src: str, dst: str, exclusive: bool = False) -> FileInfo:
    """Copy a file/object to the local path `dst` atomically; returns what was copied (for object
    storage: the one version that was read, in one request, so `dst` never mixes two versions)."""
    if not is_remote(src):
        info = stat(src)
        copy(src, dst, exclusive=exclusive)
        return info
    info = _store(src).stat(src)
    with atomic_path(_local(dst), exclusive=exclusive) as tmp:
        _store(src).download(info, tmp)
    return info


def remove(path: str) -> bool:
    """Delete one file or object; True if it was there."""
    if is_remote(path):
        return _store(path).delete(path)
    try:
        os.unlink(_local(path))
        return True
    except FileNotFoundError:
        return False


def read_version(path: str) -> tuple[bytes | None, int | str | None]:
    """Object storage: (bytes, version) of one object read in one request, or (None, None) if there is
    none. The version is what `write_version` and `remove_version` take (see `FileInfo.generation`)."""
    return _store(_remote(path)).read_version(path)


def write_version(path: str, data: bytes, if_version: int | str | None) -> int | str:
    """Object storage: write `data` to `path` only if the object is at version `if_version` (None: only
    if there is no object), decided by the store in the one request (gs: `ifGenerationMatch`; S3:
    `If-Match: <ETag>`, or `If-None-Match: *` to create). Returns the new version; raises
    `VersionChanged` if the object is at another version or gone. A compare-and-swap for small
    records (a run's lease, bert_core.lease)."""
    try:
        return _store(_remote(path)).upload(path, data=bytes(data), exclusive=if_version is None,
                                            if_version=if_version)
    except AlreadyExists:
        raise VersionChanged(f"{path}: already exists") from None


def remove_version(path: str, version: int | str) -> bool:
    """Object storage: delete `path` only if it is still at `version`; True if it was deleted."""
    return _store(_remote(path)).delete(path, if_version=version)


def _remote(path: str) -> str:
    if not is_remote(path):
        raise ValueError(f"{path}: versions are an object storage notion")
    return path


def remove_stale_temporaries(directory: str) -> int:
    """Delete `.name.*.tmp` files a killed writer left behind; returns how many.

    Object storage writers keep their temporaries on local disk, so an object prefix normally has
    none; objects named like that directly under the prefix are removed all the same."""
    if is_remote(directory):
        return sum(_store(directory).delete(p) for p in _remote_glob(join(directory, ".*.tmp")))
    removed = 0
    for tmp in _glob.glob(os.path.join(_local(directory), ".*.tmp")):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
            removed += 1
    return removed


def list_files(prefix: str) -> list[FileInfo]:
    """Every file under a directory / object prefix, recursively, sorted by path (a file: itself)."""
    if is_remote(prefix):
        return _remote_list_files(prefix)
    root = _local(prefix)
    if os.path.isfile(root):
        return [_local_info(root)]
    out = []
    for dirpath, _dirs, files in os.walk(root):
        out.extend(_local_info(os.path.join(dirpath, f)) for f in files)
    return sorted(out, key=lambda i: i.path)


def _local_info(path: str) -> FileInfo:
    st = os.stat(path)
    return FileInfo(path, st.st_size, datetime.datetime.fromtimestamp(st.st_mtime, datetime.timezone.utc))


@contextlib.contextmanager
def atomic_dir(path: str, others: Callable[[str], bool] | None = None) -> Iterator[str]:
    """Yield an empty local temporary directory that becomes the directory / prefix `path` on success.

    For checkpoints and other multi-file artifacts. On success the files are moved (local) or
    uploaded (object storage) under `path`, files of an earlier version that are not in the new one are
    removed, and `path/_COMPLETE` (a JSON list of the files and sizes) is written LAST. Readers call
    `is_complete(path)` before trusting the directory: a writer killed at any point leaves no marker
    (a rewrite removes the old marker before touching anything else). Locally the directory is also
    swapped in by rename, so a local reader never sees a half-written directory.

    `others(relative_name)`: names that other writers (e.g. other ranks of a job, on other hosts)
    have already put under `path` for this version: they are kept as found and listed in the marker,
    and never taken from the temporary directory."""
    remote = is_remote(path)
    if remote:
        tmp = tempfile.mkdtemp(prefix="bert-atomic-dir-")
    else:
        target = os.path.abspath(_local(path)).rstrip(os.sep)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=os.path.dirname(target))
    try:
        yield tmp
        files = []
        for dirpath, _dirs, names in os.walk(tmp):
            for n in names:
                full = os.path.join(dirpath, n)
                rel = os.path.relpath(full, tmp).replace(os.sep, "/")
                if rel == COMPLETE_MARKER:
                    raise ValueError(f"atomic_dir: {COMPLETE_MARKER} is reserved for the marker")
                if others is not None and others(rel):
                    continue  # another writer's file: published by that writer
                files.append({"path": rel, "size": os.path.getsize(full)})
        if remote:
            _remote_publish_dir(path, tmp, files, others)
        else:
            if others is not None and os.path.isdir(target):
                for info in list_files(target):
                    rel = os.path.relpath(info.path, target).replace(os.sep, "/")
                    if rel != COMPLETE_MARKER and others(rel):
                        os.makedirs(os.path.dirname(os.path.join(tmp, rel)), exist_ok=True)
                        os.replace(info.path, os.path.join(tmp, rel))
                        files.append({"path": rel, "size": info.size})
            _local_publish_dir(target, tmp, _marker(files))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish_dir(local_dir: str, path: str, others: Callable[[str], bool] | None = None) -> None:
    """Publish the files of a finished local directory as `path`, with `atomic_dir`'s guarantees
    (marker last; `others` as there). The local directory is left as it is."""
    local_dir = _local(local_dir)
    with atomic_dir(path, others=others) as tmp:
        for info in list_files(local_dir):
            rel = os.path.relpath(info.path, local_dir)
            if others is not None and others(rel.replace(os.sep, "/")):
                continue
            os.makedirs(os.path.dirname(os.path.join(tmp, rel)), exist_ok=True)
            try:
                os.link(info.path, os.path.join(tmp, rel))  # no copy of the bytes where it can be helped
            except OSError:
                shutil.copyfile(info.path, os.path.join(tmp, rel))


def remove_dir(path: str) -> int:
    """Delete a directory / every object under a prefix; returns how many files went. The
    `_COMPLETE` marker goes first, so a directory being removed already reads as incomplete."""
    remove(join(path, COMPLETE_MARKER))
    if is_remote(path):
        return sum(_store(path).delete(info.path) for info in _remote_list_files(path.rstrip("/") + "/"))
    local = _local(path)
    n = len(list_files(local)) if os.path.isdir(local) else 0
    shutil.rmtree(local, ignore_errors=True)
    return n


def _marker(files: list[dict]) -> str:
    return json.dumps({"files": sorted(files, key=lambda f: f["path"])}, indent=1) + "\n"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _local_publish_dir(target: str, tmp: str, marker: str) -> None:
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700
    with open(os.path.join(tmp, COMPLETE_MARKER), "w") as f:
        f.write(marker)
        f.flush()
        os.fsync(f.fileno())
    old = None
    if os.path.exists(target):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(target, COMPLETE_MARKER))
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.old.", suffix=".tmp", dir=os.path.dirname(target))
        os.rmdir(old)
        os.rename(target, old)
    os.rename(tmp, target)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def is_complete(path: str) -> bool:
    """True if `path` was published whole by `atomic_dir` (its `_COMPLETE` marker exists)."""
    return exists(join(path, COMPLETE_MARKER))


# --------------------------------------------------------------------------------------------------
# Object storage, written once over the primitives of a store module (storage_gcs, storage_s3):
#   stat(path) -> FileInfo                 object_exists(path) -> bool
#   bucket_exists(path, strict) -> bool    list_objects(path, prefix, max_results=None) -> [FileInfo]
#   upload(path, data=|filename=, exclusive=False, if_version=None) -> the new version
#   download(info, local_path)             read_range(info, start, n) -> bytes   (the version in info)
#   read_bytes(path) -> bytes              read_version(path) -> (bytes, version) | (None, None)
#   server_copy(src_info, dst)             delete(path, if_version=None) -> bool

_RETRY_DEADLINE_S = 120.0


def retry_deadline() -> float:
    """Seconds to keep retrying transient errors (env BERT_STORAGE_RETRY_DEADLINE, default 120)."""
    return float(os.environ.get("BERT_STORAGE_RETRY_DEADLINE", _RETRY_DEADLINE_S))


def retry_initial() -> float:
    """The first backoff delay in seconds, doubled up to 16 s (env BERT_STORAGE_RETRY_INITIAL, default 0.5)."""
    return float(os.environ.get("BERT_STORAGE_RETRY_INITIAL", 0.5))


def upload_chunk_bytes(minimum: int, quantum: int = 1) -> int:
    """The upload chunk / part size (env BERT_STORAGE_CHUNK_MB, default 16), at least `minimum` and a
    multiple of `quantum` (Cloud Storage: 256 KiB; S3 parts: at least 5 MiB)."""
    mb = float(os.environ.get("BERT_STORAGE_CHUNK_MB", 16))
    return max(minimum, int(mb * (1 << 20)) // quantum * quantum)


def _store(path: str):
    """The module that implements the primitives for this path's scheme (imported on first use)."""
    if str(path).startswith("gs://"):
        from bert_core import storage_gcs

        return storage_gcs
    from bert_core import storage_s3

    return storage_s3


def scheme_of(path: str) -> str:
    """The scheme ("gs://", "s3://" or "minio://") of an object storage path."""
    return str(path)[:str(path).index("://") + 3]


def split(path: str) -> tuple[str, str]:
    """(bucket, key) of an object storage path; a missing or wildcard bucket is a UserError."""
    scheme = scheme_of(path)
    bucket, _, key = str(path)[len(scheme):].partition("/")
    if not bucket or "*" in bucket or "?" in bucket or "[" in bucket:
        raise UserError(f"{path}: expected {scheme}BUCKET/OBJECT")
    return bucket, key


def split_object(path: str) -> tuple[str, str]:
    """(bucket, key) of a path that must name one object (not a bucket or a `prefix/`)."""
    bucket, key = split(path)
    if not key or key.endswith("/"):
        raise UserError(f"{path}: expected an object name after the bucket")
    return bucket, key


def url(path: str, key: str) -> str:
    """The path of object `key` in the bucket of `path`."""
    return f"{scheme_of(path)}{split(path)[0]}/{key}"


def not_found(path: str, missing: str = "object") -> UserError:
    """The error for a 404 on `path`: its bucket does not exist, or the object (`missing`) does not."""
    if not _store(path).bucket_exists(path, strict=False):
        return NoSuchBucket(f"{scheme_of(path)}{split(path)[0]}: bucket does not exist")
    return UserError(f"{path}: no such {missing}")


def _remote_exists(path: str) -> bool:
    _, key = split(path)
    if not key.strip("/"):
        return _store(path).bucket_exists(path, strict=True)
    if not key.endswith("/") and _store(path).object_exists(path):
        return True
    return _remote_isdir(path)


def _remote_isdir(path: str) -> bool:
    _, key = split(path)
    if not key.strip("/"):
        return _store(path).bucket_exists(path, strict=True)
    try:
        return bool(_store(path).list_objects(path, key.rstrip("/") + "/", max_results=1))
    except NoSuchBucket:
        return False


def _remote_glob(pattern: str) -> list[str]:
    _, key = split(pattern)
    if not any(ch in key for ch in "*?["):
        return [pattern] if _remote_exists(pattern) else []
    literal = key
    for i, ch in enumerate(key):
        if ch in "*?[":
            literal = key[:i]
            break
    segments = key.rstrip("/").split("/")
    try:
        objects = _store(pattern).list_objects(pattern, literal)
    except NoSuchBucket:
        return []
    base = url(pattern, "")
    found = set()
    for info in objects:
        parts = info.path[len(base):].split("/")
        if len(parts) < len(segments):
            continue
        head = parts[:len(segments)]
        if all(_segment_match(name, pat) for name, pat in zip(head, segments)):
            found.add(base + "/".join(head))
    return sorted(found)


def _segment_match(name: str, pattern: str) -> bool:
    if not name:
        return False
    if name.startswith(".") and not pattern.startswith("."):
        return False
    return fnmatch.fnmatchcase(name, pattern)


def _remote_list_files(prefix: str) -> list[FileInfo]:
    store = _store(prefix)
    _, key = split(prefix)
    single = []
    if key and not key.endswith("/") and store.object_exists(prefix):
        single = [store.stat(prefix)]
    under = key.rstrip("/") + "/" if key.strip("/") else ""
    rows = [i for i in store.list_objects(prefix, under) if not i.path.endswith("/")]
    return sorted(single + rows, key=lambda i: i.path)


class _RemoteAtomicPath:
    def __init__(self, path: str, exclusive: bool):
        split_object(path)  # validate the name before any work is done
        self.path = path
        self.exclusive = exclusive

    def __enter__(self) -> str:
        fd, self.tmp = tempfile.mkstemp(prefix=f".{basename(self.path)}.", suffix=".tmp",
                                        dir=os.environ.get("BERT_STORAGE_TMPDIR"))
        os.close(fd)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                _store(self.path).upload(self.path, filename=self.tmp, exclusive=self.exclusive)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp)


def _remote_publish_dir(path: str, tmp: str, files: list[dict], others: Callable[[str], bool] | None) -> None:
    store = _store(path)
    prefix = path.rstrip("/")
    store.delete(join(prefix, COMPLETE_MARKER))  # from here on readers see "incomplete"
    new = {f["path"] for f in files}
    for f in files:
        store.upload(join(prefix, f["path"]), filename=os.path.join(tmp, *f["path"].split("/")))
    listed = list(files)
    for info in _remote_list_files(prefix + "/"):
        rel = info.path[len(prefix) + 1:]
        if rel == COMPLETE_MARKER or rel in new:
            continue
        if others is not None and others(rel):
            listed.append({"path": rel, "size": info.size})
        else:
            store.delete(info.path)
    store.upload(join(prefix, COMPLETE_MARKER), data=_marker(listed).encode("utf-8"))


class _RemoteRawReader(io.RawIOBase):
    """Seekable reads of one object version by byte ranges; wrap in io.BufferedReader."""

    def __init__(self, info: FileInfo):
        self.name = info.path
        self._info = info
        self._pos = 0

    @property
    def size(self) -> int:
        return self._info.size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise OSError(f"{self.name}: negative seek position {pos}")
        self._pos = pos
        return pos

    def readall(self) -> bytes:  # one request for the rest, not RawIOBase's 8 KiB loop
        if self._pos >= self.size:
            return b""
        buf = bytearray(self.size - self._pos)
        n = self.readinto(buf)
        return bytes(buf[:n])

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.size - self._pos)
        if n <= 0:
            return 0
        data = _store(self.name).read_range(self._info, self._pos, n)
        if len(data) != n:
            raise OSError(f"{self.name}: expected {n} bytes at offset {self._pos}, got {len(data)}")
        buffer[:n] = data
        self._pos += n
        return n


def _remote_open_read(path: str, mode: str) -> IO:
    if mode not in ("rb", "r", "rt"):
        raise ValueError(f"open_read: mode {mode!r} (use atomic_open to write)")
    raw = _RemoteRawReader(_store(path).stat(path))  # never mix bytes of two versions
    buffered = io.BufferedReader(raw, buffer_size=int(float(os.environ.get("BERT_STORAGE_READ_MB", 2)) * (1 << 20)))
    if mode == "rb":
        return buffered
    return io.TextIOWrapper(buffered, encoding="utf-8")
