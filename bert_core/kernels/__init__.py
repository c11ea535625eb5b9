"""Fused CPU kernels for the training step: GELU, dropout, LayerNorm, softmax + dropout backward,
the masked-LM cross-entropy and the AdamW update, one pass each.

A small BERT on CPU spends a large part of its training step in memory-bound elementwise ops (each TF
op is a full pass over a [tokens, width] tensor); `fused_ops.cc` does each of these in one pass with
the same math. See docs/benchmarks.md for what it saves.

This module builds and loads the library and wraps its ops; the model never calls it. The `cpu_fused`
backend of the ops seam (bert_core/ops/cpu_fused.py) does, when bert_core.ops.for_training chose it:
no GPU visible, not under XLA, BERT_FUSED_KERNELS not 0, and the library builds. It is compiled on
first use from `fused_ops.cc` with the C++ compiler TensorFlow's headers need (g++; CXX overrides)
into a cache keyed by the source, the TensorFlow version and the flags: $BERT_KERNEL_CACHE, else
~/.cache/bert-kubeflow/kernels. The images build it at image build time (`python -m bert_core.kernels`).
Evaluation, prediction and export use the plain ops, so exported SavedModels need no custom op library.

Dropout draws 16 random bits per element: the drop probability is `rate` rounded to a multiple of
1/65536 (0.1 -> 0.1000061), and kept values are scaled by the exact inverse keep probability.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
from pathlib import Path

import tensorflow as tf

from bert_core import native_build

SOURCE = Path(__file__).with_name("fused_ops.cc")
CXXFLAGS = ["-std=c++17", "-shared", "-fPIC", "-O3", "-march=x86-64-v3", "-fopenmp-simd"]
DROPOUT_BITS = 16

_lock = threading.Lock()
_state: dict = {"tried": False, "lib": None, "error": None}


class KernelBuildError(native_build.BuildError):
    """The fused kernel library could not be compiled or loaded."""


# --------------------------------------------------------------------------------------------------
# Build and load
# --------------------------------------------------------------------------------------------------
def _compiler() -> str:
    return os.environ.get("CXX") or "g++"


# -march=x86-64-v3 code needs these CPU features (the library would die with SIGILL without them).
CPU_FLAGS = ("avx2", "fma", "bmi1", "bmi2", "f16c", "movbe")


def _tf_flags() -> list[str]:
    return [*tf.sysconfig.get_compile_flags(), *tf.sysconfig.get_link_flags()]


def _command(output: Path) -> list[str]:
    return [_compiler(), *CXXFLAGS, str(SOURCE), "-o", str(output), *_tf_flags()]


def _compiler_version() -> str:
    try:
        proc = subprocess.run([_compiler(), "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (proc.stdout.splitlines() or ["?"])[0]


def missing_cpu_flags() -> list[str]:
    """The CPU features the library's code needs that this machine lacks ([] off Linux: unknown)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), None)
    if line is None:  # not x86: the -march flag fails to compile, reported as a build error
        return []
    have = set(line.split(":", 1)[1].split())
    return [f for f in CPU_FLAGS if f not in have]


def library_path() -> Path:
    """Where the library for this source, TensorFlow build, compiler and flags lives (built or not)."""
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), tf.__version__.encode(), " ".join([_compiler(), *CXXFLAGS, *_tf_flags()]).encode(),
                 _compiler_version().encode()):
        key.update(part)
        key.update(b"\0")
    return native_build.cache_dir() / f"bert_fused_ops-{tf.__version__}-{key.hexdigest()[:16]}.so"


def build() -> Path:
    """Compile fused_ops.cc unless the cache has it (bert_core.native_build: one compile per machine at
    a time, as several Horovod ranks start together; the library appears whole or not at all)."""
    return native_build.build_cached(library_path(), _compiler(), _command, SOURCE.name, KernelBuildError,
                                     f"no C++ compiler {_compiler()!r} on PATH (set CXX or install g++)")


def load():
    """Build (if needed) and load the library; raises KernelBuildError, OSError or TF's NotFoundError."""
    missing = missing_cpu_flags()
    if missing:
        raise KernelBuildError(f"this CPU lacks {', '.join(missing)} (the kernels are built for x86-64-v3)")
    return tf.load_op_library(str(build()))


def library():
    """The loaded op library (built on first use, once per process), or None if it cannot be built
    or loaded here; `build_error()` then says why, in one line."""
    with _lock:
        if not _state["tried"]:
            _state["tried"] = True
            try:
                lib = load()
                _register_gradients(lib)
                _state["lib"] = lib
            except (KernelBuildError, OSError, tf.errors.OpError) as e:
                _state["error"] = str(e).splitlines()[0] if str(e) else type(e).__name__
        return _state["lib"]


def build_error() -> str | None:
    """Why library() returned None (None if it has not, or has not been asked yet)."""
    return _state["error"]


# --------------------------------------------------------------------------------------------------
# Ops (call only after library() returned the library)
# --------------------------------------------------------------------------------------------------
def _register_gradients(lib) -> None:
    def gelu_grad(op, dy):
        return lib.bert_gelu_grad(dy, op.inputs[0])

    def dropout_grad(op, dy, _dmask):
        return lib.bert_dropout_grad(dy, op.outputs[1], threshold=op.get_attr("threshold")), None

    def layer_norm_grad(op, dy, _dmean, _drstd):
        # mean and rstd are saved for this gradient only; nothing differentiates through them.
        return lib.bert_layer_norm_grad(dy, op.inputs[0], op.inputs[1], op.outputs[1], op.outputs[2])

    def bias_gelu_grad(op, dy):
        return lib.bert_bias_gelu_grad(dy, op.inputs[0], op.inputs[1])

    def cross_entropy_grad(op, dnll, _dlse, _dargmax):
        return lib.bert_sparse_cross_entropy_grad(dnll, op.inputs[0], op.inputs[1], op.outputs[1]), None

    for name, fn in (("BertGelu", gelu_grad), ("BertBiasGelu", bias_gelu_grad), ("BertDropout", dropout_grad),
                     ("BertLayerNorm", layer_norm_grad),
                     ("BertSparseCrossEntropy", cross_entropy_grad)):
        try:
            tf.RegisterGradient(name)(fn)
        except KeyError:  # registered already (the library loads once per process)
            pass


def dropout_threshold(rate: float) -> int:
    """The 16-bit keep threshold for a drop rate: drop where the draw < threshold."""
    return int(round(float(rate) * (1 << DROPOUT_BITS)))


def gelu(x: tf.Tensor) -> tf.Tensor:
    return library().bert_gelu(x)


def bias_gelu(x: tf.Tensor, bias: tf.Tensor) -> tf.Tensor:
    """gelu(x + bias), bias over the last axis; its gradient also gives the bias's in the same pass."""
    return library().bert_bias_gelu(x, bias)


def dropout(x: tf.Tensor, rate: float, seed: tf.Tensor) -> tf.Tensor:
    """Inverted dropout of a float32 tensor with a [2] int seed (Keras SeedGenerator.next())."""
    threshold = dropout_threshold(rate)
    if threshold <= 0:
        return x
    if threshold >= 1 << DROPOUT_BITS:
        return tf.zeros_like(x)
    y, _ = library().bert_dropout(x, tf.cast(seed, tf.int64), threshold=threshold)
    return y


def softmax_dropout(logits: tf.Tensor, rate: float, seed: tf.Tensor | None) -> tf.Tensor:
    """dropout(softmax(logits)) over the last axis (attention probabilities), float32: TF's softmax
    and the dropout kernel forward, one fused pass backward instead of ~6 ops. No dropout when
    seed is None or the rate rounds to 0."""
    lib = library()
    threshold = dropout_threshold(rate) if seed is not None else 0
    if threshold >= 1 << DROPOUT_BITS:
        return tf.zeros_like(logits)

    @tf.custom_gradient
    def forward(x):
        probs = tf.nn.softmax(x, axis=-1)
        if threshold > 0:
            out, mask = lib.bert_dropout(probs, tf.cast(seed, tf.int64), threshold=threshold)
        else:
            out, mask = probs, tf.zeros([0], tf.uint8)

        def grad(dq):
            return lib.bert_softmax_dropout_grad(dq, probs, mask, threshold=threshold)

        return out, grad

    return forward(logits)


def sparse_cross_entropy(logits: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """-log softmax(logits)[label] and argmax (first maximum, int32) for logits [N, V] float32 and
    labels [N] int32 -> ([N], [N])."""
    nll, _, argmax = library().bert_sparse_cross_entropy(logits, tf.cast(labels, tf.int32))
    return nll, argmax


def layer_norm(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, epsilon: float) -> tf.Tensor:
    y, _, _ = library().bert_layer_norm(x, gamma, beta, epsilon=float(epsilon))
    return y


def apply_adamw(var, m, v, grad: tf.Tensor, grad_scale: tf.Tensor, lr: tf.Tensor, decay: tf.Tensor, *,
                beta1: float, beta2: float, epsilon: float):
    """In place on the float32 resource variables var, m, v (handles), in one pass:
    g = grad grad_scale; var -= decay var; then ResourceApplyAdam's update with beta powers 0
    (m += (g - m)(1 - beta1), v += (g^2 - v)(1 - beta2), var -= lr m / (sqrt(v) + epsilon))."""
    return library().bert_apply_adam_w(var, m, v, grad, grad_scale, lr, decay,
                                       beta1=float(beta1), beta2=float(beta2), epsilon=float(epsilon))


def dense(x: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor, transpose_kernel: bool = False) -> tf.Tensor:
    """x @ kernel + bias (kernel [in, out], or [out, in] with transpose_kernel) for x [rows, in]: the
    same forward (oneDNN fuses the matmul and the bias); backward, the kernel's gradient runs as a
    batch-of-one matmul (oneDNN's matmul primitive) instead of TF's 2-D MatMul with transpose_a (its
    sgemm path): for the feed-forward output [4096, 1024] -> 256 of BERT-Mini that gradient took
    10.8 ms in a training step, 6.9 ms this way."""

    @tf.custom_gradient
    def forward(x, kernel, bias):
        def grad(dy):
            if transpose_kernel:
                dx = tf.matmul(dy, kernel)
                dkernel = tf.linalg.matmul(dy[None], x[None], transpose_a=True)[0]
            else:
                dx = tf.matmul(dy, kernel, transpose_b=True)
                dkernel = tf.linalg.matmul(x[None], dy[None], transpose_a=True)[0]
            return dx, dkernel, tf.raw_ops.BiasAddGrad(out_backprop=dy)

        return tf.nn.bias_add(tf.matmul(x, kernel, transpose_b=transpose_kernel), bias), grad

    # Tensors, not variables: eagerly, tf.custom_gradient refuses a function that reads variables.
    return forward(tf.convert_to_tensor(x), tf.convert_to_tensor(kernel), tf.convert_to_tensor(bias))
