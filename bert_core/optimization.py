"""Optimization: the LR schedule, the four optimizers and the clipping factor.

What the training loop (bert_core.training) uses:

    optimizer = create_optimizer("lamb", learning_rate=1e-3, num_train_steps=N, num_warmup_steps=W)
    optimizer.ops = ops                                          # the ops the Trainer chose (bert_core.ops)
    with optimizer.gradient_factor(clip_factor(norm, 1.0)):     # global-norm clipping, inside the update
        optimizer.apply(grads, model.trainable_variables)        # one update, LR from optimizer.iterations

The update rules (formulas in docs/optimization.md), per variable w with gradient g at update t = 1, 2, ...:

    m = b1 m + (1 - b1) g                v = b2 v + (1 - b2) g^2
    adam   m_hat = m,                    v_hat = v            (Google's BERT AdamWeightDecay: NO bias correction)
    lamb   m_hat = m / (1 - b1^t),       v_hat = v / (1 - b2^t)
    nadam  m_hat = b1 m / (1 - b1^(t+1)) + (1 - b1) g / (1 - b1^t),   v_hat = v / (1 - b2^t)   (Dozat, mu_t = b1)
    nlamb  as nadam
    r = m_hat / (sqrt(v_hat) + eps) + wd * w              (wd term only where weight decay applies)
    lamb, nlamb:  r = r * trust,  trust = ||w|| / ||r||   (1 if either norm is 0; only where decay applies)
    w = w - lr_t * r

Weight decay and the LAMB trust ratio are skipped for variables whose Keras 3 `path` (e.g.
`bert/encoder/layer_0/attention/output/LayerNorm/gamma`) matches any of `exclude_from_weight_decay`
(default `LayerNorm`, `layer_norm`, `bias`), as Google's and NVIDIA's BERT do.

`adam` is one op of the ops seam (`ops.apply_adamw`: textbook TF ops under plain, one fused kernel
under cpu_fused); lamb, nadam and nlamb are TF ops on every backend.

Why our own optimizers and not Keras's: keras.optimizers.AdamW bias-corrects (and puts eps outside the
corrected sqrt(v)), Lamb keeps weight decay outside the trust ratio and adapts every variable, and Nadam
uses the momentum schedule b1 (1 - 0.5 * 0.96^t) (Dozat's is 0.96^(t/250), the LAMB paper's NLAMB uses a
constant b1). None equals the rule it is named after here, so the four share one small implementation.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Sequence

import keras
import tensorflow as tf

from bert_core.choices import OPTIMIZER_TYPES, OptimizerType
from bert_core.errors import UserError
from bert_core.ops import PLAIN, Ops

DEFAULT_EXCLUDE_FROM_WEIGHT_DECAY: tuple[str, ...] = ("LayerNorm", "layer_norm", "bias")

_PACKAGE = "bert_core"


# --------------------------------------------------------------------------------------------------
# Learning-rate schedule
# --------------------------------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package=_PACKAGE)
class WarmupPolynomialDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Google BERT's schedule: linear warmup from 0, then polynomial decay, as `optimization.py` has it.

    With s the (0-based) update count:

        decay(s)  = (peak - end) * (1 - min(s, num_train_steps) / num_train_steps) ** power + end
        lr(s)     = peak * s / num_warmup_steps    if s < num_warmup_steps
                  = decay(s)                       otherwise

    The decay runs over the whole of `num_train_steps` counted from step 0 (not from the end of
    warmup); warmup only overrides it while s < num_warmup_steps. So, exactly as Google's, the LR at
    s = num_warmup_steps is peak * (1 - num_warmup_steps / num_train_steps), not the peak.
    """

    def __init__(self, peak_learning_rate: float, num_train_steps: int, num_warmup_steps: int = 0,
                 end_learning_rate: float = 0.0, power: float = 1.0, name: str | None = None):
        if not num_train_steps or num_train_steps < 1:
            raise UserError(f"--num_train_steps: must be at least 1 (got {num_train_steps!r})")
        if num_warmup_steps is None or num_warmup_steps < 0:
            raise UserError(f"--num_warmup_steps: must be 0 or more (got {num_warmup_steps!r})")
        if not peak_learning_rate >= 0:
            raise UserError(f"--learning_rate: must be 0 or more (got {peak_learning_rate!r})")
        self.peak_learning_rate = float(peak_learning_rate)
        self.num_train_steps = int(num_train_steps)
        self.num_warmup_steps = int(num_warmup_steps)
        self.end_learning_rate = float(end_learning_rate)
        self.power = float(power)
        self.name = name

    def __call__(self, step):
        with tf.name_scope(self.name or "WarmupPolynomialDecay"):
            step = tf.cast(step, tf.float32)
            total = tf.constant(float(self.num_train_steps), tf.float32)
            # (total - s) / total rather than 1 - s / total: the same number, without float32
            # cancellation near the end (integer steps are exact in float32 up to 2^24).
            remaining = (total - tf.minimum(step, total)) / total
            decayed = ((self.peak_learning_rate - self.end_learning_rate) * tf.pow(remaining, self.power)
                       + self.end_learning_rate)
            if self.num_warmup_steps == 0:
                return decayed
            warmup_steps = tf.constant(float(self.num_warmup_steps), tf.float32)
            warmup = self.peak_learning_rate * (step / warmup_steps)
            return tf.where(step < warmup_steps, warmup, decayed)

    def get_config(self) -> dict:
        return {"peak_learning_rate": self.peak_learning_rate, "num_train_steps": self.num_train_steps,
                "num_warmup_steps": self.num_warmup_steps, "end_learning_rate": self.end_learning_rate,
                "power": self.power, "name": self.name}


# --------------------------------------------------------------------------------------------------
# Optimizers
# --------------------------------------------------------------------------------------------------
def variable_path(variable) -> str:
    """The name exclusions are matched on: Keras 3 `path` (`layer/.../gamma`), else the TF name."""
    path = getattr(variable, "path", None) or variable.name
    return re.sub(r":\d+$", "", str(path))


class BertOptimizer(keras.optimizers.Optimizer):
    """Adam-family update with decoupled weight decay; subclasses pick the variant (see module doc).

    Slots: `m` and `v` per trainable variable, created with `add_variable_from_reference`, so they
    are tracked by `tf.train.Checkpoint` and saved with the model. Works under tf.function, XLA and
    inside `keras.optimizers.LossScaleOptimizer`. Keras's own `weight_decay` is not used (it matches
    on `variable.name`, which in Keras 3 is just `gamma`/`bias`); ours matches on `variable.path`.
    """

    bias_correction: bool = True
    nesterov: bool = False
    layer_adaptation: bool = False
    ops: Ops = PLAIN  # the Trainer sets the ops it chose for its training step

    def __init__(self, learning_rate=1e-3, weight_decay_rate: float = 0.01, beta_1: float = 0.9,
                 beta_2: float = 0.999, epsilon: float = 1e-6,
                 exclude_from_weight_decay: Sequence[str] | None = DEFAULT_EXCLUDE_FROM_WEIGHT_DECAY,
                 exclude_from_layer_adaptation: Sequence[str] | None = None, name: str | None = None,
                 **kwargs):
        if kwargs.get("weight_decay"):
            raise ValueError(f"{type(self).__name__}: use weight_decay_rate, not Keras's weight_decay")
        kwargs.pop("weight_decay", None)
        super().__init__(learning_rate=learning_rate, name=name or type(self).__name__, **kwargs)
        self.weight_decay_rate = float(weight_decay_rate)
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)
        self.weight_decay_exclusions = tuple(exclude_from_weight_decay or ())
        # As NVIDIA's and TF Addons' LAMB: the trust-ratio exclusions default to the decay exclusions.
        self.layer_adaptation_exclusions = (tuple(exclude_from_layer_adaptation)
                                              if exclude_from_layer_adaptation is not None
                                              else self.weight_decay_exclusions)

    # -- which variables get what -------------------------------------------------------------------
    def uses_weight_decay(self, variable) -> bool:
        if not self.weight_decay_rate:
            return False
        path = variable_path(variable)
        return not any(re.search(p, path) for p in self.weight_decay_exclusions)

    def uses_layer_adaptation(self, variable) -> bool:
        if not self.layer_adaptation:
            return False
        path = variable_path(variable)
        return not any(re.search(p, path) for p in self.layer_adaptation_exclusions)

    # -- Keras optimizer protocol ---------------------------------------------------------------------
    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._m = [self.add_variable_from_reference(v, name="m") for v in var_list]
        self._v = [self.add_variable_from_reference(v, name="v") for v in var_list]

    _gradient_factor = None

    @contextlib.contextmanager
    def gradient_factor(self, factor: tf.Tensor):
        """While tracing `apply` within: each gradient is multiplied by the scalar `factor` first (the
        loop's global-norm clipping, `clip_factor`), the same as clipping the gradients before `apply`;
        `ops.apply_adamw` (adam) takes it as an argument, so cpu_fused's kernel needs no pass of its own."""
        self._gradient_factor = factor
        try:
            yield
        finally:
            self._gradient_factor = None

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        m_slot, v_slot = self._m[index], self._v[index]
        if not (self.bias_correction or self.nesterov or self.layer_adaptation):  # Google's AdamWeightDecay
            self.ops.apply_adamw(variable, m_slot, v_slot, gradient, learning_rate=learning_rate,
                                 weight_decay=self.weight_decay_rate if self.uses_weight_decay(variable) else 0.0,
                                 beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon,
                                 gradient_scale=self._gradient_factor)
            return
        # Arithmetic in float32 even for float16/bfloat16 variables; assign() casts back.
        dtype = tf.as_dtype(variable.dtype)
        if dtype in (tf.float16, tf.bfloat16):
            dtype = tf.float32
        if isinstance(gradient, tf.IndexedSlices):
            gradient = tf.convert_to_tensor(gradient)  # dense Adam: every row's moments decay
        g = tf.cast(gradient, dtype)
        if self._gradient_factor is not None:
            g = g * tf.cast(self._gradient_factor, dtype)
        w = tf.cast(tf.convert_to_tensor(variable), dtype)
        lr = tf.cast(learning_rate, dtype)
        t = tf.cast(self.iterations + 1, dtype)
        # Constants from Python doubles: 1 - 0.999 computed in float32 is off by 1.3e-5 relative, and
        # so is 1 - b2^t; -expm1(t log b) gives 1 - b^t to float32 precision.
        b1, b2 = self.beta_1, self.beta_2
        log_b1, log_b2 = math.log(b1), math.log(b2)

        def one_minus_power(log_b, n):
            return -tf.math.expm1(n * log_b)

        m = b1 * tf.cast(m_slot, dtype) + (1.0 - b1) * g
        v = b2 * tf.cast(v_slot, dtype) + (1.0 - b2) * tf.square(g)
        if self.nesterov:
            m_hat = (b1 * m / one_minus_power(log_b1, t + 1.0)
                     + (1.0 - b1) * g / one_minus_power(log_b1, t))
            v_hat = v / one_minus_power(log_b2, t)
        else:
            m_hat = m / one_minus_power(log_b1, t)
            v_hat = v / one_minus_power(log_b2, t)
        update = m_hat / (tf.sqrt(v_hat) + self.epsilon)
        if self.uses_weight_decay(variable):
            update += self.weight_decay_rate * w
        if self.uses_layer_adaptation(variable):
            w_norm = tf.norm(w)
            r_norm = tf.norm(update)
            one = tf.ones_like(w_norm)
            trust = tf.where(w_norm > 0.0, tf.where(r_norm > 0.0, w_norm / r_norm, one), one)
            update = trust * update

        self.assign(m_slot, m)
        self.assign(v_slot, v)
        self.assign_sub(variable, lr * update)

    def get_config(self) -> dict:
        config = super().get_config()
        config.pop("weight_decay", None)
        config.update({
            "weight_decay_rate": self.weight_decay_rate, "beta_1": self.beta_1, "beta_2": self.beta_2,
            "epsilon": self.epsilon, "exclude_from_weight_decay": list(self.weight_decay_exclusions),
            "exclude_from_layer_adaptation": list(self.layer_adaptation_exclusions)})
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class AdamWeightDecay(BertOptimizer):
    """`adam`: Google BERT's AdamWeightDecayOptimizer rule: Adam moments with NO bias correction,
    decoupled weight decay `lr * wd * w`. The optimizer BERT was pretrained and fine-tuned with."""

    bias_correction = False


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LAMB(BertOptimizer):
    """`lamb`: You et al. 2019 (arXiv:1904.00962) Algorithm 2: bias-corrected Adam direction plus
    weight decay, scaled per variable by the trust ratio ||w|| / ||r||."""

    layer_adaptation = True


@keras.saving.register_keras_serializable(package=_PACKAGE)
class NAdamW(BertOptimizer):
    """`nadam`: Dozat 2016 (NAdam, Algorithm 2) with a constant momentum mu_t = beta_1, and decoupled
    weight decay as `adam`."""

    nesterov = True


@keras.saving.register_keras_serializable(package=_PACKAGE)
class NLAMB(BertOptimizer):
    """`nlamb`: LAMB with NAdam's Nesterov moment estimate (the LAMB paper's N-LAMB, constant beta_1)."""

    nesterov = True
    layer_adaptation = True


OPTIMIZER_CLASSES: dict[str, type[BertOptimizer]] = {
    "adam": AdamWeightDecay, "lamb": LAMB, "nadam": NAdamW, "nlamb": NLAMB}
assert tuple(OPTIMIZER_CLASSES) == OPTIMIZER_TYPES


def create_optimizer(optimizer_type: OptimizerType | str, learning_rate: float, num_train_steps: int,
                     num_warmup_steps: int, weight_decay_rate: float = 0.01, beta_1: float = 0.9,
                     beta_2: float = 0.999, epsilon: float = 1e-6, power: float = 1.0,
                     exclude_from_weight_decay: Sequence[str] = DEFAULT_EXCLUDE_FROM_WEIGHT_DECAY,
                     end_learning_rate: float = 0.0) -> BertOptimizer:
    """The optimizer for `--optimizer_type`, with Google's warmup + polynomial-decay schedule.

    `learning_rate` is the peak (already scaled by the number of workers if the loop does that).
    The LR of an update is `schedule(optimizer.iterations)`; iterations counts updates, not micro-batches.
    """
    key = str(optimizer_type).lower()
    if key not in OPTIMIZER_CLASSES:
        raise UserError(f"--optimizer_type: unknown optimizer {optimizer_type!r}; "
                        f"expected one of {', '.join(OPTIMIZER_TYPES)}")
    schedule = WarmupPolynomialDecay(learning_rate, num_train_steps, num_warmup_steps,
                                     end_learning_rate=end_learning_rate, power=power)
    return OPTIMIZER_CLASSES[key](
        learning_rate=schedule, weight_decay_rate=weight_decay_rate, beta_1=beta_1, beta_2=beta_2,
        epsilon=epsilon, exclude_from_weight_decay=exclude_from_weight_decay)


# --------------------------------------------------------------------------------------------------
# Clipping
# --------------------------------------------------------------------------------------------------
def clip_factor(norm: tf.Tensor, clip_norm) -> tf.Tensor:
    """The factor `tf.clip_by_global_norm(grads, clip_norm, use_norm=norm)` multiplies every gradient
    by, in the same float32 operations: min(1, clip_norm / norm), NaN when the norm is not finite."""
    norm = tf.cast(norm, tf.float32)
    clip_norm = tf.cast(clip_norm, tf.float32)
    return clip_norm * tf.minimum(1.0 / norm, 1.0 / clip_norm) + (norm - norm)
