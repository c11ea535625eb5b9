"""Scheduled re-pretraining through the whole pipeline (slow: three `bert-pipeline run --ci`, ~2-3 min
each on 2 cores), all on one registry: the first run publishes version 1; the second continues from it
(init_from=published: its weights and its vocab) and the gate publishes or rejects it, saying why in
the final table; a third, deliberately worse (from scratch at a learning rate of 1e-9) is kept as a
rejected version with its reason, and version 1 or 2 stays published."""

import os
import subprocess
import sys

import pytest

from bert_core import registry
from tests.conftest import ROOT

NAME = "bert-tiny-python-docs"


def _run(out, reg, *params):
    argv = [sys.executable, "-m", "pipelines.cli", "run", "--ci", "--output-dir", str(out), "-p", f"registry_uri={reg}"]
    for p in params:
        argv += ["-p", p]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}\n(log: {out}/pipeline.log)"
    return proc.stdout


@pytest.mark.slow
def test_three_scheduled_runs_publish_continue_and_reject(tmp_path):
    reg_dir = tmp_path / "registry"
    reg = registry.Registry(str(reg_dir))
    first = _run(tmp_path / "run1", reg_dir)
    assert f"gate: {NAME}:1 PUBLISHED: nothing published yet" in first
    assert reg.published(NAME) == 1

    second = _run(tmp_path / "run2", reg_dir)
    line = next(l for l in second.splitlines() if l.startswith(f"gate: {NAME}:2 "))
    assert line.startswith((f"gate: {NAME}:2 PUBLISHED: better than v1", f"gate: {NAME}:2 REJECTED: ")), line
    lineage = reg.read_version_json(NAME, 2, registry.LINEAGE)
    assert lineage["parent"]["version"] == 1
    # continuing kept the parent's vocab
    assert lineage["vocab"]["sha256"] == reg.read_version_json(NAME, 1, registry.LINEAGE)["vocab"]["sha256"]
    assert reg.read_version_json(NAME, 2, registry.METRICS)["gate"]["against_version"] == 1
    published = reg.published(NAME)
    assert published == (2 if "PUBLISHED" in line else 1)

    third = _run(tmp_path / "run3", reg_dir, "init_from=scratch", "learning_rate=1e-9", "num_train_steps=10",
                 "num_warmup_steps=0")
    assert f"gate: {NAME}:3 REJECTED: masked-LM loss not worse: heldout.masked_lm_loss" in third, third[-2000:]
    assert reg.published(NAME) == published
    metrics = reg.read_version_json(NAME, 3, registry.METRICS)
    assert metrics["gate"]["decision"] == "rejected" and reg.read_version_json(NAME, 3, registry.LINEAGE)["parent"] is None
    assert os.path.exists(os.path.join(reg.version_dir(NAME, 3), "saved_model", "saved_model.pb"))
