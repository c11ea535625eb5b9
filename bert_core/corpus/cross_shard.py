"""Duplicates across shards: documents equal raw or after cleaning, kept in two shards.

A document's shard comes from where it was read (its block of a text file, its dump stream; a plain
dump's page: its raw text), which keeps the expensive work in the workers that own the shards; two
copies of a document (raw-identical in two blocks, or differing raw but agreeing once cleaned:
NFC-equivalent characters, control characters, whitespace, different markup around the same prose)
can then be kept in two shards, each shard's `Cleaner` seeing only one of them. This pass, run once after every shard is
whole, reads the shards in order and drops from shard k each document whose cleaned text (the same
16-byte BLAKE2b digest as `Cleaner`) a shard before k kept: the copy in the lowest shard is kept. The
shards are read as written, so the result does not depend on workers, ranks or resuming.

Atomic and resumable: a shard with duplicates gets its counts (`.corpus_stats/<shard>.dups.json`)
before it is rewritten (temporary + rename); a rerun finds the same documents in the shards before it
(what a shard drops is always in an earlier one), rewrites a shard only if it still holds duplicates,
and takes the counts from that file. Memory: 16 bytes a kept document, as in `Cleaner`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from bert_core import storage
from bert_core.corpus.clean import Report
from bert_core.errors import UserError


def dups_path(output_dir: str, stats_dir: str, name: str) -> str:
    return storage.join(output_dir, stats_dir, name + ".dups.json")


def digest(document: bytes) -> bytes:
    """A kept document's key, as `Cleaner` computes it: of its lines joined by "\\n", in UTF-8."""
    return hashlib.blake2b(document, digest_size=16).digest()


_BLOCK = 1 << 20


def _documents(path: str) -> Iterator[bytes]:
    """A shard's documents as written (UTF-8, a sentence a line, a blank line between documents), each its
    lines joined by b"\\n"; streamed a megabyte at a time and split in C, as bytes: only a duplicate's
    text is decoded, for the report."""
    buffer = bytearray()
    with storage.open_read(path, "rb") as f:
        while True:
            chunk = f.read(_BLOCK)
            searched = max(0, len(buffer) - 1)
            buffer += chunk
            cut = buffer.rfind(b"\n\n", searched) if chunk else len(buffer)
            if cut > 0:
                for document in bytes(buffer[:cut]).split(b"\n\n"):
                    document = document.strip(b"\n")
                    if document:
                        yield document
                del buffer[:cut]
            if not chunk:
                return


def _write(path: str, documents) -> None:
    with storage.atomic_open(path, "wb") as f:
        for n, document in enumerate(documents):
            f.write((b"\n" if n else b"") + document + b"\n")


def remove(output_dir: str, stats_dir: str, names: list[str], fingerprint: str, total: Report) -> None:
    """Drop the cross-shard duplicates from the shards `names` (in shard order) and count them in `total`."""
    seen: set[bytes] = set()
    for name in names:
        path = storage.join(output_dir, name)
        found, fresh = Report(), set()
        for n, document in enumerate(_documents(path)):
            key = digest(document)
            if key not in seen:
                fresh.add(key)
                continue
            text = document.decode("utf-8")
            found.drop("duplicate", f"{name}: document {n + 1} (kept in an earlier shard)", text)
            found.documents_out += 1
            found.sentences_out += text.count("\n") + 1
            found.chars_out += len(text) - text.count("\n")
        if found.dropped:  # the counts first: a rerun after a kill finds this shard rewritten or not
            storage.write_json(dups_path(output_dir, stats_dir, name), {"fingerprint": fingerprint, **found.to_dict()})
            _write(path, (document for document in _documents(path) if digest(document) not in seen))
        seen |= fresh
        recorded = _recorded(output_dir, stats_dir, name, fingerprint)
        if recorded is not None:
            total.documents_out -= recorded.documents_out
            total.sentences_out -= recorded.sentences_out
            total.chars_out -= recorded.chars_out
            total.merge(Report(dropped=recorded.dropped, examples=recorded.examples))


def _recorded(output_dir: str, stats_dir: str, name: str, fingerprint: str) -> Report | None:
    data = fingerprinted(dups_path(output_dir, stats_dir, name), fingerprint)
    return None if data is None else Report.from_dict(data)


def fingerprinted(path: str, fingerprint: str) -> dict | None:
    """The JSON object of a counts file (`.corpus_stats/`) if it exists, reads whole, and was written
    for this fingerprint (the same inputs and settings); else None: the work it counts is to be redone."""
    if not storage.exists(path):
        return None
    try:
        data = storage.read_json(path)
    except (UserError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("fingerprint") != fingerprint:
        return None
    return data
