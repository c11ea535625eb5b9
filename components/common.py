"""What every stage component shares: its image, running a `bert` subcommand, logging numbers.

Component functions import this module inside their bodies (KFP ships only the function's source;
the stage image carries bert_core and components/). It must not import kfp's DSL: at run time KFP
sets _KFP_RUNTIME, under which `kfp.dsl.component` does not exist, so a module that defines
components cannot be imported by one. Nothing here knows TensorFlow: a stage is run by
its `bert` subcommand's target in bert_core.cli.COMMANDS, with that command's own config class.
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


def _command(name: str):
    from bert_core.cli import COMMANDS
    from bert_core.errors import UserError

    for command in COMMANDS:
        if command.name == name:
            return command
    raise UserError(f"this bert has no `{name}` subcommand (have: {', '.join(c.name for c in COMMANDS)})")


def stage_config(name: str, **fields):
    """The `bert <name>` config from keyword fields; a bad value is one UserError line, as on the CLI."""
    import pydantic

    from bert_core.config import describe_validation_error
    from bert_core.errors import UserError

    try:
        return _command(name).config(**fields)
    except pydantic.ValidationError as err:
        raise UserError(f"{name}: {describe_validation_error(err)}") from None


def bert_argv(name: str, config) -> list[str]:
    """`bert <name> --field=value ...` for the fields the config was given (the inverse of the CLI)."""
    from bert_core.cli import config_argv

    return [name, *config_argv(config)]


def run_stage(name: str, config, num_processes: int = 1) -> None:
    """Run `bert <name>`: in this process for one process, else `horovodrun -np N` on this host."""
    import importlib

    from bert_core.errors import UserError

    if num_processes <= 1:
        module_name, func_name = _command(name).target.split(":")
        code = getattr(importlib.import_module(module_name), func_name)(config)
        if code:
            raise UserError(f"bert {name} exited with status {code}")
        return
    runner = shutil.which("horovodrun", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if runner is None:
        raise UserError("horovodrun not found: install Horovod, or run with num_processes=1")
    cmd = [runner, "-np", str(num_processes), "-H", f"localhost:{num_processes}", "--gloo",
           sys.executable, "-m", "bert_core.cli", *bert_argv(name, config)]
    print("+ " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd)
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
    shards in `data`, `vocab`, and `model` for the output, which also gets bert_config.json and
    vocab.txt so it is a self-contained checkpoint directory like Google's releases."""
    from bert_core import storage
    from bert_core.config import BertConfig
    from bert_core.errors import UserError
    from bert_core.presets import resolve_bert_config
    from bert_core.tokenization import load_vocab

    if launcher not in ("local", "mpijob"):
        raise UserError(f"launcher={launcher!r}: expected local or mpijob")
    # The MPIJob's pods see only object storage: they get the artifacts' URIs, the step's host its paths.
    remote = launcher == "mpijob"
    out = model.uri if remote else model.path
    data_dir = data.uri if remote else data.path
    if bert_config:
        bert = BertConfig.from_dict(bert_config, source="bert_config")
    else:
        bert = resolve_bert_config(bert_model, None, len(load_vocab(vocab.path)))
    storage.makedirs(out)
    storage.write_text(storage.join(out, "bert_config.json"), bert.to_json_string())
    storage.copy(vocab.path, storage.join(out, "vocab.txt"))
    config = stage_config(
        "pretrain", input_file=storage.join(data_dir, "train-*.tfrecord*"), output_dir=out,
        bert_config_file=storage.join(out, "bert_config.json"), vocab_file=storage.join(out, "vocab.txt"),
        do_train=True, do_eval=True, **({"init_checkpoint": init_checkpoint} if init_checkpoint else {}),
        **flags)
    if remote:
        from components.launcher import launch
        from components.mpijob import PretrainJob

        job = PretrainJob(workers=mpijob_workers, gpus_per_worker=mpijob_gpus_per_worker,
                          pretrain_flags={k: getattr(config, k) for k in config.model_fields_set})
        launch(job, timeout_seconds=timeout_seconds or None)
    else:
        run_stage("pretrain", config, num_processes=num_processes)
    results = storage.read_json(storage.join(out, "pretrain_metrics.json"))
    log_numbers(metrics, results)
    model.metadata.update({"global_step": results.get("global_step"), "max_seq_length": flags["max_seq_length"],
                           "hidden_size": bert.hidden_size, "num_hidden_layers": bert.num_hidden_layers,
                           "vocab_size": bert.vocab_size, "world_size": results.get("world_size")})
