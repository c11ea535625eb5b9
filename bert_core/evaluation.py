"""`bert evaluate`: score predictions against gold data, write metrics.json and print a table.

SQuAD: `--predict_file` (the dataset JSON) + `--prediction_json` (predictions.json) and, for 2.0,
optionally `--null_odds_json` (null_odds.json) for the best no-answer threshold.
GLUE and tsv tasks: `--data_dir` (the gold dev TSV is read by the task's reader) + `--predictions_file`
(test_results.tsv as predict writes it: one line per example with the class probabilities; or one
label, or one number for regression, a line), in the order of the dev file.

metrics.json is a flat JSON object of numbers (KFP shows each as a metric), written atomically;
eval_details.json beside it holds the numbers behind the pictures (bert_core.report_data: confusion
matrix and ROC points, regression pairs, SQuAD by answer type and its threshold curves).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os

import numpy as np

from bert_core import events, layout, metrics, report_data, storage
from bert_core.config import SQUAD_TASKS, EvalConfig
from bert_core.errors import UserError, where


def write_eval_results(output_dir: str, results: dict, stage: str) -> None:
    """eval_results.txt as Google's run_pretraining.py / run_classifier.py write it (`key = value`,
    sorted), the same as eval_results.json, and the block they print."""
    lines = ["***** Eval results *****"] + [f"  {k} = {results[k]}" for k in sorted(results)]
    print("\n".join(lines), flush=True)
    path = os.path.join(output_dir, layout.EVAL_RESULTS)
    storage.write_text(path, "".join(f"{k} = {results[k]}\n" for k in sorted(results)))
    storage.write_json(os.path.join(output_dir, layout.EVAL_RESULTS_JSON), results)
    events.emit("wrote", stage, path=path)


def evaluate_squad(config: EvalConfig) -> dict[str, float]:
    return _score_squad(config)[0]


def _score_squad(config: EvalConfig) -> tuple[dict[str, float], dict]:
    """(metrics, eval_details) of SQuAD predictions."""
    version_2 = config.version_2_with_negative or config.task_name.lower() != "squad"
    dataset = storage.read_json(config.predict_file)
    if not isinstance(dataset, dict) or not isinstance(dataset.get("data"), list):
        raise UserError(f"{config.predict_file}: expected a SQuAD dataset JSON with a 'data' list")
    predictions = _read_json_object(config.prediction_json, str)
    na_probs = _read_json_object(config.null_odds_json, (int, float)) if config.null_odds_json else None
    try:
        values = metrics.squad_metrics(dataset["data"], predictions, version_2=version_2, na_probs=na_probs,
                                       na_prob_thresh=config.na_prob_thresh)
        curves = metrics.squad_threshold_curves(dataset["data"], predictions, na_probs) \
            if version_2 and na_probs is not None else None
        return values, report_data.squad_details(values, curves)
    except (KeyError, TypeError) as err:
        raise UserError(f"{config.predict_file}: not in the SQuAD format (missing or bad field {err})") from None


def _unique_keys(pairs: list) -> dict:
    """json object_pairs_hook: a repeated key is an error, not the last value silently kept."""
    obj: dict = {}
    for key, value in pairs:
        if key in obj:
            raise _RepeatedKey(key)
        obj[key] = value
    return obj


class _RepeatedKey(Exception):
    pass


def _read_json_object(path: str, value_type) -> dict:
    try:
        obj = json.loads(storage.read_text(path), object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None
    except _RepeatedKey as key:
        raise UserError(f"{path}: question {key.args[0]!r} appears more than once; one answer per question id") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path}: expected a JSON object of question id -> value")
    for key, value in obj.items():
        if not isinstance(value, value_type) or isinstance(value, bool):
            raise UserError(f"{path}: question {key!r}: value {value!r} is not a "
                            f"{'string' if value_type is str else 'number'}")
    return obj


def read_glue_predictions(path: str, labels: list[str] | None, probabilities: list | None = None) -> np.ndarray:
    """Predicted label ids (or values, for regression) from a predictions file, one line per example;
    each line's class probabilities are appended to `probabilities` if given (and the file has them)."""
    text = storage.read_text(path)
    out: list = []
    for line_no, row in enumerate(csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE), 1):
        if not row:
            continue
        if labels is None:
            if len(row) != 1:
                raise UserError(f"{where(path, line_no)}: expected 1 column (the predicted value), got {len(row)}")
            out.append(_number(path, line_no, row[0]))
        elif len(row) == len(labels) and len(row) > 1:
            row_probabilities = [_number(path, line_no, x) for x in row]
            out.append(int(np.argmax(row_probabilities)))
            if probabilities is not None:
                probabilities.append(row_probabilities)
        elif len(row) == 1:
            if row[0] not in labels:
                raise UserError(f"{where(path, line_no)}: label {row[0]!r} is not one of {labels}")
            out.append(labels.index(row[0]))
        else:
            raise UserError(f"{where(path, line_no)}: expected {len(labels)} columns (class probabilities) "
                            f"or 1 (a label), got {len(row)}")
    if not out:
        raise UserError(f"{path}: is empty, expected one prediction a line")
    return np.array(out, dtype=np.float64 if labels is None else np.int64)


def _number(path: str, line: int, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{where(path, line)}: {text!r} is not a number") from None
    if not math.isfinite(value):  # NaN would make argmax pick class 0 (or any metric NaN) silently
        raise UserError(f"{where(path, line)}: {text!r} is not a finite number")
    return value


def evaluate_glue(config: EvalConfig) -> dict[str, float]:
    return _score_glue(config)[0]


def _score_glue(config: EvalConfig) -> tuple[dict[str, float], dict]:
    """(metrics, eval_details) of GLUE/tsv predictions, or of a task module's task."""
    from bert_core import tasks

    task = tasks.get_task(config.task_name, config.task_module, **config.task_options(config.task_name))
    split = config.eval_split or task.dev_splits[0]
    examples = task.get_examples(config.data_dir, split)
    if any(e.label is None for e in examples):
        raise UserError(f"{task.path(config.data_dir, split)}: the {split} split has no labels to evaluate against")
    labels = task.labels
    gold = [e.label if labels is None else labels.index(e.label) for e in examples]
    probabilities: list = []
    preds = read_glue_predictions(config.predictions_file, labels, probabilities)
    if len(preds) != len(gold):
        raise UserError(f"{config.predictions_file}: {len(preds)} predictions, but "
                        f"{task.path(config.data_dir, split)} has {len(gold)} examples")
    values = metrics.glue_metrics(task.name, preds, gold, regression=task.is_regression)
    if labels is None:
        return values, report_data.regression_details(gold, preds)
    return values, report_data.classification_details(
        labels, gold, preds, np.array(probabilities) if len(probabilities) == len(preds) else None)


def format_table(task: str, values: dict[str, float]) -> str:
    width = max(len("metric"), *(len(k) for k in values))
    lines = [f"{task}", f"{'metric':<{width}}  value", f"{'-' * width}  ----------"]
    for key, value in values.items():
        shown = str(value) if isinstance(value, int) else f"{value:.4f}"
        lines.append(f"{key:<{width}}  {shown}")
    return "\n".join(lines)


def evaluate_main(config: EvalConfig) -> int:
    layout.check_output_dir(config.output_dir)
    if config.task_name.lower() in SQUAD_TASKS:
        values, details = _score_squad(config)
    else:
        values, details = _score_glue(config)
    storage.write_json(os.path.join(config.output_dir, layout.EVAL_DETAILS), {"task": config.task_name, **details})
    path = os.path.join(config.output_dir, layout.EVAL_METRICS)
    storage.write_json(path, values)
    events.emit("wrote", "evaluate", path=path)
    print(format_table(config.task_name, values))
    return 0
