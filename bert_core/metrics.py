"""GLUE and SQuAD metrics by their official definitions.

GLUE (scikit-learn and scipy): accuracy; F1 of the positive class (label id 1) for MRPC and QQP, with
accuracy and their mean; Matthews correlation for CoLA; Pearson and Spearman correlation for STS-B;
accuracy for MNLI matched and mismatched dev sets and the other tasks.

SQuAD (the official evaluation scripts' definitions): answers are normalized (lower-case, punctuation
removed, the articles a/an/the removed, whitespace collapsed); exact match and bag-of-tokens F1, each
the max over the gold answers, averaged over questions and reported in percent. Version 2.0 adds the
HasAns_/NoAns_ splits, the no-answer threshold on null odds (`na_prob_thresh`) and the best threshold
for exact and F1 (`best_exact`, `best_exact_thresh`, `best_f1`, `best_f1_thresh`). A question without
a prediction scores 0 (as v1.1's script does).
"""

from __future__ import annotations

import collections
import logging
import re
import string
from typing import Mapping, Sequence

import numpy as np

from bert_core.errors import UserError

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# GLUE
# --------------------------------------------------------------------------------------------------
def accuracy(preds, labels) -> float:
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(labels, preds))


def f1(preds, labels, pos_label=1) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(labels, preds, pos_label=pos_label, average="binary", zero_division=0.0))


def matthews_corrcoef(preds, labels) -> float:
    from sklearn.metrics import matthews_corrcoef as mcc

    return float(mcc(labels, preds))


def pearson(preds, labels) -> float:
    from scipy.stats import pearsonr

    return float(pearsonr(preds, labels)[0])


def spearman(preds, labels) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(preds, labels)[0])


# Which metrics each task reports (task names as bert_core.data.glue.get_task spells them).
GLUE_TASK_METRICS: dict[str, tuple[str, ...]] = {
    "cola": ("mcc",),
    "sst-2": ("accuracy",),
    "mrpc": ("accuracy", "f1", "accuracy_and_f1"),
    "sts-b": ("pearson", "spearman", "corr"),
    "qqp": ("accuracy", "f1", "accuracy_and_f1"),
    "mnli": ("accuracy",),
    "qnli": ("accuracy",),
    "rte": ("accuracy",),
    "wnli": ("accuracy",),
    "xnli": ("accuracy",),
    "tsv": ("accuracy",),
}


def glue_metrics(task_name: str, preds: Sequence, labels: Sequence, regression: bool | None = None
                 ) -> dict[str, float]:
    """The task's metrics of predicted vs gold label ids (floats for regression). A regression "tsv"
    task reports the STS-B metrics."""
    task = task_name.lower()
    preds_a, labels_a = np.asarray(preds), np.asarray(labels)
    if preds_a.shape != labels_a.shape:
        raise ValueError(f"{len(preds_a)} predictions for {len(labels_a)} labels")
    names = GLUE_TASK_METRICS.get(task, ("accuracy",))
    if regression or (regression is None and task == "sts-b"):
        names = GLUE_TASK_METRICS["sts-b"]
    out: dict[str, float] = {}
    for name in names:
        if name == "accuracy":
            out[name] = accuracy(preds_a, labels_a)
        elif name == "f1":
            out[name] = f1(preds_a, labels_a)
        elif name == "accuracy_and_f1":
            out[name] = (out["accuracy"] + out["f1"]) / 2
        elif name == "mcc":
            out[name] = matthews_corrcoef(preds_a, labels_a)
        elif name == "pearson":
            out[name] = pearson(preds_a.astype(np.float64), labels_a.astype(np.float64))
        elif name == "spearman":
            out[name] = spearman(preds_a.astype(np.float64), labels_a.astype(np.float64))
        elif name == "corr":
            out[name] = (out["pearson"] + out["spearman"]) / 2
    return out


def mnli_metrics(matched_preds, matched_labels, mismatched_preds, mismatched_labels) -> dict[str, float]:
    """MNLI's two numbers: accuracy on dev_matched (`mnli_m_accuracy`) and dev_mismatched (`mnli_mm_accuracy`)."""
    return {"mnli_m_accuracy": accuracy(matched_preds, matched_labels),
            "mnli_mm_accuracy": accuracy(mismatched_preds, mismatched_labels)}


# --------------------------------------------------------------------------------------------------
# SQuAD
# --------------------------------------------------------------------------------------------------
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower-case, remove ASCII punctuation, remove the articles a/an/the, collapse whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCTUATION)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def answer_tokens(s: str) -> list[str]:
    return normalize_answer(s).split() if s else []


def exact_match(prediction: str, gold: str) -> int:
    return int(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str, version_2: bool = True) -> float:
    """Harmonic mean of token precision and recall over the bags of normalized tokens. With version 2
    semantics an empty answer on either side scores 1 if both are empty, else 0 (v1.1 scores 0)."""
    pred, ref = answer_tokens(prediction), answer_tokens(gold)
    if version_2 and (not pred or not ref):
        return float(pred == ref)
    common = sum((collections.Counter(pred) & collections.Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def gold_answers(dataset: Sequence[Mapping], version_2: bool = True) -> tuple[dict[str, list[str]], dict[str, bool]]:
    """From the SQuAD JSON's `data`: qid -> gold answer texts, and qid -> has an answer.

    Version 2 keeps only answers that normalize to something and uses [""] when none is left."""
    golds: dict[str, list[str]] = {}
    has_answer: dict[str, bool] = {}
    first: dict[str, str] = {}  # qid -> where it is, to name both places of a duplicate
    for a, article in enumerate(dataset):
        for p, paragraph in enumerate(article["paragraphs"]):
            for q, qa in enumerate(paragraph["qas"]):
                qid, where = str(qa["id"]), f"data[{a}].paragraphs[{p}].qas[{q}]"
                if qid in first:
                    raise UserError(f"the SQuAD dataset has question id {qid!r} twice ({first[qid]} and {where}): "
                                    f"ids must be unique, each is scored once")
                first[qid] = where
                texts = [a["text"] for a in qa.get("answers", [])]
                has_answer[qid] = bool(texts)
                if version_2:
                    texts = [t for t in texts if normalize_answer(t)] or [""]
                golds[qid] = texts
    return golds, has_answer


def _raw_scores(golds: dict[str, list[str]], predictions: Mapping[str, str], version_2: bool
                ) -> tuple[dict[str, float], dict[str, float], int]:
    exact: dict[str, float] = {}
    f1s: dict[str, float] = {}
    missing = 0
    for qid, answers in golds.items():
        if qid not in predictions:
            missing += 1
            exact[qid] = f1s[qid] = 0.0
            continue
        pred = predictions[qid]
        exact[qid] = float(max(exact_match(pred, a) for a in answers))
        f1s[qid] = max(token_f1(pred, a, version_2) for a in answers)
    return exact, f1s, missing


def _mean_percent(scores: Mapping[str, float], qids: Sequence[str]) -> float:
    return 100.0 * sum(scores[q] for q in qids) / len(qids) if qids else 0.0


def best_threshold(predictions: Mapping[str, str], scores: Mapping[str, float], na_probs: Mapping[str, float],
                   has_answer: Mapping[str, bool]) -> tuple[float, float]:
    """The no-answer threshold that maximizes the total score, and that score in percent.

    Predicting null for every question whose odds exceed t: a question without an answer then scores
    1, one with an answer 0; below t, a question keeps its score, except that a non-empty prediction
    for a question without an answer scores 0. Starting from "all null" (threshold 0.0), questions
    are admitted in increasing order of odds and the first running total that beats the best so far
    sets the threshold to that question's odds."""
    thresholds, totals = _threshold_walk(predictions, scores, na_probs, has_answer)
    best_score, best_thresh = float(totals[0]), thresholds[0]
    if len(totals) > 1:
        i = int(np.argmax(totals[1:])) + 1
        if totals[i] > best_score:
            best_score, best_thresh = float(totals[i]), float(thresholds[i])
    return 100.0 * best_score / len(scores), best_thresh


def threshold_curve(predictions: Mapping[str, str], scores: Mapping[str, float], na_probs: Mapping[str, float],
                    has_answer: Mapping[str, bool]) -> tuple[list[float], list[float]]:
    """best_threshold's walk as a curve: (thresholds, total score in percent), from "all null" (0.0)
    through each question's null odds in increasing order; its highest point is the best threshold."""
    thresholds, totals = _threshold_walk(predictions, scores, na_probs, has_answer)
    return thresholds, [100.0 * float(t) / len(scores) for t in totals]


def _threshold_walk(predictions, scores, na_probs, has_answer) -> tuple[list[float], np.ndarray]:
    """([0.0, each admitted question's odds...], [the total score at each]) of best_threshold."""
    qids = [q for q in na_probs if q in scores]
    order = np.argsort(np.array([na_probs[q] for q in qids], dtype=np.float64), kind="stable")
    gains = np.array([scores[q] if has_answer[q] else (-1.0 if predictions.get(q) else 0.0)
                      for q in (qids[i] for i in order)], dtype=np.float64)
    start = float(sum(1 for q in scores if not has_answer[q]))
    thresholds = [0.0] + [float(na_probs[qids[i]]) for i in order]
    return thresholds, np.concatenate([[start], start + np.cumsum(gains)])


def squad_metrics(dataset: Sequence[Mapping], predictions: Mapping[str, str], version_2: bool = False,
                  na_probs: Mapping[str, float] | None = None, na_prob_thresh: float = 1.0) -> dict[str, float]:
    """Metrics of `predictions` (qid -> text) against the SQuAD JSON's `data`.

    Version 1.1: exact_match, f1, total. Version 2.0: exact, f1, total, HasAns_exact/f1/total,
    NoAns_exact/f1/total and, given `na_probs` (null_odds.json), best_exact(_thresh), best_f1(_thresh)."""
    golds, has_answer = gold_answers(dataset, version_2)
    exact, f1s, missing = _raw_scores(golds, predictions, version_2)
    if missing:
        logger.warning("%d of %d questions have no prediction; they score 0", missing, len(golds))
    qids = list(golds)
    if not version_2:
        return {"exact_match": _mean_percent(exact, qids), "f1": _mean_percent(f1s, qids), "total": len(qids)}

    # The null odds in their file's order (it breaks ties in the threshold search); missing ones are 0.
    probs = {str(q): float(p) for q, p in (na_probs or {}).items() if str(q) in golds}
    for q, p in probs.items():
        if np.isnan(p):
            raise UserError(f"the null odds of question {q!r} are NaN: expected a number (a NaN cannot be "
                            f"compared with the threshold)")
    probs.update({q: 0.0 for q in qids if q not in probs})
    # A question whose null odds exceed the threshold counts as answered "no answer".
    exact_t = {q: (float(not has_answer[q]) if probs[q] > na_prob_thresh else s) for q, s in exact.items()}
    f1_t = {q: (float(not has_answer[q]) if probs[q] > na_prob_thresh else s) for q, s in f1s.items()}
    out: dict[str, float] = {"exact": _mean_percent(exact_t, qids), "f1": _mean_percent(f1_t, qids),
                             "total": len(qids)}
    for prefix, subset in (("HasAns", [q for q in qids if has_answer[q]]),
                           ("NoAns", [q for q in qids if not has_answer[q]])):
        if subset:
            out[f"{prefix}_exact"] = _mean_percent(exact_t, subset)
            out[f"{prefix}_f1"] = _mean_percent(f1_t, subset)
            out[f"{prefix}_total"] = len(subset)
    if na_probs is not None:
        out["best_exact"], out["best_exact_thresh"] = best_threshold(predictions, exact, probs, has_answer)
        out["best_f1"], out["best_f1_thresh"] = best_threshold(predictions, f1s, probs, has_answer)
    return out


def squad_threshold_curves(dataset: Sequence[Mapping], predictions: Mapping[str, str],
                           na_probs: Mapping[str, float]) -> dict[str, tuple[list[float], list[float]]]:
    """SQuAD 2.0's exact and F1 over the no-answer threshold: {"exact"|"f1": threshold_curve(...)},
    the walk whose highest points squad_metrics reports as best_exact and best_f1."""
    golds, has_answer = gold_answers(dataset, True)
    exact, f1s, _ = _raw_scores(golds, predictions, True)
    probs = {str(q): float(p) for q, p in na_probs.items() if str(q) in golds}
    probs.update({q: 0.0 for q in golds if q not in probs})
    return {"exact": threshold_curve(predictions, exact, probs, has_answer),
            "f1": threshold_curve(predictions, f1s, probs, has_answer)}
