"""s3:// and minio:// for bert_core.storage: the primitives of the S3 API, on boto3.

`s3://BUCKET/KEY` is Amazon S3 or any S3-compatible store; `minio://BUCKET/KEY` is the URI Kubeflow
Pipelines gives artifacts under its default pipeline root (`minio://mlpipeline/v2/artifacts`), served
by KFP's MinIO. Both speak the S3 API; they differ only in where the endpoint and keys come from
(`settings`). bert_core.storage builds everything else (prefixes, glob, readers, atomic directories)
on the primitives below.

Uploads go to the final key in one PutObject (up to the part size, 16 MiB by default) or one
multipart upload (parts of an unfinished upload are never visible, and a failed one is aborted), so
the object appears only when the upload completes. `exclusive=True` sends `If-None-Match: *` with the
PutObject or the CompleteMultipartUpload: a second writer gets 412 and `AlreadyExists`. Reads send
`If-Match: <the ETag stat saw>`, so a reader never mixes two versions. Every call is retried on
transient errors (429, 5xx, 409 ConditionalRequestConflict, dropped connections, timeouts) with
backoff up to storage.retry_deadline(); the failures a user can act on are one-line UserErrors.
"""

from __future__ import annotations

import dataclasses
import mimetypes
import os
import threading
import time

from bert_core import storage
from bert_core.errors import UserError
from bert_core.storage import AlreadyExists, FileInfo, NoSuchBucket, StorageUnavailable, VersionChanged

#: KFP's MinIO when no endpoint is given and the step's namespace has no `minio-service` (KFP's
#: objectstore.DefaultMinioEndpointInMultiUserMode; KFP talks to it without TLS).
MINIO_DEFAULT_ENDPOINT = "http://minio-service.kubeflow:9000"
#: The region KFP signs MinIO requests with (KFP backend v2 config, getDefaultMinioSessionInfo).
MINIO_DEFAULT_REGION = "minio"
#: Where the steps find KFP's `mlpipeline-minio-artifact` secret (keys `accesskey`, `secretkey`)
#: mounted as files when the keys are not in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
MINIO_SECRET_DIR = "/var/run/secrets/mlpipeline-minio-artifact"

#: Objects larger than this are copied through a local temporary (CopyObject's limit is 5 GiB).
_MAX_COPY_OBJECT = 5 << 30
_MIN_PART = 5 << 20  # S3's smallest part (all but the last)
_MAX_PARTS = 10_000

_state = threading.local()


@dataclasses.dataclass(frozen=True)
class Settings:
    """How to reach one scheme's store: what `settings()` read from the environment."""

    endpoint_url: str | None  # None: Amazon S3 itself
    region: str | None  # None: boto3's own choice (~/.aws/config, else us-east-1)
    access_key: str | None  # None (both): boto3's credential chain (env, ~/.aws, IRSA, instance role)
    secret_key: str | None


def settings(scheme: str, env=None) -> Settings:
    """The endpoint, region and keys for `s3://` or `minio://`, from the environment.

    Both: endpoint AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL; region AWS_REGION, else
    AWS_DEFAULT_REGION; keys AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the rest of boto3's chain.
    minio:// when those are not set, as KFP's own launcher does: the endpoint of a `minio-service`
    in the step's namespace (MINIO_SERVICE_SERVICE_HOST/_PORT, which Kubernetes sets), else
    minio-service.kubeflow:9000, over http; region "minio"; keys from the `mlpipeline-minio-artifact`
    secret's files `accesskey` and `secretkey` in $BERT_MINIO_SECRET_DIR (default MINIO_SECRET_DIR)."""
    env = os.environ if env is None else env
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None
    access, secret = env.get("AWS_ACCESS_KEY_ID") or None, env.get("AWS_SECRET_ACCESS_KEY") or None
    if scheme == "minio://":
        if endpoint is None:
            host, port = env.get("MINIO_SERVICE_SERVICE_HOST"), env.get("MINIO_SERVICE_SERVICE_PORT")
            endpoint = f"http://{host}:{port}" if host and port else MINIO_DEFAULT_ENDPOINT
        region = region or MINIO_DEFAULT_REGION
        if access is None:
            access, secret = _secret_keys(env.get("BERT_MINIO_SECRET_DIR") or MINIO_SECRET_DIR)
    if endpoint is not None and "://" not in endpoint:
        raise UserError(f"{endpoint}: the S3 endpoint must be a URL such as http://host:9000 "
                        "(AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL)")
    return Settings(endpoint, region, access, secret)


def _secret_keys(directory: str) -> tuple[str | None, str | None]:
    """`accesskey` and `secretkey` of a mounted secret, or (None, None) if it is not mounted."""
    try:
        with open(os.path.join(directory, "accesskey")) as a, open(os.path.join(directory, "secretkey")) as s:
            return a.read().strip(), s.read().strip()
    except FileNotFoundError:
        return None, None


def _client(path: str):
    """One boto3 client per thread, process and settings (rebuilt when the environment changes)."""
    scheme = storage.scheme_of(path)
    conf = settings(scheme)
    key = (os.getpid(), scheme, conf)
    cached = getattr(_state, "clients", {})
    if key not in cached:
        import boto3
        from botocore.config import Config

        config = Config(
            # Our own loop retries (to storage.retry_deadline()); botocore tries each call once.
            retries={"total_max_attempts": 1},
            connect_timeout=10, read_timeout=120,
            # Path-style requests for a custom endpoint (MinIO and most S3-compatible stores), and
            # checksums only where the API requires them, as KFP configures its S3 client: stores
            # that predate S3's default CRC checksums reject them.
            s3={"addressing_style": "path"} if conf.endpoint_url else {},
            request_checksum_calculation="when_required", response_checksum_validation="when_required")
        client = boto3.session.Session().client(
            "s3", endpoint_url=conf.endpoint_url, region_name=conf.region, aws_access_key_id=conf.access_key,
            aws_secret_access_key=conf.secret_key, config=config)
        _state.clients = cached = {k: v for k, v in cached.items() if k[0] == os.getpid()}
        cached[key] = client
    return cached[key]


def _error(err) -> tuple[int | None, str]:
    """(HTTP status, S3 error code) of a botocore ClientError."""
    status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status, str(err.response.get("Error", {}).get("Code", ""))


def _is_transient(err: BaseException) -> bool:
    """429, 5xx, a conflicting concurrent conditional write, dropped or refused connections,
    timeouts: worth another try. Never other 4xx."""
    from botocore import exceptions as bx

    if isinstance(err, bx.ClientError):
        status, code = _error(err)
        return status == 429 or (status is not None and status >= 500) or code in (
            "SlowDown", "RequestTimeout", "ConditionalRequestConflict", "InternalError", "ServiceUnavailable")
    if isinstance(err, bx.SSLError):  # a certificate problem does not heal by waiting
        return False
    # botocore's ConnectionError (refused, DNS, connect timeout) is not the builtin one
    return isinstance(err, (bx.ConnectionError, bx.HTTPClientError, bx.ResponseStreamingError,
                            bx.IncompleteReadError, ConnectionError, TimeoutError))


def _first_line(err: BaseException) -> str:
    """'403 AccessDenied: <the server's message>' for an S3 error, else the exception's first line."""
    from botocore import exceptions as bx

    if isinstance(err, bx.ClientError):
        status, code = _error(err)
        head = f"{status} {code}" if status and code and code != str(status) else str(status or code)
        message = str(err.response.get("Error", {}).get("Message") or "").strip().splitlines()
        return f"{head}: {message[0]}" if message else head
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def _call(path: str, fn, *, missing: str = "object", gone: str | None = None):
    """Run one S3 call, retrying transient errors with backoff until the deadline; turn its failures
    into one-line errors naming `path`. `gone`: the message for a 404 or 412 while reading a pinned
    version (the object was replaced or deleted)."""
    from botocore import exceptions as bx

    deadline = time.monotonic() + storage.retry_deadline()
    delay = storage.retry_initial()
    while True:
        try:
            return fn()
        except bx.NoCredentialsError:
            raise UserError(f"{storage.scheme_of(path)}: no S3 credentials found (set AWS_ACCESS_KEY_ID and "
                            "AWS_SECRET_ACCESS_KEY, use an AWS profile or role"
                            + (f", or mount KFP's mlpipeline-minio-artifact secret at {MINIO_SECRET_DIR}"
                               if path.startswith("minio://") else "") + ")") from None
        except Exception as err:  # noqa: BLE001  (sorted out below; anything else is re-raised)
            if _is_transient(err):
                if time.monotonic() + delay < deadline:
                    time.sleep(delay)
                    delay = min(delay * 2, 16.0)
                    continue
                raise StorageUnavailable(f"{path}: storage unavailable after retrying for "
                                         f"{storage.retry_deadline():.0f} s ({_first_line(err)})") from None
            if not isinstance(err, bx.ClientError):
                raise
            status, code = _error(err)
            if code == "NoSuchBucket":
                raise NoSuchBucket(f"{storage.scheme_of(path)}{storage.split(path)[0]}: bucket does not exist") from None
            if status in (404, 412) and gone:
                raise UserError(f"{path}: {gone}") from None
            if status == 404:
                raise storage.not_found(path, missing) from None
            if status == 412:
                raise AlreadyExists(f"{path}: already exists (a create-only write found it there)") from None
            if status in (401, 403):
                raise UserError(f"{path}: permission denied ({_first_line(err)})") from None
            raise


def _etag(value: str) -> str:
    return value.strip('"')


def _gone(info: FileInfo) -> str:
    return f'replaced or deleted while being read (ETag "{info.generation}" is gone); read it again'


# --------------------------------------------------------------------------------------------------
# The primitives bert_core.storage calls.


def stat(path: str) -> FileInfo:
    bucket, key = storage.split_object(path)
    head = _call(path, lambda: _client(path).head_object(Bucket=bucket, Key=key))
    return FileInfo(path, int(head["ContentLength"]), head["LastModified"], _etag(head["ETag"]))


def object_exists(path: str) -> bool:
    from botocore import exceptions as bx

    bucket, key = storage.split_object(path)

    def head():
        try:
            _client(path).head_object(Bucket=bucket, Key=key)
            return True
        except bx.ClientError as err:
            if _error(err)[0] == 404:
                return False
            raise

    return _call(path, head)


def bucket_exists(path: str, strict: bool) -> bool:
    """strict: a 403 is a one-line UserError; otherwise it counts as "exists" (we can't tell)."""
    from botocore import exceptions as bx

    bucket, _ = storage.split(path)

    def head():
        try:
            _client(path).head_bucket(Bucket=bucket)
            return True
        except bx.ClientError as err:
            status, _ = _error(err)
            if status == 404:
                return False
            if status in (401, 403) and not strict:
                return True
            raise

    return _call(path, head)


def list_objects(path: str, prefix: str, max_results: int | None = None) -> list[FileInfo]:
    bucket, _ = storage.split(path)

    def run():
        pages = _client(path).get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix, PaginationConfig={"MaxItems": max_results} if max_results else {})
        return [FileInfo(storage.url(path, o["Key"]), int(o["Size"]), o["LastModified"], _etag(o["ETag"]))
                for page in pages for o in page.get("Contents", [])]

    return _call(path, run, missing="bucket")


def upload(path: str, *, data: bytes | None = None, filename: str | None = None, exclusive: bool = False,
           if_version: str | None = None) -> str:
    """One PutObject up to the part size, else one multipart upload: the object appears only when it
    completes; returns its ETag. `exclusive`: `If-None-Match: *` on the request that creates the
    object. `if_version`: replace only the object with that ETag (`If-Match`, one PutObject), else
    VersionChanged."""
    bucket, key = storage.split_object(path)
    client = _client(path)
    condition = {"IfNoneMatch": "*"} if exclusive else {"IfMatch": f'"{if_version}"'} if if_version else {}
    content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    total = len(data) if data is not None else os.path.getsize(filename)
    part = max(storage.upload_chunk_bytes(_MIN_PART), -(-total // _MAX_PARTS))
    if total <= part or if_version:
        body = data if data is not None else _read_file(filename)

        def put():
            from botocore import exceptions as bx

            try:
                return client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type, **condition)
            except bx.ClientError as err:  # 412: another ETag; 404: gone
                if if_version and _error(err)[0] in (404, 412):
                    raise VersionChanged(f'{path}: no longer ETag "{if_version}"') from None
                raise

        return _etag(_call(path, put)["ETag"])
    upload_id = _call(path, lambda: client.create_multipart_upload(
        Bucket=bucket, Key=key, ContentType=content_type))["UploadId"]
    try:
        parts = []
        for number, offset in enumerate(range(0, total, part), start=1):
            chunk = data[offset:offset + part] if data is not None else _read_file(filename, offset, part)
            etag = _call(path, lambda: client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id,
                                                          PartNumber=number, Body=chunk))["ETag"]
            parts.append({"ETag": etag, "PartNumber": number})
        return _etag(_call(path, lambda: client.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}, **condition))["ETag"])
    except BaseException:
        try:  # parts of an aborted upload are dropped; a killed writer's expire by bucket lifecycle
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        except Exception:  # noqa: BLE001  (the original error is the one to report)
            pass
        raise


def _read_file(filename: str, offset: int = 0, n: int = -1) -> bytes:
    with open(filename, "rb") as f:
        f.seek(offset)
        return f.read(n)


def download(info: FileInfo, local: str) -> None:
    """The whole version `info` names, streamed into `local` in one request (restarted on a retry)."""
    bucket, key = storage.split_object(info.path)

    def run():
        body = _client(info.path).get_object(Bucket=bucket, Key=key, IfMatch=f'"{info.generation}"')["Body"]
        with open(local, "wb") as f:
            for chunk in body.iter_chunks(1 << 20):
                f.write(chunk)

    _call(info.path, run, gone=_gone(info))


def read_range(info: FileInfo, start: int, n: int) -> bytes:
    bucket, key = storage.split_object(info.path)
    return _call(info.path, lambda: _client(info.path).get_object(
        Bucket=bucket, Key=key, Range=f"bytes={start}-{start + n - 1}", IfMatch=f'"{info.generation}"')["Body"].read(),
        gone=_gone(info))


def read_bytes(path: str) -> bytes:
    bucket, key = storage.split_object(path)
    return _call(path, lambda: _client(path).get_object(Bucket=bucket, Key=key)["Body"].read())


def read_version(path: str) -> tuple[bytes | None, str | None]:
    from botocore import exceptions as bx

    bucket, key = storage.split_object(path)

    def get():
        try:
            got = _client(path).get_object(Bucket=bucket, Key=key)
        except bx.ClientError as err:
            if _error(err)[1] == "NoSuchKey":
                return None, None
            raise
        return got["Body"].read(), _etag(got["ETag"])

    return _call(path, get)


def server_copy(source: FileInfo, dst: str) -> None:
    """CopyObject of the version `source` names; the destination appears when the copy completes.
    Objects over 5 GiB (CopyObject's limit) go through a local temporary and a multipart upload."""
    if source.size > _MAX_COPY_OBJECT:
        with storage.atomic_path(dst) as tmp:
            download(source, tmp)
        return
    src_bucket, src_key = storage.split_object(source.path)
    bucket, key = storage.split_object(dst)
    _call(dst, lambda: _client(dst).copy_object(
        Bucket=bucket, Key=key, CopySource={"Bucket": src_bucket, "Key": src_key},
        CopySourceIfMatch=f'"{source.generation}"'), gone=_gone(source))


def delete(path: str, if_version: str | None = None) -> bool:
    """Delete one object; True if it was there (S3's DeleteObject answers the same either way).
    `if_version`: only the object with that ETag (`If-Match`: S3 and moto honour it)."""
    from botocore import exceptions as bx

    bucket, key = storage.split_object(path)
    if if_version is None:
        if not object_exists(path):
            return False
        _call(path, lambda: _client(path).delete_object(Bucket=bucket, Key=key))
        return True

    def conditional():
        try:
            _client(path).delete_object(Bucket=bucket, Key=key, IfMatch=f'"{if_version}"')
            return True
        except bx.ClientError as err:
            if _error(err)[0] in (404, 412):
                return False
            raise

    return _call(path, conditional)
