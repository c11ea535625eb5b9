"""eval_details.json, the numbers behind the evaluation pictures, against scikit-learn on the same
predictions, and as the KFP ClassificationMetrics artifact the evaluate component logs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bert_core import evaluation
from bert_core.config import EvalConfig
from tests.test_evaluate import SQUAD, _write

LABELS = ["contradiction", "entailment", "neutral"]


def _tsv_task(tmp_path, labels, n, seed):
    """A tsv task's test.tsv with n random gold labels, and a predictions file of random class
    probabilities (one line per example, as finetune's test_results.tsv). Returns (config, gold, probs)."""
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, len(labels), n)
    probs = rng.dirichlet(np.ones(len(labels)), n)
    data = tmp_path / "task"
    data.mkdir()
    (data / "test.tsv").write_text("sentence\tlabel\n" + "".join(f"s{i}\t{labels[g]}\n" for i, g in enumerate(gold)))
    (tmp_path / "test_results.tsv").write_text("".join("\t".join(f"{p:.6f}" for p in row) + "\n" for row in probs))
    config = EvalConfig(task_name="tsv", data_dir=str(data), predictions_file=str(tmp_path / "test_results.tsv"),
                        output_dir=str(tmp_path / "out"), eval_split="test", labels=",".join(labels),
                        text_a_column="sentence", label_column="label")
    return config, gold, np.loadtxt(tmp_path / "test_results.tsv", ndmin=2)


def _details(config) -> dict:
    assert evaluation.evaluate_main(config) == 0
    return json.loads(open(f"{config.output_dir}/eval_details.json").read())


def test_confusion_matrix_equals_sklearns(tmp_path):
    from sklearn.metrics import confusion_matrix

    config, gold, probs = _tsv_task(tmp_path, LABELS, 300, seed=1)
    details = _details(config)
    predicted = probs.argmax(axis=1)
    assert details["kind"] == "classification" and details["labels"] == LABELS
    assert details["confusion_matrix"] == confusion_matrix(gold, predicted, labels=[0, 1, 2]).tolist()
    assert sum(map(sum, details["confusion_matrix"])) == 300
    assert "roc" not in details  # three classes: no ROC curve


def test_binary_roc_equals_sklearns(tmp_path):
    from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

    config, gold, probs = _tsv_task(tmp_path, ["0", "1"], 200, seed=2)
    details = _details(config)
    assert details["confusion_matrix"] == confusion_matrix(gold, probs.argmax(axis=1), labels=[0, 1]).tolist()
    fpr, tpr, thresholds = roc_curve(gold, probs[:, 1])
    roc = details["roc"]
    assert roc["fpr"] == pytest.approx(fpr.tolist()) and roc["tpr"] == pytest.approx(tpr.tolist())
    assert roc["thresholds"][1:] == pytest.approx(thresholds[1:].tolist())
    assert roc["thresholds"][0] > probs[:, 1].max() and np.isfinite(roc["thresholds"][0])  # JSON-safe
    assert roc["auc"] == pytest.approx(roc_auc_score(gold, probs[:, 1]))


def test_kfp_classification_metrics_carry_the_matrix_and_the_curve(tmp_path):
    from kfp.dsl import ClassificationMetrics

    from components.common import log_classification

    config, gold, probs = _tsv_task(tmp_path, ["neg", "pos"], 120, seed=3)
    details = _details(config)
    artifact = ClassificationMetrics(name="classification")
    log_classification(artifact, details)
    matrix = artifact.metadata["confusionMatrix"]
    assert [a["displayName"] for a in matrix["annotationSpecs"]] == ["neg", "pos"]
    assert [r["row"] for r in matrix["rows"]] == details["confusion_matrix"]
    points = artifact.metadata["confidenceMetrics"]
    assert [p["falsePositiveRate"] for p in points] == details["roc"]["fpr"]
    assert [p["recall"] for p in points] == details["roc"]["tpr"]
    json.dumps(artifact.metadata, allow_nan=False)  # what the KFP backend stores: no inf, no NaN


def test_regression_and_squad_details(tmp_path):
    header = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2", "score"]
    rows = [header] + [[str(i), "g", "f", "y", "o", "s", "s", "a", "b", s] for i, s in enumerate(["1", "3", "2"])]
    (tmp_path / "sts").mkdir()
    (tmp_path / "sts" / "dev.tsv").write_text("".join("\t".join(r) + "\n" for r in rows))
    (tmp_path / "sts.txt").write_text("1.5\n2.0\n3.0\n")
    details = _details(EvalConfig(task_name="sts-b", data_dir=str(tmp_path / "sts"),
                                  predictions_file=str(tmp_path / "sts.txt"), output_dir=str(tmp_path / "o1")))
    assert details == {"task": "sts-b", "kind": "regression", "gold": [1.0, 3.0, 2.0], "predicted": [1.5, 2.0, 3.0]}

    gold = _write(tmp_path / "dev.json", SQUAD)
    preds = _write(tmp_path / "predictions.json", {"q1": "Denver Broncos", "q2": "Denver", "q3": ""})
    odds = _write(tmp_path / "null_odds.json", {"q1": -3.0, "q2": 0.5, "q3": -1.0})
    config = EvalConfig(task_name="squad", version_2_with_negative=True, predict_file=gold, prediction_json=preds,
                        null_odds_json=odds, output_dir=str(tmp_path / "o2"))
    details = _details(config)
    got = json.loads((tmp_path / "o2" / "metrics.json").read_text())
    assert details["by_answer_type"]["HasAns"] == {"exact": 50.0, "f1": 50.0, "total": 2}
    assert details["by_answer_type"]["NoAns"] == {"exact": 0.0, "f1": 0.0, "total": 1}
    curve = details["threshold_curves"]["exact"]
    # the walk: all null (q2 right: 1 of 3), admit q1 (-3.0, +1), q3 (-1.0, +0), q2 (0.5, "Denver": -1)
    assert curve["thresholds"] == [0.0, -3.0, -1.0, 0.5]
    assert curve["scores"] == pytest.approx([100 / 3, 200 / 3, 200 / 3, 100 / 3])
    best = int(np.argmax(curve["scores"]))
    assert (curve["scores"][best], curve["thresholds"][best]) == pytest.approx(
        (got["best_exact"], got["best_exact_thresh"]))
