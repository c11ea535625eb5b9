#!/usr/bin/env python3
"""`make test-images`: build the CPU flavour of every stage image here and run the pipeline in them.

No Docker daemon is needed: buildah builds and runs (chroot isolation), podman imports the base.
  1. A Debian base (debootstrap --variant=minbase bookworm + python3), imported once.
  2. Every stage image, CPU flavour (scripts/build_images.py: rebuilt only when its inputs change).
  3. The compiled pipeline (`bert-pipeline compile`, the embedded default job), each task's own container
     command + args with a KFP executor input (built by kfp.local's own helpers), run in its stage's image
     with `buildah run` as the images' non-root user; artifacts pass through one mounted directory:
     prepare-corpus -> learn-vocab -> create-data -> pretrain (2 ranks in the container) -> finetune -> evaluate.
  4. The MPIJob the way mpi-operator starts it (components/mpijob.render): a worker container running the
     image's sshd with the job's SSH key pair at sshAuthMountPath, a launcher container whose mpirun reaches
     it through the hostfile the controller writes; 2 ranks train on the create-data shards.
  5. Image sizes and per-stage times.

Needs root, buildah, podman and debootstrap (`apt-get install -y buildah podman debootstrap`) and this
project's Python environment (kfp) to run it: `make test-images`, or python scripts/test_images.py [--keep].
Work directory: $BERT_TEST_IMAGES_DIR (default /var/tmp/bert-test-images).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from components import images, mpijob  # noqa: E402

WORK = Path(os.environ.get("BERT_TEST_IMAGES_DIR", "/var/tmp/bert-test-images"))
RUN_DIR = WORK / "run"            # the one directory every container mounts at the same path
PYTHON_IMAGE = "localhost/bert-kubeflow/debian-python:bookworm"
USER = f"{mpijob.IMAGE_UID}:{mpijob.IMAGE_UID}"
CONTAINER_PREFIX = "bert-test-images-"
WORKER_HOST = "bert-pretrain-worker-0.bert-pretrain.default.svc"   # mpi-operator's name for worker 0
MPI_CONFIG_DIR = "/etc/mpi"                                         # where mpi-operator mounts the hostfile
RANKS = 2
MPIJOB_STEPS = 200                # the MPIJob's run: the pipeline's pretraining settings, fewer steps

timings: dict[str, float] = {}


def log(message: str) -> None:
    print(f"[test-images {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kwargs)


def timed(name: str):
    class Timer:
        def __enter__(self):
            self.start = time.monotonic()
            log(f"{name} ...")

        def __exit__(self, kind, *_):
            timings[name] = time.monotonic() - self.start
            log(f"{name}: {'done' if kind is None else 'FAILED'} in {timings[name]:.0f} s")
    return Timer()


def image_exists(image: str) -> bool:
    return subprocess.run(["buildah", "inspect", "--type", "image", image], capture_output=True).returncode == 0


# 1. The Debian base ---------------------------------------------------------------------------------

def debian_base() -> None:
    if image_exists(PYTHON_IMAGE):
        log(f"{PYTHON_IMAGE}: present")
        return
    rootfs = WORK / "rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    run(["debootstrap", "--variant=minbase", "--include=python3,python3-pip,ca-certificates",
         "bookworm", str(rootfs), "http://deb.debian.org/debian"], stdout=subprocess.DEVNULL)
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):   # ~100 MB of downloaded packages
        run(["find", str(rootfs / cache), "-type", "f", "-delete"])
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    run(["podman", "import", "--change", 'CMD ["/bin/bash"]', "-", PYTHON_IMAGE], stdin=tar.stdout)
    tar.wait()
    shutil.rmtree(rootfs)


# 2. The images -----------------------------------------------------------------------------------------

def build(stage: str) -> None:
    run([sys.executable, str(ROOT / "scripts" / "build_images.py"), "--flavour", "cpu", "--builder", "buildah",
         "--python-image", PYTHON_IMAGE, "--host-pip", stage])


def sizes() -> dict[str, str]:
    out = subprocess.run(["buildah", "images", "--json"], check=True, capture_output=True, text=True).stdout
    wanted = {images.image(s): s for s in images.STAGES}
    found = {}
    for entry in json.loads(out):
        for name in entry.get("names") or []:
            if name in wanted:
                found[wanted[name]] = entry["size"]   # as buildah prints it, e.g. "646 MB"
    return found


# 3. Containers -------------------------------------------------------------------------------------------

class Container:
    """A buildah working container of one image; commands run in it as the image's non-root user.

    Like a pod, it has a hostname that its /etc/hosts resolves (the kubelet writes the pod's): buildah
    run gives each run a random hostname missing from /etc/hosts, on which Horovod 0.28.1's Gloo
    (getaddrinfo fails, then a null result is dereferenced in gloo/transport/tcp/device.cc) segfaults."""

    def __init__(self, hostname: str, image: str, add_hosts: tuple[str, ...] = ()):
        self.name = CONTAINER_PREFIX + hostname
        self.hostname = hostname
        subprocess.run(["buildah", "rm", self.name], capture_output=True)
        hosts = (f"{hostname}:127.0.0.1", *add_hosts)
        run(["buildah", "from", "--pull=never", "--name", self.name,
             *[a for h in hosts for a in ("--add-host", h)], image], stdout=subprocess.DEVNULL)

    def command(self, cmd: list[str], env: dict[str, str] | None = None, volumes: tuple[str, ...] = ()) -> list[str]:
        args = ["buildah", "run", "--isolation", "chroot", "--hostname", self.hostname, "--user", USER,
                "--env", f"HOME={mpijob.IMAGE_HOME}"]
        args += [a for k, v in (env or {}).items() for a in ("--env", f"{k}={v}")]
        args += [a for v in volumes for a in ("--volume", v)]
        return args + [self.name, "--", *cmd]

    def remove(self) -> None:
        subprocess.run(["buildah", "rm", self.name], capture_output=True)


# 4. The pipeline, task by task -------------------------------------------------------------------------

def compile_pipeline(path: Path) -> dict:
    import yaml
    run([sys.executable, "-c", "import sys; from pipelines.cli import main; sys.exit(main())",
         "compile", "-o", str(path)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return next(yaml.safe_load_all(path.read_text()))


def task_order(dag: dict) -> list[str]:
    done: list[str] = []
    while len(done) < len(dag["tasks"]):
        ready = [n for n, t in sorted(dag["tasks"].items())
                 if n not in done and all(d in done for d in t.get("dependentTasks", []))]
        if not ready:
            raise SystemExit("test_images: the pipeline's tasks form a cycle")
        done += ready
    return done


def task_arguments(task: dict, pipeline_params: dict, outputs: dict[str, dict]) -> dict:
    """A task's inputs as kfp.local passes them: parameter values and upstream dsl.Artifacts."""
    args = {}
    for name, spec in task.get("inputs", {}).get("parameters", {}).items():
        if "componentInputParameter" in spec:
            args[name] = pipeline_params[spec["componentInputParameter"]]
        elif "runtimeValue" in spec:
            args[name] = spec["runtimeValue"]["constant"]
        else:
            source = spec["taskOutputParameter"]
            args[name] = outputs[source["producerTask"]][source["outputParameterKey"]]
    for name, spec in task.get("inputs", {}).get("artifacts", {}).items():
        source = spec["taskOutputArtifact"]
        args[name] = outputs[source["producerTask"]][source["outputArtifactKey"]]
    return args


def run_pipeline(ir: dict, containers: dict[str, Container]) -> dict[str, dict]:
    from google.protobuf import json_format
    from kfp.local import executor_input_utils as inputs_utils
    from kfp.local import executor_output_utils as outputs_utils
    from kfp.local import placeholder_utils
    from kfp.pipeline_spec import pipeline_spec_pb2

    params = {k: v.get("defaultValue") for k, v in ir["root"]["inputDefinitions"]["parameters"].items()}
    pipeline_name = ir["pipelineInfo"]["name"]
    built = {images.image(s): s for s in images.STAGES}
    outputs: dict[str, dict] = {}
    for name in task_order(ir["root"]["dag"]):
        task = ir["root"]["dag"]["tasks"][name]
        component = ir["components"][task["componentRef"]["name"]]
        spec = json_format.ParseDict(component, pipeline_spec_pb2.ComponentSpec())
        container = ir["deploymentSpec"]["executors"][component["executorLabel"]]["container"]
        stage = built.get(container["image"])
        if stage is None:
            raise SystemExit(f"test_images: task {name} runs {container['image']}, not an image built here")
        task_root = RUN_DIR / "pipeline" / name
        task_root.mkdir(parents=True, exist_ok=True)
        executor_input = inputs_utils.construct_executor_input(
            spec, task_arguments(task, params, outputs), str(task_root), block_input_artifact=False)
        cmd = placeholder_utils.replace_placeholders(
            container["command"] + container.get("args", []),
            inputs_utils.executor_input_to_dict(executor_input, spec),
            pipeline_resource_name=pipeline_name, task_resource_name=name,
            pipeline_root=str(RUN_DIR / "pipeline"), unique_pipeline_id="test-images")
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        own(RUN_DIR)
        with timed(f"task {name} ({stage} image)"):
            run(containers[stage].command(cmd, env=env, volumes=(f"{RUN_DIR}:{RUN_DIR}",)))
        outputs[name] = outputs_utils.get_outputs_for_task(executor_input, spec)
        log(f"task {name}: outputs {sorted(outputs[name])}")
    return outputs


def check_pipeline(outputs: dict[str, dict]) -> None:
    pretrained = json.loads((Path(outputs["pretrain"]["model"].path) / "pretrain_metrics.json").read_text())
    if pretrained.get("world_size") != RANKS:
        raise SystemExit(f"test_images: the pretrain step trained with world_size {pretrained.get('world_size')}, "
                         f"not {RANKS}")
    scores = {k: v for k, v in outputs["evaluate"]["metrics"].metadata.items() if isinstance(v, (int, float))}
    if not scores:
        raise SystemExit("test_images: the evaluate step logged no metric")
    log(f"pipeline: pretrain world_size={RANKS}, global_step={pretrained.get('global_step')}; evaluate {scores}")


def own(path: Path) -> None:
    """The containers run as the images' user: it owns the shared directory, as fsGroup would arrange."""
    run(["chown", "-R", USER, str(path)])


# 5. The MPIJob as mpi-operator starts it ----------------------------------------------------------------

def ssh_keys(directory: Path) -> None:
    """The Secret mpi-operator creates (an ECDSA pair) as it mounts it at sshAuthMountPath: id_rsa,
    id_rsa.pub and authorized_keys, owned by root and readable by the pod's group."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    run(["ssh-keygen", "-q", "-t", "ecdsa", "-b", "521", "-m", "PEM", "-N", "", "-f", str(directory / "id_rsa")])
    shutil.copy(directory / "id_rsa.pub", directory / "authorized_keys")
    for f in directory.iterdir():
        os.chown(f, 0, mpijob.IMAGE_UID)
        f.chmod(0o640 if f.name == "id_rsa" else 0o644)


def run_mpijob(outputs: dict[str, dict], params: dict, containers: dict[str, Container]) -> None:
    from components.common import pretrain_config

    pvc = f"{RUN_DIR}"   # the job's PVC: mounted in the worker only, as mpijob._volumes does
    data, vocab = outputs["create-data"]["data"].path, outputs["learn-vocab"]["vocab"].path
    model_dir = RUN_DIR / "mpijob" / "model"
    shutil.rmtree(model_dir, ignore_errors=True)
    flags = {k: params[k] for k in ("max_seq_length", "max_predictions_per_seq", "train_batch_size",
                                    "learning_rate", "num_train_steps", "num_warmup_steps", "optimizer_type",
                                    "dtype", "num_accumulation_steps", "save_checkpoints_steps",
                                    "log_every_steps", "max_eval_steps", "random_seed")}
    flags.update(num_train_steps=MPIJOB_STEPS, num_warmup_steps=MPIJOB_STEPS // 10)
    config = pretrain_config(data, vocab, str(model_dir), "mpijob", params["bert_model"], {}, **flags)
    job = mpijob.PretrainJob(
        image=images.image("pretrain"), workers=1, gpus_per_worker=RANKS, local_cache_size=None,
        storage=mpijob.PvcStorage(claim_name="bert-data", mount_path=pvc),
        pretrain_flags={k: getattr(config, k) for k in config.model_fields_set})
    manifest = mpijob.render(job)
    specs = manifest["spec"]["mpiReplicaSpecs"]
    worker = specs["Worker"]["template"]["spec"]["containers"][0]
    launcher = specs["Launcher"]["template"]["spec"]["containers"][0]
    slots = manifest["spec"]["slotsPerWorker"]

    keys = WORK / "ssh"
    ssh_keys(keys)
    mpi_config = WORK / "mpi"
    mpi_config.mkdir(exist_ok=True)
    (mpi_config / "hostfile").write_text(f"{WORKER_HOST} slots={slots}\n")   # the controller's hostfile
    key_mount = f"{keys}:{mpijob.SSH_AUTH_MOUNT_PATH}:ro"
    # What mpi-operator v2 adds to the launcher's env for Open MPI (pkg/controller/mpi_job_controller.go).
    ompi_env = {"OMPI_MCA_orte_keep_fqdn_hostnames": "true",
                "OMPI_MCA_orte_default_hostfile": f"{MPI_CONFIG_DIR}/hostfile",
                "OMPI_MCA_plm_rsh_args": "-o ConnectionAttempts=10",
                "K_MPI_JOB_ROLE": "launcher"}
    env_of = lambda c: {e["name"]: e["value"] for e in c.get("env", [])}  # noqa: E731
    own(RUN_DIR)
    sshd_log = (WORK / "sshd.log").open("w")
    sshd = subprocess.Popen(containers["worker"].command(
        worker["command"], env={**env_of(worker), "K_MPI_JOB_ROLE": "worker"},
        volumes=(f"{RUN_DIR}:{RUN_DIR}", key_mount)),
        stdout=sshd_log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(mpijob.SSH_PORT, sshd)
        log(f"worker: sshd listens on {mpijob.SSH_PORT}; launcher: {' '.join(launcher['command'][:12])} ...")
        with timed(f"MPIJob: launcher mpirun -> worker sshd, {RANKS} ranks"):
            run(containers["launcher"].command(
                launcher["command"], env={**env_of(launcher), **ompi_env},
                volumes=(key_mount, f"{mpi_config}:{MPI_CONFIG_DIR}:ro")))
    finally:
        sshd.terminate()
        sshd.wait(timeout=30)
        sshd_log.close()
    accepted = [line for line in (WORK / "sshd.log").read_text().splitlines() if "Accepted publickey" in line]
    if not accepted:
        raise SystemExit(f"test_images: the ranks did not come through the worker's sshd ({WORK / 'sshd.log'})")
    metrics = json.loads((model_dir / "pretrain_metrics.json").read_text())
    log(f"MPIJob: sshd accepted {len(accepted)} connection(s); world_size={metrics.get('world_size')}, "
        f"global_step={metrics.get('global_step')}")
    if metrics.get("world_size") != RANKS:
        raise SystemExit(f"test_images: the MPIJob trained with world_size {metrics.get('world_size')}, not {RANKS}")


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    import socket
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"test_images: the worker's sshd exited ({proc.returncode}): "
                             f"{(WORK / 'sshd.log').read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise SystemExit(f"test_images: nothing listens on port {port} after {timeout:.0f} s")


# -------------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the working containers and the run directory")
    args = parser.parse_args(argv)
    missing = [tool for tool in ("buildah", "podman", "debootstrap", "ssh-keygen") if not shutil.which(tool)]
    if os.geteuid() != 0 or missing:
        print(f"test_images: needs root and {', '.join(missing) or 'buildah, podman, debootstrap'} "
              f"(apt-get install -y buildah podman debootstrap openssh-client)", file=sys.stderr)
        return 2
    os.environ.setdefault("BERT_IMAGE_TAG", images.tag() + "-cpu")   # the CPU flavour's tag, here and in the IR
    WORK.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    RUN_DIR.mkdir()

    with timed("debian base"):
        debian_base()
    for stage in images.STAGES:
        with timed(f"build {stage}"):
            build(stage)
    for stage, size in sizes().items():
        log(f"size {images.image(stage)}: {size}")

    ir = compile_pipeline(WORK / "pipeline.yaml")
    containers: dict[str, Container] = {}
    try:
        with timed("working containers"):
            for stage in ("data", "pretrain", "finetune", "evaluate"):
                containers[stage] = Container(stage, images.image(stage))
            containers["worker"] = Container(WORKER_HOST.split(".")[0], images.image("pretrain"))
            # The worker's name resolves to a loopback address that is not 127.0.0.1: Open MPI takes a
            # host whose address is one of this machine's interfaces for itself and starts the ranks
            # without ssh, in the launcher; 127.0.0.2 still reaches the worker's sshd (0.0.0.0:2222).
            containers["launcher"] = Container("bert-pretrain-launcher", images.image("pretrain"),
                                               add_hosts=(f"{WORKER_HOST}:127.0.0.2",))
        with timed("pipeline"):
            outputs = run_pipeline(ir, containers)
        check_pipeline(outputs)
        params = {k: v.get("defaultValue") for k, v in ir["root"]["inputDefinitions"]["parameters"].items()}
        run_mpijob(outputs, params, containers)
    finally:
        if not args.keep:
            for c in containers.values():
                c.remove()
    log("times: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    log("test-images passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
