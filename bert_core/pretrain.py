"""`bert pretrain`: pretraining TFRecords -> BERT checkpoints, as Google's run_pretraining.py.

    bert pretrain --input_file='data/train-*.tfrecord' --output_dir=out --model=bert-mini \
        --do_train --do_eval --train_batch_size=32 --num_train_steps=10000 --num_warmup_steps=1000

One process without a launcher; N under `horovodrun -np N ...` or `mpirun -np N ...`, where
--train_batch_size is per rank and each rank reads its own share of the records. The loop is
bert_core.training (the one fine-tuning uses too); this module turns the config into its inputs:

  data      each rank's records -> shuffle -> repeat -> parse -> batch (drop remainder) -> prefetch
  model     BertPretrainer from --bert_config_file or --model, weights from --init_checkpoint
  loss      Google's masked-LM + next-sentence loss (bert_core.losses.pretraining_loss)
  outputs   output_dir is a model directory as Google's releases (bert_core.layout): bert_config.json,
            vocab.txt (--vocab_file, else the one data_manifest.json names), and
            ckpt-<step>/model.ckpt-<step> (Google's variable names) + training state; beside them
            eval_results.txt and eval_results.json, pretrain_metrics.json

Before training, the records are checked (the first --check_records of every file): the features and
their lengths must match --max_seq_length/--max_predictions_per_seq, and token ids must be below the
model's vocab_size (an id past the embedding table is a silent NaN or garbage on accelerators, the
hazard Google's README warns about). Every batch is checked again in the input pipeline.
"""

from __future__ import annotations

import contextlib
import os
import re
import time

from bert_core import events, layout, lease, storage
from bert_core.config import PretrainConfig
from bert_core.data import manifest
from bert_core.errors import UserError
from bert_core.evaluation import write_eval_results
from bert_core.run_metrics import write_run_metrics

_EVAL_KEYS = ("masked_lm_accuracy", "masked_lm_loss", "next_sentence_accuracy", "next_sentence_loss")


# --------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------
def input_files(spec: str) -> list[str]:
    from bert_core.data.corpus import expand_inputs
    from bert_core.data.tfrecord import detect_compression

    files = expand_inputs(spec)
    files = [f for f in files if os.path.basename(f) != layout.DATA_MANIFEST]
    if not files:
        raise UserError(f"--input_file={spec}: no TFRecord files")
    kinds = {f: detect_compression(f) for f in files}
    if len(set(kinds.values())) > 1:
        gz = next(f for f, k in kinds.items() if k == "gzip")
        plain = next(f for f, k in kinds.items() if k == "none")
        raise UserError(f"--input_file mixes GZIP ({gz}) and plain ({plain}) TFRecords; use one kind per run")
    return files


def check_records(files: list[str], max_seq_length: int, max_predictions_per_seq: int, vocab_size: int,
                  limit: int, skip_damaged: bool = False) -> int:
    """Read up to `limit` records of every file (local or gs://, through bert_core.storage: only the
    first records are fetched); raise one UserError line at the first problem. With `skip_damaged`, a
    damaged record (framing, checksums, gzip) ends its file's check with a line, as training skips the
    rest of that file."""
    import itertools

    import numpy as np
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    from bert_core.data.tfrecord import iter_records

    want = layout.record_lengths(max_seq_length, max_predictions_per_seq)
    checked = 0
    for path in files:
        try:
            for i, raw in enumerate(itertools.islice(iter_records(path), limit)):
                ex = tf.train.Example.FromString(raw).features.feature
                for name, length in want.items():
                    if name not in ex:
                        raise UserError(f"{path}: record {i}: no feature {name!r}; expected the pretraining "
                                        f"features {', '.join(layout.PRETRAINING_FEATURES)} (bert create-data "
                                        f"writes them)")
                    f = ex[name]
                    values = f.float_list.value if name in layout.FLOAT_FEATURES else f.int64_list.value
                    if len(values) != length:
                        flag = layout.length_flag(name)
                        raise UserError(f"{path}: record {i}: {name} has length {len(values)} but "
                                        + (f"{flag}={length}; rerun with {flag}={len(values)} or regenerate "
                                           f"the data" if flag else f"expected {length}"))
                for name in layout.TOKEN_ID_FEATURES:
                    ids = np.asarray(ex[name].int64_list.value)
                    if ids.size and (ids.max() >= vocab_size or ids.min() < 0):
                        bad = int(ids.max() if ids.max() >= vocab_size else ids.min())
                        raise UserError(f"{path}: record {i}: {name} holds token id {bad} but the model's "
                                        f"vocab_size is {vocab_size}; the data was made with a different "
                                        f"vocab.txt than the model's config")
                checked += 1
        except (ValueError, OSError, EOFError, DecodeError) as err:  # framing, checksums, gzip, protobuf
            if skip_damaged and not isinstance(err, DecodeError):
                print(f"{str(err).splitlines()[0]}: skipping the rest of {path} (--skip_damaged_records)", flush=True)
                continue
            raise UserError(f"{path}: not a readable TFRecord file ({str(err).splitlines()[0]})") from None
    return checked


def _rank_files(files: list[str], rank: int, size: int) -> tuple[list[str], bool]:
    """(the files this rank reads, whether it keeps only every N-th record of them): its share from
    bert_core.data.manifest.split_files (by the manifest's record counts, empty files left out, each
    record to exactly one rank per pass), object-storage files as node-local copies."""
    from bert_core import staging

    mine, record_shard = manifest.split_files(files, rank, size)
    # tf.data reads through TF's own filesystem: gs:// files are read from a node-local copy.
    mine = staging.stage(mine, log=(lambda line: print(line, flush=True)) if rank == 0 else None)
    return mine, record_shard


def _batches(files: list[str], cfg: PretrainConfig, rank: int, size: int, vocab_size: int, training: bool):
    import tensorflow as tf

    from bert_core.data import tfrecord

    mine, record_shard = _rank_files(files, rank, size)
    ds = tfrecord.make_dataset(mine, cfg.max_seq_length, cfg.max_predictions_per_seq,
                               num_parallel_reads=min(4, len(mine)) if len(mine) > 1 else None,
                               skip_damaged=cfg.skip_damaged_records)
    if record_shard:
        ds = ds.shard(size, rank)
    if training:
        ds = ds.shuffle(cfg.shuffle_buffer_size, seed=cfg.random_seed + rank, reshuffle_each_iteration=True)
        ds = ds.repeat()
    ds = ds.batch(cfg.train_batch_size if training else cfg.eval_batch_size, drop_remainder=True)

    def check_ids(features):
        # The pre-training check reads a sample; this guards every batch (cheap: two max reductions).
        for name in layout.TOKEN_ID_FEATURES:
            tf.debugging.assert_less(features[name], tf.cast(vocab_size, features[name].dtype),
                                     message=f"{name} holds a token id >= vocab_size={vocab_size}")
        return features

    ds = ds.map(check_ids, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def make_train_dataset(files: list[str], cfg: PretrainConfig, rank: int, size: int, vocab_size: int):
    """This rank's training batches: its records shuffled, repeated endlessly, --train_batch_size each."""
    return _batches(files, cfg, rank, size, vocab_size, training=True)


def make_eval_dataset(files: list[str], cfg: PretrainConfig, rank: int, size: int, vocab_size: int):
    """This rank's eval batches: its records once, in order, --eval_batch_size each."""
    return _batches(files, cfg, rank, size, vocab_size, training=False)


@contextlib.contextmanager
def input_errors(files: list[str], cfg: PretrainConfig):
    """The input pipeline's errors that surface mid-run, in the loop's next batch, as one line each: a
    damaged record past the checked ones (the file and the record's offset) and a token id past the vocab."""
    import tensorflow as tf

    try:
        yield
    except tf.errors.DataLossError as err:
        from bert_core.data.tfrecord import find_damage

        damage = find_damage(files) or f"--input_file={cfg.input_file}: {err.message.split('}}')[-1].strip()}"
        raise UserError(f"{damage}; regenerate the file (bert create-data), or pass --skip_damaged_records to go on "
                        f"without the rest of a damaged file") from None
    except tf.errors.InvalidArgumentError as err:
        found = re.search(rf"({'|'.join(layout.TOKEN_ID_FEATURES)}) holds a token id >= vocab_size=\d+", str(err))
        if found:
            raise UserError(f"{cfg.input_file}: a record's {found.group(0)}; the data was made with a different "
                            f"vocab.txt than the model's config") from None
        raise


# --------------------------------------------------------------------------------------------------
# Model and loss
# --------------------------------------------------------------------------------------------------
def vocab_size_hint(cfg: PretrainConfig, files: list[str]) -> int | None:
    if cfg.vocab_file:
        with storage.open_read(cfg.vocab_file, "rb") as f:
            return sum(1 for line in f if line.strip())
    return manifest.vocab_entry(files).get("size")


def vocab_source(cfg: PretrainConfig, files: list[str]) -> str | None:
    """The vocab.txt the model directory gets: --vocab_file, else the one data_manifest.json names if
    it is still there, unchanged (its sha256)."""
    if cfg.vocab_file:
        return cfg.vocab_file
    import hashlib

    entry = manifest.vocab_entry(files)
    path = entry.get("path")
    if not (path and storage.exists(path)):
        return None
    return path if hashlib.sha256(storage.read_bytes(path)).hexdigest() == entry.get("sha256") else None


def pretraining_loss_fn(outputs, features, ops):
    """Google's loss; metrics as (total, count) so evaluation gets the exact weighted means that
    run_pretraining.py's tf.metrics.accuracy / tf.metrics.mean report."""
    from bert_core.losses import pretraining_loss

    loss, m = pretraining_loss(outputs, features, ops)
    return loss, {
        "masked_lm_accuracy": (m["masked_lm_correct"], m["masked_lm_weight_sum"]),
        "masked_lm_loss": (m["masked_lm_loss_sum"], m["masked_lm_weight_sum"]),
        "next_sentence_accuracy": (m["next_sentence_correct"], m["next_sentence_count"]),
        "next_sentence_loss": (m["next_sentence_loss_sum"], m["next_sentence_count"]),
    }


# --------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------
def pretrain_main(cfg: PretrainConfig) -> int:
    layout.check_output_dir(cfg.output_dir)
    with lease.hold(cfg.output_dir, "pretrain", ranks="horovod"):  # no other run writes output_dir meanwhile
        return _pretrain(cfg)


def _pretrain(cfg: PretrainConfig) -> int:
    files = input_files(cfg.input_file)
    manifest.check_files(files, cfg.vocab_file)  # membership, sizes, vocab sha256 against data_manifest.json
    if cfg.vocab_file:
        layout.check_start_vocab(cfg.vocab_file, cfg.output_dir, cfg.init_checkpoint)

    import keras
    import tensorflow as tf

    from bert_core import checkpoints, distributed, training
    from bert_core.modeling import BertPretrainer
    from bert_core.optimization import create_optimizer
    from bert_core.presets import resolve_bert_config

    dist = distributed.initialize()
    bert_config = resolve_bert_config(cfg.model, cfg.bert_config_file, vocab_size_hint(cfg, files))
    if cfg.max_seq_length > bert_config.max_position_embeddings:
        raise UserError(f"--max_seq_length={cfg.max_seq_length} exceeds the model's max_position_embeddings="
                        f"{bert_config.max_position_embeddings}")
    if cfg.check_records:
        # Each rank checks a share of the files; a problem anywhere stops every rank before training
        # (a rank that raised alone would leave the others waiting in the first allreduce).
        problem = None
        try:
            check_records(files[dist.rank::dist.size], cfg.max_seq_length, cfg.max_predictions_per_seq,
                          bert_config.vocab_size, cfg.check_records, cfg.skip_damaged_records)
        except UserError as err:
            problem = err
        if dist.size > 1:
            (bad,) = dist.allreduce_sum([tf.constant(0.0 if problem is None else 1.0)])
            if problem is None and float(bad) > 0:
                problem = UserError("another rank found bad input records (see its message); stopping")
        if problem is not None:
            raise problem

    if dist.is_chief:
        vocab = vocab_source(cfg, files)
        layout.write_model_dir(cfg.output_dir, bert_config, vocab)
        if vocab is None:
            print(f"{cfg.output_dir}: no vocab.txt beside the checkpoints (give --vocab_file; the data's "
                  f"manifest names none that still exists)", flush=True)
        events.emit("wrote", "pretrain", path=cfg.output_dir)

    keras.utils.set_random_seed(cfg.random_seed)
    training.set_precision(cfg.dtype)
    model = BertPretrainer(bert_config)
    model.build()
    learning_rate = cfg.learning_rate * (dist.size if cfg.scale_lr_by_workers else 1)
    optimizer = create_optimizer(cfg.optimizer_type, learning_rate, max(cfg.num_train_steps, 1),
                                 cfg.num_warmup_steps)
    loop_cfg = training.TrainLoopConfig(
        output_dir=cfg.output_dir, num_train_steps=cfg.num_train_steps,
        num_accumulation_steps=cfg.num_accumulation_steps, clip_norm=1.0, dtype=cfg.dtype, xla=cfg.xla,
        save_checkpoints_steps=cfg.save_checkpoints_steps, keep_checkpoints=cfg.keep_checkpoints,
        log_every_steps=cfg.log_every_steps, fp16_allreduce=cfg.fp16_allreduce)
    progress = [events.training_progress("pretrain", cfg.num_train_steps)] if dist.is_chief else []
    trainer = training.Trainer(model, pretraining_loss_fn, optimizer, loop_cfg, dist=dist,
                               weights_io=training.GoogleWeightsIO(), callbacks=progress)

    latest = trainer.run_dir.latest()
    if cfg.init_checkpoint and latest is None:
        trainer.log(checkpoints.load_init_checkpoint(model, cfg.init_checkpoint))
    elif cfg.init_checkpoint:
        trainer.log(f"{cfg.output_dir} holds ckpt-{latest[0]}: resuming from it, not --init_checkpoint")

    settings = {"world_size": dist.size, "dtype": cfg.dtype, "xla": cfg.xla,
                "train_batch_size_per_rank": cfg.train_batch_size,
                "num_accumulation_steps": cfg.num_accumulation_steps,
                "global_batch_size": cfg.train_batch_size * cfg.num_accumulation_steps * dist.size}
    training: dict = {}
    done: dict = {}  # what the run did with the weights: run_metrics' results
    t0 = time.time()
    with input_errors(files, cfg):
        if cfg.do_train:
            result = trainer.train(make_train_dataset(files, cfg, dist.rank, dist.size, bert_config.vocab_size))
            if result.global_step > (result.resumed_from or 0):  # else the checkpoint was the last step
                training = {"global_step": result.global_step, "train_loss": result.loss,
                            "sequences_per_second": result.sequences_per_second,
                            "train_seconds": time.time() - t0, "resumed_from": result.resumed_from,
                            **{f"train_{k}": v for k, v in result.metrics.items()}}
        if cfg.do_eval:
            if not cfg.do_train:
                if trainer.restore_weights() is None and not cfg.init_checkpoint:
                    raise UserError(f"--do_eval without --do_train: {cfg.output_dir} holds no checkpoint "
                                    f"and no --init_checkpoint was given")
            eval_ds = make_eval_dataset(files, cfg, dist.rank, dist.size, bert_config.vocab_size)
            results = trainer.evaluate(eval_ds, max_steps=cfg.max_eval_steps)
            results = {"global_step": results["global_step"], "loss": results["loss"],
                       **{k: results[k] for k in _EVAL_KEYS}}
            if dist.is_chief:
                write_eval_results(cfg.output_dir, results, stage="pretrain")
            done["eval"] = results
    if dist.is_chief:
        write_run_metrics(os.path.join(cfg.output_dir, layout.PRETRAIN_METRICS), "pretrain", settings, training,
                          {"global_step": int(trainer.global_step.numpy()), **done})
    return 0
