"""Horovod 0.28.1 against ROCm 6 (docker/Dockerfile.base): the base image builds Horovod from its sdist
after docker/horovod_rocm6.sh moves it onto ROCm 6's layout (FindHIP.cmake in lib/cmake/hip, rccl.h in
rccl/), and still asserts rocm_built() and nccl_built(). Checked here on a ROCm 6 file layout and on
Horovod's real sdist: no GPU and no ROCm install needed."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "docker" / "horovod_rocm6.sh"
HEADER = "horovod/common/ops/nccl_operations.h"


def fake_rocm6(root: Path) -> Path:
    """The files of a ROCm 6 install the fixes depend on."""
    hip = root / "lib" / "cmake" / "hip"
    (hip / "FindHIP").mkdir(parents=True)
    (hip / "FindHIP.cmake").write_text("macro(hip_add_library)\nendmacro()\n")
    (hip / "FindHIP" / "run_hipcc.cmake").write_text("# helper\n")
    (root / "include" / "rccl").mkdir(parents=True)
    (root / "include" / "rccl" / "rccl.h").write_text("/* rccl */\n")
    return root


def horovod_tree(root: Path) -> Path:
    """The two places of Horovod 0.28.1's tree the fixes touch, as in its sdist."""
    (root / "cmake" / "Modules").mkdir(parents=True)
    (root / HEADER).parent.mkdir(parents=True)
    (root / HEADER).write_text("#if HAVE_CUDA\n#include <nccl.h>\n#elif HAVE_ROCM\n#include <rccl.h>\n"
                               "#define NCCL_P2P_SUPPORTED\n#endif\n")
    return root


def run(src: Path, rocm: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(SCRIPT), str(src), str(rocm)], capture_output=True, text=True)


def test_the_fixes_on_a_rocm6_layout(tmp_path):
    src, rocm = horovod_tree(tmp_path / "horovod"), fake_rocm6(tmp_path / "rocm")
    before = (src / HEADER).read_text()
    proc = run(src, rocm)
    assert proc.returncode == 0, proc.stderr
    assert (src / "cmake/Modules/FindHIP.cmake").read_text() == "macro(hip_add_library)\nendmacro()\n"
    assert (src / "cmake/Modules/FindHIP/run_hipcc.cmake").exists(), "FindHIP.cmake's helpers come along"
    after = (src / HEADER).read_text()
    assert after == before.replace("#include <rccl.h>", "#include <rccl/rccl.h>")


@pytest.mark.parametrize("breakage, message", [
    ("rocm5", "not a ROCm 6 layout"),
    ("no-rccl", "RCCL is missing"),
    ("other-horovod", "does not include <rccl.h>: another Horovod version?"),
])
def test_anything_else_stops_the_build_in_one_line(tmp_path, breakage, message):
    src, rocm = horovod_tree(tmp_path / "horovod"), fake_rocm6(tmp_path / "rocm")
    if breakage == "rocm5":
        (rocm / "lib/cmake/hip/FindHIP.cmake").rename(tmp_path / "moved")
    elif breakage == "no-rccl":
        (rocm / "include/rccl/rccl.h").unlink()
    else:
        (src / HEADER).write_text("#include <rccl/rccl.h>\n")
    proc = run(src, rocm)
    assert proc.returncode == 1
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def _horovod_run_step(text: str) -> str:
    joined = text.replace("\\\n", " ")
    (step,) = [line for line in joined.splitlines() if line.startswith("RUN ") and "horovod" in line.lower()]
    return step


def test_the_base_image_builds_the_patched_sdist_and_checks_rocm_and_rccl():
    text = (ROOT / "docker" / "Dockerfile.base").read_text()
    step = _horovod_run_step(text)
    order = [step.index(s) for s in ("pip download", "--no-binary=:all:", "horovod_rocm6.sh",
                                     "pip install --no-build-isolation", "rocm_built()")]
    assert order == sorted(order), "download the sdist, fix it, build it, then check what it built"
    assert re.search(r'pip install --no-build-isolation \S+ \S+ "/tmp/horovod/horovod-\$\{HOROVOD_VERSION\}"',
                     step), "the build installs the fixed tree, not a fresh download"
    assert "HOROVOD_GPU=ROCM" in step and "nccl_built()" in step
    assert "COPY docker/horovod_rocm6.sh ./docker/horovod_rocm6.sh" in text
    ignore = (ROOT / "docker" / "Dockerfile.base.dockerignore").read_text().split()
    assert "!docker/horovod_rocm6.sh" in ignore, "the build context must carry the script"


@pytest.mark.slow
def test_the_fixes_apply_to_horovods_real_sdist(tmp_path):
    """Horovod's own 0.28.1 sdist, fetched with pip as the image build does."""
    sys.path.insert(0, str(ROOT / "docker"))
    import pins
    version = pins.exact_pins(pins.load(ROOT / "pyproject.toml"))["horovod"]
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary=:all:",
                           "--no-build-isolation", "-d", str(tmp_path), f"horovod=={version}"],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.skip(f"cannot fetch horovod=={version}'s sdist here: {proc.stderr.strip().splitlines()[-1:]}")
    with tarfile.open(tmp_path / f"horovod-{version}.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    src = tmp_path / f"horovod-{version}"
    assert run(src, fake_rocm6(tmp_path / "rocm")).returncode == 0
    assert "#include <rccl/rccl.h>" in (src / HEADER).read_text()
    # the ROCm kernels' CMakeLists keeps the inherited module path, where FindHIP.cmake now is
    rocm_cmake = (src / "horovod/common/ops/rocm/CMakeLists.txt").read_text()
    assert "${CMAKE_MODULE_PATH}" in rocm_cmake and "find_package(HIP" in rocm_cmake
    assert '"${PROJECT_SOURCE_DIR}/cmake/Modules/"' in (src / "CMakeLists.txt").read_text()
