"""Compiling the project's own native code once per machine, into a cache: the fused CPU kernels of the
training step (bert_core/kernels, C++ against TensorFlow) and the corpus stage's fast paths
(bert_core/corpus/native, plain C called through ctypes).

A library is named by a key of everything that makes it (source, flags, compiler, ...), so a changed
source builds a new one next to the old. Several processes may start together (Horovod ranks,
prepare-corpus's workers): one compiles under a lock file, the others wait and load its result, and
the library appears whole or not at all (compiled to a temporary name, then renamed). The images
compile at build time, so pods never do. No TensorFlow here: the corpus stage does not import it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Callable

BUILD_TIMEOUT_S = 600


class BuildError(RuntimeError):
    """A native library could not be compiled."""


def cache_dir() -> Path:
    """$BERT_KERNEL_CACHE, else ~/.cache/bert-kubeflow/kernels (the name predates the corpus library)."""
    return Path(os.environ.get("BERT_KERNEL_CACHE") or Path.home() / ".cache" / "bert-kubeflow" / "kernels")


def build_cached(path: Path, compiler: str, command: Callable[[Path], list[str]], what: str,
                 error: type[BuildError] = BuildError, no_compiler: str = "") -> Path:
    """`path` if it exists, else compile `what` with `command(output)` (whose first word is `compiler`)
    and return it; raises `error` with one line if that fails: the compiler's first error, or
    `no_compiler` when the compiler is not on PATH."""
    if path.exists():
        return path
    if shutil.which(compiler) is None:
        raise error(no_compiler or f"no compiler {compiler!r} on PATH (to build {what})")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():  # another process built it while this one waited
            return path
        fd, tmp = tempfile.mkstemp(suffix=".so.tmp", dir=path.parent)
        os.close(fd)
        try:
            try:
                proc = subprocess.run(command(Path(tmp)), capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                raise error(f"compiling {what} took over {BUILD_TIMEOUT_S} s") from None
            if proc.returncode != 0:
                lines = [ln for ln in proc.stderr.splitlines() if "error" in ln] or proc.stderr.splitlines()
                raise error(f"compiling {what} failed: {(lines or ['?'])[0].strip()}")
            os.chmod(tmp, 0o644)  # readable by the pods' non-root user when an image builds it as root
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return path
