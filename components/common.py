"""What every stage component shares: its image, running a `bert` subcommand, logging numbers.

Component functions import this module inside their bodies (KFP ships only the function's source;
the stage image carries bert_core and components/). It must not import kfp's DSL: at run time KFP
sets _KFP_RUNTIME, under which `kfp.dsl.component` does not exist, so a module that defines
components cannot be imported by one. Nothing here knows TensorFlow: a stage is run by
its `bert` subcommand's target in bert_core.stages.COMMANDS, with that command's own config class.
Components only map artifacts to paths; the files inside an artifact are bert_core.layout's.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys


def base_image(stage: str) -> str:
    """The stage's container image, from the one setting in components/images.py."""
    from components import images

    return images.image(stage)


def stage_config(name: str, **fields):
    """The `bert <name>` config from keyword fields; a bad value is one UserError line, as on the CLI."""
    import pydantic

    from bert_core.config import describe_validation_error
    from bert_core.errors import UserError
    from bert_core.stages import command

    try:
        return command(name).config(**fields)
    except pydantic.ValidationError as err:
        raise UserError(f"{name}: {describe_validation_error(err)}") from None


# --------------------------------------------------------------------------------------------------
# Each stage component's config from its inputs, artifacts given as the paths the step reads or writes.
# The components build their configs here, and `bert-pipeline run/submit/schedule` builds them here
# before the first step (with stand-in paths), so a bad value is found before any step runs.
# --------------------------------------------------------------------------------------------------
def prepare_corpus_config(corpus_uri: str, corpus_format: str, prepared: str = "prepared",
                          corpus_text_field: str = "text"):
    """`bert prepare-corpus`'s config for a user's corpus (any format) into the directory `prepared`;
    None for the embedded default (no corpus_uri)."""
    if not corpus_uri:
        return None
    return stage_config("prepare-corpus", input_file=corpus_uri, output_dir=prepared, corpus_format=corpus_format,
                        text_field=corpus_text_field)


def learn_vocab_config(corpus: str, vocab: str, vocab_uri: str, vocab_size: int, do_lower_case: bool):
    """`bert learn-vocab`'s config, or None when vocab_uri gives the vocab (the step copies it)."""
    if vocab_uri:
        return None
    return stage_config("learn-vocab", input_file=corpus, output_file=vocab, vocab_size=vocab_size,
                        do_lower_case=do_lower_case)


def create_data_config(corpus: str, vocab: str, data: str, **flags):
    """`bert create-data`'s config: the corpus and vocab into the data directory; `flags` by name."""
    return stage_config("create-data", input_file=corpus, vocab_file=vocab, output_dir=data, **flags)


def pretrain_config(data: str, vocab: str, model: str, launcher: str, bert_model: str, bert_config: dict,
                    init_checkpoint: str = "", **flags):
    """`bert pretrain --do_train --do_eval`'s config: the shards in `data` into the model directory
    `model`; the shape is `bert_model`, or `bert_config` (checked here; run_pretraining writes it where
    the model directory keeps its config); `flags` by name."""
    from bert_core import layout, storage
    from bert_core.config import BertConfig
    from bert_core.errors import UserError

    if launcher not in ("local", "mpijob"):
        raise UserError(f"launcher={launcher!r}: expected local or mpijob")
    if bert_config:
        BertConfig.from_dict(bert_config, source="bert_config")
        shape = {"bert_config_file": layout.model_config_path(model)}
    else:
        shape = {"model": bert_model}
    return stage_config(
        "pretrain", input_file=storage.join(data, layout.SHARD_GLOB), output_dir=model, vocab_file=vocab,
        **shape, do_train=True, do_eval=True, **({"init_checkpoint": init_checkpoint} if init_checkpoint else {}),
        **flags)


def finetune_config(pretrained: str, task_data: str, model: str, task_data_uri: str, text_b_column: str,
                    labels: str, task_module: str = "", **flags):
    """`bert finetune --do_train --do_eval --do_predict --export_dir`'s config: from the pretrained
    model directory, on task_data_uri or else the task_data artifact, into `model` (its SavedModel in
    model/saved_model); empty text_b_column, labels and task_module are unset; `flags` by name."""
    from bert_core import layout, storage

    return stage_config(
        "finetune", data_dir=task_data_uri or task_data, output_dir=model,
        vocab_file=layout.model_vocab_path(pretrained), bert_config_file=layout.model_config_path(pretrained),
        init_checkpoint=pretrained, do_train=True, do_eval=True, do_predict=True,
        text_b_column=text_b_column or None, labels=labels or None, task_module=task_module or None,
        export_dir=storage.join(model, layout.SAVED_MODEL_DIR), **flags)


def evaluate_config(task_data: str, predictions: str, metrics: str, task_data_uri: str, text_b_column: str,
                    labels: str, eval_split: str, task_module: str = "", **flags):
    """`bert evaluate`'s config: the predictions against task_data_uri or else the task_data artifact,
    metrics.json into `metrics`; empty text_b_column, labels, eval_split and task_module are unset;
    `flags` by name."""
    return stage_config(
        "evaluate", output_dir=metrics, data_dir=task_data_uri or task_data, predictions_file=predictions,
        eval_split=eval_split or None, text_b_column=text_b_column or None, labels=labels or None,
        task_module=task_module or None, **flags)


def pretrain_phase2_config(init_model: str, data: str, vocab: str, model: str, launcher: str, bert_model: str,
                           bert_config: dict, **flags):
    """Phase 2's `bert pretrain` config: phase 1's model directory is the initial checkpoint."""
    return pretrain_config(data, vocab, model, launcher, bert_model, bert_config, init_checkpoint=init_model,
                           **flags)


def publish_config(pretrained: str, tuned: str, eval_metrics: str, task_data: str, data: str, decision: str,
                   registry_uri: str, model_name: str, gate_rule: str, parent_version: int, run_id: str, **flags):
    """`bert publish`'s config: the pretrained model directory as the candidate, the fine-tuned model's
    SavedModel, evaluate's metrics.json and the task directory for the gate, the data manifest for the
    lineage, the decision as Markdown into `decision`; `flags` by name."""
    from bert_core import layout, storage

    return stage_config(
        "publish", registry=registry_uri or "unset", model_name=model_name, model_dir=pretrained,
        saved_model_dir=storage.join(tuned, layout.SAVED_MODEL_DIR),
        finetune_metrics=storage.join(eval_metrics, layout.EVAL_METRICS), task_data_dir=task_data,
        data_manifest=storage.join(data, layout.DATA_MANIFEST), gate_rule=gate_rule,
        parent_version=parent_version, run_id=run_id, decision_file=decision, **flags)


def resolve_start_point(registry_uri: str, model_name: str, init_from: str, init_checkpoint: str,
                        vocab_uri: str) -> dict:
    """Where pretraining starts: {init_checkpoint, vocab_uri, parent_version, reason}.

    A model name has one vocab: with a version published in the registry, the run uses its vocab.txt
    (a vocab_uri that differs is one line: a new vocab is a new model name), and with
    init_from=published it also starts from that version's weights (its directory as init_checkpoint).
    With init_from=scratch the weights start afresh (or from the pipeline's init_checkpoint). With no
    registry, or nothing published yet: the pipeline's own init_checkpoint and vocab_uri."""
    import hashlib

    from bert_core import layout, registry, storage
    from bert_core.errors import UserError

    if init_from not in ("published", "scratch"):
        raise UserError(f"init_from={init_from!r}: expected published or scratch")
    own = {"init_checkpoint": init_checkpoint, "vocab_uri": vocab_uri, "parent_version": 0}
    scratch = "from scratch" + (f" (init_checkpoint {init_checkpoint})" if init_checkpoint else "")
    if not registry_uri:
        return {**own, "reason": scratch}
    reg = registry.Registry(registry_uri)
    version = reg.published(registry.check_name(model_name))
    if version is None:
        return {**own, "reason": f"from scratch: nothing of {model_name} is published in {registry_uri} yet"}
    if init_checkpoint and init_from == "published":
        raise UserError(f"init_checkpoint={init_checkpoint} and init_from=published ({model_name}:{version} is "
                        f"published): give one (init_from=scratch to start from init_checkpoint)")
    path = reg.require_version(model_name, version)
    parent_vocab = layout.model_vocab_path(path)
    if vocab_uri:
        given, kept = storage.read_bytes(vocab_uri), storage.read_bytes(parent_vocab)
        if given != kept:
            raise UserError(f"vocab_uri={vocab_uri} (sha256 {hashlib.sha256(given).hexdigest()[:12]}) is not the "
                            f"vocab of {model_name}:{version} ({hashlib.sha256(kept).hexdigest()[:12]}): a changed "
                            f"vocab is a new model, give another model_name")
    if init_from == "scratch":
        return {**own, "vocab_uri": parent_vocab, "reason": f"{scratch}, with {model_name}:{version}'s vocab"}
    return {"init_checkpoint": path, "vocab_uri": parent_vocab, "parent_version": version,
            "reason": f"continuing {model_name}:{version} ({path}), keeping its vocab"}


#: {component function: (its `bert` subcommand, the function that builds that config from its inputs)}
STAGE_CONFIGS = {
    "prepare_corpus": ("prepare-corpus", prepare_corpus_config),
    "learn_vocab": ("learn-vocab", learn_vocab_config),
    "create_data": ("create-data", create_data_config),
    "pretrain": ("pretrain", pretrain_config),
    "pretrain_phase2": ("pretrain", pretrain_phase2_config),
    "finetune": ("finetune", finetune_config),
    "evaluate": ("evaluate", evaluate_config),
    "publish": ("publish", publish_config),
}


def bert_argv(name: str, config) -> list[str]:
    """`bert <name> --field=value ...` for the fields the config was given (the inverse of the CLI)."""
    from bert_core.stages import config_argv

    return [name, *config_argv(config)]


def run_stage(name: str, config, num_processes: int = 1) -> None:
    """Run `bert <name>`: in this process for one process, else `horovodrun -np N` on this host.

    The step ends with `bert-pipeline run` when that started it (bert_core.children), and horovodrun
    with the step (horovodrun ends its ranks when it is killed)."""
    from bert_core import children
    from bert_core.errors import UserError
    from bert_core.stages import run_stage as run_here

    children.exit_with_owner_from_env()
    if num_processes <= 1:
        code = run_here(name, config)
        if code:
            raise UserError(f"bert {name} exited with status {code}")
        return
    runner = shutil.which("horovodrun", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if runner is None:
        raise UserError("horovodrun not found: install Horovod, or run with num_processes=1")
    cmd = [runner, "-np", str(num_processes), "-H", f"localhost:{num_processes}", "--gloo",
           sys.executable, "-m", "bert_core.cli", *bert_argv(name, config)]
    print("+ " + " ".join(cmd), flush=True)
    proc = subprocess.run(children.dying_with_this_process(cmd))
    if proc.returncode:
        raise UserError(f"bert {name} under horovodrun -np {num_processes} exited with status {proc.returncode} "
                        f"(see the ranks' log above)")


def numbers(obj: dict, prefix: str = "") -> dict[str, float]:
    """The finite numbers of a (nested) metrics document, keys dotted: what KFP's Metrics can show."""
    out: dict[str, float] = {}
    for key, value in obj.items():
        if isinstance(value, dict):
            out.update(numbers(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[f"{prefix}{key}"] = float(value)
    return out


def log_numbers(metrics, obj: dict, prefix: str = "") -> dict[str, float]:
    """`log_metric` every number of `obj` on a KFP Metrics artifact; returns them."""
    values = numbers(obj, prefix)
    for key, value in values.items():
        metrics.log_metric(key, value)
    return values


def run_pretraining(data, vocab, model, metrics, launcher: str, num_processes: int, bert_model: str,
                    bert_config: dict, mpijob_workers: int, mpijob_gpus_per_worker: int, timeout_seconds: int,
                    init_checkpoint: str = "", report=None, stage: str = "pretrain", **flags) -> None:
    """What both pretraining components do (phase 1 and phase 2 differ only in their inputs).

    `flags` are `bert pretrain` flags (PretrainConfig fields); the artifacts give the paths: the
    shards in `data`, `vocab`, and `model` for the output, which `bert pretrain` makes a
    self-contained model directory (bert_core.layout). A `bert_config` given as a pipeline parameter
    has no file: it is written where the model directory keeps its config, and read from there."""
    from bert_core import layout, storage
    from bert_core.config import BertConfig

    # The MPIJob's pods see only object storage: they get the artifacts' URIs, the step's host its paths.
    remote = launcher == "mpijob"
    out = model.uri if remote else model.path
    config = pretrain_config(data.uri if remote else data.path, vocab.uri if remote else vocab.path, out,
                             launcher, bert_model, bert_config, init_checkpoint, **flags)
    if bert_config:
        storage.makedirs(out)
        storage.write_text(layout.model_config_path(out), BertConfig.from_dict(bert_config).to_json_string())
    if remote:
        from bert_core import events
        from components.launcher import launch
        from components.mpijob import PretrainJob

        job = PretrainJob(workers=mpijob_workers, gpus_per_worker=mpijob_gpus_per_worker,
                          pretrain_flags={k: getattr(config, k) for k in config.model_fields_set})
        with events.reporting_errors("pretrain"):
            launch(job, timeout_seconds=timeout_seconds or None)
    else:
        run_stage("pretrain", config, num_processes=num_processes)
    results = storage.read_json(storage.join(out, layout.PRETRAIN_METRICS))
    log_numbers(metrics, results)
    bert = BertConfig.from_json_file(layout.model_config_path(out))
    model.metadata.update({"global_step": results.get("global_step"), "max_seq_length": flags["max_seq_length"],
                           "hidden_size": bert.hidden_size, "num_hidden_layers": bert.num_hidden_layers,
                           "vocab_size": bert.vocab_size, "world_size": results.get("world_size"),
                           "tensorboard": storage.join(model.uri, layout.SUMMARIES_DIR)})
    if report is not None:
        from bert_core.reports import training_report

        write_report(report, training_report, out, stage)


def log_classification(classification, details: dict) -> None:
    """A classification task's eval_details.json (bert_core.report_data) on a KFP ClassificationMetrics
    artifact, which the KFP UI draws: the confusion matrix with the label names, and the ROC curve of
    a binary task. Regression and SQuAD leave it empty (their pictures are in the HTML report)."""
    from bert_core import report_data

    if details.get("kind") != report_data.CLASSIFICATION:
        return
    classification.log_confusion_matrix(details["labels"], details["confusion_matrix"])
    if roc := details.get("roc"):
        classification.log_roc_curve(roc["fpr"], roc["tpr"], roc["thresholds"])


def write_report(report, build, *args) -> None:
    """A stage's HTML report (bert_core.reports: `build(*args)` -> the page) as the KFP HTML artifact
    `report`. The stage's work is done and published by then: a report that cannot be drawn is a
    page saying why (and a line in the log), not a failed step."""
    from bert_core.reports import page, write_html

    try:
        html = build(*args)
    except Exception as err:  # noqa: BLE001 - the stage's outputs stand; say what the report lacks
        line = f"the report could not be drawn: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        print(f"warning: {line}", flush=True)
        html = page.render("report", [page.note(line)])
    write_html(report.path, html)
