"""The `bert` command: one subcommand per stage, flags generated from the stage's pydantic config.

Flag names are the config's field names, which follow Google's BERT scripts (`--max_seq_length`,
`--do_lower_case`, ...). Booleans take absl's spellings too: `--do_lower_case`,
`--do_lower_case=false`, `--nodo_lower_case`. A user's mistake prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import importlib
import types
import typing
from dataclasses import dataclass

import pydantic

from bert_core import config as cfg
from bert_core.errors import UserError, exit_from


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
            "Pretraining: TFRecords -> Google-named checkpoints, eval_results.txt, pretrain_metrics.json "
            "(one process, or N under horovodrun/mpirun)"),
    Command("finetune", cfg.FinetuneConfig, "bert_core.finetune:finetune_main",
            "Fine-tuning: a GLUE/tsv classifier or SQuAD -> checkpoints, eval_results.txt, test_results.tsv or "
            "predictions.json, optionally a SavedModel (one process, or N under horovodrun/mpirun)"),
    Command("extract-features", cfg.FeaturesConfig, "bert_core.features:extract_features_main",
            "Per-token encoder outputs of chosen layers as JSON lines, as Google's extract_features.py"),
    Command("evaluate", cfg.EvalConfig, "bert_core.evaluation:evaluate_main",
            "Score predictions (SQuAD JSON or GLUE test_results.tsv) -> metrics.json and a table"),
]


def _parse_bool(text: str) -> bool:
    low = str(text).strip().lower()
    if low in ("1", "true", "t", "yes", "y", "on"):
        return True
    if low in ("0", "false", "f", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _unwrap_optional(annotation):
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def add_config_flags(parser: argparse.ArgumentParser, model: type[pydantic.BaseModel]) -> None:
    """One `--field` per config field; help text is the field's description."""
    for name, field in model.model_fields.items():
        ann = _unwrap_optional(field.annotation)
        required = field.is_required()
        default = None if required else field.get_default(call_default_factory=True)
        help_text = (field.description or "") + ("" if required else f" (default: {default})")
        if required:
            help_text += " (required)"
        if ann is bool:
            parser.add_argument(f"--{name}", nargs="?", const=True, type=_parse_bool, default=argparse.SUPPRESS,
                                metavar="true|false", help=help_text)
            parser.add_argument(f"--no{name}", dest=name, action="store_false", default=argparse.SUPPRESS,
                                help=argparse.SUPPRESS)
        elif typing.get_origin(ann) is typing.Literal:
            choices = typing.get_args(ann)
            parser.add_argument(f"--{name}", choices=choices, type=type(choices[0]), default=argparse.SUPPRESS,
                                help=help_text)
        else:
            kind = ann if ann in (int, float, str) else str
            parser.add_argument(f"--{name}", type=kind, default=argparse.SUPPRESS, metavar=name.upper(),
                                help=help_text)


def flag_text(name: str, value) -> str | None:
    """`--name=value` as the flags of add_config_flags read it back; None for a None value (left out).

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


def config_from_args(model: type[pydantic.BaseModel], args: argparse.Namespace) -> pydantic.BaseModel:
    """Build and validate the config; a validation error becomes one UserError line per run."""
    values = {k: v for k, v in vars(args).items() if k in model.model_fields}
    try:
        return model(**values)
    except pydantic.ValidationError as err:
        raise UserError(cfg.describe_validation_error(err)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bert", description="BERT pretraining and fine-tuning (TensorFlow 2 + Horovod), one subcommand per "
                                 "stage. Flags follow Google's BERT scripts; `bert COMMAND --help` lists them.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        add_config_flags(p, command.config)
    return parser


def run(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = next(c for c in COMMANDS if c.name == args.command)
    config = config_from_args(command.config, args)
    module_name, func_name = command.target.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    result = func(config)
    return int(result or 0)


def main(argv: list[str] | None = None) -> None:
    exit_from("bert", run, argv)


if __name__ == "__main__":
    main()
