"""The MPIJob renderer: every manifest passes the MPIJob CRD's schema and mpi-operator's own rules, and
says what a Horovod job on AMD GPUs needs (slots = GPUs, amd.com/gpu, /dev/shm, RCCL env forwarded by
mpirun, a `bert pretrain` command the real CLI accepts)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pydantic
import pytest

from bert_core.errors import UserError
from components import mpijob
from components.mpijob import PretrainJob, PvcStorage, RcclEnv, RunPolicy, load_job, render
from k8s_validation import CRD_PATH, mpijob_problems

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not CRD_PATH.exists(), reason=f"the MPIJob CRD is not at {CRD_PATH}")

GS = {"input_file": "gs://b/data/train-*.tfrecord", "output_dir": "gs://b/out", "do_train": True,
      "model": "bert-base"}


def job(**kw) -> PretrainJob:
    kw.setdefault("pretrain_flags", dict(GS))
    return PretrainJob(**kw)


def variants() -> dict[str, PretrainJob]:
    return {
        "default": job(),
        "pvc": job(workers=3, gpus_per_worker=4, storage=PvcStorage(claim_name="c", mount_path="/data"),
                   pretrain_flags={"input_file": "/data/a.tfrecord,/data/b.tfrecord", "output_dir": "/data/out",
                                   "bert_config_file": "/data/bert_config.json", "do_train": True}),
        "gcs-key+nic": job(workers=16, gcs_credentials_secret="gcp-key", namespace="team-a",
                           rccl=RcclEnv(nccl_socket_ifname="eth0", nccl_debug="INFO", nccl_ib_disable=True,
                                        extra={"HOROVOD_FUSION_THRESHOLD": "67108864"}),
                           run_policy=RunPolicy(clean_pod_policy="All", backoff_limit=2,
                                                ttl_seconds_after_finished=None, active_deadline_seconds=3600),
                           service_account="trainer", labels={"team": "nlp"},
                           annotations={"example.com/owner": "nlp"}),
        "no-selector": job(node_selector={}, tolerations=[], supplemental_groups=[]),
    }


@pytest.mark.parametrize("name", list(variants()))
def test_rendered_mpijob_passes_crd_schema_and_operator_rules(name):
    manifest = render(variants()[name])
    assert mpijob_problems(manifest) == []


def test_validator_is_not_vacuous():
    good = render(job())
    bad_cases = {
        "typo in a pod spec field": lambda m: m["spec"]["mpiReplicaSpecs"]["Worker"]["template"]["spec"]
        .__setitem__("nodeSelecter", {}),
        "replicas as text": lambda m: m["spec"]["mpiReplicaSpecs"]["Worker"].__setitem__("replicas", "2"),
        "bad quantity": lambda m: m["spec"]["mpiReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]
        ["resources"]["limits"].__setitem__("amd.com/gpu", "eight"),
        "unknown MPI": lambda m: m["spec"].__setitem__("mpiImplementation", "MVAPICH"),
        "two launchers": lambda m: m["spec"]["mpiReplicaSpecs"]["Launcher"].__setitem__("replicas", 2),
        "no workers": lambda m: m["spec"]["mpiReplicaSpecs"]["Worker"].__setitem__("replicas", 0),
        "no launcher": lambda m: m["spec"]["mpiReplicaSpecs"].pop("Launcher"),
        "uppercase name": lambda m: m["metadata"].__setitem__("name", "Bert"),
        "name too long for pods": lambda m: m["metadata"].__setitem__("name", "b" * 60),
    }
    for what, mutate in bad_cases.items():
        manifest = copy.deepcopy(good)
        mutate(manifest)
        assert mpijob_problems(manifest), f"the validator accepted: {what}"


def test_job_shape_for_horovod_on_amd_gpus():
    j = job(workers=2, gpus_per_worker=8, shm_size="32Gi", rccl=RcclEnv(nccl_socket_ifname="eth0"))
    m = render(j)
    spec = m["spec"]
    assert (m["apiVersion"], m["kind"]) == ("kubeflow.org/v2beta1", "MPIJob")
    assert spec["slotsPerWorker"] == 8
    assert spec["mpiImplementation"] == "OpenMPI"
    assert spec["runPolicy"] == {"cleanPodPolicy": "Running", "backoffLimit": 0, "ttlSecondsAfterFinished": 604800}
    assert spec["sshAuthMountPath"] == mpijob.SSH_AUTH_MOUNT_PATH
    launcher, worker = spec["mpiReplicaSpecs"]["Launcher"], spec["mpiReplicaSpecs"]["Worker"]
    assert launcher["replicas"] == 1 and worker["replicas"] == 2

    wpod, lpod = worker["template"]["spec"], launcher["template"]["spec"]
    wc, lc = wpod["containers"][0], lpod["containers"][0]
    assert wc["resources"]["limits"]["amd.com/gpu"] == 8
    assert "amd.com/gpu" not in lc["resources"]["limits"], "the launcher needs no GPU"
    shm = next(v for v in wpod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "32Gi"}
    assert {"name": "dshm", "mountPath": "/dev/shm"} in wc["volumeMounts"]
    assert wpod["nodeSelector"] == {"feature.node.kubernetes.io/amd-gpu": "true"}
    assert wpod["tolerations"] == [{"key": "amd.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert "nodeSelector" not in lpod, "the launcher runs on any node"
    for pod in (wpod, lpod):
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == mpijob.IMAGE_UID

    assert wc["command"] == ["/usr/sbin/sshd", "-De", "-f", mpijob.SSHD_CONFIG]
    assert wc["readinessProbe"]["tcpSocket"]["port"] == mpijob.SSH_PORT
    env = {e["name"]: e["value"] for e in wc["env"]}
    assert env["HSA_FORCE_FINE_GRAIN_PCIE"] == "1" and env["NCCL_SOCKET_IFNAME"] == "eth0"
    assert env["NCCL_DEBUG"] == "WARN"

    cmd = lc["command"]
    assert cmd[:3] == ["mpirun", "-np", "16"]
    forwarded = {cmd[i + 1] for i, a in enumerate(cmd) if a == "-x"}
    # ranks start through sshd, which passes no pod env: mpirun must forward every variable itself
    assert set(env) | {"PATH", "LD_LIBRARY_PATH"} <= forwarded
    assert ["--mca", "btl_tcp_if_include", "eth0"] == cmd[cmd.index("btl_tcp_if_include") - 1:][:3]
    assert cmd[cmd.index("bert"):][:2] == ["bert", "pretrain"]


def test_no_istio_sidecar_in_the_pods_and_extra_metadata_passes_through():
    """Kubeflow namespaces inject Istio; a sidecar keeps the launcher from completing (mpi-operator#480)."""
    plain = render(job())
    for role in ("Launcher", "Worker"):
        meta = plain["spec"]["mpiReplicaSpecs"][role]["template"]["metadata"]
        assert meta["annotations"] == {"sidecar.istio.io/inject": "false"}, role
    m = render(job(labels={"team": "nlp"}, annotations={"example.com/owner": "nlp", "sidecar.istio.io/inject": "true"}))
    assert m["metadata"]["labels"]["team"] == "nlp"
    assert m["metadata"]["annotations"] == {"example.com/owner": "nlp", "sidecar.istio.io/inject": "true"}
    for role in ("Launcher", "Worker"):
        meta = m["spec"]["mpiReplicaSpecs"][role]["template"]["metadata"]
        assert meta["labels"]["team"] == "nlp"
        assert meta["annotations"] == {"example.com/owner": "nlp", "sidecar.istio.io/inject": "true"}, \
            "the job's own annotations win"
    assert mpijob_problems(m) == []


def _pods(m: dict) -> tuple[dict, dict]:
    """(launcher pod spec, worker pod spec)"""
    specs = m["spec"]["mpiReplicaSpecs"]
    return specs["Launcher"]["template"]["spec"], specs["Worker"]["template"]["spec"]


def test_only_workers_mount_the_pvc():
    """A ReadWriteOnce claim in the launcher too fails with Multi-Attach when it lands on another node."""
    lpod, wpod = _pods(render(variants()["pvc"]))
    assert [v["name"] for v in wpod["volumes"] if "persistentVolumeClaim" in v] == ["data"]
    assert not any("persistentVolumeClaim" in v for v in lpod.get("volumes", []))
    assert not any(m["name"] == "data" for m in lpod["containers"][0].get("volumeMounts", []))


def test_staging_goes_to_a_requested_disk_volume_not_the_image_layer():
    m = render(job(local_cache_size="500Gi"))
    lpod, wpod = _pods(m)
    (scratch,) = [v for v in wpod["volumes"] if v["name"] == "scratch"]
    assert scratch == {"name": "scratch", "emptyDir": {"sizeLimit": "500Gi"}}
    wc = wpod["containers"][0]
    assert {"name": "scratch", "mountPath": mpijob.SCRATCH_DIR} in wc["volumeMounts"]
    assert wc["resources"]["requests"]["ephemeral-storage"] == "500Gi"
    env = {e["name"]: e["value"] for e in wc["env"]}
    assert env["BERT_LOCAL_CACHE"].startswith(mpijob.SCRATCH_DIR + "/")
    cmd = lpod["containers"][0]["command"]
    assert cmd[cmd.index("BERT_LOCAL_CACHE") - 1] == "-x", "the ranks get it from mpirun, not from the pod"
    assert not any(v["name"] == "scratch" for v in lpod.get("volumes", []))
    lpod, wpod = _pods(render(job(local_cache_size=None)))
    assert "ephemeral-storage" not in wpod["containers"][0]["resources"]["requests"]
    assert not any(v["name"] == "scratch" for v in wpod["volumes"])


def test_mpirun_forwards_only_variables_that_are_set():
    """`-x NAME` of an unset variable makes mpirun warn once per rank: each forwarded name is set in the
    launcher's container, by the pod spec or by docker/Dockerfile.base (PATH by every image)."""
    import re
    dockerfile = (ROOT / "docker" / "Dockerfile.base").read_text().replace("\\\n", " ")
    image_env = {"PATH"} | {name for line in dockerfile.splitlines() if line.startswith("ENV ")
                            for name in re.findall(r"(\w+)=", line)}
    for variant in variants().values():
        lpod, _ = _pods(render(variant))
        container = lpod["containers"][0]
        cmd = container["command"]
        forwarded = {cmd[i + 1] for i, a in enumerate(cmd) if a == "-x"}
        pod_env = {e["name"] for e in container["env"]}
        assert forwarded <= pod_env | image_env, forwarded - pod_env - image_env
        assert {"PYTHONUNBUFFERED", "BERT_KERNEL_CACHE", "LD_LIBRARY_PATH"} <= forwarded


def test_pods_avoid_a_recursive_chown_and_can_pull_from_a_private_registry():
    m = render(job(image_pull_secrets=["regcred"]))
    for pod in _pods(m):
        assert pod["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
        assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert mpijob_problems(m) == []
    assert all("imagePullSecrets" not in pod for pod in _pods(render(job())))


def test_launcher_command_is_accepted_by_the_bert_cli():
    from bert_core import cli, config
    flags = {"input_file": "gs://b/x", "output_dir": "gs://b/o", "do_train": True, "xla": False, "model": "bert-mini",
             "train_batch_size": 16, "learning_rate": 2e-5, "dtype": "bf16", "optimizer_type": "lamb"}
    cmd = render(job(pretrain_flags=flags))["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"][
        "containers"][0]["command"]
    argv = cmd[cmd.index("bert") + 1:]
    args = cli.build_parser().parse_args(argv)
    cfg = cli.config_from_args(config.PretrainConfig, args)
    assert (cfg.input_file, cfg.output_dir, cfg.do_train, cfg.xla) == ("gs://b/x", "gs://b/o", True, False)
    assert (cfg.train_batch_size, cfg.learning_rate, cfg.dtype, cfg.optimizer_type) == (16, 2e-5, "bf16", "lamb")


def test_pretrain_flags_are_checked_against_pretrain_config():
    from bert_core import config
    with pytest.raises(pydantic.ValidationError, match="--num_train_epochs is not a `bert pretrain` flag"):
        job(pretrain_flags={**GS, "num_train_epochs": 3})
    required = [n for n, f in config.PretrainConfig.model_fields.items() if f.is_required()]
    assert "output_dir" in required
    with pytest.raises(pydantic.ValidationError, match="output_dir"):
        job(pretrain_flags={"input_file": "gs://b/x", "do_train": True, "model": "bert-base"})
    # the config's own cross-field rules apply before any GPU is scheduled
    with pytest.raises(pydantic.ValidationError, match="exactly one of --bert_config_file or --model"):
        job(pretrain_flags={**GS, "bert_config_file": "gs://b/bert_config.json"})
    with pytest.raises(pydantic.ValidationError, match="max_seq_length"):
        job(pretrain_flags={**GS, "max_seq_length": "long"})


@pytest.mark.parametrize("flags, storage, message", [
    ({**GS, "input_file": "/data/x"}, None, "local path but the job mounts no volume"),
    ({**GS, "output_dir": "/elsewhere/o"}, PvcStorage(claim_name="c", mount_path="/data"),
     "outside the PVC mounted at /data"),
    ({**GS, "output_dir": "/data/o"}, PvcStorage(claim_name="c", mount_path="/data",
                                                                      read_only=True), "read-only PVC"),
    ({**GS, "Bad-Flag": 1}, None, "not a flag name"),
    ({**GS, "input_file": "gs://b/x\n"}, None, "whitespace or a newline"),
])
def test_paths_and_flags_are_checked(flags, storage, message):
    with pytest.raises(pydantic.ValidationError, match=message):
        job(pretrain_flags=flags, storage=storage)


@pytest.mark.parametrize("kw, message", [
    ({"name": "Bert_Pretrain"}, "must start with a lowercase letter"),
    ({"name": "1bert"}, "must start with a lowercase letter"),
    ({"name": "b" * 56, "workers": 100}, "too long"),
    ({"workers": 0}, "greater than or equal to 1"),
    ({"gpus_per_worker": 0}, "greater than or equal to 1"),
    ({"shm_size": "lots"}, "not a Kubernetes quantity"),
    ({"namespace": "Team A"}, "not a DNS label"),
])
def test_invalid_jobs_are_refused(kw, message):
    with pytest.raises(pydantic.ValidationError, match=message):
        job(**kw)


def test_render_refuses_an_invalid_run_name_in_one_line():
    with pytest.raises(UserError) as err:
        render(job(), name="x" * 70)
    assert "\n" not in str(err.value)


def test_load_job_errors_are_one_line_naming_the_field():
    with pytest.raises(UserError) as err:
        load_job({"workers": "many", "pretrain_flags": GS}, "job.yaml")
    text = str(err.value)
    assert text.startswith("job.yaml: workers:") and "\n" not in text
    with pytest.raises(UserError, match="job.yaml: gpus: Extra inputs are not permitted"):
        load_job({"gpus": 8, "pretrain_flags": GS}, "job.yaml")


def test_round_trip_through_yaml_renders_the_same_manifest():
    import yaml
    original = variants()["gcs-key+nic"]
    again = load_job(yaml.safe_load(yaml.safe_dump(original.model_dump(mode="json"), sort_keys=True)))
    assert render(again) == render(original)
    assert again.checkpoint_location == "gs://b/out"


def test_renderer_and_launcher_import_without_tensorflow_or_kfp():
    """The CronJob's launcher image has neither; PretrainConfig is imported lazily, from bert_core.config."""
    code = ("import sys\n"
            "for m in ('tensorflow', 'kfp', 'horovod', 'keras'): sys.modules[m] = None\n"
            "import components.mpijob, components.launcher, components.images\n"
            "components.mpijob.PretrainJob(pretrain_flags={'input_file': 'gs://b/x', 'output_dir': 'gs://b/o',\n"
            "                                           'do_train': True, 'model': 'bert-base'})\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
