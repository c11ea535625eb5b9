"""Horovod: 2 ranks x batch 4 end with the same weights as 1 process x batch 8, on both ranks alike.

Under `horovodrun --gloo` and under `mpirun`. The toy model keeps each run to seconds; every rank
takes its half of each global batch (tests/train_toy.make_dataset), so the two runs see the same
examples per update and only the averaging across ranks is under test.
"""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest

from tests.tiny_bert import BIN, ROOT, run_ok, tiny_config

TOY = str(ROOT / "tests" / "train_toy.py")
HOROVODRUN = shutil.which("horovodrun", path=str(BIN)) or shutil.which("horovodrun")
MPIRUN = shutil.which("mpirun")
STEPS = 6

pytest.importorskip("horovod.tensorflow")
from bert_core import run_dir  # noqa: E402


def _load(path) -> dict:
    return dict(np.load(path))


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("single")
    run_ok([sys.executable, TOY, str(out), "--steps", str(STEPS), "--batch", "8", "--save_every", "3"])
    return _load(out / "final_rank0.npz")


def _check_two_ranks(out, proc, reference):
    r0, r1 = _load(out / "final_rank0.npz"), _load(out / "final_rank1.npz")
    assert _max_diff(r0, r1) == 0.0  # both ranks hold identical weights
    assert _max_diff(r0, reference) <= 1e-5  # and they are the one-process weights
    # Rank 0 alone logs and writes; the log says 2 ranks and 8 sequences per update.
    assert "2 rank(s), 8 sequences per update (4 x 1 micro-batches x 2 ranks)" in proc.stdout
    assert proc.stdout.count(f"step {STEPS}/{STEPS}") == 1
    assert sorted(p.name for p in out.glob("ckpt-*")) == ["ckpt-3", "ckpt-6"]
    assert sorted(p.name for p in (out / "ckpt-6").glob("data-rank*.index")) == ["data-rank0.index",
                                                                                 "data-rank1.index"]
    assert run_dir.latest_checkpoint(str(out)).metadata()["world_size"] == 2


@pytest.mark.skipif(HOROVODRUN is None, reason="horovodrun not installed")
def test_horovodrun_gloo_2x4_equals_1x8(tmp_path, one_process):
    out = tmp_path / "gloo"
    proc = run_ok([HOROVODRUN, "-np", "2", "-H", "localhost:2", "--gloo",
                 sys.executable, TOY, str(out), "--steps", str(STEPS), "--batch", "4", "--save_every", "3"])
    _check_two_ranks(out, proc, one_process)


@pytest.mark.skipif(MPIRUN is None, reason="mpirun not installed")
def test_mpirun_2x4_equals_1x8(tmp_path, one_process):
    out = tmp_path / "mpi"
    env_flags = [x for k in ("TF_CPP_MIN_LOG_LEVEL", "PYTHONPATH", "OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                             "TF_NUM_INTEROP_THREADS") for x in ("-x", k)]
    proc = run_ok([MPIRUN, "--allow-run-as-root", "--oversubscribe", "-np", "2", *env_flags,
                 sys.executable, TOY, str(out), "--steps", str(STEPS), "--batch", "4", "--save_every", "3"])
    _check_two_ranks(out, proc, one_process)


@pytest.mark.slow
@pytest.mark.skipif(HOROVODRUN is None, reason="horovodrun not installed")
def test_bert_pretrain_under_horovodrun_resumes(tmp_path):
    from tests.test_pretrain import write_records

    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        write_records(data / f"train-{i}.tfrecord", 16, seed=i)
    (data / "bert_config.json").write_text(json.dumps(tiny_config()))
    out = tmp_path / "out"
    args = [HOROVODRUN, "-np", "2", "-H", "localhost:2", "--gloo", sys.executable, "-m", "bert_core.cli", "pretrain",
            f"--input_file={data}/train-*.tfrecord", f"--output_dir={out}",
            f"--bert_config_file={data}/bert_config.json", "--max_seq_length=16", "--max_predictions_per_seq=3",
            "--train_batch_size=4", "--num_warmup_steps=2", "--save_checkpoints_steps=5", "--do_train",
            "--do_eval", "--max_eval_steps=2", "--eval_batch_size=4", "--log_every_steps=5"]
    run_ok(args + ["--num_train_steps=10", "--keep_checkpoints=1"])
    metrics = json.loads((out / "pretrain_metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["global_batch_size"] == 8 and metrics["global_step"] == 10
    assert [p.name for p in out.glob("ckpt-*")] == ["ckpt-10"]
    proc = run_ok(args + ["--num_train_steps=15", "--keep_checkpoints=1"])
    assert "resumed from" in proc.stdout and "at step 10" in proc.stdout
    assert json.loads((out / "eval_results.json").read_text())["global_step"] == 15
