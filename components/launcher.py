"""The launcher step: run one pretraining MPIJob to its end from inside a pod (a KFP step or a CronJob).

    location = launch(PretrainJob(...), timeout_seconds=86400)

1. creates the MPIJob (rendered by components.mpijob) under a name unique to this run, owned by the
   step's own pod (downward API POD_NAME/POD_UID, or the API), so deleting the run's pods deletes it,
   and running as that pod does (service account, key Secret, image pull secrets: inherit_from_pod).
   An unfinished MPIJob that writes the same output is deleted first if the pod that created it has
   ended (a cancelled run, a retried step), and the launch is refused if that pod still runs;
2. waits on `status.conditions` until Succeeded or Failed, streaming the launcher pod's log
   (label training.kubeflow.org/job-role=launcher) into this step's log;
3. raises `MPIJobFailed` with the condition's reason and message on Failed; deletes the MPIJob when
   the step is cancelled (SIGTERM) or times out;
4. returns the checkpoint location (the job's --output_dir): the step's Model artifact.

It needs only `REQUIRED_PERMISSIONS` in its namespace (manifests/base/rbac.yaml is rendered from it);
a 403 is one line naming the verb and resource that are missing.

`python -m components.launcher --spec job.yaml` is the same thing as a command (the CronJob's).
Imports the kubernetes client, pydantic and bert_core.config only: no kfp, no TensorFlow.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import secrets
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from bert_core.errors import UserError
from bert_core.storage_s3 import MINIO_SECRET_DIR
from components import images
from components.mpijob import (GCS_KEY_DIR, GROUP, JOB_NAME_LABEL, JOB_ROLE_LABEL, PLURAL, VERSION, PretrainJob,
                               job_name_problem, load_job, render)

# What the launcher step may do, in its own namespace; the Role in manifests/ is rendered from this.
# (api group, resource, verbs)
REQUIRED_PERMISSIONS: list[tuple[str, str, list[str]]] = [
    (GROUP, PLURAL, ["create", "get", "list", "delete"]),
    ("", "pods", ["get", "list"]),
    ("", "pods/log", ["get"]),
]
SERVICE_ACCOUNT = "bert-launcher"
ROLE_NAME = "bert-launcher"
SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
# On every MPIJob the launcher creates: which output it writes (a hash: label values are short).
OUTPUT_LABEL = "bert.kubeflow.org/output"


class LaunchError(UserError):
    """The MPIJob could not be run to success; printed as one line."""

    exit_code = 1


class MPIJobFailed(LaunchError):
    def __init__(self, name: str, reason: str, message: str):
        self.name, self.reason, self.message = name, reason, message
        super().__init__(f"MPIJob {name} failed: {reason}: {message}")


class MPIJobTimeout(LaunchError):
    pass


class Cancelled(LaunchError):
    exit_code = 143  # 128 + SIGTERM


class PermissionDenied(LaunchError):
    pass


def _resource_name(group: str, resource: str) -> str:
    return f"{resource}.{group}" if group else resource


def permission_error(err, verb: str, group: str, resource: str, namespace: str) -> PermissionDenied:
    """One line for a 403: who, which verb on which resource, and where the grant lives."""
    body = getattr(err, "body", "") or ""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        body = json.loads(body).get("message", body)
    except (ValueError, AttributeError):
        pass
    who = re.search(r'User "([^"]+)"', str(body))
    subject = f"{who.group(1)} " if who else "this pod's service account "
    return PermissionDenied(
        f"permission denied: {subject}cannot {verb} {_resource_name(group, resource)} in namespace "
        f"{namespace!r}; grant '{verb}' on '{resource}' (apiGroup {group or 'core'!r}) with the Role "
        f"{ROLE_NAME!r} in manifests/base/rbac.yaml and run the step as service account "
        f"{SERVICE_ACCOUNT!r}")


def api_client():
    """A kubernetes ApiClient: the pod's service account, else the user's kubeconfig."""
    from kubernetes import client, config
    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            # KUBECONFIG as it is now (the client reads it once, at import)
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)
        except (config.ConfigException, OSError) as err:
            raise LaunchError(f"no Kubernetes credentials: not in a pod and no usable kubeconfig ({err})") from None
    return client.ApiClient()


def current_namespace(job: PretrainJob | None = None) -> str:
    if job is not None and job.namespace:
        return job.namespace
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        return Path(SA_NAMESPACE_FILE).read_text().strip() or "default"
    except OSError:
        return "default"


def unique_name(base: str, workers: int) -> str:
    """`base-xxxxxx` (6 random base-36 characters), shortened so the pod names stay DNS labels."""
    suffix = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(6))
    room = 63 - len("-worker-") - len(str(max(workers - 1, 0))) - len(suffix) - 1
    name = f"{base[:room].rstrip('-')}-{suffix}"
    problem = job_name_problem(name, workers)
    if problem:
        raise LaunchError(problem)
    return name


def step_pod(core, namespace: str, env: dict | None = None) -> tuple[str | None, str | None, object | None]:
    """(name, uid, pod) of the pod this code runs in; (None, None, None) when not in a pod.

    The pod is named by the downward API (POD_NAME/POD_UID, as the CronJob sets them), by KFP's own
    KFP_POD_NAME/KFP_POD_UID, or, inside a cluster, by HOSTNAME (a pod's hostname is its name). `pod`
    is the V1Pod read from the API (its service account, volumes and images), None if it is not there.
    """
    from kubernetes.client import ApiException

    env = os.environ if env is None else env
    name = env.get("POD_NAME") or env.get("KFP_POD_NAME")
    uid = env.get("POD_UID") or env.get("KFP_POD_UID")
    guessed = False
    if not name and env.get("KUBERNETES_SERVICE_HOST") and env.get("HOSTNAME"):
        name, uid, guessed = env["HOSTNAME"], None, True
    if not name:
        return None, None, None
    try:
        pod = core.read_namespaced_pod(name, namespace)
    except ApiException as err:
        if err.status == 403:
            raise permission_error(err, "get", "", "pods", namespace) from None
        if err.status == 404 and guessed:
            return None, None, None
        if err.status == 404 and uid:
            return name, uid, None
        raise LaunchError(f"cannot read this step's pod {namespace}/{name}: {err.status} {err.reason}") from None
    return name, uid or pod.metadata.uid, pod


def owner_reference(core, namespace: str, env: dict | None = None) -> dict | None:
    """An ownerReference to the pod this code runs in, or None when not in a pod.

    No blockOwnerDeletion: setting it needs 'update' on pods/finalizers, which the Role does not grant.
    """
    name, uid, _ = step_pod(core, namespace, env)
    return _owner(name, uid)


def _owner(name: str | None, uid: str | None) -> dict | None:
    if not name:
        return None
    return {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid, "controller": False}


def inherit_from_pod(job: PretrainJob, pod, log: Callable[[str], None]) -> PretrainJob:
    """The job with the step pod's identity where the job leaves it open.

    - its service account (Workload Identity is bound to one, e.g. `default-editor` under Kubeflow),
    - the Secrets mounted at GCS_KEY_DIR (a gs:// key) and MINIO_SECRET_DIR (KFP's MinIO keys), if any,
    - its image pull secrets (a private registry).
    And a check: a job still on the default registry while this pod runs from another one means the
    manifests were pointed at a registry with a kustomize `images:` override, which does not reach the
    job spec; that is refused rather than left to fail as ImagePullBackOff on every worker.
    """
    spec = pod.spec
    update: dict = {}
    if job.service_account is None and spec.service_account_name:
        update["service_account"] = spec.service_account_name
    if job.image_pull_secrets is None and spec.image_pull_secrets:
        update["image_pull_secrets"] = [ref.name for ref in spec.image_pull_secrets]
    for field, mount_path in (("gcs_credentials_secret", GCS_KEY_DIR), ("minio_secret", MINIO_SECRET_DIR)):
        if getattr(job, field) is not None:
            continue
        mounted = {m.name for c in spec.containers for m in (c.volume_mounts or [])
                   if m.mount_path.rstrip("/") == mount_path}
        for volume in spec.volumes or []:
            if volume.name in mounted and volume.secret is not None:
                update[field] = volume.secret.secret_name
    own = [images.registry_of(c.image) for c in spec.containers if images.registry_of(c.image)]
    if own and images.registry_of(job.image) == images.DEFAULT_REGISTRY and own[0] != images.DEFAULT_REGISTRY:
        raise LaunchError(f"the job's image {job.image} is on the default registry but this pod runs from "
                          f"{own[0]}: re-render the manifests with `make manifests REGISTRY=... TAG=...` "
                          f"(a kustomize images: override does not reach the job spec)")
    if update:
        log("launcher: from this pod: " + ", ".join(f"{k}={v}" for k, v in update.items()))
        job = job.model_copy(update=update)
    return job


def output_label(location: str) -> str:
    return hashlib.sha256(location.encode()).hexdigest()[:16]


def _pod_alive(core, namespace: str, name: str) -> bool:
    from kubernetes.client import ApiException
    try:
        pod = core.read_namespaced_pod(name, namespace)
    except ApiException as err:
        if err.status == 404:
            return False
        raise
    return ((pod.status.phase if pod.status else None) or "Pending") in ("Pending", "Running")


def stop_orphaned_writers(call, custom, core, namespace: str, location: str, log: Callable[[str], None]) -> None:
    """Before a new MPIJob writes `location`: an unfinished one that writes it too is either an orphan
    (the step or CronJob pod that created it has ended: a cancelled run, a retried step) and is
    deleted, or still has a live creator, and then this launch is refused: two jobs would write the
    same checkpoints."""
    value = output_label(location)
    found = call("list", GROUP, PLURAL, custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL,
                 label_selector=f"{OUTPUT_LABEL}={value}")
    for other in found.get("items", []):
        meta = other.get("metadata") or {}
        if (meta.get("labels") or {}).get(OUTPUT_LABEL) != value:
            continue  # a selector the server ignored
        if _condition(other, "Succeeded") or _condition(other, "Failed"):
            continue
        owners = [ref["name"] for ref in meta.get("ownerReferences") or [] if ref.get("kind") == "Pod"]
        live = [pod for pod in owners if call("get", "", "pods", _pod_alive, core, namespace, pod)]
        if live or not owners:
            who = f"started by the running pod {live[0]}" if live else "not owned by a pod"
            raise LaunchError(f"MPIJob {meta.get('name')} ({who}) is still writing {location}; wait for it or "
                              f"delete it: kubectl delete mpijob -n {namespace} {meta.get('name')}")
        log(f"launcher: deleting MPIJob {meta.get('name')}: it writes {location} too and its pod {owners[0]} "
            f"has ended")
        _delete(custom, namespace, meta["name"], log)


def _condition(obj: dict, kind: str) -> dict | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind and str(cond.get("status")) == "True":
            return cond
    return None


class _LogFollower:
    """Streams one pod's log into `log`, line by line, on a daemon thread."""

    def __init__(self, core, namespace: str, pod: str, log: Callable[[str], None], follow: bool):
        self.core, self.namespace, self.pod, self.log, self.follow = core, namespace, pod, log, follow
        self.error: Exception | None = None
        self.thread = threading.Thread(target=self._run, name=f"log-{pod}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            resp = self.core.read_namespaced_pod_log(self.pod, self.namespace, follow=self.follow,
                                                     _preload_content=False)
            pending = b""
            for chunk in resp.stream(4096):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    self.log(f"[{self.pod}] {line.decode('utf-8', 'replace')}")
            if pending:
                self.log(f"[{self.pod}] {pending.decode('utf-8', 'replace')}")
        except Exception as err:  # reported by the main loop, never lost on this thread
            self.error = err

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)


def _launcher_pod(core, namespace: str, name: str) -> tuple[str, str] | None:
    """(pod name, phase) of the job's newest launcher pod, or None."""
    selector = f"{JOB_NAME_LABEL}={name},{JOB_ROLE_LABEL}=launcher"
    pods = core.list_namespaced_pod(namespace, label_selector=selector).items
    # Filter again on our side: a selector the server ignored must not pick another job's pod.
    pods = [p for p in pods if (p.metadata.labels or {}).get(JOB_NAME_LABEL) == name
            and (p.metadata.labels or {}).get(JOB_ROLE_LABEL) == "launcher"]
    if not pods:
        return None
    pod = max(pods, key=lambda p: (p.metadata.creation_timestamp is not None, p.metadata.creation_timestamp
                                   or 0, p.metadata.name))
    return pod.metadata.name, (pod.status.phase if pod.status else None) or "Pending"


def launch(job: PretrainJob, *, api=None, namespace: str | None = None, timeout_seconds: float | None = None,
           poll_seconds: float = 10.0, log: Callable[[str], None] | None = None,
           unique_output_dir: bool = False, cancel: threading.Event | None = None,
           handle_sigterm: bool = True) -> str:
    """Create the MPIJob, wait for its end, stream its launcher's log; return the checkpoint location."""
    from kubernetes import client
    from kubernetes.client import ApiException

    log = log or (lambda line: print(line, flush=True))
    api = api or api_client()
    custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
    namespace = namespace or current_namespace(job)
    name = unique_name(job.name, job.workers)
    pod_name, pod_uid, pod = step_pod(core, namespace)
    if pod is not None:
        job = inherit_from_pod(job, pod, log)
    elif pod_name:
        log(f"launcher: pod {pod_name} is not in the API: the MPIJob inherits no service account or secrets")
    if unique_output_dir:
        flags = dict(job.pretrain_flags)
        flags["output_dir"] = f"{str(flags['output_dir']).rstrip('/')}/{name}"
        job = job.model_copy(update={"pretrain_flags": flags})
    job = PretrainJob.model_validate(job.model_dump())
    manifest = render(job, name)
    manifest["metadata"]["namespace"] = namespace
    manifest["metadata"]["labels"][OUTPUT_LABEL] = output_label(job.checkpoint_location)
    owner = _owner(pod_name, pod_uid)
    if owner:
        manifest["metadata"]["ownerReferences"] = [owner]
    else:
        log(f"launcher: not in a pod (no POD_NAME, KFP_POD_NAME or pod HOSTNAME): MPIJob {name} has no "
            f"owner; it is deleted on cancel or timeout only")

    cancel = cancel or threading.Event()
    previous = None
    if handle_sigterm and threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: cancel.set())

    def call(verb: str, group: str, resource: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ApiException as err:
            if err.status == 403:
                raise permission_error(err, verb, group, resource, namespace) from None
            if err.status == 404 and verb in ("create", "list") and resource == PLURAL:
                raise LaunchError(f"the MPIJob API ({GROUP}/{VERSION}) is not served in this cluster: "
                                  f"install mpi-operator (docs/cluster.md)") from None
            raise

    created = False
    done = False
    follower: _LogFollower | None = None
    try:
        stop_orphaned_writers(call, custom, core, namespace, job.checkpoint_location, log)
        call("create", GROUP, PLURAL, custom.create_namespaced_custom_object,
             GROUP, VERSION, namespace, PLURAL, manifest)
        created = True
        log(f"launcher: created MPIJob {namespace}/{name}: {job.workers} worker(s) x {job.gpus_per_worker} "
            f"GPU(s); checkpoints -> {job.checkpoint_location}")
        deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
        seen: set[str] = set()
        while True:
            obj = call("get", GROUP, PLURAL, custom.get_namespaced_custom_object,
                       GROUP, VERSION, namespace, PLURAL, name)
            for cond in (obj.get("status") or {}).get("conditions") or []:
                key = f"{cond.get('type')}={cond.get('status')}"
                if key not in seen and str(cond.get("status")) == "True":
                    seen.add(key)
                    log(f"launcher: MPIJob {name}: {cond.get('type')}"
                        + (f" ({cond.get('reason')})" if cond.get("reason") else ""))
            finished = _condition(obj, "Succeeded") or _condition(obj, "Failed")
            pod = call("list", "", "pods", _launcher_pod, core, namespace, name)
            if pod and (follower is None or follower.pod != pod[0]) and pod[1] in ("Running", "Succeeded",
                                                                                  "Failed"):
                if follower is not None:
                    follower.join(5)
                follower = _LogFollower(core, namespace, pod[0], log, follow=not finished)
            if finished:
                done = True
                if follower is not None:
                    follower.join(60)
                    if follower.error is not None:
                        _report_log_error(follower.error, namespace, log)
                succeeded = _condition(obj, "Succeeded")
                if succeeded:
                    log(f"launcher: MPIJob {name} succeeded; checkpoints at {job.checkpoint_location}")
                    return job.checkpoint_location
                failed = _condition(obj, "Failed")
                raise MPIJobFailed(name, failed.get("reason") or "Failed",
                                   (failed.get("message") or "no message").replace("\n", " "))
            if follower is not None and follower.error is not None:
                _report_log_error(follower.error, namespace, log)
            if deadline is not None and time.monotonic() >= deadline:
                raise MPIJobTimeout(f"MPIJob {name} did not finish within {timeout_seconds:g} s; deleted it")
            wait = poll_seconds if deadline is None else max(0.0, min(poll_seconds, deadline - time.monotonic()))
            if cancel.wait(wait):
                raise Cancelled(f"cancelled: deleted MPIJob {name}")
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if created and not done:
            _delete(custom, namespace, name, log)


def _report_log_error(err: Exception, namespace: str, log: Callable[[str], None]) -> None:
    status = getattr(err, "status", None)
    if status == 403:
        raise permission_error(err, "get", "", "pods/log", namespace)
    log(f"launcher: could not stream the launcher's log: {type(err).__name__}: {err}".splitlines()[0])


def _delete(custom, namespace: str, name: str, log: Callable[[str], None]) -> None:
    from kubernetes.client import ApiException
    try:
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                               propagation_policy="Background")
        log(f"launcher: deleted MPIJob {namespace}/{name}")
    except ApiException as err:
        if err.status != 404:
            log(f"launcher: could not delete MPIJob {namespace}/{name}: {err.status} {err.reason}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.launcher",
                                     description="Run a pretraining MPIJob to its end (the CronJob's command)")
    parser.add_argument("--spec", required=True, help="YAML or JSON of components.mpijob.PretrainJob")
    parser.add_argument("--namespace", default=None, help="default: the pod's namespace")
    parser.add_argument("--timeout", type=float, default=None, help="seconds; then the MPIJob is deleted")
    parser.add_argument("--poll", type=float, default=10.0, help="seconds between status checks")
    parser.add_argument("--unique_output_dir", action="store_true",
                        help="write checkpoints under <output_dir>/<unique job name>")
    parser.add_argument("--location_file", default=None,
                        help="also write the model directory's location here (the CronJob's publish step reads it)")
    args = parser.parse_args(argv)
    try:
        import yaml
        try:
            data = yaml.safe_load(Path(args.spec).read_text())
        except OSError as err:
            raise UserError(f"{args.spec}: cannot read: {err.strerror}") from None
        except yaml.YAMLError as err:
            raise UserError(f"{args.spec}: not YAML: {str(err).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise UserError(f"{args.spec}: expected a mapping of PretrainJob fields")
        job = load_job(data, args.spec)
        location = launch(job, namespace=args.namespace, timeout_seconds=args.timeout, poll_seconds=args.poll,
                          unique_output_dir=args.unique_output_dir)
    except UserError as err:
        print(f"launcher: error: {err}", file=sys.stderr)
        return err.exit_code
    print(location)
    if args.location_file:
        Path(args.location_file).write_text(location + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
