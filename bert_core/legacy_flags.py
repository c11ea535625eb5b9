"""The flags of Google's BERT scripts and of the ROCm fork, accepted by the matching `bert` subcommand.

Most of their flags are ours already (bert_core.config keeps Google's names). This module owns the
rest: each one is taken as the script took it (absl booleans: `--use_tpu`, `--use_tpu=False`,
`--nouse_tpu`), then mapped onto our fields, with one `bert: note:` line on stderr where the meaning
changes, or refused in one line saying why. A flag that does nothing here and did nothing there either
(the TPU settings without `--use_tpu=True`) is accepted silently.

    create_pretraining_data.py -> bert create-data     run_classifier.py   -> bert finetune
    run_pretraining.py         -> bert pretrain        run_squad.py        -> bert finetune
    extract_features.py        -> bert extract-features

The ROCm fork is github.com/ROCmSoftwarePlatform/bert (master 8ccd186, 2020-08-27): `--use_horovod`,
`--optimizer_type`, `--auto_mixed_precision` (its README spells it `--auto_mixed_precisioin`),
`--num_report_steps`, `--enable_timeline`, `--num_timeline_steps`. docs/migrating.md has the table.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Callable

from bert_core import config as cfg
from bert_core.errors import UserError

#: Google's script -> the `bert` subcommand that takes its flags.
SCRIPTS = {
    "create_pretraining_data.py": "create-data",
    "run_pretraining.py": "pretrain",
    "run_classifier.py": "finetune",
    "run_squad.py": "finetune",
    "extract_features.py": "extract-features",
}

_TRAINING = ("pretrain", "finetune")
_MODEL = ("pretrain", "finetune", "extract-features")


@dataclass
class _Run:
    """What the rules read and change: the parsed values (ours and theirs) and the notes to print."""

    command: str
    values: dict
    notes: list[str]

    def given(self, name: str) -> bool:
        return name in self.values

    def value(self, name: str):
        """The value given, else our field's default (None for a flag that is not a field)."""
        if name in self.values:
            return self.values[name]
        field = _config(self.command).model_fields.get(name)
        return None if field is None or field.is_required() else field.get_default(call_default_factory=True)


@dataclass(frozen=True)
class LegacyFlag:
    name: str
    kind: type                      # bool, int or str: how the script parsed it
    commands: tuple[str, ...]       # the `bert` subcommands that accept it
    rule: Callable[[_Run, object, str], None]   # (run, value, the flag as spelled) -> map, note or raise
    help: str


def _ignored(run: _Run, value, spelled: str) -> None:
    """A setting that changes nothing here, nor in the script without --use_tpu=True."""


def _use_tpu(run: _Run, value, spelled: str) -> None:
    if value:
        raise UserError(f"{spelled}=True: this bert trains on GPUs (ROCm or CUDA) and CPUs, not TPUs; drop "
                        f"{spelled} (the other TPU flags are then ignored, as the script ignored them)")


def _use_horovod(run: _Run, value, spelled: str) -> None:
    from bert_core import distributed

    size, rank = distributed.launcher_world_size(), distributed.launcher_rank()
    if value and size <= 1:
        run.notes.append(f"{spelled}=True: one process here; Horovod runs when a launcher starts the ranks: "
                         f"`horovodrun -np N bert {run.command} ...` or `mpirun -np N bert {run.command} ...`")
    elif not value and size > 1:
        run.notes.append(f"{spelled}=False is ignored: a launcher started {size} processes and this one trains "
                         f"as rank {rank} of them")
    elif value and run.command == "pretrain":
        # The fork divided --num_train_steps and --num_warmup_steps by the number of ranks (each rank
        # ran steps/N updates of N x batch); ours count updates over all ranks. Same work, same LR curve.
        steps, warmup = run.value("num_train_steps"), run.value("num_warmup_steps")
        run.values["num_train_steps"], run.values["num_warmup_steps"] = steps // size, warmup // size
        run.notes.append(f"{spelled}=True: {size} ranks train --num_train_steps={steps}/{size}={steps // size} "
                         f"updates (warmup {warmup}/{size}={warmup // size}) as the fork did; our "
                         f"--num_train_steps counts updates over all ranks")


def _auto_mixed_precision(run: _Run, value, spelled: str) -> None:
    if not value:
        return
    if run.given("dtype") and run.values["dtype"] != "fp16":
        raise UserError(f"{spelled}=True asks for fp16 but --dtype={run.values['dtype']} was given; keep one")
    run.values["dtype"] = "fp16"
    allreduce = ""
    if run.command == "pretrain" and not run.given("fp16_allreduce"):
        run.values["fp16_allreduce"] = True  # the fork compressed Horovod's allreduce to fp16 under AMP
        allreduce = " --fp16_allreduce"
    run.notes.append(f"{spelled}=True is --dtype=fp16{allreduce}: Keras mixed precision with dynamic loss "
                     f"scaling (the fork used TensorFlow 1's graph rewrite)")


def _num_report_steps(run: _Run, value, spelled: str) -> None:
    if not run.given("log_every_steps"):
        run.values["log_every_steps"] = value  # the fork's progress and summaries interval, as ours


def _enable_timeline(run: _Run, value, spelled: str) -> None:
    if value:
        run.notes.append(f"{spelled}=True is ignored: no TensorFlow timeline traces here (progress lines, "
                         f"TensorBoard summaries and {run.command}_metrics.json are written)")


def _verbose_logging(run: _Run, value, spelled: str) -> None:
    if value:
        run.notes.append(f"{spelled}=True is ignored: SQuAD's per-example prediction warnings are not printed")


_TPU = "Google's TPU setting; ignored (no TPUs here)"
FLAGS: tuple[LegacyFlag, ...] = (
    # Google's (bert-tensorflow 1.0.4)
    LegacyFlag("use_tpu", bool, _MODEL, _use_tpu, "Google's; False is accepted, True is refused (no TPUs here)"),
    LegacyFlag("tpu_name", str, _MODEL, _ignored, _TPU),
    LegacyFlag("tpu_zone", str, _MODEL, _ignored, _TPU),
    LegacyFlag("gcp_project", str, _MODEL, _ignored, _TPU),
    LegacyFlag("master", str, _MODEL, _ignored, _TPU),
    LegacyFlag("num_tpu_cores", int, _MODEL, _ignored, _TPU),
    LegacyFlag("tpu_job_name", str, ("finetune",), _ignored, _TPU),
    LegacyFlag("iterations_per_loop", int, _TRAINING, _ignored, "Google's TPU host-loop length; ignored"),
    LegacyFlag("use_one_hot_embeddings", bool, ("extract-features",), _ignored,
          "Google's TPU speed setting (same result); ignored"),
    LegacyFlag("verbose_logging", bool, ("finetune",), _verbose_logging,
          "Google's run_squad.py: print prediction warnings; ignored"),
    # The ROCm fork's (ROCmSoftwarePlatform/bert)
    LegacyFlag("use_horovod", bool, _TRAINING, _use_horovod,
          "The ROCm fork's; ranks come from horovodrun/mpirun here"),
    LegacyFlag("auto_mixed_precision", bool, _TRAINING, _auto_mixed_precision,
          "The ROCm fork's; True is --dtype=fp16 (pretrain: also --fp16_allreduce)"),
    LegacyFlag("auto_mixed_precisioin", bool, _TRAINING, _auto_mixed_precision,
          "The ROCm fork README's spelling of --auto_mixed_precision"),
    LegacyFlag("num_report_steps", int, ("pretrain",), _num_report_steps, "The ROCm fork's; --log_every_steps"),
    LegacyFlag("enable_timeline", bool, _TRAINING, _enable_timeline,
          "The ROCm fork's TF timeline tracing; ignored"),
    LegacyFlag("num_timeline_steps", int, _TRAINING, _ignored, "The ROCm fork's; ignored"),
)

# The fork's own flags: a command line holding one is the fork's, so its optimizer names mean the fork's.
_FORK_ONLY = ("use_horovod", "auto_mixed_precision", "auto_mixed_precisioin", "num_report_steps",
              "enable_timeline", "num_timeline_steps")


def _config(command: str):
    from bert_core.stages import command as find

    return find(command).config


def flags_for(command: str) -> list[LegacyFlag]:
    """The legacy flags `bert <command>` accepts beside its config's fields."""
    fields = _config(command).model_fields
    return [f for f in FLAGS if command in f.commands and f.name not in fields]


def known_names(command: str) -> set[str]:
    """Every flag name `bert <command>` accepts: its config's fields and its legacy flags."""
    return set(_config(command).model_fields) | {f.name for f in flags_for(command)}


def _bool(text: str) -> bool:
    try:
        return cfg.parse_bool(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


_DEST = "legacy:"  # argparse dest prefix: never a config field, so config_from_args leaves them alone


def add_flags(parser: argparse.ArgumentParser, command: str) -> None:
    """Add the legacy flags of `command` to its subparser, as absl parsed them."""
    flags = flags_for(command)
    if flags:
        parser = parser.add_argument_group("flags of Google's and the ROCm fork's scripts (docs/migrating.md)")
    for flag in flags:
        dest = _DEST + flag.name
        if flag.kind is bool:
            parser.add_argument(f"--{flag.name}", dest=dest, nargs="?", const=True, type=_bool,
                                default=argparse.SUPPRESS, metavar="true|false", help=flag.help)
            parser.add_argument(f"--no{flag.name}", dest=dest, action="store_false", default=argparse.SUPPRESS,
                                help=argparse.SUPPRESS)
        else:
            parser.add_argument(f"--{flag.name}", dest=dest, type=flag.kind, default=argparse.SUPPRESS,
                                metavar=flag.name.upper(), help=flag.help)


def apply(command: str, args: argparse.Namespace) -> argparse.Namespace:
    """Map the legacy flags in `args` onto our fields (in place), print their notes (rank 0 only), and
    return `args`. Raises UserError for a flag refused here."""
    given = {k[len(_DEST):]: v for k, v in vars(args).items() if k.startswith(_DEST)}
    for name in given:
        delattr(args, _DEST + name)
    values = {k: v for k, v in vars(args).items() if k != "command"}
    run = _Run(command, values, [])
    for flag in flags_for(command):
        if flag.name in given:
            flag.rule(run, given[flag.name], f"--{flag.name}")
    if command == "finetune" and not run.given("task_name") and (run.given("train_file") or run.given("predict_file")):
        run.values["task_name"] = "squad"
        run.notes.append("no --task_name: squad, from --train_file/--predict_file (run_squad.py's flags)")
    if any(name in given for name in _FORK_ONLY) and run.value("optimizer_type") in ("lamb", "nlamb"):
        run.notes.append(f"--optimizer_type={run.value('optimizer_type')}: You et al.'s rule with bias correction, "
                         f"LayerNorm and biases outside the trust ratio, linear LR decay; the fork's had none of "
                         f"these and sqrt decay (docs/migrating.md)")
    for name, value in run.values.items():
        setattr(args, name, value)
    if run.notes:
        from bert_core import distributed  # only pretrain and finetune have notes: TensorFlow is there

        if distributed.launcher_rank() == 0:
            for note in run.notes:
                print(f"bert: note: {note}", file=sys.stderr)
    return args
