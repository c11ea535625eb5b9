"""`bert-pipeline compile`: the IR YAML a user uploads holds the stages in the order of pipelines/pipeline.py's
diagram (resolve-start -> corpus -> vocab -> create-data -> pretrain -> finetune -> evaluate -> publish), typed
artifacts between them,
the parameter defaults of bert_pipeline, each stage's image and its resources, GPU scheduling, caching and
retries, and the cluster choices build_pipeline takes (as compile's flags)."""

import inspect
import os
import subprocess
import sys

import pytest
import yaml

from bert_core.config import PrepareCorpusConfig
from tests.conftest import ROOT

STAGES = ["resolve-start", "prepare-corpus", "learn-vocab", "create-data", "pretrain", "finetune", "evaluate",
          "publish"]


IMAGE_VARS = ("BERT_IMAGE_REGISTRY", "REGISTRY", "BERT_IMAGE_TAG", "TAG")


def _env(**over) -> dict:
    """This environment without any image setting, plus `over`."""
    return {**{k: v for k, v in os.environ.items() if k not in IMAGE_VARS}, "PYTHONPATH": str(ROOT), **over}


def _compile(tmp_path, *extra, env: dict | None = None) -> tuple[dict, dict]:
    out = tmp_path / "pipeline.yaml"
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "compile", "-o", str(out), *extra],
                          capture_output=True, text=True, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stdout
    docs = list(yaml.safe_load_all(out.read_text()))
    return docs[0], (docs[1] if len(docs) > 1 else {})


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    return _compile(tmp_path_factory.mktemp("compile"))


def _upstream(task: dict) -> set[str]:
    """Tasks whose outputs this task consumes (artifacts or parameters)."""
    inputs = task.get("inputs", {})
    found = set(task.get("dependentTasks", []))
    for kind in ("artifacts", "parameters"):
        for value in inputs.get(kind, {}).values():
            producer = value.get("taskOutputArtifact") or value.get("taskOutputParameter")
            if producer:
                found.add(producer["producerTask"])
    return found


def test_stages_follow_the_pipeline_diagram(compiled):
    spec, _ = compiled
    tasks = spec["root"]["dag"]["tasks"]
    assert sorted(tasks) == sorted(STAGES)
    assert {name: _upstream(task) for name, task in tasks.items()} == {
        "resolve-start": set(),
        "prepare-corpus": {"resolve-start"},  # the corpus snapshot: the data steps' cache key
        "learn-vocab": {"prepare-corpus", "resolve-start"},  # the published version's vocab, when continuing
        "create-data": {"prepare-corpus", "learn-vocab"},
        "pretrain": {"create-data", "learn-vocab", "resolve-start"},  # init_checkpoint
        "finetune": {"pretrain", "prepare-corpus"},
        "evaluate": {"finetune", "prepare-corpus"},
        "publish": {"pretrain", "finetune", "evaluate", "prepare-corpus", "create-data", "resolve-start"},
    }
    assert tasks["pretrain"]["inputs"]["parameters"]["init_checkpoint"]["taskOutputParameter"] == {
        "producerTask": "resolve-start", "outputParameterKey": "init_checkpoint"}
    assert tasks["prepare-corpus"]["inputs"]["parameters"]["corpus_snapshot"]["taskOutputParameter"] == {
        "producerTask": "resolve-start", "outputParameterKey": "corpus_snapshot"}
    # the JSON lines text field reaches prepare-corpus, with its CLI default
    assert tasks["prepare-corpus"]["inputs"]["parameters"]["corpus_text_field"] == {
        "componentInputParameter": "corpus_text_field"}
    # the artifacts that carry each arrow
    assert tasks["pretrain"]["inputs"]["artifacts"]["data"]["taskOutputArtifact"] == {
        "producerTask": "create-data", "outputArtifactKey": "data"}
    assert tasks["finetune"]["inputs"]["artifacts"]["pretrained"]["taskOutputArtifact"] == {
        "producerTask": "pretrain", "outputArtifactKey": "model"}
    assert tasks["evaluate"]["inputs"]["artifacts"]["predictions"]["taskOutputArtifact"] == {
        "producerTask": "finetune", "outputArtifactKey": "predictions"}
    assert [tasks[s]["taskInfo"]["name"] for s in STAGES] == [
        "resolve-start", "corpus", "vocab", "create-data", "pretrain", "finetune", "evaluate", "publish"]


def test_artifact_types(compiled):
    spec, _ = compiled
    comps = spec["components"]

    def outputs(comp):
        return {k: v["artifactType"]["schemaTitle"] for k, v in comps[comp]["outputDefinitions"]["artifacts"].items()}

    assert outputs("comp-prepare-corpus") == {"corpus": "system.Dataset", "task_data": "system.Dataset",
                                              "report": "system.Markdown", "html_report": "system.HTML"}
    assert outputs("comp-learn-vocab") == {"vocab": "system.Artifact", "report": "system.HTML"}
    assert outputs("comp-create-data") == {"data": "system.Dataset", "report": "system.HTML"}
    assert outputs("comp-pretrain") == {"model": "system.Model", "metrics": "system.Metrics", "report": "system.HTML"}
    assert outputs("comp-finetune") == {"model": "system.Model", "predictions": "system.Dataset",
                                        "metrics": "system.Metrics", "report": "system.HTML"}
    # the KFP UI draws a ClassificationMetrics artifact (confusion matrix, ROC) and shows an HTML one
    assert outputs("comp-evaluate") == {"metrics": "system.Metrics", "report": "system.HTML",
                                        "classification": "system.ClassificationMetrics"}
    assert outputs("comp-publish") == {"decision": "system.Markdown", "metrics": "system.Metrics"}
    assert outputs("comp-resolve-start") == {"corpus_lineage": "system.Artifact"}
    assert comps["comp-finetune"]["inputDefinitions"]["artifacts"]["pretrained"]["artifactType"][
        "schemaTitle"] == "system.Model"


def test_parameter_defaults_are_the_pipeline_functions(compiled):
    from pipelines.pipeline import bert_pipeline

    spec, _ = compiled
    params = spec["root"]["inputDefinitions"]["parameters"]
    signature = inspect.signature(bert_pipeline.pipeline_func).parameters
    assert set(params) == set(signature)
    kinds = {str: "STRING", int: "NUMBER_INTEGER", float: "NUMBER_DOUBLE", bool: "BOOLEAN", dict: "STRUCT"}
    for name, p in signature.items():
        assert params[name]["parameterType"] == kinds[p.annotation], name
        assert params[name]["defaultValue"] == p.default, name
    # the embedded default job, as documented
    assert params["launcher"]["defaultValue"] == "local"
    assert params["num_processes"]["defaultValue"] == 2
    assert params["bert_model"]["defaultValue"] == "bert-tiny"
    assert params["corpus_uri"]["defaultValue"] == ""
    assert params["corpus_text_field"]["defaultValue"] == PrepareCorpusConfig.model_fields["text_field"].default
    assert params["vocab_uri"]["defaultValue"] == ""
    assert params["phase2_max_seq_length"]["defaultValue"] == 512
    assert params["registry_uri"]["defaultValue"] == "runs/registry"
    assert params["init_from"]["defaultValue"] == "published"


def test_images_resources_caching_and_retries(compiled):
    from components import images

    spec, platform = compiled
    executors = spec["deploymentSpec"]["executors"]
    expected = {"prepare-corpus": "data", "learn-vocab": "data", "create-data": "data", "pretrain": "pretrain",
                "finetune": "finetune", "evaluate": "evaluate", "resolve-start": "data", "publish": "finetune"}
    for task, stage in expected.items():
        container = executors[f"exec-{task}"]["container"]
        assert container["image"] == images.image(stage), task
        assert "pip install" not in " ".join(container["command"]), task  # the image carries kfp
        assert container["resources"]["cpuRequest"] > 0 and container["resources"]["memoryRequest"] > 0
    for task in ("pretrain", "finetune"):
        assert executors[f"exec-{task}"]["container"]["resources"]["accelerator"]["resourceType"] == "amd.com/gpu"
    tasks = spec["root"]["dag"]["tasks"]
    for task in ("prepare-corpus", "learn-vocab", "create-data"):
        assert tasks[task]["cachingOptions"].get("enableCache") is True, task
        assert tasks[task]["retryPolicy"]["maxRetryCount"] == 2, task
    for task in ("resolve-start", "pretrain", "finetune", "evaluate", "publish"):
        assert not tasks[task]["cachingOptions"].get("enableCache"), task
    assert tasks["pretrain"]["retryPolicy"]["maxRetryCount"] == 1

    from components.mpijob import PretrainJob

    job = PretrainJob(pretrain_flags={"input_file": "gs://b/d/*", "output_dir": "gs://b/o", "model": "bert-tiny",
                                      "do_train": True})
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for task in ("exec-pretrain", "exec-finetune"):
        assert k8s[task]["nodeSelector"]["labels"] == job.node_selector
        assert k8s[task]["tolerations"] == [t.model_dump(exclude_none=True) for t in job.tolerations]
    assert "exec-create-data" not in k8s  # CPU steps go anywhere


def test_the_mpijob_uses_the_images_the_pipeline_was_compiled_for(tmp_path):
    """The pretraining step builds its PretrainJob inside its pod, where no REGISTRY/TAG is set unless
    the compiled pipeline sets it: run that construction with exactly the step's compiled env."""
    spec, _ = _compile(tmp_path, env=_env(REGISTRY="registry.example.com/ml", TAG="v7"))
    container = spec["deploymentSpec"]["executors"]["exec-pretrain"]["container"]
    assert container["image"] == "registry.example.com/ml/bert-pretrain:v7"
    step_env = {e["name"]: e["value"] for e in container.get("env", [])}
    code = ("from components.mpijob import PretrainJob\n"
            "print(PretrainJob(pretrain_flags={'input_file': 'gs://b/d/*', 'output_dir': 'gs://b/o',\n"
            "                                  'model': 'bert-tiny', 'do_train': True}).image)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env=_env(**step_env))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == container["image"]


def test_two_phase_pipeline(tmp_path):
    spec, _ = _compile(tmp_path, "--phase2")
    assert spec["pipelineInfo"]["name"] == "bert-pipeline-two-phase"
    tasks = spec["root"]["dag"]["tasks"]
    assert _upstream(tasks["pretrain-phase2"]) == {"create-data-2", "learn-vocab", "pretrain"}
    assert tasks["pretrain-phase2"]["inputs"]["artifacts"]["init_model"]["taskOutputArtifact"] == {
        "producerTask": "pretrain", "outputArtifactKey": "model"}
    assert tasks["create-data-2"]["inputs"]["parameters"]["max_seq_length"] == {
        "componentInputParameter": "phase2_max_seq_length"}
    assert tasks["finetune"]["inputs"]["artifacts"]["pretrained"]["taskOutputArtifact"]["producerTask"] == \
        "pretrain-phase2"
    phase2_outputs = spec["components"]["comp-pretrain-phase2"]["outputDefinitions"]["artifacts"]
    assert phase2_outputs["report"]["artifactType"]["schemaTitle"] == "system.HTML"


def test_docs_list_every_parameter_with_its_default():
    import json
    import re

    from pipelines.pipeline import bert_pipeline

    text = (ROOT / "docs" / "pipeline.md").read_text()
    documented = dict(re.findall(r"^\| `(\w+)` \| `([^`]*)` \|", text, flags=re.M))
    signature = inspect.signature(bert_pipeline.pipeline_func).parameters
    assert set(documented) == set(signature)
    for name, p in signature.items():
        assert json.loads(documented[name]) == p.default, name


def test_the_pipeline_docs_name_only_documents_in_the_repository():
    import re

    paths = [ROOT / "docs" / "pipeline.md", ROOT / "docs" / "cluster.md", *sorted((ROOT / "pipelines").glob("*.py"))]
    for path in paths:
        for name in re.findall(r"[\w./-]+\.md\b", path.read_text()):
            assert (ROOT / name).exists() or (path.parent / name).exists(), f"{path.relative_to(ROOT)} names {name}"


def _compile_in_process(tmp_path, **build) -> tuple[dict, dict]:
    from kfp import compiler

    from pipelines.pipeline import build_pipeline

    out = tmp_path / "pipeline.yaml"
    compiler.Compiler().compile(build_pipeline(**build), str(out))
    docs = list(yaml.safe_load_all(out.read_text()))
    return docs[0], (docs[1] if len(docs) > 1 else {})


def test_a_key_secret_reaches_every_step(tmp_path):
    """Mounted where GOOGLE_APPLICATION_CREDENTIALS points; the launcher step passes it on to its MPIJob."""
    from components.mpijob import GCS_KEY_DIR

    spec, platform = _compile_in_process(tmp_path, gcs_key_secret="gcp-sa-key")
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name, executor in spec["deploymentSpec"]["executors"].items():
        env = {e["name"]: e["value"] for e in executor["container"].get("env", [])}
        assert env["GOOGLE_APPLICATION_CREDENTIALS"] == f"{GCS_KEY_DIR}/key.json", name
        (mount,) = k8s[name]["secretAsVolume"]
        assert (mount["secretName"], mount["mountPath"]) == ("gcp-sa-key", GCS_KEY_DIR), name
    spec, platform = _compile_in_process(tmp_path)
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert not any("secretAsVolume" in e for e in k8s.values()), "no key: Workload Identity"


def test_kfps_minio_secret_reaches_every_step(tmp_path):
    """minio:// (KFP's default pipeline root) needs KFP's MinIO keys in every step, where
    bert_core.storage_s3 reads them; the launcher step passes them on to its MPIJob."""
    from bert_core.storage_s3 import MINIO_SECRET_DIR

    spec, platform = _compile_in_process(tmp_path, minio_secret="mlpipeline-minio-artifact")
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(k8s) == set(spec["deploymentSpec"]["executors"])
    for name, executor in k8s.items():
        (mount,) = executor["secretAsVolume"]
        assert (mount["secretName"], mount["mountPath"]) == ("mlpipeline-minio-artifact", MINIO_SECRET_DIR), name


def test_gpu_steps_get_a_real_dev_shm(tmp_path):
    """A container's /dev/shm is 64 MiB; RCCL needs far more (kfp.kubernetes.empty_dir_mount)."""
    from pipelines.pipeline import STEP_SHM_SIZE

    _, platform = _compile_in_process(tmp_path)
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name in ("exec-pretrain", "exec-finetune"):
        assert k8s[name]["emptyDirMounts"] == [{"volumeName": "dshm", "mountPath": "/dev/shm",
                                                "medium": "Memory", "sizeLimit": STEP_SHM_SIZE}], name


def test_the_mpijob_build_launches_from_the_launcher_image_on_any_node(tmp_path):
    from components import images

    spec, platform = _compile_in_process(tmp_path, mpijob=True)
    container = spec["deploymentSpec"]["executors"]["exec-pretrain"]["container"]
    assert container["image"] == images.image("launcher")
    assert "accelerator" not in container["resources"]
    assert {e["name"]: e["value"] for e in container["env"]} == images.env()
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert "exec-pretrain" not in k8s, "no GPU node selector, toleration or /dev/shm for an API client"
    assert "nodeSelector" in k8s["exec-finetune"]
    launcher = spec["root"]["dag"]["tasks"]["pretrain"]["inputs"]["parameters"]["launcher"]
    assert launcher["runtimeValue"]["constant"] == "mpijob"


def test_the_launcher_step_runs_without_tensorflow(tmp_path):
    """What the pretraining component does with launcher=mpijob, in a process where TensorFlow, Horovod,
    numpy and tokenizers cannot be imported (the launcher image has none), up to the MPIJob."""
    data, vocab, model = tmp_path / "data", tmp_path / "vocab.txt", tmp_path / "model"
    data.mkdir()
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"]) + "\n")
    code = f"""
import json, sys
for m in ("tensorflow", "keras", "horovod", "numpy", "tokenizers", "mpi4py"):
    sys.modules[m] = None
import components.launcher
from bert_core import storage

# gs://b/... is {str(tmp_path)!r}/... here: the step's storage calls, without a GCS server
local = lambda p: p.replace("gs://b", {str(tmp_path)!r})
for name in ("makedirs", "write_text", "read_json"):
    setattr(storage, name, (lambda f: lambda p, *a: f(local(p), *a))(getattr(storage, name)))
copy = storage.copy
storage.copy = lambda src, dst: copy(src, local(dst))

def launch(job, timeout_seconds=None):  # what the MPIJob's `bert pretrain` leaves in its output
    from bert_core import layout
    from bert_core.presets import preset_config

    layout.write_model_dir(job.pretrain_flags["output_dir"], preset_config(job.pretrain_flags["model"]), None)
    with open(local(job.pretrain_flags["output_dir"]) + "/pretrain_metrics.json", "w") as f:
        json.dump({{"global_step": 600, "world_size": job.num_ranks, "loss": 1.5}}, f)
    print("IMAGE", job.image)
    return job.checkpoint_location

components.launcher.launch = launch

class Artifact:
    def __init__(self, path, uri=""):
        self.path, self.uri = path, uri
        self.metadata = {{}}
        self.logged = {{}}
    def log_metric(self, key, value):
        self.logged[key] = value

from components.common import run_pretraining
model, metrics = Artifact({str(model)!r}, "gs://b/model"), Artifact("")
run_pretraining(data=Artifact({str(data)!r}, "gs://b/data"), vocab=Artifact({str(vocab)!r}), model=model,
                metrics=metrics,
                launcher="mpijob", num_processes=1, bert_model="bert-tiny", bert_config={{}}, mpijob_workers=2,
                mpijob_gpus_per_worker=8, timeout_seconds=0, max_seq_length=64, max_predictions_per_seq=10,
                train_batch_size=16, learning_rate=3e-4, num_train_steps=600, num_warmup_steps=60,
                optimizer_type="adam", dtype="fp32", num_accumulation_steps=1, save_checkpoints_steps=1000,
                log_every_steps=100, max_eval_steps=20, random_seed=1)
print("METRICS", metrics.logged)
print("MODEL", model.metadata)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env=_env(REGISTRY="registry.example.com/ml", TAG="v7"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "IMAGE registry.example.com/ml/bert-pretrain:v7" in proc.stdout
    assert "'world_size': 16.0" in proc.stdout
    assert "'hidden_size': 128" in proc.stdout and "'world_size': 16" in proc.stdout.split("MODEL")[1]


def test_image_pull_secrets_reach_every_step(tmp_path):
    """A private registry: every step pulls with the secret, and the launcher passes it to the MPIJob."""
    spec, platform = _compile_in_process(tmp_path, image_pull_secrets=("regcred",))
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name in spec["deploymentSpec"]["executors"]:
        assert [s["secretName"] for s in k8s[name]["imagePullSecret"]] == ["regcred"], name


def assert_cluster_build(spec: dict, platform: dict, key_secret: str, pull_secrets: list[str]) -> None:
    """The IR of a pipeline built with --mpijob, --gcs-key-secret KEY_SECRET and --image-pull-secret
    (each of PULL_SECRETS): the launch step on the launcher image without a GPU, launcher=mpijob, and
    the key and pull secrets on every step."""
    from components import images
    from components.mpijob import GCS_KEY_DIR

    executors = spec["deploymentSpec"]["executors"]
    assert executors["exec-pretrain"]["container"]["image"] == images.image("launcher")
    assert "accelerator" not in executors["exec-pretrain"]["container"]["resources"]
    assert spec["root"]["dag"]["tasks"]["pretrain"]["inputs"]["parameters"]["launcher"] == {
        "runtimeValue": {"constant": "mpijob"}}
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name, executor in executors.items():
        env = {e["name"]: e["value"] for e in executor["container"].get("env", [])}
        assert env["GOOGLE_APPLICATION_CREDENTIALS"] == f"{GCS_KEY_DIR}/key.json", name
        assert [(m["secretName"], m["mountPath"]) for m in k8s[name]["secretAsVolume"]] == [
            (key_secret, GCS_KEY_DIR)], name
        assert [s["secretName"] for s in k8s[name]["imagePullSecret"]] == pull_secrets, name


def test_compile_flags_reach_the_ir(tmp_path):
    """compile's flags are build_pipeline's cluster choices: the launch step on the launcher image, a key
    Secret, pull secrets, and no cached step (what `schedule` uploads)."""
    spec, platform = _compile(tmp_path, "--mpijob", "--gcs-key-secret", "gcp-sa-key", "--image-pull-secret",
                              "regcred", "--no-cache")
    assert_cluster_build(spec, platform, "gcp-sa-key", ["regcred"])
    tasks = spec["root"]["dag"]["tasks"]
    assert not any(task.get("cachingOptions", {}).get("enableCache") for task in tasks.values())


@pytest.mark.parametrize("phase2", [False, True])
def test_the_run_records_lineage_is_in_run_order(phase2):
    """run.json's lineage (and so report.html's table) lists each task's outputs after those of the
    tasks it uses, and every artifact once: the order a person follows the run in."""
    from pipelines.cli import _pipeline
    from pipelines.run_record import lineage

    rows = lineage(_pipeline(phase2))
    producers = list(dict.fromkeys(r["producer"] for r in rows))
    assert producers[:4] == ["resolve-start", "prepare-corpus", "learn-vocab", "create-data"]
    assert producers[-2:] == ["evaluate", "publish"]
    for row in rows:
        assert all(producers.index(c) > producers.index(row["producer"]) for c in row["consumers"]), row
    assert len({r["artifact"] for r in rows}) == len(rows)
