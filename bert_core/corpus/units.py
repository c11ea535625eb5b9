"""Units: the pieces of the inputs that shards are made of, cut by a rule that knows no workers.

A text, bert or jsonl file (compressed or not) is cut, as it is decompressed, into blocks of about
`block_bytes(...)` (1 MiB; less for a corpus under 8 MiB a shard, so that every shard gets some): a block
ends at the end of the first document boundary that starts at or after the block's nominal end
(`(n + 1) x block size` from the file's start, and never before the block's own start), or at the
end of the file. The boundary is an empty line for text and bert (`\\n\\n` or `\\n\\r\\n`; a line of
spaces does not cut) and a newline for jsonl. So a block holds whole documents, and the cut depends
only on the file's bytes: not on compression, workers or ranks. A document longer than a block makes
its block longer; a file without an empty line is one block.

Cutting needs no decoding, only a search near each nominal end and a newline count (the first line
number of each block, for `file:line` in errors and in the report's examples): it runs at memory
speed in the one process that reads the inputs, which hands the blocks' bytes to the workers that
decode, segment and clean them (bert_core/corpus/prepare.py).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from dataclasses import dataclass
from typing import Iterator

from bert_core.corpus import readers

_BOUNDARY = {"text": re.compile(rb"\n\r?\n"), "bert": re.compile(rb"\n\r?\n"), "jsonl": re.compile(rb"\n")}
_CHUNK = 1 << 20


MAX_BLOCK_BYTES = 1 << 20


def block_bytes(input_bytes: int, num_shards: int) -> int:
    """The nominal block size: 1 MiB, or an eighth of a shard's share of the input bytes if less (a
    small corpus in many shards would leave shards empty otherwise: create-data refuses an empty
    file); the environment's `BERT_CORPUS_BLOCK_BYTES` instead, if set (tests). Part of the
    fingerprint: a change remakes the shards."""
    if os.environ.get("BERT_CORPUS_BLOCK_BYTES"):
        return max(1, int(os.environ["BERT_CORPUS_BLOCK_BYTES"]))
    return max(1, min(MAX_BLOCK_BYTES, input_bytes // (8 * num_shards)))


def shard_of(number: int, num_shards: int) -> int:
    """The shard of unit `number` (numbered across the inputs): each run of num_shards units gives one
    to every shard, in an order that changes from run to run (a fixed pseudo-random permutation).
    Plain `number mod num_shards` would let a periodic input alias with the shard count: the enwiki
    excerpt repeated 8 times alternates a light and a heavy stream of 100 pages, so with 2 tasks one
    got every heavy stream (4.3 against 6.8 CPU s)."""
    group, position = divmod(number, num_shards)
    return _permutation(group, num_shards)[position]


@functools.lru_cache(maxsize=4)
def _permutation(group: int, num_shards: int) -> tuple[int, ...]:
    key = lambda k: hashlib.blake2b(f"{group}:{k}".encode(), digest_size=8).digest()  # noqa: E731
    return tuple(sorted(range(num_shards), key=key))


@dataclass
class Block:
    """Whole documents of a text, bert or jsonl file, decompressed."""
    path: str
    kind: str          # text, bert, jsonl
    first_line: int    # the line number of data's first line in the (decompressed) file
    data: bytes
    size: int          # input bytes it stands for (compressed, if the file is), for progress


@dataclass
class Stream:
    """A multistream dump's bz2 stream (`start:end` bytes), read by the worker that owns it."""
    path: str
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


def blocks(path: str, kind: str, size: int) -> Iterator[Block]:
    """The blocks of a text, bert or jsonl file, in order (at least one, maybe empty)."""
    pattern = _BOUNDARY[kind]
    line, reported = 1, 0
    try:
        with readers.open_decompressed(path) as (stream, counted):
            buf, base, n, eof = b"", 0, 0, False  # buf holds the file's bytes from offset `base`
            while True:
                pos = max(0, (n + 1) * size - base)
                match = None
                while True:
                    if len(buf) > pos:
                        match = pattern.search(buf, pos)  # a match found is whole: it needs no later byte
                    if match is not None or eof:
                        break
                    chunk = stream.read(max(_CHUNK, pos - len(buf)))
                    if chunk:
                        buf += chunk
                    else:
                        eof = True
                end = match.end() if match is not None else len(buf)
                data, buf, base = buf[:end], buf[end:], base + end
                yield Block(path, kind, line, data, counted.count - reported)
                line, reported = line + data.count(b"\n"), counted.count
                n += 1
                if eof and not buf:
                    return
    except readers.decompression_errors() as err:
        raise readers.corrupt_input(path, err, f"after line {line}") from None


def block_documents(block: Block, text_field: str, on_bad_utf8: str) -> Iterator[readers.RawDocument]:
    """The raw documents of a block, named `file:line` as if the whole file were read."""
    span = (block.data, block.first_line)
    if block.kind == "jsonl":
        return readers.iter_json_lines(block.path, text_field, on_bad_utf8, span=span)
    return readers.iter_blocks(block.path, block.kind, on_bad_utf8, span=span)
