"""The stages: one `bert` subcommand each, with its config class and the function that runs it, and a
config spelled back as that subcommand's flags.

The `bert` command (bert_core.cli) builds its parser from this list; the KFP components
(components/common.py) and the MPIJob renderer build, run and spell a stage's config from it. None
of them imports the argparse module.
"""

from __future__ import annotations

import importlib
import typing
from dataclasses import dataclass

import pydantic

from bert_core import config as cfg
from bert_core import events
from bert_core.errors import UserError


@dataclass(frozen=True)
class Command:
    name: str
    config: type[pydantic.BaseModel]
    target: str  # "module:function", imported only when the command runs (keeps --help fast)
    help: str


COMMANDS: list[Command] = [
    Command("create-data", cfg.DataConfig, "bert_core.data.pretraining:create_data_main",
            "Pretraining data: corpus -> masked-LM/NSP TFRecord shards + data_manifest.json"),
    Command("learn-vocab", cfg.VocabConfig, "bert_core.vocab:learn_vocab_main",
            "Learn a WordPiece vocab.txt from a corpus and print its coverage"),
    Command("pretrain", cfg.PretrainConfig, "bert_core.pretrain:pretrain_main",
            "Pretraining: TFRecords -> a model directory (bert_config.json, vocab.txt, Google-named "
            "checkpoints), eval_results.txt, pretrain_metrics.json (one process, or N under horovodrun/mpirun)"),
    Command("finetune", cfg.FinetuneConfig, "bert_core.finetune:finetune_main",
            "Fine-tuning: a GLUE/tsv classifier or SQuAD -> checkpoints, eval_results.txt, test_results.tsv or "
            "predictions.json, optionally a SavedModel (one process, or N under horovodrun/mpirun)"),
    Command("extract-features", cfg.FeaturesConfig, "bert_core.features:extract_features_main",
            "Per-token encoder outputs of chosen layers as JSON lines, as Google's extract_features.py"),
    Command("evaluate", cfg.EvalConfig, "bert_core.evaluation:evaluate_main",
            "Score predictions (SQuAD JSON or GLUE test_results.tsv) -> metrics.json and a table"),
    Command("smoke-test", cfg.SmokeTestConfig, "bert_core.smoke_test:smoke_test_main",
            "Does BERT train here: the accelerators TensorFlow sees, a few pretraining steps on each "
            "(sequences/s, peak memory); under horovodrun, whether the ranks agree"),
    Command("publish", cfg.PublishConfig, "bert_core.publish:publish_main",
            "Register a pretrained model as a new version of --model_name in --registry and publish it if the "
            "gate (--gate_rule) passes against the published version"),
    Command("prepare-corpus", cfg.PrepareCorpusConfig, "bert_core.corpus.prepare:prepare_corpus_main",
            "Corpus preparation: Wikipedia dumps, JSON lines, plain text (compressed, local or object storage) "
            "-> sharded BERT-format text and a report of what was dropped"),
]


def flag_text(name: str, value) -> str | None:
    """`--name=value` as the `bert` parser (bert_core.cli) reads it back; None for a None value (left out).

    Booleans are `true`/`false`; a list or tuple is comma-joined (the comma-separated fields, e.g.
    `--labels`, `--layers`); anything else is formatted as is, so floats keep Python's round-trip spelling."""
    if value is None:
        return None
    return f"--{name}={_flag_value(value)}"


def _flag_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(_flag_value(v) for v in value)
    return f"{value}"


def config_flags(values: typing.Mapping[str, typing.Any]) -> list[str]:
    """The `bert` flags for {field: value}, in the mapping's order, None values left out."""
    return [text for name, value in values.items() if (text := flag_text(name, value)) is not None]


def config_argv(config: pydantic.BaseModel) -> list[str]:
    """The flags that rebuild `config` through the parser: the fields it was given, sorted by name."""
    return config_flags({name: getattr(config, name) for name in sorted(config.model_fields_set)})


def command(name: str) -> Command:
    for c in COMMANDS:
        if c.name == name:
            return c
    raise UserError(f"this bert has no `{name}` subcommand (have: {', '.join(c.name for c in COMMANDS)})")


def run_stage(name: str, config: pydantic.BaseModel) -> int:
    """Run stage `name` with its config in this process; a UserError is also an `error` event."""
    module_name, func_name = command(name).target.split(":")
    with events.reporting_errors(name):
        return int(getattr(importlib.import_module(module_name), func_name)(config) or 0)
