"""`bert finetune` end to end on tiny BERTs: learning, regression, MNLI's two dev sets, the tsv task,
SQuAD 1.1/2.0 train + predict, initialisation from HF safetensors and from our pretraining output,
resume, and one-line errors."""

from __future__ import annotations

import json
import pathlib
import random

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from tests.conftest import one_line_error, run_bert  # noqa: E402
from tests.tiny_bert import tiny_config  # noqa: E402

QUIET = {"TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "2"}
POS, NEG = ["good", "great", "fine"], ["bad", "awful", "poor"]
FILLER = ["the", "movie", "is", "was", "a", "plot", "story", "it", "very"]
SQUAD_WORDS = ["who", "what", "where", "when", "wrote", "built", "lives", "in", "paris", "london", "rome",
               "alice", "bob", "carol", "dave", "book", "house", "bridge", "song", "1895", "1920", "city",
               "near", "river", "and", "then", "later", "did", "live", "year", "of", "?", ".", ","]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + POS + NEG + FILLER + SQUAD_WORDS


def write_model_files(d: pathlib.Path, **over) -> tuple[str, str]:
    d.mkdir(parents=True, exist_ok=True)
    (d / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    (d / "bert_config.json").write_text(json.dumps(tiny_config(**over)))
    return str(d / "vocab.txt"), str(d / "bert_config.json")


def sentiment_sentence(rng: random.Random, positive: bool) -> str:
    words = rng.choices(FILLER, k=5)
    words.insert(rng.randrange(6), rng.choice(POS if positive else NEG))
    return " ".join(words)


def write_sentiment_tsv(d: pathlib.Path, sizes=(("train", 240), ("dev", 60), ("test", 30)), seed: int = 0):
    """A separable task: a sentence is 'pos' iff it holds one of POS. (test.tsv keeps the label column:
    the tsv reader looks a named label column up in every file's header.)"""
    rng = random.Random(seed)
    d.mkdir(parents=True, exist_ok=True)
    for split, n in sizes:
        rows = ["sentence\tlabel"]
        for _ in range(n):
            pos = rng.random() < 0.5
            rows.append(sentiment_sentence(rng, pos) + f"\t{'pos' if pos else 'neg'}")
        (d / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    return d


def tsv_flags(data, out, vocab, config, *extra):
    return ["--task_name=tsv", "--text_a_column=sentence", "--label_column=label", f"--data_dir={data}",
            f"--vocab_file={vocab}", f"--bert_config_file={config}", f"--output_dir={out}",
            "--max_seq_length=16", "--train_batch_size=16", "--learning_rate=2e-3", "--log_every_steps=10",
            "--seed=1", *extra]


# --------------------------------------------------------------------------------------------------
# Classification, regression, MNLI
# --------------------------------------------------------------------------------------------------
def test_tiny_model_learns_a_separable_tsv_task_and_predicts(tmp_path):
    vocab, config = write_model_files(tmp_path / "model")
    data = write_sentiment_tsv(tmp_path / "data")
    out = tmp_path / "out"
    proc = run_bert("finetune", *tsv_flags(data, out, vocab, config, "--do_train", "--do_eval", "--do_predict",
                                           "--num_train_epochs=4"), env=QUIET)
    assert proc.returncode == 0, proc.stderr
    assert "240 training examples" in proc.stdout and "60 updates of 16 examples" in proc.stdout
    results = json.loads((out / "eval_results.json").read_text())
    assert results["global_step"] == 60 and results["num_examples"] == 60
    assert results["accuracy"] >= 0.9, results  # chance is 0.5
    txt = (out / "eval_results.txt").read_text()
    assert "accuracy = " in txt and "eval_loss = " in txt
    # test_results.tsv: one line per test example, the class probabilities (labels neg, pos) summing to 1.
    lines = (out / "test_results.tsv").read_text().splitlines()
    assert len(lines) == 30
    probs = np.array([[float(x) for x in l.split("\t")] for l in lines])
    assert probs.shape == (30, 2) and np.allclose(probs.sum(1), 1.0, atol=1e-6)
    test_rows = [r.split("\t")[0] for r in (data / "test.tsv").read_text().splitlines()[1:]]
    truth = np.array([any(w in r.split() for w in POS) for r in test_rows])
    assert np.mean((probs[:, 1] > 0.5) == truth) >= 0.9
    # Google-named checkpoint with the classifier head under run_classifier.py's names.
    names = dict(tf.train.list_variables(tf.train.latest_checkpoint(str(out))))
    assert names["output_weights"] == [2, 32] and names["output_bias"] == [2]
    assert "bert/encoder/layer_1/output/dense/kernel" in names
    metrics = json.loads((out / "finetune_metrics.json").read_text())
    assert metrics["global_step"] == 60 and metrics["eval"]["accuracy"] == results["accuracy"]

    # bert evaluate scores the same predictions file against a labelled copy of test.tsv.
    gold = tmp_path / "gold"
    gold.mkdir()
    (gold / "dev.tsv").write_text("sentence\tlabel\n" + "".join(
        f"{r}\t{'pos' if t else 'neg'}\n" for r, t in zip(test_rows, truth)))
    (gold / "train.tsv").write_text((data / "train.tsv").read_text())
    ev = run_bert("evaluate", "--task_name=tsv", "--text_a_column=sentence", "--label_column=label",
                  f"--data_dir={gold}", f"--predictions_file={out}/test_results.tsv", f"--output_dir={tmp_path}/ev",
                  env=QUIET)
    assert ev.returncode == 0, ev.stderr
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["accuracy"] == pytest.approx(
        np.mean((probs[:, 1] > 0.5) == truth))


def test_resume_continues_from_output_dir(tmp_path):
    vocab, config = write_model_files(tmp_path / "model")
    data = write_sentiment_tsv(tmp_path / "data", sizes=(("train", 64), ("dev", 16), ("test", 4)))
    out = tmp_path / "out"
    first = run_bert("finetune", *tsv_flags(data, out, vocab, config, "--do_train", "--num_train_epochs=1"),
                     env=QUIET)
    assert first.returncode == 0, first.stderr
    assert (out / "ckpt-4").is_dir()
    again = run_bert("finetune", *tsv_flags(data, out, vocab, config, "--do_train", "--do_eval",
                                            "--num_train_epochs=2"), env=QUIET)
    assert again.returncode == 0, again.stderr
    assert "resumed from" in again.stdout and "at step 4" in again.stdout
    assert json.loads((out / "eval_results.json").read_text())["global_step"] == 8
    # Eval alone uses the latest checkpoint.
    alone = run_bert("finetune", *tsv_flags(data, out, vocab, config, "--do_eval"), env=QUIET)
    assert alone.returncode == 0, alone.stderr
    assert "ckpt-8" in alone.stdout


def test_metrics_of_the_run_that_trained_survive_reruns_that_train_nothing(tmp_path):
    from bert_core.config import FinetuneConfig
    from bert_core.finetune import run_finetune

    vocab, config = write_model_files(tmp_path / "model")
    data = write_sentiment_tsv(tmp_path / "data", sizes=(("train", 16), ("dev", 4), ("test", 2)))
    metrics = tmp_path / "out" / "finetune_metrics.json"
    cfg = FinetuneConfig(task_name="tsv", text_a_column="sentence", label_column="label", data_dir=str(data),
                         vocab_file=vocab, bert_config_file=config, output_dir=str(tmp_path / "out"),
                         max_seq_length=16, train_batch_size=8, num_train_epochs=1, do_train=True)
    run_finetune(cfg)
    first = json.loads(metrics.read_text())
    assert first["global_step"] == 2 and first["train_loss"] > 0 and first["sequences_per_second"] > 0
    run_finetune(cfg)  # finished already: no step to train
    assert json.loads(metrics.read_text()) == first
    run_finetune(cfg.model_copy(update={"do_train": False, "export_dir": str(tmp_path / "saved")}))
    exported = json.loads(metrics.read_text())
    assert {k: exported[k] for k in first} == first and exported["export_dir"] == str(tmp_path / "saved")
    # Resumed for another epoch: its own training numbers, the earlier session's seconds added, the
    # export of the older weights no longer listed.
    run_finetune(cfg.model_copy(update={"num_train_epochs": 2}))
    resumed = json.loads(metrics.read_text())
    assert resumed["global_step"] == 4 and resumed["resumed_from"] == 2 and "export_dir" not in resumed
    assert resumed["train_seconds"] > first["train_seconds"] and resumed["sequences_per_second"] > 0


def test_stsb_regression(tmp_path):
    vocab, config = write_model_files(tmp_path / "model")
    rng = random.Random(3)
    data = tmp_path / "STS-B"
    data.mkdir()
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2"
    for split, n in (("train", 160), ("dev", 40), ("test", 10)):
        rows = [header + ("\tscore" if split != "test" else "")]
        for i in range(n):
            k = rng.randint(0, 3)  # the score is the number of positive words in the pair
            words = rng.choices(FILLER, k=6 - k) + rng.choices(POS, k=k)
            rng.shuffle(words)
            a, b = " ".join(words[:3]), " ".join(words[3:])
            rows.append(f"{i}\tg\tf\t2012\t{i}\ts\ts\t{a}\t{b}" + ("" if split == "test" else f"\t{k * 5 / 3:.3f}"))
        (data / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    proc = run_bert("finetune", "--task_name=STS-B", f"--data_dir={data}", f"--vocab_file={vocab}",
                    f"--bert_config_file={config}", f"--output_dir={out}", "--max_seq_length=16",
                    "--train_batch_size=16", "--learning_rate=2e-3", "--num_train_epochs=6", "--do_train",
                    "--do_eval", "--do_predict", env=QUIET)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((out / "eval_results.json").read_text())
    assert {"pearson", "spearman", "corr", "eval_loss"} <= set(results)
    assert results["pearson"] > 0.8, results
    names = dict(tf.train.list_variables(tf.train.latest_checkpoint(str(out))))
    assert names["output_weights"] == [1, 32]  # one output: a regression head
    lines = (out / "test_results.tsv").read_text().splitlines()
    assert len(lines) == 10 and all(len(l.split("\t")) == 1 for l in lines)
    [float(l) for l in lines]


def _mnli_rows(rng, n, labelled=True):
    header = ["index", "promptID", "pairID", "genre", "s1bp", "s2bp", "s1p", "s2p", "sentence1", "sentence2"]
    rows = ["\t".join(header + (["label1", "gold_label"] if labelled else []))]
    for i in range(n):
        label = rng.choice(["contradiction", "entailment", "neutral"])
        w = {"contradiction": NEG, "entailment": POS, "neutral": ["plot"]}[label]
        a = sentiment_sentence(rng, True)
        b = " ".join(rng.choices(FILLER, k=3) + [rng.choice(w)])
        rows.append("\t".join([str(i), "p", "q", "g", "x", "x", "x", "x", a, b]
                              + ([label, label] if labelled else [])))
    return "\n".join(rows) + "\n"


def test_mnli_reports_both_dev_sets_and_predicts_both_test_sets(tmp_path):
    vocab, config = write_model_files(tmp_path / "model")
    rng = random.Random(5)
    data = tmp_path / "MNLI"
    data.mkdir()
    for name, n, labelled in (("train", 96, True), ("dev_matched", 20, True), ("dev_mismatched", 14, True),
                              ("test_matched", 5, False), ("test_mismatched", 7, False)):
        (data / f"{name}.tsv").write_text(_mnli_rows(rng, n, labelled))
    out = tmp_path / "out"
    proc = run_bert("finetune", "--task_name=MNLI", f"--data_dir={data}", f"--vocab_file={vocab}",
                    f"--bert_config_file={config}", f"--output_dir={out}", "--max_seq_length=16",
                    "--train_batch_size=16", "--num_train_epochs=1", "--do_train", "--do_eval", "--do_predict",
                    env=QUIET)
    assert proc.returncode == 0, proc.stderr
    r = json.loads((out / "eval_results.json").read_text())
    assert r["dev_matched_num_examples"] == 20 and r["dev_mismatched_num_examples"] == 14
    assert r["mnli_m_accuracy"] == r["dev_matched_accuracy"] and r["mnli_mm_accuracy"] == r["dev_mismatched_accuracy"]
    assert "dev_matched_eval_loss" in r and "dev_mismatched_eval_loss" in r
    assert len((out / "test_results.tsv").read_text().splitlines()) == 5
    mm = (out / "test_results_mismatched.tsv").read_text().splitlines()
    assert len(mm) == 7 and all(len(l.split("\t")) == 3 for l in mm)


def test_tsv_pairs_by_index_without_header(tmp_path):
    vocab, config = write_model_files(tmp_path / "model")
    data = tmp_path / "pairs"
    data.mkdir()
    rng = random.Random(9)
    for split, n in (("train", 32), ("dev", 8)):
        rows = []
        for _ in range(n):
            same = rng.random() < 0.5
            rows.append(f"{'yes' if same else 'no'}\t{sentiment_sentence(rng, True)}\t{sentiment_sentence(rng, same)}")
        (data / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    proc = run_bert("finetune", "--task_name=tsv", "--has_header=false", "--label_column=0", "--text_a_column=1",
                    "--text_b_column=2", f"--data_dir={data}", f"--vocab_file={vocab}", f"--bert_config_file={config}",
                    f"--output_dir={out}", "--max_seq_length=24", "--train_batch_size=8", "--num_train_epochs=1",
                    "--do_train", "--do_eval", env=QUIET)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "eval_results.json").read_text())["num_examples"] == 8


# --------------------------------------------------------------------------------------------------
# SQuAD
# --------------------------------------------------------------------------------------------------
PEOPLE, CITIES = ["alice", "bob", "carol", "dave"], ["paris", "london", "rome"]


def squad_file(path: pathlib.Path, version_2: bool = False, n: int = 12, seed: int = 0) -> str:
    """Hand-written SQuAD: 'who wrote the book ?' over a context naming the writer; 2.0 adds
    unanswerable questions ('who built the bridge ?' when no bridge is mentioned)."""
    rng = random.Random(seed)
    paragraphs = []
    for i in range(n):
        person, other, city = rng.sample(PEOPLE, 2) + [rng.choice(CITIES)]
        context = (f"{other} lives in {city} near the river . later {person} wrote the book in 1895 "
                   f"and then {other} built the house .")
        qas = [{"id": f"q{i}", "question": "who wrote the book ?",
                "answers": [{"text": person, "answer_start": context.index(f"{person} wrote")}]}]
        if version_2:
            qas.append({"id": f"q{i}n", "question": "who built the bridge ?", "answers": [], "is_impossible": True})
        paragraphs.append({"context": context, "qas": qas})
    path.write_text(json.dumps({"version": "2.0" if version_2 else "1.1",
                                "data": [{"title": "t", "paragraphs": paragraphs}]}))
    return str(path)


@pytest.mark.parametrize("version_2", [False, True])
def test_squad_train_and_predict_end_to_end(tmp_path, version_2):
    vocab, config = write_model_files(tmp_path / "model")
    train = squad_file(tmp_path / "train.json", version_2)
    out = tmp_path / "out"
    flags = ["--task_name=squad", f"--train_file={train}", f"--predict_file={train}", f"--vocab_file={vocab}",
             f"--bert_config_file={config}", f"--output_dir={out}", "--max_seq_length=32", "--doc_stride=8",
             "--max_query_length=8", "--train_batch_size=8", "--learning_rate=3e-3", "--num_train_epochs=40",
             "--do_train", "--do_eval", "--do_predict", "--n_best_size=5", "--log_every_steps=50"]
    if version_2:
        flags.append("--version_2_with_negative")
    proc = run_bert("finetune", *flags, env=QUIET)
    assert proc.returncode == 0, proc.stderr
    gold = json.loads(pathlib.Path(train).read_text())["data"][0]["paragraphs"]
    qids = [qa["id"] for p in gold for qa in p["qas"]]
    preds = json.loads((out / "predictions.json").read_text())
    nbest = json.loads((out / "nbest_predictions.json").read_text())
    assert list(preds) == qids and list(nbest) == qids
    for qid in qids:
        assert 1 <= len(nbest[qid]) <= 5 + version_2
        assert {"text", "probability", "start_logit", "end_logit"} == set(nbest[qid][0])
        assert sum(e["probability"] for e in nbest[qid]) == pytest.approx(1.0)
    # The context is longer than one window (32 - 8 - 3 = 21 tokens; stride 8): several windows per
    # question, yet the (memorised) answers come out whole.
    results = json.loads((out / "eval_results.json").read_text())
    if version_2:
        odds = json.loads((out / "null_odds.json").read_text())
        assert list(odds) == qids
        assert results["HasAns_total"] == 12 and results["NoAns_total"] == 12
        assert all(np.isfinite(v) for v in odds.values())
        # 2.0 is scored (learning it takes longer than this test may run: v1 checks the learning).
        assert 0.0 <= results["exact"] <= 100.0 and "best_f1_thresh" in results
    else:
        assert not (out / "null_odds.json").exists()
        assert results["exact_match"] >= 90.0, results
        assert preds["q0"] == gold[0]["qas"][0]["answers"][0]["text"]
    names = dict(tf.train.list_variables(tf.train.latest_checkpoint(str(out))))
    assert names["cls/squad/output_weights"] == [2, 32]


# --------------------------------------------------------------------------------------------------
# Initial weights
# --------------------------------------------------------------------------------------------------
def test_init_from_hf_safetensors(tmp_path, minilm_dir):
    from bert_core.checkpoints import hf_to_google_name, read_safetensors
    from bert_core.config import FinetuneConfig
    from bert_core.finetune import run_finetune

    data = write_sentiment_tsv(tmp_path / "data", sizes=(("train", 8), ("dev", 4), ("test", 2)))
    cfg = FinetuneConfig(task_name="tsv", text_a_column="sentence", label_column="label", data_dir=str(data),
                         vocab_file=f"{minilm_dir}/vocab.txt", init_checkpoint=minilm_dir,  # config.json beside it
                         output_dir=str(tmp_path / "out"), max_seq_length=16, do_eval=True)
    run = run_finetune(cfg)
    assert run.bert_config.hidden_size == 384 and run.bert_config.num_hidden_layers == 6
    model_vars = run.model.checkpoint_variables()
    tensors = read_safetensors(f"{minilm_dir}/model.safetensors")
    checked = 0
    for hf_name, value in tensors.items():
        name, transpose = hf_to_google_name(hf_name)
        if name in model_vars:
            np.testing.assert_array_equal(model_vars[name].numpy(), value.T if transpose else value)
            checked += 1
    assert checked == len(model_vars) - 2  # all but the new head (output_weights, output_bias)
    assert 0.0 <= run.metrics["eval"]["accuracy"] <= 1.0


def test_init_from_our_pretraining_output(tmp_path):
    from tests.test_pretrain import write_records

    vocab, config = write_model_files(tmp_path / "model")
    records = write_records(tmp_path / "train.tfrecord", 16)
    pre = tmp_path / "pretrain"
    proc = run_bert("pretrain", f"--input_file={records}", f"--output_dir={pre}", f"--bert_config_file={config}",
                    "--max_seq_length=16", "--max_predictions_per_seq=3", "--train_batch_size=8",
                    "--num_train_steps=3", "--num_warmup_steps=1", "--do_train", env=QUIET)
    assert proc.returncode == 0, proc.stderr
    data = write_sentiment_tsv(tmp_path / "data", sizes=(("train", 16), ("dev", 4), ("test", 2)))
    out = tmp_path / "out"
    # The pretraining output directory itself: its `checkpoint` file points at the latest weights.
    ft = run_bert("finetune", *tsv_flags(data, out, vocab, config, "--do_eval", f"--init_checkpoint={pre}"),
                  env=QUIET)
    assert ft.returncode == 0, ft.stderr
    # Encoder and pooler loaded; the MLM/NSP heads are left out, the classifier head starts afresh.
    assert "loaded 39 variables, 2 missing" in ft.stdout and "initialised afresh: output_bias, output_weights" in ft.stdout

    from bert_core.config import FinetuneConfig
    from bert_core.finetune import run_finetune

    run = run_finetune(FinetuneConfig(
        task_name="tsv", text_a_column="sentence", label_column="label", data_dir=str(data), vocab_file=vocab,
        bert_config_file=config, init_checkpoint=str(pre / "ckpt-3" / "model.ckpt-3"),
        output_dir=str(tmp_path / "out2"), max_seq_length=16, do_eval=True))
    reader = tf.train.load_checkpoint(str(pre / "ckpt-3" / "model.ckpt-3"))
    for name, var in run.model.checkpoint_variables().items():
        if name.startswith("bert/"):
            np.testing.assert_array_equal(var.numpy(), reader.get_tensor(name))


# --------------------------------------------------------------------------------------------------
# Bad input: one line each
# --------------------------------------------------------------------------------------------------
def test_checkpoint_that_does_not_fit_lists_the_mismatches(tmp_path):
    vocab, config = write_model_files(tmp_path / "model")
    data = write_sentiment_tsv(tmp_path / "data", sizes=(("train", 16), ("dev", 4), ("test", 2)))
    assert run_bert("finetune", *tsv_flags(data, tmp_path / "a", vocab, config, "--do_train",
                                           "--num_train_epochs=1"), env=QUIET).returncode == 0
    _, wider = write_model_files(tmp_path / "wider", intermediate_size=96)
    proc = run_bert("finetune", *tsv_flags(data, tmp_path / "b", vocab, wider, "--do_train",
                                           f"--init_checkpoint={tmp_path / 'a'}"), env=QUIET)
    line = one_line_error(proc)
    assert "does not fit the model" in line and "shape mismatches" in line
    assert "bert/encoder/layer_0/intermediate/dense/kernel model [32, 96] vs file [32, 64]" in line
    # A checkpoint with fewer layers than the config: the missing encoder variables are named.
    _, deeper = write_model_files(tmp_path / "deeper", num_hidden_layers=3)
    proc = run_bert("finetune", *tsv_flags(data, tmp_path / "c", vocab, deeper, "--do_eval",
                                           f"--init_checkpoint={tmp_path / 'a'}"), env=QUIET)
    line = one_line_error(proc)
    assert "16 encoder variables missing" in line and "bert/encoder/layer_2/" in line


def test_vocab_other_than_the_checkpoints_is_refused(tmp_path):
    """Same size, two tokens swapped: every id still fits the embeddings, every word means another."""
    from bert_core.config import FinetuneConfig
    from bert_core.errors import UserError
    from bert_core.finetune import run_finetune

    vocab, config = write_model_files(tmp_path / "model")
    data = write_sentiment_tsv(tmp_path / "data", sizes=(("train", 16), ("dev", 4), ("test", 2)))
    out = tmp_path / "out"
    cfg = FinetuneConfig(task_name="tsv", text_a_column="sentence", label_column="label", data_dir=str(data),
                         vocab_file=vocab, bert_config_file=config, output_dir=str(out), max_seq_length=16,
                         train_batch_size=8, num_train_epochs=1, do_train=True)
    run_finetune(cfg)
    swapped = [{"good": "bad", "bad": "good"}.get(t, t) for t in VOCAB]
    other = tmp_path / "other_vocab.txt"
    other.write_text("\n".join(swapped) + "\n")
    said = f"is not the vocab the checkpoint was made with, {out / 'vocab.txt'} .*: line 6 is 'bad' there 'good'"
    with pytest.raises(UserError, match=said):  # resuming from (or evaluating) output_dir's checkpoint
        run_finetune(cfg.model_copy(update={"vocab_file": str(other), "do_train": False, "do_eval": True}))
    with pytest.raises(UserError, match=said):  # starting from a checkpoint of that model directory
        run_finetune(cfg.model_copy(update={"vocab_file": str(other), "output_dir": str(tmp_path / "b"),
                                            "init_checkpoint": str(out / "ckpt-2" / "model.ckpt-2")}))
    assert (out / "vocab.txt").read_text() == (tmp_path / "model" / "vocab.txt").read_text()


def test_bad_input_is_one_line(tmp_path):
    vocab, config = write_model_files(tmp_path / "model")
    data = write_sentiment_tsv(tmp_path / "data", sizes=(("train", 16), ("dev", 4), ("test", 2)))
    with open(data / "train.tsv", "a") as f:
        f.write("a sentence with\tthree\tcolumns\n")
    line = one_line_error(run_bert("finetune", *tsv_flags(data, tmp_path / "o", vocab, config, "--do_train"),
                                   env=QUIET))
    assert "train.tsv:18: expected 2 columns, got 3" in line
    line = one_line_error(run_bert("finetune", *tsv_flags(tmp_path / "nope", tmp_path / "o", vocab, config,
                                                          "--do_train"), env=QUIET))
    assert "no such directory (--data_dir)" in line
    (tmp_path / "empty").mkdir()
    line = one_line_error(run_bert("finetune", *tsv_flags(tmp_path / "empty", tmp_path / "o", vocab, config,
                                                          "--do_train"), env=QUIET))
    assert "the data directory is empty" in line
    line = one_line_error(run_bert("finetune", "--task_name=squad", f"--vocab_file={vocab}", "--do_train",
                                   f"--output_dir={tmp_path}/o", env=QUIET))
    assert "--do_train needs --train_file" in line
    line = one_line_error(run_bert("finetune", "--task_name=cola2", f"--data_dir={data}", f"--vocab_file={vocab}",
                                   f"--bert_config_file={config}", "--do_train", f"--output_dir={tmp_path}/o",
                                   env=QUIET))
    assert line.startswith("bert: error: --task_name: unknown task, expected one of cola, ") and "(got 'cola2')" in line
    clean = write_sentiment_tsv(tmp_path / "clean", sizes=(("train", 16), ("dev", 4)))
    line = one_line_error(run_bert("finetune", *tsv_flags(clean, tmp_path / "fresh", vocab, config, "--do_eval"),
                                   env=QUIET))
    assert "holds no checkpoint and no --init_checkpoint" in line


def test_every_split_it_will_read_is_checked_before_training(tmp_path):
    vocab, config = write_model_files(tmp_path / "model")
    data = write_sentiment_tsv(tmp_path / "data", sizes=(("train", 16), ("dev", 4)))
    with open(data / "dev.tsv", "a") as f:
        f.write("a good movie\tmaybe\n")
    cases = [
        (data, ["--do_eval"], f"{data}/dev.tsv:6: label 'maybe' is not one of ['neg', 'pos']"),
        (write_sentiment_tsv(tmp_path / "no_test", sizes=(("train", 16), ("dev", 4))), ["--do_predict"],
         f"{tmp_path}/no_test/test.tsv"),
    ]
    for d, extra, expected in cases:
        out = tmp_path / "out"
        proc = run_bert("finetune", *tsv_flags(d, out, vocab, config, "--do_train", *extra), env=QUIET)
        assert expected in one_line_error(proc)
        assert "fine-tuning tsv" not in proc.stdout and not list(out.glob("ckpt-*"))
    train = squad_file(tmp_path / "train.json")
    out = tmp_path / "squad"

    def squad_line(after_training: str) -> str:
        proc = run_bert("finetune", "--task_name=squad", f"--train_file={train}",
                        f"--predict_file={tmp_path}/dev.json", f"--vocab_file={vocab}", f"--bert_config_file={config}",
                        f"--output_dir={out}", "--max_seq_length=32", "--doc_stride=8", "--max_query_length=8",
                        "--do_train", after_training, env=QUIET)
        assert "fine-tuning squad" not in proc.stdout and not list(out.glob("ckpt-*"))
        return one_line_error(proc)

    assert f"{tmp_path}/dev.json" in squad_line("--do_predict")
    # --do_eval scores against the gold answers: a file whose answers are not a list of {"text": ...}
    # reads fine as questions (prediction ignores answers) and failed only after training
    dev = json.loads(pathlib.Path(train).read_text())
    dev["data"][0]["paragraphs"][0]["qas"][0]["answers"] = "paris"
    (tmp_path / "dev.json").write_text(json.dumps(dev))
    assert f"{tmp_path}/dev.json: cannot score it, no gold answers" in squad_line("--do_eval")
