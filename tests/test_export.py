"""SavedModel export: a fine-tuned classifier, regressor and SQuAD model load with tf.saved_model.load and
their serving signature gives the training-time model's outputs on the same inputs (1e-5)."""

from __future__ import annotations

import json

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from bert_core.config import FinetuneConfig  # noqa: E402
from gcs_server import gcs, gcs_prefix  # noqa: E402,F401  (fixtures: loopback object stores)
from s3_server import s3, s3_prefix  # noqa: E402,F401
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


# --------------------------------------------------------------------------------------------------
# What --export_dir may replace: only an earlier export of ours, whole
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A fine-tuned tiny classifier: (its output_dir, the FinetuneConfig of an export-only run from it)."""
    tmp = tmp_path_factory.mktemp("trained")
    vocab, config = write_model_files(tmp / "model")
    data = write_sentiment_tsv(tmp / "data", sizes=(("train", 16), ("dev", 4), ("test", 2)))
    cfg = FinetuneConfig(task_name="tsv", text_a_column="sentence", label_column="label", data_dir=str(data),
                         vocab_file=vocab, bert_config_file=config, output_dir=str(tmp / "out"),
                         max_seq_length=SEQ, train_batch_size=8, num_train_epochs=1, do_train=True)
    run_finetune(cfg)
    return tmp / "out", cfg.model_copy(update={"do_train": False})


def _not_ours(tmp_path, out):
    """What an export must never replace: (export_dir, a file whose bytes must survive, the error)."""
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me\n")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a corpus\n")
    return {
        "a file": (corpus, corpus, "is a file; the export is a directory"),
        "a directory of notes": (notes, notes / "todo.txt", "is a non-empty directory that is not a SavedModel"),
        "the output_dir": (out, out / "finetune_metrics.json", "is --output_dir"),
        "a directory holding the output_dir": (out.parent, out / "finetune_metrics.json", "holds --output_dir"),
        "a checkpoint in the output_dir": (out / "ckpt-2", out / "ckpt-2" / "metadata.json",
                                           "is inside --output_dir"),
    }


@pytest.mark.parametrize("case", ["a file", "a directory of notes", "the output_dir",
                                  "a directory holding the output_dir", "a checkpoint in the output_dir"])
def test_export_dir_that_is_not_an_earlier_export_is_refused_and_kept(trained, tmp_path, case):
    from bert_core.errors import UserError

    out, cfg = trained
    export_dir, keep, message = _not_ours(tmp_path, out)[case]
    before = keep.read_bytes()
    with pytest.raises(UserError, match=message):
        run_finetune(cfg.model_copy(update={"export_dir": str(export_dir)}))
    assert keep.read_bytes() == before


def test_an_earlier_export_is_replaced_whole(trained, tmp_path):
    from bert_core import storage

    out, cfg = trained
    export_dir = out / "saved_model"  # the one place inside output_dir an export may go (the component's)
    run_finetune(cfg.model_copy(update={"export_dir": str(export_dir)}))
    assert storage.is_complete(str(export_dir))
    (export_dir / "stale.txt").write_text("from before\n")  # not in the marker: gone with the old export
    run_finetune(cfg.model_copy(update={"export_dir": str(export_dir)}))
    assert not (export_dir / "stale.txt").exists() and storage.is_complete(str(export_dir))
    assert set(_serve(export_dir, _inputs())) == {"logits", "probabilities"}
    empty = tmp_path / "empty"
    empty.mkdir()
    run_finetune(cfg.model_copy(update={"export_dir": str(empty)}))
    assert json.loads((empty / "task.json").read_text())["labels"] == ["neg", "pos"]


@pytest.fixture(params=["gs", "s3"])
def store_prefix(request):
    """A fresh gs:// or s3:// prefix on the tests' loopback servers."""
    return request.getfixturevalue(f"{request.param}_prefix".replace("gs_", "gcs_"))


def test_export_to_object_storage_is_staged_and_published_marker_last(trained, store_prefix, tmp_path):
    from bert_core import storage
    from bert_core.errors import UserError

    out, cfg = trained
    export_dir = f"{store_prefix}/saved"
    run_finetune(cfg.model_copy(update={"export_dir": export_dir}))
    marker = storage.read_json(f"{export_dir}/{storage.COMPLETE_MARKER}")
    objects = {i.path[len(export_dir) + 1:] for i in storage.list_files(export_dir + "/")}
    assert objects == {f["path"] for f in marker["files"]} | {storage.COMPLETE_MARKER}
    assert {"saved_model.pb", "task.json", "vocab.txt", "bert_config.json"} <= objects
    for name in objects - {storage.COMPLETE_MARKER}:
        storage.download(f"{export_dir}/{name}", str(tmp_path / "local" / name))
    assert set(_serve(tmp_path / "local", _inputs())) == {"logits", "probabilities"}
    run_finetune(cfg.model_copy(update={"export_dir": export_dir}))  # our own export: replaced
    storage.write_text(f"{store_prefix}/notes/todo.txt", "keep me\n")
    with pytest.raises(UserError, match="not a SavedModel exported by bert finetune"):
        run_finetune(cfg.model_copy(update={"export_dir": f"{store_prefix}/notes"}))
    assert storage.read_text(f"{store_prefix}/notes/todo.txt") == "keep me\n"
