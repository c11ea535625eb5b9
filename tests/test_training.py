"""The shared training loop on a toy masked-LM model: accumulation, resume, atomic saves, precision."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
import keras  # noqa: E402

from bert_core import distributed, run_dir, storage, training  # noqa: E402
from bert_core.errors import UserError  # noqa: E402
from tests import train_toy  # noqa: E402
from gcs_server import gcs, gcs_prefix  # noqa: E402,F401  (fixtures)

ROOT = pathlib.Path(__file__).resolve().parents[1]
TOY = str(ROOT / "tests" / "train_toy.py")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
for var in ("HOROVOD_RANK", "HOROVOD_SIZE", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "PMI_SIZE", "PMIX_SIZE"):
    ENV.pop(var, None)


@pytest.fixture(autouse=True)
def fp32_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


def _trainer(tmp_path, steps, dtype="fp32", accum=1, optimizer=None, dropout=0.0, **kw):
    training.set_precision(dtype)
    model = train_toy.build_model(dropout=dropout)
    cfg = training.TrainLoopConfig(output_dir=str(tmp_path), num_train_steps=steps, dtype=dtype,
                                   num_accumulation_steps=accum, log_every_steps=kw.pop("log_every_steps", 1000),
                                   summaries=False, **kw)
    opt = optimizer or keras.optimizers.Adam(1e-2)
    return training.Trainer(model, train_toy.toy_loss, opt, cfg, log=lambda s: None)


def _run_toy(out, *args, check=True):
    proc = subprocess.run([sys.executable, TOY, str(out), *args], capture_output=True, text=True, env=ENV)
    if check and proc.returncode != 0:
        raise AssertionError(proc.stdout + proc.stderr)
    return proc


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


def test_single_process_without_launcher():
    dist = distributed.initialize()
    assert (dist.rank, dist.size, dist.local_rank, dist.is_chief, dist.backend) == (0, 1, 0, True, "single")
    g = [tf.ones([2]), None, tf.IndexedSlices(tf.ones([1, 2]), tf.constant([1]), tf.constant([3, 2]))]
    out = dist.allreduce(g)
    assert out[1] is None and out[2].shape == (3, 2) and float(tf.reduce_sum(out[2])) == 2.0
    dist.barrier()


def test_runs_as_one_process_when_horovod_is_not_importable(tmp_path):
    code = ("import sys; sys.modules['horovod'] = None; sys.modules['horovod.tensorflow'] = None\n"
            "from tests import train_toy; sys.exit(train_toy.main([sys.argv[1], '--steps', '2']))")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=ENV,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "final_rank0.npz").exists()


def test_accumulation_4x8_equals_1x32(tmp_path):
    ex = train_toy.make_examples(64)
    big = _trainer(tmp_path / "big", 3, optimizer=keras.optimizers.SGD(0.5))
    big.train(train_toy.make_dataset(ex, 32, shuffle=False))
    acc = _trainer(tmp_path / "acc", 3, accum=4, optimizer=keras.optimizers.SGD(0.5))
    acc.train(train_toy.make_dataset(ex, 8, shuffle=False))
    w_big, w_acc = train_toy.weights(big.model), train_toy.weights(acc.model)
    fresh = train_toy.build_model(dropout=0.0)
    fresh(next(iter(train_toy.make_dataset(ex, 8))))
    init = train_toy.weights(fresh)
    assert _max_diff(w_big, init) > 1e-3  # it did train
    assert _max_diff(w_big, w_acc) < 1e-5


def _sgd_step_length(tmp_path, clip_norm):
    # With SGD(lr=1) one step moves the weights by exactly the (clipped) gradient.
    training.set_precision("fp32")
    cfg = training.TrainLoopConfig(output_dir=str(tmp_path), num_train_steps=1, clip_norm=clip_norm,
                                   summaries=False)
    big_loss = lambda out, f, ops: (lambda l, m: (1000.0 * l, m))(*train_toy.toy_loss(out, f))  # noqa: E731
    tr = training.Trainer(train_toy.build_model(), big_loss, keras.optimizers.SGD(1.0), cfg, log=lambda s: None)
    ds = train_toy.make_dataset(train_toy.make_examples(16), 8, shuffle=False)
    tr.model(next(iter(ds)))
    before = train_toy.weights(tr.model)
    tr.train(ds)
    after = train_toy.weights(tr.model)
    return np.sqrt(sum(float(np.sum((after[k] - before[k]) ** 2)) for k in before))


def test_global_norm_clipping_at_1(tmp_path):
    assert _sgd_step_length(tmp_path / "off", None) > 10.0
    assert abs(_sgd_step_length(tmp_path / "on", 1.0) - 1.0) < 1e-4


def test_overfits_a_small_data_set(tmp_path):
    ex = train_toy.make_examples(32)
    tr = _trainer(tmp_path, 150, optimizer=keras.optimizers.Adam(3e-3))
    tr.train(train_toy.make_dataset(ex, 16))
    res = tr.evaluate(train_toy.make_dataset(ex, 16, shuffle=False), max_steps=2,
                      output_json=str(tmp_path / "eval.json"))
    assert res["masked_lm_accuracy"] >= 0.9, res
    written = json.loads((tmp_path / "eval.json").read_text())
    assert written["global_step"] == 150
    assert set(written) >= {"global_step", "loss", "masked_lm_accuracy", "masked_lm_loss",
                            "next_sentence_accuracy", "next_sentence_loss"}


def test_keeps_last_k_checkpoints_and_tf_finds_the_latest(tmp_path):
    tr = _trainer(tmp_path, 6, save_checkpoints_steps=1, keep_checkpoints=2)
    tr.train(train_toy.make_dataset(train_toy.make_examples(16), 8))
    assert [s for s, _ in run_dir.list_checkpoints(str(tmp_path))] == [5, 6]
    assert tf.train.latest_checkpoint(str(tmp_path)) == str(tmp_path / "ckpt-6" / "model.ckpt-6")
    assert not list(tmp_path.glob(".ckpt-*"))


def test_a_checkpoint_counts_only_with_storage_marker(tmp_path):
    tr = _trainer(tmp_path, 4, save_checkpoints_steps=2)
    tr.train(train_toy.make_dataset(train_toy.make_examples(16), 8))
    ckpt = run_dir.latest_checkpoint(str(tmp_path))
    assert ckpt.step == 4 and storage.is_complete(ckpt.path)  # the one artifact marker, written last
    listed = [f["path"] for f in json.loads((tmp_path / "ckpt-4" / storage.COMPLETE_MARKER).read_text())["files"]]
    assert set(listed) == set(os.listdir(tmp_path / "ckpt-4")) - {storage.COMPLETE_MARKER}
    assert (ckpt.metadata()["global_step"], ckpt.metadata()["world_size"]) == (4, 1)
    os.remove(tmp_path / "ckpt-4" / storage.COMPLETE_MARKER)
    assert [c.step for c in run_dir.list_checkpoints(str(tmp_path))] == [2]


def test_checkpoints_of_the_older_layout_are_refused_not_trained_over(tmp_path):
    """A run directory from before the one-marker layout (ckpt-N/COMPLETE.json, no marker) is not
    silently restarted from step 0 beside the old checkpoints: one line, and nothing is written."""
    old = tmp_path / "ckpt-2"
    old.mkdir()
    (old / run_dir.OLDER_LAYOUT).write_text('{"global_step": 2, "world_size": 1, "weights": "model.ckpt-2"}')
    tr = _trainer(tmp_path, 4, save_checkpoints_steps=2)
    with pytest.raises(UserError, match="older layout .*ckpt-2/COMPLETE.json.*new --output_dir"):
        tr.train(train_toy.make_dataset(train_toy.make_examples(16), 8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-2"]


def test_restore_weights_loads_the_latest_checkpoint(tmp_path):
    ds = train_toy.make_dataset(train_toy.make_examples(16), 8)
    trained = _trainer(tmp_path / "run", 3, save_checkpoints_steps=2, dropout=0.1)
    trained.train(ds)
    fresh = _trainer(tmp_path / "run", 3, dropout=0.1)
    fresh.model(next(iter(ds)))
    assert _max_diff(train_toy.weights(fresh.model), train_toy.weights(trained.model)) > 1e-3
    assert fresh.restore_weights() == 3
    assert int(fresh.global_step.numpy()) == 3
    assert _max_diff(train_toy.weights(fresh.model), train_toy.weights(trained.model)) == 0.0
    assert _trainer(tmp_path / "empty", 3).restore_weights() is None


def test_resume_after_sigkill_equals_uninterrupted(tmp_path):
    # Dropout and a reshuffling input make this exact only if RNG and input positions are restored.
    common = ["--steps", "10", "--save_every", "5", "--dropout", "0.1"]
    _run_toy(tmp_path / "straight", *common)
    killed = _run_toy(tmp_path / "resumed", *common, "--kill_after", "5", check=False)
    assert killed.returncode == -signal.SIGKILL
    assert [s for s, _ in run_dir.list_checkpoints(str(tmp_path / "resumed"))] == [5]
    resumed = _run_toy(tmp_path / "resumed", *common)
    assert "resumed from" in resumed.stdout and "at step 5" in resumed.stdout
    a = dict(np.load(tmp_path / "straight" / "final_rank0.npz"))
    b = dict(np.load(tmp_path / "resumed" / "final_rank0.npz"))
    assert _max_diff(a, b) <= 1e-6


def test_kill_during_save_leaves_the_previous_checkpoint_latest(tmp_path):
    out = tmp_path / "run"
    proc = _run_toy(out, "--steps", "6", "--save_every", "3", "--kill_in_save", "6", check=False)
    assert proc.returncode == -signal.SIGKILL
    assert (out / ".ckpt-6.tmp").is_dir()  # the half-written save is there ...
    assert [s for s, _ in run_dir.list_checkpoints(str(out))] == [3]  # ... and is not a checkpoint
    assert tf.train.latest_checkpoint(str(out)).endswith("ckpt-3/model.ckpt-3")
    resumed = _run_toy(out, "--steps", "6", "--save_every", "3")
    assert "at step 3" in resumed.stdout
    assert not (out / ".ckpt-6.tmp").exists()
    _run_toy(tmp_path / "straight", "--steps", "6", "--save_every", "3")
    a = dict(np.load(tmp_path / "straight" / "final_rank0.npz"))
    assert _max_diff(a, dict(np.load(out / "final_rank0.npz"))) <= 1e-6


def test_a_rank_the_saving_run_did_not_have_starts_its_data_afresh(tmp_path):
    ds = train_toy.make_dataset(train_toy.make_examples(16), 8, shuffle=False)
    _trainer(tmp_path, 2, save_checkpoints_steps=2).train(ds)
    second = distributed.Distributed()
    second.rank = second.local_rank = 1
    lines = []
    run = run_dir.RunDirectory(str(tmp_path), second, log=lines.append)
    iterator = iter(ds)
    run.restore_input_position(run.latest(), iterator)
    assert lines == [f"rank 1: {tmp_path}/ckpt-2 has no input position for this rank (saved by 1 ranks); "
                     f"its data starts afresh"]
    first = next(iter(ds))
    assert all(np.array_equal(v, first[k]) for k, v in next(iterator).items())


def test_gs_output_dir_resumes_on_the_same_host_from_its_local_copy(tmp_path, gcs_prefix):
    ds = lambda: train_toy.make_dataset(train_toy.make_examples(32), 8)  # noqa: E731  (a fresh shuffle each)
    straight = _trainer(tmp_path / "straight", 4, dropout=0.1)
    straight.train(ds())
    out, work = f"{gcs_prefix}/run", str(tmp_path / "work")
    _trainer(out, 2, save_checkpoints_steps=2, dropout=0.1, work_dir=work).train(ds())
    local = tmp_path / "work" / "ckpt-2"
    inode = (local / "model.ckpt-2.index").stat().st_ino
    for f in local.glob("data-rank0.*"):  # a file this host lacks is downloaded, the others are kept
        f.unlink()
    resumed = _trainer(out, 4, save_checkpoints_steps=2, dropout=0.1, work_dir=work)
    assert resumed.train(ds()).resumed_from == 2
    assert (local / "model.ckpt-2.index").stat().st_ino == inode and storage.is_complete(str(local))
    assert list(local.glob("data-rank0.*"))
    assert [c.step for c in run_dir.list_checkpoints(out)] == [2, 4]
    assert _max_diff(train_toy.weights(straight.model), train_toy.weights(resumed.model)) <= 1e-6


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_mixed_precision_follows_fp32(tmp_path, dtype):
    ex = train_toy.make_examples(32)
    ref = _trainer(tmp_path / "fp32", 60, optimizer=keras.optimizers.Adam(3e-3))
    ref_losses = [r["loss"] for r in ref.train(train_toy.make_dataset(ex, 16)).history]
    tr = _trainer(tmp_path / dtype, 60, dtype=dtype, optimizer=keras.optimizers.Adam(3e-3))
    assert keras.mixed_precision.global_policy().compute_dtype == {"fp16": "float16", "bf16": "bfloat16"}[dtype]
    losses = [r["loss"] for r in tr.train(train_toy.make_dataset(ex, 16)).history]
    assert all(np.isfinite(losses))
    assert all(np.isfinite(w).all() for w in train_toy.weights(tr.model).values())
    assert ref_losses[-1] < 0.5 * ref_losses[0]  # fp32 learns ...
    # ... and the low-precision run tracks it: same trajectory within a few percent of the start loss
    ref_tail, tail = np.mean(ref_losses[-10:]), np.mean(losses[-10:])
    assert abs(tail - ref_tail) < 0.1 * ref_losses[0], (tail, ref_tail)
    if dtype == "bf16":  # step for step (fp16 may skip its first steps while the loss scale settles)
        assert np.max(np.abs(np.array(losses[:10]) - np.array(ref_losses[:10]))) < 0.05 * ref_losses[0]
    else:
        assert tr.loss_scale() >= 2.0 ** 10


def test_loss_scale_drops_on_overflow_and_grows_back(tmp_path):
    training.set_precision("fp16")
    opt = keras.mixed_precision.LossScaleOptimizer(keras.optimizers.Adam(1e-3), initial_scale=2.0 ** 40,
                                                   dynamic_growth_steps=3)
    tr = _trainer(tmp_path, 40, dtype="fp16", optimizer=opt)
    scales, weights = [], []
    tr.callbacks.append(lambda t, step, row: (scales.append(t.loss_scale()),
                                              weights.append(train_toy.weights(t.model))))
    tr.train(train_toy.make_dataset(train_toy.make_examples(32), 16))
    # 2^40 overflows fp16 gradients: updates are skipped and the scale halves ...
    assert scales[0] == 2.0 ** 39 and scales[1] == 2.0 ** 38
    assert _max_diff(weights[0], weights[1]) == 0.0
    low = int(np.argmin(scales))
    assert scales[low] < 2.0 ** 30
    # ... until the gradients are finite; then every 3 finite steps it doubles again.
    assert any(b == 2 * a for a, b in zip(scales[low:], scales[low + 1:]))
    assert scales[-1] > scales[low]
    assert all(np.isfinite(w).all() for w in weights[-1].values())


def test_xla_matches_plain_graph(tmp_path):
    ex = train_toy.make_examples(32)
    a = _trainer(tmp_path / "a", 5)
    a.train(train_toy.make_dataset(ex, 8, shuffle=False))
    b = _trainer(tmp_path / "b", 5, xla=True)
    b.train(train_toy.make_dataset(ex, 8, shuffle=False))
    assert _max_diff(train_toy.weights(a.model), train_toy.weights(b.model)) < 1e-4


def test_progress_lines_and_summaries(tmp_path):
    lines = []
    training.set_precision("fp32")
    cfg = training.TrainLoopConfig(output_dir=str(tmp_path), num_train_steps=4, log_every_steps=2)
    tr = training.Trainer(train_toy.build_model(), train_toy.toy_loss, keras.optimizers.Adam(1e-3), cfg,
                          log=lines.append)
    tr.train(train_toy.make_dataset(train_toy.make_examples(16), 8))
    steps = [l for l in lines if l.startswith("step ")]
    assert [l.split()[1] for l in steps] == ["1/4", "2/4", "4/4"]
    assert all(k in steps[-1] for k in ("loss ", "lr ", "seq/s", "ETA"))
    assert list((tmp_path / "train").glob("events.out.tfevents.*"))


def test_history_is_the_logged_steps_and_a_resume_logs_them_once(tmp_path):
    """train/history.jsonl holds what the summaries hold, a row per logged step; a run resumed from an
    earlier checkpoint drops the rows after it and logs them again, so every step is there once."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from bert_core import layout, report_data

    training.set_precision("fp32")
    ds = lambda: train_toy.make_dataset(train_toy.make_examples(16), 8)  # noqa: E731

    def trainer():
        cfg = training.TrainLoopConfig(output_dir=str(tmp_path), num_train_steps=4, log_every_steps=1,
                                       save_checkpoints_steps=2)
        return training.Trainer(train_toy.build_model(), train_toy.toy_loss, keras.optimizers.Adam(1e-3), cfg,
                                log=lambda s: None)

    trainer().train(ds())
    path = layout.train_history_path(str(tmp_path))
    history = report_data.read_history(path)
    assert [r["step"] for r in history] == [1, 2, 3, 4]
    events = EventAccumulator(str(tmp_path / "train")).Reload()
    logged = {e.step: float(tf.make_ndarray(e.tensor_proto)) for e in events.Tensors("loss")}
    assert logged == pytest.approx({r["step"]: r["loss"] for r in history})
    assert all(k in history[0] for k in ("learning_rate", "sequences_per_second", "grad_norm"))

    storage.remove_dir(str(tmp_path / "ckpt-4"))  # as if killed after logging step 4, before its save
    trainer().train(ds())
    lines = open(path).read().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4]


class CountingDistributed(distributed.Distributed):
    """One process that counts the allreduces the loop runs (inside its tf.function)."""

    def __init__(self):
        super().__init__()
        self.calls = tf.Variable(0, dtype=tf.int64, trainable=False)

    def allreduce(self, tensors, fp16=False):
        self.calls.assign_add(1)
        return super().allreduce(tensors, fp16)


def test_one_allreduce_per_update_not_per_micro_batch(tmp_path):
    training.set_precision("fp32")
    dist = CountingDistributed()
    cfg = training.TrainLoopConfig(output_dir=str(tmp_path), num_train_steps=3, num_accumulation_steps=4,
                                   summaries=False)
    tr = training.Trainer(train_toy.build_model(), train_toy.toy_loss, keras.optimizers.Adam(1e-3), cfg, dist=dist,
                          log=lambda s: None)
    tr.train(train_toy.make_dataset(train_toy.make_examples(32), 4))
    assert int(dist.calls.numpy()) == 3


def test_launcher_without_horovod_is_one_clear_error(monkeypatch):
    from bert_core.errors import UserError

    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    monkeypatch.setitem(sys.modules, "horovod", None)
    monkeypatch.setitem(sys.modules, "horovod.tensorflow", None)
    monkeypatch.setattr(distributed, "_CURRENT", None)
    with pytest.raises(UserError, match="launcher with 2 processes but Horovod is not importable"):
        distributed.initialize()
    monkeypatch.setattr(distributed, "_CURRENT", None)
