"""The flags of Google's BERT scripts and of the ROCm fork, on the matching `bert` subcommand.

Every flag is read from the real scripts (the DEFINE_* calls of PyPI bert-tensorflow 1.0.4, parsed with
ast), so a flag added upstream fails here until it is mapped; the README command lines run unchanged.
"""

from __future__ import annotations

import ast
import json
import os
import pathlib
import shlex

import pytest

from bert_core import cli, legacy_flags
from bert_core import config as cfg
from bert_core.stages import command as stage_command
from tests.conftest import run_bert
from tests.tiny_bert import tiny_config

# The flags the ROCm fork (github.com/ROCmSoftwarePlatform/bert, master 8ccd186) adds to Google's
# scripts: its DEFINE_* calls, read from its source (not on PyPI): create_pretraining_data.py:46,
# run_pretraining.py:119-135, run_classifier.py:127-135, run_squad.py:163-174. Its README (line 72)
# spells --auto_mixed_precision as --auto_mixed_precisioin.
FORK_FLAGS = {
    "create_pretraining_data.py": ["do_whole_word_mask"],
    "run_pretraining.py": ["use_horovod", "optimizer_type", "num_report_steps", "enable_timeline",
                           "num_timeline_steps", "auto_mixed_precision", "auto_mixed_precisioin"],
    "run_classifier.py": ["enable_timeline", "num_timeline_steps", "optimizer_type", "auto_mixed_precision",
                          "auto_mixed_precisioin"],
    "run_squad.py": ["optimizer_type", "auto_mixed_precision", "auto_mixed_precisioin", "use_horovod",
                     "enable_timeline", "num_timeline_steps"],
    "extract_features.py": [],
}


def google_flag_names(script: str) -> list[str]:
    """The names of the DEFINE_* calls in Google's `script` (bert-tensorflow 1.0.4), read with ast."""
    import bert

    tree = ast.parse((pathlib.Path(bert.__file__).parent / script).read_text(encoding="utf-8"))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "").startswith("DEFINE_"):
            first = node.args[0] if node.args else next(k.value for k in node.keywords if k.arg == "name")
            names.append(first.value)
    return names


@pytest.mark.parametrize("script", sorted(legacy_flags.SCRIPTS))
def test_every_flag_of_the_scripts_is_known_to_its_subcommand(script):
    names = google_flag_names(script)
    assert len(names) >= 10, names
    known = legacy_flags.known_names(legacy_flags.SCRIPTS[script])
    assert not set(names + FORK_FLAGS[script]) - known


def test_every_legacy_flag_comes_from_a_script():
    """No entry maps a flag that neither Google's nor the fork's scripts define."""
    defined = {n for s in legacy_flags.SCRIPTS for n in google_flag_names(s) + FORK_FLAGS[s]}
    assert {f.name for f in legacy_flags.FLAGS} <= defined
    for flag in legacy_flags.FLAGS:  # and each is accepted where a script of that subcommand defines it
        scripts = [s for s in legacy_flags.SCRIPTS if flag.name in google_flag_names(s) + FORK_FLAGS[s]]
        assert {legacy_flags.SCRIPTS[s] for s in scripts} <= set(flag.commands), flag.name


def parse(capsys, argv: list[str]):
    """(config, notes) for `bert ARGV` as the command builds them, without running the stage."""
    args = cli.build_parser().parse_args(argv)
    legacy_flags.apply(args.command, args)
    config = cli.config_from_args(stage_command(args.command).config, args)
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("bert: note: ")]
    return config, notes


# --------------------------------------------------------------------------------------------------
# absl's boolean spellings, and the TPU flags
# --------------------------------------------------------------------------------------------------
EXTRACT = ["extract-features", "--input_file=a", "--output_file=b", "--vocab_file=v"]


@pytest.mark.parametrize("spelling", ["--use_tpu=False", "--use_tpu=false", "--nouse_tpu", "--use_tpu=0",
                                      "--use_tpu=f"])
def test_use_tpu_false_is_accepted_silently(capsys, spelling):
    config, notes = parse(capsys, EXTRACT + [spelling, "--tpu_name=t", "--master=grpc://x", "--num_tpu_cores=8",
                                             "--use_one_hot_embeddings=True"])
    assert notes == [] and config.input_file == "a"


@pytest.mark.parametrize("spelling", ["--use_tpu=True", "--use_tpu", "--use_tpu=true", "--use_tpu=1"])
def test_use_tpu_true_is_refused_in_one_line(capsys, spelling):
    with pytest.raises(SystemExit) as exit_:
        cli.main(EXTRACT + [spelling])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith("bert: error: --use_tpu=True: this bert trains on GPUs (ROCm or CUDA) and CPUs, not TPUs")


def test_a_bad_boolean_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(EXTRACT + ["--use_tpu=maybe"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err == "bert: error: argument --use_tpu: expected true or false, got 'maybe'\n"


@pytest.mark.parametrize("spelling, value", [("--do_lower_case", True), ("--do_lower_case=True", True),
                                             ("--do_lower_case=false", False), ("--nodo_lower_case", False),
                                             ("--do_lower_case=FALSE", False), ("--do_lower_case=1", True)])
def test_absl_booleans_on_our_flags(capsys, spelling, value):
    config, notes = parse(capsys, ["create-data", "--input_file=c.txt", "--output_file=o.tfrecord",
                                   "--vocab_file=v.txt", spelling])
    assert config.do_lower_case is value and notes == []


# --------------------------------------------------------------------------------------------------
# The fork's flags
# --------------------------------------------------------------------------------------------------
PRETRAIN = ["pretrain", "--input_file=d/*.tfrecord", "--output_dir=o", "--bert_config_file=c.json", "--do_train"]


@pytest.mark.parametrize("spelling", ["--auto_mixed_precision=True", "--auto_mixed_precisioin=True",
                                      "--auto_mixed_precision"])
def test_auto_mixed_precision_is_fp16(capsys, spelling):
    config, notes = parse(capsys, PRETRAIN + [spelling])
    assert config.dtype == "fp16" and config.fp16_allreduce is True
    flag = spelling.split("=")[0]
    assert notes == [f"bert: note: {flag}=True is --dtype=fp16 --fp16_allreduce: Keras mixed precision with "
                     f"dynamic loss scaling (the fork used TensorFlow 1's graph rewrite)"]
    config, notes = parse(capsys, ["finetune", "--task_name=mrpc", "--data_dir=d", "--vocab_file=v",
                                   "--output_dir=o", "--do_train", spelling])
    assert config.dtype == "fp16" and len(notes) == 1 and "--fp16_allreduce" not in notes[0]


def test_auto_mixed_precision_false_changes_nothing_and_a_conflict_is_refused(capsys):
    config, notes = parse(capsys, PRETRAIN + ["--auto_mixed_precision=False", "--dtype=bf16"])
    assert config.dtype == "bf16" and not config.fp16_allreduce and notes == []
    with pytest.raises(SystemExit) as exit_:
        cli.main(PRETRAIN + ["--auto_mixed_precision=True", "--dtype=bf16"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err == ("bert: error: --auto_mixed_precision=True asks for fp16 but "
                                             "--dtype=bf16 was given; keep one\n")


def test_use_horovod_without_a_launcher_says_how_to_start_ranks(capsys, monkeypatch):
    for var in ("HOROVOD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"):
        monkeypatch.delenv(var, raising=False)
    config, notes = parse(capsys, PRETRAIN + ["--use_horovod=True", "--num_train_steps=1000",
                                              "--num_warmup_steps=100"])
    assert config.num_train_steps == 1000
    assert notes == ["bert: note: --use_horovod=True: one process here; Horovod runs when a launcher starts the "
                     "ranks: `horovodrun -np N bert pretrain ...` or `mpirun -np N bert pretrain ...`"]
    assert parse(capsys, PRETRAIN + ["--use_horovod=False"])[1] == []


def test_use_horovod_under_a_launcher_divides_steps_as_the_fork_did(capsys, monkeypatch):
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "0")
    config, notes = parse(capsys, PRETRAIN + ["--use_horovod=True", "--num_train_steps=1000",
                                              "--num_warmup_steps=100"])
    assert (config.num_train_steps, config.num_warmup_steps) == (250, 25)
    assert notes == ["bert: note: --use_horovod=True: 4 ranks train --num_train_steps=1000/4=250 updates (warmup "
                     "100/4=25) as the fork did; our --num_train_steps counts updates over all ranks"]
    # fine-tuning counts epochs over all ranks' batches, as the fork did: nothing to change
    config, notes = parse(capsys, ["finetune", "--task_name=mrpc", "--data_dir=d", "--vocab_file=v",
                                   "--output_dir=o", "--do_train", "--use_horovod=True"])
    assert notes == []
    config, notes = parse(capsys, PRETRAIN + ["--nouse_horovod"])
    assert config.num_train_steps == 100000 and notes == [
        "bert: note: --use_horovod=False is ignored: a launcher started 4 processes and this one trains as rank 0 "
        "of them"]
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "3")  # notes are printed by rank 0 only
    config, notes = parse(capsys, PRETRAIN + ["--use_horovod=True", "--num_train_steps=1000",
                                              "--num_warmup_steps=100"])
    assert config.num_train_steps == 250 and notes == []


def test_the_forks_other_flags(capsys):
    config, notes = parse(capsys, PRETRAIN + ["--num_report_steps=10", "--enable_timeline=False",
                                              "--num_timeline_steps=5", "--optimizer_type=nadam"])
    assert config.log_every_steps == 10 and config.optimizer_type == "nadam" and notes == []
    config, notes = parse(capsys, PRETRAIN + ["--num_report_steps=10", "--log_every_steps=7", "--enable_timeline"])
    assert config.log_every_steps == 7 and len(notes) == 1 and notes[0].startswith(
        "bert: note: --enable_timeline=True is ignored: no TensorFlow timeline traces here")
    # lamb on a fork's command line: the rules differ, said once; on ours (no fork flag), nothing
    config, notes = parse(capsys, PRETRAIN + ["--optimizer_type=lamb", "--auto_mixed_precision=False"])
    assert config.optimizer_type == "lamb" and len(notes) == 1 and "sqrt decay" in notes[0]
    assert parse(capsys, PRETRAIN + ["--optimizer_type=lamb"])[1] == []


# --------------------------------------------------------------------------------------------------
# The README command lines, unchanged (Google's README, as in the fork's README below its own part;
# the fork's scripts/run_model_in_rocm_docker.sh and scripts/training_cluster_squad.sh)
# --------------------------------------------------------------------------------------------------
README = {
    "create_pretraining_data.py": """
        --input_file=./sample_text.txt --output_file=/tmp/tf_examples.tfrecord
        --vocab_file=$BERT_BASE_DIR/vocab.txt --do_lower_case=True --max_seq_length=128
        --max_predictions_per_seq=20 --masked_lm_prob=0.15 --random_seed=12345 --dupe_factor=5""",
    "run_pretraining.py": """
        --input_file=/tmp/tf_examples.tfrecord --output_dir=/tmp/pretraining_output --do_train=True
        --do_eval=True --bert_config_file=$BERT_BASE_DIR/bert_config.json
        --init_checkpoint=$BERT_BASE_DIR/bert_model.ckpt --train_batch_size=32 --max_seq_length=128
        --max_predictions_per_seq=20 --num_train_steps=20 --num_warmup_steps=10 --learning_rate=2e-5""",
    "run_classifier.py": """
        --task_name=MRPC --do_train=true --do_eval=true --data_dir=$GLUE_DIR/MRPC
        --vocab_file=$BERT_BASE_DIR/vocab.txt --bert_config_file=$BERT_BASE_DIR/bert_config.json
        --init_checkpoint=$BERT_BASE_DIR/bert_model.ckpt --max_seq_length=128 --train_batch_size=32
        --learning_rate=2e-5 --num_train_epochs=3.0 --output_dir=/tmp/mrpc_output/""",
    "run_squad.py": """
        --vocab_file=$BERT_BASE_DIR/vocab.txt --bert_config_file=$BERT_BASE_DIR/bert_config.json
        --init_checkpoint=$BERT_BASE_DIR/bert_model.ckpt --do_train=True --train_file=$SQUAD_DIR/train-v1.1.json
        --do_predict=True --predict_file=$SQUAD_DIR/dev-v1.1.json --train_batch_size=12 --learning_rate=3e-5
        --num_train_epochs=2.0 --max_seq_length=384 --doc_stride=128 --output_dir=/tmp/squad_base/""",
    "extract_features.py": """
        --input_file=/tmp/input.txt --output_file=/tmp/output.jsonl --vocab_file=$BERT_BASE_DIR/vocab.txt
        --bert_config_file=$BERT_BASE_DIR/bert_config.json --init_checkpoint=$BERT_BASE_DIR/bert_model.ckpt
        --layers=-1,-2,-3,-4 --max_seq_length=128 --batch_size=8""",
}
FORK_README = {
    "run_pretraining.py": """
        --input_file=$TRAIN_DIR/sample_text.txt_seq128.tfrecord --output_dir=$TRAIN_DIR/run --do_train=True
        --do_eval=True --bert_config_file=$TRAIN_DIR/bert_config.json --train_batch_size=8 --max_seq_length=128
        --max_predictions_per_seq=20 --num_train_steps=200 --num_warmup_steps=50 --learning_rate=2e-5
        --auto_mixed_precision=True""",
    "run_squad.py": """
        --vocab_file=$TRAIN_DIR/vocab.txt --bert_config_file=$TRAIN_DIR/bert_config.json
        --init_checkpoint=$LAST_STAGE --do_train=True --train_file=$SQUAD_DATA_DIR/train-v1.1.json
        --do_predict=True --predict_file=$SQUAD_DATA_DIR/dev-v1.1.json --train_batch_size=4
        --learning_rate=5e-5 --num_train_epochs=2 --max_seq_length=384 --doc_stride=128
        --output_dir=$SQUAD_DIR --use_horovod=True""",
}
ENV = {"BERT_BASE_DIR": "/m/uncased_L-12_H-768_A-12", "GLUE_DIR": "/glue", "SQUAD_DIR": "/squad",
       "TRAIN_DIR": "/train", "LAST_STAGE": "/train/run/model.ckpt-200", "SQUAD_DATA_DIR": "/squad_data"}


def readme_argv(script: str, flags: str, env: dict) -> list[str]:
    """`bert <subcommand>` with the script's flags as a shell would pass them (variables expanded)."""
    words = shlex.split(flags)
    for name, value in env.items():
        words = [w.replace(f"${name}", value) for w in words]
    return [legacy_flags.SCRIPTS[script], *words]


@pytest.mark.parametrize("script", sorted(README))
def test_googles_readme_lines_build_the_config(capsys, script):
    argv = readme_argv(script, README[script], ENV)
    config, notes = parse(capsys, argv)
    for name, value in (w.removeprefix("--").split("=", 1) for w in argv[1:]):
        ours = getattr(config, name)  # every flag lands on our field of the same name, with its value
        assert ours == (cfg.parse_bool(value) if isinstance(ours, bool) else type(ours)(value)), name
    if script == "run_squad.py":
        assert config.task_name == "squad" and notes == [
            "bert: note: no --task_name: squad, from --train_file/--predict_file (run_squad.py's flags)"]
    else:
        assert notes == []


@pytest.mark.parametrize("script", sorted(FORK_README))
def test_the_forks_command_lines_build_the_config(capsys, monkeypatch, script):
    for var in ("HOROVOD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"):
        monkeypatch.delenv(var, raising=False)
    config, notes = parse(capsys, readme_argv(script, FORK_README[script], ENV))
    if script == "run_pretraining.py":
        assert config.dtype == "fp16" and config.num_train_steps == 200 and config.train_batch_size == 8
        assert len(notes) == 1 and notes[0].startswith("bert: note: --auto_mixed_precision=True is --dtype=fp16 --fp16_allreduce:")
    else:
        assert config.task_name == "squad" and config.init_checkpoint == "/train/run/model.ckpt-200"
        assert len(notes) == 2 and "horovodrun -np N bert finetune" in notes[0]


def write_model_dir_and_corpus(tmp_path) -> tuple[pathlib.Path, list[str]]:
    """$BERT_BASE_DIR with a small vocab.txt, and ./sample_text.txt of 30 short documents."""
    base = tmp_path / "uncased_L-4_H-32_A-2"
    base.mkdir()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "a", "dog", "ran",
             "far", "away", "."]
    (base / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (tmp_path / "sample_text.txt").write_text(
        "".join(f"The cat sat on a mat {i}.\nA dog ran far away.\nThe dog sat.\n\n" for i in range(30)))
    return base, vocab


def test_googles_readme_create_data_runs(tmp_path):
    """create_pretraining_data.py's README line, run: a TFRecord Google's pretraining reads."""
    base, _ = write_model_dir_and_corpus(tmp_path)
    out = tmp_path / "tmp"
    flags = README["create_pretraining_data.py"].replace("/tmp/", f"{out}/").replace("./", f"{tmp_path}/")
    argv = readme_argv("create_pretraining_data.py", flags, {"BERT_BASE_DIR": str(base)})
    proc = run_bert(*argv, check=True)
    from bert_core.data import tfrecord

    records = [tfrecord.decode_example(r) for r in tfrecord.iter_records(str(out / "tf_examples.tfrecord"))]
    assert f"wrote {len(records):,} instances" in proc.stdout and len(records) > 30
    assert {len(r["input_ids"]) for r in records} == {128} and {len(r["masked_lm_ids"]) for r in records} == {20}


@pytest.mark.slow
def test_googles_readme_pretraining_and_features_run(tmp_path):
    """Google's README chain on a tiny model: create data, pretrain 20 steps from a Google-named
    bert_model.ckpt, extract features, each with its README flags unchanged (paths substituted)."""
    from bert_core import checkpoints, modeling
    from bert_core.config import BertConfig

    base, vocab = write_model_dir_and_corpus(tmp_path)
    config = tiny_config(vocab_size=len(vocab), max_position_embeddings=128, num_hidden_layers=4)  # --layers=-1..-4
    (base / "bert_config.json").write_text(json.dumps(config))
    model = modeling.BertPretrainer(BertConfig(**config))
    model.build()
    checkpoints.save_google_checkpoint(model, str(base / "bert_model.ckpt"))
    (tmp_path / "input.txt").write_text("The cat sat.\nA dog ||| ran far away.\n")
    env = {"BERT_BASE_DIR": str(base)}
    out = tmp_path / "tmp"
    for script in ("create_pretraining_data.py", "run_pretraining.py", "extract_features.py"):
        flags = README[script].replace("/tmp/", f"{out}/").replace("./", f"{tmp_path}/")
        flags = flags.replace(f"{out}/input.txt", str(tmp_path / "input.txt"))
        run_bert(*readme_argv(script, flags, env), check=True, env={"TF_CPP_MIN_LOG_LEVEL": "2"}, timeout=900)
    metrics = json.loads((out / "pretraining_output" / "pretrain_metrics.json").read_text())
    assert metrics, metrics
    lines = (out / "output.jsonl").read_text().splitlines()
    assert len(lines) == 2 and [f["token"] for f in json.loads(lines[0])["features"]][:2] == ["[CLS]", "the"]
    assert os.path.exists(out / "pretraining_output" / "eval_results.txt")
