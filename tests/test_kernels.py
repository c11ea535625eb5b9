"""The fused CPU kernels (bert_core/kernels) and the cpu_fused ops backend built on them: same values
and gradients as the plain ops they replace, dropout's statistics and determinism, and the fallback
when they cannot be built. (What holds on every host, GPU or not, is in tests/test_ops.py.)"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from bert_core import kernels, modeling
from bert_core.config import BertConfig
from bert_core.ops import PLAIN
from tests.tiny_bert import ROOT, tiny_config


NO_GPU = pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")),
                            reason="the fused kernels are CPU-only: for_training picks plain when a GPU is visible")


@pytest.fixture(scope="module")
def lib(cpu_fused):
    return cpu_fused


def _value_and_grad(fn, *xs, dy=None):
    xs = [tf.constant(x) for x in xs]
    with tf.GradientTape() as tape:
        for x in xs:
            tape.watch(x)
        y = fn(*xs)
    dy = tf.constant(np.random.default_rng(1).normal(size=y.shape).astype(np.float32)) if dy is None else dy
    return y.numpy(), [g.numpy() for g in tape.gradient(y, xs, output_gradients=dy)]


def _op_types(fn, *xs) -> set[str]:
    graph = tf.function(fn).get_concrete_function(*(tf.constant(x) for x in xs)).graph
    return {op.type for op in graph.get_operations()}


def test_gelu_matches_tf_value_and_gradient(lib):
    x = np.random.default_rng(0).normal(scale=3.0, size=(7, 33, 129)).astype(np.float32)
    x[0, 0, :5] = [0.0, -12.0, 12.0, 1e-8, -1e-8]
    ref_y, (ref_dx,) = _value_and_grad(PLAIN.gelu, x)
    y, (dx,) = _value_and_grad(lib.gelu, x)
    assert "BertGelu" in _op_types(lib.gelu, x) and "BertGelu" not in _op_types(PLAIN.gelu, x)
    np.testing.assert_allclose(y, ref_y, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-5, atol=1e-6)


def test_bias_gelu_matches_tf_value_and_gradients(lib):
    rng = np.random.default_rng(8)
    x = rng.normal(scale=2.0, size=(129, 37)).astype(np.float32)
    bias = rng.normal(size=(37,)).astype(np.float32)
    want, want_grads = _value_and_grad(lambda x, b: PLAIN.gelu(x + b), x, bias)
    got, grads = _value_and_grad(kernels.bias_gelu, x, bias)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    for g, w in zip(grads, want_grads):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="bias"):
        kernels.bias_gelu(tf.zeros([2, 8]), tf.zeros([7]))


@pytest.mark.parametrize("shape", [(4, 3, 384), (17, 256), (5, 2, 7, 30)])
def test_layer_norm_matches_tf_value_and_gradients(lib, shape):
    rng = np.random.default_rng(2)
    x = (rng.normal(size=shape) * 4 + 3).astype(np.float32)
    gamma = rng.normal(size=shape[-1:]).astype(np.float32)
    beta = rng.normal(size=shape[-1:]).astype(np.float32)

    ref_y, ref_grads = _value_and_grad(lambda x, g, b: PLAIN.layer_norm(x, g, b, 1e-12), x, gamma, beta)
    y, grads = _value_and_grad(lambda x, g, b: lib.layer_norm(x, g, b, 1e-12), x, gamma, beta)
    np.testing.assert_allclose(y, ref_y, rtol=1e-5, atol=2e-5)
    for got, want in zip(grads, ref_grads):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_layer_norm_rejects_mismatched_gamma(lib):
    with pytest.raises(tf.errors.InvalidArgumentError, match="gamma"):
        kernels.layer_norm(tf.zeros([2, 8]), tf.ones([7]), tf.zeros([7]), 1e-12)


def test_sparse_cross_entropy_matches_tf_value_and_gradient(lib):
    rng = np.random.default_rng(6)
    logits = (rng.normal(size=(37, 3001)) * 4).astype(np.float32)
    logits[0, 5] = 200.0  # a hopeless row: the label's probability underflows, the loss must not
    labels = rng.integers(0, 3001, 37).astype(np.int32)
    labels[0] = 6

    logits[1, 7] = logits[1, 9] = 100.0  # a tie: the first maximum is the prediction, as tf.argmax
    want, (want_dx,) = _value_and_grad(lambda x: PLAIN.cross_entropy_with_argmax(x, labels)[0], logits)
    got, (dx,) = _value_and_grad(lambda x: lib.cross_entropy_with_argmax(x, labels)[0], logits)
    _, prediction = lib.cross_entropy_with_argmax(tf.constant(logits), labels)
    np.testing.assert_array_equal(prediction.numpy(), PLAIN.cross_entropy_with_argmax(logits, labels)[1].numpy())
    np.testing.assert_array_equal(prediction.numpy(), np.argmax(logits, axis=-1))
    assert prediction.numpy()[1] == 7
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.isclose(got[0], 200.0 - logits[0, 6], rtol=1e-6)
    np.testing.assert_allclose(dx, want_dx, rtol=1e-4, atol=1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError, match="outside"):
        kernels.sparse_cross_entropy(tf.zeros([2, 4]), tf.constant([1, 4]))


def test_dropout_statistics_scale_and_gradient(lib):
    rate, n = 0.1, 1 << 20
    x = tf.constant(np.random.default_rng(3).uniform(1.0, 2.0, size=(n // 256, 256)).astype(np.float32))
    seed = tf.constant([7, 11], tf.int64)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = kernels.dropout(x, rate, seed)
    dy = tf.ones_like(x) * 3.0
    dx = tape.gradient(y, x, output_gradients=dy).numpy()
    y, x = y.numpy(), x.numpy()
    kept = y != 0
    scale = 65536 / (65536 - kernels.dropout_threshold(rate))
    dropped = 1 - kept.mean()
    assert abs(dropped - rate) < 5 * math.sqrt(rate * (1 - rate) / n), dropped
    np.testing.assert_allclose(y[kept], x[kept] * np.float32(scale), rtol=1e-7)
    np.testing.assert_array_equal(dx, np.where(kept, np.float32(3.0) * np.float32(scale), 0).astype(np.float32))
    # Neighbouring elements and rows are independent (no repeated 16-bit halves or blocks).
    flat = kept.ravel()
    both = (flat[:-1] & flat[1:]).mean()
    assert abs(both - (1 - rate) ** 2) < 0.005
    assert not np.array_equal(kept[0], kept[1])


def test_dropout_mask_does_not_depend_on_size_or_threads(lib):
    """Element i always uses the same 16 random bits: a prefix of a tensor gets the prefix of its
    mask (how the work is cut into shards and tiles must not matter)."""
    x = tf.ones([200_003])
    seed = tf.constant([9, 1], tf.int64)
    full = kernels.dropout(x, 0.5, seed).numpy()
    for k in (1, 7, 63, 65, 1000, 99_999):
        np.testing.assert_array_equal(kernels.dropout(x[:k], 0.5, seed).numpy(), full[:k])


def _philox4x32_10(counters: np.ndarray, key: tuple[int, int]) -> np.ndarray:
    """NumPy Philox4x32-10 (Salmon et al. 2011, as tensorflow::random::PhiloxRandom): [n, 4] uint32."""
    c = [counters[:, j].astype(np.uint64) for j in range(4)]
    k0, k1 = key
    for _ in range(10):
        p0, p1 = np.uint64(0xD2511F53) * c[0], np.uint64(0xCD9E8D57) * c[2]
        c = [(p1 >> np.uint64(32)) ^ c[1] ^ np.uint64(k0), p1 & np.uint64(0xFFFFFFFF),
             (p0 >> np.uint64(32)) ^ c[3] ^ np.uint64(k1), p0 & np.uint64(0xFFFFFFFF)]
        k0, k1 = (k0 + 0x9E3779B9) & 0xFFFFFFFF, (k1 + 0xBB67AE85) & 0xFFFFFFFF
    return np.stack(c, axis=1).astype(np.uint32)


def test_dropout_mask_is_philox_as_documented(lib):
    """Element 64 t + 16 j + 8 h + d is kept iff half h of word j of Philox4x32-10 draw 8 t + d
    (key = seed[0], counter = [draw, 0, seed[1] as two words]) is >= the 16-bit threshold."""
    seed = (0x0123456789ABCDEF, 0x7EDCBA9876543210)
    n, rate = 1000, 0.3
    kept = kernels.dropout(tf.ones([n]), rate, tf.constant(seed, tf.int64)).numpy() != 0
    e = np.arange(n)
    draw, j, h = 8 * (e // 64) + e % 8, (e % 64) // 16, (e % 16) // 8
    draws = np.arange(draw.max() + 1)
    counters = np.stack([draws, np.zeros_like(draws), np.full_like(draws, seed[1] & 0xFFFFFFFF),
                         np.full_like(draws, seed[1] >> 32)], axis=1).astype(np.uint32)
    words = _philox4x32_10(counters, (seed[0] & 0xFFFFFFFF, seed[0] >> 32))
    bits = (words[draw, j] >> (16 * h).astype(np.uint32)) & 0xFFFF
    np.testing.assert_array_equal(kept, bits >= kernels.dropout_threshold(rate))


def test_dropout_gradient_is_zero_where_dropped_even_for_nonfinite_dy(lib):
    x = tf.ones([4096])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = kernels.dropout(x, 0.5, tf.constant([5, 6], tf.int64))
    dx = tape.gradient(y, x, output_gradients=tf.fill([4096], float("inf"))).numpy()
    dropped = y.numpy() == 0
    assert dropped.any() and (dx[dropped] == 0).all() and np.isinf(dx[~dropped]).all()


def test_dropout_depends_on_seed_only(lib):
    x = tf.ones([64, 130])
    a = kernels.dropout(x, 0.3, tf.constant([1, 2], tf.int64)).numpy()
    b = kernels.dropout(x, 0.3, tf.constant([1, 2], tf.int64)).numpy()
    c = kernels.dropout(x, 0.3, tf.constant([1, 3], tf.int64)).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert kernels.dropout(x, 0.0, tf.constant([1, 2], tf.int64)) is x
    assert float(tf.reduce_max(kernels.dropout(x, 1.0, tf.constant([1, 2], tf.int64)))) == 0.0


@pytest.mark.parametrize("rate", [0.0, 0.1])
def test_softmax_dropout_gradient_matches_tf(lib, rate):
    """dropout(softmax(x)) over the last axis: the fused backward equals TF's autodiff of softmax
    times the same mask (read off the output: softmax is never exactly 0 here)."""
    rng = np.random.default_rng(5)
    x = tf.constant(rng.normal(scale=3.0, size=(2, 3, 17, 130)).astype(np.float32))
    dq = tf.constant(rng.normal(size=x.shape).astype(np.float32))
    seed = tf.constant([3, 4], tf.int64) if rate else None
    with tf.GradientTape() as tape:
        tape.watch(x)
        q = kernels.softmax_dropout(x, rate, seed)
    dx = tape.gradient(q, x, output_gradients=dq).numpy()
    scale = 65536 / (65536 - kernels.dropout_threshold(rate))
    kept = (q.numpy() != 0).astype(np.float32) * np.float32(scale)
    if not rate:
        assert kept.min() == 1.0
    with tf.GradientTape() as tape:
        tape.watch(x)
        ref = tf.nn.softmax(x, axis=-1) * kept
    np.testing.assert_allclose(q.numpy(), ref.numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dx, tape.gradient(ref, x, output_gradients=dq).numpy(), rtol=1e-4, atol=1e-6)
    if rate:
        assert 0.05 < 1 - (q.numpy() != 0).mean() < 0.15


def test_dropout_layer_uses_the_kernel_only_when_training_under_cpu_fused(lib):
    layer = modeling.DropoutLayer(0.5, seed=3)
    x = tf.ones([8, 64])

    def graph_ops(ops, training):
        fn = tf.function(lambda t: layer(t, training=training, ops=ops))
        return {op.type for op in fn.get_concrete_function(x).graph.get_operations()}

    assert "BertDropout" in graph_ops(lib, True)
    assert "BertDropout" not in graph_ops(lib, False)
    assert "BertDropout" not in graph_ops(PLAIN, True)
    y1, y2 = layer(x, training=True, ops=lib).numpy(), layer(x, training=True, ops=lib).numpy()
    assert not np.array_equal(y1, y2)  # the seed generator advances, as keras.layers.Dropout's


@pytest.mark.parametrize("transpose_kernel", [False, True])
def test_dense_matches_tf_value_and_gradients(lib, transpose_kernel):
    """(Also eagerly on Keras variables, as a layer in a training step calls it.)"""
    rng = np.random.default_rng(5)
    x, w, b = (rng.normal(size=s).astype(np.float32)
               for s in ((37, 64), (24, 64) if transpose_kernel else (64, 24), (24,)))
    ref_y, ref_grads = _value_and_grad(
        lambda x, w, b: tf.nn.bias_add(tf.matmul(x, w, transpose_b=transpose_kernel), b), x, w, b)
    y, grads = _value_and_grad(lambda x, w, b: lib.dense(x, w, b, transpose_kernel=transpose_kernel), x, w, b)
    np.testing.assert_allclose(y, ref_y, rtol=1e-5, atol=1e-5)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-4)
    layer = modeling.DenseLayer(24, BertConfig(**tiny_config()), name="eager_dense")  # eagerly, on Keras variables
    layer.build((None, 64))
    with tf.GradientTape() as tape:
        y = layer(tf.constant(x), ops=lib)
    assert all(g is not None for g in tape.gradient(y, layer.trainable_variables))


def _adamw_problem(seed: int):
    """Variables (one excluded from weight decay by its name) and 3 steps of gradients, norms ~2-8."""
    import keras

    rng = np.random.default_rng(seed)
    shapes = {"kernel": (300, 17), "bias": (17,), "embeddings": (1000, 8)}
    init = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    grads = [[rng.normal(scale=0.05 * (step + 1), size=s).astype(np.float32) for s in shapes.values()]
             for step in range(3)]
    return (lambda: [keras.Variable(init[k], name=k) for k in shapes]), grads


def _kernel_moment_scale(beta: float) -> float:
    """Google's moment / the AdamW kernel's moment: float32(1 - b) / (1 - float32(b)) (cpu_fused.py)."""
    return float(np.float32(1.0 - beta)) / (1.0 - float(np.float32(beta)))


@pytest.mark.parametrize("kind", ["adam", "lamb"])
def test_clipping_by_the_optimizer_equals_clipping_before_it(lib, kind):
    """The loop's clipping folded into the update (the AdamW kernel for adam, a multiply for lamb)
    == tf.clip_by_global_norm and then the plain update, over several steps; the kernel's moments are
    Google's up to the constant factor cpu_fused.apply_adamw documents."""
    from bert_core import optimization

    make, grads = _adamw_problem(6)
    results = []
    for fused in (False, True):
        variables = make()
        opt = optimization.create_optimizer(kind, 1e-2, num_train_steps=10, num_warmup_steps=0)
        opt.build(variables)
        for step_grads in grads:
            g = [tf.constant(x) for x in step_grads]
            norm = tf.linalg.global_norm(g)
            if fused:
                opt.ops = lib
                with opt.gradient_factor(optimization.clip_factor(norm, 1.0)):
                    opt.apply(g, variables)
            else:
                opt.apply(tf.clip_by_global_norm(g, 1.0, use_norm=norm)[0], variables)
        m_scale, v_scale = (_kernel_moment_scale(b) if fused and kind == "adam" else 1.0 for b in (0.9, 0.999))
        results.append([v.numpy() for v in variables] + [m.numpy() * m_scale for m in opt._m]
                       + [v.numpy() * v_scale for v in opt._v])
    for a, b in zip(*results):  # to rounding (the kernel may fuse multiply-adds), at each array's scale
        np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-5 * np.abs(b).max())
    assert not np.allclose(results[0][0], make()[0].numpy())  # the weights did move


def _pretraining_batch(seed: int) -> dict:
    """4 sequences of 16 tokens (vocab 200), 3 masked positions each."""
    rng = np.random.default_rng(seed)
    return {"input_ids": rng.integers(0, 200, (4, 16)).astype(np.int32), "input_mask": np.ones((4, 16), np.int32),
            "segment_ids": np.zeros((4, 16), np.int32),
            "masked_lm_positions": np.tile(np.arange(1, 4, dtype=np.int32), (4, 1)),
            "masked_lm_ids": rng.integers(0, 200, (4, 3)).astype(np.int32),
            "masked_lm_weights": np.ones((4, 3), np.float32), "next_sentence_labels": np.zeros((4, 1), np.int32)}


@pytest.mark.parametrize("accumulation", [1, 2])
def test_trainer_clips_inside_the_adamw_kernel(lib, tmp_path, accumulation):
    """The Trainer with `adam` (clipping handed to BertApplyAdamW) ends where tape gradients,
    tf.clip_by_global_norm and TF's update (ResourceApplyAdam) outside a training step end."""
    import keras

    from bert_core import training
    from bert_core.optimization import create_optimizer
    from bert_core.pretrain import pretraining_loss_fn

    config = BertConfig(**tiny_config(vocab_size=200))  # no dropout: both sides see the same model
    batch = _pretraining_batch(9)
    clip, steps = 0.05, 2

    keras.utils.set_random_seed(0)
    model = modeling.BertPretrainer(config)
    cfg = training.TrainLoopConfig(output_dir=str(tmp_path / "run"), num_train_steps=steps, clip_norm=clip,
                                   num_accumulation_steps=accumulation, summaries=False, log_every_steps=100)
    trainer = training.Trainer(model, pretraining_loss_fn, create_optimizer("adam", 1e-2, steps, 0), cfg,
                               log=lambda line: None)
    trainer.train(tf.data.Dataset.from_tensors(batch).repeat())
    update = trainer._step_fn if accumulation == 1 else trainer._apply_fn
    graphs = [f.graph for f in update._list_all_concrete_functions_for_serialization()]
    assert any(op.type == "BertApplyAdamW" for g in graphs for op in g.get_operations())

    keras.utils.set_random_seed(0)
    ref = modeling.BertPretrainer(config)
    ref.build()
    opt = create_optimizer("adam", 1e-2, steps, 0)
    opt.build(ref.trainable_variables)
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss, _ = pretraining_loss_fn(ref(batch, training=True), batch, PLAIN)
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, ref.trainable_variables)]
        norm = tf.linalg.global_norm(grads)
        assert float(norm) > 2 * clip  # clipping matters
        opt.apply(tf.clip_by_global_norm(grads, clip, use_norm=norm)[0], ref.trainable_variables)
    for a, b in zip(model.trainable_variables, ref.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=2e-6, err_msg=a.path)


def test_adamw_kernel_in_place_keeps_earlier_reads(lib):
    """An update in place must not change a tensor read from the variable before it (copy on write)."""
    make, grads = _adamw_problem(7)
    var, m, v = make()[0], make()[0], make()[0]
    m.assign(tf.zeros_like(m))
    v.assign(tf.zeros_like(v))
    before = tf.convert_to_tensor(var)
    kept = before.numpy().copy()
    kernels.apply_adamw(var.value.handle, m.value.handle, v.value.handle, tf.constant(grads[0][0]),
                        tf.constant(1.0), tf.constant(1e-2), tf.constant(1e-4), beta1=0.9, beta2=0.999,
                        epsilon=1e-6)
    np.testing.assert_array_equal(before.numpy(), kept)
    assert not np.array_equal(var.numpy(), kept)


def test_adamw_kernel_rejects_mismatched_gradient(lib):
    make, _ = _adamw_problem(8)
    var = make()[0]
    with pytest.raises(tf.errors.InvalidArgumentError, match="shapes differ"):
        kernels.apply_adamw(var.value.handle, var.value.handle, var.value.handle, tf.zeros([3]),
                            tf.constant(1.0), tf.constant(1e-2), tf.constant(0.0), beta1=0.9, beta2=0.999,
                            epsilon=1e-6)


def _probe(env: dict) -> subprocess.CompletedProcess:
    code = "from bert_core import ops; print(ops.for_training(xla=False)[1])"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env}, timeout=300)


def test_disabled_by_environment():
    proc = _probe({"BERT_FUSED_KERNELS": "0"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ops: plain (BERT_FUSED_KERNELS=0)"


def test_xla_training_step_never_traces_the_custom_ops(lib, tmp_path, monkeypatch):
    """Custom ops have no XLA lowering: a Trainer with xla=True must run on TF ops (it would fail
    to compile otherwise), and the same step without XLA uses the kernels. With xla on CPU the
    Trainer also asks for XLA's older CPU runtime (and says so)."""
    import keras

    from bert_core import training
    from bert_core.optimization import create_optimizer
    from bert_core.pretrain import pretraining_loss_fn

    config = BertConfig(**tiny_config(vocab_size=200, hidden_dropout_prob=0.1))
    batch = _pretraining_batch(7)
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
    for xla in (True, False):
        keras.utils.set_random_seed(0)
        model = modeling.BertPretrainer(config)
        cfg = training.TrainLoopConfig(output_dir=str(tmp_path / f"xla{xla}"), num_train_steps=2, xla=xla,
                                       summaries=False, log_every_steps=100)
        lines: list[str] = []
        trainer = training.Trainer(model, pretraining_loss_fn, create_optimizer("adam", 1e-3, 2, 1), cfg,
                                   log=lines.append)
        result = trainer.train(tf.data.Dataset.from_tensors(batch).repeat())
        assert any("xla_cpu_use_thunk_runtime=false" in line for line in lines) == xla
        ops_lines = [line for line in lines if line.startswith("ops: ")]
        assert ops_lines == (["ops: plain (--xla: the fused CPU kernels have no XLA lowering)"] if xla
                             else ["ops: cpu_fused (BERT_FUSED_KERNELS=0 for plain)"]), lines
        assert os.environ["XLA_FLAGS"] == "--xla_cpu_enable_fast_math=false --xla_cpu_use_thunk_runtime=false"
        assert result.global_step == 2 and np.isfinite(result.loss)
        graph = trainer._step_fn.get_concrete_function(batch).graph
        used = {op.type for op in graph.get_operations()}
        assert any(t.startswith("Bert") for t in used) == (not xla), sorted(t for t in used if t.startswith("Bert"))


@NO_GPU
def test_xla_cpu_runtime_is_left_alone_when_the_user_chose_one(monkeypatch):
    from bert_core import training

    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_use_thunk_runtime=true")
    assert training.prefer_legacy_xla_cpu_runtime() is None
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_use_thunk_runtime=true"
    monkeypatch.delenv("XLA_FLAGS")
    assert training.prefer_legacy_xla_cpu_runtime() is not None
    assert os.environ["XLA_FLAGS"] == training.XLA_CPU_RUNTIME_FLAG


@NO_GPU
def test_no_compiler_falls_back_with_one_line(tmp_path):
    proc = _probe({"CXX": str(tmp_path / "no-such-g++"), "BERT_KERNEL_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip()
    assert line.startswith("ops: plain (fused CPU kernels unavailable: no C++ compiler"), line
    assert "\n" not in line and "Traceback" not in proc.stderr


def test_module_entry_point_builds_loads_and_prints_the_library(lib):
    proc = subprocess.run([sys.executable, "-m", "bert_core.kernels"], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    path = proc.stdout.strip().splitlines()[-1]
    assert path == str(kernels.library_path()) and os.path.exists(path)


def test_kernel_source_ships_with_the_package():
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert any(kernels.SOURCE.match(pattern) for pattern in data["bert_core"])
