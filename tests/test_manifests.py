"""manifests/: the committed YAML is the renderer's output; RBAC is least privilege; every object is valid
(MPIJobs against the CRD and mpi-operator's rules, core kinds with kubernetes-validate); each overlay builds
with `kubectl kustomize` where kubectl is installed."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from components import images, launcher
from components.mpijob import IMAGE_UID, load_job, render
from k8s_validation import CRD_PATH, core_problems, mpijob_problems

ROOT = Path(__file__).resolve().parent.parent
OVERLAYS = ("small", "large")


def _load_script():
    spec = importlib.util.spec_from_file_location("render_manifests", ROOT / "scripts" / "render_manifests.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def default_images(monkeypatch):
    """Committed manifests use components/images.py's defaults: no REGISTRY/TAG override here."""
    for var in ("BERT_IMAGE_REGISTRY", "REGISTRY", "BERT_IMAGE_TAG", "TAG"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture()
def script(default_images):
    return _load_script()


def docs_of(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_committed_manifests_equal_the_renderers_output(script):
    stale = script.stale_files()
    assert stale == [], f"re-render with `make manifests`: {stale}"
    # and --check says so too, as CI would run it
    assert script.main(["--check"]) == 0


def test_check_notices_a_hand_edit(script, tmp_path):
    for rel, text in script.render_all().items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert script.stale_files(tmp_path) == []
    edited = tmp_path / "manifests/overlays/large/mpijob.yaml"
    edited.write_text(edited.read_text().replace("replicas: 4", "replicas: 5"))
    assert script.stale_files(tmp_path) == ["manifests/overlays/large/mpijob.yaml"]


def test_overlays_size_and_validity(default_images):
    workers = {}
    for overlay in OVERLAYS:
        (mpijob,) = docs_of(ROOT / f"manifests/overlays/{overlay}/mpijob.yaml")
        if CRD_PATH.exists():
            assert mpijob_problems(mpijob) == [], overlay
        workers[overlay] = mpijob["spec"]["mpiReplicaSpecs"]["Worker"]["replicas"]
        # the CronJob's job spec renders to the very MPIJob that `kubectl apply` creates
        spec = load_job(yaml.safe_load((ROOT / f"manifests/overlays/{overlay}/pretrain-job.yaml").read_text()))
        assert render(spec) == mpijob
        assert mpijob["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]["image"] \
            == images.image("pretrain")
    assert workers["small"] == 1 and workers["large"] > 1


def test_rbac_is_exactly_the_launchers_permissions():
    docs = {d["kind"]: d for d in docs_of(ROOT / "manifests/base/rbac.yaml")}
    assert set(docs) == {"ServiceAccount", "Role", "RoleBinding"}, "namespaced only: no ClusterRole"
    granted = {(g, r, v) for rule in docs["Role"]["rules"] for g in rule["apiGroups"]
               for r in rule["resources"] for v in rule["verbs"]}
    # what tests/test_launcher.py sees the launcher use against a Kubernetes API, and no more
    assert granted == {
        ("kubeflow.org", "mpijobs", "create"), ("kubeflow.org", "mpijobs", "get"),
        ("kubeflow.org", "mpijobs", "list"), ("kubeflow.org", "mpijobs", "delete"),
        ("", "pods", "get"), ("", "pods", "list"), ("", "pods/log", "get"),
    }
    assert not any("*" in x for triple in granted for x in triple)
    assert all("resourceNames" not in rule for rule in docs["Role"]["rules"])
    binding = docs["RoleBinding"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": docs["Role"]["metadata"]["name"]}
    assert binding["subjects"][0]["name"] == docs["ServiceAccount"]["metadata"]["name"] == launcher.SERVICE_ACCOUNT


def test_cronjob_runs_the_launcher_as_its_service_account(default_images):
    (cron,) = docs_of(ROOT / "manifests/base/cronjob.yaml")
    assert cron["kind"] == "CronJob"
    fields = cron["spec"]["schedule"].split()
    assert len(fields) == 5, "Kubernetes cron has 5 fields (KFP's has 6)"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"]["timeZone"] == "Etc/UTC", "the schedule means UTC, not the controller's local time"
    template = cron["spec"]["jobTemplate"]["spec"]["template"]
    assert template["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false", \
        "an Istio sidecar would keep the launcher's Job from completing"
    pod = template["spec"]
    assert pod["serviceAccountName"] == launcher.SERVICE_ACCOUNT
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == IMAGE_UID
    (container,) = pod["initContainers"]  # the launcher first; then publish
    assert container["image"] == images.image("launcher")
    assert container["command"] == ["python", "-m", "components.launcher"]
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]}
    assert env == {"POD_NAME": "metadata.name", "POD_UID": "metadata.uid", "POD_NAMESPACE": "metadata.namespace"}
    # the args are ones the launcher's own parser accepts, and point at the mounted job spec
    args = container["args"]
    spec_path = Path(args[args.index("--spec") + 1])
    mount = next(m for m in container["volumeMounts"] if spec_path.is_relative_to(m["mountPath"]))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == "bert-pretrain-job"
    timeout = float(args[args.index("--timeout") + 1])
    assert cron["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] > timeout, \
        "the launcher must time out (and delete its MPIJob) before Kubernetes kills its pod"


def test_cronjob_publishes_what_the_launcher_trained_through_the_gate(default_images):
    """The launcher writes where the model went (--location_file, on a volume both containers mount);
    the main container is `bert publish` with that directory, the registry's settings from the
    bert-publish ConfigMap, and flags `bert publish` accepts."""
    import shlex

    from bert_core.cli import build_parser, config_from_args
    from bert_core.config import PublishConfig

    (cron,) = docs_of(ROOT / "manifests/base/cronjob.yaml")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (launcher_container,) = pod["initContainers"]
    (publish,) = pod["containers"]
    args = launcher_container["args"]
    location = args[args.index("--location_file") + 1]
    shared = {m["name"] for m in launcher_container["volumeMounts"] if location.startswith(m["mountPath"])}
    assert shared and shared <= {m["name"] for m in publish["volumeMounts"]}
    assert publish["image"] == images.image("finetune")  # it scores models: TensorFlow
    assert publish["command"][:2] == ["sh", "-c"]
    words = shlex.split(publish["command"][2])
    assert words[:5] == ["exec", "python", "-m", "bert_core.cli", "publish"]
    assert f"--model_dir=$(cat {location})" in words
    # every flag is one `bert publish` parses, with the shell's values standing in
    env = {e["name"]: e.get("value", "x") for e in publish["env"]}
    env.update({"BERT_REGISTRY": "/r", "BERT_MODEL_NAME": "m", "BERT_GATE_RULE": "masked-LM loss not worse",
                "BERT_HELDOUT_DOCUMENTS": "/h", "POD_NAME": "p"})
    flags = [w.split("=", 1)[0] + "=" + env.get(w.split("=", 1)[1].strip("$\""), "/model") for w in words[5:]]
    config = config_from_args(PublishConfig, build_parser().parse_args(["publish", *flags]))
    assert (config.registry, config.model_dir, config.run_id, config.max_seq_length) == ("/r", "/model", "p", 128)
    assert publish["envFrom"] == [{"configMapRef": {"name": "bert-publish"}}]
    kustomization = yaml.safe_load((ROOT / "manifests/base/kustomization.yaml").read_text())
    literals = next(g for g in kustomization["configMapGenerator"] if g["name"] == "bert-publish")["literals"]
    assert {l.split("=", 1)[0] for l in literals} == {"BERT_REGISTRY", "BERT_MODEL_NAME", "BERT_GATE_RULE",
                                                      "BERT_HELDOUT_DOCUMENTS"}


@pytest.mark.parametrize("path", ["manifests/base/rbac.yaml", "manifests/base/cronjob.yaml"])
def test_core_kinds_are_valid(path):
    for doc in docs_of(ROOT / path):
        assert core_problems(doc) == []


def test_core_validation_is_not_vacuous():
    (cron,) = docs_of(ROOT / "manifests/base/cronjob.yaml")
    cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["initContainers"][0]["imagePullPolicy"] = 3
    assert core_problems(cron)


def test_images_setting_has_env_overrides(monkeypatch, default_images):
    assert images.image("pretrain").startswith(images.DEFAULT_REGISTRY + "/bert-pretrain:")
    monkeypatch.setenv("BERT_IMAGE_REGISTRY", "ghcr.io/acme/")
    monkeypatch.setenv("BERT_IMAGE_TAG", "v2")
    assert images.image("data") == "ghcr.io/acme/bert-data:v2"
    with pytest.raises(ValueError, match="unknown image stage"):
        images.image("train")
    # base-cpu: the CPU flavour of the base (scripts/build_images.py --flavour cpu), not a stage
    dockerfiles = {p.name.split(".", 1)[1] for p in (ROOT / "docker").glob("Dockerfile.*")
                   if not p.name.endswith(".dockerignore")}
    assert set(images.STAGES) | {"base-cpu"} == dockerfiles


def _kustomize_version() -> tuple[int, ...] | None:
    kubectl = shutil.which("kubectl")
    if not kubectl:
        return None
    try:
        out = subprocess.run([kubectl, "version", "--client", "-o", "json"], capture_output=True, text=True,
                             timeout=60)
        version = json.loads(out.stdout).get("kustomizeVersion", "")
    except (subprocess.SubprocessError, ValueError):
        return None
    m = re.search(r"v?(\d+)\.(\d+)", version)
    return tuple(int(x) for x in m.groups()) if m else None


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubectl_kustomize_builds_each_overlay(overlay, default_images):
    version = _kustomize_version()
    if version is None:
        pytest.skip("kubectl is not installed (Debian: apt-get install kubernetes-client); "
                    "kustomize build of the overlays not checked")
    if version < (4, 0):
        pytest.skip(f"kubectl's kustomize {version} predates v4 (configMapGenerator behavior: replace, "
                    f"directories in resources); use kubectl >= 1.21")
    out = subprocess.run(["kubectl", "kustomize", str(ROOT / f"manifests/overlays/{overlay}")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    assert sorted(by_kind) == ["ConfigMap", "CronJob", "MPIJob", "Role", "RoleBinding", "ServiceAccount"]
    publish_settings = [c for c in by_kind["ConfigMap"] if c["metadata"]["name"].startswith("bert-publish")]
    by_kind["ConfigMap"] = [c for c in by_kind["ConfigMap"] if c not in publish_settings]
    (settings,) = publish_settings
    assert set(settings["data"]) == {"BERT_REGISTRY", "BERT_MODEL_NAME", "BERT_GATE_RULE", "BERT_HELDOUT_DOCUMENTS"}
    (cron_job,) = by_kind["CronJob"]
    cron_pod = cron_job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert cron_pod["containers"][0]["envFrom"][0]["configMapRef"]["name"] == settings["metadata"]["name"]
    data_volume = next(v for v in cron_pod["volumes"] if v["name"] == "data")
    assert ("emptyDir" in data_volume) == (overlay == "large")  # large keeps everything on gs://
    namespaces = {d["metadata"].get("namespace") for d in docs}
    assert len(namespaces) == 1 and None not in namespaces, "one namespace for everything"
    (namespace,) = namespaces
    (binding,) = by_kind["RoleBinding"]
    assert binding["subjects"][0]["namespace"] == namespace

    (mpijob,) = by_kind["MPIJob"]
    expected = docs_of(ROOT / f"manifests/overlays/{overlay}/mpijob.yaml")[0]
    expected["metadata"]["namespace"] = namespace
    assert mpijob == expected, "kustomize must not alter the rendered MPIJob"
    if CRD_PATH.exists():
        assert mpijob_problems(mpijob) == []

    # the CronJob mounts the overlay's job spec (kustomize's hashed ConfigMap name is followed)
    (configmap,) = by_kind["ConfigMap"]
    (cron,) = by_kind["CronJob"]
    volumes = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["volumes"]
    assert volumes[0]["configMap"]["name"] == configmap["metadata"]["name"]
    spec = load_job(yaml.safe_load(configmap["data"]["pretrain-job.yaml"]))
    assert render(spec) == docs_of(ROOT / f"manifests/overlays/{overlay}/mpijob.yaml")[0]
    for doc in docs:
        if doc["kind"] != "MPIJob":
            assert core_problems(doc) == []
