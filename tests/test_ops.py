"""The ops seam (bert_core.ops): one decision, a plain path that is textbook TensorFlow and compiles
with XLA, and cpu_fused equal to plain. Everything but the last test runs on any host, GPU or not."""

from __future__ import annotations

import ast
import inspect

import keras
import numpy as np
import tensorflow as tf

from bert_core import losses, modeling, ops, optimization, training
from bert_core.config import BertConfig
from bert_core.optimization import create_optimizer
from bert_core.pretrain import pretraining_loss_fn
from tests.tiny_bert import tiny_config


def _batch(seed: int = 0) -> dict:
    """4 sequences of 16 tokens (vocab 200), 3 masked positions each."""
    rng = np.random.default_rng(seed)
    return {"input_ids": rng.integers(0, 200, (4, 16)).astype(np.int32), "input_mask": np.ones((4, 16), np.int32),
            "segment_ids": np.zeros((4, 16), np.int32),
            "masked_lm_positions": np.tile(np.arange(1, 4, dtype=np.int32), (4, 1)),
            "masked_lm_ids": rng.integers(0, 200, (4, 3)).astype(np.int32),
            "masked_lm_weights": np.ones((4, 3), np.float32),
            "next_sentence_labels": rng.integers(0, 2, (4, 1)).astype(np.int32)}


def _train(tmp_path, name: str, steps: int = 2, xla: bool = False, **config) -> training.Trainer:
    """A Trainer on a tiny BertPretrainer (no dropout unless asked), trained `steps` steps."""
    keras.utils.set_random_seed(0)
    model = modeling.BertPretrainer(BertConfig(**tiny_config(vocab_size=200, **config)))
    cfg = training.TrainLoopConfig(output_dir=str(tmp_path / name), num_train_steps=steps, xla=xla, summaries=False,
                                   log_every_steps=100)
    trainer = training.Trainer(model, pretraining_loss_fn, create_optimizer("adam", 1e-2, steps, 0), cfg,
                               log=lambda line: None)
    result = trainer.train(tf.data.Dataset.from_tensors(_batch()).repeat())
    assert result.global_step == steps and np.isfinite(result.loss)
    return trainer


def _defined_in(fn, seen: set) -> set[str]:
    """Modules of the functions a gradient function closes over (tf.custom_gradient wraps the user's
    gradient function in its own; autograph may have converted it, which keeps the module)."""
    modules = set()
    for cell in fn.__closure__ or ():
        try:
            value = cell.cell_contents
        except ValueError:
            continue
        if callable(value) and hasattr(value, "__code__") and id(value) not in seen:
            seen.add(id(value))
            modules |= {value.__module__} | _defined_in(value, seen)
    return modules


def _custom_parts(concrete, package: str = "bert_core") -> tuple[set[str], set[str]]:
    """(op types from this project's kernel library, tf.custom_gradient functions written in
    `package`) in a traced function and every function it calls. (TF's and Keras's own custom
    gradients, e.g. the default replica context's all_reduce inside Keras's optimizer, are not ours.)"""
    from tensorflow.python.framework import ops as tf_ops

    graph_def = concrete.graph.as_graph_def()
    nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
    ours = {n.op for n in nodes if n.op.startswith("Bert")}
    custom_gradients = set()
    for n in nodes:
        if "_gradient_op_type" in n.attr:
            grad_fn = tf_ops._gradient_registry.lookup(n.attr["_gradient_op_type"].s.decode())
            custom_gradients |= {m for m in _defined_in(grad_fn, set()) if m.split(".")[0] == package}
    return ours, custom_gradients


def test_custom_part_detector_sees_a_custom_gradient(cpu_fused):
    """The check below would catch one: a tf.custom_gradient written here is found, and so are
    cpu_fused's (written in bert_core) in its training step."""
    @tf.custom_gradient
    def doubled(x):
        return 2.0 * x, lambda dy: 2.0 * dy

    _, custom = _custom_parts(tf.function(doubled).get_concrete_function(tf.TensorSpec([3])),
                              __name__.split(".")[0])
    assert custom == {__name__}
    x = tf.TensorSpec([4, 8])
    _, custom = _custom_parts(tf.function(lambda x: cpu_fused.dense(x, tf.ones([8, 2]), tf.zeros([2]))
                                          ).get_concrete_function(x))
    assert custom == {"bert_core.kernels"}


def test_for_training_is_the_one_decision(monkeypatch):
    monkeypatch.setenv("BERT_FUSED_KERNELS", "0")
    assert ops.for_training(xla=False) == (ops.PLAIN, "ops: plain (BERT_FUSED_KERNELS=0)")
    monkeypatch.setenv("BERT_FUSED_KERNELS", "1")
    assert ops.for_training(xla=True) == (ops.PLAIN, "ops: plain (--xla: the fused CPU kernels have no XLA lowering)")
    real = tf.config.list_physical_devices
    monkeypatch.setattr(tf.config, "list_physical_devices",
                        lambda kind=None: ["/physical_device:GPU:0"] if kind == "GPU" else real(kind))
    assert ops.for_training(xla=False) == (ops.PLAIN, "ops: plain (a GPU is visible)")


def test_model_and_optimizer_code_have_no_device_branch():
    """modeling.py, losses.py and optimization.py reach the hardware only through the ops they are
    given: no kernel import, no device query; and no class of ours takes a Keras class's name."""
    for module in (modeling, losses, optimization):
        source = inspect.getsource(module)
        tree = ast.parse(source)
        imported = {a.name for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                    for a in node.names} | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not any("kernels" in (name or "") for name in imported), module.__name__
        for word in ("list_physical_devices", "GPU", "kernels."):
            assert word not in source, (module.__name__, word)
    ours = {name for name, obj in vars(modeling).items() if inspect.isclass(obj) and obj.__module__ == modeling.__name__}
    assert not ours & set(dir(keras.layers)) and not ours & set(dir(keras)), ours & (set(dir(keras.layers)) | set(dir(keras)))


def test_plain_training_step_has_no_custom_op_or_gradient(tmp_path, monkeypatch):
    monkeypatch.setenv("BERT_FUSED_KERNELS", "0")
    trainer = _train(tmp_path, "plain", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    assert trainer.ops is ops.PLAIN and trainer.optimizer.ops is ops.PLAIN
    ours, custom = _custom_parts(trainer._step_fn.get_concrete_function(_batch()))
    assert not ours and not custom, (ours, custom)


def test_plain_training_step_compiles_with_xla_and_equals_the_graph_step(tmp_path):
    """The whole step (forward, loss, backward, clipping, AdamW) as one XLA computation on CPU."""
    compiled = _train(tmp_path, "xla", xla=True)
    assert compiled.ops is ops.PLAIN
    hlo = compiled._step_fn.experimental_get_compiler_ir(_batch())(stage="hlo")
    assert "HloModule" in hlo
    graph_step = _train(tmp_path, "graph")  # cpu_fused on a CPU host, plain on a GPU host: same numbers
    for a, b in zip(compiled.model.trainable_variables, graph_step.model.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5, err_msg=a.path)


def test_plain_equals_cpu_fused_on_the_same_batch(cpu_fused):
    """One forward + backward of BertPretrainer and one AdamW update (dropout off: both draw their
    own masks): cpu_fused == plain within rounding, and cpu_fused really runs its kernels."""
    config = BertConfig(**tiny_config(vocab_size=200))
    batch = _batch(4)
    results = []
    for backend in (ops.PLAIN, cpu_fused):
        keras.utils.set_random_seed(0)
        model = modeling.BertPretrainer(config)
        model.build()
        opt = create_optimizer("adam", 1e-2, 10, 0)
        opt.build(model.trainable_variables)
        opt.ops = backend

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                loss, _ = losses.pretraining_loss(model(batch, training=True, ops=backend), batch, backend)
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply(grads, model.trainable_variables)
            return loss, [tf.convert_to_tensor(g) for g in grads]

        kernels_used, _ = _custom_parts(step.get_concrete_function())
        assert bool(kernels_used) == (backend is cpu_fused), kernels_used
        loss, grads = step()
        results.append((loss.numpy(), [g.numpy() for g in grads], [v.numpy() for v in model.trainable_variables]))
    (ref_loss, ref_grads, ref_weights), (loss, grads, weights) = results
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(g, r, rtol=1e-3, atol=1e-5)
    for w, r in zip(weights, ref_weights):  # Adam's first step is ~lr sign(g): where g ~ eps, rounding shows
        np.testing.assert_allclose(w, r, rtol=1e-5, atol=2e-5)
