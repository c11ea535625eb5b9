"""The launcher step against an in-memory Kubernetes API (kmock's KubernetesEmulator on loopback, started
here on its own event-loop thread). A small fake operator plays mpi-operator: it sees the MPIJob, creates
the launcher pod with its log and sets status conditions. kmock answers create with 200, not 201.

Covers: success (owner, unique name, log streamed, location returned), failure with the condition's
reason, timeout and cancellation (both delete the MPIJob), and a 403 that names the missing permission."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest
import yaml

kmock = pytest.importorskip("kmock")
from kubernetes import client  # noqa: E402

from components import launcher  # noqa: E402
from components.launcher import Cancelled, MPIJobFailed, MPIJobTimeout, PermissionDenied, launch  # noqa: E402
from components.mpijob import GROUP, PLURAL, VERSION, PretrainJob  # noqa: E402
from k8s_validation import CRD_PATH, mpijob_problems  # noqa: E402

NS = "team-a"
FLAGS = {"input_file": "gs://b/data/*.tfrecord", "output_dir": "gs://b/pretrain", "do_train": True,
         "model": "bert-mini"}


class FakeCluster:
    """kmock's Kubernetes emulator served on 127.0.0.1 from a background event loop."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="kmock", daemon=True)
        self.thread.start()
        self.run(self._start())
        cfg = client.Configuration()
        cfg.host = self.url
        self.api = client.ApiClient(cfg)
        self.custom = client.CustomObjectsApi(self.api)
        self.core = client.CoreV1Api(self.api)

    def run(self, coro, timeout=10):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self):
        self.kmock = kmock.KubernetesEmulator()
        # the resources a real cluster with mpi-operator serves, listed even while empty
        self.kmock.resources[f"{GROUP}/{VERSION}/{PLURAL}"] = {}
        self.kmock.resources["v1/pods"] = {}
        await self.kmock.__aenter__()
        self.server = kmock.Server(self.kmock)
        await self.server.__aenter__()
        self.url = str(self.server.url).rstrip("/")

    async def _stop(self):
        await self.server.__aexit__(None, None, None)
        await self.kmock.__aexit__(None, None, None)

    def close(self):
        self.run(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.api.close()

    def react(self, criteria, *payloads):
        async def add():
            view = self.kmock[criteria]
            for p in payloads:
                view = view << p
        self.run(add())

    def mpijobs(self) -> list[dict]:
        return self.custom.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)["items"]

    def exists(self, name: str) -> bool:
        try:
            self.custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name)
            return True
        except client.ApiException as err:
            assert err.status == 404
            return False


class FakeOperator(threading.Thread):
    """Plays mpi-operator for the first MPIJob that appears: a launcher pod with a log, then conditions."""

    def __init__(self, cluster: FakeCluster, outcome: str | None, log: bytes = b"", delay: float = 0.2,
                 log_status: int = 200, ignore: frozenset = frozenset()):
        super().__init__(daemon=True)
        self.cluster, self.outcome, self.log, self.delay = cluster, outcome, log, delay
        self.log_status, self.ignore = log_status, ignore
        self.job: dict | None = None
        self.running = threading.Event()
        self.start()

    def run(self):
        c = self.cluster
        deadline = time.monotonic() + 10
        while not self._new(c) and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self._new(c):
            return
        self.job = self._new(c)[0]
        name = self.job["metadata"]["name"]
        pod = f"{name}-launcher-x7k2p"
        if self.log_status == 200:
            c.react(f"get /api/v1/namespaces/{NS}/pods/{pod}/log", self.log)
        else:
            c.react(f"get /api/v1/namespaces/{NS}/pods/{pod}/log", self.log_status,
                    {"kind": "Status", "code": self.log_status, "reason": "Forbidden", "message": "no"})
        # a pod of another job first: the launcher must not stream it
        c.core.create_namespaced_pod(NS, self._pod(f"decoy-{name}", "decoy", phase="Running"))
        c.core.create_namespaced_pod(NS, self._pod(pod, name, phase="Running"))
        self._conditions(name, [("Created", "MPIJobCreated"), ("Running", "MPIJobRunning")])
        self.running.set()
        if self.outcome is None:
            return
        time.sleep(self.delay)
        if self.outcome == "Succeeded":
            self._conditions(name, [("Created", "MPIJobCreated"), ("Running", "MPIJobRunning", "False"),
                                    ("Succeeded", "MPIJobSucceeded", "True", "MPIJob team-a/x successfully completed.")])
        else:
            self._conditions(name, [("Created", "MPIJobCreated"), ("Running", "MPIJobRunning", "False"),
                                    ("Failed", "BackoffLimitExceeded", "True",
                                     "launcher exited with code 1:\nrank 3: NCCL error")])

    def _new(self, cluster: FakeCluster) -> list[dict]:
        return [j for j in cluster.mpijobs() if j["metadata"]["name"] not in self.ignore]

    @staticmethod
    def _pod(pod: str, job: str, phase: str) -> dict:
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod, "namespace": NS, "labels": {
                    "training.kubeflow.org/job-name": job, "training.kubeflow.org/job-role": "launcher"}},
                "spec": {"containers": [{"name": "launcher", "image": "x"}]},
                "status": {"phase": phase}}

    def _conditions(self, name, conds):
        body = {"status": {"conditions": [
            {"type": c[0], "reason": c[1], "status": c[2] if len(c) > 2 else "True",
             **({"message": c[3]} if len(c) > 3 else {})} for c in conds]}}
        self.cluster.custom.patch_namespaced_custom_object_status(GROUP, VERSION, NS, PLURAL, name, body)


@pytest.fixture()
def cluster():
    c = FakeCluster()
    yield c
    c.close()


@pytest.fixture()
def in_pod(monkeypatch):
    monkeypatch.setenv("POD_NAME", "pipeline-step-abc")
    monkeypatch.setenv("POD_UID", "1b6f3c2e-0000-4000-8000-000000000001")
    monkeypatch.setenv("POD_NAMESPACE", NS)


def _job(**kw) -> PretrainJob:
    return PretrainJob(workers=2, gpus_per_worker=4, pretrain_flags=dict(FLAGS), **kw)


def test_success_streams_the_log_and_returns_the_checkpoint_location(cluster, in_pod):
    lines: list[str] = []
    op = FakeOperator(cluster, "Succeeded", log=b"step 100 loss 7.1\nstep 200 loss 6.4\nsaved ckpt-200")
    location = launch(_job(), api=cluster.api, poll_seconds=0.05, timeout_seconds=20, log=lines.append)
    op.join(5)
    assert location == "gs://b/pretrain"

    created = op.job
    name = created["metadata"]["name"]
    assert name.startswith("bert-pretrain-") and name != "bert-pretrain"
    assert created["metadata"]["namespace"] == NS
    assert created["metadata"]["ownerReferences"] == [{
        "apiVersion": "v1", "kind": "Pod", "name": "pipeline-step-abc",
        "uid": "1b6f3c2e-0000-4000-8000-000000000001", "controller": False}]
    if CRD_PATH.exists():
        sent = {k: v for k, v in created.items() if k != "status"}
        assert mpijob_problems(sent) == []
    pod_lines = [line for line in lines if line.startswith(f"[{name}-launcher")]
    assert [line.split("] ", 1)[1] for line in pod_lines] == ["step 100 loss 7.1", "step 200 loss 6.4",
                                                              "saved ckpt-200"]
    assert not any("decoy" in line for line in lines)
    assert any("Succeeded" in line for line in lines)
    assert cluster.exists(name), "a finished job stays for inspection (runPolicy's TTL removes it)"


def test_names_are_unique_per_run_and_the_owner_uid_can_come_from_the_api(cluster, monkeypatch):
    monkeypatch.setenv("POD_NAME", "cron-step-1")
    monkeypatch.delenv("POD_UID", raising=False)
    cluster.core.create_namespaced_pod(NS, {"apiVersion": "v1", "kind": "Pod",
                                            "metadata": {"name": "cron-step-1", "namespace": NS, "uid": "u-42"},
                                            "spec": {"containers": [{"name": "c", "image": "x"}]}})
    names = set()
    for _ in range(2):
        op = FakeOperator(cluster, "Succeeded")
        launch(_job(), api=cluster.api, namespace=NS, poll_seconds=0.05, timeout_seconds=20, log=lambda _: None,
               unique_output_dir=True)
        op.join(5)
        names.add(op.job["metadata"]["name"])
        assert op.job["metadata"]["ownerReferences"][0]["uid"] == "u-42"
        flags = op.job["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]["command"]
        assert f"--output_dir=gs://b/pretrain/{op.job['metadata']['name']}" in flags
        for job in cluster.mpijobs():  # let the next FakeOperator see only the next job
            cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, job["metadata"]["name"])
    assert len(names) == 2


def test_owner_from_kfps_env_or_the_pods_hostname(cluster):
    from components.launcher import owner_reference
    kfp = {"KFP_POD_NAME": "bert-pipeline-x-system-container-impl-1", "KFP_POD_UID": "uid-kfp"}
    assert owner_reference(cluster.core, NS, kfp)["uid"] == "uid-kfp"
    cluster.core.create_namespaced_pod(NS, {"apiVersion": "v1", "kind": "Pod",
                                            "metadata": {"name": "step-pod", "namespace": NS, "uid": "uid-host"},
                                            "spec": {"containers": [{"name": "c", "image": "x"}]}})
    in_cluster = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "HOSTNAME": "step-pod"}
    assert owner_reference(cluster.core, NS, in_cluster)["uid"] == "uid-host"
    assert owner_reference(cluster.core, NS, {**in_cluster, "HOSTNAME": "not-a-pod"}) is None
    assert owner_reference(cluster.core, NS, {"HOSTNAME": "laptop"}) is None


def test_failure_raises_the_conditions_reason_and_message_in_one_line(cluster, in_pod):
    FakeOperator(cluster, "Failed", log=b"Traceback ...\nRuntimeError: NCCL error\n")
    lines: list[str] = []
    with pytest.raises(MPIJobFailed) as err:
        launch(_job(), api=cluster.api, poll_seconds=0.05, timeout_seconds=20, log=lines.append)
    assert err.value.reason == "BackoffLimitExceeded"
    text = str(err.value)
    assert "BackoffLimitExceeded" in text and "rank 3: NCCL error" in text and "\n" not in text
    assert any(line.endswith("RuntimeError: NCCL error") for line in lines), "the log is streamed on failure too"


def test_timeout_deletes_the_mpijob(cluster, in_pod):
    op = FakeOperator(cluster, None)  # runs forever
    started = time.monotonic()
    with pytest.raises(MPIJobTimeout, match="did not finish within 1.5 s"):
        launch(_job(), api=cluster.api, poll_seconds=0.1, timeout_seconds=1.5, log=lambda _: None)
    assert time.monotonic() - started < 6
    op.join(5)
    assert not cluster.exists(op.job["metadata"]["name"])


def test_sigterm_cancels_and_deletes_the_mpijob(cluster, in_pod):
    op = FakeOperator(cluster, None)
    seen_before = signal.getsignal(signal.SIGTERM)

    def terminate():
        op.running.wait(10)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=terminate, daemon=True).start()
    with pytest.raises(Cancelled) as err:
        launch(_job(), api=cluster.api, poll_seconds=5.0, timeout_seconds=60, log=lambda _: None)
    assert err.value.exit_code == 143
    assert not cluster.exists(op.job["metadata"]["name"])
    assert signal.getsignal(signal.SIGTERM) == seen_before, "the step's own SIGTERM handler is restored"


def test_cancel_event_from_a_caller(cluster, in_pod):
    op = FakeOperator(cluster, None)
    cancel = threading.Event()
    threading.Thread(target=lambda: (op.running.wait(10), cancel.set()), daemon=True).start()
    with pytest.raises(Cancelled):
        launch(_job(), api=cluster.api, poll_seconds=5.0, log=lambda _: None, cancel=cancel, handle_sigterm=False)
    assert not cluster.exists(op.job["metadata"]["name"])


def test_403_names_the_missing_permission_in_one_line(cluster, in_pod):
    cluster.react(kmock.method.POST, 403, {
        "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
        "message": f'mpijobs.kubeflow.org is forbidden: User "system:serviceaccount:{NS}:pipeline-runner" '
                   f'cannot create resource "mpijobs" in API group "kubeflow.org" in the namespace "{NS}"'})
    with pytest.raises(PermissionDenied) as err:
        launch(_job(), api=cluster.api, poll_seconds=0.05, timeout_seconds=5, log=lambda _: None)
    text = str(err.value)
    assert "\n" not in text
    assert f"system:serviceaccount:{NS}:pipeline-runner cannot create mpijobs.kubeflow.org" in text
    assert launcher.ROLE_NAME in text and launcher.SERVICE_ACCOUNT in text


def test_403_on_the_log_names_pods_log(cluster, in_pod):
    FakeOperator(cluster, None, log_status=403)
    with pytest.raises(PermissionDenied, match="cannot get pods/log"):
        launch(_job(), api=cluster.api, poll_seconds=0.05, timeout_seconds=10, log=lambda _: None)


def test_missing_crd_is_one_line(cluster, in_pod):
    cluster.react(kmock.method.POST, 404, {"kind": "Status", "code": 404, "reason": "NotFound",
                                           "message": "the server could not find the requested resource"})
    with pytest.raises(launcher.LaunchError, match="install mpi-operator"):
        launch(_job(), api=cluster.api, log=lambda _: None)


def test_command_line_runs_a_spec_file_with_a_kubeconfig(cluster, in_pod, tmp_path, monkeypatch, capsys):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
        "clusters": [{"name": "kmock", "cluster": {"server": cluster.url}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "u", "namespace": NS}}]}))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump(_job().model_dump(mode="json")))
    op = FakeOperator(cluster, "Succeeded", log=b"done\n")
    code = launcher.main(["--spec", str(spec), "--timeout", "20", "--poll", "0.05", "--unique_output_dir"])
    op.join(5)
    captured = capsys.readouterr()
    out = captured.out.strip().splitlines()
    assert code == 0, captured.err
    assert out[-1] == f"gs://b/pretrain/{op.job['metadata']['name']}"


def test_command_line_bad_spec_is_one_line(tmp_path, capsys):
    spec = tmp_path / "job.yaml"
    spec.write_text("workers: 2\npretrain_flags: {output_dir: gs://b/o}\n")
    assert launcher.main(["--spec", str(spec)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"launcher: error: {spec}: ") and "\n" not in err
    assert launcher.main(["--spec", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def _step_pod(name: str, image: str, service_account: str | None = None, key_secret: str | None = None,
              pull_secret: str | None = None, minio_secret: str | None = None) -> dict:
    from bert_core.storage_s3 import MINIO_SECRET_DIR

    container = {"name": "main", "image": image, "volumeMounts": []}
    spec: dict = {"containers": [container], "volumes": []}
    if pull_secret:
        spec["imagePullSecrets"] = [{"name": pull_secret}]
    if service_account:
        spec["serviceAccountName"] = service_account
    for volume, secret, path in (("key", key_secret, "/var/secrets/google"), ("minio", minio_secret, MINIO_SECRET_DIR)):
        if secret:
            spec["volumes"].append({"name": volume, "secret": {"secretName": secret}})
            container["volumeMounts"].append({"name": volume, "mountPath": path, "readOnly": True})
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS, "uid": "u-7"},
            "spec": spec}


def _pod_specs(mpijob: dict) -> list[dict]:
    return [r["template"]["spec"] for r in mpijob["spec"]["mpiReplicaSpecs"].values()]


def test_the_mpijob_runs_as_the_step_pods_service_account_with_its_key(cluster, monkeypatch):
    """Workload Identity is bound to the run's service account (default-editor under Kubeflow), and a key
    Secret mounted into the step (kfp.kubernetes.use_secret_as_volume) must reach the ranks too."""
    image = "registry.example.com/ml/bert-pretrain:v7"
    monkeypatch.setenv("KFP_POD_NAME", "step-1")
    cluster.core.create_namespaced_pod(NS, _step_pod("step-1", image, "default-editor", "gcp-sa-key", "regcred"))
    op = FakeOperator(cluster, "Succeeded")
    launch(_job(image=image), api=cluster.api, namespace=NS, poll_seconds=0.05, timeout_seconds=20,
           log=lambda _: None)
    op.join(5)
    assert op.job["metadata"]["ownerReferences"][0]["uid"] == "u-7"
    for pod in _pod_specs(op.job):
        assert pod["serviceAccountName"] == "default-editor"
        assert pod["imagePullSecrets"] == [{"name": "regcred"}], "the same private registry"
        assert {"name": "gcp-key", "secret": {"secretName": "gcp-sa-key"}} in pod["volumes"]
        env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
        assert env["GOOGLE_APPLICATION_CREDENTIALS"] == "/var/secrets/google/key.json"
    if CRD_PATH.exists():
        assert mpijob_problems({k: v for k, v in op.job.items() if k != "status"}) == []


def test_the_mpijob_gets_the_step_pods_minio_keys(cluster, monkeypatch):
    """KFP's MinIO Secret mounted into the step (build_pipeline(minio_secret=...)) reaches every rank
    at the path bert_core.storage_s3 reads minio:// keys from."""
    from bert_core.storage_s3 import MINIO_SECRET_DIR

    monkeypatch.setenv("KFP_POD_NAME", "step-3")
    cluster.core.create_namespaced_pod(NS, _step_pod("step-3", _job().image, minio_secret="mlpipeline-minio-artifact"))
    op = FakeOperator(cluster, "Succeeded")
    launch(_job(), api=cluster.api, namespace=NS, poll_seconds=0.05, timeout_seconds=20, log=lambda _: None)
    op.join(5)
    for pod in _pod_specs(op.job):
        assert {"name": "minio-keys", "secret": {"secretName": "mlpipeline-minio-artifact"}} in pod["volumes"]
        assert {"name": "minio-keys", "mountPath": MINIO_SECRET_DIR, "readOnly": True} in \
            pod["containers"][0]["volumeMounts"]
    if CRD_PATH.exists():
        assert mpijob_problems({k: v for k, v in op.job.items() if k != "status"}) == []


def test_the_jobs_own_service_account_wins(cluster, monkeypatch):
    monkeypatch.setenv("KFP_POD_NAME", "step-2")
    cluster.core.create_namespaced_pod(NS, _step_pod("step-2", _job().image, "default-editor"))
    op = FakeOperator(cluster, "Succeeded")
    launch(_job(service_account="trainer"), api=cluster.api, namespace=NS, poll_seconds=0.05,
           timeout_seconds=20, log=lambda _: None)
    op.join(5)
    assert {pod["serviceAccountName"] for pod in _pod_specs(op.job)} == {"trainer"}


def test_a_job_on_the_default_registry_from_a_retagged_launcher_is_refused(cluster, monkeypatch):
    """kustomize `images:` rewrites the CronJob's image, not the image inside the job spec it reads."""
    from components import images
    monkeypatch.setenv("POD_NAME", "cron-3")
    monkeypatch.setenv("POD_NAMESPACE", NS)
    cluster.core.create_namespaced_pod(NS, _step_pod("cron-3", "registry.example.com/ml/bert-launcher:0.1.0"))
    job = _job(image=f"{images.DEFAULT_REGISTRY}/bert-pretrain:0.1.0")
    with pytest.raises(launcher.LaunchError, match=r"re-render the manifests with `make manifests REGISTRY"):
        launch(job, api=cluster.api, poll_seconds=0.05, timeout_seconds=5, log=lambda _: None)
    assert cluster.mpijobs() == []


def test_the_launcher_uses_exactly_the_permissions_it_asks_for(cluster, monkeypatch):
    """Every API call of a success and of a timeout, as (group, resource, verb): REQUIRED_PERMISSIONS and
    the Role rendered from it grant these and nothing else."""
    monkeypatch.setenv("KFP_POD_NAME", "step-4")
    cluster.core.create_namespaced_pod(NS, _step_pod("step-4", _job().image, "default-editor"))
    cfg = client.Configuration()
    cfg.host = cluster.url
    api = client.ApiClient(cfg, header_name="X-Caller", header_value="launcher")
    op = FakeOperator(cluster, "Succeeded", log=b"done\n")
    launch(_job(), api=api, namespace=NS, poll_seconds=0.05, timeout_seconds=20, log=lambda _: None)
    op.join(5)
    for job in cluster.mpijobs():
        cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, job["metadata"]["name"])
    FakeOperator(cluster, None)
    with pytest.raises(MPIJobTimeout):
        launch(_job(), api=api, namespace=NS, poll_seconds=0.05, timeout_seconds=1, log=lambda _: None)
    api.close()
    verbs = {"FETCH": "get", "LIST": "list", "WATCH": "watch", "CREATE": "create", "UPDATE": "patch",
             "DELETE": "delete"}
    used = {(r.resource.group or "", r.resource.plural + (f"/{r.subresource}" if r.subresource else ""),
             verbs[r.action.name])
            for r in list(cluster.kmock) if r.headers.get("X-Caller") == "launcher"}
    granted = {(g, res, v) for g, res, vs in launcher.REQUIRED_PERMISSIONS for v in vs}
    assert used == granted


def _earlier_job(cluster, owner_pod: str, owner_phase: str | None, output: str = FLAGS["output_dir"]) -> str:
    """An unfinished MPIJob that an earlier launch created for `output`, owned by `owner_pod`."""
    from components.mpijob import render
    name = "bert-pretrain-old001"
    manifest = render(_job(), name)
    manifest["metadata"].update(namespace=NS, ownerReferences=[
        {"apiVersion": "v1", "kind": "Pod", "name": owner_pod, "uid": "u-old", "controller": False}])
    manifest["metadata"]["labels"][launcher.OUTPUT_LABEL] = launcher.output_label(output)
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, manifest)
    if owner_phase is not None:
        pod = _step_pod(owner_pod, _job().image)
        pod["status"] = {"phase": owner_phase}
        cluster.core.create_namespaced_pod(NS, pod)
    return name


@pytest.mark.parametrize("phase", ["Failed", "Succeeded", None])
def test_an_orphaned_job_writing_the_same_output_is_deleted_first(cluster, in_pod, phase):
    """A cancelled run or a retried step left its MPIJob behind: its pod has ended (or is gone)."""
    old = _earlier_job(cluster, "old-step", phase)
    lines: list[str] = []
    op = FakeOperator(cluster, "Succeeded", ignore=frozenset({old}))
    launch(_job(), api=cluster.api, poll_seconds=0.05, timeout_seconds=20, log=lines.append)
    op.join(5)
    assert not cluster.exists(old)
    assert any(f"deleting MPIJob {old}" in line for line in lines)
    assert op.job["metadata"]["name"] != old


def test_a_job_whose_creator_still_runs_blocks_a_second_writer(cluster, in_pod):
    old = _earlier_job(cluster, "live-step", "Running")
    with pytest.raises(launcher.LaunchError, match=f"MPIJob {old} .*still writing gs://b/pretrain") as err:
        launch(_job(), api=cluster.api, poll_seconds=0.05, timeout_seconds=5, log=lambda _: None)
    assert "\n" not in str(err.value)
    assert [j["metadata"]["name"] for j in cluster.mpijobs()] == [old]
    # another output is no conflict (no operator here: the timeout shows the job was created)
    with pytest.raises(MPIJobTimeout):
        other = PretrainJob(workers=2, gpus_per_worker=4, pretrain_flags={**FLAGS, "output_dir": "gs://b/other"})
        launch(other, api=cluster.api, poll_seconds=0.05, timeout_seconds=0.3, log=lambda _: None)
