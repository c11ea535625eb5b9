"""bert_core.storage on local paths, on gs:// against a real fake-gcs-server (tests/gcs_server.py)
and on s3:// and minio:// against a real S3-API server, moto's (tests/s3_server.py).

Covers every function on every kind of path, byte-range reads (also through the corpus reader),
atomicity when a writer is SIGKILLed (while writing its body, and mid-way through a resumable
upload), concurrent writers (threads and processes: one whole artifact, never a mix), one-line
errors, and retries through a fault-injecting HTTP proxy on loopback.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import http.server
import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.parse
import uuid

import pytest

from bert_core import storage
from bert_core.data import corpus
from bert_core.errors import UserError
from gcs_server import gcs, gcs_prefix  # noqa: F401  (fixtures)
from s3_server import s3, s3_prefix  # noqa: F401  (fixtures)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


PREFIX_FIXTURES = {"gs": "gcs_prefix", "s3": "s3_prefix"}


@pytest.fixture(params=["gs", "s3"])
def remote(request):
    """A fresh object storage prefix: gs:// on fake-gcs-server, or s3:// on moto's server."""
    return request.getfixturevalue(PREFIX_FIXTURES[request.param])


@pytest.fixture(params=["local", "gs", "s3"])
def root(request, tmp_path):
    """A fresh directory: local, or an object storage prefix (as `remote`)."""
    if request.param == "local":
        return str(tmp_path / "root")
    return request.getfixturevalue(PREFIX_FIXTURES[request.param])


def _payload(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


# --------------------------------------------------------------------------------------------------
# every function, both kinds of path


def test_write_read_exists_size_copy(root):
    a, b, j = storage.join(root, "d", "a.bin"), storage.join(root, "d", "b.bin"), storage.join(root, "m.json")
    storage.makedirs(storage.join(root, "d"))
    assert not storage.exists(a)
    storage.write_bytes(a, b"\x00\x01abc")
    storage.write_text(storage.join(root, "t.txt"), "héllo\n")
    storage.write_json(j, {"x": [1, 2]})
    assert storage.exists(a) and storage.exists(storage.join(root, "d")) and storage.exists(root)
    assert storage.isdir(storage.join(root, "d")) and storage.isdir(root) and not storage.isdir(a)
    assert not storage.isdir(storage.join(root, "nothing")) and not storage.exists(storage.join(root, "nothing"))
    assert storage.size(a) == 5
    assert storage.read_bytes(a) == b"\x00\x01abc"
    assert storage.read_text(storage.join(root, "t.txt")) == "héllo\n"
    assert storage.read_json(j) == {"x": [1, 2]}
    storage.copy(a, b)
    assert storage.read_bytes(b) == b"\x00\x01abc"
    storage.write_bytes(a, b"replaced")  # replace semantics by default
    assert storage.read_bytes(a) == b"replaced" and storage.read_bytes(b) == b"\x00\x01abc"
    with pytest.raises(storage.AlreadyExists):
        storage.write_bytes(a, b"second", exclusive=True)
    with pytest.raises(storage.AlreadyExists):
        storage.copy(b, a, exclusive=True)
    assert storage.read_bytes(a) == b"replaced"
    storage.write_text(storage.join(root, "new.txt"), "first", exclusive=True)
    assert storage.read_text(storage.join(root, "new.txt")) == "first"
    assert storage.remove(b) and not storage.exists(b) and not storage.remove(b)
    storage.write_text(storage.join(root, "bad.json"), "{not json")
    with pytest.raises(UserError, match=r"bad\.json: not valid JSON"):
        storage.read_json(storage.join(root, "bad.json"))


def test_copy_between_local_and_object_storage(remote, tmp_path):
    data = _payload(1, 300_000)
    local = tmp_path / "x.bin"
    local.write_bytes(data)
    storage.copy(str(local), remote + "/x.bin")
    storage.copy(remote + "/x.bin", str(tmp_path / "back" / "y.bin"))
    assert (tmp_path / "back" / "y.bin").read_bytes() == data
    assert storage.read_bytes(remote + "/x.bin") == data


def test_copy_between_gs_and_s3(gcs_prefix, s3_prefix):
    data = _payload(2, 100_000)
    storage.write_bytes(gcs_prefix + "/a.bin", data)
    storage.copy(gcs_prefix + "/a.bin", s3_prefix + "/b.bin")
    storage.copy(s3_prefix + "/b.bin", gcs_prefix + "/c.bin")
    assert storage.read_bytes(s3_prefix + "/b.bin") == data and storage.read_bytes(gcs_prefix + "/c.bin") == data
    with pytest.raises(storage.AlreadyExists):
        storage.copy(gcs_prefix + "/a.bin", s3_prefix + "/b.bin", exclusive=True)


def test_glob_matches_like_local_glob(root):
    for name in ["a1.txt", "a2.txt", "b.txt", ".a3.txt.x.tmp", "sub/a4.txt", "sub/deep/a5.txt", "subway.txt"]:
        storage.write_text(storage.join(root, name), name)
    rel = lambda paths: [p[len(root) + 1:] for p in paths]  # noqa: E731
    assert rel(storage.glob(storage.join(root, "a*.txt"))) == ["a1.txt", "a2.txt"]
    assert rel(storage.glob(storage.join(root, "*"))) == ["a1.txt", "a2.txt", "b.txt", "sub", "subway.txt"]
    assert rel(storage.glob(storage.join(root, "*/a*.txt"))) == ["sub/a4.txt"]
    assert rel(storage.glob(storage.join(root, "a[2-9].txt"))) == ["a2.txt"]
    assert rel(storage.glob(storage.join(root, "?.txt"))) == ["b.txt"]
    assert rel(storage.glob(storage.join(root, ".*.tmp"))) == [".a3.txt.x.tmp"]
    assert rel(storage.glob(storage.join(root, "b.txt"))) == ["b.txt"]  # a plain path matches itself
    assert storage.glob(storage.join(root, "missing.txt")) == []
    assert storage.glob(storage.join(root, "z*")) == []
    assert storage.remove_stale_temporaries(root) == 1
    assert storage.glob(storage.join(root, ".*.tmp")) == []
    files = storage.list_files(root)
    assert rel([f.path for f in files]) == ["a1.txt", "a2.txt", "b.txt", "sub/a4.txt", "sub/deep/a5.txt", "subway.txt"]
    assert [f.size for f in files][:2] == [6, 6] and all(f.updated is not None for f in files)


def test_open_read_seeks_and_reads_byte_ranges(root, monkeypatch):
    monkeypatch.setenv("BERT_STORAGE_READ_MB", "0.25")  # small buffer: exercise many range requests
    data = b"".join(b"line %d %s\n" % (i, b"x" * (i % 97)) for i in range(40_000))  # ~2.3 MB
    path = storage.join(root, "big.txt")
    storage.write_bytes(path, data)
    rng = random.Random(0)
    with storage.open_read(path, "rb") as f:
        assert f.seekable()
        for _ in range(60):
            pos, n = rng.randrange(len(data)), rng.randrange(1, 400_000)
            assert f.seek(pos) == pos
            assert f.read(n) == data[pos:pos + n]
            assert f.tell() == min(pos + n, len(data))
        f.seek(-10, io.SEEK_END)
        assert f.read() == data[-10:] and f.read(5) == b""
        f.seek(1000)
        f.readline()
        assert f.readline() == data[data.index(b"\n", 1000) + 1:].split(b"\n", 1)[0] + b"\n"
        f.seek(0)
        assert f.read() == data
    with storage.open_read(path, "rb") as f:
        assert sum(1 for _ in f) == 40_000
    with storage.open_read(path, "r") as f:
        assert f.readline() == "line 0 \n"


def test_reader_keeps_the_version_it_opened(remote, monkeypatch):
    monkeypatch.setenv("BERT_STORAGE_READ_MB", "0.25")
    path = remote + "/v.bin"
    old, new = _payload(1, 1 << 20), _payload(2, 1 << 20)
    storage.write_bytes(path, old)
    with storage.open_read(path) as f:
        head = f.read(1000)
        storage.write_bytes(path, new)  # overwritten while being read
        # Without object versioning the opened generation is gone (gs://; with versioning on, the
        # rest of the old generation would be read); on S3 the ETag no longer matches: a clear
        # error, never a mix of two versions.
        with pytest.raises(UserError) as err:
            f.read()
        version = "generation " if remote.startswith("gs://") else 'ETag "'
        assert str(err.value).startswith(f"{path}: replaced or deleted while being read ({version}")
    assert head == old[:1000] and storage.read_bytes(path) == new
    with storage.open_read(path) as f:  # deleted while open: the same one line
        storage.remove(path)
        with pytest.raises(UserError, match="replaced or deleted while being read"):
            f.read()


def _write_corpus(path: str, rng: random.Random, n_docs: int) -> None:
    lines = []
    for d in range(n_docs):
        for s in range(rng.randint(1, 6)):
            lines.append(f"doc{d} sentence {s} " + "wörd " * rng.randint(0, 30))
        lines.append("" if rng.random() < 0.8 else "   ")
    storage.write_text(path, "\n".join(lines) + "\n")


def test_corpus_byte_ranges_on_object_storage_read_the_same_documents(remote, tmp_path, monkeypatch):
    monkeypatch.setenv("BERT_STORAGE_READ_MB", "0.0625")
    rng = random.Random(7)
    local_paths = []
    for i in range(2):
        p = str(tmp_path / f"part{i}.txt")
        _write_corpus(p, rng, 300)
        storage.copy(p, f"{remote}/corpus/part{i}.txt")
        local_paths.append(p)
    gs_paths = corpus.expand_inputs(f"{remote}/corpus/part*.txt")
    assert gs_paths == [f"{remote}/corpus/part0.txt", f"{remote}/corpus/part1.txt"]
    for num_ranges in (1, 3, 8):
        def read_all(paths):
            docs = []
            for part in corpus.split_ranges(paths, num_ranges):
                for path, start, end in part:
                    docs += list(corpus.iter_documents(path, start, end))
            return docs

        assert read_all(gs_paths) == read_all(local_paths)


# --------------------------------------------------------------------------------------------------
# atomicity


def test_failed_write_leaves_nothing(root):
    path = storage.join(root, "x.bin")
    with pytest.raises(RuntimeError):
        with storage.atomic_open(path, "wb") as f:
            f.write(b"partial")
            raise RuntimeError("writer failed")
    with pytest.raises(RuntimeError):
        with storage.atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"partial")
            raise RuntimeError("writer failed")
    assert not storage.exists(path)
    storage.write_bytes(path, b"v1")
    with pytest.raises(RuntimeError):
        with storage.atomic_open(path, "w") as f:
            f.write("v2")
            raise RuntimeError("writer failed")
    assert storage.read_bytes(path) == b"v1"
    with storage.atomic_open(path, "w") as f:
        f.write("v3 text")
    with storage.atomic_path(storage.join(root, "y.rec")) as tmp:
        with open(tmp, "wb") as f:
            f.write(b"tf record bytes")
    assert storage.read_text(path) == "v3 text" and storage.read_bytes(storage.join(root, "y.rec")) == b"tf record bytes"
    if not storage.is_remote(root):
        assert sorted(os.listdir(root)) == ["x.bin", "y.rec"]  # no temporaries left


def test_atomic_dir_publishes_whole_directories(root):
    ckpt = storage.join(root, "ckpt")
    with pytest.raises(RuntimeError):
        with storage.atomic_dir(ckpt) as d:
            open(os.path.join(d, "model.index"), "w").write("i")
            raise RuntimeError("killed")
    assert not storage.is_complete(ckpt) and not storage.exists(storage.join(ckpt, "model.index"))
    with storage.atomic_dir(ckpt) as d:
        os.makedirs(os.path.join(d, "sub"))
        open(os.path.join(d, "model.index"), "w").write("v1")
        open(os.path.join(d, "old.data"), "w").write("stale")
        open(os.path.join(d, "sub", "x"), "w").write("x")
    assert storage.is_complete(ckpt)
    marker = storage.read_json(storage.join(ckpt, storage.COMPLETE_MARKER))
    assert marker["files"] == [{"path": "model.index", "size": 2}, {"path": "old.data", "size": 5},
                               {"path": "sub/x", "size": 1}]
    with pytest.raises(RuntimeError):  # a failed rewrite leaves the published version alone
        with storage.atomic_dir(ckpt) as d:
            raise RuntimeError("killed")
    assert storage.is_complete(ckpt) and storage.read_text(storage.join(ckpt, "model.index")) == "v1"
    with storage.atomic_dir(ckpt) as d:
        open(os.path.join(d, "model.index"), "w").write("v2")
    assert storage.is_complete(ckpt)
    rel = [f.path[len(ckpt) + 1:] for f in storage.list_files(ckpt)]
    assert rel == [storage.COMPLETE_MARKER, "model.index"]  # files of the old version are gone
    assert storage.read_text(storage.join(ckpt, "model.index")) == "v2"


_WRITER = textwrap.dedent("""
    import os, sys, time
    from bert_core import storage
    mode, path, src = sys.argv[1], sys.argv[2], sys.argv[3]
    data = open(src, "rb").read()
    if mode == "hold":  # write the body, say so, then wait to be killed inside the block
        with storage.atomic_open(path, "wb") as f:
            f.write(data)
            print("writing", flush=True)
            time.sleep(60)
    else:
        start_at = float(sys.argv[4])
        while time.time() < start_at:
            time.sleep(0.001)
        try:
            storage.write_bytes(path, data, exclusive=(mode == "exclusive"))
        except storage.AlreadyExists:
            sys.exit(3)
""")


def _spawn(args, env=None, **kw):
    return subprocess.Popen([sys.executable, "-c", _WRITER, *args], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": ROOT, **(env or {})}, **kw)


def test_writer_killed_while_writing_leaves_no_object(root, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(_payload(3, 3 << 20))
    path = storage.join(root, "killed.bin")
    proc = _spawn(["hold", path, str(src)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"writing\n"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
    assert not storage.exists(path)
    assert storage.glob(storage.join(root, "*")) == []


# --------------------------------------------------------------------------------------------------
# A fault-injecting HTTP proxy on loopback between the client and fake-gcs-server.


class FaultProxy:
    """Forwards to `upstream`; `rules` decide per request: ("503", n) answers 503 n times (any status),
    ("hang", n) holds the n-th matching request without answering until `release` is set. Injected
    errors are Cloud Storage's JSON, or S3's XML with `xml=True`."""

    def __init__(self, upstream: str, xml: bool = False):
        self.xml = xml
        self.upstream = urllib.parse.urlsplit(upstream)
        self.upstream_url = upstream
        self.seen: list[tuple[str, str]] = []
        self.rules: list[list] = []  # [predicate, action, count]
        self.messages: dict[int, str] = {}
        self.hung = threading.Event()
        self.release = threading.Event()
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                action = proxy._decide(self.command, self.path)
                if action.isdigit():
                    code = int(action)
                    message = proxy.messages.get(code, "injected fault")
                    if proxy.xml:
                        name = {403: "AccessDenied", 503: "SlowDown"}.get(code, str(code))
                        err = f"<Error><Code>{name}</Code><Message>{message}</Message></Error>".encode()
                    else:
                        err = json.dumps({"error": {"code": code, "message": message}}).encode()
                    self.send_response(code)
                    self.send_header("Content-Type", "application/xml" if proxy.xml else "application/json")
                    self.send_header("Content-Length", str(len(err)))
                    self.end_headers()
                    self.wfile.write(err)
                    return
                if action == "hang":
                    proxy.hung.set()
                    proxy.release.wait(30)
                    self.close_connection = True
                    return
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=30)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "connection", "content-length", "expect")}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() in ("transfer-encoding", "connection") or (
                            k.lower() == "content-length" and self.command != "HEAD"):
                        continue
                    if k.lower() == "location":  # keep resumable-upload sessions on the proxy
                        v = v.replace(proxy.upstream_url, proxy.url)
                    self.send_header(k, v)
                if self.command != "HEAD":  # a HEAD answer keeps the object's own Content-Length
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # clients that drop connections (a killed writer, a hung request) are expected

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _decide(self, method: str, path: str) -> str:
        with self.lock:
            self.seen.append((method, path))
            for rule in self.rules:
                predicate, action, count = rule
                if predicate(method, path):
                    if action.isdigit() and count > 0:
                        rule[2] -= 1
                        return action
                    if action == "hang":
                        rule[2] -= 1
                        if rule[2] == 0:
                            return "hang"
            return "forward"

    def count(self, predicate) -> int:
        with self.lock:
            return sum(1 for m, p in self.seen if predicate(m, p))

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(gcs, monkeypatch):
    p = FaultProxy(gcs.endpoint)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", p.url)
    monkeypatch.setenv("BERT_STORAGE_RETRY_INITIAL", "0.02")
    yield p
    p.close()


def _media_get(key):
    return lambda m, p: m == "GET" and "alt=media" in p and urllib.parse.quote(key, safe="") in p


def test_transient_errors_are_retried(gcs_prefix, proxy):
    path = gcs_prefix + "/r.bin"
    storage.write_bytes(path, b"payload")
    key = path.split("/", 3)[3]
    proxy.rules.append([_media_get(key), "503", 2])
    assert storage.read_bytes(path) == b"payload"
    assert proxy.count(_media_get(key)) == 3  # two injected 503s, then the forwarded request
    uploads = lambda m, p: m == "POST" and "/upload/" in p  # noqa: E731
    proxy.rules.append([uploads, "503", 2])
    storage.write_bytes(path, b"after 503s")
    assert proxy.count(uploads) == 4  # the first upload above, two 503s, the retried upload
    assert storage.read_bytes(path) == b"after 503s"


def test_missing_object_and_precondition_are_not_retried(gcs_prefix, proxy):
    path = gcs_prefix + "/absent.bin"
    key = path.split("/", 3)[3]
    with pytest.raises(UserError, match="no such object"):
        storage.read_bytes(path)
    assert proxy.count(_media_get(key)) == 1
    storage.write_bytes(path, b"x")
    uploads = lambda m, p: m == "POST" and "/upload/" in p  # noqa: E731
    before = proxy.count(uploads)
    with pytest.raises(storage.AlreadyExists):
        storage.write_bytes(path, b"y", exclusive=True)
    assert proxy.count(uploads) == before + 1


def test_permission_denied_is_one_line_naming_the_principal_and_not_retried(gcs_prefix, proxy):
    path = gcs_prefix + "/secret.bin"
    storage.write_bytes(path, b"x")
    key = path.split("/", 3)[3]
    proxy.messages[403] = ("runner@proj.iam.gserviceaccount.com does not have storage.objects.get access "
                           "to the Google Cloud Storage object.\nPermission 'storage.objects.get' denied.")
    proxy.rules.append([_media_get(key), "403", 5])
    with pytest.raises(UserError) as err:
        storage.read_bytes(path)
    assert str(err.value) == (f"{path}: permission denied (403 runner@proj.iam.gserviceaccount.com does not "
                              "have storage.objects.get access to the Google Cloud Storage object.)")
    assert proxy.count(_media_get(key)) == 1


@pytest.mark.parametrize("store, proxy_fixture", [("gcs", "proxy"), ("s3", "s3_proxy")])
def test_persistent_failure_is_one_line_after_the_deadline(store, proxy_fixture, request, monkeypatch):
    monkeypatch.setenv("BERT_STORAGE_RETRY_DEADLINE", "1")
    path = request.getfixturevalue(f"{store}_prefix") + "/down.bin"
    request.getfixturevalue(proxy_fixture).rules.append([lambda m, p: True, "503", 10**6])
    t0 = time.monotonic()
    with pytest.raises(storage.StorageUnavailable) as err:
        storage.read_bytes(path)
    assert time.monotonic() - t0 < 10
    msg = str(err.value)
    assert msg.startswith(f"{path}: storage unavailable") and "\n" not in msg and "503" in msg


def _kill_while_held(proxy, argv: list[str], env: dict, what: str) -> None:
    """Run a writer (_spawn) until the proxy holds the request a rule marked "hang", then SIGKILL it."""
    proc = _spawn(argv, env=env)
    try:
        assert proxy.hung.wait(30), f"the upload never reached {what}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
        proxy.release.set()


def test_writer_killed_mid_resumable_upload_leaves_no_object(gcs, gcs_prefix, proxy, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(_payload(4, 10 << 20))  # > 8 MiB: a resumable upload in 1 MiB chunks
    path = gcs_prefix + "/big.bin"
    chunk_puts = lambda m, p: m == "PUT"  # noqa: E731
    proxy.rules.append([chunk_puts, "hang", 4])  # hold the 4th chunk: 3 MiB are on the server
    _kill_while_held(proxy, ["plain", path, str(src), "0"],
                     {"BERT_STORAGE_CHUNK_MB": "1", "STORAGE_EMULATOR_HOST": proxy.url}, "its 4th chunk")
    assert proxy.count(chunk_puts) == 4
    names = [b.name for b in gcs.client().list_blobs(gcs.bucket, prefix=path.split("/", 3)[3])]
    assert names == []  # nothing under the final name, and no partial object anywhere under the prefix


@pytest.fixture
def s3_proxy(s3, monkeypatch):
    p = FaultProxy(s3.endpoint, xml=True)
    monkeypatch.setenv("AWS_ENDPOINT_URL", p.url)
    monkeypatch.setenv("BERT_STORAGE_RETRY_INITIAL", "0.02")
    yield p
    p.close()


def _s3_object(path: str, method: str, query: str = ""):
    """Requests of `method` on the object of `path` (path-style: /bucket/key), with `query` in the URL."""
    target = "/" + path.split("://", 1)[1]
    return lambda m, p: m == method and p.split("?")[0] == target and query in p


def test_s3_transient_errors_are_retried_and_4xx_are_not(s3_prefix, s3_proxy):
    path = s3_prefix + "/r.bin"
    storage.write_bytes(path, b"payload")
    get = _s3_object(path, "GET")
    s3_proxy.rules.append([get, "503", 2])
    assert storage.read_bytes(path) == b"payload"
    assert s3_proxy.count(get) == 3  # two injected 503s, then the forwarded request
    put = _s3_object(path, "PUT")
    s3_proxy.rules.append([put, "500", 2])
    storage.write_bytes(path, b"after 500s")
    assert s3_proxy.count(put) == 4  # the first upload above, two 500s, the retried upload
    assert storage.read_bytes(path) == b"after 500s"
    with pytest.raises(storage.AlreadyExists):  # 412: answered at once
        storage.write_bytes(path, b"y", exclusive=True)
    assert s3_proxy.count(put) == 5
    with pytest.raises(UserError, match="no such object"):  # 404: answered at once
        storage.read_bytes(s3_prefix + "/absent.bin")
    assert s3_proxy.count(_s3_object(s3_prefix + "/absent.bin", "GET")) == 1


def test_s3_permission_denied_is_one_line_and_not_retried(s3_prefix, s3_proxy):
    path = s3_prefix + "/secret.bin"
    storage.write_bytes(path, b"x")
    s3_proxy.messages[403] = "User: arn:aws:iam::123456789012:user/runner is not authorized to perform: s3:GetObject"
    get = _s3_object(path, "GET")
    s3_proxy.rules.append([get, "403", 5])
    with pytest.raises(UserError) as err:
        storage.read_bytes(path)
    assert str(err.value) == (f"{path}: permission denied (403 AccessDenied: User: arn:aws:iam::123456789012:"
                              "user/runner is not authorized to perform: s3:GetObject)")
    assert s3_proxy.count(get) == 1


def test_unreachable_s3_endpoint_is_one_line_after_the_deadline(s3_prefix, monkeypatch):
    with socket.socket() as sock:  # a loopback port nobody listens on: connections are refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("BERT_STORAGE_RETRY_DEADLINE", "1")
    monkeypatch.setenv("BERT_STORAGE_RETRY_INITIAL", "0.05")
    path = s3_prefix + "/x.txt"
    with pytest.raises(storage.StorageUnavailable) as err:
        storage.exists(path)
    assert str(err.value) == (f"{path}: storage unavailable after retrying for 1 s (Could not connect to the "
                              f'endpoint URL: "http://127.0.0.1:{port}/{path[len("s3://"):]}")')


def test_s3_writer_killed_mid_multipart_upload_leaves_no_object(s3, s3_prefix, s3_proxy, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(_payload(5, 12 << 20))  # > 5 MiB parts: a multipart upload of 3 parts
    path = s3_prefix + "/big.bin"
    parts = _s3_object(path, "PUT", "partNumber=")
    s3_proxy.rules.append([parts, "hang", 2])  # hold the 2nd part: the first is on the server
    _kill_while_held(s3_proxy, ["plain", path, str(src), "0"],
                     {"BERT_STORAGE_CHUNK_MB": "1", "AWS_ENDPOINT_URL": s3_proxy.url}, "its 2nd part")
    key = path.split("/", 3)[3]
    client = s3.client()
    assert [u["Key"] for u in client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", [])].count(key) == 1
    assert client.list_objects_v2(Bucket=s3.bucket, Prefix=key).get("Contents", []) == []  # nothing visible


# --------------------------------------------------------------------------------------------------
# minio:// as Kubeflow Pipelines writes it, and where s3:// finds its endpoint and keys


def test_s3_and_minio_settings_come_from_the_aws_variables_then_kfp_defaults(tmp_path):
    from bert_core.storage_s3 import Settings, settings

    no_secret = {"BERT_MINIO_SECRET_DIR": str(tmp_path / "not-mounted")}
    assert settings("s3://", no_secret) == Settings(None, None, None, None)  # boto3's own chain, AWS itself
    assert settings("minio://", no_secret) == Settings("http://minio-service.kubeflow:9000", "minio", None, None)
    in_kubeflow_ns = {**no_secret, "MINIO_SERVICE_SERVICE_HOST": "10.0.0.7", "MINIO_SERVICE_SERVICE_PORT": "9000"}
    assert settings("minio://", in_kubeflow_ns).endpoint_url == "http://10.0.0.7:9000"
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "accesskey").write_text("minio\n")
    (secret / "secretkey").write_text("minio123\n")
    assert settings("minio://", {"BERT_MINIO_SECRET_DIR": str(secret)}).access_key == "minio"
    assert settings("minio://", {"BERT_MINIO_SECRET_DIR": str(secret)}).secret_key == "minio123"
    aws = {"AWS_ENDPOINT_URL": "http://all:1", "AWS_ENDPOINT_URL_S3": "https://s3only:2",
           "AWS_DEFAULT_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SK",
           "BERT_MINIO_SECRET_DIR": str(secret), "MINIO_SERVICE_SERVICE_HOST": "10.0.0.7",
           "MINIO_SERVICE_SERVICE_PORT": "9000"}
    assert settings("s3://", aws) == settings("minio://", aws) == Settings("https://s3only:2", "eu-west-1", "AK", "SK")
    assert settings("s3://", {"AWS_ENDPOINT_URL": "http://all:1", "AWS_REGION": "r1", "AWS_DEFAULT_REGION": "r2"}) \
        == Settings("http://all:1", "r1", None, None)
    with pytest.raises(UserError, match=r"^minio-service:9000: the S3 endpoint must be a URL such as http://host:9000"):
        settings("s3://", {"AWS_ENDPOINT_URL": "minio-service:9000"})


def test_minio_paths_reach_kfp_minio_with_its_secret_and_service(s3, tmp_path, monkeypatch):
    """No AWS variables, as in a KFP step: the endpoint is the namespace's minio-service (the
    variables Kubernetes sets for it; here the S3 server on loopback) and the keys are the files of
    the mounted mlpipeline-minio-artifact secret. The objects are the ones s3:// sees."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    endpoint = urllib.parse.urlsplit(s3.endpoint)
    monkeypatch.setenv("MINIO_SERVICE_SERVICE_HOST", endpoint.hostname)
    monkeypatch.setenv("MINIO_SERVICE_SERVICE_PORT", str(endpoint.port))
    secret = tmp_path / "mlpipeline-minio-artifact"
    secret.mkdir()
    (secret / "accesskey").write_text("minio")
    (secret / "secretkey").write_text("minio123")
    monkeypatch.setenv("BERT_MINIO_SECRET_DIR", str(secret))
    run = s3.url(f"v2/artifacts/bert/{uuid.uuid4().hex[:8]}", scheme="minio://")
    storage.write_text(run + "/data/data_manifest.json", '{"instances": 3}')
    with storage.atomic_dir(run + "/ckpt-1") as d:
        open(os.path.join(d, "model.index"), "w").write("i")
    assert storage.read_json(run + "/data/data_manifest.json") == {"instances": 3}
    assert storage.glob(run + "/*/model.index") == [run + "/ckpt-1/model.index"] and storage.is_complete(run + "/ckpt-1")
    key = run.split("/", 3)[3] + "/data/data_manifest.json"
    assert s3.client().get_object(Bucket=s3.bucket, Key=key)["Body"].read() == b'{"instances": 3}'


def test_missing_s3_credentials_are_one_line(s3, tmp_path, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_ROLE_ARN",
                 "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-role lookup off this machine
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("BERT_MINIO_SECRET_DIR", str(tmp_path / "not-mounted"))
    with pytest.raises(UserError) as err:
        storage.read_bytes(s3.url("x.txt"))
    assert str(err.value) == ("s3://: no S3 credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                              "use an AWS profile or role)")
    with pytest.raises(UserError, match=r"^minio://: no S3 credentials found .*mlpipeline-minio-artifact secret at "):
        storage.exists(s3.url("x.txt", scheme="minio://"))


# --------------------------------------------------------------------------------------------------
# concurrent writers


def test_concurrent_thread_writers_leave_one_whole_artifact(root):
    path = storage.join(root, "shared.bin")
    for round_ in range(2):
        payloads = [_payload(10 * round_ + i, (3 << 20) + i) for i in range(4)]
        barrier = threading.Barrier(len(payloads))

        def write(data):
            barrier.wait()
            storage.write_bytes(path, data)

        with concurrent.futures.ThreadPoolExecutor(len(payloads)) as pool:
            list(pool.map(write, payloads))
        final = storage.read_bytes(path)
        assert final in payloads, f"round {round_}: the final artifact is no single writer's bytes"


@pytest.mark.parametrize("exclusive", [False, True], ids=["replace", "exclusive"])
def test_concurrent_process_writers_leave_one_whole_artifact(root, tmp_path, exclusive, monkeypatch):
    monkeypatch.setenv("BERT_STORAGE_CHUNK_MB", "1")  # gs: resumable uploads of 1 MiB chunks interleave
    path = storage.join(root, "shared.bin")
    payloads, procs = [], []
    start_at = time.time() + 1.5  # after the interpreters have started
    for i in range(3):
        # replace: 9 MiB, resumable uploads whose chunks interleave on the server. exclusive: 5 MiB, one
        # request each: fake-gcs-server checks ifGenerationMatch=0 on a resumable upload when the session
        # starts, not when it finalizes, so only single-request create-only races are meaningful here.
        payloads.append(_payload(100 + i, ((5 if exclusive else 9) << 20) + 4096 * i))
        src = tmp_path / f"w{i}.bin"
        src.write_bytes(payloads[-1])
        procs.append(_spawn(["exclusive" if exclusive else "plain", path, str(src), str(start_at)]))
    codes = [p.wait(60) for p in procs]
    final = storage.read_bytes(path)
    assert final in payloads, "the final artifact is no single writer's bytes"
    if exclusive:
        assert sorted(codes) == [0, 3, 3]  # one creator, two writers told it already exists
        assert final == payloads[codes.index(0)]
    else:
        assert codes == [0, 0, 0]


# --------------------------------------------------------------------------------------------------
# errors a user sees: one line each


def test_missing_bucket_and_object_are_one_line(remote):
    scheme = storage.scheme_of(remote)
    bucket = f"{scheme}{storage.split(remote)[0]}"
    nope = f"{scheme}no-such-bucket-x"
    cases = [
        (lambda: storage.read_bytes(f"{nope}/a/b.txt"), f"{nope}: bucket does not exist"),
        (lambda: storage.open_read(f"{nope}/a"), f"{nope}: bucket does not exist"),
        (lambda: storage.write_text(f"{nope}/a", "x"), f"{nope}: bucket does not exist"),
        (lambda: storage.read_text(remote + "/nope.txt"), f"{remote}/nope.txt: no such object"),
        (lambda: storage.size(remote + "/nope.txt"), f"{remote}/nope.txt: no such object"),
        (lambda: storage.copy(remote + "/nope.txt", remote + "/b"), f"{remote}/nope.txt: no such object"),
        (lambda: storage.read_json(scheme), f"{scheme}: expected {scheme}BUCKET/OBJECT"),
        (lambda: storage.read_bytes(bucket), f"{bucket}: expected an object name after the bucket"),
    ]
    for call, message in cases:
        with pytest.raises(UserError) as err:
            call()
        assert str(err.value) == message
    assert not storage.exists(f"{nope}/a") and storage.glob(f"{nope}/*") == []
    assert not storage.isdir(nope) and storage.exists(bucket)
    with pytest.raises(UserError, match="no such file"):
        corpus.expand_inputs(remote + "/nope.txt")


@pytest.mark.parametrize("scheme", ["gs", "s3"])
def test_a_missing_object_storage_input_reaches_the_user_as_one_line(scheme, request):
    """What `bert` does with a UserError (print it, exit with its code), in a fresh process."""
    request.getfixturevalue({"gs": "gcs", "s3": "s3"}[scheme])  # the server, and its variables set
    code = ("import sys\nfrom bert_core import storage\nfrom bert_core.errors import UserError\n"
            "try:\n    storage.read_text(sys.argv[1])\n"
            "except UserError as e:\n    print(e, file=sys.stderr); sys.exit(e.exit_code)\n")
    proc = subprocess.run([sys.executable, "-c", code, f"{scheme}://no-such-bucket-y/corpus.txt"], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT}, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"{scheme}://no-such-bucket-y: bucket does not exist"
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("path, message", [
    ("http://host/x.txt", "http://host/x.txt: unsupported storage URL; use a local path, gs://BUCKET/KEY, "
                          "s3://BUCKET/KEY or minio://BUCKET/KEY"),
    ("hdfs://nn/data/*.tfrecord", "hdfs://nn/data/*.tfrecord: unsupported storage URL; use a local path, "
                                  "gs://BUCKET/KEY, s3://BUCKET/KEY or minio://BUCKET/KEY"),
    ("gs:/bucket/x", "gs:/bucket/x: unsupported storage URL (did you mean gs://bucket/x?); use a local path, "
                     "gs://BUCKET/KEY, s3://BUCKET/KEY or minio://BUCKET/KEY"),
    ("S3:///b/x", "S3:///b/x: unsupported storage URL (did you mean s3://b/x?); use a local path, "
                  "gs://BUCKET/KEY, s3://BUCKET/KEY or minio://BUCKET/KEY"),
])
def test_other_schemes_are_one_line_not_local_paths(path, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where a path taken as local would have been created
    for call in (storage.check_scheme, storage.exists, storage.read_text, storage.glob, storage.list_files,
                 storage.makedirs, lambda p: storage.write_text(p, "x"), lambda p: storage.copy(p, str(tmp_path / "y"))):
        with pytest.raises(UserError) as err:
            call(path)
        assert str(err.value) == message
    assert os.listdir(tmp_path) == []
    assert storage.is_remote("minio://b/k") and storage.is_remote("s3://b/k") and not storage.is_remote(path)
    for fine in ("minio://b/k", "s3://b/k", "gs://b/k", "runs/a:b", "/data/x", "rel/path"):
        assert storage.check_scheme(fine) == fine


def test_local_behaviour_is_unchanged(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        storage.open_read(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError):
        storage.size(str(tmp_path / "missing"))
    storage.makedirs(str(tmp_path / "a" / "b"))
    assert storage.isdir(str(tmp_path / "a" / "b"))
    (tmp_path / ".x.1.tmp").write_text("")
    assert storage.remove_stale_temporaries(str(tmp_path)) == 1


def test_read_text_names_a_missing_or_non_utf8_file_in_one_line(tmp_path):
    from bert_core.data.glue import read_tsv
    from bert_core.evaluation import read_glue_predictions

    bad = tmp_path / "dev.tsv"
    bad.write_bytes(b"sentence\tlabel\ncaf\xe9\t1\n")
    for read in (storage.read_text, read_tsv, lambda p: read_glue_predictions(p, ["0", "1"]), storage.read_json):
        with pytest.raises(UserError, match=r"dev.tsv: not valid UTF-8 \(invalid continuation byte at byte 18\)"):
            read(str(bad))
    with pytest.raises(UserError, match=r"nothing.tsv: no such file"):
        read_tsv(str(tmp_path / "nothing.tsv"))
    bad.write_bytes("sentence\tlabel\ncafé\t1\n".encode())
    assert storage.read_text(str(bad)).splitlines()[1] == "café\t1"
