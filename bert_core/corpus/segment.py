"""Sentence segmentation: a paragraph -> its sentences.

blingfire (Microsoft's finite-state tokenizer, a compiled library in its wheel) was chosen by
measurement on the Brown corpus (its sentences joined five to a paragraph, re-split, exact sentence
matches; `make bench-corpus`, whose table in docs/data.md has the speeds): F1 0.846 on 100 documents,
against syntok 0.836, pysbd 0.826 and NLTK's untrained punkt 0.710, and several times faster than
each of them. On the
Pragmatic Segmenter's 48 English golden rules (pysbd's own test set; tests/test_corpus_segment.py keeps
the score) it gets 36 right, second to pysbd's 47, ahead of syntok's 34 and punkt's 19; it misses
lists (`1.)`, `a.`), `6 P.M. Mr.`, `."` before a lower-case word, and some ellipses.

The library is called here through ctypes, as blingfire's own module does, but without importing that
module: it imports numpy (0.15 CPU s of every `bert prepare-corpus` start-up, for functions not used
here) and allocates and zeroes a fresh output buffer of twice the input per call. Its C function
`TextToSentences` is what blingfire.text_to_sentences calls, with the same output room (twice the
input's bytes) and the same answer on failure (no sentences), so the sentences are the same.
"""

from __future__ import annotations

import ctypes
import importlib.util
import itertools
import os
import sys

NAME = "blingfire"
_BREAK = "\u2029"  # PARAGRAPH SEPARATOR: blingfire always ends a sentence there
_MARK = _BREAK.encode("utf-8")
_MARK_JOIN = b" " + _MARK + b" "
_MARK_END = b" " + _MARK + b"\n"  # the mark as blingfire's output mostly has it


class _Sentences:
    """blingfire's `TextToSentences` on a reused output buffer: UTF-8 text in, its sentences out, one a
    line. One buffer a process (prepare-corpus's workers are processes): not for concurrent threads."""

    _LIBRARY = {"win32": "blingfiretokdll.dll", "darwin": "libblingfiretokdll.dylib"}

    def __init__(self):
        spec = importlib.util.find_spec("blingfire")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("blingfire is not installed (pip install blingfire)")
        name = self._LIBRARY.get(sys.platform, "libblingfiretokdll.so")
        self.function = ctypes.CDLL(os.path.join(spec.submodule_search_locations[0], name)).TextToSentences
        self.function.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
        self.function.restype = ctypes.c_int
        self._room(1 << 16)

    def _room(self, size: int) -> None:
        self.size = size
        self.buffer = bytearray(size)
        self.view = (ctypes.c_char * size).from_buffer(self.buffer)  # kept: the buffer stays put while it lives
        self.address = ctypes.addressof(self.view)

    def __call__(self, data: bytes) -> bytes:
        room = 2 * len(data)
        if room > self.size:
            self._room(max(room, 2 * self.size))
        n = self.function(data, len(data), self.address, room)
        if n <= 0 or n > room:  # nothing, or an error (-1): no sentences, as blingfire.text_to_sentences
            return b""
        return bytes(memoryview(self.buffer)[:n - 1])  # n counts the terminating NUL


_sentences: _Sentences | None = None


def _blingfire(data: bytes) -> bytes:
    global _sentences
    if _sentences is None:
        _sentences = _Sentences()
    return _sentences(data)


def split_sentences(paragraph: str) -> list[str]:
    """The sentences of one paragraph (whitespace-trimmed, none empty)."""
    if not paragraph.strip():
        return []
    return list(filter(None, map(str.strip, _blingfire(paragraph.encode("utf-8")).decode("utf-8").split("\n"))))


def split_paragraphs(paragraphs: list[str]) -> list[str]:
    """The sentences of a document's paragraphs (whitespace-trimmed, none empty)."""
    return list(filter(None, map(str.strip, sentence_lines(paragraphs).split("\n"))))


def sentence_lines(paragraphs: list[str]) -> str:
    """The sentences of a document's paragraphs, one a line, in one call: the paragraphs joined by
    " U+2029 ", which blingfire always ends a sentence at (a paragraph's end stays a sentence's end, and a
    sentence holding the mark is cut there). Twice as fast as a call per paragraph, on Brown the same F1
    (0.889; docs/data.md). The lines are blingfire's, the marks made line ends; some lines may be blank
    or have whitespace at an end: cleaning (clean.Cleaner) trims them and drops the blank ones, as
    `split_paragraphs` does, without a Python step per sentence when there is nothing to trim."""
    parts = paragraphs
    if not all(parts) or any(map(str.isspace, parts)):  # in C; a step a paragraph
        parts = [p for p in parts if p.strip()]
    if any(map(str.__contains__, parts, itertools.repeat(_BREAK))):  # in C; one step for Latin-1 text
        parts = [p.replace(_BREAK, " ") for p in parts]  # a space for the mark
    data = _MARK_JOIN.join(map(str.encode, parts))  # joined as UTF-8: no UCS-2 text to encode
    if not data:
        return ""
    sentences = _blingfire(data)
    out = sentences.replace(_MARK_END, b"\n")  # how the marks end up; on bytes: faster
    if len(sentences) - len(out) != (len(_MARK_END) - 1) * (len(parts) - 1):  # a mark ended otherwise
        out = out.replace(b"\n" + _MARK + b"\n", b"\n").replace(_MARK, b"\n")
    return out.decode("utf-8")
