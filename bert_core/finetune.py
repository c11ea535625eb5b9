"""`bert finetune`: a GLUE/tsv classifier or regressor, or a SQuAD span labeler, as Google's
run_classifier.py and run_squad.py, on the shared training loop (bert_core.training).

    bert finetune --task_name=MRPC --data_dir=glue/MRPC --vocab_file=vocab.txt \
        --bert_config_file=bert_config.json --init_checkpoint=uncased_L-12_H-768_A-12/bert_model.ckpt \
        --do_train --do_eval --do_predict --output_dir=out --export_dir=out/saved_model

The pieces, as bert_core.pretrain wires them:

  data      task reader (bert_core.data.glue / squad) -> features as arrays -> a tf.data stream of
            index batches: every epoch is a seeded permutation of the examples, each global batch
            (train_batch_size x ranks) is cut into one contiguous slice per rank. So N ranks with
            batch b see exactly the examples of one process with batch N x b, and the stream's
            position is a few integers in the checkpoint (not a copy of the data).
  model     BertClassifier (num_labels; 1 = regression) or BertSpanLabeler; encoder weights from
            --init_checkpoint (a Google checkpoint, our pretraining output, or HF safetensors)
  loss      cross-entropy (mean squared error for regression); SQuAD: mean of start and end CE
  steps     int(train examples / (train_batch_size x accumulation x ranks) x num_train_epochs),
            warmup the first warmup_proportion of them (run_classifier.py's arithmetic)
  outputs   output_dir/ckpt-<step>/model.ckpt-<step> (Google names, head as output_weights/bias or
            cls/squad/*), eval_results.txt/.json, test_results.tsv or predictions.json,
            nbest_predictions.json (+ null_odds.json), finetune_metrics.json, bert_config.json;
            --export_dir: a SavedModel (bert_core.export).

Eval and predict split the examples over the ranks (contiguous chunks) and add the chunks' outputs
together with one allreduce, so every rank ends with all outputs and the chief writes the files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import numpy as np

from bert_core import events, layout, lease, storage
from bert_core.config import BertConfig, FinetuneConfig
from bert_core.errors import UserError
from bert_core.evaluation import write_eval_results
from bert_core.run_metrics import write_run_metrics


# --------------------------------------------------------------------------------------------------
# Model config, weights
# --------------------------------------------------------------------------------------------------
def resolve_config(model: str | None, bert_config_file: str | None, init_checkpoint: str | None,
                   vocab_size: int, fallback_dir: str | None = None) -> BertConfig:
    """--model or --bert_config_file; else the config beside the weights (HF config.json, or a
    bert_config.json in the checkpoint's directory), else the one a previous run left in output_dir."""
    from bert_core.presets import resolve_bert_config

    if model or bert_config_file:
        return resolve_bert_config(model, bert_config_file, vocab_size)
    for path in layout.config_candidates(init_checkpoint, fallback_dir):
        if storage.exists(path):
            return resolve_bert_config(None, path, vocab_size)
    raise UserError("give --bert_config_file or --model (no config.json/bert_config.json found beside "
                    "--init_checkpoint)")


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------
def make_train_dataset(arrays: dict[str, np.ndarray], batch_size: int, rank: int, size: int, seed: int):
    """This rank's training batches (see the module docstring): an endless stream of global batches
    of batch_size x size examples, each epoch a fresh seeded permutation; rank r gets rows
    [r x batch_size, (r + 1) x batch_size) of each."""
    import tensorflow as tf

    n = len(next(iter(arrays.values())))
    global_batch = batch_size * size
    if n < global_batch:
        raise UserError(f"the training data has {n} examples, fewer than one batch of {global_batch} "
                        f"(--train_batch_size={batch_size} x {size} rank(s)); lower --train_batch_size")
    tensors = {k: tf.constant(v) for k, v in arrays.items()}

    def epoch(e):
        keys = tf.random.stateless_uniform([n], seed=tf.stack([tf.constant(seed, tf.int64), e]))
        return tf.data.Dataset.from_tensor_slices(tf.argsort(keys))

    ds = tf.data.Dataset.range(1 << 40).flat_map(epoch).batch(global_batch, drop_remainder=True)
    lo, hi = rank * batch_size, (rank + 1) * batch_size
    ds = ds.map(lambda idx: {k: tf.gather(t, idx[lo:hi]) for k, t in tensors.items()},
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def predict_outputs(model, arrays: dict[str, np.ndarray], keys: tuple[str, ...], batch_size: int, dist,
                    xla: bool = False) -> dict[str, np.ndarray]:
    """model(features, training=False)[k] for every row, on every rank; each rank computes a chunk."""
    import tensorflow as tf

    n = len(arrays["input_ids"])
    inputs = ("input_ids", "input_mask", "segment_ids")

    @tf.function(jit_compile=xla or None, reduce_retracing=True)
    def forward(features):
        out = model(features, training=False)
        return {k: tf.cast(out[k], tf.float32) for k in keys}

    per_rank = -(-n // dist.size)
    lo, hi = min(n, dist.rank * per_rank), min(n, (dist.rank + 1) * per_rank)
    result: dict[str, np.ndarray] = {}
    for start in range(lo, hi, batch_size):
        stop = min(hi, start + batch_size)
        out = forward({k: tf.constant(arrays[k][start:stop]) for k in inputs})
        for k, v in out.items():
            if k not in result:
                result[k] = np.zeros((n, *v.shape[1:]), np.float32)
            result[k][start:stop] = v.numpy()
    if dist.size > 1 or not result:
        if not result:  # this rank had no rows: learn the output shapes from one row
            out = forward({k: tf.constant(arrays[k][:1]) for k in inputs})
            result = {k: np.zeros((n, *v.shape[1:]), np.float32) for k, v in out.items()}
        if dist.size > 1:
            summed = dist.allreduce_sum([tf.constant(result[k]) for k in keys])
            result = {k: np.asarray(v.numpy() if hasattr(v, "numpy") else v) for k, v in zip(keys, summed)}
    return result


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# --------------------------------------------------------------------------------------------------
# Task adapters: what differs between classification and SQuAD (data, head, loss, eval, predict)
# --------------------------------------------------------------------------------------------------
class ClassifierAdapter:
    """GLUE, XNLI and tsv tasks (run_classifier.py), and a user's registered task (bert_core.tasks)."""

    def __init__(self, cfg: FinetuneConfig, tokenizer, tokenize_batch=None):
        from bert_core import tasks
        from bert_core.data import glue

        self.cfg = cfg
        self.glue = glue
        self.task = tasks.get_task(cfg.task_name, cfg.task_module, **cfg.task_options(cfg.task_name))
        self.tokenizer = tokenizer
        self.tokenize_batch = tokenize_batch
        self._train_examples = None
        self._split_examples: dict[str, list] = {}

    @property
    def kind(self) -> str:
        return "regression" if self.task.is_regression else "classifier"

    def examples(self, split: str):
        return self.task.get_examples(self.cfg.data_dir, split)

    def split_examples(self, split: str, labelled: bool = False):
        """A dev or test split's examples, read once: one line if it has none, or no labels where
        `labelled` (evaluation needs them)."""
        if split not in self._split_examples:
            self._split_examples[split] = self.examples(split)
        examples = self._split_examples[split]
        if not examples:
            raise UserError(f"{self.task.path(self.cfg.data_dir, split)}: no examples")
        if labelled and any(e.label is None for e in examples):
            raise UserError(f"{self.task.path(self.cfg.data_dir, split)}: the {split} split has no labels")
        return examples

    def check_splits(self) -> None:
        """Read every split --do_eval and --do_predict will read (a missing file, a bad row, a label
        not of the task's, no labels to evaluate against: one line now, not after training)."""
        if self.cfg.do_eval:
            for split in self.task.dev_splits:
                self.split_examples(split, labelled=True)
        if self.cfg.do_predict:
            for split in self._test_splits():
                self.split_examples(split)

    def _test_splits(self) -> list[str]:
        """The first test split, and each further one whose file is there (MNLI's mismatched)."""
        splits = list(self.task.test_splits)
        return splits[:1] + [s for s in splits[1:] if storage.exists(self.task.path(self.cfg.data_dir, s))]

    def train_examples(self):
        if self._train_examples is None:
            self._train_examples = self.examples("train")
            if self.task.labels is not None and len(self.task.labels) < 2:
                raise UserError(f"{self.task.path(self.cfg.data_dir, 'train')}: a classification task needs at "
                                f"least 2 labels, found {self.task.labels}")
        return self._train_examples

    def num_labels(self) -> int:
        if self.task.name == "tsv" and self.task.labels is None and not self.task.regression:
            self.train_examples()  # the tsv task learns its labels from train.tsv (is_regression until then)
        return self.task.num_labels

    def features(self, examples):
        return self.glue.convert_examples_to_features(examples, self.task, self.cfg.max_seq_length,
                                                      self.tokenizer, tokenize_batch=self.tokenize_batch)

    def train_arrays(self) -> dict[str, np.ndarray]:
        f = self.features(self.train_examples())
        return {"input_ids": f.input_ids, "input_mask": f.input_mask, "segment_ids": f.segment_ids,
                "label_ids": f.label_ids}

    def build_model(self, bert_config):
        from bert_core.modeling import BertClassifier

        model = BertClassifier(bert_config, self.num_labels())
        model.build()
        return model

    def loss_fn(self, outputs, features, ops):
        import tensorflow as tf

        from bert_core.losses import classification_loss

        logits = outputs["logits"]
        labels = features["label_ids"]
        loss = classification_loss(logits, labels)
        if logits.shape[-1] == 1:
            return loss, {}
        hit = tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), tf.cast(tf.reshape(labels, [-1]), tf.int32))
        return loss, {"accuracy": (tf.reduce_sum(tf.cast(hit, tf.float32)), tf.cast(tf.size(hit), tf.float32))}

    def _run(self, model, split: str, dist, batch_size: int, labelled: bool = False):
        examples = self.split_examples(split, labelled)
        f = self.features(examples)
        arrays = {"input_ids": f.input_ids, "input_mask": f.input_mask, "segment_ids": f.segment_ids}
        logits = predict_outputs(model, arrays, ("logits",), batch_size, dist, self.cfg.xla)["logits"]
        return examples, f, logits

    def evaluate(self, model, dist) -> dict:
        from bert_core import metrics

        results: dict = {}
        preds_by_split = {}
        for split in self.task.dev_splits:
            _, f, logits = self._run(model, split, dist, self.cfg.eval_batch_size, labelled=True)
            if self.task.is_regression:
                preds = logits[:, 0].astype(np.float64)
                loss = float(np.mean((preds - f.label_ids) ** 2))
            else:
                logp = np.log(np.maximum(_softmax(logits), 1e-300))
                loss = float(-np.mean(logp[np.arange(len(f)), f.label_ids]))
                preds = np.argmax(logits, axis=-1)
            m = metrics.glue_metrics(self.task.name, preds, f.label_ids, regression=self.task.is_regression)
            preds_by_split[split] = (preds, f.label_ids)
            prefix = "" if len(self.task.dev_splits) == 1 else f"{split}_"
            results[f"{prefix}eval_loss"] = loss
            results[f"{prefix}num_examples"] = len(f)
            results.update({f"{prefix}{k}": v for k, v in m.items()})
        if self.task.name == "mnli":
            (pm, lm), (pmm, lmm) = preds_by_split["dev_matched"], preds_by_split["dev_mismatched"]
            results.update(metrics.mnli_metrics(pm, lm, pmm, lmm))
        return results

    def predict(self, model, dist) -> list[str]:
        """test_results.tsv (first test split; MNLI's mismatched as test_results_mismatched.tsv)."""
        written = []
        for i, split in enumerate(self._test_splits()):
            examples, f, logits = self._run(model, split, dist, self.cfg.predict_batch_size)
            if self.task.is_regression:
                lines = [f"{float(v)}\n" for v in logits[:, 0]]
            else:
                lines = ["\t".join(str(float(p)) for p in row) + "\n" for row in _softmax(logits)]
            name = layout.TEST_RESULTS if i == 0 else layout.more_test_results(split)
            if dist.is_chief:
                storage.write_text(os.path.join(self.cfg.output_dir, name), "".join(lines))
            written.append(name)
        return written

    def task_info(self) -> dict:
        return {"task_name": self.task.name, "labels": self.task.labels, "regression": self.task.is_regression}


class SquadAdapter:
    """SQuAD 1.1 and 2.0 (run_squad.py)."""

    kind = "squad"

    def __init__(self, cfg: FinetuneConfig, tokenizer):
        from bert_core.data import squad

        self.cfg = cfg
        self.squad = squad
        self.tokenizer = tokenizer
        self.version_2 = cfg.version_2_with_negative or cfg.task_name.lower() in ("squad2", "squad_v2")
        self._train = None
        self._predict_examples = None
        self._predict = None

    def _features(self, examples, is_training):
        c = self.cfg
        return self.squad.convert_examples_to_features(examples, self.tokenizer, c.max_seq_length, c.doc_stride,
                                                       c.max_query_length, is_training=is_training)

    def train_examples(self):
        if self._train is None:
            examples = self.squad.read_squad_examples(self.cfg.train_file, True, self.version_2)
            if not examples:
                raise UserError(f"{self.cfg.train_file}: no usable training questions")
            self._train = examples
        return self._train

    def train_arrays(self) -> dict[str, np.ndarray]:
        a = self.squad.features_to_arrays(self._features(self.train_examples(), True), is_training=True)
        return {k: a[k] for k in ("input_ids", "input_mask", "segment_ids", "start_positions", "end_positions")}

    def build_model(self, bert_config):
        from bert_core.modeling import BertSpanLabeler

        model = BertSpanLabeler(bert_config)
        model.build()
        return model

    @staticmethod
    def loss_fn(outputs, features, ops):
        from bert_core.losses import span_loss

        loss, start, end = span_loss(outputs["start_logits"], outputs["end_logits"], features["start_positions"],
                                     features["end_positions"])
        return loss, {"start_loss": start, "end_loss": end}

    def predict_examples(self):
        """The questions of --predict_file, read once."""
        if self._predict_examples is None:
            examples = self.squad.read_squad_examples(self.cfg.predict_file, False, self.version_2)
            if not examples:
                raise UserError(f"{self.cfg.predict_file}: no questions")
            self._predict_examples = examples
        return self._predict_examples

    def check_splits(self) -> None:
        """Read --predict_file if --do_eval or --do_predict will, and with --do_eval its gold answers
        (one line now, not after training)."""
        if self.cfg.do_eval or self.cfg.do_predict:
            self.predict_examples()
        if self.cfg.do_eval:
            self._gold()

    def _gold(self) -> list:
        """--predict_file's articles, checked to be scorable (the gold answers, unique ids)."""
        from bert_core import metrics

        dataset = storage.read_json(self.cfg.predict_file)
        try:
            metrics.gold_answers(dataset["data"], self.version_2)
        except (KeyError, TypeError) as err:
            raise UserError(f"{self.cfg.predict_file}: cannot score it, no gold answers ({err})") from None
        return dataset["data"]

    def _predictions(self, model, dist):
        if self._predict is None:
            examples = self.predict_examples()
            features = self._features(examples, False)
            arrays = self.squad.features_to_arrays(features)
            out = predict_outputs(model, arrays, ("start_logits", "end_logits"), self.cfg.predict_batch_size,
                                  dist, self.cfg.xla)
            results = [self.squad.RawResult(int(u), s, e) for u, s, e in
                       zip(arrays["unique_ids"], out["start_logits"], out["end_logits"])]
            c = self.cfg
            if dist.is_chief:
                preds = self.squad.write_predictions(examples, features, results, c.n_best_size,
                                                     c.max_answer_length, c.do_lower_case, c.output_dir,
                                                     self.version_2, c.null_score_diff_threshold)
            else:
                preds = self.squad.compute_predictions(examples, features, results, c.n_best_size,
                                                       c.max_answer_length, c.do_lower_case, self.version_2,
                                                       c.null_score_diff_threshold)
            self._predict = preds
        return self._predict

    def predict(self, model, dist) -> list[str]:
        self._predictions(model, dist)
        files = [self.squad.PREDICTIONS_FILE, self.squad.NBEST_FILE]
        return files + ([self.squad.NULL_ODDS_FILE] if self.version_2 else [])

    def evaluate(self, model, dist) -> dict:
        from bert_core import metrics

        preds = self._predictions(model, dist)
        return metrics.squad_metrics(self._gold(), preds.predictions, version_2=self.version_2,
                                     na_probs=preds.null_odds if self.version_2 else None)

    def task_info(self) -> dict:
        return {"task_name": "squad", "version_2_with_negative": self.version_2,
                "doc_stride": self.cfg.doc_stride, "max_query_length": self.cfg.max_query_length}


# --------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class FinetuneRun:
    """What a run leaves behind in memory (for tests and for callers that go on, e.g. to export)."""

    model: object
    trainer: object
    adapter: object
    bert_config: BertConfig
    metrics: dict


def _make_tokenizers(cfg: FinetuneConfig):
    from bert_core.tokenization import FullTokenizer, load_vocab

    vocab = load_vocab(cfg.vocab_file)
    tokenizer = FullTokenizer(vocab, cfg.do_lower_case)
    tokenize_batch = None
    try:
        from bert_core.tokenization import FastTokenizer

        tokenize_batch = FastTokenizer(vocab, cfg.do_lower_case).tokenize_batch
    except ImportError:  # the Rust tokenizers package is optional: the exact path gives the same tokens
        pass
    return vocab, tokenizer, tokenize_batch


def run_finetune(cfg: FinetuneConfig) -> FinetuneRun:
    layout.check_output_dir(cfg.output_dir)
    if cfg.export_dir:  # before training, and again when the export is written
        from bert_core.export import check_export_dir

        check_export_dir(cfg.export_dir, cfg.output_dir)
    layout.check_start_vocab(cfg.vocab_file, cfg.output_dir, cfg.init_checkpoint)
    vocab, tokenizer, tokenize_batch = _make_tokenizers(cfg)
    adapter = (SquadAdapter(cfg, tokenizer) if cfg.is_squad
               else ClassifierAdapter(cfg, tokenizer, tokenize_batch))
    latest_dir = cfg.output_dir if storage.exists(cfg.output_dir) else None
    bert_config = resolve_config(cfg.model, cfg.bert_config_file, cfg.init_checkpoint, len(vocab), latest_dir)
    if cfg.max_seq_length > bert_config.max_position_embeddings:
        raise UserError(f"--max_seq_length={cfg.max_seq_length} exceeds the model's max_position_embeddings="
                        f"{bert_config.max_position_embeddings}")

    import keras

    from bert_core import checkpoints, distributed, training
    from bert_core.optimization import create_optimizer

    dist = distributed.initialize()

    def say(line: str) -> None:
        if dist.is_chief:
            print(line, flush=True)

    # Read the training data before building anything: a bad row stops the run at once.
    train_arrays = adapter.train_arrays() if cfg.do_train else None
    if not cfg.do_train and not cfg.is_squad:
        adapter.num_labels()
    adapter.check_splits()  # and every split evaluation and prediction will read

    keras.utils.set_random_seed(cfg.seed)
    training.set_precision(cfg.dtype)
    model = adapter.build_model(bert_config)
    n_train = len(train_arrays["input_ids"]) if train_arrays is not None else 0
    per_update = cfg.train_batch_size * cfg.num_accumulation_steps * dist.size
    num_train_steps = int(n_train / per_update * cfg.num_train_epochs) if cfg.do_train else 0
    if cfg.do_train and num_train_steps < 1:
        raise UserError(f"{n_train} training examples x {cfg.num_train_epochs} epochs make no full update of "
                        f"{per_update} examples; lower --train_batch_size or raise --num_train_epochs")
    num_warmup_steps = int(num_train_steps * cfg.warmup_proportion)
    optimizer = create_optimizer(cfg.optimizer_type, cfg.learning_rate, max(num_train_steps, 1), num_warmup_steps,
                                 weight_decay_rate=cfg.weight_decay_rate)
    loop_cfg = training.TrainLoopConfig(
        output_dir=cfg.output_dir, num_train_steps=num_train_steps, num_accumulation_steps=cfg.num_accumulation_steps,
        clip_norm=1.0, dtype=cfg.dtype, xla=cfg.xla, save_checkpoints_steps=cfg.save_checkpoints_steps,
        keep_checkpoints=cfg.keep_checkpoints, log_every_steps=cfg.log_every_steps)
    progress = [events.training_progress("finetune", num_train_steps)] if dist.is_chief else []
    trainer = training.Trainer(model, adapter.loss_fn, optimizer, loop_cfg, dist=dist,
                               weights_io=training.GoogleWeightsIO(), callbacks=progress)

    latest = trainer.run_dir.latest()
    if cfg.init_checkpoint and latest is None:
        say(checkpoints.load_init_checkpoint(model, cfg.init_checkpoint))
    elif cfg.init_checkpoint:
        say(f"{cfg.output_dir} holds ckpt-{latest[0]}: resuming from it, not --init_checkpoint")
    if dist.is_chief:
        layout.write_model_dir(cfg.output_dir, bert_config, cfg.vocab_file)

    settings = {"task_name": cfg.task_name, "world_size": dist.size, "dtype": cfg.dtype, "xla": cfg.xla,
                "train_batch_size_per_rank": cfg.train_batch_size,
                "num_accumulation_steps": cfg.num_accumulation_steps, "global_batch_size": per_update}
    training: dict = {}
    if cfg.do_train:
        say(f"fine-tuning {cfg.task_name}: {n_train} training examples, {cfg.num_train_epochs:g} epochs, "
            f"{num_train_steps} updates of {per_update} examples, {num_warmup_steps} warmup")
        t0 = time.time()
        ds = make_train_dataset(train_arrays, cfg.train_batch_size, dist.rank, dist.size, cfg.seed)
        result = trainer.train(ds)
        seconds = time.time() - t0
        if result.global_step > (result.resumed_from or 0):  # else the checkpoint was the last step
            training = {"num_train_examples": n_train, "num_train_epochs": cfg.num_train_epochs,
                        "num_train_steps": num_train_steps, "global_step": result.global_step,
                        "train_loss": result.loss, "train_seconds": seconds,
                        "sequences_per_second": result.sequences_per_second,
                        "resumed_from": result.resumed_from,
                        **{f"train_{k}": v for k, v in result.metrics.items()}}
    elif cfg.do_eval or cfg.do_predict or cfg.export_dir:
        if trainer.restore_weights() is None and not cfg.init_checkpoint:
            raise UserError(f"{cfg.output_dir} holds no checkpoint and no --init_checkpoint was given; "
                            f"add --do_train or point --init_checkpoint at fine-tuned weights")

    results: dict = {"global_step": int(trainer.global_step.numpy())}
    if cfg.do_eval:
        evaluated = {"global_step": results["global_step"], **adapter.evaluate(model, dist)}
        if dist.is_chief:
            write_eval_results(cfg.output_dir, evaluated, stage="finetune")
        results["eval"] = evaluated
    if cfg.do_predict:
        files = adapter.predict(model, dist)
        say(f"wrote {', '.join(os.path.join(cfg.output_dir, f) for f in files)}")
        results["predictions"] = files
    if cfg.export_dir and dist.is_chief:
        from bert_core import export

        info = {**adapter.task_info(), "max_seq_length": cfg.max_seq_length, "do_lower_case": cfg.do_lower_case,
                "global_step": results["global_step"]}
        export.export_saved_model(model, cfg.export_dir, cfg.max_seq_length, adapter.kind, extra_files={
            layout.VOCAB: storage.read_bytes(cfg.vocab_file), layout.BERT_CONFIG: bert_config.to_json_string(),
            layout.TASK_INFO: json.dumps(info, indent=2) + "\n"}, output_dir=cfg.output_dir)
        say(f"exported a SavedModel to {cfg.export_dir} (signature serving_default)")
        results["export_dir"] = cfg.export_dir
    metrics = {**settings, **training, **results}
    if dist.is_chief:
        metrics = write_run_metrics(os.path.join(cfg.output_dir, layout.FINETUNE_METRICS), "finetune",
                                    settings, training, results)
    return FinetuneRun(model, trainer, adapter, bert_config, metrics)


def finetune_main(cfg: FinetuneConfig) -> int:
    with lease.hold(cfg.output_dir, "finetune", ranks="horovod"):  # no other run writes output_dir meanwhile
        run_finetune(cfg)
    return 0
