"""prepare-corpus's fast paths for text, JSON lines and BERT format give what the plain way gives:
reading a megabyte of lines at a time (blocks of a few bytes here, to cut lines and documents
anywhere), blingfire's C function on a reused buffer, cleaning that skips documents with nothing to
clean, the cross-shard pass on bytes; and a run imports only what it needs."""

from __future__ import annotations

import random
import subprocess
import sys
import unicodedata

import pytest

from conftest import ROOT
from bert_core.corpus import clean, cross_shard, readers, segment
from bert_core.corpus.prepare import document_text
from bert_core.errors import UserError

_ATOMS = ["a", "Word", "caf\u00e9", "cafe\u0301", "\ufb01", "\u00a8", " ", "  ", "\t", "\n", "\n\n", "\r", "\x00",
          "\x07", "\x1c", "\x85", "\x9f", "\u00a0", "\u2028", "\u2029", "\u3000", "\ufffe", "\x7f", "\x0b",
          ". ", "Mr. ", "? ", "\U0001F600", "\u200b", "\u0301", "\u2000", "x. Y"]


def _random_texts(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        pool = _ATOMS if rng.random() < 0.5 else ["Word", " ", ". ", "\n", "\u00e9"]
        texts.append("".join(rng.choice(pool) for _ in range(rng.randint(0, 30))))
    return texts


# --- the plain ways, as prepare-corpus did them before the fast paths ---------------------------------
def _plain_sentences(paragraphs: list[str]) -> list[str]:
    import blingfire  # the package's own wrapper

    text = " \u2029 ".join(p.replace("\u2029", " ") for p in paragraphs if p.strip())
    if not text:
        return []
    return [s for line in blingfire.text_to_sentences(text).split("\n")
            for s in (x.strip() for x in line.split("\u2029")) if s]


def _plain_paragraph(paragraph: str) -> list[str]:
    import blingfire

    if not paragraph.strip():
        return []
    return [s for s in (x.strip() for x in blingfire.text_to_sentences(paragraph).split("\n")) if s]


def _plain_clean(sentences: list[str], form: str) -> list[str]:
    text = "\n".join(sentences)
    if form != "none":
        text = unicodedata.normalize(form, text)
    text = clean._CONTROL.sub(" ", text)
    return [s for s in (" ".join(x.split()) for x in text.split("\n")) if s]


def _plain_blocks(data: bytes) -> list[tuple[int, str]]:
    docs, block, first = [], [], 0
    for number, raw in enumerate(data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n"), 1):
        line = raw.decode("utf-8", errors="replace").rstrip("\r")
        if line.strip():
            first = first if block else number
            block.append(line)
        elif block:
            docs.append((first, "\n".join(block)))
            block = []
    if block:
        docs.append((first, "\n".join(block)))
    return docs


# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("block", [3, 64, 1 << 20])
def test_blocks_of_lines_are_the_lines(tmp_path, monkeypatch, block):
    monkeypatch.setattr(readers, "_BLOCK", block)
    data = (b"First doc.\r\nIts second line \r\n\r\n  \t \n\n\nA long one " + b"word " * 100 + b"\n \xe3\x80\x80\n"
            b"caf\xc3\xa9 \xff\n\nlast, no newline")
    src = tmp_path / "t.txt"
    src.write_bytes(data)
    for kind in ("text", "bert"):
        got = [(d.where, d.text, d.kind) for d in readers.iter_blocks(str(src), kind, "replace")]
        assert got == [(f"{src}:{n}", text, kind) for n, text in _plain_blocks(data)]
    with pytest.raises(UserError, match=r"t.txt:9: invalid UTF-8 at byte 7 of the line"):
        list(readers.iter_blocks(str(src), "text"))
    lines = ['{"text": "one"}', "", '  ', '{"text": "caf\\u00e9 two\\nlines"}', '{"text": "three"}']
    src.write_text("\n".join(lines))
    got = [(d.where, d.text) for d in readers.iter_json_lines(str(src), "text")]
    assert got == [(f"{src}:1", "one"), (f"{src}:4", "caf\u00e9 two\nlines"), (f"{src}:5", "three")]


def test_sentences_are_blingfires():
    rng = random.Random(1)
    for text in _random_texts(2, 3000):
        paragraphs = text.split("\n") if rng.random() < 0.5 else [text]
        assert segment.split_paragraphs(paragraphs) == _plain_sentences(paragraphs), paragraphs
        assert segment.split_sentences(text) == _plain_paragraph(text), text
    big = ["A sentence. " * 200_000]  # a 2.4 MB paragraph: the buffer grows
    assert segment.split_paragraphs(big) == _plain_sentences(big)


@pytest.mark.parametrize("form", ["NFC", "NFKC", "none"])
def test_cleaning_skips_only_documents_with_nothing_to_clean(form):
    fast, plain = clean.Report(), clean.Report()
    cleaner = clean.Cleaner(fast, form, min_sentences=1, min_chars=0)
    seen = set()
    for n, text in enumerate(_random_texts(3, 5000)):
        sentences = text.split("\n")
        kept = cleaner(f"d:{n}", sentences, text)
        expected = _plain_clean(sentences, form) or None
        if expected is not None and "\n".join(expected) in seen:
            expected = None
        elif expected is not None:
            seen.add("\n".join(expected))
            plain.keep(len(expected), sum(map(len, expected)))
        assert kept == expected, repr(text)
    assert (fast.documents_out, fast.sentences_out, fast.chars_out) == (
        plain.documents_out, plain.sentences_out, plain.chars_out)


@pytest.mark.parametrize("kind", ["text", "bert", "jsonl"])
def test_a_documents_text_cleans_as_its_sentences(kind):
    """document_text hands cleaning blingfire's lines untrimmed (bert: the raw lines): the same kept text
    as trimming them first."""
    for text in _random_texts(4, 3000):
        if kind != "jsonl":  # as iter_blocks makes them
            text = "\n".join(l for l in text.split("\n") if l.strip())
        doc = readers.RawDocument("d:1", text, kind)
        if kind == "jsonl":
            paragraphs = [p for p in (" ".join(l.split()) for l in text.splitlines()) if p]
        else:
            paragraphs = [l.strip() for l in text.split("\n") if l.strip()]
        sentences = paragraphs if kind == "bert" else _plain_sentences(paragraphs)
        got = clean.Cleaner(clean.Report(), "NFKC", 1, 0).clean("d:1", document_text(doc), text)
        assert got == ("\n".join(_plain_clean(sentences, "NFKC")).encode() or None), repr(text)


@pytest.mark.parametrize("block", [2, 5, 1 << 20])
def test_cross_shard_reads_the_documents_as_written(tmp_path, monkeypatch, block):
    monkeypatch.setattr(cross_shard, "_BLOCK", block)
    docs = [["One.", "Two caf\u00e9."], ["Three."], ["x" * 20, "y"], ["Last."]]
    path = tmp_path / "corpus-00000-of-00001.txt"
    path.write_text("\n\n".join("\n".join(d) for d in docs) + "\n", encoding="utf-8")
    got = list(cross_shard._documents(str(path)))
    assert got == ["\n".join(d).encode() for d in docs]
    assert [cross_shard.digest(d) for d in got] == [
        clean.hashlib.blake2b("\n".join(d).encode(), digest_size=16).digest() for d in docs]
    cross_shard._write(str(path), got[1:])
    assert path.read_text(encoding="utf-8") == "\n\n".join("\n".join(d) for d in docs[1:]) + "\n"


def test_a_text_run_imports_only_what_it_needs(tmp_path):
    """Start-up is a fixed cost of every run: no numpy (blingfire's module imports it), no dump parser,
    no create-data code."""
    src = tmp_path / "t.txt"
    src.write_text("One sentence here. And another one.\n\nA second document. It ends.\n")
    code = ("import sys\nfrom bert_core import cli\n"
            f"try:\n    cli.main(['prepare-corpus', '--input_file={src}', '--output_dir={tmp_path / 'out'}',"
            " '--min_chars=0'])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "heavy = ['numpy', 'tensorflow', 'blingfire', 'bert_core.corpus.wiki', 'bert_core.data.pretraining']\n"
            "print('loaded:', [m for m in heavy if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "loaded: []" in out, out


def test_a_lone_surrogate_in_json_lines_is_bad_text(tmp_path):
    """A `\\ud800` escape decodes to a lone surrogate, which no UTF-8 holds (it crashed the segmenter):
    an error naming file:line, or U+FFFD with --on_bad_utf8=replace; a surrogate pair is a character."""
    src = tmp_path / "s.jsonl"
    src.write_text('{"text": "Fine \\ud83d\\ude00 pair."}\n{"id": 2, "text": "Bad \\ud800 one."}\n')
    with pytest.raises(UserError, match=r"s.jsonl:2: field 'text' holds a lone surrogate \(U\+D800 at character 5\)"):
        list(readers.iter_json_lines(str(src), "text"))
    docs = [d.text for d in readers.iter_json_lines(str(src), "text", "replace")]
    assert docs == ["Fine \U0001F600 pair.", "Bad \ufffd one."]
