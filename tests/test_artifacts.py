"""bert_core.artifacts: listing a run's artifacts and rendering manifests/metrics as tables,
on local paths and on gs:// (the fake-gcs-server of tests/gcs_server.py)."""

from __future__ import annotations

import os
import re

import pytest

from bert_core import artifacts, storage
from bert_core.errors import UserError
from gcs_server import gcs, gcs_prefix  # noqa: F401  (fixtures)

MANIFEST = {
    "instances": 12345,
    "tokens": 1580160,
    "masked_tokens": 237024,
    "parameters": {"max_seq_length": 128, "masked_lm_prob": 0.15, "do_lower_case": True},
    "vocab_sha256": "ab" * 32,
    "inputs": ["gs://b/corpus/part0.txt", "gs://b/corpus/part1.txt"],
    "shards": [{"path": f"train-{i:05d}.tfrecord", "instances": 100 + i} for i in range(60)],
}


@pytest.fixture(params=["local", "gs"])
def run_dir(request, tmp_path):
    base = str(tmp_path / "run") if request.param == "local" else request.getfixturevalue("gcs_prefix")
    storage.write_json(storage.join(base, "data", "data_manifest.json"), MANIFEST)
    storage.write_bytes(storage.join(base, "data", "train-00000.tfrecord"), b"x" * 3000)
    storage.write_json(storage.join(base, "pretrain", "pretrain_metrics.json"),
                       {"final_loss": 2.5, "steps": 20, "history": [{"step": s, "loss": 9.0 - s / 4} for s in range(20)]})
    with storage.atomic_dir(storage.join(base, "pretrain", "ckpt")) as d:
        with open(os.path.join(d, "model.ckpt-20.index"), "wb") as f:
            f.write(b"i" * 10)
    return base


def test_list_artifacts_rows_and_listing(run_dir):
    rows = artifacts.list_artifacts(run_dir)
    rel = [r.path[len(run_dir) + 1:] for r in rows]
    assert rel == ["data/data_manifest.json", "data/train-00000.tfrecord", "pretrain/ckpt/_COMPLETE",
                   "pretrain/ckpt/model.ckpt-20.index", "pretrain/pretrain_metrics.json"]
    assert rows[1].size == 3000 and all(r.updated is not None and r.updated.tzinfo for r in rows)
    text = artifacts.format_listing(rows, prefix=run_dir)
    lines = text.splitlines()
    assert lines[0].split() == ["path", "size", "updated", "(UTC)"]
    assert any(line.startswith("data/train-00000.tfrecord") and "2.9 KiB" in line for line in lines)
    assert lines[-1].startswith("5 files, ")


def test_describe_manifest_renders_key_values_and_records(run_dir):
    text = artifacts.describe_artifact(storage.join(run_dir, "data", "data_manifest.json"))
    lines = text.splitlines()
    row = {ln.split()[0]: ln.split(None, 1)[1] for ln in lines[3:] if ln and not ln.startswith(("-", "shards"))
           and len(ln.split()) > 1}
    assert row["instances"] == "12345" and row["parameters.max_seq_length"] == "128"
    assert row["parameters.masked_lm_prob"] == "0.15" and row["parameters.do_lower_case"] == "true"
    assert row["inputs"] == "gs://b/corpus/part0.txt, gs://b/corpus/part1.txt"
    assert "shards (60 rows)" in text
    assert re.search(r"^train-00000\.tfrecord +100$", text, re.M) and re.search(r"^train-00059\.tfrecord +159$", text, re.M)
    assert re.search(r"^\.\.\.\s*$", text, re.M)  # the elision row
    assert "train-00030.tfrecord" not in text  # long record lists show their head and tail


def test_describe_directory_shows_documents_marker_and_files(run_dir):
    text = artifacts.describe_artifact(storage.join(run_dir, "pretrain"))
    assert "no completion marker" in text.splitlines()[0]
    assert "pretrain_metrics.json" in text and "final_loss" in text and "history (20 rows)" in text
    assert "ckpt/model.ckpt-20.index" in text
    ckpt = artifacts.describe_artifact(storage.join(run_dir, "pretrain", "ckpt"))
    assert "(complete)" in ckpt.splitlines()[0]
    other = artifacts.describe_artifact(storage.join(run_dir, "data", "train-00000.tfrecord"))
    assert "2.9 KiB" in other


def test_missing_artifacts_are_one_line(run_dir):
    for call in (lambda: artifacts.list_artifacts(storage.join(run_dir, "nope")),
                 lambda: artifacts.describe_artifact(storage.join(run_dir, "nope.json"))):
        with pytest.raises(UserError) as err:
            call()
        assert "\n" not in str(err.value) and str(err.value).startswith(storage.join(run_dir, "nope"))


def test_render_table_aligns_numbers_right():
    table = artifacts.render_table(["task", "accuracy"], [["mrpc", 0.8], ["sst2", 0.91234567]])
    assert table.splitlines() == ["task  accuracy", "----  --------", "mrpc       0.8", "sst2  0.912346"]


def test_describe_a_fine_tuned_model_shows_its_documents_in_the_layouts_order(tmp_path):
    from bert_core import layout

    d = str(tmp_path / "finetune")
    storage.write_json(storage.join(d, layout.EVAL_RESULTS_JSON), {"eval_accuracy": 0.875})
    storage.write_json(storage.join(d, layout.FINETUNE_METRICS), {"train_loss": 0.25})
    storage.write_json(storage.join(d, "other.json"), {"not_shown": 1})
    text = artifacts.describe_artifact(d)
    titles = [line for line in text.splitlines() if line.endswith(".json") and " " not in line]
    assert titles == [layout.FINETUNE_METRICS, layout.EVAL_RESULTS_JSON]
    assert "eval_accuracy" in text and "0.875" in text and "not_shown" not in text
