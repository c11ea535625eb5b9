"""GLUE and SQuAD metrics on hand-made data; every expected number was worked out by hand (see comments)."""

from __future__ import annotations

import pytest

from bert_core import metrics
from bert_core.errors import UserError

# --------------------------------------------------------------------------------------------------
# GLUE
# --------------------------------------------------------------------------------------------------
# preds vs labels: TP=2 (0, 3), FP=1 (2), FN=1 (4), TN=1 (1).
PREDS, LABELS = [1, 0, 1, 1, 0], [1, 0, 0, 1, 1]


def test_classification_metrics_by_hand():
    assert metrics.accuracy(PREDS, LABELS) == pytest.approx(3 / 5)
    assert metrics.f1(PREDS, LABELS) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))  # 2TP / (2TP + FP + FN)
    # (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (2 - 1) / sqrt(3*3*2*2)
    assert metrics.matthews_corrcoef(PREDS, LABELS) == pytest.approx(1 / 6)


def test_correlations_by_hand():
    # deviations (-1, 0, 1) and (-1, 1, 0): covariance sum 1, variance sums 2 and 2 -> r = 0.5; ranks equal values.
    assert metrics.pearson([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert metrics.spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    # y = x^2: monotone (Spearman 1); Pearson = 25 / sqrt(5 * 129)
    assert metrics.spearman([1, 2, 3, 4], [1, 4, 9, 16]) == pytest.approx(1.0)
    assert metrics.pearson([1, 2, 3, 4], [1, 4, 9, 16]) == pytest.approx(25 / (5 * 129) ** 0.5)


def test_glue_metrics_per_task():
    assert metrics.glue_metrics("CoLA", PREDS, LABELS) == {"mcc": pytest.approx(1 / 6)}
    mrpc = metrics.glue_metrics("mrpc", PREDS, LABELS)
    assert mrpc == {"accuracy": pytest.approx(0.6), "f1": pytest.approx(2 / 3),
                    "accuracy_and_f1": pytest.approx((0.6 + 2 / 3) / 2)}
    assert set(metrics.glue_metrics("qqp", PREDS, LABELS)) == {"accuracy", "f1", "accuracy_and_f1"}
    for task in ("sst-2", "mnli", "qnli", "rte", "wnli", "xnli", "tsv"):
        assert metrics.glue_metrics(task, PREDS, LABELS) == {"accuracy": pytest.approx(0.6)}
    sts = metrics.glue_metrics("sts-b", [1.0, 2.0, 3.0], [1.0, 3.0, 2.0])
    assert sts == {"pearson": pytest.approx(0.5), "spearman": pytest.approx(0.5), "corr": pytest.approx(0.5)}
    assert set(metrics.glue_metrics("tsv", [0.1, 0.5, 0.2], [1.0, 2.0, 3.0], regression=True)) == {
        "pearson", "spearman", "corr"}
    assert metrics.mnli_metrics([0, 1], [0, 1], [2, 2, 0, 1], [2, 1, 0, 0]) == {
        "mnli_m_accuracy": 1.0, "mnli_mm_accuracy": 0.5}
    with pytest.raises(ValueError, match="3 predictions for 2 labels"):
        metrics.glue_metrics("sst-2", [0, 1, 1], [0, 1])


# --------------------------------------------------------------------------------------------------
# SQuAD: the official definitions
# --------------------------------------------------------------------------------------------------
def test_normalize_answer():
    assert metrics.normalize_answer("The  Quick, brown fox!") == "quick brown fox"
    assert metrics.normalize_answer("An apple a day") == "apple day"
    assert metrics.normalize_answer("Theory of anthems") == "theory of anthems"  # articles only as words
    assert metrics.normalize_answer("Levi's\tStadium\n") == "levis stadium"
    assert metrics.normalize_answer("Café «Zürich»") == "café «zürich»"  # only ASCII punctuation goes


def test_exact_and_f1_single_answers():
    assert metrics.exact_match("the Eiffel Tower", "Eiffel tower.") == 1
    # pred (eiffel tower in paris) vs gold (eiffel tower): common 2, P = 2/4, R = 2/2 -> F1 = 2/3
    assert metrics.token_f1("Eiffel Tower in Paris", "Eiffel Tower") == pytest.approx(2 / 3)
    # bags, not sets: (x y y) vs (y y z): common min counts = 2 -> P = R = 2/3 -> F1 = 2/3
    assert metrics.token_f1("x y y", "y y z") == pytest.approx(2 / 3)
    assert metrics.token_f1("Paris", "France") == 0.0
    # Empty answers: v2 scores agreement, v1.1 scores 0.
    assert metrics.token_f1("", "") == 1.0 and metrics.token_f1("the", "") == 1.0
    assert metrics.token_f1("", "Paris") == 0.0
    assert metrics.token_f1("", "", version_2=False) == 0.0


def _qa(qid, *answers):
    return {"id": qid, "question": "?", "answers": [{"text": a, "answer_start": 0} for a in answers]}


def test_squad_v1_max_over_several_gold_answers():
    data = [{"paragraphs": [{"context": "...", "qas": [
        _qa("q1", "Eiffel Tower", "tower"),
        _qa("q2", "Eiffel Tower", "Paris"),
        _qa("q3", "France"),
        _qa("q4", "1889"),  # no prediction: scores 0
    ]}]}]
    preds = {"q1": "the Eiffel Tower", "q2": "Eiffel Tower in Paris", "q3": "Paris"}
    # EM: q1 1 (first gold); q2 0; q3 0; q4 0.  F1: q1 1; q2 max(2/3, 2*(1/4)(1)/(5/4) = 0.4) = 2/3.
    got = metrics.squad_metrics(data, preds)
    assert got == {"exact_match": pytest.approx(100 * 1 / 4), "f1": pytest.approx(100 * (1 + 2 / 3) / 4),
                   "total": 4}


V2_DATA = [{"paragraphs": [{"context": "...", "qas": [
    _qa("q1", "Denver Broncos", "the Broncos"),
    _qa("q2"),
    _qa("q3"),
    _qa("q4", "Santa Clara"),
    _qa("q5", "Levi's Stadium"),
]}]}]
V2_PREDS = {"q1": "Denver Broncos", "q2": "", "q3": "Carolina", "q4": "", "q5": "Levi Stadium"}
# raw exact = (1, 1, 0, 0, 0); raw F1 = (1, 1, 0, 0, 0.5): (levis stadium) vs (levi stadium): P = R = 1/2.


def test_squad_v2_has_and_no_answer_splits():
    got = metrics.squad_metrics(V2_DATA, V2_PREDS, version_2=True)
    assert got == pytest.approx({
        "exact": 40.0, "f1": 50.0, "total": 5,
        "HasAns_exact": 100 / 3, "HasAns_f1": 100 * 1.5 / 3, "HasAns_total": 3,
        "NoAns_exact": 50.0, "NoAns_f1": 50.0, "NoAns_total": 2})


def test_squad_v2_best_threshold_by_hand():
    odds = {"q1": -2.0, "q2": 3.0, "q3": 0.5, "q4": 1.5, "q5": -1.0}
    got = metrics.squad_metrics(V2_DATA, V2_PREDS, version_2=True, na_probs=odds)
    # na_prob_thresh 1.0 nulls q2 (no answer: 1, as before) and q4 (has one: 0, as before).
    assert got["exact"] == pytest.approx(40.0) and got["f1"] == pytest.approx(50.0)
    # All null: q2, q3 right -> 2. Admit by odds: q1 (+1) 3; q5 (+0 exact, +0.5 F1); q3 ("Carolina" for no
    # answer: -1); q4 (+0); q2 ("" : +0). Exact peaks at 3 after q1 (thresh -2); F1 at 3.5 after q5 (thresh -1).
    assert got["best_exact"] == pytest.approx(60.0) and got["best_exact_thresh"] == -2.0
    assert got["best_f1"] == pytest.approx(70.0) and got["best_f1_thresh"] == -1.0
    # A lower na_prob_thresh also nulls q3 (right: no answer) and q4, q1 stays: exact (1+1+1+0+0)/5.
    low = metrics.squad_metrics(V2_DATA, V2_PREDS, version_2=True, na_probs=odds, na_prob_thresh=0.0)
    assert low["exact"] == pytest.approx(60.0) and low["NoAns_exact"] == pytest.approx(100.0)


def test_nan_null_odds_are_one_line():
    odds = {"q1": -2.0, "q2": float("nan"), "q3": 0.5, "q4": 1.5, "q5": -1.0}
    with pytest.raises(UserError, match="the null odds of question 'q2' are NaN: expected a number"):
        metrics.squad_metrics(V2_DATA, V2_PREDS, version_2=True, na_probs=odds)


@pytest.mark.parametrize("version_2", [False, True])
def test_a_question_id_in_the_dataset_twice_is_one_line(version_2):
    data = [{"paragraphs": [{"context": "...", "qas": [_qa("q1", "a")]}, {"context": "...", "qas": [_qa("q1", "b")]}]}]
    with pytest.raises(UserError, match=r"the SQuAD dataset has question id 'q1' twice \(data\[0\].paragraphs\[0\]"
                                        r".qas\[0\] and data\[0\].paragraphs\[1\].qas\[0\]\)"):
        metrics.squad_metrics(data, {"q1": "a"}, version_2=version_2)


def test_best_threshold_keeps_all_null_when_nothing_helps():
    data = [{"paragraphs": [{"context": "...", "qas": [_qa("a"), _qa("b", "x")]}]}]
    got = metrics.squad_metrics(data, {"a": "wrong", "b": "y"}, version_2=True, na_probs={"a": 0.1, "b": 0.2})
    # All null: a right (1 of 2). Admitting a costs 1, b gains 0: the start stays best, at threshold 0.0.
    assert got["best_exact"] == pytest.approx(50.0) and got["best_exact_thresh"] == 0.0


def test_v2_gold_answers_that_normalize_to_nothing_are_dropped():
    data = [{"paragraphs": [{"context": "...", "qas": [_qa("a", "The", "!"), _qa("b", "the end", "A")]}]}]
    golds, has = metrics.gold_answers(data, version_2=True)
    assert golds == {"a": [""], "b": ["the end"]} and has == {"a": True, "b": True}
    # "a" has answers but they normalize to nothing: an empty prediction matches it.
    got = metrics.squad_metrics(data, {"a": "", "b": "end"}, version_2=True)
    assert got["exact"] == pytest.approx(100.0) and got["HasAns_total"] == 2


@pytest.mark.parametrize("seed", range(5))
def test_best_threshold_is_the_best_cut_by_brute_force(seed):
    """The definition: predict null iff odds > t; the best t among the odds beats "all null" or is 0.0."""
    import random

    rng = random.Random(seed)
    qids = [f"q{i}" for i in range(30)]
    has = {q: rng.random() < 0.6 for q in qids}
    preds = {q: rng.choice(["", "x"]) for q in qids}
    scores = {q: rng.choice([0.0, 0.5, 1.0]) if has[q] else float(preds[q] == "") for q in qids}
    odds = {q: rng.uniform(-5, 5) for q in qids}

    def total(t):
        return sum((0.0 if has[q] else 1.0) if odds[q] > t else
                   (scores[q] if has[q] else float(preds[q] == "")) for q in qids)

    all_null = sum(not has[q] for q in qids)
    best_t = max(sorted(odds.values()), key=total)  # first of the maxima in increasing order
    expected = (total(best_t), best_t) if total(best_t) > all_null else (all_null, 0.0)
    got = metrics.best_threshold(preds, scores, odds, has)
    assert got == pytest.approx((100 * expected[0] / len(qids), expected[1]))
