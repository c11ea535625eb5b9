"""wiki.wikitext_to_paragraphs with its C steps chained (native.chain): the same paragraphs as the Python
code, whether the chain runs every step or stops at any of them (the rest then runs step by step)."""

from __future__ import annotations


import pytest

from bert_core.corpus import native, wiki
from conftest import needs_corpus_native

pytestmark = needs_corpus_native


@pytest.fixture(scope="module")
def articles(wiki_excerpt) -> list[str]:
    return [d.text for d in wiki.iter_dump(wiki_excerpt) if not d.dropped]


def python_paragraphs(texts: list[str]) -> list[list[str]]:
    """The paragraphs by the Python code alone (as without the library)."""
    real = native.library
    native.library = lambda: None
    try:
        return [wiki.wikitext_to_paragraphs(t) for t in texts]
    finally:
        native.library = real


def test_every_step_is_in_the_library():
    assert native.library() is not None, native.build_error()
    for name in wiki._C_STEPS:
        assert getattr(native.library(), name, None) is not None, name


def test_the_chain_gives_the_python_paragraphs_and_runs_whole_on_most_articles(articles):
    whole = sum(native.chain(wiki._C_STEPS, t)[1] == len(wiki._C_STEPS) for t in articles)
    assert whole >= 0.85 * len(articles), whole  # measured: 95 of 98 (the rest hold <nowiki>, <pre> or [[[)
    assert [wiki.wikitext_to_paragraphs(t) for t in articles] == python_paragraphs(articles)


@pytest.mark.parametrize("stop", range(len(wiki._C_STEPS)))
def test_a_chain_that_stops_at_any_step_ends_with_the_same_paragraphs(articles, stop, monkeypatch):
    """As if step `stop` gave up on every article: the steps after it run one by one (C or Python)."""
    real = native.chain
    monkeypatch.setattr(native, "chain", lambda names, text: real(names[:stop], text))
    assert [wiki.wikitext_to_paragraphs(t) for t in articles] == python_paragraphs(articles)
