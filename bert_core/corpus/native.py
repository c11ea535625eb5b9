"""The corpus stage's C fast paths: `bert_core/corpus/native/*.c`, compiled together into one library
once per machine (bert_core.native_build's cache; the images compile it at build time with
`python -m bert_core.corpus.native`) and called through ctypes, as blingfire is (segment.py).

Each C function rewrites text as a Python function of wiki.py or wikimarkup.py does, under one
contract: `long bk_NAME(const char *in, long n, char *out, long cap)` gets the text's UTF-8 (n bytes)
and returns the length of its result in `out`, or -1 where it is not certain to give exactly what the
Python code gives (an unusual shape, a non-ASCII character where a case-insensitive or Unicode-aware
pattern decides, a result that would not fit): the caller then runs the Python code, which stays the
authority (the tests compare the two on real articles and random markup). So a machine without a C
compiler, or BERT_CORPUS_NATIVE=0, gives the same output, only slower. Plain C11, no Python headers:
the library does not depend on the Python version, and a process's calls share no state.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import sys
from pathlib import Path

from bert_core import native_build

SOURCE_DIR = Path(__file__).with_name("native")
CFLAGS = ["-std=c11", "-O2", "-shared", "-fPIC"]
_ROOM = 64  # output bytes beyond the input's a function may use (they mostly shorten their text)

_state: dict = {"tried": False, "lib": None, "error": None, "size": 0, "buffer": None, "address": 0}


def sources() -> list[Path]:
    return sorted(SOURCE_DIR.glob("*.c"))


def _compiler() -> str:
    return os.environ.get("CC") or "cc"


def library_path() -> Path:
    """The library for these sources and flags (built or not). The compiler is not in the key, so an
    image that built it keeps it without a compiler: any C11 compiler's library is the same functions."""
    key = hashlib.sha256()
    for path in sources():
        key.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    key.update(" ".join(CFLAGS).encode())
    return native_build.cache_dir() / f"bert_corpus-{key.hexdigest()[:16]}.so"


def build() -> Path:
    """The library's path, compiled first if the cache lacks it (raises native_build.BuildError)."""
    if not sources():
        raise native_build.BuildError(f"no C sources in {SOURCE_DIR}")
    return native_build.build_cached(
        library_path(), _compiler(), lambda out: [_compiler(), *CFLAGS, *map(str, sources()), "-o", str(out)],
        "the corpus fast paths", no_compiler=f"no C compiler {_compiler()!r} on PATH (set CC or install gcc)")


def library():
    """The loaded library (built on first use, once per process), or None: BERT_CORPUS_NATIVE=0, or it
    cannot be built or loaded here (`build_error()` says why, in one line)."""
    if not _state["tried"]:
        _state["tried"] = True
        if os.environ.get("BERT_CORPUS_NATIVE", "1") == "0":
            _state["error"] = "BERT_CORPUS_NATIVE=0"
        else:
            try:
                _state["lib"] = ctypes.CDLL(str(build()))
            except (native_build.BuildError, OSError) as e:
                _state["error"] = str(e).splitlines()[0] if str(e) else type(e).__name__
    return _state["lib"]


def build_error() -> str | None:
    """Why library() returned None (None if it has not, or has not been asked yet)."""
    return _state["error"]


def _function(name: str):
    fn = getattr(library(), name)
    if fn.restype is not ctypes.c_long:
        fn.argtypes = [ctypes.c_char_p, ctypes.c_long, ctypes.c_void_p, ctypes.c_long]
        fn.restype = ctypes.c_long
    return fn


def _out(size: int) -> int:
    """The address of this process's output buffer, grown to at least `size` bytes (never shrunk)."""
    if size > _state["size"]:
        size = max(size, 2 * _state["size"], 1 << 16)
        buffer = bytearray(size)
        view = (ctypes.c_char * size).from_buffer(buffer)  # kept with it: the buffer stays put while it lives
        _state["buffer"], _state["view"] = buffer, view
        _state["size"], _state["address"] = size, ctypes.addressof(view)
    return _state["address"]


def transform(name: str, text: str) -> str | None:
    """The C function `name` applied to `text`, or None if it gives up or the library is unavailable."""
    if library() is None:
        return None
    data = text.encode("utf-8", "surrogatepass")
    cap = len(data) + _ROOM
    n = _function(name)(data, len(data), _out(cap), cap)
    if n < 0:
        return None
    if n > cap:
        raise RuntimeError(f"{name} wrote {n} bytes into {cap}")
    return str(memoryview(_state["buffer"])[:n], "utf-8", "surrogatepass")  # decoded in place, no copy


def main() -> int:
    """python -m bert_core.corpus.native: build (or find) and load the library, print its path."""
    if library() is None:
        print(f"bert: error: corpus fast paths: {build_error()}", file=sys.stderr)
        return 1
    print(library_path())
    return 0


if __name__ == "__main__":
    sys.exit(main())
