"""`bert pretrain` end to end on a tiny BERT: learning, Google-named checkpoints, resume, bad input."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
import keras  # noqa: E402

from bert_core import pretrain, training  # noqa: E402
from bert_core.config import BertConfig, PretrainConfig  # noqa: E402
from tests.conftest import one_line_error, run_bert  # noqa: E402
from tests.tiny_bert import tiny_config  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
SEQ, PREDS, VOCAB = 16, 3, 64
QUIET = {"TF_CPP_MIN_LOG_LEVEL": "2"}


def write_records(path, n: int, seq: int = SEQ, preds: int = PREDS, vocab: int = VOCAB, seed: int = 0,
                  bad_id_at: int | None = None, compression: str | None = None) -> str:
    """n pretraining records as create_pretraining_data.py lays them out; masked ids are memorisable."""
    rng = np.random.default_rng(seed)

    def ints(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(x) for x in v]))

    opts = tf.io.TFRecordOptions(compression_type=compression) if compression else None
    with tf.io.TFRecordWriter(str(path), options=opts) as w:
        for i in range(n):
            ids = rng.integers(5, vocab, seq)
            ids[0] = 2
            pos = np.sort(rng.choice(np.arange(1, seq), preds, replace=False))
            labels = ids[pos].copy()
            ids[pos] = 4
            if bad_id_at == i:
                ids[-1] = vocab + 7
            ex = tf.train.Example(features=tf.train.Features(feature={
                "input_ids": ints(ids), "input_mask": ints(np.ones(seq)), "segment_ids": ints(np.zeros(seq)),
                "masked_lm_positions": ints(pos), "masked_lm_ids": ints(labels),
                "masked_lm_weights": tf.train.Feature(float_list=tf.train.FloatList(value=[1.0] * preds)),
                "next_sentence_labels": ints([ids[1] % 2])}))
            w.write(ex.SerializeToString())
    return str(path)


@pytest.fixture
def data(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    write_records(d / "train-0.tfrecord", 16, seed=0, compression="GZIP")  # GZIP here, plain in the others
    write_records(d / "train-1.tfrecord", 16, seed=1, compression="GZIP")
    (d / "bert_config.json").write_text(json.dumps(tiny_config()))
    return d


def flags(data, out, *extra):
    return [f"--input_file={data}/train-*.tfrecord", f"--output_dir={out}",
            f"--bert_config_file={data}/bert_config.json", f"--max_seq_length={SEQ}",
            f"--max_predictions_per_seq={PREDS}", "--train_batch_size=8", "--eval_batch_size=8",
            "--num_warmup_steps=2", "--learning_rate=3e-3", "--log_every_steps=50", *extra]


def test_overfits_and_writes_google_checkpoints_and_eval(data, tmp_path):
    out = tmp_path / "out"
    proc = run_bert("pretrain", *flags(data, out, "--do_train", "--do_eval", "--num_train_steps=300",
                                       "--save_checkpoints_steps=150", "--max_eval_steps=4"), env=QUIET)
    assert proc.returncode == 0, proc.stderr
    assert "step 300/300" in proc.stdout and "seq/s" in proc.stdout and "ETA" in proc.stdout
    results = json.loads((out / "eval_results.json").read_text())
    assert results["global_step"] == 300
    assert results["masked_lm_accuracy"] >= 0.9, results
    assert set(results) == {"global_step", "loss", "masked_lm_accuracy", "masked_lm_loss",
                            "next_sentence_accuracy", "next_sentence_loss"}
    txt = (out / "eval_results.txt").read_text().splitlines()
    assert txt[0].startswith("global_step = 300") and any(l.startswith("masked_lm_accuracy = ") for l in txt)
    metrics = json.loads((out / "pretrain_metrics.json").read_text())
    assert metrics["global_step"] == 300 and metrics["sequences_per_second"] > 0
    assert metrics["eval"] == results
    # The weights are under Google's TF1 names and TF's own pointer finds the latest checkpoint.
    latest = tf.train.latest_checkpoint(str(out))
    assert latest == str(out / "ckpt-300" / "model.ckpt-300")
    names = dict(tf.train.list_variables(latest))
    assert names["bert/embeddings/word_embeddings"] == [VOCAB, 32]
    assert "bert/encoder/layer_1/attention/self/query/kernel" in names
    assert "cls/predictions/output_bias" in names and "cls/seq_relationship/output_weights" in names
    assert list((out / "train").glob("events.out.tfevents.*"))

    # --do_eval alone evaluates the latest checkpoint with the same numbers.
    again = run_bert("pretrain", *flags(data, out, "--do_eval", "--max_eval_steps=4"), env=QUIET)
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "eval_results.json").read_text()) == pytest.approx(results, rel=1e-5)

    # Phase 2: a new run starts from phase 1's weights with --init_checkpoint.
    p2 = run_bert("pretrain", *flags(data, tmp_path / "phase2", "--do_eval", "--max_eval_steps=4",
                                     f"--init_checkpoint={latest}"), env=QUIET)
    assert p2.returncode == 0, p2.stderr
    assert json.loads((tmp_path / "phase2" / "eval_results.json").read_text())["masked_lm_accuracy"] >= 0.9


def _pretrainer_trainer(out, files, steps, callbacks=()):
    from bert_core.modeling import BertPretrainer
    from bert_core.optimization import create_optimizer

    cfg = PretrainConfig(input_file=",".join(files), output_dir=str(out), bert_config_file="x", do_train=True,
                         max_seq_length=SEQ, max_predictions_per_seq=PREDS, train_batch_size=4,
                         num_train_steps=steps, num_warmup_steps=2, learning_rate=1e-3)
    keras.utils.set_random_seed(3)
    training.set_precision("fp32")
    model = BertPretrainer(BertConfig(**tiny_config(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)))
    model.build()
    loop = training.TrainLoopConfig(output_dir=str(out), num_train_steps=steps, save_checkpoints_steps=5,
                                    summaries=False)
    tr = training.Trainer(model, pretrain.pretraining_loss_fn, create_optimizer("lamb", 1e-3, steps, 2), loop,
                          weights_io=training.GoogleWeightsIO(), callbacks=list(callbacks), log=lambda s: None)
    return tr, pretrain.make_train_dataset(files, cfg, 0, 1, VOCAB)


class Crash(Exception):
    pass


def test_resume_with_google_checkpoints_is_exact(data, tmp_path):
    # BERT with dropout, LAMB and a reshuffling input: 10 steps == 5 steps, crash, resume, 5 more.
    files = sorted(str(p) for p in data.glob("train-*.tfrecord"))
    straight, ds = _pretrainer_trainer(tmp_path / "a", files, 10)
    straight.train(ds)

    def crash(trainer, step, row):
        if step == 5:
            raise Crash()

    first, ds = _pretrainer_trainer(tmp_path / "b", files, 10, [crash])
    with pytest.raises(Crash):
        first.train(ds)
    resumed, ds = _pretrainer_trainer(tmp_path / "b", files, 10)
    assert resumed.train(ds).resumed_from == 5
    a = [v.numpy() for v in straight.model.trainable_variables]
    b = [v.numpy() for v in resumed.model.trainable_variables]
    assert len(a) == len(b) and max(float(np.max(np.abs(x - y))) for x, y in zip(a, b)) <= 1e-6
    # Every weight is in the Google-named file (so resuming does not rely on anything else).
    names = dict(tf.train.list_variables(str(tmp_path / "b" / "ckpt-10" / "model.ckpt-10")))
    assert len(names) == len(resumed.model.trainable_variables)


def test_metrics_of_the_run_that_trained_survive_reruns_that_train_nothing(data, tmp_path):
    out = tmp_path / "out"
    metrics = out / "pretrain_metrics.json"
    cfg = PretrainConfig(input_file=f"{data}/train-*.tfrecord", output_dir=str(out),
                         bert_config_file=str(data / "bert_config.json"), max_seq_length=SEQ,
                         max_predictions_per_seq=PREDS, train_batch_size=8, eval_batch_size=8, num_train_steps=4,
                         num_warmup_steps=1, do_train=True)
    pretrain.pretrain_main(cfg)
    first = json.loads(metrics.read_text())
    assert first["global_step"] == 4 and first["train_loss"] > 0 and first["sequences_per_second"] > 0
    pretrain.pretrain_main(cfg)  # finished already: no step to train
    assert json.loads(metrics.read_text()) == first
    pretrain.pretrain_main(cfg.model_copy(update={"do_train": False, "do_eval": True, "max_eval_steps": 1}))
    evaluated = json.loads(metrics.read_text())
    assert {k: evaluated[k] for k in first} == first and evaluated["eval"]["global_step"] == 4
    # Resumed to a later step: its own training numbers, the earlier session's seconds added, the
    # eval of the older weights dropped.
    pretrain.pretrain_main(cfg.model_copy(update={"num_train_steps": 6}))
    resumed = json.loads(metrics.read_text())
    assert resumed["global_step"] == 6 and resumed["resumed_from"] == 4 and "eval" not in resumed
    assert resumed["train_seconds"] > first["train_seconds"] and resumed["sequences_per_second"] > 0
    # Killed after its last checkpoint, before the metrics: the rerun says what it knows, no null loss.
    metrics.unlink()
    pretrain.pretrain_main(cfg.model_copy(update={"num_train_steps": 6}))
    rerun = json.loads(metrics.read_text())
    assert rerun["global_step"] == 6 and "train_loss" not in rerun and "sequences_per_second" not in rerun


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_mixed_precision_bert_stays_finite(data, tmp_path, dtype):
    out = tmp_path / dtype
    proc = run_bert("pretrain", *flags(data, out, "--do_train", "--num_train_steps=40", f"--dtype={dtype}",
                                       "--log_every_steps=10"), env=QUIET)
    assert proc.returncode == 0, proc.stderr
    losses = [float(l.split("loss ")[1].split()[0]) for l in proc.stdout.splitlines() if l.startswith("step ")]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


def _truncate(path: pathlib.Path) -> str:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return str(path)


def test_a_truncated_checkpoint_is_one_line_naming_the_file(data, tmp_path):
    out = tmp_path / "out"
    run_bert("pretrain", *flags(data, out, "--do_train", "--num_train_steps=2"), env=QUIET, check=True)
    saved = out / "ckpt-2"
    pristine = {p.name: p.read_bytes() for p in saved.iterdir()}
    for name in ("model.ckpt-2.data-00000-of-00001", "state.data-00000-of-00001"):  # resuming: weights, state
        damaged = _truncate(saved / name)
        line = one_line_error(run_bert("pretrain", *flags(data, out, "--do_train", "--num_train_steps=4"), env=QUIET))
        assert f"{damaged}: truncated or damaged" in line and f"remove {saved} and rerun" in line
        (saved / name).write_bytes(pristine[name])
    damaged = _truncate(saved / "model.ckpt-2.data-00000-of-00001")  # as the weights a new run starts from
    line = one_line_error(run_bert("pretrain", *flags(data, tmp_path / "new", "--do_train", "--num_train_steps=2",
                                                      f"--init_checkpoint={saved}/model.ckpt-2"), env=QUIET))
    assert f"{damaged}: truncated or damaged" in line and "copy the checkpoint again" in line


def test_resuming_fp32_as_fp16_is_one_line_and_bf16_resumes(data, tmp_path):
    out = tmp_path / "out"
    run_bert("pretrain", *flags(data, out, "--do_train", "--num_train_steps=2"), env=QUIET, check=True)
    line = one_line_error(run_bert("pretrain", *flags(data, out, "--do_train", "--num_train_steps=4",
                                                      "--dtype=fp16"), env=QUIET))
    assert f"{out}/ckpt-2: its optimizer state does not fit this run's (--dtype=fp16" in line
    assert f"--init_checkpoint={out}/ckpt-2/model.ckpt-2" in line
    run_bert("pretrain", *flags(data, tmp_path / "fp16", "--do_train", "--num_train_steps=2", "--dtype=fp16",
                                f"--init_checkpoint={out}/ckpt-2/model.ckpt-2"), env=QUIET, check=True)
    run_bert("pretrain", *flags(data, out, "--do_train", "--num_train_steps=4", "--dtype=bf16"), env=QUIET,
             check=True)
    assert (out / "ckpt-4").is_dir()


def test_output_dir_is_a_self_contained_model_dir_and_progress_comes_as_events(data, tmp_path):
    """bert_config.json and vocab.txt beside the checkpoints, as the pipeline's Model; every log step
    a `step` event, the files a `wrote` event, on the events side channel."""
    from bert_core import layout

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("".join(f"tok{i}\n" for i in range(VOCAB)))
    out, events_file = tmp_path / "out", tmp_path / "events.jsonl"
    proc = run_bert("pretrain", *flags(data, out, "--do_train", "--do_eval", "--num_train_steps=4",
                                       "--log_every_steps=2", "--max_eval_steps=1", f"--vocab_file={vocab}"),
                    env={**QUIET, "BERT_EVENTS_FILE": str(events_file)})
    assert proc.returncode == 0, proc.stderr
    assert {layout.BERT_CONFIG, layout.VOCAB, layout.EVAL_RESULTS, layout.PRETRAIN_METRICS} <= {
        p.name for p in out.iterdir()}
    assert BertConfig.from_json_file(str(out / layout.BERT_CONFIG)) == BertConfig(**tiny_config())
    assert (out / layout.VOCAB).read_text() == vocab.read_text()
    assert (out / "ckpt-4" / "model.ckpt-4.index").exists()
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    steps = [e for e in events if e["event"] == "step"]
    assert [(e["stage"], e["step"], e["total"]) for e in steps] == [("pretrain", 1, 4), ("pretrain", 2, 4),
                                                                    ("pretrain", 4, 4)]
    assert all(np.isfinite(e["loss"]) and e["sequences_per_second"] > 0 for e in steps)
    assert steps[0]["eta_seconds"] is None and steps[-1]["eta_seconds"] == 0
    assert [e["path"] for e in events if e["event"] == "wrote"] == [
        str(out), str(out / layout.EVAL_RESULTS), str(out / layout.PRETRAIN_METRICS)]


def test_vocab_other_than_the_checkpoints_is_refused(data, tmp_path):
    from bert_core.errors import UserError

    vocab, other = tmp_path / "vocab.txt", tmp_path / "other.txt"
    vocab.write_text("".join(f"tok{i}\n" for i in range(VOCAB)))
    other.write_text("".join(f"tok{i}\n" for i in [0, 2, 1, *range(3, VOCAB)]))  # same size, two swapped
    out = tmp_path / "out"
    cfg = PretrainConfig(input_file=f"{data}/train-*.tfrecord", output_dir=str(out), vocab_file=str(vocab),
                         bert_config_file=str(data / "bert_config.json"), max_seq_length=SEQ,
                         max_predictions_per_seq=PREDS, train_batch_size=8, num_train_steps=2,
                         num_warmup_steps=1, do_train=True)
    pretrain.pretrain_main(cfg)
    said = f"is not the vocab the checkpoint was made with, {out / 'vocab.txt'} .*: line 2 is 'tok2' there 'tok1'"
    with pytest.raises(UserError, match=said):  # resuming
        pretrain.pretrain_main(cfg.model_copy(update={"vocab_file": str(other), "num_train_steps": 4}))
    with pytest.raises(UserError, match=said):  # starting from its checkpoint
        pretrain.pretrain_main(cfg.model_copy(update={"vocab_file": str(other), "output_dir": str(tmp_path / "b"),
                                                      "init_checkpoint": str(out / "ckpt-2" / "model.ckpt-2")}))
    assert (out / "vocab.txt").read_text() == vocab.read_text()


def test_vocab_comes_from_the_data_manifest_when_not_given(data, tmp_path):
    import hashlib

    from bert_core import layout

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("".join(f"tok{i}\n" for i in range(VOCAB)))
    shards = [{"file": f.name, "bytes": f.stat().st_size, "instances": 16} for f in sorted(data.glob("train-*"))]
    (data / layout.DATA_MANIFEST).write_text(json.dumps({"shards": shards, "vocab": {
        "path": str(vocab), "size": VOCAB, "sha256": hashlib.sha256(vocab.read_bytes()).hexdigest()}}))
    out = tmp_path / "out"
    proc = run_bert("pretrain", *flags(data, out, "--do_train", "--num_train_steps=2"), env=QUIET)
    assert proc.returncode == 0, proc.stderr
    assert (out / layout.VOCAB).read_text() == vocab.read_text()

    vocab.write_text("changed\n")  # no longer the vocab the data was made with: not copied, and said so
    out = tmp_path / "out2"
    proc = run_bert("pretrain", *flags(data, out, "--do_train", "--num_train_steps=2"), env=QUIET)
    assert proc.returncode == 0, proc.stderr
    assert not (out / layout.VOCAB).exists() and "no vocab.txt beside the checkpoints" in proc.stdout


def test_bad_token_ids_stop_before_training(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    write_records(d / "train-0.tfrecord", 8, vocab=VOCAB, bad_id_at=5)
    (d / "bert_config.json").write_text(json.dumps(tiny_config()))
    proc = run_bert("pretrain", *flags(d, tmp_path / "out", "--do_train", "--num_train_steps=5"), env=QUIET)
    line = one_line_error(proc)
    assert "train-0.tfrecord: record 5: input_ids holds token id 71" in line and "vocab_size is 64" in line
    assert "step 1/" not in proc.stdout
    assert not (tmp_path / "out" / "ckpt-5").exists()


def test_bad_token_ids_past_the_checked_sample_stop_with_one_line(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    write_records(d / "train-0.tfrecord", 64, vocab=VOCAB, bad_id_at=40)
    (d / "bert_config.json").write_text(json.dumps(tiny_config()))
    proc = run_bert("pretrain", *flags(d, tmp_path / "out", "--do_train", "--num_train_steps=50",
                                       "--check_records=4"), env=QUIET)
    line = one_line_error(proc)
    assert "token id >= vocab_size=64" in line


def test_damaged_record_past_the_checked_sample_names_the_file_and_offset(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    write_records(d / "train-0.tfrecord", 64, seed=0)
    damaged = write_records(d / "train-1.tfrecord", 64, seed=1)
    data = bytearray(pathlib.Path(damaged).read_bytes())
    record = len(data) // 64  # every record has the same length here
    data[40 * record + 20] ^= 0xFF  # inside record 40's data: its checksum no longer matches
    pathlib.Path(damaged).write_bytes(bytes(data))
    (d / "bert_config.json").write_text(json.dumps(tiny_config()))
    args = flags(d, tmp_path / "out", "--do_train", "--num_train_steps=40", "--check_records=4")
    line = one_line_error(run_bert("pretrain", *args, env=QUIET))
    assert f"{damaged}: record 40 (byte offset {40 * record}): truncated or corrupt record" in line
    assert "--skip_damaged_records" in line
    proc = run_bert("pretrain", *args, "--skip_damaged_records", env=QUIET)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "ckpt-40").is_dir()
    args = flags(d, tmp_path / "checked", "--do_train", "--num_train_steps=10")  # damage among the checked records
    assert f"{damaged}: not a readable TFRecord file" in one_line_error(run_bert("pretrain", *args, env=QUIET))
    proc = run_bert("pretrain", *args, "--skip_damaged_records", env=QUIET)
    assert proc.returncode == 0, proc.stderr
    assert f"{damaged}: record 40 (byte offset {40 * record}): truncated or corrupt record: skipping" in proc.stdout


def test_vocab_larger_than_the_model_is_refused(data, tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("".join(f"tok{i}\n" for i in range(VOCAB + 10)))
    proc = run_bert("pretrain", *flags(data, tmp_path / "out", "--do_train", "--num_train_steps=5",
                                       f"--vocab_file={vocab}"), env=QUIET)
    assert "vocab file has 74 tokens" in one_line_error(proc)


def test_missing_input_files(data, tmp_path):
    proc = run_bert("pretrain", *flags(data, tmp_path / "out", "--do_train", "--num_train_steps=5")[1:],
                    f"--input_file={tmp_path}/nothing-*.tfrecord", env=QUIET)
    assert "nothing-*.tfrecord: the pattern matches no file" in one_line_error(proc)
    proc = run_bert("pretrain", *flags(data, tmp_path / "out", "--do_train", "--num_train_steps=5")[1:],
                    f"--input_file={tmp_path}/absent.tfrecord", env=QUIET)
    assert "absent.tfrecord: no such file" in one_line_error(proc)


def test_record_length_differs_from_max_seq_length(data, tmp_path):
    args = [a for a in flags(data, tmp_path / "out", "--do_train", "--num_train_steps=5")
            if not a.startswith("--max_seq_length")]
    proc = run_bert("pretrain", *args, "--max_seq_length=32", env=QUIET)
    line = one_line_error(proc)
    assert "train-0.tfrecord: record 0: input_ids has length 16 but --max_seq_length=32" in line


def test_flag_errors_are_one_line(data, tmp_path):
    proc = run_bert("pretrain", *flags(data, tmp_path / "out", "--num_train_steps=5"), env=QUIET)
    assert "at least one of --do_train or --do_eval" in one_line_error(proc)
    proc = run_bert("pretrain", *flags(data, tmp_path / "out", "--do_train", "--num_train_steps=5",
                                       "--model=bert-mini"), env=QUIET)
    assert "exactly one of --bert_config_file or --model" in one_line_error(proc)


def test_init_checkpoint_with_other_shapes_lists_them(data, tmp_path):
    out = tmp_path / "small"
    assert run_bert("pretrain", *flags(data, out, "--do_train", "--num_train_steps=2"), env=QUIET).returncode == 0
    bigger = tmp_path / "bigger.json"
    bigger.write_text(json.dumps(tiny_config(intermediate_size=96)))
    args = [a for a in flags(data, tmp_path / "out2", "--do_train", "--num_train_steps=2")
            if not a.startswith("--bert_config_file")]
    proc = run_bert("pretrain", *args, f"--bert_config_file={bigger}", f"--init_checkpoint={out}/ckpt-2/model.ckpt-2",
                    env=QUIET)
    line = one_line_error(proc)
    assert "shape mismatches" in line
    assert "bert/encoder/layer_0/intermediate/dense/kernel model [32, 96] vs file [32, 64]" in line
    assert "bert/encoder/layer_1/output/dense/kernel" in line


def test_each_rank_reads_every_record_once_per_epoch(tmp_path):
    files = [write_records(tmp_path / f"t{i}.tfrecord", 6, seed=i) for i in range(3)]
    cfg = PretrainConfig(input_file=",".join(files), output_dir=str(tmp_path), model="bert-mini", do_eval=True,
                         max_seq_length=SEQ, max_predictions_per_seq=PREDS, eval_batch_size=1)

    def seen(fs, rank, size):
        ds = pretrain.make_eval_dataset(fs, cfg, rank, size, VOCAB)
        return [tuple(b["input_ids"].numpy()[0]) for b in ds]

    everything = sorted(seen(files, 0, 1))
    for fs in (files, files[:2]):  # 3 files over 2 ranks (record sharding), 2 files (file sharding)
        per_rank = [seen(fs, r, 2) for r in range(2)]
        together = sorted(per_rank[0] + per_rank[1])
        assert together == sorted(seen(fs, 0, 1))
        assert not set(per_rank[0]) & set(per_rank[1])
    assert len(everything) == 18
