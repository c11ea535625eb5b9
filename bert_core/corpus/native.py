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
    for path in [*sources(), *sorted(SOURCE_DIR.glob("*.h"))]:  # the headers they include, too
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
    """The C function `name` of the library, or None if the library has no such function."""
    fn = getattr(library(), name, None)
    if fn is not None and fn.restype is not ctypes.c_long:
        fn.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_void_p, ctypes.c_long]  # bytes or an address in
        fn.restype = ctypes.c_long
    return fn


def _out(size: int, which: str = "") -> int:
    """The address of this process's output buffer `which` ("" or "2", the second of a chain), grown to
    at least `size` bytes (never shrunk)."""
    if size > _state.get("size" + which, 0):
        size = max(size, 2 * _state.get("size" + which, 0), 1 << 16)
        buffer = bytearray(size)
        view = (ctypes.c_char * size).from_buffer(buffer)  # kept with it: the buffer stays put while it lives
        _state["buffer" + which], _state["view" + which] = buffer, view
        _state["size" + which], _state["address" + which] = size, ctypes.addressof(view)
    return _state["address" + which]


def transform(name: str, text: str) -> str | None:
    """The C function `name` applied to `text`, or None if it gives up or the library is unavailable."""
    out, done = chain((name,), text)
    return out if done else None


def chain(names: tuple[str, ...], text: str) -> tuple[str, int]:
    """The C functions `names` applied in turn to `text`, the text passed from one to the next as UTF-8
    (one encode and one decode in all, where a transform each would convert it at every step): the text
    after the first k of them, and k; k < len(names) where the next one gave up, is not in the library,
    or the library is unavailable (k = 0, `text` itself). The caller does the rest in Python."""
    if library() is None or not names:
        return text, 0
    data = text.encode("utf-8", "surrogatepass")
    source, n, done, which = data, len(data), 0, ""
    for name in names:
        fn = _function(name)
        if fn is None:
            break
        cap = n + _ROOM
        address = _out(cap, which)
        m = fn(source, n, address, cap)
        if m < 0:
            break
        if m > cap:
            raise RuntimeError(f"{name} wrote {m} bytes into {cap}")
        source, n, done, which = address, m, done + 1, "2" if which == "" else ""
    if not done:
        return text, 0
    last = "2" if which == "" else ""  # the buffer the last function that ran wrote to
    return str(memoryview(_state["buffer" + last])[:n], "utf-8", "surrogatepass"), done  # decoded in place


def main() -> int:
    """python -m bert_core.corpus.native: build (or find) and load the library, print its path."""
    if library() is None:
        print(f"bert: error: corpus fast paths: {build_error()}", file=sys.stderr)
        return 1
    print(library_path())
    return 0


if __name__ == "__main__":
    sys.exit(main())
