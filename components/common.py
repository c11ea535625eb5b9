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
                    init_checkpoint: str = "", **flags) -> None:
    """What both pretraining components do (phase 1 and phase 2 differ only in their inputs).

    `flags` are `bert pretrain` flags (PretrainConfig fields); the artifacts give the paths: the
    shards in `data`, `vocab`, and `model` for the output, which `bert pretrain` makes a
    self-contained model directory (bert_core.layout). A `bert_config` given as a pipeline parameter
    has no file: it is written where the model directory keeps its config, and read from there."""
    from bert_core import layout, storage
    from bert_core.config import BertConfig
    from bert_core.errors import UserError

    if launcher not in ("local", "mpijob"):
        raise UserError(f"launcher={launcher!r}: expected local or mpijob")
    # The MPIJob's pods see only object storage: they get the artifacts' URIs, the step's host its paths.
    remote = launcher == "mpijob"
    out = model.uri if remote else model.path
    data_dir = data.uri if remote else data.path
    if bert_config:
        storage.makedirs(out)
        storage.write_text(layout.model_config_path(out),
                           BertConfig.from_dict(bert_config, source="bert_config").to_json_string())
        shape = {"bert_config_file": layout.model_config_path(out)}
    else:
        shape = {"model": bert_model}
    config = stage_config(
        "pretrain", input_file=storage.join(data_dir, layout.SHARD_GLOB), output_dir=out,
        vocab_file=vocab.uri if remote else vocab.path, **shape, do_train=True, do_eval=True,
        **({"init_checkpoint": init_checkpoint} if init_checkpoint else {}), **flags)
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
                           "vocab_size": bert.vocab_size, "world_size": results.get("world_size")})
