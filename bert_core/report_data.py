"""The numbers behind the pictures: confusion matrices, ROC points, regression pairs, SQuAD's
no-answer threshold curve, a training run's per-step history, create-data's statistics and how a
vocab tokenizes its corpus.

No plotting here (bert_core.reports draws; the KFP evaluate component logs the classification
numbers as ClassificationMetrics), and no TensorFlow: numpy, and scikit-learn for the ROC curve.

    details = classification_details(["0", "1"], gold_ids, predicted_ids, probabilities)
    details["confusion_matrix"]      # rows: gold label, columns: predicted label (KFP's and sklearn's order)
    details["roc"]                   # binary tasks with class probabilities: fpr, tpr, thresholds, auc

`bert evaluate` writes these as eval_details.json (bert_core.layout.EVAL_DETAILS) beside metrics.json.
"""

from __future__ import annotations

import json
import math
from typing import Mapping, Sequence

import numpy as np

#: The kinds of eval_details.json, by the task's kind.
CLASSIFICATION, REGRESSION, SQUAD = "classification", "regression", "squad"


# --------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------
def confusion_matrix(gold: Sequence[int], predicted: Sequence[int], num_labels: int) -> list[list[int]]:
    """matrix[i][j] = how many examples of gold label i were predicted as label j."""
    matrix = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(matrix, (np.asarray(gold, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1)
    return matrix.tolist()


def roc_points(gold: Sequence[int], positive_scores: Sequence[float]) -> dict:
    """The ROC curve of a binary task (label id 1 positive) from the positive class's probability:
    {fpr, tpr, thresholds, auc}. The first point (0, 0) has a threshold just above every score
    (scikit-learn's is infinite, which JSON and KFP cannot carry)."""
    from sklearn.metrics import auc, roc_curve

    gold_a, scores = np.asarray(gold), np.asarray(positive_scores, dtype=np.float64)
    if len(set(gold_a.tolist())) < 2:  # one class only: no curve (sklearn warns and returns NaN)
        return {}
    fpr, tpr, thresholds = roc_curve(gold_a, scores, pos_label=1)
    thresholds = thresholds.copy()
    if not math.isfinite(thresholds[0]):
        thresholds[0] = float(np.nextafter(scores.max(), np.inf))
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "thresholds": thresholds.tolist(),
            "auc": float(auc(fpr, tpr))}


def classification_details(labels: Sequence[str], gold: Sequence[int], predicted: Sequence[int],
                           probabilities: np.ndarray | None = None) -> dict:
    """eval_details.json of a classification task: the confusion matrix with the label names, and the
    ROC curve when the task is binary and the predictions carry class probabilities."""
    out = {"kind": CLASSIFICATION, "labels": list(labels),
           "confusion_matrix": confusion_matrix(gold, predicted, len(labels))}
    if len(labels) == 2 and probabilities is not None:
        if roc := roc_points(gold, np.asarray(probabilities)[:, 1]):
            out["roc"] = roc
    return out


def regression_details(gold: Sequence[float], predicted: Sequence[float]) -> dict:
    """eval_details.json of a regression task (STS-B): the (gold, predicted) pairs for a scatter."""
    return {"kind": REGRESSION, "gold": [float(x) for x in gold], "predicted": [float(x) for x in predicted]}


def squad_details(metrics: Mapping[str, float], curves: Mapping[str, tuple[list, list]] | None = None) -> dict:
    """eval_details.json of SQuAD: exact and F1 by answer type (HasAns, NoAns, all; from the metrics)
    and, given null odds, the best-threshold curves {"exact"|"f1": (thresholds, score in percent)}."""
    by_type = {}
    for prefix, name in (("HasAns_", "HasAns"), ("NoAns_", "NoAns"), ("", "all")):
        exact = metrics.get(f"{prefix}exact", metrics.get("exact_match") if not prefix else None)
        if exact is not None and f"{prefix}f1" in metrics:
            by_type[name] = {"exact": exact, "f1": metrics[f"{prefix}f1"],
                             "total": metrics.get(f"{prefix}total")}
    out: dict = {"kind": SQUAD, "by_answer_type": by_type}
    if curves:
        out["threshold_curves"] = {k: {"thresholds": list(t), "scores": list(s)} for k, (t, s) in curves.items()}
    return out


# --------------------------------------------------------------------------------------------------
# Training: the per-step history the Trainer appends (bert_core.layout.TRAIN_HISTORY)
# --------------------------------------------------------------------------------------------------
def read_history(path: str) -> list[dict]:
    """The rows of a train history file (JSON lines: step, loss, learning_rate, sequences_per_second,
    the loss function's metrics), by step; a row repeated by a resumed run replaces the earlier one."""
    from bert_core import storage

    if not storage.exists(path):
        return []
    rows: dict[int, dict] = {}
    for line in storage.read_text(path).splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows[row["step"]] = row
    return [rows[s] for s in sorted(rows)]


def series(history: Sequence[Mapping], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one key over a history, skipping rows without a finite value."""
    steps, values = [], []
    for row in history:
        value = row.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            steps.append(int(row["step"]))
            values.append(float(value))
    return steps, values


# --------------------------------------------------------------------------------------------------
# create-data: what the shards hold
# --------------------------------------------------------------------------------------------------
def shard_statistics(files: Sequence[str], max_records: int = 20000) -> dict:
    """From up to `max_records` records of the shards: each instance's length in tokens (the input
    mask's sum), its number of masked positions (the weights' sum) and the next-sentence labels."""
    from bert_core.data.tfrecord import decode_example, iter_records

    lengths, masked = [], []
    for path in files:
        for record in iter_records(path):
            if len(lengths) >= max_records:
                break
            ex = decode_example(record)
            lengths.append(int(sum(ex["input_mask"])))
            masked.append(int(round(sum(ex["masked_lm_weights"]))))
    return {"records_read": len(lengths), "sequence_lengths": lengths, "masked_positions": masked}


# --------------------------------------------------------------------------------------------------
# learn-vocab: the vocab and how it tokenizes the corpus
# --------------------------------------------------------------------------------------------------
def vocab_statistics(vocab_file: str, corpus_files: Sequence[str], do_lower_case: bool,
                     max_lines: int = 5000, examples: int = 10) -> dict:
    """A vocab.txt and how it tokenizes up to `max_lines` non-blank lines from the start of the corpus:
    its size, the special tokens' ids, the pieces' lengths in characters (without "##") by kind, and
    over the sample's words (split as the tokenizer does) bert_core.vocab.coverage's numbers: pieces
    per word and their distribution, the share of [UNK] words and of words split into pieces."""
    import collections

    from bert_core.data.corpus import iter_lines
    from bert_core.tokenization import SPECIAL_TOKENS, basic_normalize, load_vocab
    from bert_core.vocab import coverage

    vocab = load_vocab(vocab_file)
    lengths: dict[str, collections.Counter] = {"word start": collections.Counter(), "continuation": collections.Counter()}
    for token in vocab:
        if token in SPECIAL_TOKENS:
            continue
        if token.startswith("##") and len(token) > 2:
            lengths["continuation"][len(token) - 2] += 1
        else:
            lengths["word start"][len(token)] += 1
    counts: collections.Counter[str] = collections.Counter()
    lines = 0
    for path in corpus_files:
        for line in iter_lines(path, "replace"):
            if lines >= max_lines:
                break
            if line.strip():
                lines += 1
                counts.update(basic_normalize(line, do_lower_case).split())
    return {"size": len(vocab), "do_lower_case": do_lower_case,
            "special_tokens": {t: vocab.get(t) for t in SPECIAL_TOKENS},
            "piece_lengths": {kind: dict(sorted(c.items())) for kind, c in lengths.items()},
            "sample_lines": lines,
            **(coverage(vocab, counts, do_lower_case, examples) if counts else {"words": 0})}


def vocab_is_cased(vocab_file: str) -> bool:
    """Whether a vocab keeps upper case (has a piece with an upper-case letter besides the special
    tokens): how to tokenize with it when the run's do_lower_case is not known."""
    from bert_core.tokenization import SPECIAL_TOKENS, load_vocab

    return any(t not in SPECIAL_TOKENS and any(ch.isupper() for ch in t) for t in load_vocab(vocab_file))


def corpus_statistics(corpus_files: Sequence[str], task_dir: str | None = None,
                      max_documents: int | None = None) -> dict:
    """A prepared corpus (BERT's format: a sentence a line, a blank line between documents), read once
    as a stream: documents and sentences kept, {sentence length in whitespace tokens: sentences} and
    {document length in sentences: documents} (exact counts: memory grows with the longest length, not
    the corpus), and, when the held-out task was made (task_dir/task.json), its documents and examples
    per split. With max_documents, only the first ones are read and `sampled` is True when more were
    there (the counts are then of those documents only)."""
    import collections

    from bert_core import storage
    from bert_core.data.corpus import iter_documents

    tokens: collections.Counter[int] = collections.Counter()
    sentences: collections.Counter[int] = collections.Counter()
    sampled = False
    for path in corpus_files:
        for doc in iter_documents(path, on_bad_utf8="replace"):
            if max_documents is not None and sum(sentences.values()) >= max_documents:
                sampled = True
                break
            sentences[len(doc)] += 1
            tokens.update(len(s.split()) for s in doc)
        if sampled:
            break
    out = {"sampled": sampled, "documents": sum(sentences.values()), "sentences": sum(tokens.values()),
           "tokens": sum(n * c for n, c in tokens.items()),
           "sentence_tokens": dict(sorted(tokens.items())), "document_sentences": dict(sorted(sentences.items()))}
    task_json = storage.join(task_dir, "task.json") if task_dir else None
    if task_json and storage.exists(task_json):
        task = storage.read_json(task_json)["task"]
        out["task"] = {"documents": task["documents"], "documents_per_split": task["documents_per_split"],
                       "examples": task["examples"]}
    return out
