"""The `bert` command line: argparse's own errors and the config's are one line, exit 2, without the usage."""

from __future__ import annotations

import pytest

from bert_core import cli


def bert(capsys, *argv: str) -> tuple[int, str]:
    """Run `bert ARGV` in this process: (exit status, stderr)."""
    with pytest.raises(SystemExit) as exit_:
        cli.main(list(argv))
    return exit_.value.code, capsys.readouterr().err


@pytest.mark.parametrize("argv, line", [
    (["pretrain", "--optimizer_type=adamx"], "bert: error: argument --optimizer_type: invalid choice: 'adamx' "
                                             "(choose from 'adam', 'lamb', 'nadam', 'nlamb')"),
    (["frobnicate"], "bert: error: argument COMMAND: invalid choice: 'frobnicate' (choose from 'create-data', "),
    ([], "bert: error: the following arguments are required: COMMAND"),
    (["pretrain", "--do_train=maybe"], "bert: error: argument --do_train: expected true or false, got 'maybe'"),
    (["pretrain", "--bogus=1"], "bert: error: unrecognized arguments: --bogus=1"),
    # an unknown model is the one line, before checks across fields (here: warmup > steps)
    (["pretrain", "--model=bert-huge", "--input_file=x", "--output_dir=y", "--do_train", "--num_train_steps=10"],
     "bert: error: --model: unknown model, expected one of bert-tiny, bert-mini, "),
    (["extract-features", "--model=bert-huge", "--input_file=a", "--output_file=b", "--vocab_file=c"],
     "bert: error: --model: unknown model, expected one of bert-tiny, "),
    # squad is a task_name too
    (["finetune", "--task_name=squadd", "--output_dir=o", "--vocab_file=v", "--do_train", "--data_dir=d"],
     "bert: error: --task_name: unknown task, expected one of cola, sst-2, mrpc, sts-b, qqp, mnli, qnli, rte, "
     "wnli, xnli, tsv, squad, squad2, squad_v2, or a task of --task_module (got 'squadd')"),
    (["evaluate", "--task_name=glue", "--output_dir=o"], "bert: error: --task_name: unknown task, expected one of "),
])
def test_usage_errors_are_one_line(capsys, argv, line):
    code, err = bert(capsys, *argv)
    assert code == 2 and err.startswith(line) and err.count("\n") == 1, err


@pytest.mark.parametrize("name", ["SST-2", "sst2", "MNLI-mm", "tsv", "SQuAD", "squad_v2"])
def test_task_names_as_the_tasks_spell_them(name):
    from bert_core.config import EvalConfig

    assert EvalConfig(task_name=name, output_dir="o", data_dir="d", predictions_file="p",
                      predict_file="f", prediction_json="j").task_name == name

