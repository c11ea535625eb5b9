"""`bert-pipeline`: compile, run locally, submit and schedule on Kubeflow Pipelines, inspect artifacts.

    bert-pipeline compile [-o bert_pipeline.yaml] [--phase2] [BUILD ...] [--no-cache]
    bert-pipeline run [--config FILE] [--param NAME=VALUE ...] [--ci] [--output-dir DIR]
    bert-pipeline submit [SERVER ...] [--experiment NAME] [--config FILE] [--param NAME=VALUE ...] [BUILD ...]
    bert-pipeline schedule [SERVER ...] (--cron "0 0 3 * * *" | --interval 24h) [BUILD ...] [...]
    bert-pipeline list [SERVER ...] [--experiment NAME]
    bert-pipeline status [SERVER ...] RUN_ID
    bert-pipeline artifacts ls PREFIX | artifacts show PATH | artifacts compare RUN_A RUN_B ... [--html FILE]
    bert-pipeline models ls [REGISTRY] [NAME] | models show NAME[:VERSION] | models publish NAME:VERSION |
                  models rollback NAME      (the model registry: pipelines/models.py)

BUILD: what a cluster fixes when the pipeline is built (pipelines.pipeline.build_pipeline): --mpijob,
--gcs-key-secret NAME, --minio-secret NAME, --image-pull-secret NAME. SERVER: --host URL (default: kfp's own
$KF_PIPELINES_ENDPOINT), --token, --namespace, --ssl-ca-cert FILE, --no-verify-ssl.

A user's mistake is one line, `bert-pipeline: error: ...`, and exit status 2.
"""

import argparse
import datetime
import json
import os
import re
import sys
import tempfile
import time
import warnings

from bert_core.cli import OneLineParser
from bert_core.config import parse_bool
from bert_core.errors import UserError, exit_from
from pipelines.cron import parse_interval, validate_cron

PROG = "bert-pipeline"


# --------------------------------------------------------------------------------------------------
# Pipeline arguments: defaults, a config file, --param overrides, each checked against the pipeline
# --------------------------------------------------------------------------------------------------
def _pipeline(phase2: bool, **build):
    from pipelines.pipeline import build_pipeline

    return build_pipeline(phase2=phase2, **build)


# A Kubernetes object name (DNS-1123 subdomain), as the API server checks a Secret's.
_K8S_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


def build_options(args) -> dict:
    """build_pipeline's cluster choices from the command line (compile, submit, schedule)."""
    for flag, name in [("--gcs-key-secret", args.gcs_key_secret), ("--minio-secret", args.minio_secret)] + \
                      [("--image-pull-secret", n) for n in args.image_pull_secret or ()]:
        if name is not None and not _K8S_NAME.fullmatch(name):
            raise UserError(f"{flag} {name!r}: not a Kubernetes Secret name (lower-case letters, digits, "
                            f"'-' and '.')")
    return dict(mpijob=args.mpijob, gcs_key_secret=args.gcs_key_secret, minio_secret=args.minio_secret,
                image_pull_secrets=tuple(args.image_pull_secret or ()), caching=not args.no_cache)


def coerce(name: str, value, kind: str, where: str):
    """A parameter value as the pipeline's type for it (strings from --param are parsed)."""
    try:
        if kind == "Integer":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind == "Float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind == "Boolean":
            return value if isinstance(value, bool) else parse_bool(value)
        if kind == "Dict":
            value = json.loads(value) if isinstance(value, str) else value
            if not isinstance(value, dict):
                raise ValueError
            return value
        if kind == "String":
            if isinstance(value, (dict, list)):
                raise ValueError
            return str(value)
    except (ValueError, TypeError, json.JSONDecodeError):
        pass
    expected = {"Integer": "an integer", "Float": "a number", "Dict": "a JSON object",
                "String": "a string", "Boolean": "true or false"}.get(kind, kind)
    raise UserError(f"{where}: {name}: expected {expected}, got {value!r}")


def read_config(path: str) -> dict:
    """A YAML or JSON mapping of pipeline parameters (plus `phase2`)."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror})") from None
    try:
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise UserError(f"{path}: not valid {'JSON' if path.endswith('.json') else 'YAML'} "
                        f"({str(err).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of pipeline parameters, got {type(data).__name__}")
    return data


def pipeline_arguments(args, base: dict | None = None) -> tuple[bool, dict]:
    """(phase2, arguments): `base`, then --config, then --param; every name and value checked."""
    values: dict = dict(base or {})
    sources: dict = {k: "defaults" for k in values}
    if getattr(args, "config", None):
        for k, v in read_config(args.config).items():
            values[k], sources[k] = v, args.config
    for item in getattr(args, "param", None) or []:
        if "=" not in item:
            raise UserError(f"--param {item!r}: expected NAME=VALUE")
        k, v = item.split("=", 1)
        values[k.strip()], sources[k.strip()] = v, "--param"
    phase2 = getattr(args, "phase2", False)
    if "phase2" in values:
        phase2 = phase2 or coerce("phase2", values.pop("phase2"), "Boolean", sources.pop("phase2"))
    inputs = _pipeline(phase2).component_spec.inputs
    out = {}
    for name, value in values.items():
        if name not in inputs:
            close = [n for n in inputs if n.split("_")[0] == name.split("_")[0]][:4]
            raise UserError(f"{sources[name]}: unknown pipeline parameter {name!r}"
                            + (f" (did you mean {', '.join(close)}?)" if close else
                               f"; see `{PROG} run --help-params`"))
        out[name] = coerce(name, value, inputs[name].type, sources[name])
    check_stage_configs(phase2, out)
    return phase2, out


def check_stage_configs(phase2: bool, arguments: dict) -> None:
    """Build every stage's config as its step will (components.common.STAGE_CONFIGS), from the
    parameter values and stand-in artifact paths, before the first step: a bad value is one line
    naming the step, the field and the pipeline parameter, not a failure after the data steps."""
    import inspect

    from google.protobuf.json_format import MessageToDict

    from bert_core.stages import command
    from components.common import STAGE_CONFIGS

    spec = MessageToDict(_pipeline(phase2).pipeline_spec)
    values = {name: p.get("defaultValue") for name, p in spec["root"]["inputDefinitions"]["parameters"].items()}
    values.update(arguments)
    tasks, ordered = spec["root"]["dag"]["tasks"], []
    while ready := sorted(name for name, task in tasks.items() if name not in ordered
                          and set(task.get("dependentTasks", [])) <= set(ordered)):
        ordered += ready  # in the order the steps run: the first bad step is the one named
    for task_name in ordered:
        task = tasks[task_name]
        component = spec["components"][task["componentRef"]["name"]]
        args = spec["deploymentSpec"]["executors"][component["executorLabel"]]["container"]["args"]
        function = args[args.index("--function_to_execute") + 1]
        if function not in STAGE_CONFIGS:
            continue
        stage, build = STAGE_CONFIGS[function]
        inputs, renamed = {}, {}
        for name, definition in component.get("inputDefinitions", {}).get("parameters", {}).items():
            binding = task.get("inputs", {}).get("parameters", {}).get(name)
            if binding is None:
                inputs[name] = definition.get("defaultValue")
            elif "componentInputParameter" in binding:
                parameter = binding["componentInputParameter"]
                inputs[name] = values[parameter]
                if parameter != name:
                    renamed[name] = parameter
            elif "constant" in binding.get("runtimeValue", {}):
                inputs[name] = binding["runtimeValue"]["constant"]
            else:  # another step's output, known only when that step has run: a stand-in of its type
                inputs[name] = {"NUMBER_INTEGER": 0, "NUMBER_DOUBLE": 0.0, "BOOLEAN": False,
                                "STRUCT": {}, "LIST": []}.get(definition.get("parameterType"), "")
        else:
            for kind in ("inputDefinitions", "outputDefinitions"):
                for name in component.get(kind, {}).get("artifacts", {}):
                    inputs[name] = f"/{task_name}/{name}"  # stands in for the artifact's path
            known = set(inspect.signature(build).parameters) | set(command(stage).config.model_fields)
            try:
                build(**{k: v for k, v in inputs.items() if k in known})
            except UserError as err:
                message = str(err).removeprefix(f"{stage}: ")
                where = [f"--{name} is the pipeline parameter {parameter}" for name, parameter in renamed.items()
                         if f"--{name}" in message]
                raise UserError(f"step {task_name} (bert {stage}): {message}"
                                + (f" ({'; '.join(where)})" if where else "")) from None


def parameters_table(phase2: bool = True) -> str:
    from bert_core.artifacts import render_table

    inputs = _pipeline(phase2).component_spec.inputs
    rows = [[name, spec.type, json.dumps(spec.default)] for name, spec in inputs.items()]
    return render_table(["parameter", "type", "default"], rows, align="lll")


# --------------------------------------------------------------------------------------------------
# compile
# --------------------------------------------------------------------------------------------------
def compile_pipeline(output: str, phase2: bool = False, build: dict | None = None) -> str:
    from kfp import compiler

    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    compiler.Compiler().compile(_pipeline(phase2, **(build or {})), output)
    return output


def cmd_compile(args) -> int:
    path = compile_pipeline(args.output, args.phase2, build_options(args))
    print(f"wrote {path} (pipeline {_pipeline(args.phase2).name}); upload it in the KFP UI, or "
          f"`{PROG} submit --host URL`")
    return 0


# --------------------------------------------------------------------------------------------------
# run: the same pipeline on this machine, with kfp.local's SubprocessRunner
# --------------------------------------------------------------------------------------------------
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# kfp.local's own lines for a task's start and end. They are KFP's log format, not ours: kfp.local
# offers no callback or structured record of its tasks, so these two lines are the one thing read
# from the log. Everything of our stages (training progress, files written, a user's error) comes
# as structured events (bert_core.events), never from their log lines.
_KFP_TASK_STARTED = re.compile(r"Executing task '([^']+)'")
_KFP_TASK_FINISHED = re.compile(r"Task '([^']+)' finished with status (\w+)")


class StageProgress:
    """Takes kfp.local's stdout and the stages' events file: all output to the log file; to the
    terminal one line per task (from kfp.local's task lines) and, under it, the stages' events."""

    def __init__(self, log, terminal, total: int, events_path: str, verbose: bool = False):
        self.log, self.terminal, self.total, self.verbose = log, terminal, total, verbose
        self.events_path, self.events_offset = events_path, 0
        self.buffer, self.done, self.started, self.error = "", 0, {}, None

    def write(self, text: str) -> int:
        self.log.write(text)
        if self.verbose:
            self.terminal.write(text)
        self.buffer += text
        while "\n" in self.buffer:
            line, self.buffer = self.buffer.split("\n", 1)
            self._line(_ANSI.sub("", line))
        return len(text)

    def _say(self, text: str) -> None:
        if not self.verbose:
            self.terminal.write(text + "\n")
            self.terminal.flush()

    def _line(self, line: str) -> None:
        self.read_events()
        if m := _KFP_TASK_STARTED.search(line):
            self.started[m.group(1)] = time.monotonic()
            self._say(f"[{self.done + 1}/{self.total}] {m.group(1)} ...")
        elif m := _KFP_TASK_FINISHED.search(line):
            self.done += 1
            seconds = time.monotonic() - self.started.get(m.group(1), time.monotonic())
            self._say(f"      {m.group(1)}: {m.group(2).lower()} in {seconds:.1f} s")

    def read_events(self) -> None:
        """Render the events appended since the last call (whole lines only)."""
        if not os.path.exists(self.events_path):
            return
        with open(self.events_path, "rb") as f:
            f.seek(self.events_offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.events_offset += end
        for raw in data[:end].splitlines():
            self.event(json.loads(raw))

    def event(self, e: dict) -> None:
        kind = e.get("event")
        if kind == "step":
            eta = "" if e.get("eta_seconds") is None else f"  ETA {datetime.timedelta(seconds=int(e['eta_seconds']))}"
            self._say(f"      {e['stage']}: step {e['step']}/{e['total']}  loss {e['loss']:.4f}  "
                      f"{e['sequences_per_second']:.1f} seq/s{eta}")
        elif kind == "wrote":
            self._say(f"      {e['stage']}: wrote {e['path']}")
        elif kind == "gate":
            self._say(f"      {e['stage']}: version {e['version']} {e['decision']}: {e['reason']}")
        elif kind == "error" and self.error is None:
            self.error = e["message"]

    def flush(self) -> None:
        self.log.flush()
        self.terminal.flush()


def stage_outputs(run_dir: str) -> dict[str, dict[str, dict]]:
    """{task: {output: metadata}} from the executor_output.json files of a local run."""
    out: dict = {}
    for task in sorted(os.listdir(run_dir)):
        path = os.path.join(run_dir, task, "executor_output.json")
        if not os.path.exists(path):
            continue
        with open(path) as f:
            doc = json.load(f)
        out[task] = {name: (entry.get("artifacts") or [{}])[0].get("metadata", {})
                     for name, entry in doc.get("artifacts", {}).items()}
    return out


EVENTS_FILE = "pipeline-events.jsonl"

def metrics_table(run_dir: str) -> str:
    """The numbers a person reads at the end of a run (bert_core.reports.sections.HEADLINE), a row each."""
    from bert_core.artifacts import render_table
    from bert_core.reports.runs import find_stages, headline, headline_note, read_record

    stages = find_stages(run_dir)
    note = headline_note(stages, read_record(run_dir))
    return render_table(["stage", "metric", "value"], headline(stages), align="llr") + (f"\n({note})" if note else "")


def run_local(arguments: dict, phase2: bool, output_dir: str, verbose: bool = False) -> tuple[str, dict]:
    """Run the pipeline with kfp.local (this venv, one subprocess per step); (run_dir, outputs).
    The steps report events (bert_core.events) to pipeline-events.jsonl beside pipeline.log."""
    from kfp import local

    from bert_core import children, events

    pipeline = _pipeline(phase2)
    os.makedirs(output_dir, exist_ok=True)
    before = set(os.listdir(output_dir))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=os.path.abspath(output_dir),
               raise_on_error=True)
    total = len(pipeline.pipeline_spec.root.dag.tasks)
    log_path = os.path.join(output_dir, "pipeline.log")
    events_path = os.path.join(output_dir, EVENTS_FILE)
    open(events_path, "w").close()  # this run's events only
    started = time.monotonic()
    terminal = sys.stdout
    # The steps' subprocesses inherit these: where to report events, and whose end ends them
    # (bert_core.children: a killed `bert-pipeline run` leaves no step, horovodrun or rank running).
    step_env = {events.ENV: events_path, children.OWNER_ENV: str(os.getpid())}
    before_env = {name: os.environ.get(name) for name in step_env}
    with open(log_path, "a", encoding="utf-8") as log:
        progress = StageProgress(log, terminal, total, events_path, verbose)
        terminal.write(f"{pipeline.name}: {total} stages, artifacts in {output_dir} (log: {log_path})\n")
        sys.stdout = progress
        os.environ.update(step_env)
        failure = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "custom base image in a Python environment": intended
                pipeline(**arguments)
        except RuntimeError as err:
            failure = _ANSI.sub("", str(err)).splitlines()[0]
        finally:
            sys.stdout = terminal
            for name, value in before_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            progress.read_events()
    runs = sorted(set(os.listdir(output_dir)) - before - {"pipeline.log", EVENTS_FILE})
    run_dir = os.path.join(output_dir, runs[-1]) if runs else output_dir
    if failure:
        raise UserError(f"{failure} {progress.error or ''} (log: {log_path})".replace("  ", " "))
    terminal.write(f"done in {time.monotonic() - started:.0f} s; artifacts in {run_dir}\n")
    return run_dir, stage_outputs(run_dir)


def cmd_run(args) -> int:
    if args.help_params:
        print(parameters_table())
        return 0
    from pipelines import defaults

    phase2, arguments = pipeline_arguments(args, defaults.CI if args.ci else defaults.DEFAULT)
    run_dir, outputs = run_local(arguments, phase2, args.output_dir, args.verbose)
    from pipelines.run_record import write_run_files

    report = write_run_files(run_dir, _pipeline(phase2), arguments)
    print()
    print(metrics_table(run_dir))
    gate = outputs.get("publish", {}).get("decision", {})
    if gate.get("decision"):  # the publish step's outcome (bert_core.publish), with its reason
        print(f"\ngate: {gate['model']} {gate['decision'].upper()}: {gate['reason']}")
    print(f"\ninspect: {PROG} artifacts ls {run_dir}; compare: {PROG} artifacts compare {run_dir} OTHER_RUN")
    print("the run's report (every stage's pictures), to open in a browser:")
    print(os.path.abspath(report))
    return 0


# --------------------------------------------------------------------------------------------------
# A KFP server: submit, schedule, list, status
# --------------------------------------------------------------------------------------------------
def client(args):
    """kfp.Client for --host, or, without it, kfp's own default (its KF_PIPELINES_ENDPOINT, then
    in-cluster or kubeconfig); TLS verified against --ssl-ca-cert, or not at all with --no-verify-ssl."""
    import kfp

    if args.ssl_ca_cert and not os.path.isfile(args.ssl_ca_cert):
        raise UserError(f"--ssl-ca-cert {args.ssl_ca_cert}: no such file")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return _api_call("connect", kfp.Client, host=args.host, namespace=args.namespace,
                         existing_token=args.token or None, ssl_ca_cert=args.ssl_ca_cert,
                         verify_ssl=args.verify_ssl)


def _api_call(what: str, fn, *a, **kw):
    """A KFP API error or an unreachable host as one line."""
    import urllib3
    from kfp_server_api.exceptions import ApiException

    try:
        return fn(*a, **kw)
    except ApiException as err:
        detail = ""
        try:
            body = json.loads(err.body or "{}")
            detail = body.get("message") or body.get("error") or ""
        except (ValueError, AttributeError):
            detail = str(err.body or "")[:200]
        raise UserError(f"{what}: the KFP server answered {err.status} {err.reason}"
                        + (f": {detail.splitlines()[0]}" if detail else "")) from None
    except urllib3.exceptions.HTTPError as err:
        # MaxRetryError: the endpoint kfp resolved (--host or not) and the last attempt's error
        pool, cause = getattr(err, "pool", None), getattr(err, "reason", None) or err
        where = f" at {pool.scheme}://{pool.host}:{pool.port}" if pool else ""
        hint = " (--ssl-ca-cert FILE for a private CA, or --no-verify-ssl)" \
            if isinstance(cause, urllib3.exceptions.SSLError) else ""
        raise UserError(f"{what}: cannot reach the KFP server{where} ({type(cause).__name__}: "
                        f"{str(cause).splitlines()[0][:200]}){hint}") from None


def ensure_pipeline(kfp_client, package: str, name: str, description: str) -> tuple[str, str]:
    """Upload the pipeline under `name`, or a new version of it when it exists: (pipeline_id, version_id)."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    pipeline_id = _api_call("find pipeline", kfp_client.get_pipeline_id, name)
    if pipeline_id is None:
        pipeline = _api_call("upload pipeline", kfp_client.upload_pipeline, package, pipeline_name=name,
                             description=description)
        pipeline_id = pipeline.pipeline_id
        versions = _api_call("list pipeline versions", kfp_client.list_pipeline_versions, pipeline_id,
                             sort_by="created_at desc", page_size=1)
        if not versions.pipeline_versions:
            raise UserError(f"pipeline {name} ({pipeline_id}) was uploaded but has no version")
        return pipeline_id, versions.pipeline_versions[0].pipeline_version_id
    version = _api_call("upload pipeline version", kfp_client.upload_pipeline_version, package,
                        pipeline_version_name=f"{name}-{stamp}", pipeline_id=pipeline_id,
                        description=description)
    return pipeline_id, version.pipeline_version_id


def _prepare(args):
    phase2, arguments = pipeline_arguments(args)
    build = build_options(args)
    pipeline = _pipeline(phase2)
    kfp_client = client(args)
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(os.path.join(tmp, "pipeline.yaml"), phase2, build)
        pipeline_id, version_id = ensure_pipeline(kfp_client, package, pipeline.name, pipeline.description or "")
    experiment = _api_call("create experiment", kfp_client.create_experiment, args.experiment,
                           namespace=args.namespace)
    return kfp_client, pipeline, arguments, pipeline_id, version_id, experiment


def cmd_submit(args) -> int:
    kfp_client, pipeline, arguments, pipeline_id, version_id, experiment = _prepare(args)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    run = _api_call("create run", kfp_client.run_pipeline, experiment.experiment_id,
                    args.run_name or f"{pipeline.name}-{stamp}", params=arguments, pipeline_id=pipeline_id,
                    version_id=version_id, pipeline_root=args.pipeline_root or None,
                    service_account=args.service_account or None)
    print(f"run {run.run_id} created in experiment {args.experiment} (pipeline {pipeline.name}, "
          f"version {version_id})")
    print(f"status: {PROG} status{f' --host {args.host}' if args.host else ''} {run.run_id}")
    return 0


def cmd_schedule(args) -> int:
    if (args.cron is None) == (args.interval is None):
        raise UserError("give exactly one of --cron (KFP's 6-field cron) or --interval (e.g. 24h)")
    cron = validate_cron(args.cron) if args.cron is not None else None
    interval = parse_interval(args.interval) if args.interval is not None else None
    registry_uri = _scheduled_registry(args)
    kfp_client, pipeline, arguments, pipeline_id, version_id, experiment = _prepare(args)
    job = _api_call("create recurring run", kfp_client.create_recurring_run, experiment.experiment_id,
                    args.name or f"{pipeline.name}-schedule", cron_expression=cron, interval_second=interval,
                    max_concurrency=args.max_concurrency, no_catchup=not args.catchup, params=arguments,
                    pipeline_id=pipeline_id, version_id=version_id, start_time=args.start_time,
                    pipeline_root=args.pipeline_root or None, service_account=args.service_account or None)
    when = f"cron '{cron}'" if cron else f"every {interval} s"
    cache = ("no step reusing a cached result" if args.no_cache else
             "data steps cached on the corpus snapshot (a changed corpus is never served from cache)")
    print(f"recurring run {job.recurring_run_id} created in experiment {args.experiment}: {when}, "
          f"at most {args.max_concurrency} at a time, {cache}; "
          + (f"publishing to {registry_uri} through the gate" if registry_uri else "no registry"))
    return 0


def _scheduled_registry(args) -> str:
    """The registry of a scheduled run: object storage (a pod's own disk goes with the pod, so a run
    would never find the version the previous one published), or empty for none."""
    from bert_core import storage

    _, arguments = pipeline_arguments(args)
    inputs = _pipeline(getattr(args, "phase2", False)).component_spec.inputs
    uri = arguments.get("registry_uri", inputs["registry_uri"].default)
    if uri and not storage.is_remote(uri):
        raise UserError(f"registry_uri={uri}: a scheduled run's registry must be object storage, which outlives "
                        f"its pods; give -p registry_uri=gs://BUCKET/registry (s3://, minio://), or "
                        f"-p registry_uri= for none")
    return uri


def _when(value) -> str:
    if not value:
        return "-"
    if isinstance(value, str):
        return value
    return value.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def cmd_list(args) -> int:
    from bert_core.artifacts import render_table

    kfp_client = client(args)
    experiment_id = None
    if args.experiment:
        experiment_id = _api_call("find experiment", kfp_client.get_experiment, experiment_name=args.experiment,
                                  namespace=args.namespace).experiment_id
    if args.recurring:
        page = _api_call("list recurring runs", kfp_client.list_recurring_runs, experiment_id=experiment_id,
                         page_size=args.limit, sort_by="created_at desc", namespace=args.namespace)
        rows = [[j.recurring_run_id, j.display_name, j.status or "-",
                 (j.trigger.cron_schedule.cron if j.trigger and j.trigger.cron_schedule else
                  f"every {j.trigger.periodic_schedule.interval_second} s" if j.trigger and j.trigger.periodic_schedule
                  else "-"), _when(j.created_at)] for j in page.recurring_runs or []]
        print(render_table(["recurring run", "name", "status", "schedule", "created (UTC)"], rows, align="lllll"))
        return 0
    page = _api_call("list runs", kfp_client.list_runs, experiment_id=experiment_id, page_size=args.limit,
                     sort_by="created_at desc", namespace=args.namespace)
    rows = [[r.run_id, r.display_name, r.state or "-", _when(r.created_at), _when(r.finished_at)]
            for r in page.runs or []]
    print(render_table(["run", "name", "state", "created (UTC)", "finished (UTC)"], rows, align="lllll")
          if rows else "no runs")
    return 0


def cmd_status(args) -> int:
    from bert_core.artifacts import render_table

    run = _api_call(f"run {args.run_id}", client(args).get_run, args.run_id)
    print(f"run {run.run_id}  {run.display_name}")
    print(f"state     {run.state or '-'}")
    print(f"created   {_when(run.created_at)}")
    print(f"finished  {_when(run.finished_at)}")
    if run.error and (run.error.message or run.error.code):
        print(f"error     {run.error.message or run.error.code}")
    tasks = (run.run_details.task_details if run.run_details else None) or []
    if tasks:
        rows = [[t.display_name or t.task_id, t.state or "-", _when(t.start_time), _when(t.end_time)]
                for t in tasks]
        print()
        print(render_table(["task", "state", "started (UTC)", "ended (UTC)"], rows, align="llll"))
    return 0 if (run.state or "") not in ("FAILED", "CANCELED") else 1


# --------------------------------------------------------------------------------------------------
# artifacts
# --------------------------------------------------------------------------------------------------
def cmd_artifacts(args) -> int:
    from bert_core import artifacts

    if args.action == "compare":
        from bert_core.reports import runs

        comparison = runs.compare(args.path)
        print(runs.compare_text(comparison))
        if args.html:
            from bert_core.reports import write_html

            print(f"wrote {write_html(args.html, runs.compare_page(comparison))}")
        return 0
    if args.action == "download":
        if len(args.path) != 2 or args.html:
            raise UserError("artifacts download: give PREFIX DIR (what to download, and the local directory)")
        files = artifacts.download_tree(*args.path)
        print(f"downloaded {len(files)} file(s) to {args.path[1]}")
        return 0
    if len(args.path) != 1 or args.html:
        raise UserError(f"artifacts {args.action}: give one PATH" + (" (--html is for compare)" if args.html else ""))
    (path,) = args.path
    if args.action == "ls":
        print(artifacts.format_listing(artifacts.list_artifacts(path), prefix=path))
    else:
        print(artifacts.describe_artifact(path))
    return 0


# --------------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=OneLineParser)

    def arguments(p):
        p.add_argument("--config", metavar="FILE", help="YAML or JSON mapping of pipeline parameters "
                                                        "(and phase2: true)")
        p.add_argument("--param", "-p", action="append", metavar="NAME=VALUE", help="one pipeline parameter "
                                                                                    "(repeatable; wins over --config)")
        p.add_argument("--phase2", action="store_true", help="the two-phase pipeline (phase 2 at seq 512)")

    def server(p):
        p.add_argument("--host", help="KFP API endpoint, e.g. http://localhost:8080 (default: "
                                      "$KF_PIPELINES_ENDPOINT, else kfp's in-cluster or kubeconfig default)")
        p.add_argument("--namespace", default="kubeflow", help="Kubeflow namespace (multi-user installs)")
        p.add_argument("--token", default=os.environ.get("KF_PIPELINES_TOKEN", ""),
                       help="bearer token (default: $KF_PIPELINES_TOKEN)")
        p.add_argument("--ssl-ca-cert", metavar="FILE", help="CA bundle (PEM) that signed the server's TLS "
                                                             "certificate (default: certifi's)")
        p.add_argument("--verify-ssl", action=argparse.BooleanOptionalAction, default=None,
                       help="verify the server's TLS certificate (default: yes)")

    def build(p):
        p.add_argument("--mpijob", action="store_true", help="pretraining as MPIJobs: the pretraining step "
                                                             "runs on the launcher image, off GPU nodes")
        p.add_argument("--gcs-key-secret", metavar="NAME", help="Secret with a service-account key.json that "
                                                                "every step and the MPIJob use for gs:// "
                                                                "(default: none, Workload Identity)")
        p.add_argument("--minio-secret", metavar="NAME",
                       help="KFP's MinIO credentials Secret for minio:// paths, on every step and the MPIJob "
                            "(mlpipeline-minio-artifact in a Kubeflow profile namespace; default: none)")
        p.add_argument("--image-pull-secret", action="append", metavar="NAME",
                       help="pull secret for a private registry, on every step and the MPIJob (repeatable)")
        # The data steps' cache is keyed on the corpus snapshot (resolve-start), so a recurring run on a
        # grown corpus is never served the first corpus's data from cache.
        p.add_argument("--no-cache", action="store_true", help="no step reuses a cached result")

    p = sub.add_parser("compile", help="write the pipeline's IR YAML (upload it in the KFP UI)")
    p.add_argument("--output", "-o", default="bert_pipeline.yaml")
    p.add_argument("--phase2", action="store_true", help="the two-phase pipeline (phase 2 at seq 512)")
    build(p)
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("run", help="run the pipeline on this machine (kfp.local, this Python environment)")
    arguments(p)
    p.add_argument("--ci", action="store_true", help="the smaller CI configuration (end-to-end test)")
    from pipelines.defaults import RUN_DIR
    p.add_argument("--output-dir", default=RUN_DIR, help=f"pipeline root for the artifacts (default {RUN_DIR})")
    p.add_argument("--verbose", "-v", action="store_true", help="stream every step's full log")
    p.add_argument("--help-params", action="store_true", help="list the pipeline parameters and defaults")
    p.set_defaults(func=cmd_run)

    for name, func, text in (("submit", cmd_submit, "upload (or add a version) and start a run on a KFP server"),
                             ("schedule", cmd_schedule, "create a KFP recurring run (scheduled re-pretraining, no "
                                                          "cached steps)")):
        p = sub.add_parser(name, help=text)
        server(p)
        arguments(p)
        build(p)
        p.add_argument("--experiment", default="bert", help="experiment name (created if missing)")
        p.add_argument("--pipeline-root", default="", help="pipeline root, e.g. gs://bucket/kfp (launcher=mpijob "
                                                           "needs gs://)")
        p.add_argument("--service-account", default="", help="Kubernetes service account of the run's pods")
        if name == "submit":
            p.add_argument("--run-name", default="")
        else:
            p.add_argument("--cron", help="KFP cron: 6 fields, seconds first, e.g. '0 0 3 * * *' (03:00 daily)")
            p.add_argument("--interval", help="a fixed period instead: 24h, 90m, 1h30m, 2d")
            p.add_argument("--name", default="", help="recurring run name")
            p.add_argument("--start-time", default=None, help="RFC 3339 start time")
            p.add_argument("--max-concurrency", type=int, default=1)
            p.add_argument("--catchup", action="store_true", help="backfill missed intervals")
        p.set_defaults(func=func)

    p = sub.add_parser("list", help="runs (or --recurring runs) on a KFP server, newest first")
    server(p)
    p.add_argument("--experiment", default="", help="only this experiment's")
    p.add_argument("--recurring", action="store_true")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("status", help="a run's state and its tasks")
    server(p)
    p.add_argument("run_id")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("artifacts", help="a run's artifacts (local or object storage): ls PREFIX, show PATH, "
                                         "compare RUN_A RUN_B ..., download PREFIX DIR")
    p.add_argument("action", choices=("ls", "show", "compare", "download"))
    p.add_argument("path", nargs="+", help="ls, show: one path; compare: two run directories or more; "
                                           "download: PREFIX DIR")
    p.add_argument("--html", metavar="FILE", help="compare: also write the comparison as a page, curves overlaid")
    p.set_defaults(func=cmd_artifacts)

    from pipelines.models import add_parser as add_models_parser
    add_models_parser(sub)
    return parser


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


def main(argv: list[str] | None = None) -> None:
    exit_from(PROG, run, argv)


if __name__ == "__main__":
    main()
