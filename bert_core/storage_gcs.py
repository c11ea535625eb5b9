"""gs:// for bert_core.storage: the primitives of Cloud Storage, on google-cloud-storage.

bert_core.storage builds everything else (prefixes, glob, readers, atomic directories) on these.
Uploads go to the final object name in one upload (multipart up to 8 MiB, resumable above); Cloud
Storage creates the object only when the upload is finalized. `exclusive=True` is the precondition
`if_generation_match=0`. Reads and downloads name the generation that `stat` saw, so they never mix
two versions. Every call is retried on transient errors (429, 5xx, dropped connections) with
backoff up to storage.retry_deadline(); the failures a user can act on are one-line UserErrors.
"""

from __future__ import annotations

import contextlib
import mimetypes
import os
import threading
import warnings

from bert_core import storage
from bert_core.errors import UserError
from bert_core.storage import AlreadyExists, FileInfo, StorageUnavailable, VersionChanged

_state = threading.local()
_creds_lock = threading.Lock()
_adc: tuple | None = None  # (pid, credentials, project)


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


def _retry():
    _, _, api_retry = _g()
    return api_retry.Retry(predicate=_is_transient, initial=storage.retry_initial(),
                           maximum=16.0, multiplier=2.0, timeout=storage.retry_deadline())


def _call(path: str, fn, *args, missing: str = "object", gone: str | None = None, **kwargs):
    """Run one storage call with retries; turn its failures into one-line errors naming `path`."""
    _, api_exc, _ = _g()
    try:
        return _retry()(fn)(*args, **kwargs)
    except api_exc.NotFound:
        if gone:
            raise UserError(f"{path}: {gone}") from None
        raise storage.not_found(path, missing) from None
    except api_exc.PreconditionFailed:
        raise AlreadyExists(f"{path}: already exists (a create-only write found it there)") from None
    except (api_exc.Forbidden, api_exc.Unauthorized) as err:
        raise UserError(f"{path}: permission denied ({_first_line(err)})") from None
    except api_exc.RetryError as err:
        cause = err.cause if err.cause is not None else err
        raise StorageUnavailable(f"{path}: storage unavailable after retrying for {storage.retry_deadline():.0f} s "
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


def _blob(path: str, generation: int | None = None):
    bucket, key = storage.split_object(path)
    return _client().bucket(bucket).blob(key, generation=generation)


def _info(path: str, blob) -> FileInfo:
    return FileInfo(path, int(blob.size or 0), blob.updated, blob.generation)


def _gone(info: FileInfo) -> str:
    return f"replaced or deleted while being read (generation {info.generation} is gone); read it again"


# --------------------------------------------------------------------------------------------------
# The primitives bert_core.storage calls.


def stat(path: str) -> FileInfo:
    blob = _blob(path)
    _call(path, blob.reload)
    return _info(path, blob)


def object_exists(path: str) -> bool:
    return bool(_call(path, _blob(path).exists))


def bucket_exists(path: str, strict: bool) -> bool:
    """strict: a 403 is a one-line UserError; otherwise it counts as "exists" (object-level
    permissions only: we can't tell)."""
    _, api_exc, _ = _g()
    bucket = _client().bucket(storage.split(path)[0])
    if strict:
        return bool(_call(path, bucket.exists))
    try:
        return _retry()(bucket.exists)()
    except (api_exc.Forbidden, api_exc.Unauthorized):
        return True


def list_objects(path: str, prefix: str, max_results: int | None = None) -> list[FileInfo]:
    bucket, _ = storage.split(path)

    def run():
        return list(_client().list_blobs(bucket, prefix=prefix, max_results=max_results, retry=_retry()))

    return [_info(storage.url(path, b.name), b) for b in _call(path, run, missing="bucket")]


def upload(path: str, *, data: bytes | None = None, filename: str | None = None, exclusive: bool = False,
           if_version: int | None = None) -> int:
    """One upload to the final name: the object appears only when the upload is finalized. Returns
    its generation. `if_version`: replace only that generation (`ifGenerationMatch`), else
    VersionChanged."""
    _, api_exc, _ = _g()
    blob = _blob(path)
    blob.chunk_size = storage.upload_chunk_bytes(256 * 1024, quantum=256 * 1024)
    content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    kwargs = {"content_type": content_type, "retry": _retry()}
    if exclusive:
        kwargs["if_generation_match"] = 0
    elif if_version is not None:
        kwargs["if_generation_match"] = int(if_version)

    def run():
        try:
            if data is not None:
                blob.upload_from_string(data, **kwargs)
            else:
                blob.upload_from_filename(filename, **kwargs)
        except (api_exc.PreconditionFailed, api_exc.NotFound):
            if if_version is None:
                raise
            raise VersionChanged(f"{path}: no longer generation {if_version}") from None

    _call(path, run)
    return blob.generation


def download(info: FileInfo, local: str) -> None:
    pinned = _blob(info.path, generation=info.generation)
    _call(info.path, pinned.download_to_filename, local, retry=_retry(), gone=_gone(info))


def read_range(info: FileInfo, start: int, n: int) -> bytes:
    pinned = _blob(info.path, generation=info.generation)
    return _call(info.path, pinned.download_as_bytes, start=start, end=start + n - 1, raw_download=True,
                 checksum=None, retry=_retry(), gone=_gone(info))


def read_bytes(path: str) -> bytes:
    blob = _blob(path)
    return _call(path, blob.download_as_bytes, retry=_retry())


def read_version(path: str) -> tuple[bytes | None, int | None]:
    _, api_exc, _ = _g()
    blob = _blob(path)

    def run():
        try:
            return blob.download_as_bytes(retry=_retry())
        except api_exc.NotFound:
            return None

    data = _call(path, run)
    return (None, None) if data is None else (data, blob.generation)  # the download sets the generation it read


def server_copy(source: FileInfo, dst: str) -> None:
    """A rewrite (handles large and cross-location objects in several calls); the destination
    appears only when the rewrite completes. (fake-gcs-server ignores preconditions on rewrite, so
    bert_core.storage makes an exclusive copy through a create-only upload instead.)"""
    pinned = _blob(source.path, generation=source.generation)
    target = _blob(dst)
    token = None
    while True:
        token, _done, _total = _call(dst, target.rewrite, pinned, token=token, retry=_retry())
        if token is None:
            return


def delete(path: str, if_version: int | None = None) -> bool:
    """Delete one object; True if it was there. `if_version`: only that generation
    (`ifGenerationMatch`; fake-gcs-server ignores it, Cloud Storage honours it)."""
    _, api_exc, _ = _g()
    blob = _blob(path)
    condition = {} if if_version is None else {"if_generation_match": int(if_version)}
    try:
        _retry()(blob.delete)(**condition)
        return True
    except (api_exc.NotFound, api_exc.PreconditionFailed):
        return False
    except (api_exc.Forbidden, api_exc.Unauthorized) as err:
        raise UserError(f"{path}: permission denied ({_first_line(err)})") from None
