"""Progress for programs: stages report structured events, one JSON object a line, on a side channel.

    BERT_EVENTS_FILE=/tmp/events.jsonl bert pretrain ...     # appends {"event": "step", ...} lines

`emit(kind, **fields)` appends one line to the file named by the environment variable
BERT_EVENTS_FILE and does nothing when it is unset. Child processes inherit the variable, so the
ranks under horovodrun and the steps kfp.local starts all report to the one file that
`bert-pipeline run` reads and renders. Human log lines (stdout) are unchanged: events are for
machines, logs for people. Each line is one O_APPEND write, so processes never interleave a line.

The events (every one has "event", "stage" and "time", Unix seconds):
    step    the training loop's progress, at each log step: step, total, loss,
            sequences_per_second, eta_seconds (null before the second timed step)
    wrote   a stage wrote an output another stage or a person reads: path
    error   a stage stops on a user's mistake: message (the one line the CLI prints)
"""

from __future__ import annotations

import contextlib
import json
import os
import time

ENV = "BERT_EVENTS_FILE"


def emit(kind: str, stage: str, **fields) -> None:
    path = os.environ.get(ENV)
    if not path:
        return
    line = json.dumps({"event": kind, "stage": stage, "time": round(time.time(), 3), **fields}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)


@contextlib.contextmanager
def reporting_errors(stage: str):
    """Emit an `error` event for a UserError raised inside (then let it go on)."""
    from bert_core.errors import UserError

    try:
        yield
    except UserError as err:
        emit("error", stage, message=str(err))
        raise


def training_progress(stage: str, total_steps: int):
    """A bert_core.training.Trainer callback that emits a `step` event at each log step (the rows the
    loop has timed: they carry sequences_per_second). Give it to the chief only."""
    started: list[tuple[float, int]] = []

    def callback(trainer, step: int, row: dict) -> None:
        if "sequences_per_second" not in row:
            return
        now = time.monotonic()
        if not started:
            started.append((now, step))
        (t0, s0), eta = started[0], None
        if step > s0:
            eta = round((now - t0) / (step - s0) * (total_steps - step), 1)
        emit("step", stage, step=step, total=total_steps, loss=row["loss"],
             sequences_per_second=row["sequences_per_second"], eta_seconds=eta)

    return callback
