"""Checkpoints: parity with Google's original BERT and with Hugging Face's, name mapping, errors,
atomic writes.

Google parity runs Google's own modeling.py / run_pretraining.py (PyPI bert-tensorflow 1.0.4) in a
separate TensorFlow 2.15.1 env (scripts/setup_reference_env.sh, created on first use) through
tests/reference/google_model_fixture.py, and exchanges checkpoints and .npz files with it.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from bert_core import checkpoints, losses, modeling  # noqa: E402
from bert_core.config import BertConfig  # noqa: E402
from bert_core.errors import UserError  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
REFERENCE_ENV = pathlib.Path(os.environ.get("BERT_REFERENCE_ENV", ROOT / ".cache" / "ref-tf215"))
FIXTURE_SCRIPT = ROOT / "tests" / "reference" / "google_model_fixture.py"
INPUT_KEYS = ("input_ids", "input_mask", "segment_ids", "masked_lm_positions", "masked_lm_ids",
              "masked_lm_weights", "next_sentence_labels")

# A small random config in Google's format. Its "gelu" is, in bert-tensorflow 1.0.4's modeling.py,
# the tanh approximation, so our side reads it as "gelu_new" (docs/model.md, "GELU").
GOOGLE_CONFIG = dict(vocab_size=97, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                     intermediate_size=128, hidden_act="gelu", hidden_dropout_prob=0.1,
                     attention_probs_dropout_prob=0.1, max_position_embeddings=40, type_vocab_size=3,
                     initializer_range=0.02)
FP32_TOL = 1e-5


def max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


@pytest.fixture(scope="session")
def reference_python() -> str:
    """The reference env's python (TF 2.15.1 + bert-tensorflow 1.0.4), created if missing."""
    subprocess.run(["bash", str(ROOT / "scripts" / "setup_reference_env.sh"), str(REFERENCE_ENV)],
                   check=True, cwd=ROOT)
    return str(REFERENCE_ENV / "bin" / "python")


def run_reference(python: str, *args: str) -> None:
    proc = subprocess.run([python, str(FIXTURE_SCRIPT), *args], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0, f"reference run failed:\n{proc.stdout}\n{proc.stderr[-4000:]}"


@pytest.fixture(scope="session")
def google_fixture(reference_python, tmp_path_factory) -> dict:
    """Google's model with random weights: its checkpoint, config and outputs."""
    out = tmp_path_factory.mktemp("google")
    config_path = out / "bert_config.json"
    config_path.write_text(json.dumps(GOOGLE_CONFIG))
    run_reference(reference_python, "build", "--config", str(config_path), "--out", str(out))
    return {"dir": out, "config": str(config_path), "ckpt": str(out / "google.ckpt"),
            "npz": str(out / "fixture.npz"), "data": dict(np.load(out / "fixture.npz"))}


def our_config() -> BertConfig:
    return BertConfig(**{**GOOGLE_CONFIG, "hidden_act": "gelu_new"})


def run_ours(model, data: dict) -> dict:
    feats = {k: tf.constant(data[k]) for k in INPUT_KEYS}
    out = model(feats, training=False)
    loss, metrics = losses.pretraining_loss(out, feats)
    batch, preds = data["masked_lm_positions"].shape
    mlm_nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=feats["masked_lm_ids"], logits=out["mlm_logits"])
    result = {
        "sequence_output": out["sequence_output"], "pooled_output": out["pooled_output"],
        "embedding_output": out["embedding_output"],
        "mlm_logits": out["mlm_logits"], "mlm_log_probs": tf.nn.log_softmax(out["mlm_logits"]),
        "mlm_loss": metrics["masked_lm_loss"], "mlm_per_example_loss": mlm_nll,
        "nsp_logits": out["nsp_logits"], "nsp_log_probs": tf.nn.log_softmax(out["nsp_logits"]),
        "nsp_loss": metrics["next_sentence_loss"],
    }
    for i, layer in enumerate(out["encoder_outputs"]):
        result[f"layer_{i}"] = layer
    return {k: np.asarray(v) for k, v in result.items()}


COMPARED = ["embedding_output", "layer_0", "layer_1", "layer_2", "sequence_output", "pooled_output",
            "mlm_logits", "mlm_log_probs", "mlm_loss", "mlm_per_example_loss", "nsp_logits",
            "nsp_log_probs", "nsp_loss"]


# --------------------------------------------------------------------------------------------------
# Google parity
# --------------------------------------------------------------------------------------------------
def test_google_checkpoint_loads_and_outputs_match(google_fixture):
    model = modeling.BertPretrainer(our_config())
    report = checkpoints.load_google_checkpoint(model, google_fixture["ckpt"])
    assert report.missing == [] and report.unexpected == [] and report.mismatched == []
    assert sorted(report.loaded) == sorted(google_fixture["data"]["variable_names"].tolist())
    assert len(report.loaded) == len(model.weights) == 5 + 3 * 16 + 2 + 5 + 2
    assert "global_step" in report.ignored
    assert "bert/encoder/layer_0/attention/self/query/kernel/adam_m" in report.ignored
    assert len(report.ignored) == 1 + 2 * len(report.loaded)

    ours = run_ours(model, google_fixture["data"])
    diffs = {k: max_diff(ours[k], google_fixture["data"][k]) for k in COMPARED}
    print("google parity max |diff|:", json.dumps(diffs))
    assert all(d <= FP32_TOL for d in diffs.values()), diffs
    # The weights did matter: a freshly initialized model is far away.
    fresh = run_ours(modeling.BertPretrainer(our_config()), google_fixture["data"])
    assert max_diff(fresh["sequence_output"], google_fixture["data"]["sequence_output"]) > 0.1


def test_our_checkpoint_loads_into_googles_model(google_fixture, reference_python, tmp_path):
    model = modeling.BertPretrainer(our_config())
    checkpoints.load_google_checkpoint(model, google_fixture["ckpt"])
    prefix = checkpoints.save_google_checkpoint(model, str(tmp_path / "ours" / "model.ckpt-7"))
    assert sorted(os.listdir(tmp_path / "ours")) == ["model.ckpt-7.data-00000-of-00001", "model.ckpt-7.index"]
    # tf.train.load_checkpoint reads it here, by Google's names.
    shapes = tf.train.load_checkpoint(prefix).get_variable_to_shape_map()
    assert shapes["bert/encoder/layer_2/output/dense/kernel"] == [128, 64]
    assert shapes["cls/seq_relationship/output_weights"] == [2, 64]
    # Google's own code restores it (init_from_checkpoint, as run_pretraining.py) and computes the same.
    out = tmp_path / "google_from_ours.npz"
    run_reference(reference_python, "run", "--config", google_fixture["config"], "--ckpt", prefix,
                  "--inputs", google_fixture["npz"], "--out", str(out))
    theirs = np.load(out)
    assert sorted(theirs["checkpoint_names"].tolist()) == sorted(theirs["variable_names"].tolist())
    diffs = {k: max_diff(theirs[k], google_fixture["data"][k]) for k in COMPARED}
    print("round trip max |diff|:", json.dumps(diffs))
    assert all(d <= 1e-6 for d in diffs.values()), diffs


def test_shape_mismatch_is_one_line_listing_them(google_fixture, capsys):
    model = modeling.BertPretrainer(BertConfig(**{**GOOGLE_CONFIG, "intermediate_size": 96}))
    model.build()
    before = model.bert.embeddings.word_embeddings.numpy().copy()
    with pytest.raises(UserError) as info:
        checkpoints.load_google_checkpoint(model, google_fixture["ckpt"])
    message = str(info.value)
    assert "\n" not in message and google_fixture["ckpt"] in message
    assert "9 shape mismatches" in message  # per layer: intermediate kernel + bias, output kernel
    assert "bert/encoder/layer_0/intermediate/dense/kernel model [64, 96] vs file [64, 128]" in message
    err = capsys.readouterr().err
    assert "bert/encoder/layer_2/output/dense/kernel [96, 64] [128, 64]" in err
    # All or nothing: nothing was assigned.
    np.testing.assert_array_equal(model.bert.embeddings.word_embeddings.numpy(), before)


def test_missing_and_unexpected_strict_and_lenient(google_fixture, capsys):
    # The encoder alone: the heads' variables are unexpected.
    encoder = modeling.BertModel(our_config())
    with pytest.raises(UserError) as info:
        checkpoints.load_google_checkpoint(encoder, google_fixture["ckpt"])
    assert "7 unexpected: cls/predictions/output_bias" in str(info.value)
    assert "\n" not in str(info.value)
    assert "unexpected in the file" in capsys.readouterr().err
    report = checkpoints.load_google_checkpoint(encoder, google_fixture["ckpt"], strict=False)
    assert len(report.unexpected) == 7 and report.missing == []
    assert len(report.loaded) == len(encoder.weights)
    # A classifier from a pretraining checkpoint: its output layer is missing (the fine-tuning case).
    clf = modeling.BertClassifier(our_config(), num_labels=3)
    report = checkpoints.load_google_checkpoint(clf, google_fixture["ckpt"], strict=False)
    assert report.missing == ["output_bias", "output_weights"]
    with pytest.raises(UserError, match="2 missing: output_bias, output_weights"):
        checkpoints.load_google_checkpoint(clf, google_fixture["ckpt"])


def test_bad_checkpoint_paths_are_user_errors(tmp_path):
    model = modeling.BertModel(our_config())
    with pytest.raises(UserError, match="no such checkpoint"):
        checkpoints.load_google_checkpoint(model, str(tmp_path / "nope.ckpt"))
    with pytest.raises(UserError, match="no TF checkpoint"):
        checkpoints.load_google_checkpoint(model, str(tmp_path))


def test_checkpoint_path_forms(tmp_path):
    model = modeling.BertModel(our_config())
    prefix = checkpoints.save_google_checkpoint(model, str(tmp_path / "model.ckpt-3"))
    for form in (prefix, prefix + ".index", prefix + ".data-00000-of-00001"):
        assert checkpoints.resolve_checkpoint_path(form) == prefix
    (tmp_path / "checkpoint").write_text(f'model_checkpoint_path: "{prefix}"\n')
    assert checkpoints.resolve_checkpoint_path(str(tmp_path)) == prefix


def test_save_is_atomic(tmp_path, monkeypatch):
    cfg = our_config()
    a, b = modeling.BertModel(cfg), modeling.BertModel(cfg)
    prefix = str(tmp_path / "model.ckpt-1")
    checkpoints.save_google_checkpoint(a, prefix)

    # A writer killed before the rename (here: SaveV2 fails) leaves the old checkpoint whole.
    def broken_save(**kw):
        raise tf.errors.ResourceExhaustedError(None, None, "disk full")

    monkeypatch.setattr(tf.raw_ops, "SaveV2", broken_save)
    with pytest.raises(tf.errors.ResourceExhaustedError):
        checkpoints.save_google_checkpoint(b, prefix)
    monkeypatch.undo()
    fresh = modeling.BertModel(cfg)
    checkpoints.load_google_checkpoint(fresh, prefix)
    np.testing.assert_array_equal(fresh.embeddings.word_embeddings.numpy(), a.embeddings.word_embeddings.numpy())
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]

    # Killed between renames: no checkpoint under the prefix rather than old index + new data.
    real_rename = tf.io.gfile.rename

    def rename_data_only(src, dst, overwrite=False):
        if dst.endswith(".index"):
            raise OSError("killed")
        return real_rename(src, dst, overwrite)

    monkeypatch.setattr(tf.io.gfile, "rename", rename_data_only)
    with pytest.raises(OSError):
        checkpoints.save_google_checkpoint(b, prefix)
    monkeypatch.undo()
    assert not os.path.exists(prefix + ".index")
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]

    # A stale temporary from a killed writer is swept by the next save.
    (tmp_path / ".model.ckpt-1.tmp-999-deadbeef.index").write_bytes(b"partial")
    checkpoints.save_google_checkpoint(b, prefix)
    assert sorted(os.listdir(tmp_path)) == ["model.ckpt-1.data-00000-of-00001", "model.ckpt-1.index"]
    checkpoints.load_google_checkpoint(fresh, prefix)
    np.testing.assert_array_equal(fresh.embeddings.word_embeddings.numpy(), b.embeddings.word_embeddings.numpy())


# --------------------------------------------------------------------------------------------------
# Hugging Face
# --------------------------------------------------------------------------------------------------
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "BERT was pretrained on English Wikipedia and the BooksCorpus with a masked language model objective.",
    "Horovod averages gradients across workers with ring all-reduce.",
    "Is this the real life? Is this just fantasy?",
]


def test_minilm_safetensors_matches_transformers(minilm_dir):
    import torch
    import transformers

    torch.set_num_threads(2)
    tokenizer = transformers.BertTokenizer.from_pretrained(minilm_dir)
    batch = tokenizer(SENTENCES, padding=True, return_tensors="np")
    ref = transformers.BertModel.from_pretrained(minilm_dir, attn_implementation="eager").eval()
    with torch.no_grad():
        theirs = ref(**{k: torch.from_numpy(v) for k, v in batch.items()}, output_hidden_states=True)

    config = BertConfig.from_json_file(os.path.join(minilm_dir, "config.json"))
    model = modeling.BertModel(config)
    report = checkpoints.load_hf_safetensors(model, minilm_dir)  # the directory: finds model.safetensors
    assert report.missing == [] and report.unexpected == [] and len(report.loaded) == len(model.weights)
    ours = model({"input_ids": batch["input_ids"], "input_mask": batch["attention_mask"],
                  "segment_ids": batch["token_type_ids"]})
    hidden = [ours["embedding_output"], *ours["encoder_outputs"]]
    assert len(hidden) == len(theirs.hidden_states) == 7
    mask = batch["attention_mask"].astype(bool)
    diffs = [max_diff(np.asarray(a)[mask], b.numpy()[mask]) for a, b in zip(hidden, theirs.hidden_states)]
    pooled = max_diff(ours["pooled_output"], theirs.pooler_output.numpy())
    print("minilm max |diff| per hidden state:", diffs, "pooled:", pooled)
    assert max(diffs) <= 1e-4 and pooled <= 1e-4
    assert mask.sum() > 60 and (~mask).sum() > 0  # real text, with padding in the batch


@pytest.fixture(scope="module")
def hf_pretraining(tmp_path_factory):
    """A small random BertForPreTraining (gelu = erf in both) saved as safetensors, and its outputs."""
    import torch
    import transformers

    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=101, hidden_size=48, num_hidden_layers=2, num_attention_heads=3,
                                  intermediate_size=96, max_position_embeddings=32, type_vocab_size=2,
                                  hidden_act="gelu")
    ref = transformers.BertForPreTraining(cfg).eval()
    with torch.no_grad():  # random biases and LayerNorm weights so each mapping is exercised
        for name, p in ref.named_parameters():
            if "LayerNorm.weight" in name:
                p.copy_(1 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
    out = tmp_path_factory.mktemp("hf")
    ref.save_pretrained(out, safe_serialization=True)
    rng = np.random.RandomState(0)
    ids = rng.randint(1, 101, size=(2, 10))
    mask = np.ones((2, 10), np.int64)
    mask[1, 7:] = 0
    segs = np.zeros((2, 10), np.int64)
    segs[:, 5:] = 1
    with torch.no_grad():
        theirs = ref(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                     token_type_ids=torch.from_numpy(segs))
    positions = np.array([[1, 3, 8], [0, 2, 6]])
    features = {"input_ids": ids.astype(np.int32), "input_mask": mask.astype(np.int32),
                "segment_ids": segs.astype(np.int32), "masked_lm_positions": positions.astype(np.int32)}
    mlm = np.take_along_axis(theirs.prediction_logits.numpy(), positions[..., None], axis=1)
    our_cfg = BertConfig(**{k: v for k, v in cfg.to_dict().items()})
    return {"path": str(out / "model.safetensors"), "features": features, "mlm": mlm,
            "nsp": theirs.seq_relationship_logits.numpy(), "config": our_cfg}


def test_hf_bert_for_pretraining_heads_match(hf_pretraining):
    model = modeling.BertPretrainer(hf_pretraining["config"])
    report = checkpoints.load_hf_safetensors(model, hf_pretraining["path"])
    assert report.missing == [] and report.unexpected == [] and len(report.loaded) == len(model.weights)
    out = model(hf_pretraining["features"])
    mlm, nsp = max_diff(out["mlm_logits"], hf_pretraining["mlm"]), max_diff(out["nsp_logits"], hf_pretraining["nsp"])
    print("hf BertForPreTraining max |diff| mlm:", mlm, "nsp:", nsp)
    assert mlm <= 1e-4 and nsp <= 1e-4


def test_hf_spellings_prefixes_and_reports(hf_pretraining, tmp_path):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(hf_pretraining["path"])
    reference = modeling.BertPretrainer(hf_pretraining["config"])
    checkpoints.load_hf_safetensors(reference, hf_pretraining["path"])
    expected = {n: v.numpy() for n, v in reference.checkpoint_variables().items()}

    # Old spelling (LayerNorm gamma/beta), no `bert.` prefix, a tied decoder copy and a buffer present.
    renamed = {}
    for name, value in tensors.items():
        name = name.removeprefix("bert.").replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        renamed[name] = value
    renamed["cls.predictions.decoder.weight"] = tensors["bert.embeddings.word_embeddings.weight"]
    renamed["embeddings.position_ids"] = np.arange(32, dtype=np.int64)[None]
    old = tmp_path / "old.safetensors"
    save_file(renamed, str(old))
    model = modeling.BertPretrainer(hf_pretraining["config"])
    report = checkpoints.load_hf_safetensors(model, str(old))
    assert report.missing == [] and report.unexpected == []
    assert sorted(report.ignored) == ["cls.predictions.decoder.weight", "embeddings.position_ids"]
    for name, var in model.checkpoint_variables().items():
        np.testing.assert_array_equal(var.numpy(), expected[name], err_msg=name)

    # A BertForMaskedLM file (no pooler, no NSP) into the pretrainer: those are missing.
    mlm_only = {k: v for k, v in tensors.items() if not k.startswith(("bert.pooler", "cls.seq_relationship"))}
    mlm_only["some.other.weight"] = np.zeros(3, np.float32)
    path = tmp_path / "mlm.safetensors"
    save_file(mlm_only, str(path))
    with pytest.raises(UserError) as info:
        checkpoints.load_hf_safetensors(modeling.BertPretrainer(hf_pretraining["config"]), str(path))
    assert "4 missing: bert/pooler/dense/bias" in str(info.value)
    assert "1 unexpected: some.other.weight" in str(info.value) and "\n" not in str(info.value)
    report = checkpoints.load_hf_safetensors(modeling.BertPretrainer(hf_pretraining["config"]), str(path), strict=False)
    assert report.unexpected == ["some.other.weight"]
    assert report.missing == ["bert/pooler/dense/bias", "bert/pooler/dense/kernel",
                              "cls/seq_relationship/output_bias", "cls/seq_relationship/output_weights"]


def test_load_init_checkpoint_needs_the_encoder_and_names_what_starts_afresh(hf_pretraining, tmp_path):
    """--init_checkpoint (pretrain, finetune, extract-features): heads and the pooler may be missing
    and are reported; a missing encoder variable is one line; a Google checkpoint loads the same."""
    from safetensors.numpy import load_file, save_file

    tensors = load_file(hf_pretraining["path"])
    mlm_only = {k: v for k, v in tensors.items() if not k.startswith(("bert.pooler", "cls.seq_relationship"))}
    save_file(mlm_only, str(tmp_path / "mlm.safetensors"))
    line = checkpoints.load_init_checkpoint(modeling.BertPretrainer(hf_pretraining["config"]),
                                            str(tmp_path / "mlm.safetensors"))
    assert "4 missing" in line and line.endswith(
        "; initialised afresh: bert/pooler/dense/bias, bert/pooler/dense/kernel, "
        "cls/seq_relationship/output_bias, cls/seq_relationship/output_weights")

    no_layer_1 = {k: v for k, v in tensors.items() if ".layer.1." not in k}
    save_file(no_layer_1, str(tmp_path / "short.safetensors"))
    with pytest.raises(UserError, match=r"short.safetensors: does not fit the model: 16 encoder variables "
                                        r"missing from the checkpoint: bert/encoder/layer_1/") as info:
        checkpoints.load_init_checkpoint(modeling.BertModel(hf_pretraining["config"]), str(tmp_path / "short.safetensors"))
    assert "\n" not in str(info.value) and "(4 more)" in str(info.value)

    source = modeling.BertPretrainer(hf_pretraining["config"])
    checkpoints.load_hf_safetensors(source, hf_pretraining["path"])
    prefix = checkpoints.save_google_checkpoint(source, str(tmp_path / "ckpt" / "model.ckpt-1"))
    assert not checkpoints.is_hf_safetensors(prefix)
    line = checkpoints.load_init_checkpoint(modeling.BertPretrainer(hf_pretraining["config"]), prefix)
    assert line.endswith("0 missing, 0 unexpected, 0 ignored")


def test_read_safetensors_matches_the_library(tmp_path):
    import ml_dtypes
    from safetensors.numpy import save_file

    rng = np.random.RandomState(0)
    tensors = {"a": rng.randn(3, 4).astype(np.float32), "b": rng.randn(5).astype(np.float16),
               "c": rng.randn(2, 2).astype(ml_dtypes.bfloat16), "d": np.arange(6, dtype=np.int64).reshape(2, 3)}
    path = tmp_path / "t.safetensors"
    save_file(tensors, str(path))
    got = checkpoints.read_safetensors(str(path))
    assert set(got) == set(tensors)
    for k, v in tensors.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape
        np.testing.assert_array_equal(got[k].astype(np.float64), v.astype(np.float64))
    empty = tmp_path / "empty_model_dir"
    empty.mkdir()
    with pytest.raises(UserError, match="no model.safetensors"):
        checkpoints.load_hf_safetensors(modeling.BertModel(our_config()), str(empty))
    with pytest.raises(UserError, match="no such file"):
        checkpoints.read_safetensors(str(tmp_path / "absent.safetensors"))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x05\x00")
    with pytest.raises(UserError, match="not a safetensors file"):
        checkpoints.read_safetensors(str(bad))
