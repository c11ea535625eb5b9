"""The `bert` command: one subcommand per stage (bert_core.stages), flags generated from its pydantic config.

Flag names are the config's field names, which follow Google's BERT scripts (`--max_seq_length`,
`--do_lower_case`, ...). Booleans take absl's spellings too: `--do_lower_case`,
`--do_lower_case=false`, `--nodo_lower_case`. A user's mistake prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import types
import typing

import pydantic

from bert_core import config as cfg
from bert_core import legacy_flags
from bert_core.errors import UserError, exit_from
from bert_core.stages import COMMANDS, run_stage


class OneLineParser(argparse.ArgumentParser):
    """argparse's own usage errors (an invalid choice, a missing command) as every other user error:
    one `prog: error: ...` line and exit 2, without the usage (`--help` prints that)."""

    def error(self, message):
        raise UserError(message)


def _bool_flag(text: str) -> bool:
    try:
        return cfg.parse_bool(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


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
            parser.add_argument(f"--{name}", nargs="?", const=True, type=_bool_flag, default=argparse.SUPPRESS,
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


def config_from_args(model: type[pydantic.BaseModel], args: argparse.Namespace) -> pydantic.BaseModel:
    """Build and validate the config; a validation error becomes one UserError line per run."""
    values = {k: v for k, v in vars(args).items() if k in model.model_fields}
    try:
        return model(**values)
    except pydantic.ValidationError as err:
        raise UserError(cfg.describe_validation_error(err)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="bert", description="BERT pretraining and fine-tuning (TensorFlow 2 + Horovod), one subcommand per "
                                 "stage. Flags follow Google's BERT scripts; `bert COMMAND --help` lists them.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        add_config_flags(p, command.config)
        legacy_flags.add_flags(p, command.name)  # Google's and the ROCm fork's other flags
    return parser


def run(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    legacy_flags.apply(args.command, args)
    command = next(c for c in COMMANDS if c.name == args.command)
    return run_stage(command.name, config_from_args(command.config, args))


def main(argv: list[str] | None = None) -> None:
    exit_from("bert", run, argv)


if __name__ == "__main__":
    main()
