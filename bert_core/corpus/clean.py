"""Cleaning: Unicode normalisation, control characters, minimum length, exact duplicates, and the
report of what was dropped and why.

A document's sentences are normalised (NFC by default, NFKC or none), their control characters
(Unicode category Cc: C0 but tab and newline, DEL, C1; and the noncharacters U+FFFE/U+FFFF) become
spaces and their whitespace is collapsed.
A document is dropped when it has fewer than `min_sentences` sentences or `min_chars` characters, or
when its text equals a document kept before (a 16-byte BLAKE2b digest of its cleaned sentences) in its
shard; `cross_shard` drops those that are equal only after cleaning and so were kept in two shards.

`Report` counts documents per reason with a few examples each (where, and the first characters) and
merges across shards; `write_report` leaves it as JSON and as Markdown (the KFP Markdown artifact).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field

from bert_core import storage

EXAMPLES = 3
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ufffe\uffff]")

REASONS = {
    "not_article_namespace": "wiki pages outside the article namespace (talk, user, project, ...)",
    "redirect": "wiki redirects",
    "disambiguation": "wiki disambiguation pages",
    "no_text": "nothing left after markup removal",
    "too_few_sentences": "fewer sentences than --min_sentences",
    "too_short": "fewer characters than --min_chars",
    "duplicate": "the same text as a document kept before",
}


@dataclass
class Report:
    documents_in: int = 0
    documents_out: int = 0
    sentences_out: int = 0
    chars_out: int = 0
    dropped: dict = field(default_factory=dict)   # reason -> count
    examples: dict = field(default_factory=dict)  # reason -> [{"where": ..., "text": ...}]

    def drop(self, reason: str, where: str, text: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < EXAMPLES:
            shown.append({"where": where, "text": " ".join(text.split())[:200]})

    def keep(self, sentences: int, chars: int) -> None:
        self.documents_out += 1
        self.sentences_out += sentences
        self.chars_out += chars

    def merge(self, other: "Report") -> None:
        self.documents_in += other.documents_in
        self.documents_out += other.documents_out
        self.sentences_out += other.sentences_out
        self.chars_out += other.chars_out
        for reason, count in other.dropped.items():
            self.dropped[reason] = self.dropped.get(reason, 0) + count
            shown = self.examples.setdefault(reason, [])
            shown.extend(other.examples.get(reason, [])[:EXAMPLES - len(shown)])

    def to_dict(self) -> dict:
        return {"documents_in": self.documents_in, "documents_out": self.documents_out,
                "sentences_out": self.sentences_out, "chars_out": self.chars_out,
                "dropped": dict(sorted(self.dropped.items())),
                "examples": {k: self.examples[k] for k in sorted(self.examples)}}

    @classmethod
    def from_dict(cls, d: dict) -> "Report":
        return cls(d["documents_in"], d["documents_out"], d["sentences_out"], d["chars_out"],
                   dict(d["dropped"]), {k: list(v) for k, v in d["examples"].items()})

    def summary(self) -> str:
        drops = ", ".join(f"{k} {v:,}" for k, v in sorted(self.dropped.items())) or "none"
        return (f"{self.documents_out:,} of {self.documents_in:,} documents kept "
                f"({self.sentences_out:,} sentences); dropped: {drops}")

    def markdown(self) -> str:
        lines = ["# Corpus preparation report", "",
                 f"{self.documents_out:,} of {self.documents_in:,} documents kept, "
                 f"{self.sentences_out:,} sentences, {self.chars_out:,} characters.", "",
                 "| reason | documents | meaning |", "| --- | ---: | --- |"]
        for reason, count in sorted(self.dropped.items(), key=lambda kv: -kv[1]):
            lines.append(f"| {reason} | {count:,} | {REASONS.get(reason, '')} |")
        for reason in sorted(self.examples):
            lines += ["", f"## {reason}: examples", ""]
            for ex in self.examples[reason]:
                text = ex["text"].replace("|", "\\|") or "(empty)"
                lines.append(f"- `{ex['where']}`: {text}")
        return "\n".join(lines) + "\n"


class Cleaner:
    """Turns a document's sentences into the kept, cleaned ones (or None, counting why)."""

    def __init__(self, report: Report, form: str = "NFC", min_sentences: int = 2, min_chars: int = 100,
                 dedup: bool = True):
        self.report, self.form = report, form
        self.min_sentences, self.min_chars, self.dedup = min_sentences, min_chars, dedup
        self.seen: set[bytes] = set()

    def __call__(self, where: str, sentences: list[str], raw: str) -> list[str] | None:
        data = self.clean(where, "\n".join(sentences), raw)
        return None if data is None else data.decode("utf-8").split("\n")

    def clean(self, where: str, text: str, raw: str) -> bytes | None:
        """A document's sentences, one a line (blank lines and whitespace at a line's end are dropped as
        any other): the kept ones, cleaned, one a line, in UTF-8 (what the shard gets), or None."""
        if text.isascii():  # most text; its UTF-8 is its ASCII, checked as bytes and kept for the shard
            data = text.encode("ascii")
            done = _tidy_ascii(data)
        else:
            data = None
            done = tidy(text) and (self.form == "none" or unicodedata.is_normalized(self.form, text))
        if not done:
            # One normalisation call for the whole document, then each line.
            if self.form != "none" and not text.isascii():
                text = unicodedata.normalize(self.form, text)
            text = "\n".join(s for s in (" ".join(x.split()) for x in _CONTROL.sub(" ", text).split("\n")) if s)
            data = None
        if not text:
            self.report.drop("no_text", where, raw)
            return None
        lines = text.count("\n") + 1
        if lines < self.min_sentences:
            self.report.drop("too_few_sentences", where, text)  # drop() collapses its newlines
            return None
        chars = len(text) - (lines - 1)
        if chars < self.min_chars:
            self.report.drop("too_short", where, text)
            return None
        if data is None:
            data = text.encode("utf-8")
        if self.dedup:
            digest = hashlib.blake2b(data, digest_size=16).digest()
            if digest in self.seen:
                self.report.drop("duplicate", where, text)
                return None
            self.seen.add(digest)
        self.report.keep(lines, chars)
        return data


def tidy(text: str) -> bool:
    """Whether the lines of `text` are each non-empty, printable (so without control characters or
    whitespace but the space), stripped and without double spaces: what collapsing whitespace line by
    line leaves as it is. Most text is, and telling so takes three passes in C where collapsing takes a
    few Python steps a line."""
    if text.isascii():
        return _tidy_ascii(text.encode("ascii"))
    spaced = text.replace("\n", " ")  # an empty or unstripped line: a space at an end or a double space
    return bool(spaced) and spaced[0] != " " and spaced[-1] != " " and spaced.isprintable() and "  " not in spaced


_UNPRINTABLE_ASCII = bytes(range(32)) + b"\x7f"  # what str.isprintable() refuses in ASCII


def _tidy_ascii(data: bytes) -> bool:
    """`tidy` for ASCII text, as its bytes: a table lookup a byte, not a Unicode property lookup a character."""
    spaced = data.replace(b"\n", b" ")
    return (bool(spaced) and spaced[0] != 32 and spaced[-1] != 32 and b"  " not in spaced
            and len(spaced.translate(None, _UNPRINTABLE_ASCII)) == len(spaced))


def write_report(report: Report, json_path: str, markdown_path: str) -> None:
    storage.write_json(json_path, report.to_dict())
    storage.write_text(markdown_path, report.markdown())
