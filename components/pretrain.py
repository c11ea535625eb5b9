"""Stage 2, pretraining: `bert pretrain` on the step's own host (launcher=local: one process, or
`horovodrun -np N`) or as an MPIJob on the cluster (launcher=mpijob: components/launcher.py).

Phase 2 (Google's seq-512 phase) is the same component again with `init_model` = phase 1's Model.
The Model artifact is a directory laid out like Google's releases: bert_config.json, vocab.txt and
the checkpoints (`ckpt-<step>/model.ckpt-<step>`, found by tf.train.latest_checkpoint).
"""


from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from components.common import base_image


@dsl.component(base_image=base_image("pretrain"), install_kfp_package=False)
def pretrain(data: Input[Dataset], vocab: Input[Artifact], init_checkpoint: str, launcher: str,
             num_processes: int, bert_model: str, bert_config: dict, max_seq_length: int,
             max_predictions_per_seq: int, train_batch_size: int, learning_rate: float, num_train_steps: int,
             num_warmup_steps: int, optimizer_type: str, dtype: str, num_accumulation_steps: int,
             save_checkpoints_steps: int, log_every_steps: int, max_eval_steps: int, random_seed: int,
             mpijob_workers: int, mpijob_gpus_per_worker: int, timeout_seconds: int,
             model: Output[Model], metrics: Output[Metrics], report: Output[HTML]):
    """`bert pretrain --do_train --do_eval` from scratch, or from init_checkpoint (Google's or Hugging
    Face weights); pretrain_metrics.json's numbers as Metrics, its curves as an HTML report."""
    args = dict(locals())
    from components.common import run_pretraining

    run_pretraining(**args)


@dsl.component(base_image=base_image("pretrain"), install_kfp_package=False)
def pretrain_phase2(data: Input[Dataset], vocab: Input[Artifact], init_model: Input[Model], launcher: str,
                    num_processes: int, bert_model: str, bert_config: dict, max_seq_length: int,
                    max_predictions_per_seq: int, train_batch_size: int, learning_rate: float,
                    num_train_steps: int, num_warmup_steps: int, optimizer_type: str, dtype: str,
                    num_accumulation_steps: int, save_checkpoints_steps: int, log_every_steps: int,
                    max_eval_steps: int, random_seed: int, mpijob_workers: int, mpijob_gpus_per_worker: int,
                    timeout_seconds: int, model: Output[Model], metrics: Output[Metrics], report: Output[HTML]):
    """Phase 2 (longer sequences): `bert pretrain` from phase 1's Model."""
    args = dict(locals())
    from components.common import run_pretraining

    init = args.pop("init_model")
    run_pretraining(init_checkpoint=init.uri if launcher == "mpijob" else init.path, stage="pretrain-phase2", **args)
