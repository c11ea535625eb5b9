"""`bert evaluate`: the command a user runs, on hand-written gold files and predictions."""

from __future__ import annotations

import json

import pytest

from bert_core import evaluation
from bert_core.cli import build_parser, config_from_args
from bert_core.config import EvalConfig
from bert_core.errors import UserError
from tests.conftest import run_bert

SQUAD = {"version": "2.0", "data": [{"title": "t", "paragraphs": [{"context": "Denver Broncos won in Santa Clara.",
                                                                    "qas": [
    {"id": "q1", "question": "Who won?", "answers": [{"text": "Denver Broncos", "answer_start": 0},
                                                     {"text": "the Broncos", "answer_start": 7}]},
    {"id": "q2", "question": "Who lost?", "answers": [], "is_impossible": True},
    {"id": "q3", "question": "Where?", "answers": [{"text": "Santa Clara", "answer_start": 22}]},
]}]}]}


def _write(path, obj):
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return str(path)


def test_squad_v1_end_to_end(tmp_path):
    data = json.loads(json.dumps(SQUAD))
    data["data"][0]["paragraphs"][0]["qas"].pop(1)
    gold = _write(tmp_path / "dev.json", data)
    preds = _write(tmp_path / "predictions.json", {"q1": "the Broncos", "q3": "Santa Clara, California"})
    proc = run_bert("evaluate", "--task_name=squad", f"--predict_file={gold}", f"--prediction_json={preds}",
                    f"--output_dir={tmp_path / 'out'}", check=True)
    # q1 exact; q3: (santa clara california) vs (santa clara): P 2/3, R 1 -> F1 0.8
    got = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert got == pytest.approx({"exact_match": 50.0, "f1": 90.0, "total": 2})
    assert "exact_match" in proc.stdout and "90.0000" in proc.stdout


def test_squad_v2_with_null_odds(tmp_path):
    gold = _write(tmp_path / "dev.json", SQUAD)
    preds = _write(tmp_path / "predictions.json", {"q1": "Denver Broncos", "q2": "Denver", "q3": ""})
    odds = _write(tmp_path / "null_odds.json", {"q1": -3.0, "q2": 0.5, "q3": -1.0})
    config = EvalConfig(task_name="squad", version_2_with_negative=True, predict_file=gold, prediction_json=preds,
                        null_odds_json=odds, output_dir=str(tmp_path / "out"))
    assert evaluation.evaluate_main(config) == 0
    got = json.loads((tmp_path / "out" / "metrics.json").read_text())
    # raw exact (1, 0, 0). All null: q2 right -> 1; admit q1 (+1) = 2, q3 (+0) = 2, q2 ("Denver": -1) = 1.
    assert got == pytest.approx({"exact": 100 / 3, "f1": 100 / 3, "total": 3,
                                 "HasAns_exact": 50.0, "HasAns_f1": 50.0, "HasAns_total": 2,
                                 "NoAns_exact": 0.0, "NoAns_f1": 0.0, "NoAns_total": 1,
                                 "best_exact": 200 / 3, "best_exact_thresh": -3.0,
                                 "best_f1": 200 / 3, "best_f1_thresh": -3.0})


def _mrpc(tmp_path):
    rows = [["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
            ["1", "1", "2", "a", "b"], ["0", "1", "2", "c", "d"], ["0", "1", "2", "e", "f"], ["1", "1", "2", "g", "h"]]
    (tmp_path / "mrpc").mkdir()
    (tmp_path / "mrpc" / "dev.tsv").write_text("".join("\t".join(r) + "\n" for r in rows))
    return str(tmp_path / "mrpc")


def test_glue_test_results_tsv_probabilities(tmp_path):
    data_dir = _mrpc(tmp_path)
    # argmax: 1, 0, 1, 1 vs gold 1, 0, 0, 1 -> accuracy 3/4; TP 2, FP 1, FN 0 -> F1 4/5
    (tmp_path / "test_results.tsv").write_text("0.1\t0.9\n0.8\t0.2\n0.3\t0.7\n0.4\t0.6\n")
    proc = run_bert("evaluate", "--task_name=MRPC", f"--data_dir={data_dir}",
                    f"--predictions_file={tmp_path / 'test_results.tsv'}", f"--output_dir={tmp_path / 'out'}",
                    check=True)
    got = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert got == pytest.approx({"accuracy": 0.75, "f1": 0.8, "accuracy_and_f1": 0.775})
    assert proc.stdout.splitlines()[0] == "MRPC" and "accuracy_and_f1" in proc.stdout


def test_glue_label_per_line_and_regression(tmp_path):
    data_dir = _mrpc(tmp_path)
    (tmp_path / "labels.txt").write_text("1\n0\n0\n0\n")
    config = EvalConfig(task_name="mrpc", data_dir=data_dir, predictions_file=str(tmp_path / "labels.txt"),
                        output_dir=str(tmp_path / "o"))
    assert evaluation.evaluate_glue(config)["accuracy"] == pytest.approx(0.75)
    header = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2", "score"]
    rows = [header] + [[str(i), "g", "f", "y", "o", "s", "s", "a", "b", score] for i, score in enumerate(["1", "3", "2"])]
    (tmp_path / "sts").mkdir()
    (tmp_path / "sts" / "dev.tsv").write_text("".join("\t".join(r) + "\n" for r in rows))
    (tmp_path / "sts.txt").write_text("1.0\n2.0\n3.0\n")
    sts = evaluation.evaluate_glue(EvalConfig(task_name="sts-b", data_dir=str(tmp_path / "sts"),
                                              predictions_file=str(tmp_path / "sts.txt"), output_dir="o"))
    assert sts == pytest.approx({"pearson": 0.5, "spearman": 0.5, "corr": 0.5})


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    data_dir = _mrpc(tmp_path)
    (tmp_path / "short.tsv").write_text("0.1\t0.9\n")
    proc = run_bert("evaluate", "--task_name=mrpc", f"--data_dir={data_dir}",
                    f"--predictions_file={tmp_path / 'short.tsv'}", f"--output_dir={tmp_path / 'out'}")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "short.tsv: 1 predictions, but" in proc.stderr and "has 4 examples" in proc.stderr
    assert not (tmp_path / "out" / "metrics.json").exists()

    proc = run_bert("evaluate", "--task_name=squad", f"--output_dir={tmp_path}")
    assert proc.returncode == 2 and "task squad needs --predict_file and --prediction_json" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0

    (tmp_path / "three.tsv").write_text("0.1\t0.2\t0.7\n" * 4)
    config = EvalConfig(task_name="mrpc", data_dir=data_dir, predictions_file=str(tmp_path / "three.tsv"),
                        output_dir="o")
    with pytest.raises(UserError, match=r"three.tsv:1: expected 2 columns \(class probabilities\) or 1"):
        evaluation.evaluate_glue(config)
    with pytest.raises(UserError, match=r"--task_name='nope'"):
        evaluation.evaluate_glue(config.model_copy(update={"task_name": "nope"}))
    bad = _write(tmp_path / "p.json", {"q1": 3})
    with pytest.raises(UserError, match=r"p.json: question 'q1': value 3 is not a string"):
        evaluation.evaluate_squad(EvalConfig(task_name="squad", predict_file=_write(tmp_path / "d.json", SQUAD),
                                             prediction_json=bad, output_dir="o"))


def test_nan_probabilities_and_repeated_question_ids_are_one_line(tmp_path):
    """float('nan') parses, and np.argmax of a row with NaN is silently its first NaN; json.load keeps
    the last of two values for one key. Both would score wrong predictions without a word."""
    data_dir = _mrpc(tmp_path)
    (tmp_path / "nan.tsv").write_text("0.1\t0.9\nnan\t0.2\n0.3\t0.7\n0.4\t0.6\n")
    proc = run_bert("evaluate", "--task_name=mrpc", f"--data_dir={data_dir}",
                    f"--predictions_file={tmp_path / 'nan.tsv'}", f"--output_dir={tmp_path / 'out'}")
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "nan.tsv:2: 'nan' is not a finite number" in proc.stderr
    gold = _write(tmp_path / "dev.json", SQUAD)
    (tmp_path / "twice.json").write_text('{"q1": "Denver Broncos", "q3": "Santa Clara", "q1": "Denver"}')
    proc = run_bert("evaluate", "--task_name=squad2", f"--predict_file={gold}",
                    f"--prediction_json={tmp_path / 'twice.json'}", f"--output_dir={tmp_path / 'out'}")
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "twice.json: question 'q1' appears more than once" in proc.stderr
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_flags_come_from_the_config():
    args = build_parser().parse_args(["evaluate", "--task_name=squad", "--version_2_with_negative",
                                      "--predict_file=a", "--prediction_json=b", "--output_dir=o",
                                      "--na_prob_thresh=0.5"])
    config = config_from_args(EvalConfig, args)
    assert config.version_2_with_negative and config.na_prob_thresh == 0.5
