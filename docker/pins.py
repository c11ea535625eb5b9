#!/usr/bin/env python3
"""Versions for the image builds, read from pyproject.toml: the one source of every pin.

    python3 pins.py write IMAGE OUTDIR    requirements.txt, constraints.txt, horovod.env,
                                          horovod-build-requirements.txt for IMAGE
    python3 pins.py check-tensorflow      the image's TensorFlow must equal pyproject's tensorflow-cpu pin

What each image installs (besides the package itself, which goes in with --no-deps):
- every [project] dependency except those an image leaves out (ROCm's TensorFlow replaces
  tensorflow-cpu, which only the CPU flavour's base keeps; the CPU images need neither TensorFlow nor MPI);
- named packages (kfp, kfp-kubernetes, kubernetes, pyyaml), whose pins are looked up in
  pyproject.toml's dependencies and optional-dependencies; a name pinned nowhere fails the build.
constraints.txt pins the TensorFlow/Keras distributions already in the base image to their installed
versions, so no requirement can make pip replace ROCm's build.
Standard library only (tomllib: Python >= 3.11).
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

try:
    import tomllib
except ImportError:  # pragma: no cover - Python 3.10 images
    sys.exit("pins.py: needs Python >= 3.11 (tomllib); use a py3.12 rocm/tensorflow tag (docs/cluster.md)")

TF_PIN_NAME = "tensorflow-cpu"

# image -> (project dependencies left out, extra packages by name)
IMAGES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "base": ((TF_PIN_NAME,), ("kfp", "kfp-kubernetes", "kubernetes", "pyyaml")),
    # The CPU flavour of the base (Dockerfile.base-cpu): pyproject's own tensorflow-cpu.
    "base-cpu": ((), ("kfp", "kfp-kubernetes", "kubernetes", "pyyaml")),
    "data": ((TF_PIN_NAME, "mpi4py"), ("kfp", "pyyaml")),
    "evaluate": ((TF_PIN_NAME, "mpi4py"), ("kfp", "pyyaml")),
    # The launcher only talks to the Kubernetes API and object storage: no model, data or report code.
    "launcher": ((TF_PIN_NAME, "mpi4py", "tokenizers", "numpy", "google-crc32c", "scikit-learn", "scipy",
                  "matplotlib", "blingfire", "wikitextparser", "zstandard", "indexed-bzip2"),
                 ("kfp", "kubernetes", "pyyaml")),
}
# Distributions of the ROCm image that pip must never replace.
PROTECTED = re.compile(r"^(tensorflow|tensorflow-rocm|tf-keras|keras|tensorboard|tensorflow-io-gcs-filesystem)$")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def req_name(req: str) -> str:
    return normalize(re.split(r"[\s<>=!~\[;@]", req.strip(), maxsplit=1)[0])


def load(pyproject: Path) -> dict:
    return tomllib.loads(pyproject.read_text())


def all_requirements(cfg: dict) -> list[str]:
    reqs = list(cfg["project"].get("dependencies", []))
    for extra in cfg["project"].get("optional-dependencies", {}).values():
        reqs.extend(extra)
    return reqs


def exact_pins(cfg: dict) -> dict[str, str]:
    """name -> version of every `name==version` in pyproject.toml, plus [tool.bert-kubeflow] horovod."""
    out: dict[str, str] = {}
    for req in all_requirements(cfg):
        m = re.match(r"^\s*([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*==\s*([^\s;,]+)\s*(;.*)?$", req)
        if m:
            out[normalize(m.group(1))] = m.group(3)
    out["horovod"] = cfg["tool"]["bert-kubeflow"]["horovod"]
    return out


def requirements(cfg: dict, image: str) -> list[str]:
    if image not in IMAGES:
        raise SystemExit(f"pins.py: unknown image {image!r}; expected one of {', '.join(IMAGES)}")
    leave_out, extra = IMAGES[image]
    leave_out_n = {normalize(n) for n in leave_out}
    out = [r for r in cfg["project"]["dependencies"] if req_name(r) not in leave_out_n]
    everything = all_requirements(cfg)
    for name in extra:
        found = [r for r in everything if req_name(r) == normalize(name)]
        if not found:
            raise SystemExit(f"pins.py: pyproject.toml pins no {name!r}, which the {image} image needs; "
                             f"add it to [project.optional-dependencies]")
        out.append(found[0])
    return out


def constraints() -> list[str]:
    out = []
    for dist in metadata.distributions():
        name = normalize(dist.metadata["Name"] or "")
        if PROTECTED.match(name):
            out.append(f"{name}=={dist.version}")
    return sorted(set(out))


def horovod_env(cfg: dict) -> str:
    """KEY=VALUE lines: the Horovod version and its build environment (for `set -a; . horovod.env`)."""
    tool = cfg["tool"]["bert-kubeflow"]
    lines = [f"HOROVOD_VERSION={tool['horovod']}"]
    for item in tool["horovod-build-env"].split():
        key, _, value = item.partition("=")
        if not re.match(r"^[A-Z_][A-Z0-9_]*$", key) or not re.match(r"^[A-Za-z0-9_.,:/-]*$", value):
            raise SystemExit(f"pins.py: horovod-build-env item {item!r} is not KEY=VALUE")
        lines.append(f"{key}={value}")
    return "\n".join(lines) + "\n"


def tf_pin(cfg: dict) -> str:
    for req in cfg["project"]["dependencies"]:
        if req_name(req) == TF_PIN_NAME:
            return req.split("==", 1)[1].strip()
    raise SystemExit(f"pins.py: pyproject.toml has no {TF_PIN_NAME}== pin")


def installed_tensorflow() -> str | None:
    for name in ("tensorflow-rocm", "tensorflow", "tensorflow-cpu"):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def main(argv: list[str]) -> int:
    pyproject = Path("pyproject.toml")
    cfg = load(pyproject)
    if argv[:1] == ["write"] and len(argv) == 3:
        image, outdir = argv[1], Path(argv[2])
        outdir.mkdir(parents=True, exist_ok=True)
        (outdir / "requirements.txt").write_text("\n".join(requirements(cfg, image)) + "\n")
        (outdir / "constraints.txt").write_text("\n".join(constraints()) + "\n")
        (outdir / "horovod.env").write_text(horovod_env(cfg))
        (outdir / "horovod-build-requirements.txt").write_text(
            "\n".join(cfg["tool"]["bert-kubeflow"]["horovod-build-requires"]) + "\n")
        return 0
    if argv == ["check-tensorflow"]:
        want, have = tf_pin(cfg), installed_tensorflow()
        if have is None or have.split("+")[0] != want:
            print(f"pins.py: the base image has TensorFlow {have}, pyproject.toml pins {want}; pick a "
                  f"ROCM_TF_TAG with TensorFlow {want} (docs/cluster.md)", file=sys.stderr)
            return 1
        print(f"TensorFlow {have} matches pyproject.toml")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
