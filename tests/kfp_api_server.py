"""A local stand-in for the Kubeflow Pipelines v2beta1 REST API, for testing `bert-pipeline submit`,
`schedule`, `list` and `status` where no KFP server can run.

It serves, on 127.0.0.1, only the endpoints kfp.Client calls for those commands:

    GET  /apis/v2beta1/healthz
    GET  /apis/v2beta1/pipelines                       (filter on display_name)
    POST /apis/v2beta1/pipelines/upload                (multipart `uploadfile`, ?name=&description=)
    POST /apis/v2beta1/pipelines/upload_version        (multipart `uploadfile`, ?name=&pipelineid=)
    GET  /apis/v2beta1/pipelines/{id}/versions
    GET  /apis/v2beta1/experiments                     (filter on display_name)
    POST /apis/v2beta1/experiments
    GET  /apis/v2beta1/runs, POST /apis/v2beta1/runs, GET /apis/v2beta1/runs/{id}
    GET  /apis/v2beta1/recurringruns, POST /apis/v2beta1/recurringruns

and checks every request the way the real server's API layer would reject it: each JSON body and
`filter` is validated against kfp-server-api's generated v2beta1 models (every key must be a field of
the model, recursively; enums must be allowed values; then it is deserialized with kfp-server-api's own
ApiClient into the model class), an uploaded package must parse as a PipelineSpec (protobuf, unknown
fields rejected), a run's pipeline version, experiment and parameters must exist in what was uploaded,
and a recurring run needs exactly one trigger. A rejected request answers 400 with the reason (and is
recorded in `errors`), so a test fails on it. Responses are built from the same model classes.

    server = start_server(); ...; server.stop()     # or the `kfp_server` pytest fixture
    server = start_server(tls=tls_files(tmp_dir))   # HTTPS, with a throwaway self-signed certificate
"""

from __future__ import annotations

import datetime
import email.parser
import email.policy
import ipaddress
import json
import os
import re
import ssl
import threading
import urllib.parse
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import kfp_server_api
import pytest
import yaml
from kfp_server_api import models

PREFIX = "/apis/v2beta1"


class Invalid(Exception):
    """A request the real API server would refuse (answered 400 with this message)."""


class NotFound(Exception):
    pass


# --------------------------------------------------------------------------------------------------
# Validation against kfp-server-api's models
# --------------------------------------------------------------------------------------------------
_API_CLIENT = kfp_server_api.ApiClient()


def check_value(value, kind: str, where: str):
    """Raise Invalid unless `value` (decoded JSON) fits the generated type `kind`; returns it with
    enums as their names (protobuf's JSON mapping also accepts an enum's number, as kfp.Client sends
    a filter's operation)."""
    if value is None:
        return None
    if kind.startswith("list["):
        if not isinstance(value, list):
            raise Invalid(f"{where}: expected a list")
        return [check_value(item, kind[5:-1], f"{where}[{i}]") for i, item in enumerate(value)]
    if kind.startswith("dict("):
        if not isinstance(value, dict):
            raise Invalid(f"{where}: expected an object")
        inner = re.match(r"dict\(([^,]*), (.*)\)", kind).group(2)
        return {k: check_value(v, inner, f"{where}.{k}") for k, v in value.items()}
    if kind == "object":
        return value
    if kind == "str":
        # The generated models type int64 fields (max_concurrency, interval_second) as str, and
        # protobuf's JSON parser takes a number or a string for them; kfp.Client sends numbers.
        if not isinstance(value, str) and not (isinstance(value, int) and not isinstance(value, bool)):
            raise Invalid(f"{where}: expected a string, got {value!r}")
    elif kind == "bool":
        if not isinstance(value, bool):
            raise Invalid(f"{where}: expected a boolean, got {value!r}")
    elif kind == "int":  # int64 travels as a JSON string in the gateway; the client sends numbers
        if isinstance(value, bool) or not (isinstance(value, int) or
                                           (isinstance(value, str) and value.lstrip("-").isdigit())):
            raise Invalid(f"{where}: expected an integer, got {value!r}")
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Invalid(f"{where}: expected a number, got {value!r}")
    elif kind in ("datetime", "date"):
        try:
            datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise Invalid(f"{where}: expected an RFC 3339 time, got {value!r}") from None
    else:
        klass = getattr(models, kind)
        allowed = getattr(klass, "allowable_values", None)
        if allowed is not None:
            if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(allowed):
                return allowed[value]
            if value not in allowed:
                raise Invalid(f"{where}: {value!r} is not one of {allowed}")
            return value
        if not isinstance(value, dict):
            raise Invalid(f"{where}: expected a {kind} object, got {type(value).__name__}")
        json_to_attr = {v: k for k, v in klass.attribute_map.items()}
        # protobuf's JSON parser takes a field's name or its lowerCamelCase JSON name
        camel = {re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), k): k for k in json_to_attr}
        out = {}
        for key, item in value.items():
            name = key if key in json_to_attr else camel.get(key)
            if name is None:
                raise Invalid(f"{where}: unknown field {key!r} for {kind} (fields: {sorted(json_to_attr)})")
            out[name] = check_value(item, klass.openapi_types[json_to_attr[name]], f"{where}.{key}")
        return out
    return value


def parse_model(data, kind: str, where: str = "body"):
    """Validate then deserialize with kfp-server-api's ApiClient (its setters check required fields)."""
    data = check_value(data, kind, where)
    try:
        return _API_CLIENT._ApiClient__deserialize(data, kind)
    except (ValueError, TypeError) as err:
        raise Invalid(f"{where}: {err}") from None


def to_json(model) -> dict:
    return _API_CLIENT.sanitize_for_serialization(model)


def parse_pipeline_package(data: bytes, where: str) -> tuple[dict, dict]:
    """The uploaded YAML: a PipelineSpec document (optionally followed by a PlatformSpec); both, the
    second {} when absent."""
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    try:
        docs = [d for d in yaml.safe_load_all(data.decode("utf-8")) if d is not None]
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise Invalid(f"{where}: not YAML ({err})") from None
    if not docs:
        raise Invalid(f"{where}: empty package")
    try:
        json_format.ParseDict(docs[0], pipeline_spec_pb2.PipelineSpec())
        if len(docs) > 1:
            json_format.ParseDict(docs[1], pipeline_spec_pb2.PlatformSpec())
    except json_format.ParseError as err:
        raise Invalid(f"{where}: not a KFP pipeline spec ({err})") from None
    return docs[0], (docs[1] if len(docs) > 1 else {})


def _filter_value(query: dict) -> dict[str, str]:
    """EQUALS predicates of a `filter` query parameter, checked against V2beta1Filter."""
    if "filter" not in query:
        return {}
    try:
        doc = json.loads(query["filter"])
    except json.JSONDecodeError:
        raise Invalid("filter: not JSON") from None
    flt = parse_model(doc, "V2beta1Filter", "filter")
    out = {}
    for p in flt.predicates or []:
        if p.operation != "EQUALS":
            raise Invalid(f"filter: this test server supports EQUALS only, got {p.operation}")
        out[p.key] = p.string_value
    return out


# --------------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------------
def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


@dataclass
class State:
    pipelines: dict = field(default_factory=dict)       # id -> V2beta1Pipeline
    versions: dict = field(default_factory=dict)        # pipeline id -> [V2beta1PipelineVersion]
    specs: dict = field(default_factory=dict)           # version id -> pipeline spec dict
    platforms: dict = field(default_factory=dict)       # version id -> platform spec dict ({} if none)
    experiments: dict = field(default_factory=dict)     # id -> V2beta1Experiment
    runs: dict = field(default_factory=dict)            # id -> V2beta1Run
    recurring_runs: dict = field(default_factory=dict)  # id -> V2beta1RecurringRun
    requests: list = field(default_factory=list)        # (method, path, query, body) as received
    errors: list = field(default_factory=list)          # (status, message) of refused requests

    def add_version(self, pipeline_id: str, name: str, description: str | None, package: tuple[dict, dict]):
        spec, platform = package
        version = models.V2beta1PipelineVersion(
            pipeline_id=pipeline_id, pipeline_version_id=str(uuid.uuid4()), display_name=name,
            description=description, created_at=_now(), pipeline_spec=spec)
        self.versions.setdefault(pipeline_id, []).append(version)
        self.specs[version.pipeline_version_id] = spec
        self.platforms[version.pipeline_version_id] = platform
        return version

    def check_job(self, body, where: str) -> None:
        """What the server checks of a run / recurring run before creating it."""
        if body.experiment_id not in self.experiments:
            raise NotFound(f"{where}: experiment {body.experiment_id!r} not found")
        ref = body.pipeline_version_reference
        if ref is None or not ref.pipeline_id or not ref.pipeline_version_id:
            raise Invalid(f"{where}: pipeline_version_reference with pipeline_id and pipeline_version_id needed")
        if ref.pipeline_version_id not in self.specs or all(
                v.pipeline_version_id != ref.pipeline_version_id for v in self.versions.get(ref.pipeline_id, [])):
            raise NotFound(f"{where}: pipeline version {ref.pipeline_version_id!r} of {ref.pipeline_id!r} not found")
        spec = self.specs[ref.pipeline_version_id]
        declared = spec["root"].get("inputDefinitions", {}).get("parameters", {})
        given = (body.runtime_config.parameters or {}) if body.runtime_config else {}
        unknown = sorted(set(given) - set(declared))
        if unknown:
            raise Invalid(f"{where}: parameters {unknown} are not inputs of pipeline {spec['pipelineInfo']['name']}")
        missing = sorted(k for k, d in declared.items() if not d.get("isOptional") and "defaultValue" not in d
                         and k not in given)
        if missing:
            raise Invalid(f"{where}: required parameters {missing} missing")


# --------------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------------
class Handler(BaseHTTPRequestHandler):
    state: State  # set on the subclass per server

    def log_message(self, *args):  # quiet
        pass

    def _reply(self, status: int, payload) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = None
        if raw and self.headers.get_content_type() == "application/json":
            try:
                body = json.loads(raw)
            except json.JSONDecodeError:
                self.state.errors.append((400, "body is not JSON"))
                return self._reply(400, {"code": 3, "message": "body is not JSON"})
        self.state.requests.append((method, url.path, query, body))
        try:
            status, payload = self._route(method, url.path, query, body, raw)
        except Invalid as err:
            status, payload = 400, {"code": 3, "message": str(err)}
        except NotFound as err:
            status, payload = 404, {"code": 5, "message": str(err)}
        if status >= 400:
            self.state.errors.append((status, payload["message"]))
        self._reply(status, payload)

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_DELETE(self):
        self._handle("DELETE")

    def _upload(self, raw: bytes) -> bytes:
        ctype = self.headers.get("Content-Type", "")
        if not ctype.startswith("multipart/form-data"):
            raise Invalid(f"upload: expected multipart/form-data, got {ctype!r}")
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {ctype}\r\n\r\n".encode() + raw)
        for part in msg.iter_parts():
            if part.get_param("name", header="content-disposition") == "uploadfile":
                return part.get_payload(decode=True)
        raise Invalid("upload: no 'uploadfile' part")

    def _route(self, method: str, path: str, query: dict, body, raw: bytes):
        s = self.state
        if not path.startswith(PREFIX):
            raise NotFound(f"{path}: not an API path")
        path = path[len(PREFIX):]
        if method == "GET" and path == "/healthz":
            return 200, to_json(models.V2beta1GetHealthzResponse(multi_user=False))
        if method == "GET" and path == "/pipelines":
            wanted = _filter_value(query).get("display_name")
            found = [p for p in s.pipelines.values() if wanted is None or p.display_name == wanted]
            return 200, to_json(models.V2beta1ListPipelinesResponse(pipelines=found or None, total_size=len(found)))
        if method == "POST" and path == "/pipelines/upload":
            name = query.get("name")
            if not name:
                raise Invalid("upload: ?name= is required")
            if any(p.display_name == name for p in s.pipelines.values()):
                raise Invalid(f"upload: a pipeline named {name!r} exists; upload a version of it instead")
            package = parse_pipeline_package(self._upload(raw), "uploadfile")
            pipeline = models.V2beta1Pipeline(pipeline_id=str(uuid.uuid4()), display_name=name,
                                              description=query.get("description"), created_at=_now())
            s.pipelines[pipeline.pipeline_id] = pipeline
            s.add_version(pipeline.pipeline_id, name, query.get("description"), package)
            return 200, to_json(pipeline)
        if method == "POST" and path == "/pipelines/upload_version":
            pid, name = query.get("pipelineid"), query.get("name")
            if pid not in s.pipelines:
                raise NotFound(f"upload_version: pipeline {pid!r} not found")
            if not name:
                raise Invalid("upload_version: ?name= is required")
            if any(v.display_name == name for v in s.versions[pid]):
                raise Invalid(f"upload_version: version name {name!r} exists")
            package = parse_pipeline_package(self._upload(raw), "uploadfile")
            return 200, to_json(s.add_version(pid, name, query.get("description"), package))
        m = re.fullmatch(r"/pipelines/([^/]+)/versions", path)
        if method == "GET" and m:
            if m.group(1) not in s.pipelines:
                raise NotFound(f"pipeline {m.group(1)!r} not found")
            versions = list(s.versions[m.group(1)])
            if query.get("sort_by") == "created_at desc":
                versions.reverse()
            size = int(query.get("page_size") or len(versions) or 1)
            return 200, to_json(models.V2beta1ListPipelineVersionsResponse(
                pipeline_versions=versions[:size], total_size=len(versions)))
        if method == "GET" and path == "/experiments":
            wanted = _filter_value(query).get("display_name")
            found = [e for e in s.experiments.values() if wanted is None or e.display_name == wanted]
            return 200, to_json(models.V2beta1ListExperimentsResponse(experiments=found or None,
                                                                      total_size=len(found)))
        if method == "POST" and path == "/experiments":
            exp = parse_model(body, "V2beta1Experiment")
            if not exp.display_name:
                raise Invalid("experiment: display_name is required")
            if exp.experiment_id:
                raise Invalid("experiment: experiment_id is set by the server")
            exp.experiment_id, exp.created_at, exp.storage_state = str(uuid.uuid4()), _now(), "AVAILABLE"
            s.experiments[exp.experiment_id] = exp
            return 200, to_json(exp)
        if method == "POST" and path == "/runs":
            run = parse_model(body, "V2beta1Run")
            if run.run_id or run.state:
                raise Invalid("run: run_id and state are set by the server")
            if not run.display_name:
                raise Invalid("run: display_name is required")
            s.check_job(run, "run")
            run.run_id, run.created_at, run.state = str(uuid.uuid4()), _now(), "PENDING"
            s.runs[run.run_id] = run
            return 200, to_json(run)
        if method == "GET" and path == "/runs":
            runs = [r for r in s.runs.values()
                    if not query.get("experiment_id") or r.experiment_id == query["experiment_id"]]
            if query.get("sort_by") == "created_at desc":
                runs.reverse()
            size = int(query.get("page_size") or len(runs) or 1)
            return 200, to_json(models.V2beta1ListRunsResponse(runs=runs[:size] or None, total_size=len(runs)))
        m = re.fullmatch(r"/runs/([^/:]+)", path)
        if method == "GET" and m:
            if m.group(1) not in s.runs:
                raise NotFound(f"run {m.group(1)!r} not found")
            return 200, to_json(s.runs[m.group(1)])
        if method == "POST" and path == "/recurringruns":
            job = parse_model(body, "V2beta1RecurringRun")
            if job.recurring_run_id:
                raise Invalid("recurring run: recurring_run_id is set by the server")
            trigger = job.trigger
            if trigger is None or (trigger.cron_schedule is None) == (trigger.periodic_schedule is None):
                raise Invalid("recurring run: exactly one of trigger.cron_schedule or trigger.periodic_schedule")
            if trigger.cron_schedule is not None and len((trigger.cron_schedule.cron or "").split()) != 6 \
                    and not (trigger.cron_schedule.cron or "").startswith("@"):
                raise Invalid(f"recurring run: cron {trigger.cron_schedule.cron!r} is not a 6-field expression")
            if trigger.periodic_schedule is not None and int(trigger.periodic_schedule.interval_second or 0) <= 0:
                raise Invalid("recurring run: interval_second must be positive")
            if job.mode not in ("ENABLE", "DISABLE"):
                raise Invalid(f"recurring run: mode {job.mode!r}")
            s.check_job(job, "recurring run")
            job.recurring_run_id, job.created_at = str(uuid.uuid4()), _now()
            job.status = "ENABLED" if job.mode == "ENABLE" else "DISABLED"
            s.recurring_runs[job.recurring_run_id] = job
            return 200, to_json(job)
        if method == "GET" and path == "/recurringruns":
            jobs = [j for j in s.recurring_runs.values()
                    if not query.get("experiment_id") or j.experiment_id == query["experiment_id"]]
            return 200, to_json(models.V2beta1ListRecurringRunsResponse(recurring_runs=jobs or None,
                                                                        total_size=len(jobs)))
        raise NotFound(f"{method} {PREFIX}{path}: not served by this test server")


@dataclass
class KFPServer:
    url: str
    state: State
    _server: ThreadingHTTPServer
    _thread: threading.Thread

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def tls_files(directory) -> tuple[str, str]:
    """A throwaway self-signed certificate for 127.0.0.1 (it is its own CA) and its key: (cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kfp-api-server test CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path


def start_server(tls: tuple[str, str] | None = None) -> KFPServer:
    """Serve on a free port of 127.0.0.1; HTTPS with `tls` = (cert.pem, key.pem)."""
    state = State()
    handler = type("BoundHandler", (Handler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        # A client that refuses the certificate fails the handshake in accept(): an OSError that
        # socketserver drops, so the server goes on serving.
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    scheme = "https" if tls else "http"
    return KFPServer(f"{scheme}://127.0.0.1:{server.server_address[1]}", state, server, thread)


@pytest.fixture
def kfp_server():
    server = start_server()
    yield server
    server.stop()
