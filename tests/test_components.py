"""The stage components: thin wrappers that run a `bert` subcommand's own config and target, their
images, the local Horovod launch, metrics for KFP, and the held-out fine-tuning task."""

import csv
import math
import os
import subprocess
import sys

import pytest

from bert_core.errors import UserError
from components import common

pytest_plugins = ["tests.gcs_server"]


# --------------------------------------------------------------------------------------------------
# common: configs, argv, launching
# --------------------------------------------------------------------------------------------------
def test_bert_argv_is_what_the_bert_command_parses_back():
    from bert_core.cli import build_parser, config_from_args

    config = common.stage_config("pretrain", input_file="gs://b/data/train-*", output_dir="/tmp/o", model="bert-tiny",
                                 do_train=True, do_eval=False, learning_rate=2.5e-4, num_train_steps=7, num_warmup_steps=1,
                                 optimizer_type="lamb")
    argv = common.bert_argv("pretrain", config)
    assert argv[0] == "pretrain"
    assert "--do_eval=false" in argv and "--learning_rate=0.00025" in argv
    assert not any(a.startswith("--dtype") for a in argv)  # only the fields given
    parsed = config_from_args(type(config), build_parser().parse_args(argv))
    assert parsed == config


def test_config_flags_render_values_as_the_parser_reads_them():
    from bert_core.stages import config_flags, flag_text

    assert config_flags({"b": True, "a": False, "n": None, "f": 2.5e-4, "i": 3, "s": "gs://x/*",
                         "l": ["a", "b", False]}) == [
        "--b=true", "--a=false", "--f=0.00025", "--i=3", "--s=gs://x/*", "--l=a,b,false"]
    assert flag_text("init_checkpoint", None) is None


def test_stage_config_errors_are_one_line():
    with pytest.raises(UserError) as err:
        common.stage_config("create-data", input_file="c.txt", vocab_file="v.txt", output_dir="o",
                            max_seq_length=128, max_predictions_per_seq=5)
    assert "\n" not in str(err.value)
    assert str(err.value).startswith("create-data: ") and "max_predictions_per_seq" in str(err.value)
    with pytest.raises(UserError, match="no `nope` subcommand"):
        common.stage_config("nope")


def test_local_launcher_runs_horovodrun_with_the_stage_flags(monkeypatch):
    calls = []

    def fake_run(cmd, **kw):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 3 if len(calls) > 1 else 0)

    monkeypatch.setattr(common.subprocess, "run", fake_run)
    config = common.stage_config("pretrain", input_file="d/*", output_dir="o", model="bert-tiny", do_train=True)
    common.run_stage("pretrain", config, num_processes=2)
    wrapper, cmd = calls[0][:4], calls[0][4:]
    assert wrapper == [sys.executable, "-m", "bert_core.children", str(os.getpid())]  # ends with this process
    assert os.path.basename(cmd[0]) == "horovodrun"
    assert cmd[1:6] == ["-np", "2", "-H", "localhost:2", "--gloo"]
    assert cmd[cmd.index("bert_core.cli") + 1:] == common.bert_argv("pretrain", config)
    with pytest.raises(UserError, match="exited with status 3"):
        common.run_stage("pretrain", config, num_processes=2)


def test_one_process_runs_the_commands_target_in_process(tmp_path, default_corpus):
    vocab = tmp_path / "vocab.txt"
    common.run_stage("learn-vocab", common.stage_config("learn-vocab", input_file=default_corpus,
                                                        output_file=str(vocab), vocab_size=500))
    assert len(vocab.read_text().splitlines()) == 500


def test_a_stages_user_error_is_also_an_event(tmp_path, monkeypatch):
    import json

    events_file = tmp_path / "events.jsonl"
    monkeypatch.setenv("BERT_EVENTS_FILE", str(events_file))
    config = common.stage_config("learn-vocab", input_file=str(tmp_path / "missing.txt"),
                                 output_file=str(tmp_path / "vocab.txt"))
    with pytest.raises(UserError) as err:
        common.run_stage("learn-vocab", config)
    assert [json.loads(line) for line in events_file.read_text().splitlines()] == [
        {"event": "error", "stage": "learn-vocab", "time": pytest.approx(0, abs=1e10), "message": str(err.value)}]


def test_numbers_flatten_and_drop_what_kfp_cannot_show():
    doc = {"loss": 1.5, "steps": 3, "ok": True, "name": "x", "eval": {"acc": 0.5, "bad": float("nan")},
           "inf": math.inf}
    assert common.numbers(doc) == {"loss": 1.5, "steps": 3.0, "eval.acc": 0.5}


def test_every_component_runs_in_its_stage_image():
    from components import data, evaluate, finetune, images, pretrain, registry, vocab

    expected = {data.prepare_corpus: "data", data.create_data: "data", vocab.learn_vocab: "data",
                pretrain.pretrain: "pretrain", pretrain.pretrain_phase2: "pretrain",
                finetune.finetune: "finetune", evaluate.evaluate: "evaluate",
                registry.resolve_start: "data", registry.publish: "finetune"}
    for component, stage in expected.items():
        container = component.component_spec.implementation.container
        assert container.image == images.image(stage)
        assert "pip install" not in " ".join(container.command)


# --------------------------------------------------------------------------------------------------
# The data stage's components, run by kfp.local as the pipeline runs them
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_kfp(tmp_path_factory):
    from kfp import local

    root = tmp_path_factory.mktemp("kfp-root")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    return root


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_data_components_chain_and_carry_the_manifest_counts(local_kfp, monkeypatch):
    import json

    from kfp import dsl

    from bert_core import storage
    from components.data import create_data, prepare_corpus
    from components.vocab import learn_vocab
    from pipelines.cli import stage_outputs

    @dsl.pipeline(name="data-stage")
    def data_stage():
        corpus = prepare_corpus(corpus_uri="", corpus_format="auto", heldout_fraction=0.3, seed=7,
                                corpus_snapshot="s")
        vocab = learn_vocab(corpus=corpus.outputs["corpus"], vocab_uri="", vocab_size=800, do_lower_case=True)
        create_data(corpus=corpus.outputs["corpus"], vocab=vocab.outputs["vocab"], do_lower_case=True, max_seq_length=32,
                    max_predictions_per_seq=5, masked_lm_prob=0.15, dupe_factor=1, short_seq_prob=0.1,
                    do_whole_word_mask=False, num_shards=2, num_workers=1, random_seed=1)
        # a given vocab is copied as is, not learned
        learn_vocab(corpus=corpus.outputs["corpus"], vocab_uri=str(local_kfp / "given.txt"), vocab_size=30000,
                    do_lower_case=True)

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    (local_kfp / "given.txt").write_text("".join(f"{w}\n" for w in specials + [f"w{i}" for i in range(118)]))
    events_file = local_kfp / "events.jsonl"
    monkeypatch.setenv("BERT_EVENTS_FILE", str(events_file))  # the steps' subprocesses inherit it
    data_stage()
    run_dir = max((local_kfp / d for d in os.listdir(local_kfp) if d.startswith("data-stage")), key=os.path.getmtime)
    out = stage_outputs(str(run_dir))
    assert set(out) == {"prepare-corpus", "learn-vocab", "learn-vocab-2", "create-data"}
    task = out["prepare-corpus"]["task_data"]
    assert task["train_examples"] > 0 and task["dev_examples"] > 0 and task["test_examples"] > 0
    assert out["learn-vocab"]["vocab"] == {"size": 800, "source": "learned"}
    assert out["learn-vocab-2"]["vocab"] == {"size": 123, "source": str(local_kfp / "given.txt")}
    manifest = storage.read_json(str(run_dir / "create-data" / "data" / "data_manifest.json"))
    for key in ("instances", "tokens", "masked"):
        assert out["create-data"]["data"][key] == manifest["totals"][key] > 0
    assert out["create-data"]["data"]["shards"] == 2 and out["create-data"]["data"]["vocab_size"] == 800
    corpus_page = (run_dir / "prepare-corpus" / "html_report").read_text(encoding="utf-8")  # the corpus step's
    assert corpus_page.count('<figure class="plot"') == 2 and "The embedded default corpus" in corpus_page
    assert f'<td>documents</td><td class="num">{out["prepare-corpus"]["corpus"]["documents"]:,}</td>' in corpus_page
    for step, size in (("learn-vocab", "800"), ("learn-vocab-2", "123")):  # the vocab's HTML report, learned or given
        page_text = (run_dir / step / "report").read_text(encoding="utf-8")
        assert page_text.count('<figure class="plot"') == 2 and f'<td class="num">{size}</td>' in page_text, step
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert [(e["event"], e["stage"], e["path"]) for e in events] == [
        ("wrote", "create-data", str(run_dir / "create-data" / "data" / "data_manifest.json"))]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_corpus_step_prepares_a_wikipedia_dump_then_holds_out_its_task(local_kfp, wiki_excerpt):
    """Step 0 with corpus_uri a real dump excerpt (format detected): prepare-corpus, then the split."""
    from kfp import dsl

    from components.data import prepare_corpus
    from pipelines.cli import stage_outputs

    @dsl.pipeline(name="wiki-corpus")
    def wiki_corpus():
        prepare_corpus(corpus_uri=wiki_excerpt, corpus_format="auto", heldout_fraction=0.3, seed=7,
                       corpus_snapshot="s")

    wiki_corpus()
    run_dir = max((local_kfp / d for d in os.listdir(local_kfp) if d.startswith("wiki-corpus")), key=os.path.getmtime)
    out = stage_outputs(str(run_dir))["prepare-corpus"]
    assert out["corpus"]["dropped_redirect"] == 99 and out["corpus"]["source"] == wiki_excerpt
    assert out["corpus"]["documents"] + out["task_data"]["documents"] == 97  # the articles kept
    report = (run_dir / "prepare-corpus" / "report").read_text()
    assert report.startswith("# Corpus preparation report") and "| redirect | 99 |" in report
    page_text = (run_dir / "prepare-corpus" / "html_report").read_text()  # the same drops, and the corpus kept
    assert page_text.count('<figure class="plot"') == 2 and '<td>redirect</td><td class="num">99</td>' in page_text
    corpus = (run_dir / "prepare-corpus" / "corpus").read_text()
    assert "[[" not in corpus and "{{" not in corpus


# --------------------------------------------------------------------------------------------------
# The held-out task (bert_core.data.heldout_task)
# --------------------------------------------------------------------------------------------------
def _rows(path):
    with open(path, encoding="utf-8") as f:
        return list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def test_heldout_task_is_balanced_unseen_by_pretraining_and_readable(tmp_path):
    from bert_core.data import glue
    from bert_core.data.corpora import python_docs_documents
    from bert_core.data.heldout_task import TASK_FIELDS, split_corpus

    summary = split_corpus(str(tmp_path / "corpus.txt"), str(tmp_path / "task"), heldout_fraction=0.3, seed=3)
    documents = [tuple(" ".join(x.split()) for x in d) for d in python_docs_documents()]
    kept = {tuple(block.splitlines()) for block in (tmp_path / "corpus.txt").read_text().split("\n\n")}
    held = {d for d in documents if d not in kept}  # (the docs repeat some sections word for word)
    assert 0 < len(held) <= summary["task"]["documents"]
    assert len((tmp_path / "corpus.txt").read_text().split("\n\n")) == summary["corpus"]["documents"]
    assert sum(summary["task"]["documents_per_split"].values()) == summary["task"]["documents"]
    assert min(summary["task"]["documents_per_group"]) > summary["task"]["documents"] // 4  # two real groups
    in_held = {s for d in held for s in d}
    in_kept = {s for d in kept for s in d}
    sentences_by_split = {}
    for split in ("train", "dev", "test"):
        rows = _rows(tmp_path / "task" / f"{split}.tsv")
        assert rows[0] == ["sentence", "label"]
        labels = [r[1] for r in rows[1:]]
        assert len(labels) == summary["task"]["examples"][split] > 0
        assert labels.count("1") == labels.count("0")  # balanced
        sentences_by_split[split] = {r[0] for r in rows[1:]}
    # a sentence in two splits (or in pretraining) is one the corpus repeats in several documents
    repeated = {s for d in documents for s in d if sum(s in d2 for d2 in documents) > 1}
    for split, sentences in sentences_by_split.items():
        assert sentences <= in_held | repeated, split  # from held-out documents only
    assert sentences_by_split["train"] & (sentences_by_split["dev"] | sentences_by_split["test"]) <= repeated
    assert in_held & in_kept <= repeated
    # the held-out documents themselves, for the registry's masked-LM set: exactly those pretraining never saw
    written = {tuple(b.splitlines()) for b in (tmp_path / "task" / "heldout_documents.txt").read_text().strip().split("\n\n")}
    twice = {d for d in documents if documents.count(d) > 1}  # a document the docs hold twice may be in both
    assert len(written) <= summary["task"]["documents"] and held <= written and written & kept <= twice
    # a sentence's label is its document's group: one label per held-out document
    label_of = {s: r[1] for split in ("train", "dev", "test") for r in _rows(tmp_path / "task" / f"{split}.tsv")[1:]
                for s in [r[0]]}
    for doc in held:
        assert len({label_of[s] for s in doc if s in label_of and s not in repeated}) <= 1
    fields = {k: v for k, v in TASK_FIELDS.items() if k not in ("task_name", "labels")}
    fields["text_b_column"] = fields["text_b_column"] or None
    task = glue.get_task("tsv", labels=TASK_FIELDS["labels"].split(","), **fields)
    examples = task.get_examples(str(tmp_path / "task"), "test")
    assert len(examples) == summary["task"]["examples"]["test"] and examples[0].text_a and not examples[0].text_b


def test_topic_groups_follow_the_words():
    from bert_core.data.heldout_task import topic_groups

    numbers = [[f"The number {i} is a float literal.", "A float literal has a decimal point."] for i in range(6)]
    loops = [["The loop statement runs its suite.", f"The else clause of loop {i} runs at the end."]
             for i in range(6)]
    groups, axis = topic_groups(numbers + loops)
    assert len(set(groups[:6])) == 1 and len(set(groups[6:])) == 1 and groups[0] != groups[6]
    ends = set(axis["0"][:3] + axis["1"][:3])
    assert ends & {"float", "literal", "decimal", "point"} and ends & {"loop", "suite", "clause", "else", "statement"}


def test_heldout_split_of_a_users_corpus_and_its_errors(tmp_path):
    from bert_core.data.heldout_task import split_corpus

    corpus = tmp_path / "mine.txt"
    corpus.write_text("\n\n".join("\n".join(f"Doc {d} says thing {i}." for i in range(4)) for d in range(40)) + "\n")
    summary = split_corpus(str(tmp_path / "c.txt"), str(tmp_path / "t"), corpus=str(corpus), heldout_fraction=0.5)
    assert summary["corpus"]["documents"] + summary["task"]["documents"] == 40
    assert split_corpus(str(tmp_path / "c2.txt"), None, corpus=str(corpus))["corpus"]["documents"] == 40
    with pytest.raises(UserError, match="no such file"):
        split_corpus(str(tmp_path / "c3.txt"), str(tmp_path / "t3"), corpus=str(tmp_path / "missing.txt"))
    with pytest.raises(UserError, match="held-out documents"):
        split_corpus(str(tmp_path / "c4.txt"), str(tmp_path / "t4"), corpus=str(corpus), heldout_fraction=0.01)


# --------------------------------------------------------------------------------------------------
# launcher=mpijob: the MPIJob gets the artifacts' gs:// URIs (the step's local paths mean nothing there)
# --------------------------------------------------------------------------------------------------
class _Artifact:
    def __init__(self, uri: str, path: str = ""):
        self.uri, self.path, self.metadata, self.logged = uri, path, {}, {}

    def log_metric(self, key, value):
        self.logged[key] = value


def test_mpijob_launcher_hands_the_job_object_storage_paths(gcs_prefix, tmp_path, uncased_vocab, monkeypatch):
    from bert_core import storage
    from components import launcher

    jobs = []

    def fake_launch(job, **kw):  # the MPIJob "runs": bert pretrain writes its model directory and metrics
        from bert_core import layout
        from bert_core.presets import resolve_bert_config

        jobs.append((job, kw))
        out = job.pretrain_flags["output_dir"]
        layout.write_model_dir(out, resolve_bert_config(job.pretrain_flags["model"], None, 30522), None)
        storage.write_json(storage.join(out, "pretrain_metrics.json"),
                           {"global_step": 10, "world_size": 16, "train_loss": 3.5, "eval": {"loss": 3.6}})
        return job.checkpoint_location

    monkeypatch.setattr(launcher, "launch", fake_launch)
    data = _Artifact(f"{gcs_prefix}/create-data/data", str(tmp_path / "local-data"))
    vocab = _Artifact(f"{gcs_prefix}/learn-vocab/vocab", uncased_vocab)
    model = _Artifact(f"{gcs_prefix}/pretrain/model", str(tmp_path / "local-model"))
    metrics = _Artifact(f"{gcs_prefix}/pretrain/metrics")
    common.run_pretraining(
        data=data, vocab=vocab, model=model, metrics=metrics, launcher="mpijob", num_processes=1,
        bert_model="bert-base", bert_config={}, mpijob_workers=2, mpijob_gpus_per_worker=8, timeout_seconds=600,
        init_checkpoint="gs://weights/uncased_L-12_H-768_A-12/bert_model.ckpt", max_seq_length=128,
        max_predictions_per_seq=20, train_batch_size=32, learning_rate=1e-4, num_train_steps=10, num_warmup_steps=1,
        optimizer_type="lamb", dtype="bf16", num_accumulation_steps=1, save_checkpoints_steps=5, log_every_steps=5,
        max_eval_steps=2, random_seed=1)
    ((job, kw),) = jobs
    assert kw == {"timeout_seconds": 600}
    assert job.workers == 2 and job.gpus_per_worker == 8 and job.num_ranks == 16
    flags = job.pretrain_flags
    assert flags["input_file"] == f"{gcs_prefix}/create-data/data/train-*.tfrecord*"
    assert flags["output_dir"] == model.uri
    assert flags["model"] == "bert-base" and "bert_config_file" not in flags
    assert flags["vocab_file"] == vocab.uri  # bert pretrain copies it into the Model (test_pretrain.py)
    assert flags["init_checkpoint"].startswith("gs://weights/")
    assert flags["optimizer_type"] == "lamb" and flags["dtype"] == "bf16" and flags["do_train"] is True
    # the component writes no part of the model directory itself
    assert not storage.exists(f"{model.uri}/vocab.txt")
    assert metrics.logged == {"global_step": 10.0, "world_size": 16.0, "train_loss": 3.5, "eval.loss": 3.6}
    assert model.metadata["world_size"] == 16 and model.metadata["hidden_size"] == 768
    assert not os.path.exists(model.path)  # nothing written to the step's local path


def test_unknown_launcher_is_one_line():
    with pytest.raises(UserError, match="launcher='k8s': expected local or mpijob"):
        common.pretrain_config(data="d", vocab="v", model="m", launcher="k8s", bert_model="bert-tiny", bert_config={})
