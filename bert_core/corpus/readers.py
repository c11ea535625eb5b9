"""Reading a corpus input: which files, in which format, decompressed, as raw documents.

Inputs are comma-separated files or globs (local, gs://, s3://; bert_core.storage), each of them:

  wiki   a MediaWiki XML dump (`pages-articles*.xml[.bz2]`; multistream too, bert_core/corpus/wiki.py)
  jsonl  JSON lines, one document an object, its text in `text_field`
  text   a paragraph a line, a blank line between documents
  bert   BERT's own format: a sentence a line, a blank line between documents (not re-segmented)

each possibly gzip-, bz2- or zstd-compressed (told by the first bytes, not the name). `auto` detects
the format from the first bytes and lines of each file (`detect_format`).

A raw document is what is cheap to get: its text before markup removal and segmentation, and where it
came from (`file:line` or `file: page ID 'Title'`). Routing it to a shard needs only its raw bytes, so
the expensive work is done only by the worker that owns its shard.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import re
import zlib
from dataclasses import dataclass
from typing import IO, Iterator

from bert_core import storage
from bert_core.corpus.clean import tidy
from bert_core.errors import UserError

FORMATS = ("auto", "wiki", "jsonl", "text", "bert")

_MAGIC = ((b"\x1f\x8b", "gzip"), (b"BZh", "bz2"), (b"\x28\xb5\x2f\xfd", "zstd"))


@dataclass
class RawDocument:
    where: str          # "file:line" or "file: page 12 'Anarchism'"
    text: str           # wikitext (wiki), the document's text (jsonl), or its lines joined by "\n"
    kind: str           # the format: how `text` becomes paragraphs
    dropped: str = ""   # a reason to drop it before any work (redirect, namespace, disambiguation)


def expand_inputs(spec: str) -> list[str]:
    """Comma-separated files or globs -> paths in the order given (each glob sorted), without repeats;
    every part must match something."""
    from bert_core.data.corpus import expand_inputs as expand

    return expand(spec)


def compression_of(head: bytes) -> str:
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return "none"


class _Counting(io.RawIOBase):
    """A raw file that counts the (compressed) bytes read from it, for progress; seekable as its file is
    (indexed_bzip2 asks for the size)."""

    def __init__(self, f):
        self.f = f
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self.f.readinto(buffer) or 0
        self.count += n
        return n

    def seekable(self) -> bool:
        return self.f.seekable()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.f.seek(offset, whence)

    def tell(self) -> int:
        return self.f.tell()


class _Bz2(io.RawIOBase):
    """bz2 decompressed by indexed_bzip2 on one thread (every stream of the file, each block's CRC
    checked), where 7-Zip is not installed (`_SevenZipBz2`): a sixth less CPU than the standard
    library's libbz2 on Wikipedia's XML (docs/data.md).
    Whole files only: a multistream dump's streams are decompressed by the standard library, as one
    indexed_bzip2 reader an input leaks ~1 KB, and one a stream would leak without bound.
    Its errors are C++ exceptions, some without a message; here they are EOFError (the data ends
    before its end-of-stream marker) or OSError (damaged data), as the standard library's."""

    def __init__(self, counted: _Counting):
        import indexed_bzip2

        self.counted, self.size = counted, counted.seek(0, io.SEEK_END)
        counted.seek(0)
        self.f = indexed_bzip2.IndexedBzip2FileRaw(counted, parallelization=1)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            return self.f.readinto(buffer)
        except (RuntimeError, ValueError) as err:
            text = str(err)
            if text in ("", "std::exception") and self.counted.f.tell() >= self.size:
                raise EOFError("bz2 data ended before the end-of-stream marker was reached") from None
            raise OSError(f"invalid bz2 data ({text})") from None

    def close(self) -> None:
        if not self.closed:
            self.f.close()
            # indexed_bzip2 1.7.0 keeps references to the object it reads from after it is closed (a
            # Python object without a file descriptor: ~1 KB an open): keep the file out of them.
            self.counted.f = None
        super().close()


def seven_zip() -> str | None:
    """7-Zip's program on PATH (`7zz`, Debian's and Ubuntu's apt package `7zip`; or `7z`), or None."""
    import shutil

    return shutil.which("7zz") or shutil.which("7z")


# Decode bzip2 (-tbzip2) from standard input (-si) to standard output (-so) on one thread (-mmt1),
# without the progress indicator (-bd).
_SEVEN_ZIP_ARGS = ("e", "-si", "-tbzip2", "-so", "-mmt1", "-bd")
# Its output is drained by a thread as it comes, a chunk (up to the pipe's size, raised to a megabyte) at a
# time, into a queue of at most _SEVEN_ZIP_AHEAD chunks: 7zz decodes on without waiting for the parser (on
# another core), where reading it only when the caller needs bytes made the two take turns (wall time
# = the sum of both) and its decoder's memory went cold between turns (1.7-1.9 CPU s on x8 read a
# megabyte at a time, 1.45-1.55 four at a time, against 1.25 alone).
_SEVEN_ZIP_CHUNK = 1 << 20
_SEVEN_ZIP_AHEAD = 16


class _SevenZipBz2(io.RawIOBase):
    """bz2 decompressed by 7-Zip's decoder in a child process (`seven_zip()`; every stream of the file,
    each block's CRC checked): on Wikipedia's XML 0.8x indexed_bzip2's CPU counting the child, the pipes
    and the thread, and a whole prepare-corpus run ~10% cheaper (docs/data.md). A thread feeds it the
    file through `counted`, so that `counted.count` is the compressed bytes read, as with the other
    readers; another drains its output into a bounded queue (`_SEVEN_ZIP_AHEAD`), read here.

    Its exit status and error lines become the errors of the other readers: EOFError when the data
    ends before the end-of-stream marker, OSError for damaged data, checked when its output ends and
    so before the caller sees the end of file. Data after the last stream is an error too (7-Zip does
    not say where it starts, and it may be a damaged stream whose pages would be lost). close()
    before the end kills the child and waits for it and the thread; a killed parent leaves no child
    either: the child's input ends (an error) or its output has no reader."""

    def __init__(self, counted: _Counting, program: str):
        import subprocess
        import threading

        import queue

        self.counted, self.stopping, self.error, self.verdict = counted, False, None, None
        self.proc = subprocess.Popen([program, *_SEVEN_ZIP_ARGS], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        try:
            import fcntl

            fcntl.fcntl(self.proc.stdout.fileno(), 1031, _SEVEN_ZIP_CHUNK)  # F_SETPIPE_SZ (Linux)
        except (ImportError, OSError):
            pass  # the default pipe: smaller chunks, the same bytes
        self.chunks: queue.Queue = queue.Queue(_SEVEN_ZIP_AHEAD)
        self.pending, self.offset = memoryview(b""), 0
        self.feeder = threading.Thread(target=self._feed, name="7zz-input", daemon=True)
        self.drainer = threading.Thread(target=self._drain, name="7zz-output", daemon=True)
        self.feeder.start()
        self.drainer.start()

    def _feed(self) -> None:
        stdin = self.proc.stdin
        try:
            while not self.stopping:
                chunk = memoryview(self.counted.read(1 << 20))
                if not chunk:
                    break
                while chunk:
                    chunk = chunk[stdin.write(chunk):]
        except BrokenPipeError:  # the child stopped reading: its exit status says why
            pass
        except BaseException as err:  # reading the input failed: the reader raises it
            self.error = err
        finally:
            try:
                stdin.close()
            except OSError:
                pass

    def _drain(self) -> None:
        """The child's output into the queue as it comes; b"" at its end (or when reading it fails)."""
        import queue

        fd, chunk = self.proc.stdout.fileno(), b"-"
        while chunk and not self.stopping:
            try:
                chunk = os.read(fd, _SEVEN_ZIP_CHUNK)
            except OSError as err:  # raised by the reader
                self.error, chunk = self.error or err, b""
            while not self.stopping:  # (a full queue: the reader is behind; close() stops the wait)
                try:
                    self.chunks.put(chunk, timeout=0.1)
                    break
                except queue.Full:
                    continue

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.offset == len(self.pending):
            if self.verdict is None:
                chunk = self.chunks.get()
                if chunk:
                    self.pending, self.offset = memoryview(chunk), 0
                else:
                    self.verdict = self._verdict()
            if self.verdict is not None:
                if self.verdict is not True:
                    raise self.verdict
                return 0
        n = min(len(buffer), len(self.pending) - self.offset)
        memoryview(buffer).cast("B")[:n] = self.pending[self.offset:self.offset + n]
        self.offset += n
        return n

    def _verdict(self) -> BaseException | bool:
        """At the end of the output: True, or the error of the child (or of reading the input)."""
        self.feeder.join()
        self.drainer.join()
        messages = self.proc.stderr.read().decode("utf-8", errors="replace")
        status = self.proc.wait()
        if self.error is not None:
            return self.error
        return True if status == 0 else _seven_zip_error(status, messages)

    def close(self) -> None:
        if not self.closed:
            self.stopping = True
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.feeder.join()
            self.drainer.join()
            self.proc.stdout.close()
            self.proc.stderr.close()
        super().close()


def _seven_zip_error(status: int, messages: str) -> BaseException:
    """7-Zip's failure (exit status, standard error) as the error the other bz2 decoders raise."""
    errors = [line[len("ERROR: "):].removesuffix(" : ~").strip()
              for line in messages.splitlines() if line.startswith("ERROR: ")]
    if any("Unexpected end of data" in e for e in errors):
        return EOFError("bz2 data ended before the end-of-stream marker was reached")
    if any("data after the end of the payload" in e for e in errors):
        return OSError("invalid bz2 data (data after the end of its last stream)")
    detail = "; ".join(errors) or (" ".join(messages.split()) or f"7-Zip exit status {status}")
    return OSError(f"invalid bz2 data ({detail})")


# A bz2 stream in memory at least this long (compressed) is decoded by 7-Zip when it is installed: a child
# process costs ~3 ms, which 7-Zip's cheaper decoding repays from about 100 KB (measured on the x8 dump's
# streams: 1.01 against the standard library's 1.07 CPU s for 100 streams of 109 KB; 1.55 against 2.11
# for 17 of 800 KB).
SEVEN_ZIP_MIN_BYTES = 256 << 10


def decompress_bz2(data: bytes) -> bytes:
    """A whole bz2 stream (or several) in memory, decompressed: by 7-Zip where it pays (see
    SEVEN_ZIP_MIN_BYTES), else by the standard library; the same errors either way (EOFError, OSError)."""
    import bz2

    program = seven_zip() if len(data) >= SEVEN_ZIP_MIN_BYTES else None
    if program is None:
        return bz2.decompress(data)
    import subprocess

    try:
        proc = subprocess.run([program, *_SEVEN_ZIP_ARGS], input=data, capture_output=True)
    except OSError:  # found but does not start: says nothing about the data
        return bz2.decompress(data)
    if proc.returncode != 0:
        raise _seven_zip_error(proc.returncode, proc.stderr.decode("utf-8", errors="replace"))
    return proc.stdout


def _bz2_reader(counted: _Counting) -> io.RawIOBase:
    """7-Zip's decoder if it is installed and starts (a program that does not start says nothing about
    the input), else indexed_bzip2."""
    program = seven_zip()
    if program:
        try:
            return _SevenZipBz2(counted, program)
        except OSError:
            pass
    return _Bz2(counted)


class _Zstd(io.RawIOBase):
    """zstd frames, decompressed one after another; input that ends inside a frame is an EOFError
    (zstandard's stream reader returns what it has and says nothing)."""

    def __init__(self, f):
        import zstandard

        self.f, self.new = f, zstandard.ZstdDecompressor().decompressobj
        self.obj, self.pending, self.pos, self.done, self.started = self.new(), b"", 0, False, False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self.pos == len(self.pending) and not self.done:
            chunk = self.f.read(1 << 20)
            if not chunk:
                if self.started and not self.obj.eof:
                    raise EOFError("zstd data ended inside a frame")
                self.done = True
                break
            self.pending, self.pos = self._feed(chunk), 0
        n = min(len(buffer), len(self.pending) - self.pos)
        buffer[:n] = self.pending[self.pos:self.pos + n]
        self.pos += n
        return n

    def _feed(self, chunk: bytes) -> bytes:
        out = []
        while chunk:
            self.started = True
            out.append(self.obj.decompress(chunk))
            if not self.obj.eof:
                break
            chunk, self.obj, self.started = self.obj.unused_data, self.new(), False
        return b"".join(out)


@contextlib.contextmanager
def open_decompressed(path: str) -> Iterator[tuple[IO[bytes], _Counting]]:
    """(the decompressed bytes of `path`, the counter of its compressed bytes read)."""
    with storage.open_read(path, "rb") as raw:
        head = raw.read(4)
        raw.seek(0)
        counted = _Counting(raw)
        kind = compression_of(head)
        if kind == "gzip":
            stream: IO[bytes] = gzip.GzipFile(fileobj=io.BufferedReader(counted, 1 << 20))
        elif kind == "bz2":
            raw_bz2 = _bz2_reader(counted)
            stream = io.BufferedReader(raw_bz2, 1 << 20)
        elif kind == "zstd":
            stream = io.BufferedReader(_Zstd(io.BufferedReader(counted, 1 << 20)), 1 << 20)
        else:
            stream = io.BufferedReader(counted, 1 << 20)
        with contextlib.closing(stream):
            yield stream, counted


def decompressed_here(path: str) -> bool:
    """Whether reading `path` decompresses it in the reading process (gzip, zstd, bz2 without 7-Zip),
    rather than not at all or in 7-Zip's own process."""
    with storage.open_read(path, "rb") as raw:
        kind = compression_of(raw.read(4))
    return kind in ("gzip", "zstd") or kind == "bz2" and seven_zip() is None


def decompression_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [EOFError, OSError, gzip.BadGzipFile, zlib.error]
    try:
        import zstandard

        errors.append(zstandard.ZstdError)
    except ImportError:
        pass
    return tuple(errors)


def corrupt_input(path: str, err: BaseException, where: str = "") -> UserError:
    """The one line for a compressed stream that ends early or is damaged (or a file that cannot be read)."""
    at = f" ({where})" if where else ""
    if isinstance(err, OSError) and err.errno is not None:  # the file, not its data (permissions, I/O)
        return UserError(f"{path}: cannot read it{at}: {err.strerror}")
    text = str(err) or type(err).__name__
    if isinstance(err, EOFError):
        text = f"truncated: {text}"
    return UserError(f"{path}: the compressed data is truncated or corrupt{at}: {text}")


_BLOCK = 1 << 20  # bytes of whole lines decoded and split at once


def _line_blocks(path: str, on_bad_utf8: str, progress, span=None) -> Iterator[tuple[int, list[str]]]:
    """(1-based number of the first line, the lines without their endings) of a text file,
    decompressed (or, with `span` = (bytes of whole lines, the number of their first line), of that
    part of it: a block, corpus/units.py), about a megabyte of whole lines at a time: one decode and one split per block (a
    Python step per line cost more than all the rest of reading). Lines end at b"\\n" only; "\\r"s at a
    line's end go with it."""
    if span is not None:
        yield span[1], _decode(path, span[0], span[1] - 1, on_bad_utf8)
        return
    number = 0
    try:
        with open_decompressed(path) as (stream, counted):
            pending: list[bytes] = []  # the start of a line longer than a block
            while True:
                chunk = stream.read(_BLOCK)
                end = chunk.rfind(b"\n") + 1
                if chunk and not end:
                    pending.append(chunk)
                    continue
                data = b"".join(pending + [chunk[:end]]) if chunk else b"".join(pending)
                pending = [chunk[end:]] if chunk and end < len(chunk) else []
                if data:
                    lines = _decode(path, data, number, on_bad_utf8)
                    yield number + 1, lines
                    number += len(lines)
                if progress is not None:
                    progress(counted.count)
                if not chunk:
                    return
    except decompression_errors() as err:
        raise corrupt_input(path, err, f"after line {number}") from None


def _decode(path: str, data: bytes, number: int, on_bad_utf8: str) -> list[str]:
    """The lines of `data` (whole lines, the last perhaps without its b"\\n"), after line `number`."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:  # find the line, or replace the bad bytes line by line (as a whole: the same)
        raws = data.split(b"\n")
        if not raws[-1]:
            raws.pop()
        lines = []
        for n, raw in enumerate(raws, number + 1):
            try:
                lines.append(raw.decode("utf-8"))
            except UnicodeDecodeError as err:
                if on_bad_utf8 == "fail":
                    raise UserError(f"{path}:{n}: invalid UTF-8 at byte {err.start + 1} of the line "
                                    f"(use --on_bad_utf8=replace to replace bad bytes with U+FFFD)") from None
                lines.append(raw.decode("utf-8", errors="replace"))
        text = "\n".join(lines) + "\n"
    lines = text.split("\n")
    if not lines[-1]:
        lines.pop()
    if "\r" in text:
        lines = [line.rstrip("\r") for line in lines]
    return lines


def detect_format(path: str) -> str:
    """wiki, jsonl, bert or text, from the first bytes and lines of the (decompressed) file.

    `<mediawiki` (after an optional XML declaration) is a dump; a first non-blank line starting
    with `{` is JSON lines; otherwise the first 2,000 non-blank lines decide between a sentence a line
    (bert: fewer than 5% of the lines hold more than one sentence) and a paragraph a line (text)."""
    from bert_core.corpus.segment import split_sentences

    try:
        with open_decompressed(path) as (stream, _):
            head = stream.read(1 << 16)
    except decompression_errors() as err:
        raise corrupt_input(path, err) from None
    start = head.lstrip()
    if start.startswith(b"<?xml") or start.startswith(b"<mediawiki"):
        return "wiki"
    if start.startswith(b"{"):
        return "jsonl"
    lines = [l for l in head.decode("utf-8", errors="replace").splitlines()[:-1] if l.strip()][:2000]
    if not lines:
        return "bert"
    multi = sum(len(split_sentences(l)) > 1 for l in lines)
    return "bert" if multi < 0.05 * len(lines) else "text"


def iter_blocks(path: str, kind: str, on_bad_utf8: str = "fail", progress=None, span=None) -> Iterator[RawDocument]:
    """text / bert: the documents of a file (or of a `span` of it, as `_line_blocks`), each the lines
    between blank lines, joined by "\\n".

    The blank lines of a block of lines are found in C (the lines stripped, then list.index): a Python
    step per document, not per line."""
    block: list[str] = []  # the lines of the document being read (it may go on in the next block)
    first = 0
    for number, lines in _line_blocks(path, on_bad_utf8, progress, span):
        stripped = list(map(str.strip, lines))
        start = 0
        while start < len(lines):
            try:
                end = stripped.index("", start)
            except ValueError:
                end = len(lines)
            if end > start:
                if not block:
                    first = number + start
                block.extend(lines[start:end])
            if end < len(lines) and block:
                yield RawDocument(f"{path}:{first}", "\n".join(block), kind)
                block = []
            start = end + 1
    if block:
        yield RawDocument(f"{path}:{first}", "\n".join(block), kind)


def iter_json_lines(path: str, text_field: str, on_bad_utf8: str = "fail", progress=None,
                    span=None) -> Iterator[RawDocument]:
    """jsonl: one document an object; its text is the string under `text_field` (`span`: as `_line_blocks`)."""
    for first, lines in _line_blocks(path, on_bad_utf8, progress, span):
        for number, line in enumerate(lines, first):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{path}:{number}: not a JSON object ({err.msg} at column {err.colno}); "
                                f"expected one JSON object a line") from None
            if not isinstance(obj, dict):
                raise UserError(f"{path}:{number}: a JSON {type(obj).__name__}, expected an object with a "
                                f"{text_field!r} field")
            if text_field not in obj:
                have = ", ".join(sorted(map(str, obj))[:10]) or "none"
                raise UserError(f"{path}:{number}: no field {text_field!r} (fields: {have}); "
                                f"set --text_field to the one holding the text")
            text = obj[text_field]
            if not isinstance(text, str):
                raise UserError(f"{path}:{number}: field {text_field!r} is a JSON {type(text).__name__}, "
                                f"expected a string")
            # a lone surrogate comes only from a \ud800-like escape: looked for where the line has one
            if not text.isascii() and ("\\ud" in line or "\\uD" in line) and _SURROGATE.search(text):
                text = _without_surrogates(path, number, text_field, text, on_bad_utf8)
            yield RawDocument(f"{path}:{number}", text, "jsonl")


_SURROGATE = re.compile("[\ud800-\udfff]")


def _without_surrogates(path: str, number: int, text_field: str, text: str, on_bad_utf8: str) -> str:
    """A JSON string's lone surrogates (`"\\ud800"` escapes; no UTF-8 can hold them) are invalid text,
    as bytes that are not UTF-8 are: an error, or U+FFFD each with --on_bad_utf8=replace."""
    if on_bad_utf8 == "fail":
        at = _SURROGATE.search(text).start()
        raise UserError(f"{path}:{number}: field {text_field!r} holds a lone surrogate (U+{ord(text[at]):04X} at "
                        f"character {at + 1}), not text (use --on_bad_utf8=replace to replace it with U+FFFD)")
    return _SURROGATE.sub("\ufffd", text)


def paragraphs_of(doc: RawDocument) -> list[str]:
    """The paragraphs of a text, jsonl or bert document (bert: its sentences, one a line)."""
    lines = doc.text.split("\n")
    if doc.kind == "jsonl":  # lines as str.splitlines() ends them, their whitespace collapsed
        if tidy(doc.text):
            return lines
        return [p for p in (" ".join(l.split()) for l in doc.text.splitlines()) if p]
    return list(filter(None, map(str.strip, lines)))
