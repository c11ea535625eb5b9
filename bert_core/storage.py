"""Paths behind one interface: read, write, list, exists, copy, with atomic writes.

Every stage reads and writes through these functions, so a killed stage leaves either a whole file
under its final name or none. A path is local (`/data/x`, `runs/a`) or object storage
(`gs://bucket/key`); the same function serves both.

Local: writes go to a temporary name in the same directory and are renamed into place after an fsync.

gs://: a write first completes into a local temporary file, then uploads it to the final object name
in one upload (multipart up to 8 MiB, resumable above). Cloud Storage creates an object only when its
upload is finalized, so a writer killed at any point leaves no object, or the previous generation,
under the final name; two writers racing on one name leave exactly one writer's bytes (the last to
finalize wins, as with rename). `exclusive=True` asks for create-only semantics instead
(`if_generation_match=0`): the first to finalize wins and the others get `AlreadyExists`. Reads pin
the object generation they opened, so a reader never mixes bytes of two versions. Transient errors
(429, 5xx, dropped connections) are retried with backoff up to a deadline; 403, 404 and 412 are not.
See docs/storage.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fnmatch
import glob as _glob
import io
import json
import mimetypes
import os
import posixpath
import shutil
import tempfile
import threading
import warnings
from typing import IO, Callable, Iterator

from bert_core.errors import UserError

_SCHEMES = ("gs://",)

#: The object a completed `atomic_dir` writes last; readers check it with `is_complete(prefix)`.
COMPLETE_MARKER = "_COMPLETE"


class AlreadyExists(FileExistsError):
    """An `exclusive=True` write found the target already there (another writer won)."""


class StorageUnavailable(UserError):
    """Object storage kept failing with transient errors until the retry deadline passed."""

    exit_code = 75  # EX_TEMPFAIL: worth retrying the step


@dataclasses.dataclass(frozen=True)
class FileInfo:
    path: str
    size: int
    updated: datetime.datetime | None  # timezone-aware UTC
    generation: int | None = None  # gs:// only: the object generation (changes on every rewrite)


def is_gcs(path) -> bool:
    return str(path).startswith("gs://")


def join(base: str, *parts: str) -> str:
    """`os.path.join` for local paths, '/'-joined for gs:// (no double slashes)."""
    if is_gcs(base):
        out = str(base)
        for p in parts:
            out = out.rstrip("/") + "/" + str(p).lstrip("/") if p else out
        return out
    return os.path.join(base, *parts)


def basename(path: str) -> str:
    return posixpath.basename(str(path).rstrip("/")) if is_gcs(path) else os.path.basename(path)


def dirname(path: str) -> str:
    if is_gcs(path):
        bucket, key = _split(path)
        return f"gs://{bucket}/{posixpath.dirname(key.rstrip('/'))}".rstrip("/")
    return os.path.dirname(path)


def _local(path: str) -> str:
    if str(path).startswith(_SCHEMES):
        raise UserError(f"{path}: object storage path given where a local path is needed")
    return os.fspath(path)


# --------------------------------------------------------------------------------------------------
# Public functions: each dispatches to the local or the gs:// implementation.


def exists(path: str) -> bool:
    """A file, a directory, an object, or a gs:// prefix holding objects (a bucket: if it exists)."""
    if is_gcs(path):
        return _gcs_exists(path)
    return os.path.exists(_local(path))


def isdir(path: str) -> bool:
    """A local directory, or a gs:// bucket / prefix with at least one object under `prefix/`."""
    if is_gcs(path):
        return _gcs_isdir(path)
    return os.path.isdir(_local(path))


def makedirs(path: str) -> None:
    """Create a local directory (and parents). Object storage has no directories: a no-op there."""
    if is_gcs(path):
        _split(path)  # validates the path
        return
    os.makedirs(_local(path), exist_ok=True)


def glob(pattern: str) -> list[str]:
    """Sorted matches of a glob pattern (a plain path matches itself if it exists).

    On gs:// as locally: `*`, `?` and `[...]` match within one path segment, a segment starting with
    '.' matches only a pattern segment starting with '.', and a prefix with objects under it matches
    like a directory."""
    if is_gcs(pattern):
        return _gcs_glob(pattern)
    return sorted(_glob.glob(_local(pattern)))


def size(path: str) -> int:
    if is_gcs(path):
        return _gcs_stat(path).size
    return os.path.getsize(_local(path))


def stat(path: str) -> FileInfo:
    """Size, time and (gs://) generation of one file or object; a missing one is a one-line UserError."""
    if is_gcs(path):
        blob = _gcs_stat(path)
        return FileInfo(path, int(blob.size or 0), blob.updated, blob.generation)
    try:
        return _local_info(_local(path))
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None


def open_read(path: str, mode: str = "rb") -> IO:
    """Open for reading: "rb" (seekable; on gs:// byte ranges are fetched on demand) or "r" (UTF-8)."""
    if is_gcs(path):
        return _gcs_open_read(path, mode)
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
    if is_gcs(path):
        return _gcs_read_bytes(path)
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

    Local: the temporary sits beside `path` and is fsynced and renamed into place. gs://: it is a
    local temporary file, uploaded to `path` when the block ends without an exception.
    `exclusive=True`: fail with `AlreadyExists` instead of replacing an existing `path`."""
    with atomic_path(path, exclusive=exclusive) as tmp:
        with open(tmp, mode) as f:
            yield f


def atomic_path(path: str, exclusive: bool = False):
    """Context manager yielding a temporary local path that becomes `path` on success.

    For writers that want a filename rather than a file object (e.g. TFRecordWriter). Local: renamed
    into place; gs://: uploaded (see the module docstring). On an exception the temporary is removed
    and `path` is untouched."""
    if is_gcs(path):
        return _GCSAtomicPath(path, exclusive)
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
    if is_gcs(path):
        _gcs_upload(path, data=bytes(data), exclusive=exclusive)
        return
    with atomic_open(path, "wb", exclusive=exclusive) as f:
        f.write(data)


def write_text(path: str, text: str, exclusive: bool = False) -> None:
    write_bytes(path, text.encode("utf-8"), exclusive=exclusive)


def write_json(path: str, obj, exclusive: bool = False) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n", exclusive=exclusive)


def copy(src: str, dst: str, exclusive: bool = False) -> None:
    """Copy one file/object to another, atomically at `dst` (gs:// to gs:// copies server-side)."""
    if is_gcs(src) and is_gcs(dst):
        _gcs_copy(src, dst, exclusive)
        return
    if is_gcs(dst):
        with open_read(src, "rb"):  # the clear error for a missing local source
            pass
        _gcs_upload(dst, filename=_local(src), exclusive=exclusive)
        return
    if is_gcs(src):
        download(src, dst, exclusive=exclusive)
        return
    with open_read(src, "rb") as fin, atomic_open(dst, "wb", exclusive=exclusive) as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)


def download(src: str, dst: str, exclusive: bool = False) -> FileInfo:
    """Copy a file/object to the local path `dst` atomically; returns what was copied (for gs://: the
    one generation that was read, in one request, so `dst` never mixes two versions)."""
    if not is_gcs(src):
        info = stat(src)
        copy(src, dst, exclusive=exclusive)
        return info
    meta = _gcs_stat(src)
    pinned = _blob(src, generation=meta.generation)
    with atomic_path(_local(dst), exclusive=exclusive) as tmp:
        _call(src, pinned.download_to_filename, tmp, retry=_retry(),
              gone=f"replaced or deleted while being read (generation {meta.generation} is gone); read it again")
    return FileInfo(src, int(meta.size or 0), meta.updated, meta.generation)


def remove(path: str) -> bool:
    """Delete one file or object; True if it was there."""
    if is_gcs(path):
        return _gcs_delete(path)
    try:
        os.unlink(_local(path))
        return True
    except FileNotFoundError:
        return False


def remove_stale_temporaries(directory: str) -> int:
    """Delete `.name.*.tmp` files a killed writer left behind; returns how many.

    gs:// writers keep their temporaries on local disk, so an object prefix normally has none;
    objects named like that directly under the prefix are removed all the same."""
    if is_gcs(directory):
        removed = 0
        for p in _gcs_glob(join(directory, ".*.tmp")):
            removed += _gcs_delete(p)
        return removed
    removed = 0
    for tmp in _glob.glob(os.path.join(_local(directory), ".*.tmp")):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
            removed += 1
    return removed


def list_files(prefix: str) -> list[FileInfo]:
    """Every file under a directory / gs:// prefix, recursively, sorted by path (a file: itself)."""
    if is_gcs(prefix):
        return _gcs_list_files(prefix)
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
    uploaded (gs://) under `path`, files of an earlier version that are not in the new one are
    removed, and `path/_COMPLETE` (a JSON list of the files and sizes) is written LAST. Readers call
    `is_complete(path)` before trusting the directory: a writer killed at any point leaves no marker
    (a rewrite removes the old marker before touching anything else). Locally the directory is also
    swapped in by rename, so a local reader never sees a half-written directory.

    `others(relative_name)`: names that other writers (e.g. other ranks of a job, on other hosts)
    have already put under `path` for this version: they are kept as found and listed in the marker,
    and never taken from the temporary directory."""
    gcs = is_gcs(path)
    if gcs:
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
        if gcs:
            _gcs_publish_dir(path, tmp, files, others)
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
    """Delete a directory / every object under a gs:// prefix; returns how many files went. The
    `_COMPLETE` marker goes first, so a directory being removed already reads as incomplete."""
    remove(join(path, COMPLETE_MARKER))
    if is_gcs(path):
        removed = 0
        for info in _gcs_list_files(path.rstrip("/") + "/"):
            removed += _gcs_delete(info.path)
        return removed
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
# gs:// implementation (google-cloud-storage, imported on first use).

_RETRY_DEADLINE_S = 120.0
_state = threading.local()
_creds_lock = threading.Lock()
_adc: tuple | None = None  # (pid, credentials, project)


def _split(path: str) -> tuple[str, str]:
    rest = str(path)[len("gs://"):]
    bucket, _, key = rest.partition("/")
    if not bucket or "*" in bucket or "?" in bucket or "[" in bucket:
        raise UserError(f"{path}: expected gs://BUCKET/OBJECT")
    return bucket, key


def _g():
    """google.cloud.storage and friends, imported once (their import costs ~0.3 s)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # api_core's Python-version notices
        from google.api_core import exceptions as api_exc
        from google.api_core import retry as api_retry
        from google.cloud import storage as gcs
    return gcs, api_exc, api_retry


def _client():
    """One client per thread and process (requests sessions are not fork-safe), rebuilt if
    STORAGE_EMULATOR_HOST changes. Emulator: anonymous credentials. Otherwise: application-default."""
    gcs, _, _ = _g()
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    key = (os.getpid(), emulator)
    cached = getattr(_state, "client", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    if emulator:
        from google.auth.credentials import AnonymousCredentials

        client = gcs.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT", "emulator"),
                            credentials=AnonymousCredentials())
    else:
        credentials, project = _default_credentials()
        client = gcs.Client(project=project, credentials=credentials)
    _state.client = (key, client)
    return client


def _default_credentials():
    global _adc
    with _creds_lock:
        if _adc is None or _adc[0] != os.getpid():
            import google.auth
            from google.auth.exceptions import DefaultCredentialsError

            try:
                credentials, project = google.auth.default(
                    scopes=["https://www.googleapis.com/auth/devstorage.read_write"])
            except DefaultCredentialsError:
                raise UserError("gs://: no Google Cloud credentials found (run `gcloud auth application-default "
                                "login`, set GOOGLE_APPLICATION_CREDENTIALS, or run with a workload identity)") from None
            _adc = (os.getpid(), credentials, project or os.environ.get("GOOGLE_CLOUD_PROJECT"))
        return _adc[1], _adc[2]


def _is_transient(exc: BaseException) -> bool:
    """429, 5xx, dropped or refused connections, timeouts: worth another try. Never 4xx otherwise."""
    import requests
    from google.api_core import exceptions as api_exc
    from google.auth import exceptions as auth_exc

    if isinstance(exc, (api_exc.TooManyRequests, api_exc.InternalServerError, api_exc.BadGateway,
                        api_exc.ServiceUnavailable, api_exc.GatewayTimeout)):
        return True
    if isinstance(exc, api_exc.GoogleAPICallError):
        return False
    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError,
                        requests.exceptions.Timeout, ConnectionError, TimeoutError, auth_exc.TransportError)):
        return True
    try:  # google-resumable-media raises its own type for unexpected statuses
        from google.resumable_media import common as rm_common

        if isinstance(exc, rm_common.InvalidResponse):
            status = getattr(exc.response, "status_code", None)
            return status == 429 or (status is not None and status >= 500)
        if isinstance(exc, rm_common.DataCorruption):
            return True
    except ImportError:  # pragma: no cover
        pass
    return False


def retry_deadline() -> float:
    """Seconds to keep retrying transient errors (env BERT_STORAGE_RETRY_DEADLINE, default 120)."""
    return float(os.environ.get("BERT_STORAGE_RETRY_DEADLINE", _RETRY_DEADLINE_S))


def _retry():
    _, _, api_retry = _g()
    return api_retry.Retry(predicate=_is_transient,
                           initial=float(os.environ.get("BERT_STORAGE_RETRY_INITIAL", 0.5)),
                           maximum=16.0, multiplier=2.0, timeout=retry_deadline())


def _call(path: str, fn, *args, missing: str = "object", gone: str | None = None, **kwargs):
    """Run one storage call with retries; turn its failures into one-line errors naming `path`."""
    _, api_exc, _ = _g()
    try:
        return _retry()(fn)(*args, **kwargs)
    except api_exc.NotFound:
        if gone:
            raise UserError(f"{path}: {gone}") from None
        raise _not_found(path, missing) from None
    except api_exc.PreconditionFailed:
        raise AlreadyExists(f"{path}: already exists (a create-only write found it there)") from None
    except (api_exc.Forbidden, api_exc.Unauthorized) as err:
        raise UserError(f"{path}: permission denied ({_first_line(err)})") from None
    except api_exc.RetryError as err:
        cause = err.cause if err.cause is not None else err
        raise StorageUnavailable(f"{path}: storage unavailable after retrying for {retry_deadline():.0f} s "
                                 f"({_first_line(cause)})") from None
    except Exception as err:
        if _is_transient(err):  # the last try of a deadline that ran out mid-call
            raise StorageUnavailable(f"{path}: storage unavailable ({_first_line(err)})") from None
        raise


def _first_line(err: BaseException) -> str:
    """'403 <the server's own message, first line>' (which names the principal for a 403)."""
    msg = None
    response = getattr(err, "response", None)
    if response is not None:
        with contextlib.suppress(Exception):
            msg = response.json()["error"]["message"]
    msg = msg or getattr(err, "message", None) or str(err) or type(err).__name__
    code = getattr(err, "code", None)
    if not isinstance(code, int):
        code = getattr(response, "status_code", None)
    line = str(msg).strip().splitlines()[0] if str(msg).strip() else type(err).__name__
    return f"{int(code)} {line}" if isinstance(code, int) and not line.startswith(str(code)) else line


def _not_found(path: str, missing: str) -> UserError:
    bucket, _ = _split(path)
    if not _bucket_exists(bucket):
        return UserError(f"gs://{bucket}: bucket does not exist")
    return UserError(f"{path}: no such {missing}")


def _bucket_exists(bucket: str) -> bool:
    _, api_exc, _ = _g()
    try:
        return _retry()(_client().bucket(bucket).exists)()
    except (api_exc.Forbidden, api_exc.Unauthorized):
        return True  # can't tell: object-level permissions only; assume it exists


def _blob(path: str, generation: int | None = None):
    bucket, key = _split(path)
    if not key or key.endswith("/"):
        raise UserError(f"{path}: expected an object name after the bucket")
    return _client().bucket(bucket).blob(key, generation=generation)


def _gcs_stat(path: str):
    blob = _blob(path)
    _call(path, blob.reload)
    return blob


def _gcs_exists(path: str) -> bool:
    bucket, key = _split(path)
    if not key.strip("/"):
        return _bucket_exists_strict(path, bucket)
    if not key.endswith("/") and _call(path, _blob(path).exists):
        return True
    return _gcs_isdir(path)


def _bucket_exists_strict(path: str, bucket: str) -> bool:
    return bool(_call(path, _client().bucket(bucket).exists))


def _list(path: str, prefix: str, max_results: int | None = None, delimiter: str | None = None):
    bucket, _ = _split(path)

    def run():
        it = _client().list_blobs(bucket, prefix=prefix, max_results=max_results, delimiter=delimiter,
                                  retry=_retry())
        return list(it)

    return _call(path, run, missing="bucket")


def _gcs_isdir(path: str) -> bool:
    bucket, key = _split(path)
    if not key.strip("/"):
        return _bucket_exists_strict(path, bucket)
    try:
        return bool(_list(path, key.rstrip("/") + "/", max_results=1))
    except UserError as err:
        if "bucket does not exist" in str(err):
            return False
        raise


def _gcs_glob(pattern: str) -> list[str]:
    bucket, key = _split(pattern)
    if not any(ch in key for ch in "*?["):
        return [pattern] if _gcs_exists(pattern) else []
    literal = key
    for i, ch in enumerate(key):
        if ch in "*?[":
            literal = key[:i]
            break
    segments = key.rstrip("/").split("/")
    try:
        blobs = _list(pattern, literal)
    except UserError as err:
        if "bucket does not exist" in str(err):
            return []
        raise
    found = set()
    for blob in blobs:
        parts = blob.name.split("/")
        if len(parts) < len(segments):
            continue
        head = parts[:len(segments)]
        if all(_segment_match(name, pat) for name, pat in zip(head, segments)):
            found.add(f"gs://{bucket}/" + "/".join(head))
    return sorted(found)


def _segment_match(name: str, pattern: str) -> bool:
    if not name:
        return False
    if name.startswith(".") and not pattern.startswith("."):
        return False
    return fnmatch.fnmatchcase(name, pattern)


def _gcs_list_files(prefix: str) -> list[FileInfo]:
    bucket, key = _split(prefix)
    single = []
    if key and not key.endswith("/"):
        blob = _blob(prefix)
        if _call(prefix, blob.exists):
            _call(prefix, blob.reload)
            single = [FileInfo(prefix, int(blob.size or 0), blob.updated, blob.generation)]
    under = key.rstrip("/") + "/" if key.strip("/") else ""
    rows = [FileInfo(f"gs://{bucket}/{b.name}", int(b.size or 0), b.updated, b.generation)
            for b in _list(prefix, under) if not b.name.endswith("/")]
    return sorted(single + rows, key=lambda i: i.path)


def _upload_chunk_size() -> int:
    """Resumable upload chunk (env BERT_STORAGE_CHUNK_MB, default 16; a multiple of 256 KiB)."""
    mb = float(os.environ.get("BERT_STORAGE_CHUNK_MB", 16))
    quantum = 256 * 1024
    return max(quantum, int(mb * (1 << 20)) // quantum * quantum)


def _gcs_upload(path: str, *, data: bytes | None = None, filename: str | None = None, exclusive: bool = False):
    """One upload to the final name: the object appears only when the upload is finalized."""
    blob = _blob(path)
    blob.chunk_size = _upload_chunk_size()
    content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    kwargs = {"content_type": content_type, "retry": _retry()}
    if exclusive:
        kwargs["if_generation_match"] = 0

    def run():
        if data is not None:
            blob.upload_from_string(data, **kwargs)
        else:
            blob.upload_from_filename(filename, **kwargs)

    _call(path, run)


class _GCSAtomicPath:
    def __init__(self, path: str, exclusive: bool):
        _blob(path)  # validate the name before any work is done
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
                _gcs_upload(self.path, filename=self.tmp, exclusive=self.exclusive)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp)


def _gcs_read_bytes(path: str) -> bytes:
    blob = _blob(path)
    return _call(path, blob.download_as_bytes, retry=_retry())


def _gcs_copy(src: str, dst: str, exclusive: bool) -> None:
    """Server-side rewrite (handles large and cross-location objects in several calls); the
    destination appears only when the rewrite completes.

    An exclusive copy goes through a local temporary and a create-only upload instead: the upload
    precondition is what fake-gcs-server enforces (it ignores preconditions on rewrite), so the
    create-only guarantee is the one the tests check."""
    source = _gcs_stat(src)
    if exclusive:
        with atomic_path(dst, exclusive=True) as tmp:
            pinned = _blob(src, generation=source.generation)
            _call(src, pinned.download_to_filename, tmp, retry=_retry())
        return
    target = _blob(dst)
    kwargs = {"retry": _retry()}
    token = None
    while True:
        token, _done, _total = _call(dst, target.rewrite, source, token=token, **kwargs)
        if token is None:
            return


def _gcs_delete(path: str) -> bool:
    _, api_exc, _ = _g()
    blob = _blob(path)
    try:
        _retry()(blob.delete)()
        return True
    except api_exc.NotFound:
        return False
    except (api_exc.Forbidden, api_exc.Unauthorized) as err:
        raise UserError(f"{path}: permission denied ({_first_line(err)})") from None


def _gcs_publish_dir(path: str, tmp: str, files: list[dict], others: Callable[[str], bool] | None) -> None:
    prefix = path.rstrip("/")
    _gcs_delete(join(prefix, COMPLETE_MARKER))  # from here on readers see "incomplete"
    new = {f["path"] for f in files}
    for f in files:
        _gcs_upload(join(prefix, f["path"]), filename=os.path.join(tmp, *f["path"].split("/")))
    listed = list(files)
    for info in _gcs_list_files(prefix + "/"):
        rel = info.path[len(prefix) + 1:]
        if rel == COMPLETE_MARKER or rel in new:
            continue
        if others is not None and others(rel):
            listed.append({"path": rel, "size": info.size})
        else:
            _gcs_delete(info.path)
    _gcs_upload(join(prefix, COMPLETE_MARKER), data=_marker(listed).encode("utf-8"))


class _GCSRawReader(io.RawIOBase):
    """Seekable reads of one object generation by HTTP byte ranges; wrap in io.BufferedReader."""

    def __init__(self, path: str, blob, size: int):
        self.name = path
        self._path = path
        self._blob = blob
        self._size = size
        self._pos = 0

    @property
    def size(self) -> int:
        return self._size

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
            pos = self._size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise OSError(f"{self._path}: negative seek position {pos}")
        self._pos = pos
        return pos

    def readall(self) -> bytes:  # one request for the rest, not RawIOBase's 8 KiB loop
        if self._pos >= self._size:
            return b""
        buf = bytearray(self._size - self._pos)
        n = self.readinto(buf)
        return bytes(buf[:n])

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self._size - self._pos)
        if n <= 0:
            return 0
        data = _call(self._path, self._blob.download_as_bytes, start=self._pos, end=self._pos + n - 1,
                     raw_download=True, checksum=None, retry=_retry(),
                     gone=f"replaced or deleted while being read (generation {self._blob.generation} is gone); "
                          f"read it again")
        if len(data) != n:
            raise OSError(f"{self._path}: expected {n} bytes at offset {self._pos}, got {len(data)}")
        buffer[:n] = data
        self._pos += n
        return n


def _gcs_open_read(path: str, mode: str) -> IO:
    if mode not in ("rb", "r", "rt"):
        raise ValueError(f"open_read: mode {mode!r} (use atomic_open to write)")
    meta = _gcs_stat(path)
    pinned = _blob(path, generation=meta.generation)  # never mix bytes of two versions
    raw = _GCSRawReader(path, pinned, int(meta.size or 0))
    buffered = io.BufferedReader(raw, buffer_size=int(float(os.environ.get("BERT_STORAGE_READ_MB", 2)) * (1 << 20)))
    if mode == "rb":
        return buffered
    return io.TextIOWrapper(buffered, encoding="utf-8")
