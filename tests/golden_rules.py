"""The Pragmatic Segmenter's English "Golden Rules": short texts, each with the sentences it should split
into (abbreviations, numbers, quotations, lists, ellipses, ...), the test set of the Pragmatic Segmenter
and of pysbd, its Python port. pysbd 0.3.4's wheel ships them as benchmarks/english_golden_rules.py: a
list `GOLDEN_EN_RULES` of (text, sentences), a comment `# N) title` above each. scripts/fetch_test_data.sh
fetches that file; here it is read with `ast` (data: never imported or run). Scored the way pysbd's own
benchmark scores it: a rule is right when the segmenter's sentences, trimmed, are exactly its list.
Used by tests/test_corpus_segment.py and benchmarks/bench_corpus.py (golden_rules_table).
"""

from __future__ import annotations

import ast
import bisect
import dataclasses
import pathlib
import re
from typing import Callable

FILE_NAME = "pysbd-golden-rules-en.py"  # as scripts/fetch_test_data.sh names it, beside brown.txt
_TITLE = re.compile(r"^\s*#\s*(\d+)\)\s*(.*?)\s*$")


@dataclasses.dataclass(frozen=True)
class Rule:
    number: int
    title: str
    text: str
    sentences: tuple[str, ...]


def read(path: str | pathlib.Path) -> list[Rule]:
    """The rules in the file's order, each numbered and titled by the `# N) title` comment above it."""
    source = pathlib.Path(path).read_text("utf-8")
    lists = [node.value for node in ast.parse(source).body if isinstance(node, ast.Assign)
             and any(isinstance(t, ast.Name) and t.id == "GOLDEN_EN_RULES" for t in node.targets)]
    if len(lists) != 1 or not isinstance(lists[0], ast.List):
        raise ValueError(f"{path}: expected one list GOLDEN_EN_RULES")
    titles = {i: m.groups() for i, line in enumerate(source.splitlines(), 1) if (m := _TITLE.match(line))}
    lines = sorted(titles)
    rules = []
    for element in lists[0].elts:
        text, sentences = ast.literal_eval(element)
        above = bisect.bisect_left(lines, element.lineno) - 1  # the nearest numbered comment above it
        if above < 0:
            raise ValueError(f"{path}:{element.lineno}: a rule without a `# N) title` comment above it")
        number, title = titles[lines[above]]
        rules.append(Rule(int(number), title, text, tuple(sentences)))
    return rules


def _trimmed(sentences) -> tuple[str, ...]:
    return tuple(s.strip() for s in sentences if s.strip())


def wrong(split: Callable[[str], list[str]], rules: list[Rule]) -> list[int]:
    """The numbers of the rules `split` (a text -> its sentences) gets wrong, each text alone."""
    return [r.number for r in rules if _trimmed(split(r.text)) != r.sentences]


def wrong_in_one_document(split_document: Callable[[list[str]], list[str]], rules: list[Rule]) -> list[int]:
    """The same with the texts as the paragraphs of one document, in one call (prepare-corpus's way:
    a segmenter then sees the next paragraph). The sentences are given back to their paragraphs by
    their non-space characters, which must all be there in order; one that runs over a paragraph's
    end makes every paragraph it touches wrong."""
    def chars(text: str) -> str:
        return "".join(text.split())

    sentences = _trimmed(split_document([r.text for r in rules]))
    if chars("".join(sentences)) != chars("".join(r.text for r in rules)):
        raise ValueError("the segmenter's sentences are not the document's text (characters lost or changed)")
    ends, at = [], 0
    for r in rules:
        at += len(chars(r.text))
        ends.append(at)
    got: list[list[str]] = [[] for _ in rules]
    spanned: set[int] = set()
    at = 0
    for s in sentences:
        first, last = bisect.bisect_right(ends, at), bisect.bisect_left(ends, at + len(chars(s)))
        if first == last:
            got[first].append(s)
        else:
            spanned.update(range(first, last + 1))
        at += len(chars(s))
    return [r.number for i, r in enumerate(rules) if i in spanned or tuple(got[i]) != r.sentences]
