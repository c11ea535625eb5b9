"""BertConfig, presets, the encoder and its heads: behaviour, masks, mixed precision, activations."""

from __future__ import annotations

import json
import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from bert_core import losses, modeling  # noqa: E402
from bert_core.config import HIDDEN_ACTS, BertConfig  # noqa: E402
from bert_core.ops import PLAIN  # noqa: E402
from bert_core.errors import UserError  # noqa: E402
from bert_core.presets import PRESETS, preset_config, preset_names, resolve_bert_config  # noqa: E402

GOOGLE_KEYS = dict(vocab_size=120, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                   intermediate_size=128, hidden_act="gelu", hidden_dropout_prob=0.1,
                   attention_probs_dropout_prob=0.1, max_position_embeddings=32, type_vocab_size=2,
                   initializer_range=0.02)


def small_config(**over) -> BertConfig:
    return BertConfig(**{**GOOGLE_KEYS, **over})


def write_json(tmp_path, obj, name="bert_config.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(obj))
    return str(path)


def features(batch=2, seq=12, preds=3, vocab=120, seed=0) -> dict:
    rng = np.random.RandomState(seed)
    ids = rng.randint(1, vocab, size=(batch, seq)).astype(np.int32)
    return {
        "input_ids": tf.constant(ids),
        "input_mask": tf.ones((batch, seq), tf.int32),
        "segment_ids": tf.constant((np.arange(seq)[None, :] >= seq // 2).astype(np.int32).repeat(batch, 0)),
        "masked_lm_positions": tf.constant(np.sort(rng.randint(0, seq, size=(batch, preds)), axis=1).astype(np.int32)),
        "masked_lm_ids": tf.constant(rng.randint(0, vocab, size=(batch, preds)).astype(np.int32)),
        "masked_lm_weights": tf.constant(np.ones((batch, preds), np.float32)),
        "next_sentence_labels": tf.constant(rng.randint(0, 2, size=(batch, 1)).astype(np.int32)),
    }


def randomize(model, seed=0, scale=0.05):
    """Non-trivial values for every weight (biases, gammas, betas too)."""
    rng = np.random.RandomState(seed)
    for name, var in sorted(model.checkpoint_variables().items()):
        shape = tuple(var.shape)
        if name.endswith("gamma"):
            value = 1 + 0.1 * rng.randn(*shape)
        elif name.endswith(("beta", "bias")):
            value = 0.1 * rng.randn(*shape)
        else:
            value = scale * rng.randn(*shape)
        var.assign(value.astype("float32"))


# --------------------------------------------------------------------------------------------------
# BertConfig
# --------------------------------------------------------------------------------------------------
def test_config_reads_google_json_unchanged(tmp_path):
    cfg = BertConfig.from_json_file(write_json(tmp_path, GOOGLE_KEYS))
    assert cfg.to_dict() == GOOGLE_KEYS
    assert cfg.head_size == 16 and cfg.layer_norm_eps == 1e-12


def test_config_reads_hf_config_json(minilm_dir):
    cfg = BertConfig.from_json_file(os.path.join(minilm_dir, "config.json"))
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size) == (6, 384, 12, 1536)
    assert cfg.vocab_size == 30522 and cfg.hidden_act == "gelu"


@pytest.mark.parametrize("change, field", [
    ({"num_attention_heads": 5}, "hidden_size=64 is not divisible by num_attention_heads=5"),
    ({"hidden_act": "swish_ish"}, "hidden_act: unknown activation"),
    ({"hidden_size": -64}, "hidden_size"),
    ({"num_hidden_layers": 0}, "num_hidden_layers"),
    ({"hidden_dropout_prob": 1.5}, "hidden_dropout_prob"),
    ({"vocab_size": None}, "vocab_size: Field required"),
    ({"max_position_embeddings": "many"}, "max_position_embeddings"),
])
def test_config_errors_are_one_line_naming_file_and_field(tmp_path, change, field):
    values = {k: v for k, v in {**GOOGLE_KEYS, **change}.items() if v is not None}
    path = write_json(tmp_path, values)
    with pytest.raises(UserError) as info:
        BertConfig.from_json_file(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(path + ": ")
    assert field in message


def test_config_file_problems_are_user_errors(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    for path in (str(bad), str(tmp_path / "absent.json"), write_json(tmp_path, [1, 2], "list.json")):
        with pytest.raises(UserError) as info:
            BertConfig.from_json_file(path)
        assert path in str(info.value) and "\n" not in str(info.value)


# --------------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------------
def test_presets_cover_googles_released_shapes():
    grid = [f"bert-L{l}-H{h}" for l in (2, 4, 6, 8, 10, 12) for h in (128, 256, 512, 768)]
    assert set(grid) <= set(PRESETS) and len(grid) == 24
    for name in grid:
        cfg = preset_config(name)
        assert cfg.num_attention_heads == cfg.hidden_size // 64
        assert cfg.intermediate_size == 4 * cfg.hidden_size
    shapes = {n: (c.num_hidden_layers, c.hidden_size) for n in preset_names() for c in [preset_config(n)]}
    assert shapes["bert-tiny"] == (2, 128) and shapes["bert-mini"] == (4, 256)
    assert shapes["bert-small"] == (4, 512) and shapes["bert-medium"] == (8, 512)
    assert shapes["bert-base"] == (12, 768) and preset_config("bert-base").num_attention_heads == 12
    large = preset_config("bert-large")
    assert (large.num_hidden_layers, large.hidden_size, large.num_attention_heads, large.intermediate_size) == (24, 1024, 16, 4096)
    assert preset_config("BERT_Mini") == preset_config("bert-mini")


def test_resolve_bert_config(tmp_path):
    assert resolve_bert_config(model="bert-mini", vocab_size=4000).vocab_size == 4000
    assert resolve_bert_config(model="bert-mini").vocab_size == 30522
    path = write_json(tmp_path, GOOGLE_KEYS)
    assert resolve_bert_config(bert_config_file=path, vocab_size=100) == small_config()
    with pytest.raises(UserError, match="vocab file has 500 tokens"):
        resolve_bert_config(bert_config_file=path, vocab_size=500)
    with pytest.raises(UserError, match="exactly one"):
        resolve_bert_config()
    with pytest.raises(UserError, match="exactly one"):
        resolve_bert_config(model="bert-mini", bert_config_file=path)
    with pytest.raises(UserError) as info:
        resolve_bert_config(model="bert-gigantic")
    assert "bert-gigantic" in str(info.value) and "bert-L4-H256" in str(info.value) and "\n" not in str(info.value)


# --------------------------------------------------------------------------------------------------
# Activations
# --------------------------------------------------------------------------------------------------
def test_gelu_exact_and_tanh_approximation():
    x = np.linspace(-6, 6, 2001).astype(np.float64)
    exact = np.array([v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x])
    approx = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    ours_exact = PLAIN.activation("gelu")(tf.constant(x)).numpy()
    ours_tanh = PLAIN.activation("gelu_new")(tf.constant(x)).numpy()
    np.testing.assert_allclose(ours_exact, exact, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(ours_tanh, approx, rtol=1e-6, atol=1e-8)
    gap = np.abs(ours_exact - ours_tanh).max()
    assert 1e-5 < gap < 1e-3  # different functions, close ones: "gelu" is not "gelu_new"
    assert PLAIN.activation("gelu") == PLAIN.gelu
    for name in ("gelu_tanh", "gelu_pytorch_tanh"):
        assert PLAIN.activation(name) is PLAIN.activation("gelu_new")
    assert PLAIN.activation("linear") is None
    assert {name for name in HIDDEN_ACTS if PLAIN.activation(name) or name == "linear"} == set(HIDDEN_ACTS)
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        PLAIN.activation("swish")


# --------------------------------------------------------------------------------------------------
# Encoder
# --------------------------------------------------------------------------------------------------
def test_bert_model_outputs_and_shapes():
    cfg = small_config(num_hidden_layers=3)
    model = modeling.BertModel(cfg)
    out = model(features(batch=2, seq=12))
    assert out["sequence_output"].shape == (2, 12, 64)
    assert out["pooled_output"].shape == (2, 64)
    assert out["embedding_output"].shape == (2, 12, 64)
    assert len(out["encoder_outputs"]) == 3
    np.testing.assert_array_equal(out["encoder_outputs"][-1], out["sequence_output"])
    # The pooler is tanh(dense(first token)).
    pooled = np.tanh(out["sequence_output"][:, 0].numpy() @ model.pooler.kernel.numpy() + model.pooler.bias.numpy())
    np.testing.assert_allclose(out["pooled_output"], pooled, atol=1e-5)


def test_padding_does_not_change_unpadded_outputs():
    cfg = small_config(num_hidden_layers=2)
    model = modeling.BertModel(cfg)
    randomize(model, seed=3)
    rng = np.random.RandomState(1)
    n, padded_len = 7, 12
    ids = rng.randint(1, cfg.vocab_size, size=(1, n)).astype(np.int32)
    segs = np.array([[0, 0, 0, 1, 1, 1, 1]], np.int32)
    alone = model({"input_ids": ids, "input_mask": np.ones_like(ids), "segment_ids": segs})
    # Same tokens, then 5 padding slots holding arbitrary ids and segments, masked out.
    pad_ids = np.concatenate([ids, rng.randint(1, cfg.vocab_size, size=(1, padded_len - n))], 1).astype(np.int32)
    pad_segs = np.concatenate([segs, np.ones((1, padded_len - n), np.int32)], 1)
    mask = (np.arange(padded_len) < n).astype(np.int32)[None]
    padded = model({"input_ids": pad_ids, "input_mask": mask, "segment_ids": pad_segs})
    np.testing.assert_allclose(padded["sequence_output"][:, :n], alone["sequence_output"], atol=1e-5)
    np.testing.assert_allclose(padded["pooled_output"], alone["pooled_output"], atol=1e-5)
    for a, b in zip(padded["encoder_outputs"], alone["encoder_outputs"]):
        np.testing.assert_allclose(a[:, :n], b, atol=1e-5)
    # Without the mask the padding does leak in: the mask is what makes the test pass.
    unmasked = model({"input_ids": pad_ids, "input_mask": np.ones_like(pad_ids), "segment_ids": pad_segs})
    assert np.abs(unmasked["sequence_output"][:, :n] - alone["sequence_output"]).max() > 1e-3


def test_dropout_only_in_training():
    model = modeling.BertModel(small_config())
    f = features()
    a, b = model(f, training=False), model(f, training=False)
    np.testing.assert_array_equal(a["sequence_output"], b["sequence_output"])
    c = model(f, training=True)
    assert np.abs(c["sequence_output"] - a["sequence_output"]).max() > 1e-3


def test_sequence_longer_than_positions_is_refused():
    model = modeling.BertModel(small_config(max_position_embeddings=8))
    with pytest.raises(ValueError, match="max_position_embeddings=8"):
        model({"input_ids": tf.ones((1, 9), tf.int32)})


def test_variable_paths_spell_google_names_and_weight_decay_exclusions():
    model = modeling.BertPretrainer(small_config())
    names = model.checkpoint_variables()
    assert len(names) == len(model.weights) == len({id(v) for v in names.values()})
    for google, var in names.items():
        assert var.path.endswith(google), (google, var.path)
    assert "bert/encoder/layer_1/attention/self/query/kernel" in names
    assert "cls/predictions/output_bias" in names and "cls/seq_relationship/output_weights" in names

    # A teammate's optimizer excludes from weight decay every variable whose path contains one of these.
    def excluded(path):
        return any(s in path for s in ("LayerNorm", "layer_norm", "bias"))

    for google, var in names.items():
        is_norm_or_bias = google.endswith(("/gamma", "/beta", "bias"))
        assert excluded(var.path) == is_norm_or_bias, var.path
    assert sum(excluded(v.path) for v in model.weights) == sum(
        n.endswith(("/gamma", "/beta", "bias")) for n in names)


# --------------------------------------------------------------------------------------------------
# Heads and loss
# --------------------------------------------------------------------------------------------------
def test_masked_lm_head_only_at_masked_positions_and_tied():
    cfg = small_config()
    model = modeling.BertPretrainer(cfg)
    randomize(model, seed=5)
    f = features(batch=2, seq=12, preds=4)
    out = model(f)
    assert out["mlm_logits"].shape == (2, 4, cfg.vocab_size) and out["mlm_logits"].dtype == tf.float32
    assert out["nsp_logits"].shape == (2, 2) and out["nsp_logits"].dtype == tf.float32
    # Reference: transform every position with numpy, then pick the masked ones.
    head = model.masked_lm
    seq = out["sequence_output"].numpy()
    h = seq @ head.transform_dense.kernel.numpy() + head.transform_dense.bias.numpy()
    h = PLAIN.gelu(tf.constant(h)).numpy()
    mu, var = h.mean(-1, keepdims=True), h.var(-1, keepdims=True)
    h = (h - mu) / np.sqrt(var + 1e-12) * head.transform_layer_norm.gamma.numpy() + head.transform_layer_norm.beta.numpy()
    full = h @ model.bert.embeddings.word_embeddings.numpy().T + head.output_bias.numpy()
    picked = np.take_along_axis(full, f["masked_lm_positions"].numpy()[..., None], axis=1)
    np.testing.assert_allclose(out["mlm_logits"], picked, atol=1e-4)
    pooled = out["pooled_output"].numpy()
    nsp = pooled @ model.next_sentence.output_weights.numpy().T + model.next_sentence.output_bias.numpy()
    np.testing.assert_allclose(out["nsp_logits"], nsp, atol=1e-5)
    # Tied: the MLM output matrix is the very word-embedding variable, not a copy.
    assert not any("decoder" in v.path for v in model.weights)
    assert sum(tuple(v.shape) == (cfg.vocab_size, cfg.hidden_size) for v in model.weights) == 1


def test_pretraining_loss_matches_googles_formula():
    rng = np.random.RandomState(0)
    B, P, V = 3, 4, 11
    outputs = {"mlm_logits": tf.constant(rng.randn(B, P, V).astype(np.float32)),
               "nsp_logits": tf.constant(rng.randn(B, 2).astype(np.float32))}
    f = {"masked_lm_ids": rng.randint(0, V, size=(B, P)).astype(np.int32),
         "masked_lm_weights": np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], np.float32),
         "next_sentence_labels": np.array([[0], [1], [1]], np.int32)}
    loss, m = losses.pretraining_loss(outputs, f)
    logits = outputs["mlm_logits"].numpy()
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_probs, f["masked_lm_ids"][..., None], -1)[..., 0]
    w = f["masked_lm_weights"]
    mlm = (w * nll).sum() / (w.sum() + 1e-5)
    nlog = outputs["nsp_logits"].numpy()
    nlog = nlog - np.log(np.exp(nlog).sum(-1, keepdims=True))
    nsp = -np.take_along_axis(nlog, f["next_sentence_labels"], -1).mean()
    np.testing.assert_allclose(float(m["masked_lm_loss"]), mlm, rtol=1e-6)
    np.testing.assert_allclose(float(m["next_sentence_loss"]), nsp, rtol=1e-6)
    np.testing.assert_allclose(float(loss), mlm + nsp, rtol=1e-6)
    hits = (logits.argmax(-1) == f["masked_lm_ids"]).astype(np.float32)
    assert float(m["masked_lm_correct"]) == (w * hits).sum()
    assert float(m["masked_lm_weight_sum"]) == w.sum()
    np.testing.assert_allclose(float(m["masked_lm_loss_sum"]), (w * nll).sum(), rtol=1e-6)
    np.testing.assert_allclose(float(m["masked_lm_accuracy"]), (w * hits).sum() / w.sum(), rtol=1e-6)
    nsp_hits = (outputs["nsp_logits"].numpy().argmax(-1) == f["next_sentence_labels"][:, 0])
    assert float(m["next_sentence_correct"]) == nsp_hits.sum() and float(m["next_sentence_count"]) == 3


def test_classification_and_span_heads():
    cfg = small_config()
    clf = modeling.BertClassifier(cfg, num_labels=3)
    out = clf(features())
    assert out["logits"].shape == (2, 3) and out["logits"].dtype == tf.float32
    names = clf.checkpoint_variables()
    assert tuple(names["output_weights"].shape) == (3, 64) and "output_bias" in names
    loss = losses.classification_loss(out["logits"], tf.constant([0, 2]))
    assert loss.shape == () and np.isfinite(loss)
    reg = modeling.BertClassifier(cfg, num_labels=1)
    score = reg(features())["logits"]
    assert score.shape == (2, 1)
    np.testing.assert_allclose(losses.classification_loss(score, tf.constant([0.5, 1.0])),
                               np.mean((score.numpy()[:, 0] - [0.5, 1.0]) ** 2), rtol=1e-6)
    span = modeling.BertSpanLabeler(cfg)
    out = span(features(seq=10))
    assert out["start_logits"].shape == (2, 10) and out["end_logits"].shape == (2, 10)
    assert "cls/squad/output_weights" in span.checkpoint_variables()


# --------------------------------------------------------------------------------------------------
# Mixed precision
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("policy, half", [("mixed_float16", tf.float16), ("mixed_bfloat16", tf.bfloat16)])
def test_mixed_precision_keeps_layernorm_and_softmax_float32(policy, half):
    cfg = small_config()
    ref = modeling.BertPretrainer(cfg)
    randomize(ref, seed=7)
    mixed = modeling.BertPretrainer(cfg, dtype=policy)
    mixed.build()
    for name, var in mixed.checkpoint_variables().items():
        assert var.dtype == "float32", name
        var.assign(ref.checkpoint_variables()[name])
    f = features()
    out32, out16 = ref(f), mixed(f)
    assert out16["sequence_output"].dtype == half
    assert out16["mlm_logits"].dtype == tf.float32 and out16["nsp_logits"].dtype == tf.float32
    for key in ("sequence_output", "pooled_output", "mlm_logits", "nsp_logits"):
        a = tf.cast(out16[key], tf.float32).numpy()
        assert np.isfinite(a).all(), key
        tol = 0.05 if half == tf.float16 else 0.25
        assert np.abs(a - out32[key].numpy()).max() < tol, key
    loss, _ = losses.pretraining_loss(out16, f)
    assert loss.dtype == tf.float32 and np.isfinite(loss)
    # In the traced graph: softmax and LayerNorm's rsqrt in float32, the matmuls in half precision.
    fn = tf.function(lambda x: mixed(x, training=False))
    graph = fn.get_concrete_function({k: tf.TensorSpec(v.shape, v.dtype) for k, v in f.items()}).graph
    by_type: dict[str, set] = {}
    for op in graph.get_operations():
        if op.outputs:
            by_type.setdefault(op.type, set()).add(op.outputs[0].dtype)
    assert by_type["Softmax"] == {tf.float32}
    assert by_type["Rsqrt"] == {tf.float32}
    assert half in by_type.get("MatMul", set()) | by_type.get("BatchMatMulV2", set()) | by_type.get("Einsum", set())


def test_layer_norm_float32_under_half_inputs():
    # Values whose squares overflow float16 (300^2 > 65504): a float16 LayerNorm would give inf/nan.
    x = np.array([[300.0, -280.0, 250.0, 10.0]], np.float32)
    ln = modeling.LayerNorm(dtype="mixed_float16")
    y = ln(tf.constant(x, tf.float16))
    assert y.dtype == tf.float16 and ln.gamma.dtype == "float32"
    expected = (x - x.mean()) / np.sqrt(x.var() + 1e-12)
    np.testing.assert_allclose(tf.cast(y, tf.float32), expected, atol=2e-3)


@pytest.mark.parametrize("batch", [8, 17, 32, 64])
def test_head_logits_are_the_pooled_output_times_the_weights_for_every_row(batch):
    # Regression: tf.einsum("...h,nh->...n") under oneDNN on CPU (TF 2.18) gave wrong logits for every
    # row after the 16th of a [B, H] input, so fine-tuning with batch 32 learned from garbage for half
    # of each batch (dev accuracy 0.65 vs 0.84). Checked eagerly and inside a tf.function, as training runs.
    cfg = small_config()
    clf = modeling.BertClassifier(cfg, num_labels=2)
    clf(features())
    randomize(clf, seed=1)
    feats = features(batch=batch, seq=12, seed=3)
    w = clf.classifier.output_weights.numpy()
    b = clf.classifier.output_bias.numpy()
    for run in (lambda f: clf(f, training=False), tf.function(lambda f: clf(f, training=False))):
        out = run(feats)
        expected = out["pooled_output"].numpy().astype(np.float64) @ w.T.astype(np.float64) + b
        np.testing.assert_allclose(out["logits"].numpy(), expected, rtol=1e-4, atol=1e-5)
    span = modeling.BertSpanLabeler(cfg)
    span(features())
    randomize(span, seed=2)
    out = span(feats)
    expected = out["sequence_output"].numpy().astype(np.float64) @ span.span.output_weights.numpy().T.astype(
        np.float64) + span.span.output_bias.numpy()
    np.testing.assert_allclose(out["start_logits"].numpy(), expected[..., 0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["end_logits"].numpy(), expected[..., 1], rtol=1e-4, atol=1e-5)
