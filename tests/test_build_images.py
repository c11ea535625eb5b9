"""scripts/build_images.py without building: the flavour's Dockerfile, the rebuild decision's hash, the pip
configuration it hands to the RUN steps (a real `pip config list`), and the builder command lines.
The builds themselves run in `make test-images` (scripts/test_images.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import build_images  # noqa: E402  (scripts/build_images.py)


def test_the_flavour_changes_only_the_base():
    docker = ROOT / "docker"
    assert build_images.dockerfile("base", "rocm") == docker / "Dockerfile.base"
    assert build_images.dockerfile("base", "cpu") == docker / "Dockerfile.base-cpu"
    for stage in ("data", "pretrain", "finetune", "evaluate", "launcher"):
        assert build_images.dockerfile(stage, "cpu") == build_images.dockerfile(stage, "rocm")
        assert build_images.dockerfile(stage, "cpu").exists()


def test_inputs_hash_follows_the_allowed_context_only(tmp_path, monkeypatch):
    (tmp_path / "docker").mkdir()
    (tmp_path / "pkg").mkdir()
    dockerfile = tmp_path / "docker" / "Dockerfile.x"
    dockerfile.write_text("FROM scratch\n")
    (tmp_path / "docker" / "Dockerfile.x.dockerignore").write_text("*\n!pkg\n**/__pycache__\n")
    (tmp_path / "pkg" / "a.py").write_text("a = 1\n")
    (tmp_path / "other.txt").write_text("not sent\n")
    monkeypatch.setattr(build_images, "ROOT", tmp_path)

    first = build_images.inputs_hash(dockerfile, {"A": "1"}, "parent1")
    (tmp_path / "other.txt").write_text("changed, still not sent\n")
    (tmp_path / "pkg" / "__pycache__").mkdir()
    (tmp_path / "pkg" / "__pycache__" / "a.pyc").write_bytes(b"\0")
    assert build_images.inputs_hash(dockerfile, {"A": "1"}, "parent1") == first
    assert build_images.inputs_hash(dockerfile, {"A": "2"}, "parent1") != first
    assert build_images.inputs_hash(dockerfile, {"A": "1"}, "parent2") != first   # a rebuilt base
    (tmp_path / "pkg" / "a.py").write_text("a = 2\n")
    assert build_images.inputs_hash(dockerfile, {"A": "1"}, "parent1") != first


def test_host_pip_config_becomes_secrets_and_read_only_mounts(tmp_path, monkeypatch):
    index = tmp_path / "mirror" / "simple"
    index.mkdir(parents=True)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    conf = tmp_path / "host-pip.conf"
    conf.write_text(f"[global]\nextra-index-url = file://{index}\nfind-links = {wheels}\ncert = {ca}\n"
                    f"constraint = {tmp_path / 'host-only.txt'}\n")
    for var in [v for v in os.environ if v.startswith("PIP_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    monkeypatch.setenv("PIP_DEFAULT_TIMEOUT", "99")

    out, found_ca, volumes = build_images.host_pip_config(tmp_path)
    text = out.read_text()
    assert text.startswith("[global]\n")
    assert f"extra-index-url = file://{index}\n" in text and f"find-links = {wheels}\n" in text
    assert f"cert = {build_images.PIP_CA_TARGET}\n" in text and "timeout = 99\n" in text
    assert "constraint" not in text          # a path on this machine; the images pin from pyproject.toml
    assert found_ca == ca
    # the index's parent (its files sit beside simple/) and the wheel directory, read-only
    assert sorted(volumes) == sorted([f"{index.parent}:{index.parent}:ro", f"{wheels}:{wheels}:ro"])


def test_builder_command_lines(tmp_path):
    path = ROOT / "docker" / "Dockerfile.data"
    secrets = {"pip.conf": tmp_path / "pip.conf"}
    buildah = build_images.Builder("buildah").build_command(
        path, "r/bert-data:1", {"PYTHON_IMAGE": "py"}, {"l": "v"}, secrets, ["/opt/w:/opt/w:ro"])
    assert buildah[:2] == ["buildah", "bud"] and buildah[-1] == str(ROOT)
    assert "--isolation" in buildah and "--layers=false" in buildah
    assert buildah[buildah.index("--ignorefile") + 1] == str(path) + ".dockerignore"
    assert buildah[buildah.index("--secret") + 1] == f"id=pip.conf,src={tmp_path / 'pip.conf'}"
    assert buildah[buildah.index("--volume") + 1] == "/opt/w:/opt/w:ro"
    docker = build_images.Builder("docker").build_command(path, "r/bert-data:1", {}, {}, secrets, [])
    assert docker[:2] == ["docker", "build"] and "--volume" not in docker and "--isolation" not in docker
    with pytest.raises(SystemExit, match="cannot mount local package directories"):
        build_images.Builder("docker").build_command(path, "t", {}, {}, {}, ["/opt/w:/opt/w:ro"])
