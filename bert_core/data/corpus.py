"""Reading a corpus: one sentence a line, a blank (or whitespace-only) line between documents.

Input specs are comma-separated files or globs, as in Google's scripts. Lines are decoded as UTF-8;
bad bytes either stop the run with `file:line` or are replaced with U+FFFD and counted. Documents can
be read from a byte range of a file, so shards of a large corpus are read in parallel without anyone
holding the corpus in memory: a range owns the lines that start inside it (a document that crosses a
range boundary is cut in two there, so a corpus of one long document still fills every range).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

from bert_core import storage
from bert_core.errors import UserError


def expand_inputs(spec: str) -> list[str]:
    """Comma-separated files or globs -> sorted, de-duplicated paths; every part must match."""
    parts = [p.strip() for p in str(spec).split(",") if p.strip()]
    if not parts:
        raise UserError("--input_file: no input given")
    paths: list[str] = []
    for part in parts:
        matches = storage.glob(part) if any(ch in part for ch in "*?[") else ([part] if storage.exists(part) else [])
        if not matches:
            raise UserError(f"{part}: no such file" if not any(ch in part for ch in "*?[")
                            else f"{part}: the pattern matches no file")
        for m in matches:
            if storage.isdir(m):
                raise UserError(f"{m}: is a directory, expected a text file")
            if m not in paths:
                paths.append(m)
    return paths


@dataclass
class ReadStats:
    lines: int = 0
    bad_utf8_lines: int = 0
    bytes_read: int = 0
    first_bad: list[str] = field(default_factory=list)  # up to 5 "file:line" locations


def line_number_at(path: str, offset: int) -> int:
    """1-based line number of the line that starts at byte `offset` (counts newlines before it)."""
    count = 0
    with storage.open_read(path, "rb") as f:
        remaining = offset
        while remaining > 0:
            chunk = f.read(min(remaining, 1 << 22))
            if not chunk:
                break
            count += chunk.count(b"\n")
            remaining -= len(chunk)
    return count + 1


def _decode(raw: bytes, path: str, offset: int, on_bad_utf8: str, stats: ReadStats) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = line_number_at(path, offset)
        if on_bad_utf8 == "fail":
            raise UserError(f"{path}:{line}: invalid UTF-8 at byte {err.start + 1} of the line "
                            f"(use --on_bad_utf8=replace to replace bad bytes with U+FFFD)") from None
        stats.bad_utf8_lines += 1
        if len(stats.first_bad) < 5:
            stats.first_bad.append(f"{path}:{line}")
        return raw.decode("utf-8", errors="replace")


def iter_lines(path: str, on_bad_utf8: str = "fail", stats: ReadStats | None = None) -> Iterator[str]:
    """Every line of a file, decoded, without its line ending."""
    stats = stats if stats is not None else ReadStats()
    offset = 0
    with storage.open_read(path, "rb") as f:
        for raw in f:
            stats.lines += 1
            stats.bytes_read += len(raw)
            yield _decode(raw, path, offset, on_bad_utf8, stats).rstrip("\r\n")
            offset += len(raw)


def _is_blank(raw: bytes) -> bool:
    return not raw.strip()


def iter_documents(path: str, start: int = 0, end: int | None = None, on_bad_utf8: str = "fail",
                   stats: ReadStats | None = None) -> Iterator[list[str]]:
    """Documents (lists of non-blank lines, stripped) made of the lines that start in [start, end).

    A document ends at a blank line, at the end of the file, or at `end`: a document that crosses the
    end of a range is cut there, and its rest starts the next range. Consecutive ranges together yield
    every line exactly once, so even one long document is shared by all ranges.
    """
    stats = stats if stats is not None else ReadStats()
    with storage.open_read(path, "rb") as f:
        total = storage.size(path)
        end = total if end is None else min(end, total)
        if start >= end:
            return
        pos = start
        if pos > 0:
            f.seek(pos - 1)
            if f.read(1) != b"\n":  # inside a line: the previous range owns it
                f.seek(pos)
                pos += len(f.readline())
        f.seek(pos)
        doc: list[str] = []
        while pos < end:
            raw = f.readline()
            if not raw:
                break
            offset = pos
            pos += len(raw)
            if _is_blank(raw):
                if doc:
                    yield doc
                    doc = []
                continue
            stats.lines += 1
            stats.bytes_read += len(raw)
            doc.append(_decode(raw, path, offset, on_bad_utf8, stats).strip())
        if doc:
            yield doc


def split_ranges(paths: list[str], num_ranges: int) -> list[list[tuple[str, int, int]]]:
    """Split the concatenated bytes of `paths` into `num_ranges` near-equal parts.

    Each part is a list of (path, start, end) pieces. Depends only on the file sizes and
    `num_ranges`, so the layout (and with a seed, the output) is deterministic.
    """
    sizes = [storage.size(p) for p in paths]
    total = sum(sizes)
    bounds = [total * i // num_ranges for i in range(num_ranges + 1)]
    parts: list[list[tuple[str, int, int]]] = []
    for r in range(num_ranges):
        lo, hi = bounds[r], bounds[r + 1]
        pieces, base = [], 0
        for p, s in zip(paths, sizes):
            a, b = max(lo, base), min(hi, base + s)
            if a < b:
                pieces.append((p, a - base, b - base))
            base += s
        parts.append(pieces)
    return parts
