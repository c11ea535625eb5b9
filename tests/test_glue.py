"""GLUE readers (the distribution's TSV layouts, bad input) and feature parity with Google's run_classifier."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from bert_core.data import glue
from bert_core.errors import UserError


def google(module: str):
    """Google's module, imported once per process. run_classifier and run_squad both define absl flags
    with the same names at import; letting existing flags be overridden lets both (and any later
    Google module) load in one pytest process. Flags are marked parsed so FLAGS.x reads defaults."""
    return _google(module)


@functools.lru_cache(maxsize=None)
def _google(module: str):
    from absl import flags

    from tests.bert_reference import import_google

    import sys
    import types

    for name in list(flags.FLAGS):
        flags.FLAGS[name].allow_override = True
    # run_classifier/run_squad import Google's modeling and optimization (tf.contrib, gone in TF 2);
    # the parts we compare against never touch them, so empty stand-ins do while importing.
    stubs = {}
    for dep in ("bert.modeling", "bert.optimization"):
        if dep not in sys.modules:
            stubs[dep] = sys.modules[dep] = types.ModuleType(dep)
    try:
        mod = import_google(module)
    finally:
        for dep, stub in stubs.items():
            if sys.modules.get(dep) is stub:
                del sys.modules[dep]
    for name in list(flags.FLAGS):
        flags.FLAGS[name].allow_override = True
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    return mod


def write(path, rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")


# --------------------------------------------------------------------------------------------------
# Layouts of the GLUE distribution
# --------------------------------------------------------------------------------------------------
def test_cola_train_has_no_header_and_test_has_one(tmp_path):
    write(tmp_path / "train.tsv", [["gj04", "1", "", "Our friends won't buy this analysis."],
                                   ["gj04", "0", "*", "They drank the pub."]])
    write(tmp_path / "dev.tsv", [["gj04", "1", "", "One more pseudo generalization."]])
    write(tmp_path / "test.tsv", [["index", "sentence"], ["0", "Bill whistled past the house."]])
    task = glue.get_task("CoLA")
    train = task.get_train_examples(str(tmp_path))
    assert [(e.text_a, e.text_b, e.label) for e in train] == [
        ("Our friends won't buy this analysis.", None, "1"), ("They drank the pub.", None, "0")]
    assert [e.guid for e in train] == ["train-0", "train-1"]
    test = task.get_test_examples(str(tmp_path))
    assert [(e.text_a, e.label) for e in test] == [("Bill whistled past the house.", None)]


def test_quotes_are_text_not_quoting(tmp_path):
    write(tmp_path / "train.tsv", [["sentence", "label"], ['"a quoted', "1"], ['start "mid" end"', "0"]])
    ex = glue.get_task("sst-2").get_train_examples(str(tmp_path))
    assert [e.text_a for e in ex] == ['"a quoted', 'start "mid" end"']


def test_mrpc_qqp_qnli_rte_wnli_columns(tmp_path):
    write(tmp_path / "mrpc" / "train.tsv", [["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
                                            ["1", "702876", "702977", "He said.", "She said."]])
    write(tmp_path / "mrpc" / "test.tsv", [["index", "#1 ID", "#2 ID", "#1 String", "#2 String"],
                                           ["0", "1", "2", "A.", "B."]])
    write(tmp_path / "qqp" / "dev.tsv", [["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
                                         ["5", "1", "2", "Why?", "How?", "0"]])
    write(tmp_path / "qqp" / "test.tsv", [["id", "question1", "question2"], ["0", "Q1?", "Q2?"]])
    write(tmp_path / "qnli" / "dev.tsv", [["index", "question", "sentence", "label"],
                                          ["0", "What?", "This.", "not_entailment"]])
    write(tmp_path / "rte" / "train.tsv", [["index", "sentence1", "sentence2", "label"],
                                           ["0", "A man.", "A person.", "entailment"]])
    write(tmp_path / "wnli" / "train.tsv", [["index", "sentence1", "sentence2", "label"], ["0", "x", "y", "1"]])
    got = lambda name, split: [(e.text_a, e.text_b, e.label) for e in  # noqa: E731
                               glue.get_task(name).get_examples(str(tmp_path / name), split)]
    assert got("mrpc", "train") == [("He said.", "She said.", "1")]
    assert got("mrpc", "test") == [("A.", "B.", None)]
    assert got("qqp", "dev") == [("Why?", "How?", "0")]
    assert got("qqp", "test") == [("Q1?", "Q2?", None)]
    assert got("qnli", "dev") == [("What?", "This.", "not_entailment")]
    assert got("rte", "train") == [("A man.", "A person.", "entailment")]
    assert got("wnli", "train") == [("x", "y", "1")]


def test_stsb_is_regression_with_float_labels(tmp_path):
    header = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1",
              "sentence2", "score"]
    write(tmp_path / "dev.tsv", [header, ["0", "main", "f", "2012", "1", "s", "s", "A plane.", "An air plane.", "5.000"],
                                 ["1", "main", "f", "2012", "4", "s", "s", "A cat.", "A dog.", "0.5"]])
    task = glue.get_task("sts-b")
    assert task.is_regression and task.labels is None
    ex = task.get_dev_examples(str(tmp_path))
    assert [(e.text_a, e.text_b, e.label) for e in ex] == [("A plane.", "An air plane.", 5.0),
                                                           ("A cat.", "A dog.", 0.5)]
    write(tmp_path / "train.tsv", [header, ["0", "main", "f", "2012", "1", "s", "s", "a", "b", "high"]])
    with pytest.raises(UserError, match=r"train.tsv:2: label 'high' is not a number"):
        task.get_train_examples(str(tmp_path))


def test_mnli_matched_and_mismatched_dev(tmp_path):
    parse = ["(a)", "(b)", "(a)", "(b)"]
    train_header = ["index", "promptID", "pairID", "genre", "s1b", "s2b", "s1p", "s2p", "sentence1", "sentence2",
                    "label1", "gold_label"]
    dev_header = train_header[:-1] + ["label2", "label3", "label4", "label5", "gold_label"]
    write(tmp_path / "train.tsv", [train_header, ["0", "1", "1e", "gov", *parse, "P.", "H.", "neutral", "neutral"]])
    write(tmp_path / "dev_matched.tsv", [dev_header, ["0", "1", "1e", "gov", *parse, "Pm.", "Hm.", *["entailment"] * 6]])
    write(tmp_path / "dev_mismatched.tsv", [dev_header, ["0", "1", "1e", "x", *parse, "Pmm.", "Hmm.",
                                                         *["contradiction"] * 6]])
    task = glue.get_task("MNLI")
    assert task.dev_splits == ("dev_matched", "dev_mismatched")
    assert [(e.text_a, e.label) for e in task.get_train_examples(str(tmp_path))] == [("P.", "neutral")]
    assert [(e.text_a, e.text_b, e.label) for e in task.get_examples(str(tmp_path), "dev_matched")] == [
        ("Pm.", "Hm.", "entailment")]
    assert [(e.text_a, e.label) for e in task.get_examples(str(tmp_path), "dev_mismatched")] == [
        ("Pmm.", "contradiction")]


def test_xnli_layout_and_language_filter(tmp_path):
    write(tmp_path / "multinli" / "multinli.train.de.tsv", [["premise", "hypo", "label"],
                                                            ["Ein Hund.", "Ein Tier.", "entailment"],
                                                            ["Ja.", "Nein.", "contradictory"]])
    cols = ["language", "gold_label", "s1b", "s2b", "s1p", "s2p", "sentence1", "sentence2", "promptID", "pairID",
            "genre", "label1", "label2", "label3", "label4", "label5"]
    row = lambda lang, label, a, b: [lang, label, "", "", "", "", a, b, "1", "2", "g", *[label] * 5]  # noqa: E731
    write(tmp_path / "xnli.dev.tsv", [cols, row("en", "neutral", "Hi.", "Yo."), row("de", "neutral", "Café.", "Ö."),
                                      row("zh", "entailment", "你好。", "早上好。")])
    task = glue.get_task("xnli", language="de")
    assert [(e.text_a, e.text_b, e.label) for e in task.get_train_examples(str(tmp_path))] == [
        ("Ein Hund.", "Ein Tier.", "entailment"), ("Ja.", "Nein.", "contradiction")]
    dev = task.get_dev_examples(str(tmp_path))
    assert [(e.guid, e.text_a, e.label) for e in dev] == [("dev-2", "Café.", "neutral")]
    assert [e.text_a for e in glue.get_task("xnli").get_dev_examples(str(tmp_path))] == ["你好。"]


def test_generic_tsv_by_column_names_and_indexes(tmp_path):
    write(tmp_path / "train.tsv", [["id", "review", "stars"], ["1", "great", "pos"], ["2", "bad", "neg"],
                                   ["3", "fine", "pos"]])
    write(tmp_path / "dev.tsv", [["id", "review", "stars"], ["9", "meh", "neg"]])
    task = glue.get_task("tsv", text_a_column="review", label_column="stars")
    assert [(e.text_a, e.label) for e in task.get_train_examples(str(tmp_path))] == [
        ("great", "pos"), ("bad", "neg"), ("fine", "pos")]
    assert task.labels == ["neg", "pos"]
    # A fresh task on dev alone takes its labels from train.tsv.
    fresh = glue.get_task("tsv", text_a_column="review", label_column="stars")
    assert [(e.text_a, e.label) for e in fresh.get_dev_examples(str(tmp_path))] == [("meh", "neg")]
    assert fresh.labels == ["neg", "pos"]
    # Without a header, by index; an explicit label list is enforced.
    write(tmp_path / "nh" / "train.tsv", [["a", "b", "x"], ["c", "d", "y"]])
    nh = glue.get_task("tsv", text_a_column=0, text_b_column="1", label_column=2, has_header=False, labels=["x"])
    with pytest.raises(UserError, match=r"train.tsv:2: label 'y' is not one of \['x'\]$"):
        nh.get_train_examples(str(tmp_path / "nh"))
    with pytest.raises(UserError, match=r"no column 'text' \(--text_a_column\)"):
        glue.get_task("tsv", text_a_column="text", label_column="stars").get_train_examples(str(tmp_path))


# --------------------------------------------------------------------------------------------------
# Bad input: one line naming file:line
# --------------------------------------------------------------------------------------------------
def test_wrong_column_count_names_file_and_line(tmp_path):
    write(tmp_path / "train.tsv", [["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
                                   ["1", "1", "2", "a", "b"], ["0", "1", "2", "a"]])
    with pytest.raises(UserError) as err:
        glue.get_task("mrpc").get_train_examples(str(tmp_path))
    assert str(err.value) == f"{tmp_path / 'train.tsv'}:3: expected 5 columns, got 4"
    write(tmp_path / "dev.tsv", [["gj04", "1", "", "ok"], ["gj04", "1", "too", "many", "cols"]])
    with pytest.raises(UserError, match=r"dev.tsv:2: expected 4 columns, got 5$"):
        glue.get_task("cola").get_dev_examples(str(tmp_path))


def test_unknown_label(tmp_path):
    write(tmp_path / "dev.tsv", [["index", "question", "sentence", "label"], ["0", "q", "s", "entails"]])
    with pytest.raises(UserError) as err:
        glue.get_task("qnli").get_dev_examples(str(tmp_path))
    assert str(err.value) == (f"{tmp_path / 'dev.tsv'}:2: label 'entails' is not one of "
                              "['entailment', 'not_entailment']")
    assert "\n" not in str(err.value)


def test_missing_and_empty_data(tmp_path):
    with pytest.raises(UserError, match="no such directory"):
        glue.get_task("rte").get_train_examples(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="data directory is empty"):
        glue.get_task("rte").get_train_examples(str(tmp_path / "empty"))
    write(tmp_path / "d" / "train.tsv", [["index", "sentence1", "sentence2", "label"]])
    with pytest.raises(UserError, match=r"dev.tsv: no such file"):
        glue.get_task("rte").get_dev_examples(str(tmp_path / "d"))
    (tmp_path / "d" / "dev.tsv").write_text("\n\n")
    with pytest.raises(UserError, match=r"dev.tsv: is empty"):
        glue.get_task("rte").get_dev_examples(str(tmp_path / "d"))
    with pytest.raises(UserError, match=r"--task_name='glue': expected one of"):
        glue.get_task("glue")


# --------------------------------------------------------------------------------------------------
# Features: parity with Google's convert_single_example
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer(uncased_vocab):
    rc = google("run_classifier")
    return rc.tokenization.FullTokenizer(uncased_vocab, do_lower_case=True)


HAND_MADE = [
    glue.InputExample("a", "The quick brown fox jumps over the lazy dog.", "A fox is quick.", "1"),
    glue.InputExample("b", "Unaffable jacksonville residents!", None, "0"),
    glue.InputExample("c", "word " * 40, "short one", "0"),  # a long: truncated from a
    glue.InputExample("d", "one two three four five six", "uno dos tres cuatro cinco seis", "1"),  # tie: b first
    glue.InputExample("e", "Café déjà vu — naïve 北京 ok", "", "1"),  # empty text_b: a single sequence
    glue.InputExample("f", "x " * 100, None, "0"),  # a single text over the limit
]


@pytest.mark.parametrize("max_seq_length", [8, 16, 64])
def test_features_match_google_convert_single_example(tokenizer, max_seq_length):
    rc = google("run_classifier")
    labels = ["0", "1"]
    ours = glue.convert_examples_to_features(HAND_MADE, labels, max_seq_length, tokenizer)
    assert ours.input_ids.shape == (len(HAND_MADE), max_seq_length) and ours.input_ids.dtype == np.int32
    for i, ex in enumerate(HAND_MADE):
        theirs = rc.convert_single_example(10, rc.InputExample(ex.guid, ex.text_a, ex.text_b, ex.label), labels,
                                           max_seq_length, tokenizer)
        assert ours.input_ids[i].tolist() == theirs.input_ids, ex.guid
        assert ours.input_mask[i].tolist() == theirs.input_mask, ex.guid
        assert ours.segment_ids[i].tolist() == theirs.segment_ids, ex.guid
        assert int(ours.label_ids[i]) == theirs.label_id


def test_batch_tokenizer_path_gives_the_same_features(tokenizer):
    one = glue.convert_examples_to_features(HAND_MADE, ["0", "1"], 32, tokenizer)
    calls = []

    def batch(texts):
        calls.append(len(texts))
        return [tokenizer.tokenize(t) for t in texts]

    two = glue.convert_examples_to_features(HAND_MADE, ["0", "1"], 32, tokenizer, tokenize_batch=batch)
    assert calls == [6, 3]  # e has an empty text_b
    for k, v in one.arrays().items():
        np.testing.assert_array_equal(v, two.arrays()[k])


def test_truncate_pair_longest_first_and_pair_layout():
    a, b = list("abcdef"), list("xyz")
    glue.truncate_seq_pair(a, b, 6)
    assert (a, b) == (list("abc"), list("xyz"))
    a, b = list("ab"), list("xy")
    glue.truncate_seq_pair(a, b, 3)
    assert (a, b) == (list("ab"), list("x"))
    tokens, segments = glue.build_inputs(["is", "this"], ["no"], 10)
    assert tokens == ["[CLS]", "is", "this", "[SEP]", "no", "[SEP]"]
    assert segments == [0, 0, 0, 0, 1, 1]


def test_regression_labels_are_floats_and_test_labels_are_placeholders(tokenizer):
    ex = [glue.InputExample("r", "a", "b", 3.25), glue.InputExample("t", "a", "b", None)]
    feats = glue.convert_examples_to_features(ex, glue.get_task("sts-b"), 16, tokenizer)
    assert feats.label_ids.dtype == np.float32 and feats.label_ids.tolist() == [3.25, 0.0]
    assert feats.input_ids.shape == (2, 16) and len(feats) == 2


def test_our_full_tokenizer_gives_the_same_features(tokenizer, uncased_vocab):
    tokenization = pytest.importorskip("bert_core.tokenization")
    ours = tokenization.FullTokenizer(uncased_vocab, do_lower_case=True)
    a = glue.convert_examples_to_features(HAND_MADE, ["0", "1"], 24, ours)
    b = glue.convert_examples_to_features(HAND_MADE, ["0", "1"], 24, tokenizer)
    for k, v in a.arrays().items():
        np.testing.assert_array_equal(v, b.arrays()[k])
