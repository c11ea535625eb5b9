"""Image names and tag: ONE setting for the Makefile, the KFP components' base_image and the manifests.

    REGISTRY  default `localhost:5000/bert-kubeflow`, env BERT_IMAGE_REGISTRY (or REGISTRY)
    TAG       default the project's version from pyproject.toml, env BERT_IMAGE_TAG (or TAG)

An image is `{REGISTRY}/bert-{stage}:{TAG}`, e.g. `localhost:5000/bert-kubeflow/bert-pretrain:0.1.0`.
The setting is read where the code runs, so code that runs inside a step pod (the MPIJob the
pretraining step creates) gets the compile-time values through `env()`, which the pipeline sets on
that step. The committed manifests are rendered with the defaults; point them at your registry by
re-rendering, `make manifests REGISTRY=... TAG=...`: a kustomize `images:` override would rewrite
the CronJob's image but not the image inside the job spec the CronJob reads (docs/cluster.md).

`python -m components.images` prints the resolved names, one `stage=image` a line, for the Makefile.
Imports nothing outside the standard library, so every image and the Makefile can use it.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

DEFAULT_REGISTRY = "localhost:5000/bert-kubeflow"
# One Dockerfile per stage in docker/: Dockerfile.<stage>. "launcher" is the small CPU image the CronJob
# runs to create an MPIJob; "base" is the shared ROCm TensorFlow + Horovod + OpenMPI layer.
STAGES = ("base", "data", "pretrain", "finetune", "evaluate", "launcher")
# Build order: every stage image FROM base builds after it.
FROM_BASE = ("pretrain", "finetune")

_ROOT = Path(__file__).resolve().parent.parent


def _project_version() -> str:
    try:
        import tomllib
        return tomllib.loads((_ROOT / "pyproject.toml").read_text())["project"]["version"]
    except (OSError, KeyError, ImportError):  # installed without the source tree
        from importlib.metadata import PackageNotFoundError, version
        try:
            return version("bert-kubeflow")
        except PackageNotFoundError:
            return "latest"


def registry() -> str:
    value = os.environ.get("BERT_IMAGE_REGISTRY") or os.environ.get("REGISTRY") or DEFAULT_REGISTRY
    return value.rstrip("/")


def tag() -> str:
    return os.environ.get("BERT_IMAGE_TAG") or os.environ.get("TAG") or _project_version()


def env() -> dict[str, str]:
    """The setting as environment variables: a process given these resolves the same images."""
    return {"BERT_IMAGE_REGISTRY": registry(), "BERT_IMAGE_TAG": tag()}


def image(stage: str) -> str:
    """The full image reference of one stage, e.g. image("pretrain")."""
    if stage not in STAGES:
        raise ValueError(f"unknown image stage {stage!r}; expected one of {', '.join(STAGES)}")
    return f"{registry()}/bert-{stage}:{tag()}"


_OURS = re.compile(r"^(?P<registry>.+)/bert-(?P<stage>[a-z]+):(?P<tag>[\w][\w.-]*)$")


def registry_of(ref: str) -> str | None:
    """The registry of one of our image references (`{REGISTRY}/bert-{stage}:{TAG}`), else None."""
    m = _OURS.match(ref or "")
    return m.group("registry") if m and m.group("stage") in STAGES else None


def all_images() -> dict[str, str]:
    return {stage: image(stage) for stage in STAGES}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args:
        for stage in args:
            print(image(stage))
    else:
        for stage, ref in all_images().items():
            print(f"{stage}={ref}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
