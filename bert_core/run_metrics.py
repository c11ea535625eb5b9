"""pretrain_metrics.json and finetune_metrics.json over the runs of one output directory.

    write_run_metrics(path, stage, settings, training, results) -> the dict written

A run's numbers come in three parts:

  settings   how it was run: world size, dtype, batch sizes, task
  training   what the steps it trained measured: global_step, train_loss, sequences_per_second,
             train_seconds, ... ({} when it trained no step: a rerun of a finished run or of one
             killed after its last checkpoint, or eval/predict/export only)
  results    what it did with the weights: global_step, eval, predictions, export_dir

A run that trained no step never replaces the numbers of the run that trained the weights: the file
keeps them (and their settings) and gets this run's results. A run that trained writes its own
training numbers; if it resumed from a checkpoint, the earlier sessions' train_seconds (as the file
recorded them) are added to its own. A run killed before the end writes no file, so its seconds are
not counted; sequences_per_second is always the rate of the last session that trained. Results of
earlier weights (an old eval) are dropped when new steps were trained.
"""

from __future__ import annotations

import math

from bert_core import events, storage
from bert_core.errors import UserError


def write_run_metrics(path: str, stage: str, settings: dict, training: dict, results: dict) -> dict:
    """Merge this run's numbers into the file at `path` (see the module docstring), write it
    atomically (non-finite floats as null) and return what was written."""
    try:  # a file that is not ours to merge with (edited, not JSON) must not fail a finished run
        previous = storage.read_json(path) if storage.exists(path) else {}
    except UserError:
        previous = {}
    if not isinstance(previous, dict):
        previous = {}
    if training:
        merged = {**settings, **training, **results}
        earlier = previous.get("train_seconds")
        if training.get("resumed_from") is not None and isinstance(earlier, (int, float)):
            merged["train_seconds"] = earlier + training["train_seconds"]
    else:
        merged = {**settings, **previous, **results}
    merged = _finite(merged)
    storage.write_json(path, merged)
    events.emit("wrote", stage, path=path)
    return merged


def _finite(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    return obj
