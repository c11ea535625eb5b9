"""The corpus stage's native library loader (bert_core/corpus/native.py): build once into the cache,
the give-up contract, the fallbacks. The C fast paths themselves are compared with the Python code in
tests/test_corpus_native_*.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bert_core.corpus import native

# A C function under the contract: upper-cases ASCII letters, gives up on a text holding '!', and on
# '#' claims more bytes than it may (a broken function: the loader must say so, not read past the room).
_SOURCE = r"""
long bk_test_upper(const char *in, long n, char *out, long cap) {
    if (n > cap) return -1;
    for (long i = 0; i < n; i++) {
        if (in[i] == '!') return -1;
        if (in[i] == '#') return cap + 1;
        out[i] = (in[i] >= 'a' && in[i] <= 'z') ? (char)(in[i] - 32) : in[i];
    }
    return n;
}

/* Drops every 'A', gives up on '?': the second step of a chain. */
long bk_test_drop_a(const char *in, long n, char *out, long cap) {
    long m = 0;
    for (long i = 0; i < n; i++) {
        if (in[i] == '?') return -1;
        if (in[i] != 'A') {
            if (m == cap) return -1;
            out[m++] = in[i];
        }
    }
    return m;
}
"""

needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler (cc) on PATH")


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """The loader with its own sources and cache, as in a new process."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "upper.c").write_text(_SOURCE)
    monkeypatch.setattr(native, "SOURCE_DIR", src)
    monkeypatch.setattr(native, "_state", {"tried": False, "lib": None, "error": None, "size": 0, "buffer": None,
                                           "address": 0})
    monkeypatch.setenv("BERT_KERNEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("BERT_CORPUS_NATIVE", raising=False)
    monkeypatch.delenv("CC", raising=False)
    return src


@needs_cc
def test_transform_runs_the_c_function_on_utf8_and_honours_give_up(fresh):
    assert native.transform("bk_test_upper", "abc é ∂ x") == "ABC é ∂ X"  # multi-byte text passes whole
    assert native.transform("bk_test_upper", "abc!") is None              # gave up: the caller runs Python
    big = "ab" * 300_000                                                  # past the first buffer: it grows
    assert native.transform("bk_test_upper", big) == big.upper()
    assert native.transform("bk_test_upper", "x") == "X"
    with pytest.raises(RuntimeError, match="wrote"):
        native.transform("bk_test_upper", "#")


@needs_cc
def test_chain_passes_bytes_from_one_function_to_the_next_and_says_where_it_stopped(fresh):
    steps = ("bk_test_upper", "bk_test_drop_a", "bk_test_upper")
    assert native.chain(steps, "banana é") == ("BNN É".replace("É", "é"), 3)
    assert native.chain(steps, "banana?") == ("BANANA?", 1)      # the second gave up: the first's text
    assert native.chain(steps, "banana!") == ("banana!", 0)      # the first gave up: the text itself
    assert native.chain(("bk_test_upper", "bk_no_such_function"), "ab") == ("AB", 1)
    long = "a" * 200_000 + "xyz" * 100_000                       # both buffers grow, in turn
    assert native.chain(steps, long) == ("XYZ" * 100_000, 3)
    assert native.chain((), "ab") == ("ab", 0)


@needs_cc
def test_built_once_into_the_cache_and_reused(fresh, tmp_path, monkeypatch):
    path = native.build()
    assert path.parent == tmp_path / "cache" and path.exists()
    stamp = path.stat().st_mtime_ns
    monkeypatch.setenv("CC", "/nonexistent/cc")  # a cached library needs no compiler
    assert native.build() == path and path.stat().st_mtime_ns == stamp
    (fresh / "upper.c").write_text(_SOURCE + "\n/* changed */\n")
    assert native.library_path() != path  # a changed source is a new library


def test_disabled_by_environment_or_without_a_compiler(fresh, monkeypatch):
    monkeypatch.setenv("BERT_CORPUS_NATIVE", "0")
    assert native.transform("bk_test_upper", "abc") is None
    assert native.build_error() == "BERT_CORPUS_NATIVE=0"
    monkeypatch.setattr(native, "_state", {"tried": False, "lib": None, "error": None, "size": 0, "buffer": None,
                                           "address": 0})
    monkeypatch.delenv("BERT_CORPUS_NATIVE")
    monkeypatch.setenv("CC", "/nonexistent/cc")
    assert native.library() is None and native.transform("bk_test_upper", "abc") is None
    assert native.build_error() == "no C compiler '/nonexistent/cc' on PATH (set CC or install gcc)"


@needs_cc
def test_a_source_that_does_not_compile_is_one_line_and_no_library(fresh):
    (fresh / "broken.c").write_text("long bk_broken(void) { return undefined_name; }\n")
    assert native.library() is None
    error = native.build_error()
    assert error.startswith("compiling the corpus fast paths failed:") and "undefined_name" in error
    assert "\n" not in error
    assert not list(native.library_path().parent.glob("*.so*"))  # nothing half-built left behind


@needs_cc
def test_module_entry_point_builds_and_prints_the_library(tmp_path):
    env = {**os.environ, "BERT_KERNEL_CACHE": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "bert_core.corpus.native"], capture_output=True, text=True, env=env,
                         cwd=Path(__file__).resolve().parents[1], timeout=300)
    assert out.returncode == 0, out.stderr
    path = Path(out.stdout.strip())
    assert path.parent == tmp_path and path.exists()
    env["BERT_CORPUS_NATIVE"] = "0"
    out = subprocess.run([sys.executable, "-m", "bert_core.corpus.native"], capture_output=True, text=True, env=env,
                         cwd=Path(__file__).resolve().parents[1], timeout=300)
    assert out.returncode == 1 and out.stderr.strip() == "bert: error: corpus fast paths: BERT_CORPUS_NATIVE=0"


def test_the_c_sources_ship_with_the_package():
    import tomllib

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["bert_core"]
    assert "corpus/native/*.c" in patterns and "corpus/native/*.h" in patterns  # (the headers they include)
    assert native.sources(), "bert_core/corpus/native/ holds no C source"
