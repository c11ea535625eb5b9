"""SavedModel export: a fine-tuned classifier, regressor and SQuAD model load with tf.saved_model.load and
their serving signature gives the training-time model's outputs on the same inputs (1e-5)."""

from __future__ import annotations

import json

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from bert_core.config import FinetuneConfig  # noqa: E402
from bert_core.finetune import run_finetune  # noqa: E402
from tests.conftest import run_bert  # noqa: E402
from tests.test_finetune import (QUIET, squad_file, tsv_flags, write_model_files,  # noqa: E402
                                 write_sentiment_tsv)

SEQ = 16


def _inputs(n: int = 5, seq: int = SEQ, vocab: int = 40, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab, (n, seq)).astype(np.int32)
    mask = np.ones_like(ids)
    for i in range(n):  # ragged lengths with zero padding, pairs with segment 1
        length = int(rng.integers(4, seq + 1))
        ids[i, length:], mask[i, length:] = 0, 0
        ids[i, 0] = 2
    seg = np.zeros_like(ids)
    seg[:, SEQ // 2:] = mask[:, SEQ // 2:]
    return {"input_ids": ids, "input_mask": mask, "segment_ids": seg}


def _serve(export_dir, inputs):
    loaded = tf.saved_model.load(str(export_dir))
    fn = loaded.signatures["serving_default"]
    spec = fn.structured_input_signature[1]
    assert set(spec) == {"input_ids", "input_mask", "segment_ids"}
    assert all(s.dtype == tf.int32 and s.shape.as_list() == [None, SEQ] for s in spec.values())
    return {k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in inputs.items()}).items()}


def test_classifier_export_matches_the_trained_model(tmp_path):
    vocab, config = write_model_files(tmp_path / "model")
    data = write_sentiment_tsv(tmp_path / "data", sizes=(("train", 32), ("dev", 8), ("test", 4)))
    export_dir = tmp_path / "saved"
    run = run_finetune(FinetuneConfig(
        task_name="tsv", text_a_column="sentence", label_column="label", data_dir=str(data), vocab_file=vocab,
        bert_config_file=config, output_dir=str(tmp_path / "out"), max_seq_length=SEQ, train_batch_size=8,
        num_train_epochs=1, learning_rate=1e-3, do_train=True, export_dir=str(export_dir)))
    inputs = _inputs()
    served = _serve(export_dir, inputs)
    expected = run.model(inputs, training=False)["logits"].numpy()
    assert set(served) == {"logits", "probabilities"}
    np.testing.assert_allclose(served["logits"], expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(served["probabilities"], tf.nn.softmax(expected).numpy(), atol=1e-5, rtol=0)
    # What a client needs to build inputs travels with the model.
    task = json.loads((export_dir / "task.json").read_text())
    assert task["labels"] == ["neg", "pos"] and task["max_seq_length"] == SEQ and task["do_lower_case"] is True
    assert (export_dir / "vocab.txt").read_text() == (tmp_path / "model" / "vocab.txt").read_text()
    assert json.loads((export_dir / "bert_config.json").read_text())["hidden_size"] == 32


def test_squad_export_matches_the_trained_model(tmp_path):
    vocab, config = write_model_files(tmp_path / "model")
    train = squad_file(tmp_path / "train.json")
    export_dir = tmp_path / "saved"
    run = run_finetune(FinetuneConfig(
        task_name="squad", train_file=train, vocab_file=vocab, bert_config_file=config,
        output_dir=str(tmp_path / "out"), max_seq_length=SEQ, doc_stride=4, max_query_length=6,
        train_batch_size=8, num_train_epochs=1, do_train=True, export_dir=str(export_dir)))
    inputs = _inputs(seed=1)
    served = _serve(export_dir, inputs)
    expected = run.model(inputs, training=False)
    assert set(served) == {"start_logits", "end_logits"}
    for k in served:
        assert served[k].shape == (5, SEQ)
        np.testing.assert_allclose(served[k], expected[k].numpy(), atol=1e-5, rtol=0)


def test_export_only_from_the_latest_checkpoint_via_the_command(tmp_path):
    """--export_dir without --do_train exports the latest checkpoint in output_dir (a regression head)."""
    vocab, config = write_model_files(tmp_path / "model")
    data = write_sentiment_tsv(tmp_path / "data", sizes=(("train", 32), ("dev", 8), ("test", 4)))
    out = tmp_path / "out"
    flags = tsv_flags(data, out, vocab, config, "--regression", "--label_column=score")
    for split in ("train", "dev"):  # a numeric label column
        rows = (data / f"{split}.tsv").read_text().splitlines()
        (data / f"{split}.tsv").write_text("sentence\tscore\n" + "".join(
            f"{r.split(chr(9))[0]}\t{1.0 if r.endswith('pos') else 0.0}\n" for r in rows[1:]))
    (data / "test.tsv").unlink()
    assert run_bert("finetune", *flags, "--do_train", "--num_train_epochs=1", env=QUIET).returncode == 0
    proc = run_bert("finetune", *flags, f"--export_dir={tmp_path}/saved", env=QUIET)
    assert proc.returncode == 0, proc.stderr
    assert "ckpt-2" in proc.stdout and "exported a SavedModel" in proc.stdout
    served = _serve(tmp_path / "saved", _inputs())
    assert set(served) == {"logits", "predictions"} and served["predictions"].shape == (5,)

    from bert_core.config import BertConfig
    from bert_core.modeling import BertClassifier
    from bert_core.checkpoints import load_google_checkpoint

    model = BertClassifier(BertConfig.from_json_file(config), 1)
    model.build()
    load_google_checkpoint(model, str(out))
    expected = model(_inputs(), training=False)["logits"].numpy()[:, 0]
    np.testing.assert_allclose(served["predictions"], expected, atol=1e-5, rtol=0)
