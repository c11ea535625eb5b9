"""A real S3-API server on loopback for tests: moto's server mode (PyPI `moto[server]`), which
answers the S3 REST API over HTTP, conditional writes included (If-None-Match on PutObject and
CompleteMultipartUpload, If-Match on GetObject and CopyObject).

It is moto's own WSGI app on werkzeug's threaded server, as moto's `ThreadedMotoServer` runs it, with
one difference: requests are handled one at a time. moto checks `If-None-Match: *` and then stores
the object in two steps without a lock, so two concurrent create-only writes could both succeed
there (seen here: 2 races in 12); S3 decides each request atomically, and so does this server.

Use it from any test module with

    from s3_server import s3, s3_prefix, s3_run  # noqa: F401  (fixtures)

    def test_x(s3):          # an S3Server: the server, bucket `bert-test`, the AWS variables set
        storage.write_text(s3.url("a/b.txt"), "hi")     # s3://bert-test/a/b.txt

    def test_y(s3_prefix):   # "s3://bert-test/<unique>": a fresh prefix for this test only

    def test_z(s3_run):      # a gcs_server.StoreRun on s3:// (upload/download/list helpers, env)

`s3` is session-scoped: one server for the whole run, in threads of the test process, stopped at
the end. While it runs, AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION
point bert_core.storage (and any subprocess started with os.environ, e.g. the `bert` command) at
it; `s3.env` is the same as a dict for subprocess environments. Without pytest, `start_server()`
returns an S3Server and `server.stop()` stops it.
"""

from __future__ import annotations

import dataclasses
import logging
import threading

import pytest

from gcs_server import StoreRun, _free_port, serving, unique_prefix

DEFAULT_BUCKET = "bert-test"


@dataclasses.dataclass
class S3Server:
    endpoint: str  # http://127.0.0.1:PORT
    bucket: str
    server: object  # werkzeug.serving.BaseWSGIServer

    @property
    def env(self) -> dict[str, str]:
        """What a subprocess needs in its environment to use this server (moto accepts any keys)."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}

    def url(self, key: str = "", scheme: str = "s3://") -> str:
        return f"{scheme}{self.bucket}/{key}" if key else f"{scheme}{self.bucket}"

    def client(self):
        """A plain boto3 client for this server (to look behind bert_core.storage's back)."""
        import boto3

        env = self.env
        return boto3.client("s3", endpoint_url=self.endpoint, region_name=env["AWS_REGION"],
                            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_server(bucket: str = DEFAULT_BUCKET) -> S3Server:
    """Start moto's S3 server on 127.0.0.1 (a free port, in memory) and create `bucket`."""
    from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # not a line per request
    app = DomainDispatcherApplication(create_backend_app)
    one_at_a_time = threading.Lock()

    def atomic_requests(environ, start_response):
        with one_at_a_time:
            return app(environ, start_response)

    server = make_server("127.0.0.1", _free_port(), atomic_requests, threaded=True,
                         request_handler=MotoRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    s3 = S3Server(f"http://127.0.0.1:{server.server_address[1]}", bucket, server)
    s3.client().create_bucket(Bucket=bucket)
    return s3


@pytest.fixture(scope="session")
def s3():
    """The session's S3 server with bucket `bert-test`; the AWS variables set while it runs."""
    with serving(start_server()) as server:
        yield server


@pytest.fixture
def s3_prefix(s3, request) -> str:
    """A prefix no other test uses: s3://bert-test/<test name>-<random>."""
    return unique_prefix(s3, request)


@pytest.fixture
def s3_run(s3, s3_prefix) -> StoreRun:
    """A fresh run prefix on s3:// with helpers; see gcs_server.StoreRun."""
    return StoreRun(s3, s3_prefix)
