"""Optimization: each optimizer against a NumPy transcription of its published rule, the schedule against
Google's formula, the clipping factor, XLA, checkpoint restore and mixed precision; `adam` on both
backends of the ops seam (bert_core.ops)."""

from __future__ import annotations

import numpy as np
import pytest

import keras
import tensorflow as tf

from bert_core import optimization as opt_mod
from bert_core.errors import UserError
from bert_core.optimization import WarmupPolynomialDecay, clip_factor, create_optimizer

TYPES = ["adam", "lamb", "nadam", "nlamb"]


# --------------------------------------------------------------------------------------------------
# References, written from the papers / Google's optimization.py, in float64 NumPy
# --------------------------------------------------------------------------------------------------
def google_lr(step, peak, total, warmup, end=0.0, power=1.0):
    """tf.train.polynomial_decay(peak, step, total, end, power) overridden by linear warmup."""
    s = min(step, total)
    decayed = (peak - end) * (1.0 - s / total) ** power + end
    if warmup and step < warmup:
        return peak * step / warmup
    return decayed


def reference_run(kind, w0, grads_per_step, lrs, decay_mask, wd, b1=0.9, b2=0.999, eps=1e-6):
    """Runs the published update for `kind` on dict name -> array; returns the final weights."""
    w = {k: v.astype(np.float64).copy() for k, v in w0.items()}
    m = {k: np.zeros_like(v) for k, v in w.items()}
    v_ = {k: np.zeros_like(v) for k, v in w.items()}
    for t, (grads, lr) in enumerate(zip(grads_per_step, lrs), start=1):
        for k in w:
            g = grads[k].astype(np.float64)
            m[k] = b1 * m[k] + (1 - b1) * g
            v_[k] = b2 * v_[k] + (1 - b2) * g * g
            if kind == "adam":      # Google's AdamWeightDecayOptimizer: no bias correction
                mh, vh = m[k], v_[k]
            elif kind == "lamb":    # You et al. 2019, Algorithm 2
                mh, vh = m[k] / (1 - b1 ** t), v_[k] / (1 - b2 ** t)
            else:                   # Dozat 2016 Algorithm 2 with mu_t = b1 (NAdam; LAMB paper's N-LAMB)
                mh = b1 * m[k] / (1 - b1 ** (t + 1)) + (1 - b1) * g / (1 - b1 ** t)
                vh = v_[k] / (1 - b2 ** t)
            r = mh / (np.sqrt(vh) + eps)
            if decay_mask[k]:
                r = r + wd * w[k]
            if kind in ("lamb", "nlamb") and decay_mask[k]:
                wn, rn = np.linalg.norm(w[k]), np.linalg.norm(r)
                r = r * (wn / rn if wn > 0 and rn > 0 else 1.0)
            w[k] = w[k] - lr * r
    return w


class Block(keras.layers.Layer):
    """A dense-like layer whose variables are `<name>/kernel` and `<name>/bias`."""

    def __init__(self, units, kernel_init="glorot_uniform", **kw):
        super().__init__(**kw)
        self.units, self.kernel_init = units, kernel_init

    def build(self, shape):
        self.kernel = self.add_weight(shape=(shape[-1], self.units), name="kernel",
                                      initializer=self.kernel_init)
        self.bias = self.add_weight(shape=(self.units,), name="bias", initializer="random_normal")

    def call(self, x):
        return x @ self.kernel + self.bias


class GoogleLayerNorm(keras.layers.Layer):
    """Variables `LayerNorm/gamma`, `LayerNorm/beta` as Google's checkpoints name them."""

    def build(self, shape):
        self.gamma = self.add_weight(shape=(shape[-1],), name="gamma", initializer="ones")
        self.beta = self.add_weight(shape=(shape[-1],), name="beta", initializer="zeros")

    def call(self, x):
        return x * self.gamma + self.beta


def named_variables():
    """kernel (decayed), bias and LayerNorm gamma/beta (excluded), an all-zero kernel (||w|| = 0)."""
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((4,)), Block(3, name="dense"),
                              GoogleLayerNorm(name="LayerNorm"),
                              Block(2, kernel_init="zeros", name="output")], name="bert")
    variables = model.trainable_variables
    paths = [v.path for v in variables]
    assert paths == ["bert/dense/kernel", "bert/dense/bias", "bert/LayerNorm/gamma", "bert/LayerNorm/beta",
                     "bert/output/kernel", "bert/output/bias"], paths
    for v in variables:  # non-trivial starting values (except the zero kernel)
        if v.path != "bert/output/kernel":
            v.assign(v.numpy() + np.random.default_rng(hash(v.path) % 1000).normal(0, 0.5, v.shape))
    return model, variables


@pytest.mark.parametrize("kind", TYPES)
def test_update_matches_published_rule(kind):
    model, variables = named_variables()
    peak, total, warmup, wd = 0.05, 12, 4, 0.1
    steps = 9  # warmup (0..3), the step at the end of warmup, and decay
    rng = np.random.default_rng(7)
    grads = [{v.path: rng.normal(0, 1, v.shape).astype(np.float32) * (10.0 ** rng.integers(-2, 2))
              for v in variables} for _ in range(steps)]
    for g in grads[:2]:  # a zero gradient for the zero kernel: ||r|| = 0 in LAMB at step 1
        g["bert/output/kernel"][:] = 0.0
    w0 = {v.path: v.numpy() for v in variables}

    opt = create_optimizer(kind, peak, total, warmup, weight_decay_rate=wd)
    for g in grads:
        opt.apply([tf.constant(g[v.path]) for v in variables], variables)
    assert int(opt.iterations) == steps

    decay_mask = {p: p.endswith("kernel") for p in w0}
    assert {v.path: opt.uses_weight_decay(v) for v in variables} == decay_mask
    lrs = [google_lr(s, peak, total, warmup) for s in range(steps)]
    ref = reference_run(kind, w0, grads, lrs, decay_mask, wd)
    for v in variables:
        np.testing.assert_allclose(v.numpy(), ref[v.path], atol=1e-6, rtol=0, err_msg=f"{kind} {v.path}")
        assert not np.allclose(v.numpy(), w0[v.path], atol=1e-4), f"{v.path} did not move"

    # The rule is what makes it pass: the other types differ from this one's reference.
    for other in TYPES:
        if other != kind:
            alt = reference_run(other, w0, grads, lrs, decay_mask, wd)
            assert max(np.abs(alt[p] - ref[p]).max() for p in ref) > 1e-4, (kind, other)


def test_exclusions_match_path_not_name():
    opt = create_optimizer("lamb", 1e-3, 10, 1)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="dense"),
                              keras.layers.LayerNormalization(name="layer_normalization"),
                              GoogleLayerNorm(name="LayerNorm"), keras.layers.Dense(2, use_bias=False, name="dense_1")])
    got = {v.path.split("/", 1)[1]: (opt.uses_weight_decay(v), opt.uses_layer_adaptation(v))
           for v in model.trainable_variables}
    assert got == {"dense/kernel": (True, True), "dense/bias": (False, False),
                   "layer_normalization/gamma": (False, False), "layer_normalization/beta": (False, False),
                   "LayerNorm/gamma": (False, False), "LayerNorm/beta": (False, False),
                   "dense_1/kernel": (True, True)}
    adam = create_optimizer("adam", 1e-3, 10, 1)
    assert not adam.uses_layer_adaptation(model.trainable_variables[0])
    assert not create_optimizer("adam", 1e-3, 10, 1, weight_decay_rate=0.0).uses_weight_decay(
        model.trainable_variables[0])


# --------------------------------------------------------------------------------------------------
# Schedule
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("peak,total,warmup,end,power", [
    (1e-4, 1000, 100, 0.0, 1.0), (5e-3, 7, 3, 0.0, 1.0), (1e-3, 500, 0, 0.0, 1.0),
    (2e-3, 300, 30, 1e-5, 2.0), (1e-4, 100, 100, 0.0, 0.5)])
def test_schedule_matches_google(peak, total, warmup, end, power):
    sched = WarmupPolynomialDecay(peak, total, warmup, end_learning_rate=end, power=power)
    steps = sorted(set(range(0, total + 20, max(1, total // 97))) | {0, 1, warmup - 1, warmup, warmup + 1,
                                                                      total - 1, total, total + 5})
    steps = [s for s in steps if s >= 0]
    step_var = tf.Variable(0, dtype=tf.int64)
    fn = tf.function(lambda: sched(step_var))
    for s in steps:
        step_var.assign(s)
        want = google_lr(s, peak, total, warmup, end, power)
        np.testing.assert_allclose(float(sched(s)), want, rtol=1e-6, atol=1e-12, err_msg=f"step {s}")
        np.testing.assert_allclose(float(fn()), want, rtol=1e-6, atol=1e-12, err_msg=f"step {s} (variable)")
    if warmup:
        # Google's quirk kept: the warmup ends at the decayed value, not the peak.
        np.testing.assert_allclose(float(sched(warmup)), peak * (1 - warmup / total) ** power
                                   if end == 0 else google_lr(warmup, peak, total, warmup, end, power), rtol=1e-6)
        np.testing.assert_allclose(float(sched(warmup - 1)), peak * (warmup - 1) / warmup, rtol=1e-6)
    assert float(sched(total + 100)) == pytest.approx(end, abs=1e-12)


def test_schedule_serializes():
    sched = WarmupPolynomialDecay(3e-4, 1000, 10, end_learning_rate=1e-6, power=2.0)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(sched))
    assert isinstance(again, WarmupPolynomialDecay) and again.get_config() == sched.get_config()
    opt = create_optimizer("nlamb", 3e-4, 1000, 10)
    opt2 = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(opt))
    assert type(opt2) is type(opt)
    assert opt2.get_config()["exclude_from_weight_decay"] == ["LayerNorm", "layer_norm", "bias"]
    assert float(opt2.learning_rate) == float(opt.learning_rate)


def test_bad_values_are_user_errors():
    with pytest.raises(UserError, match="--optimizer_type: unknown optimizer 'sgd'; expected one of "
                                        "adam, lamb, nadam, nlamb"):
        create_optimizer("sgd", 1e-3, 10, 1)
    with pytest.raises(UserError, match="--num_train_steps"):
        create_optimizer("adam", 1e-3, 0, 0)
    with pytest.raises(UserError, match="--num_warmup_steps"):
        create_optimizer("adam", 1e-3, 10, -1)
    assert opt_mod.OPTIMIZER_TYPES == ("adam", "lamb", "nadam", "nlamb")
    assert isinstance(create_optimizer("LAMB", 1e-3, 10, 1), opt_mod.LAMB)


# --------------------------------------------------------------------------------------------------
# Clipping
# --------------------------------------------------------------------------------------------------
def clip_gradients(grads, clip_norm):
    """The loop's clipping as Google's run_pretraining.py: tf.clip_by_global_norm."""
    return tf.clip_by_global_norm(grads, clip_norm)


@pytest.mark.parametrize("norm", [13.0, 0.05, 0.0, float("inf"), float("nan")])
def test_clip_factor_is_the_factor_of_clip_by_global_norm(norm):
    """The optimizer's gradient_factor(clip_factor(norm, c)) multiplies each gradient as
    tf.clip_by_global_norm(grads, c, use_norm=norm) does, in the same float32 ops (NaN when the
    norm is not finite, so a LossScaleOptimizer skips the step)."""
    g = tf.constant([3.0, -4.0, 0.5])
    (want,), _ = tf.clip_by_global_norm([g], 1.0, use_norm=tf.constant(norm))
    got = g * clip_factor(tf.constant(norm), 1.0)
    np.testing.assert_array_equal(got.numpy(), want.numpy())


# --------------------------------------------------------------------------------------------------
# XLA, checkpoints, mixed precision
# --------------------------------------------------------------------------------------------------
def small_model(seed=3):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="tanh"),
                             keras.layers.LayerNormalization(), keras.layers.Dense(3)])


def data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return (tf.constant(rng.normal(size=(n, 6)).astype(np.float32)),
            tf.constant(rng.normal(size=(n, 3)).astype(np.float32)))


def mse(model, x, y):
    return tf.reduce_mean(tf.square(model(x) - y))


def make_step(model, opt, x, y, jit):
    @tf.function(jit_compile=jit)
    def step():
        with tf.GradientTape() as tape:
            loss = mse(model, x, y)
        grads, norm = clip_gradients(tape.gradient(loss, model.trainable_variables), 1.0)
        opt.apply(grads, model.trainable_variables)
        return loss, norm
    return step


@pytest.mark.parametrize("kind", TYPES)
def test_xla_equals_eager(kind):
    x, y = data(16)
    results = []
    for jit in (False, True):
        model = small_model()
        opt = create_optimizer(kind, 1e-2, 10, 2)
        opt.build(model.trainable_variables)
        step = make_step(model, opt, x, y, jit)
        losses = [float(step()[0]) for _ in range(5)]
        assert all(np.isfinite(losses))
        results.append([v.numpy() for v in model.trainable_variables])
    for a, b in zip(*results):
        np.testing.assert_allclose(b, a, atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", ["adam", "nlamb"])
def test_checkpoint_restores_slots(kind, tmp_path):
    x, y = data(16)
    model = small_model()
    opt = create_optimizer(kind, 1e-2, 20, 3)
    step = make_step(model, opt, x, y, False)
    for _ in range(4):
        step()
    path = tf.train.Checkpoint(model=model, optimizer=opt).save(str(tmp_path / "ckpt"))

    model2 = small_model(seed=99)
    opt2 = create_optimizer(kind, 1e-2, 20, 3)
    opt2.build(model2.trainable_variables)
    tf.train.Checkpoint(model=model2, optimizer=opt2).restore(path).assert_consumed()
    assert int(opt2.iterations) == 4
    slots = [v for v in opt2.variables if v.path.endswith(("_m", "_v"))]
    assert len(slots) == 2 * len(model2.trainable_variables)
    for a, b in zip(opt.variables, opt2.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert any(np.abs(s.numpy()).max() > 0 for s in slots)

    step2 = make_step(model2, opt2, x, y, False)
    step(), step2()
    for a, b in zip(model.trainable_variables, model2.trainable_variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())

    # Without the slots the next step differs: the restore is what makes the above hold.
    model3 = small_model(seed=98)
    opt3 = create_optimizer(kind, 1e-2, 20, 3)
    opt3.build(model3.trainable_variables)
    tf.train.Checkpoint(model=model3).restore(path).expect_partial()
    opt3.iterations.assign(5)
    make_step(model3, opt3, x, y, False)()
    assert not all(np.array_equal(a.numpy(), b.numpy())
                   for a, b in zip(model.trainable_variables, model3.trainable_variables))


@pytest.mark.parametrize("kind", ["lamb", "nadam"])
def test_loss_scale_optimizer_mixed_float16(kind):
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        x, y = data(16)
        model = small_model()
        assert model.layers[0].compute_dtype == "float16"
        inner = create_optimizer(kind, 1e-2, 10, 0)
        opt = keras.optimizers.LossScaleOptimizer(inner, initial_scale=2.0 ** 15)
        opt.build(model.trainable_variables)
        assert all(str(s.dtype) == "float32" for s in inner.variables if s.path.endswith(("_m", "_v")))

        @tf.function
        def step(poison):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(tf.cast(model(x), tf.float32) - y))
                scaled = opt.scale_loss(loss)
            grads = tape.gradient(scaled, model.trainable_variables)
            grads = [g * poison for g in grads]
            opt.apply(grads, model.trainable_variables)
            return loss

        w_before = [v.numpy() for v in model.trainable_variables]
        losses = [float(step(tf.constant(1.0))) for _ in range(3)]
        assert all(np.isfinite(losses)) and losses[-1] < losses[0]
        assert int(inner.iterations) == 3
        assert all(np.isfinite(v.numpy()).all() for v in model.trainable_variables)
        assert not np.allclose(w_before[0], model.trainable_variables[0].numpy())

        # An overflow: the step is skipped (weights and iterations unchanged) and the scale halves.
        scale = float(opt.dynamic_scale)
        w_mid = [v.numpy() for v in model.trainable_variables]
        step(tf.constant(np.inf))
        assert float(opt.dynamic_scale) == scale / 2
        assert int(inner.iterations) == 3
        for a, v in zip(w_mid, model.trainable_variables):
            np.testing.assert_array_equal(a, v.numpy())
        step(tf.constant(1.0))
        assert int(inner.iterations) == 4
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


def test_loss_scale_matches_unscaled_update():
    """LossScaleOptimizer(opt) on grads * scale equals opt on grads (fp32, power-of-two scale)."""
    _, variables = named_variables()
    w0 = [v.numpy() for v in variables]
    rng = np.random.default_rng(5)
    grads = [[rng.normal(size=v.shape).astype(np.float32) for v in variables] for _ in range(3)]
    plain = create_optimizer("nlamb", 1e-2, 10, 1)
    for g in grads:
        plain.apply([tf.constant(a) for a in g], variables)
    w_plain = [v.numpy() for v in variables]
    for v, a in zip(variables, w0):
        v.assign(a)
    lso = keras.optimizers.LossScaleOptimizer(create_optimizer("nlamb", 1e-2, 10, 1), initial_scale=1024.0)
    for g in grads:
        lso.apply([tf.constant(a * 1024.0) for a in g], variables)
    for a, v in zip(w_plain, variables):
        np.testing.assert_allclose(v.numpy(), a, atol=1e-6, rtol=0)


@pytest.mark.parametrize("jit", [False, True])
def test_sparse_gradient_equals_dense(jit):
    """Embedding gradients arrive as IndexedSlices; the update equals the one for the dense gradient."""
    results = []
    for sparse in (True, False):
        table = keras.Variable(np.arange(12, dtype=np.float32).reshape(6, 2) / 10, name="word_embeddings")
        opt = create_optimizer("nlamb", 1e-2, 10, 0)
        opt.build([table])
        grad = tf.IndexedSlices(tf.constant([[1.0, -2.0], [0.5, 0.5]]), tf.constant([1, 4]), tf.constant([6, 2]))

        @tf.function(jit_compile=jit)
        def step():
            opt.apply([grad if sparse else tf.convert_to_tensor(grad)], [table])
        for _ in range(3):
            step()
        results.append(table.numpy())
    np.testing.assert_allclose(results[0], results[1], atol=1e-7, rtol=0)
