#!/usr/bin/env python3
"""Build the stage images with docker or buildah, in the ROCm flavour (the product) or the CPU flavour.

    python3 scripts/build_images.py [--flavour rocm|cpu] [--builder docker|buildah|podman] [STAGE ...]

`make images` runs this. Names come from components/images.py (REGISTRY, TAG); the CPU flavour's tag
defaults to `<version>-cpu`. The flavour only changes the base: docker/Dockerfile.base (ROCm TensorFlow,
Horovod over RCCL) or docker/Dockerfile.base-cpu (TensorFlow CPU, Horovod with MPI and Gloo); pretrain
and finetune are built FROM that base, data/evaluate/launcher FROM --python-image.

The builder: docker when its daemon answers, else buildah (`--isolation chroot` unless BUILDAH_ISOLATION
says otherwise), else podman. pip's configuration reaches the RUN steps as the build secrets `pip.conf`
and `pip-ca` (--pip-config, --pip-ca; --host-pip derives both from this machine's `pip config list`),
never as files in an image. Local package directories it names are bind-mounted read-only (buildah and
podman only: docker build mounts nothing).

An image is rebuilt only when its inputs change: each is labelled with a hash of its Dockerfile, the
files its .dockerignore allows, the build arguments and the image it is built FROM.
Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from components import images  # noqa: E402  (standard library only)

INPUTS_LABEL = "org.bert-kubeflow.inputs"
DEFAULT_PYTHON_IMAGE = "python:3.12-slim-bookworm"
PIP_CA_TARGET = "/run/secrets/pip-ca"   # where RUN --mount=type=secret,id=pip-ca puts the CA bundle


def dockerfile(stage: str, flavour: str) -> Path:
    name = "base-cpu" if (stage, flavour) == ("base", "cpu") else stage
    return ROOT / "docker" / f"Dockerfile.{name}"


def context_files(path: Path) -> list[Path]:
    """The files the Dockerfile's allow-list .dockerignore sends (`*`, then `!path` lines)."""
    ignore = Path(str(path) + ".dockerignore").read_text().splitlines()
    files: list[Path] = []
    for line in ignore:
        if not line.startswith("!"):
            continue
        target = ROOT / line[1:]
        if target.is_file():
            files.append(target)
        elif target.is_dir():
            files += sorted(p for p in target.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return files


def inputs_hash(path: Path, build_args: dict[str, str], parent_id: str) -> str:
    digest = hashlib.sha256()
    for item in [path, *context_files(path)]:
        digest.update(str(item.relative_to(ROOT)).encode() + b"\0" + item.read_bytes() + b"\0")
    for key in sorted(build_args):
        digest.update(f"{key}={build_args[key]}\0".encode())
    digest.update(parent_id.encode())
    return digest.hexdigest()[:16]


class Builder:
    def __init__(self, name: str):
        self.name = name

    @staticmethod
    def pick() -> "Builder":
        if shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
            return Builder("docker")
        for name in ("buildah", "podman"):
            if shutil.which(name):
                return Builder(name)
        raise SystemExit("build_images: no image builder: install docker (with its daemon), buildah or podman")

    def inspect(self, image: str, fmt: str) -> str | None:
        cmd = {"docker": ["docker", "image", "inspect", "--format", fmt, image],
               "buildah": ["buildah", "inspect", "--type", "image", "--format", fmt, image],
               "podman": ["podman", "image", "inspect", "--format", fmt, image]}[self.name]
        out = subprocess.run(cmd, capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else None

    def label(self, image: str) -> str | None:
        config = ".OCIv1.Config.Labels" if self.name == "buildah" else ".Config.Labels"
        return self.inspect(image, "{{index %s %q}}".replace("%s", config).replace("%q", f'"{INPUTS_LABEL}"'))

    def image_id(self, image: str) -> str:
        return self.inspect(image, "{{.FromImageID}}" if self.name == "buildah" else "{{.Id}}") or image

    def build_command(self, path: Path, tag: str, build_args: dict[str, str], labels: dict[str, str],
                      secrets: dict[str, Path], volumes: list[str]) -> list[str]:
        if self.name == "docker":
            cmd = ["docker", "build"]
            if volumes:
                raise SystemExit("build_images: docker build cannot mount local package directories "
                                 f"({', '.join(volumes)}); serve them over HTTP(S) or use buildah")
        else:
            cmd = [self.name, "build" if self.name == "podman" else "bud", "--layers=false",
                   "--isolation", os.environ.get("BUILDAH_ISOLATION", "chroot"),
                   "--ignorefile", str(path) + ".dockerignore"]
            cmd += [arg for v in volumes for arg in ("--volume", v)]
        cmd += ["-f", str(path), "-t", tag]
        cmd += [arg for k, v in build_args.items() for arg in ("--build-arg", f"{k}={v}")]
        cmd += [arg for k, v in labels.items() for arg in ("--label", f"{k}={v}")]
        cmd += [arg for k, v in secrets.items() for arg in ("--secret", f"id={k},src={v}")]
        return cmd + [str(ROOT)]


def host_pip_config(workdir: Path) -> tuple[Path, Path | None, list[str]]:
    """pip.conf for the RUN steps from this machine's pip configuration, its CA bundle, the local
    directories to mount. The `constraint` setting is left out: the images pin from pyproject.toml."""
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
    settings: dict[str, str] = {}
    for line in out.stdout.splitlines():  # e.g. global.find-links='/opt/wheels', :env:.cert='...'
        m = re.match(r"^[^.]*\.([a-z-]+)='(.*)'$", line.strip())
        if m:
            settings[m.group(1)] = m.group(2)   # later scopes (env) win, as in pip
    keep = {"index-url", "extra-index-url", "find-links", "trusted-host", "timeout", "default-timeout", "cert"}
    ca, volumes, lines = None, [], ["[global]"]
    for key, value in settings.items():
        if key not in keep:
            continue
        if key == "cert":
            ca, value = Path(value), PIP_CA_TARGET
        for word in value.split() if key != "cert" else []:
            local = Path(word.removeprefix("file://"))
            if local.is_absolute() and local.is_dir():
                # a PEP 503 index (.../simple) links to files beside it: mount its parent
                mount = local.parent if local.name == "simple" else local
                if f"{mount}:{mount}:ro" not in volumes:
                    volumes.append(f"{mount}:{mount}:ro")
        lines.append(f"{'timeout' if key == 'default-timeout' else key} = {value}")
    conf = workdir / "pip.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf, ca, volumes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("stages", nargs="*", help=f"default: all ({' '.join(images.STAGES)})")
    parser.add_argument("--flavour", choices=("rocm", "cpu"), default="rocm")
    parser.add_argument("--builder", choices=("docker", "buildah", "podman"))
    parser.add_argument("--python-image", default=DEFAULT_PYTHON_IMAGE,
                        help="FROM of the CPU images (data, evaluate, launcher) and of the CPU flavour's base")
    parser.add_argument("--rocm-tf-tag", help="rocm/tensorflow tag of the ROCm base (docs/cluster.md)")
    parser.add_argument("--pip-config", type=Path, help="pip.conf for the RUN steps (build secret pip.conf)")
    parser.add_argument("--pip-ca", type=Path, help="CA bundle for pip (build secret pip-ca); "
                        f"name it in pip.conf as cert = {PIP_CA_TARGET}")
    parser.add_argument("--host-pip", action="store_true", help="derive both from this machine's pip config")
    parser.add_argument("--volume", action="append", default=[], help="SRC:DST[:ro] for RUN steps (buildah)")
    parser.add_argument("--force", action="store_true", help="rebuild even when the inputs are unchanged")
    args = parser.parse_args(argv)

    unknown = [s for s in args.stages if s not in images.STAGES]
    if unknown:
        parser.error(f"unknown stage {unknown[0]!r}; expected some of {', '.join(images.STAGES)}")
    stages = [s for s in images.STAGES if s in (args.stages or images.STAGES)]
    if args.flavour == "cpu" and not (os.environ.get("BERT_IMAGE_TAG") or os.environ.get("TAG")):
        os.environ["BERT_IMAGE_TAG"] = images.tag() + "-cpu"
    builder = Builder(args.builder) if args.builder else Builder.pick()

    with tempfile.TemporaryDirectory(prefix="build-images-") as tmp:
        secrets: dict[str, Path] = {}
        volumes = list(args.volume)
        if args.host_pip:
            conf, ca, found = host_pip_config(Path(tmp))
            secrets["pip.conf"] = conf
            if ca:
                secrets["pip-ca"] = ca
            volumes += found
        if args.pip_config:
            secrets["pip.conf"] = args.pip_config
        if args.pip_ca:
            secrets["pip-ca"] = args.pip_ca
        for stage in stages:
            path = dockerfile(stage, args.flavour)
            build_args: dict[str, str] = {}
            parent = ""
            if stage in images.FROM_BASE:
                build_args["BASE_IMAGE"] = images.image("base")
                parent = builder.image_id(images.image("base"))
            elif stage == "base" and args.flavour == "rocm":
                if args.rocm_tf_tag:
                    build_args["ROCM_TF_TAG"] = args.rocm_tf_tag
            else:
                build_args["PYTHON_IMAGE"] = args.python_image
                parent = builder.image_id(args.python_image)
            tag = images.image(stage)
            digest = inputs_hash(path, build_args, parent)
            if not args.force and builder.label(tag) == digest:
                print(f"{tag}: up to date ({path.name}, inputs {digest})", flush=True)
                continue
            cmd = builder.build_command(path, tag, build_args, {INPUTS_LABEL: digest}, secrets, volumes)
            print(f"{tag}: building with {builder.name} from {path.name}", flush=True)
            start = time.monotonic()
            if subprocess.run(cmd).returncode != 0:
                print(f"build_images: {tag} failed ({' '.join(cmd)})", file=sys.stderr)
                return 1
            print(f"{tag}: built in {time.monotonic() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
