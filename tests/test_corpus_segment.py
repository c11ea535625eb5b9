"""Sentence segmentation against a segmenter's own gold: the Pragmatic Segmenter's English golden rules
(pysbd's test set; tests/golden_rules.py). Brown's sentences are the other gold
(tests/test_prepare_corpus.py). The scores are those measured when blingfire was chosen
(docs/data.md "Choices, measured"): a drop means segmentation broke or was swapped for a worse one."""

from __future__ import annotations

import pytest

import golden_rules
from bert_core.corpus.segment import split_paragraphs, split_sentences

RULES = 48  # pysbd 0.3.4's list, numbered 1 to 48
# Right with blingfire 0.1.8 (the other 12 and 13: docs/data.md). NLTK's untrained punkt gets 19, syntok 34.
RIGHT_ALONE = 36  # each text alone
RIGHT_IN_ONE_DOCUMENT = 35  # the texts as one document's paragraphs (prepare-corpus's call); 5) "p. 55." is cut


def test_the_golden_rules_are_read_whole(golden_rules_file):
    rules = golden_rules.read(golden_rules_file)
    assert [r.number for r in rules] == list(range(1, RULES + 1))
    assert all(r.text and r.sentences and all(r.sentences) and r.title for r in rules)
    assert rules[0] == golden_rules.Rule(1, "Simple period to end sentence", "Hello World. My name is Jonas.",
                                         ("Hello World.", "My name is Jonas."))
    assert rules[17].title.startswith("A.M. / P.M.") and len(rules[17].sentences) == 3  # a second comment above
    assert rules[-1].sentences[-1] == ". . . The practice was not abandoned. . . ."


def test_our_segmenter_keeps_its_golden_rule_score(golden_rules_file):
    rules = golden_rules.read(golden_rules_file)
    alone = golden_rules.wrong(split_sentences, rules)
    assert RULES - len(alone) >= RIGHT_ALONE, f"wrong: {alone}"
    in_document = golden_rules.wrong_in_one_document(split_paragraphs, rules)
    assert RULES - len(in_document) >= RIGHT_IN_ONE_DOCUMENT, f"wrong: {in_document}"


def test_sentences_are_given_back_to_their_paragraphs():
    rules = [golden_rules.Rule(1, "a", "One. Two.", ("One.", "Two.")), golden_rules.Rule(2, "b", "Three.", ("Three.",)),
             golden_rules.Rule(3, "c", "Four. Five.", ("Four.", "Five."))]
    exact = ["One.", "Two.", "Three.", "Four.", "Five."]
    assert golden_rules.wrong_in_one_document(lambda paragraphs: exact, rules) == []
    assert golden_rules.wrong_in_one_document(lambda paragraphs: paragraphs, rules) == [1, 3]  # never split
    assert golden_rules.wrong_in_one_document(lambda p: ["One.", "Two. Three.", "Four.", "Five."], rules) == [1, 2]
    assert golden_rules.wrong_in_one_document(lambda p: [" ".join(p)], rules) == [1, 2, 3]
    with pytest.raises(ValueError, match="not the document's text"):
        golden_rules.wrong_in_one_document(lambda p: exact[:-1], rules)
