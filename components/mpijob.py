"""The ONE renderer of the pretraining MPIJob (kubeflow.org/v2beta1): pydantic models in, a manifest dict out.

The pipeline's launcher step (components/launcher.py), the CronJob and the YAML in manifests/ all come
from `render(PretrainJob(...))`, so they cannot drift (tests/test_manifests.py re-renders and compares).

Shape of the job (mpi-operator v2, OpenMPI):
- Launcher, 1 replica, CPU only: `mpirun -np W*G ... bert pretrain --input_file=... --output_dir=...`.
  mpi-operator writes the hostfile (one line per worker with `slots=G`) and the ssh keys; mpirun reaches
  the workers over ssh, so every environment variable the ranks need is forwarded with `-x NAME`:
  processes started through sshd do not inherit the worker pod's env.
- Worker, W replicas, each `G` AMD GPUs (`amd.com/gpu`, from the ROCm device plugin): runs sshd as the
  image's non-root user on an unprivileged port; Horovod's ranks are started there by mpirun.
  `slotsPerWorker` = G, /dev/shm is a memory emptyDir (RCCL and tf.data use shared memory).
- Data and checkpoints on gs:// (Workload Identity, or a key in a Secret; staged to a disk emptyDir) or
  on a PVC mounted in every worker (not in the launcher, which only runs mpirun).
- No Istio sidecar in either pod; the pods run as the step that created the job (service account,
  key Secret, image pull secrets: components/launcher.py).
"""

from __future__ import annotations

import copy
import re
from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bert_core.errors import UserError
from bert_core.storage_s3 import MINIO_SECRET_DIR
from components import images

API_VERSION = "kubeflow.org/v2beta1"
KIND = "MPIJob"
GROUP, VERSION, PLURAL = "kubeflow.org", "v2beta1", "mpijobs"

# Facts the images and the manifests share. docker/Dockerfile.base creates this user and
# docker/Dockerfile.pretrain this sshd setup; tests/test_docker.py checks they match.
IMAGE_USER = "bert"
IMAGE_UID = 10001
IMAGE_HOME = f"/home/{IMAGE_USER}"
SSH_PORT = 2222                                 # unprivileged: sshd runs as IMAGE_USER
SSHD_CONFIG = f"{IMAGE_HOME}/.sshd_config"
SSH_AUTH_MOUNT_PATH = f"{IMAGE_HOME}/.ssh"      # where mpi-operator mounts the job's ssh Secret

GCS_KEY_DIR = "/var/secrets/google"            # where a key Secret is mounted; key.json inside it
# Workers stage gs:// (and s3://) input and keep node-local checkpoint copies here (bert_core.staging:
# $BERT_LOCAL_CACHE): a disk emptyDir counted in the pod's ephemeral-storage request, not the image layer.
SCRATCH_DIR = "/scratch"
LOCAL_CACHE = f"{SCRATCH_DIR}/bert-cache"
# Variables docker/Dockerfile.base sets (PATH: every image) that the ranks need; mpirun forwards them
# with `-x`, so each must be set in the launcher's container (tests/test_mpijob.py reads the Dockerfile).
IMAGE_ENV = ("PATH", "LD_LIBRARY_PATH", "PYTHONUNBUFFERED", "BERT_KERNEL_CACHE")

# Kubeflow namespaces have Istio injection on: a sidecar keeps the launcher pod (and so the MPIJob)
# from ever completing and sits between mpirun's ssh and RCCL's sockets (kubeflow/mpi-operator#480).
NO_ISTIO_SIDECAR = {"sidecar.istio.io/inject": "false"}

GPU_RESOURCE = "amd.com/gpu"
# Labels mpi-operator puts on the pods it creates (training-operator's common labels).
JOB_NAME_LABEL = "training.kubeflow.org/job-name"
JOB_ROLE_LABEL = "training.kubeflow.org/job-role"

FlagValue = Union[bool, int, float, str]

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY = re.compile(r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FLAG_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def dns_label_problem(name: str, what: str = "name") -> str | None:
    """Why `name` is not a valid DNS-1123 label (lowercase alphanumerics and '-', <= 63), or None."""
    if not name:
        return f"{what} is empty"
    if len(name) > 63:
        return f"{what} {name!r} is {len(name)} characters; a DNS label has at most 63"
    if not _DNS1123_LABEL.match(name):
        return (f"{what} {name!r} is not a DNS label: lowercase letters, digits and '-', "
                f"starting and ending with a letter or digit")
    return None


def job_name_problem(name: str, workers: int) -> str | None:
    """Why mpi-operator would refuse or break on this MPIJob name, or None.

    The job name names a Service (so DNS-1035: it starts with a letter), and the pods
    `<name>-launcher` and `<name>-worker-<i>` are hostnames (DNS-1123 labels, <= 63 characters).
    """
    if not _DNS1035.match(name or ""):
        return (f"MPIJob name {name!r} must start with a lowercase letter and contain only lowercase "
                f"letters, digits and '-' (a DNS-1035 label)")
    for pod in (f"{name}-launcher", f"{name}-worker-{max(workers - 1, 0)}"):
        problem = dns_label_problem(pod, "pod name")
        if problem:
            return f"MPIJob name {name!r} is too long: {problem}"
    return None


class Toleration(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str
    operator: Literal["Exists", "Equal"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None

    def manifest(self) -> dict:
        out = {"key": self.key, "operator": self.operator}
        if self.value is not None:
            out["value"] = self.value
        if self.effect is not None:
            out["effect"] = self.effect
        return out


class PvcStorage(BaseModel):
    """A PersistentVolumeClaim mounted at the same path in the launcher and every worker."""

    model_config = ConfigDict(extra="forbid")
    claim_name: str = Field(description="Name of the PVC (ReadWriteMany when there is more than one worker)")
    mount_path: str = Field("/mnt/bert", description="Where the claim is mounted in every pod")
    read_only: bool = False

    @field_validator("mount_path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/") or value.rstrip("/") == "":
            raise ValueError(f"mount_path must be an absolute directory, got {value!r}")
        return value.rstrip("/")


class RcclEnv(BaseModel):
    """RCCL (ROCm's NCCL, which Horovod uses for allreduce) and HSA settings for every rank."""

    model_config = ConfigDict(extra="forbid")
    nccl_debug: Literal["VERSION", "WARN", "INFO", "TRACE"] = "WARN"
    nccl_socket_ifname: str | None = Field(
        None, description="Interface(s) for RCCL's and MPI's TCP traffic, e.g. 'eth0' or '^lo,docker'")
    nccl_ib_disable: bool | None = Field(None, description="Set NCCL_IB_DISABLE=1 where there is no RDMA")
    hsa_force_fine_grain_pcie: bool = Field(
        True, description="HSA_FORCE_FINE_GRAIN_PCIE=1: fine-grained PCIe memory, needed by RCCL across GPUs")
    extra: dict[str, str] = Field(default_factory=dict, description="More variables, e.g. HOROVOD_FUSION_THRESHOLD")

    @field_validator("extra")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _ENV_NAME.match(name):
                raise ValueError(f"environment variable name {name!r} is not valid")
        return value

    def env(self) -> dict[str, str]:
        out = {"NCCL_DEBUG": self.nccl_debug}
        if self.nccl_socket_ifname:
            out["NCCL_SOCKET_IFNAME"] = self.nccl_socket_ifname
        if self.nccl_ib_disable is not None:
            out["NCCL_IB_DISABLE"] = "1" if self.nccl_ib_disable else "0"
        out["HSA_FORCE_FINE_GRAIN_PCIE"] = "1" if self.hsa_force_fine_grain_pcie else "0"
        out.update(self.extra)
        return out


class RunPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    clean_pod_policy: Literal["Running", "All", "None"] = Field(
        "Running", description="Pods to delete when the job ends (Running keeps failed pods' logs)")
    backoff_limit: int = Field(0, ge=0, description="Launcher retries; 0 because a rerun resumes from "
                                                    "the last checkpoint anyway")
    ttl_seconds_after_finished: int | None = Field(7 * 24 * 3600, ge=0)
    active_deadline_seconds: int | None = Field(None, gt=0)

    def manifest(self) -> dict:
        out: dict = {"cleanPodPolicy": self.clean_pod_policy, "backoffLimit": self.backoff_limit}
        if self.ttl_seconds_after_finished is not None:
            out["ttlSecondsAfterFinished"] = self.ttl_seconds_after_finished
        if self.active_deadline_seconds is not None:
            out["activeDeadlineSeconds"] = self.active_deadline_seconds
        return out


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cpu: str
    memory: str

    @field_validator("cpu", "memory")
    @classmethod
    def _quantity(cls, value: str) -> str:
        if not _QUANTITY.match(str(value)):
            raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. '8', '500m', '64Gi')")
        return str(value)


def _default_tolerations() -> list[Toleration]:
    return [Toleration(key=GPU_RESOURCE, operator="Exists", effect="NoSchedule")]


class PretrainJob(BaseModel):
    """Everything that varies between pretraining MPIJobs. `render()` turns it into the manifest."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("bert-pretrain", description="MPIJob name (the launcher step adds a unique suffix)")
    namespace: str | None = Field(None, description="Namespace; None leaves it to kubectl/kustomize")
    image: str = Field(default_factory=lambda: images.image("pretrain"), description="Pretraining image")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    workers: int = Field(1, ge=1, description="Worker pods (nodes)")
    gpus_per_worker: int = Field(8, ge=1, description="GPUs per worker = slotsPerWorker = ranks per node")
    worker_resources: Resources = Field(default_factory=lambda: Resources(cpu="32", memory="256Gi"))
    launcher_resources: Resources = Field(default_factory=lambda: Resources(cpu="1", memory="2Gi"))
    shm_size: str = Field("64Gi", description="Size limit of the /dev/shm memory emptyDir on workers")
    local_cache_size: str | None = Field(
        "100Gi", description=f"Disk emptyDir at {SCRATCH_DIR} on workers for staged gs:// input (requested as "
                             f"ephemeral-storage); None when all data is on the PVC")
    rccl: RcclEnv = Field(default_factory=RcclEnv)
    run_policy: RunPolicy = Field(default_factory=RunPolicy)
    storage: PvcStorage | None = Field(None, description="A PVC for data and checkpoints; None for gs:// only")
    gcs_credentials_secret: str | None = Field(
        None, description="Secret with a service-account key.json for gs://; None for Workload Identity "
                          "(the launcher step passes on the one mounted in its own pod)")
    minio_secret: str | None = Field(
        None, description=f"KFP's MinIO credentials Secret (mlpipeline-minio-artifact: accesskey, secretkey) "
                          f"for minio://, mounted at {MINIO_SECRET_DIR}; None: the launcher step's own, if any")
    service_account: str | None = Field(
        None, description="Service account of the job's pods (gs:// access); None: the launcher step's own")
    image_pull_secrets: list[str] | None = Field(
        None, description="Secrets for a private registry; None: the launcher step's own")
    node_selector: dict[str, str] = Field(
        default_factory=lambda: {"feature.node.kubernetes.io/amd-gpu": "true"},
        description="Worker node selector (the AMD GPU operator's node-feature label by default)")
    tolerations: list[Toleration] = Field(default_factory=_default_tolerations)
    supplemental_groups: list[int] = Field(
        default_factory=lambda: [44],
        description="Extra groups of the pods' user: the hosts' video (and render) GIDs own /dev/kfd, /dev/dri")
    labels: dict[str, str] = Field(default_factory=dict, description="Extra labels of the MPIJob and its pods")
    annotations: dict[str, str] = Field(
        default_factory=dict, description="Extra annotations of the MPIJob and its pods (the pods always get "
                                          "sidecar.istio.io/inject: 'false' unless this sets it)")
    mpirun_args: list[str] = Field(default_factory=list, description="Extra mpirun arguments")
    pretrain_flags: dict[str, FlagValue] = Field(
        description="`bert pretrain` flags (PretrainConfig field names): at least input_file and output_dir")

    @field_validator("shm_size", "local_cache_size")
    @classmethod
    def _sizes(cls, value: str | None) -> str | None:
        return None if value is None else Resources._quantity(value)

    @model_validator(mode="after")
    def _check(self) -> "PretrainJob":
        problem = job_name_problem(self.name, self.workers)
        if problem:
            raise ValueError(problem)
        if self.namespace is not None and dns_label_problem(self.namespace, "namespace"):
            raise ValueError(dns_label_problem(self.namespace, "namespace"))
        check_pretrain_flags(self.pretrain_flags)
        for flag in ("input_file", "output_dir"):
            if flag not in self.pretrain_flags:
                raise ValueError(f"pretrain_flags needs --{flag}")
        self._check_paths()
        return self

    def _check_paths(self) -> None:
        mount = self.storage.mount_path if self.storage else None
        for flag, value in self.pretrain_flags.items():
            if not isinstance(value, str):
                continue
            for path in (p.strip() for p in value.split(",")):
                if not path.startswith("/"):
                    continue  # gs://..., a preset name, a number as text
                if mount is None:
                    raise ValueError(f"--{flag}={path} is a local path but the job mounts no volume: "
                                     f"use object storage (gs://, s3://, minio://) or set storage (a PVC)")
                if path != mount and not path.startswith(mount + "/"):
                    raise ValueError(f"--{flag}={path} is outside the PVC mounted at {mount}")
        if mount and self.storage.read_only:
            out = str(self.pretrain_flags["output_dir"])
            if out.startswith(mount):
                raise ValueError(f"--output_dir={out} is on a read-only PVC")

    @property
    def checkpoint_location(self) -> str:
        """Where `bert pretrain` writes its checkpoints: the step's Model artifact."""
        return str(self.pretrain_flags["output_dir"])

    @property
    def num_ranks(self) -> int:
        return self.workers * self.gpus_per_worker


def check_pretrain_flags(flags: dict[str, FlagValue]) -> None:
    """Flag names must be fields of bert_core.config.PretrainConfig, and the flags a valid PretrainConfig.

    PretrainConfig is imported lazily, so this module imports without TensorFlow (the launcher image).
    """
    import pydantic

    from bert_core.config import PretrainConfig, describe_validation_error

    for name, value in flags.items():
        if not _FLAG_NAME.match(name):
            raise ValueError(f"pretrain flag {name!r} is not a flag name (lowercase, digits, '_')")
        if isinstance(value, str) and ("\n" in value or value.strip() != value):
            raise ValueError(f"pretrain flag --{name} has surrounding whitespace or a newline")
    fields = PretrainConfig.model_fields
    unknown = sorted(set(flags) - set(fields))
    if unknown:
        raise ValueError(f"--{unknown[0]} is not a `bert pretrain` flag (a field of PretrainConfig); "
                         f"known: {', '.join(sorted(fields))}")
    # The whole flag set, as `bert pretrain` would build it: required fields, types and the config's
    # own cross-field rules (e.g. exactly one of --bert_config_file/--model), before any GPU is scheduled.
    try:
        PretrainConfig.model_validate(flags)
    except pydantic.ValidationError as err:
        raise ValueError(f"`bert pretrain` would refuse these flags: {describe_validation_error(err)}") from None


def _env_list(env: dict[str, str]) -> list[dict]:
    return [{"name": k, "value": v} for k, v in env.items()]


def rank_env(job: PretrainJob) -> dict[str, str]:
    """Variables every rank needs, set in the pods; mpirun forwards each with `-x` (with IMAGE_ENV)."""
    env = job.rccl.env()
    if job.local_cache_size:
        env["BERT_LOCAL_CACHE"] = LOCAL_CACHE
    if job.gcs_credentials_secret:
        env["GOOGLE_APPLICATION_CREDENTIALS"] = f"{GCS_KEY_DIR}/key.json"
    return env


def mpirun_command(job: PretrainJob) -> list[str]:
    """The launcher's command: mpirun with Horovod's recommended OpenMPI flags, then `bert pretrain`."""
    from bert_core.stages import config_flags  # lazily, as PretrainConfig: see check_pretrain_flags

    cmd = ["mpirun", "-np", str(job.num_ranks),
           "--bind-to", "none", "--map-by", "slot",       # no CPU binding; each rank pins its GPU in
                                                      # bert_core.distributed.initialize (local rank)
           "--mca", "pml", "ob1", "--mca", "btl", "^openib"]  # TCP/shared memory, no verbs probing
    # ssh reaches the workers' unprivileged sshd through the image's ssh_config (Port SSH_PORT), not
    # plm_rsh_args, which mpi-operator sets itself on the launcher.
    ifname = job.rccl.nccl_socket_ifname
    if ifname and not ifname.startswith("^") and "," not in ifname:
        cmd += ["--mca", "btl_tcp_if_include", ifname, "--mca", "oob_tcp_if_include", ifname]
    for name in [*rank_env(job), *IMAGE_ENV]:   # never an unset name: mpirun would warn per rank
        cmd += ["-x", name]
    cmd += list(job.mpirun_args)
    # input_file and output_dir first, then the rest by name: the command does not depend on dict order.
    first = [k for k in ("input_file", "output_dir") if k in job.pretrain_flags]
    names = first + sorted(k for k in job.pretrain_flags if k not in first)
    cmd += ["bert", "pretrain"] + config_flags({k: job.pretrain_flags[k] for k in names})
    return cmd


def _volumes(job: PretrainJob, worker: bool) -> tuple[list[dict], list[dict]]:
    volumes: list[dict] = []
    mounts: list[dict] = []
    if worker:
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": job.shm_size}})
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    if worker and job.local_cache_size:
        volumes.append({"name": "scratch", "emptyDir": {"sizeLimit": job.local_cache_size}})
        mounts.append({"name": "scratch", "mountPath": SCRATCH_DIR})
    # Only the ranks read and write data: a ReadWriteOnce claim mounted by the launcher too would fail
    # with Multi-Attach whenever the launcher lands on another node.
    if worker and job.storage:
        volumes.append({"name": "data", "persistentVolumeClaim": {
            "claimName": job.storage.claim_name, "readOnly": job.storage.read_only}})
        mounts.append({"name": "data", "mountPath": job.storage.mount_path, "readOnly": job.storage.read_only})
    if job.gcs_credentials_secret:
        volumes.append({"name": "gcp-key", "secret": {"secretName": job.gcs_credentials_secret}})
        mounts.append({"name": "gcp-key", "mountPath": GCS_KEY_DIR, "readOnly": True})
    if job.minio_secret:
        volumes.append({"name": "minio-keys", "secret": {"secretName": job.minio_secret}})
        mounts.append({"name": "minio-keys", "mountPath": MINIO_SECRET_DIR, "readOnly": True})
    return volumes, mounts


def _pod_spec(job: PretrainJob, worker: bool) -> dict:
    volumes, mounts = _volumes(job, worker)
    res = job.worker_resources if worker else job.launcher_resources
    resources = {"requests": {"cpu": res.cpu, "memory": res.memory},
                 "limits": {"cpu": res.cpu, "memory": res.memory}}
    if worker:
        resources["requests"][GPU_RESOURCE] = job.gpus_per_worker
        resources["limits"][GPU_RESOURCE] = job.gpus_per_worker
        if job.local_cache_size:
            resources["requests"]["ephemeral-storage"] = job.local_cache_size
    container: dict = {
        "name": "worker" if worker else "launcher",
        "image": job.image,
        "imagePullPolicy": job.image_pull_policy,
        "env": _env_list(rank_env(job)),
        "resources": resources,
        "securityContext": {"allowPrivilegeEscalation": False},
    }
    if worker:
        container["command"] = ["/usr/sbin/sshd", "-De", "-f", SSHD_CONFIG]
        container["ports"] = [{"name": "ssh", "containerPort": SSH_PORT, "protocol": "TCP"}]
        container["readinessProbe"] = {"tcpSocket": {"port": SSH_PORT}, "initialDelaySeconds": 2,
                                       "periodSeconds": 5}
    else:
        container["command"] = mpirun_command(job)
    if mounts:
        container["volumeMounts"] = mounts
    spec: dict = {
        # OnRootMismatch: the kubelet chowns a volume to fsGroup only when its root is not already
        # owned so, not the whole dataset at every start.
        "securityContext": {"runAsUser": IMAGE_UID, "runAsGroup": IMAGE_UID, "fsGroup": IMAGE_UID,
                            "fsGroupChangePolicy": "OnRootMismatch", "runAsNonRoot": True,
                            "supplementalGroups": list(job.supplemental_groups)},
        "containers": [container],
    }
    if job.service_account:
        spec["serviceAccountName"] = job.service_account
    if job.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": name} for name in job.image_pull_secrets]
    if worker:
        if job.node_selector:
            spec["nodeSelector"] = dict(job.node_selector)
        if job.tolerations:
            spec["tolerations"] = [t.manifest() for t in job.tolerations]
    if volumes:
        spec["volumes"] = volumes
    return spec


def render(job: PretrainJob, name: str | None = None) -> dict:
    """The MPIJob manifest for `job` (named `name` if given: the launcher's unique per-run name)."""
    name = name or job.name
    problem = job_name_problem(name, job.workers)
    if problem:
        raise UserError(problem)
    labels = {"app.kubernetes.io/name": "bert", "app.kubernetes.io/component": "pretrain", **job.labels}
    metadata: dict = {"name": name, "labels": labels}
    if job.annotations:
        metadata["annotations"] = dict(job.annotations)
    if job.namespace:
        metadata["namespace"] = job.namespace
    pod_metadata = {"labels": dict(labels), "annotations": {**NO_ISTIO_SIDECAR, **job.annotations}}

    def replica(replicas: int, worker: bool) -> dict:
        # The launcher fails for good (the job reports it); a worker's sshd may be restarted.
        return {"replicas": replicas, "restartPolicy": "OnFailure" if worker else "Never",
                "template": {"metadata": copy.deepcopy(pod_metadata), "spec": _pod_spec(job, worker)}}

    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata,
        "spec": {
            "slotsPerWorker": job.gpus_per_worker,
            "mpiImplementation": "OpenMPI",
            "launcherCreationPolicy": "WaitForWorkersReady",  # mpirun starts once every sshd is ready
            "sshAuthMountPath": SSH_AUTH_MOUNT_PATH,
            "runPolicy": job.run_policy.manifest(),
            "mpiReplicaSpecs": {
                "Launcher": replica(1, worker=False),
                "Worker": replica(job.workers, worker=True),
            },
        },
    }


def load_job(data: dict, source: str = "job spec") -> PretrainJob:
    """A PretrainJob from a parsed YAML/JSON mapping, with one-line errors naming the field."""
    import pydantic
    try:
        return PretrainJob.model_validate(data)
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        msg = first["msg"].removeprefix("Value error, ")
        raise UserError(f"{source}: {where}: {msg}") from None
