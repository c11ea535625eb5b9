"""Bad inputs, one row each: the `bert` command a user types, its exit code, and the one line it
prints (`bert: error: ...`, no traceback). Issue 17's table; every subcommand's refusals belong here.

A row's command and line may name the workspace's paths in braces ({model}, {data}, ...: see
`workspace`); the line is a part of the `bert: error:` line. Each row runs the real command, so the
refusals it lists must come before any training.
"""

from __future__ import annotations

import shlex

import pytest

from tests.conftest import run_bert
from tests.test_finetune import QUIET, VOCAB, write_model_files, write_sentiment_tsv

# A tsv fine-tuning run on the workspace's data; {out} is its output directory.
TSV = ("finetune --task_name=tsv --text_a_column=sentence --label_column=label --data_dir={data} "
       "--vocab_file={vocab} --bert_config_file={config} --max_seq_length=16 --do_train")
# An SST-2 evaluation of {preds} against the workspace's sst-2 data.
SST2 = "evaluate --task_name=sst-2 --data_dir={sst2} --predictions_file={preds}"

ROWS = [
    # finetune --export_dir: only an earlier export of ours is replaced
    (TSV + " --output_dir={out} --export_dir={file}", 2, "--export_dir={file} is a file"),
    (TSV + " --output_dir={out} --export_dir={notes}", 2,
     "--export_dir={notes} is a non-empty directory that is not a SavedModel exported by bert finetune"),
    (TSV + " --output_dir={out} --export_dir={out}", 2, "--export_dir={out} is --output_dir"),
    (TSV + " --output_dir={out} --export_dir={tmp}", 2, "--export_dir={tmp} holds --output_dir={out}"),
    (TSV + " --output_dir={out} --export_dir={out}/ckpt-1", 2,
     "--export_dir={out}/ckpt-1 is inside --output_dir={out}, whose names belong to the run"),
    # finetune: the vocab of the weights it starts from
    (TSV + " --output_dir={out} --vocab_file={swapped} --init_checkpoint={model}/bert_model.ckpt", 2,
     "--vocab_file={swapped} (sha256 "),
    # --output_dir that is a file
    (TSV + " --output_dir={file}", 2, "--output_dir={file} is a file"),
    (SST2 + " --output_dir={file}", 2, "--output_dir={file} is a file"),
    ("pretrain --input_file={empty} --output_dir={file} --bert_config_file={config} --do_train", 2,
     "--output_dir={file} is a file"),
    # --output_file that is a directory, or under a file
    ("learn-vocab --input_file={corpus} --output_file={notes}", 2, "--output_file={notes} is a directory"),
    ("learn-vocab --input_file={corpus} --output_file={file}/vocab.txt", 2,
     "--output_file={file}/vocab.txt: {file} is a file, not a directory"),
    ("extract-features --input_file={corpus} --vocab_file={vocab} --bert_config_file={config} --output_file={notes}",
     2, "--output_file={notes} is a directory"),
    # create-data owns its output directory: a user's file there is refused, never deleted
    ("create-data --input_file={corpus} --vocab_file={vocab} --output_dir={notes} --max_seq_length=16", 2,
     "--output_dir={notes}: holds todo.txt, which bert create-data did not write"),
    ("create-data --input_file={corpus} --vocab_file={vocab} --output_dir={file} --max_seq_length=16", 2,
     "--output_dir={file}: exists and is not a directory"),
    ("create-data --input_file={empty} --vocab_file={vocab} --output_dir={tmp}/cd --max_seq_length=16", 2,
     "{empty}: empty input file, expected text (one sentence a line)"),
    # evaluate
    (SST2 + " --eval_split=test --output_dir={tmp}/ev", 2,
     "{sst2}/test.tsv: the test split has no labels to evaluate against"),
    (SST2 + " --output_dir={tmp}/ev --predictions_file={tmp}/absent.tsv", 2, "{tmp}/absent.tsv: no such file"),
    # one-line errors that were there before the table
    (TSV.replace("{data}", "{tmp}/nope") + " --output_dir={out}", 2, "{tmp}/nope: no such directory (--data_dir)"),
    ("finetune --task_name=squad --vocab_file={vocab} --do_train --output_dir={out}", 2,
     "--do_train needs --train_file"),
    (TSV + " --output_dir=gs:/bucket/out", 2, "gs:/bucket/out: unsupported storage URL (did you mean gs://bucket/out?)"),
    ("pretrain --input_file={empty} --output_dir={out} --bert_config_file={config} --max_seq_length=16 "
     "--max_predictions_per_seq=3 --do_train", 2,
     "{empty}: no records"),
    ("pretrain --input_file={tmp}/absent.tfrecord --output_dir={out} --bert_config_file={config} --do_train", 2,
     "{tmp}/absent.tfrecord: no such file"),
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict[str, str]:
    """The paths the rows name: a tiny model directory, task data, and things in the way."""
    tmp = tmp_path_factory.mktemp("bad_inputs")
    vocab, config = write_model_files(tmp / "model")
    (tmp / "model" / "bert_model.ckpt.index").write_bytes(b"")  # where the weights would be
    swapped = tmp / "swapped_vocab.txt"  # same size, two tokens swapped
    swapped.write_text("\n".join({"good": "bad", "bad": "good"}.get(t, t) for t in VOCAB) + "\n")
    data = write_sentiment_tsv(tmp / "data", sizes=(("train", 16), ("dev", 4), ("test", 2)))
    sst2 = tmp / "sst2"
    sst2.mkdir()
    (sst2 / "dev.tsv").write_text("sentence\tlabel\na good movie\t1\na bad plot\t0\n")
    (sst2 / "test.tsv").write_text("index\tsentence\n0\ta fine story\n")  # GLUE's test files have no labels
    (tmp / "preds.tsv").write_text("1\n0\n")
    (tmp / "file.txt").write_text("not a directory\n")
    (tmp / "empty.tfrecord").write_bytes(b"")
    (tmp / "corpus.txt").write_text("a good movie .\nthe plot is bad .\n")
    (tmp / "notes").mkdir()
    (tmp / "notes" / "todo.txt").write_text("keep me\n")
    return {"tmp": str(tmp), "model": str(tmp / "model"), "vocab": vocab, "config": config, "swapped": str(swapped),
            "data": str(data), "sst2": str(sst2), "preds": str(tmp / "preds.tsv"), "file": str(tmp / "file.txt"),
            "notes": str(tmp / "notes"), "out": str(tmp / "out"),
            "empty": str(tmp / "empty.tfrecord"), "corpus": str(tmp / "corpus.txt")}


@pytest.mark.parametrize("command, code, line", ROWS, ids=[f"{c.split()[0]}: {l}" for c, _, l in ROWS])
def test_bad_input_is_one_line(workspace, command, code, line):
    proc = run_bert(*shlex.split(command.format(**workspace)), env=QUIET)
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [l for l in proc.stderr.splitlines() if l.startswith("bert: error:")]
    assert len(errors) == 1, proc.stderr
    assert line.format(**workspace) in errors[0]
