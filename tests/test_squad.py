"""SQuAD reading, features and postprocessing: behaviour on hand-written files, and parity with Google's
run_squad.py (read_squad_examples, convert_examples_to_features, write_predictions)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from bert_core.data import squad
from bert_core.errors import UserError
from tests.test_glue import google

# Window-edge context: with max_seq_length=21 and a 5-piece question ("who wrote the book ?"),
# windows hold 13 context pieces at a stride of 6: the first (pieces 0-12) ends inside the answer
# "charles darwin" (pieces 12-13).
EDGE_CONTEXT = ("one two three four five six seven eight nine ten eleven twelve "
                "Charles Darwin wrote the book thirteen fourteen fifteen sixteen seventeen eighteen nineteen")
UNICODE_CONTEXT = "Der Zürcher Café-Besitzer José Núñez eröffnete 1998 in 北京大学 eine Filiale."

DATASET = {"version": "test", "data": [
    {"title": "Edge", "paragraphs": [{"context": EDGE_CONTEXT, "qas": [
        {"id": "edge", "question": "Who wrote the book?",
         "answers": [{"text": "Charles Darwin", "answer_start": EDGE_CONTEXT.index("Charles")}]},
        {"id": "impossible", "question": "Who read the book?", "answers": [], "is_impossible": True},
    ]}]},
    {"title": "Unicode", "paragraphs": [{"context": UNICODE_CONTEXT, "qas": [
        {"id": "jose", "question": "Wer eröffnete die Filiale?",
         "answers": [{"text": "José Núñez", "answer_start": UNICODE_CONTEXT.index("José")}]},
        {"id": "where", "question": "Wo?",
         "answers": [{"text": "北京大学", "answer_start": UNICODE_CONTEXT.index("北京")}]},
        {"id": "year", "question": "Wann?",
         "answers": [{"text": "1998", "answer_start": UNICODE_CONTEXT.index("1998")}]},
    ]}]},
]}
for _qa in (qa for article in DATASET["data"] for p in article["paragraphs"] for qa in p["qas"]):
    _qa.setdefault("is_impossible", False)  # as SQuAD 2.0 files have it


@pytest.fixture(scope="module")
def rs():
    return google("run_squad")


@pytest.fixture(scope="module")
def tokenizer(uncased_vocab, rs):
    return rs.tokenization.FullTokenizer(uncased_vocab, do_lower_case=True)


@pytest.fixture(scope="module")
def basic(rs):
    """Our BasicTokenizer for get_final_text when the tokenization module is in; else Google's."""
    try:
        from bert_core.tokenization import BasicTokenizer
    except ImportError:
        return rs.tokenization.BasicTokenizer(do_lower_case=True)
    return BasicTokenizer(do_lower_case=True)


@pytest.fixture
def flags(rs):
    saved = (rs.FLAGS.version_2_with_negative, rs.FLAGS.null_score_diff_threshold)
    yield rs.FLAGS
    rs.FLAGS.version_2_with_negative, rs.FLAGS.null_score_diff_threshold = saved


def dump(tmp_path, obj, name="data.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return str(path)


def google_features(rs, examples, tokenizer, *args):
    out = []
    rs.convert_examples_to_features(examples, tokenizer, *args, output_fn=out.append)
    return out


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("version_2", [False, True])
def test_read_matches_google(tmp_path, rs, flags, version_2):
    flags.version_2_with_negative = version_2
    data = json.loads(json.dumps(DATASET))
    if not version_2:  # v1.1 training needs one answer per question
        data["data"][0]["paragraphs"][0]["qas"].pop(1)
    path = dump(tmp_path, data)
    for is_training in (False, True):
        ours = squad.read_squad_examples(path, is_training, version_2)
        theirs = rs.read_squad_examples(path, is_training)
        assert [(e.qas_id, e.question_text, e.doc_tokens, e.orig_answer_text, e.start_position, e.end_position,
                 e.is_impossible) for e in ours] == \
               [(e.qas_id, e.question_text, e.doc_tokens, e.orig_answer_text, e.start_position, e.end_position,
                 e.is_impossible) for e in theirs]


def test_answer_not_at_answer_start_is_skipped_counted_and_warned_once(tmp_path, caplog):
    context = "Paris is the capital of France."
    qas = [{"id": "ok", "question": "Capital?", "answers": [{"text": "Paris", "answer_start": 0}]},
           {"id": "off", "question": "Country?", "answers": [{"text": "France", "answer_start": 3}]},
           {"id": "past", "question": "Country?", "answers": [{"text": "France", "answer_start": 400}]}]
    path = dump(tmp_path, {"data": [{"paragraphs": [{"context": context, "qas": qas}]}]})
    with caplog.at_level(logging.WARNING, logger="bert_core.data.squad"):
        examples = squad.read_squad_examples(path, is_training=True)
    assert [e.qas_id for e in examples] == ["ok"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "skipped 2 question(s)" in warnings[0] and path in warnings[0]
    # Prediction keeps every question: answers are not needed there.
    assert [e.qas_id for e in squad.read_squad_examples(path, is_training=False)] == ["ok", "off", "past"]


def test_bad_squad_files_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match=r"no field 'data'"):
        squad.read_squad_examples(dump(tmp_path, {"version": "1.1"}), False)
    bad = {"data": [{"paragraphs": [{"context": "x", "qas": [{"id": "q", "answers": []}]}]}]}
    with pytest.raises(UserError, match=r"data\[0\].paragraphs\[0\].qas\[0\] has no field 'question'"):
        squad.read_squad_examples(dump(tmp_path, bad), False)
    two = {"data": [{"paragraphs": [{"context": "a b", "qas": [{"id": "q", "question": "?", "answers": [
        {"text": "a", "answer_start": 0}, {"text": "b", "answer_start": 2}]}]}]}]}
    with pytest.raises(UserError, match=r"question 'q': for training each question needs exactly 1 answer, got 2"):
        squad.read_squad_examples(dump(tmp_path, two), True)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(UserError, match="not valid JSON"):
        squad.read_squad_examples(str(tmp_path / "broken.json"), False)


@pytest.mark.parametrize("training", [False, True])
def test_a_question_id_used_twice_is_one_line(tmp_path, training):
    qa = {"id": "q", "question": "?", "answers": [{"text": "a", "answer_start": 0}]}
    twice = {"data": [{"paragraphs": [{"context": "a b", "qas": [qa]}, {"context": "a c", "qas": [qa]}]}]}
    with pytest.raises(UserError, match=r"question id 'q' is used twice \(data\[0\].paragraphs\[0\].qas\[0\] and "
                                        r"data\[0\].paragraphs\[1\].qas\[0\]\): predictions are keyed by id"):
        squad.read_squad_examples(dump(tmp_path, twice), training)


# --------------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("version_2", [False, True])
@pytest.mark.parametrize("max_seq_length,doc_stride,max_query_length", [(21, 6, 8), (20, 3, 4), (64, 128, 32)])
def test_features_match_google(tmp_path, rs, flags, tokenizer, version_2, max_seq_length, doc_stride,
                               max_query_length):
    flags.version_2_with_negative = version_2
    data = json.loads(json.dumps(DATASET))
    if not version_2:
        data["data"][0]["paragraphs"][0]["qas"].pop(1)
    path = dump(tmp_path, data)
    for is_training in (False, True):
        examples = rs.read_squad_examples(path, is_training)
        theirs = google_features(rs, examples, tokenizer, max_seq_length, doc_stride, max_query_length, is_training)
        ours = squad.convert_examples_to_features(
            squad.read_squad_examples(path, is_training, version_2), tokenizer, max_seq_length, doc_stride,
            max_query_length, is_training)
        assert len(ours) == len(theirs) >= len(examples)
        for a, b in zip(ours, theirs):
            for name in ("unique_id", "example_index", "doc_span_index", "tokens", "token_to_orig_map",
                         "token_is_max_context", "input_ids", "input_mask", "segment_ids", "start_position",
                         "end_position", "is_impossible"):
                assert getattr(a, name) == getattr(b, name), (name, a.unique_id)


def test_answer_across_a_window_edge_is_trained_only_where_whole(tmp_path, tokenizer):
    path = dump(tmp_path, DATASET)
    example = squad.read_squad_examples(path, True, version_2_with_negative=True)[0]
    features = squad.convert_examples_to_features([example], tokenizer, 21, 6, 8, is_training=True)
    # "Charles Darwin" are context pieces 12 and 13; windows start at 0, 6, 12, ...: the first window
    # (pieces 0-12) cuts the answer, so it is trained on (0, 0); the windows holding both pieces point
    # at them.
    positions = [(f.doc_span_index, f.start_position, f.end_position) for f in features]
    whole = [(f, s, e) for f, (i, s, e) in zip(features, positions) if s != 0]
    assert positions[0][1:] == (0, 0)
    assert whole and all(f.tokens[s:e + 1] == ["charles", "darwin"] for f, s, e in whole)
    arrays = squad.features_to_arrays(features, is_training=True)
    assert arrays["input_ids"].shape == (len(features), 21)
    assert arrays["start_positions"].tolist() == [p[1] for p in positions]


def test_impossible_questions_train_on_cls(tmp_path, tokenizer):
    path = dump(tmp_path, DATASET)
    example = squad.read_squad_examples(path, True, version_2_with_negative=True)[1]
    assert example.is_impossible and example.start_position == -1
    features = squad.convert_examples_to_features([example], tokenizer, 21, 6, 8, is_training=True)
    assert len(features) > 1 and all((f.start_position, f.end_position) == (0, 0) for f in features)


def test_non_ascii_answers_map_to_their_pieces(tmp_path, tokenizer):
    examples = squad.read_squad_examples(dump(tmp_path, DATASET), True, version_2_with_negative=True)
    jose, where = examples[2], examples[3]
    assert jose.doc_tokens[jose.start_position:jose.end_position + 1] == ["José", "Núñez"]
    assert where.doc_tokens[where.start_position] == "北京大学"
    features = squad.convert_examples_to_features([jose, where], tokenizer, 64, 32, 16, is_training=True)
    spans = [f.tokens[f.start_position:f.end_position + 1] for f in features]
    assert spans[0] == tokenizer.tokenize("José Núñez")
    assert spans[1] == ["北", "京", "大", "学"]


def test_too_short_sequence_is_a_user_error(tokenizer):
    with pytest.raises(UserError, match=r"--max_seq_length=10 must be greater than --max_query_length \+ 3"):
        squad.convert_examples_to_features([], tokenizer, 10, 4, 8, False)


# --------------------------------------------------------------------------------------------------
# Postprocessing
# --------------------------------------------------------------------------------------------------
def _logits_for(features, seed):
    rng = np.random.default_rng(seed)
    out = []
    for f in features:
        start = rng.normal(size=len(f.input_ids)).astype(np.float32)
        end = rng.normal(size=len(f.input_ids)).astype(np.float32)
        if seed % 2:  # ties between logits, which the ordering must break as the original does
            start = np.round(start, 1)
            end = np.round(end, 1)
        out.append((f.unique_id, start, end))
    return out


@pytest.mark.parametrize("version_2,threshold", [(False, 0.0), (True, 0.0), (True, -1.5), (True, 2.0)])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("n_best_size,max_answer_length", [(20, 30), (3, 2)])
def test_write_predictions_equals_google(tmp_path, rs, flags, tokenizer, basic, version_2, threshold, seed,
                                         n_best_size, max_answer_length):
    flags.version_2_with_negative = version_2
    flags.null_score_diff_threshold = threshold
    data = json.loads(json.dumps(DATASET))
    if not version_2:
        data["data"][0]["paragraphs"][0]["qas"].pop(1)
    path = dump(tmp_path, data)
    examples = rs.read_squad_examples(path, False)
    features = google_features(rs, examples, tokenizer, 21, 6, 8, False)
    logits = _logits_for(features, seed)
    (tmp_path / "g").mkdir()
    our_examples = squad.read_squad_examples(path, False, version_2)
    our_features = squad.convert_examples_to_features(our_examples, tokenizer, 21, 6, 8, False)
    ours = squad.write_predictions(our_examples, our_features, [squad.RawResult(*r) for r in logits], n_best_size,
                                   max_answer_length, True, str(tmp_path / "o"), version_2, threshold, basic)
    try:
        rs.write_predictions(examples, features, [rs.RawResult(u, [float(x) for x in s], [float(x) for x in e])
                                                  for u, s, e in logits],
                             n_best_size, max_answer_length, True, str(tmp_path / "g" / "predictions.json"),
                             str(tmp_path / "g" / "nbest_predictions.json"), str(tmp_path / "g" / "null_odds.json"))
    except AttributeError:
        # The original fails when only the null answer survives for a question (best_non_null_entry is
        # None); we answer "" with odds 1e6 there.
        assert version_2 and n_best_size == 3 and any(v == 1e6 and ours.predictions[q] == "" for q, v in ours.null_odds.items())
        return
    names = ["predictions.json", "nbest_predictions.json"] + (["null_odds.json"] if version_2 else [])
    for name in names:
        assert (tmp_path / "o" / name).read_text() == (tmp_path / "g" / name).read_text(), name
    assert not (tmp_path / "o" / "null_odds.json").exists() or version_2


def _spike(features, where: dict[int, tuple[int, float, int, float]], null: float | None = None):
    """Logits that are -5 everywhere except start/end spikes per window, and the [CLS] null score."""
    results = []
    for f in features:
        start = np.full(len(f.input_ids), -5.0, np.float32)
        end = np.full(len(f.input_ids), -5.0, np.float32)
        if f.doc_span_index in where:
            s, sv, e, ev = where[f.doc_span_index]
            start[s], end[e] = sv, ev
        if null is not None:
            start[0] = end[0] = null
        results.append(squad.RawResult(f.unique_id, start, end))
    return results


def _seq_pos(feature, piece_text: str) -> int:
    return next(i for i, t in enumerate(feature.tokens) if t == piece_text and i in feature.token_to_orig_map)


def test_best_window_wins_for_an_answer_across_a_window_edge(tmp_path, tokenizer, basic):
    examples = squad.read_squad_examples(dump(tmp_path, DATASET), False)[:1]
    features = squad.convert_examples_to_features(examples, tokenizer, 21, 6, 8, False)
    first, later = features[0], next(f for f in features[1:] if "darwin" in f.tokens)
    # The first window ends at "charles": its high-scoring "charles .. charles" span has "charles" at
    # its right edge, where it has no context, so only the window with max context may answer.
    assert first.tokens[-2] == "charles" and not first.token_is_max_context[len(first.tokens) - 2]
    c0 = len(first.tokens) - 2
    c1, d1 = _seq_pos(later, "charles"), _seq_pos(later, "darwin")
    assert later.token_is_max_context[c1]
    results = _spike(features, {first.doc_span_index: (c0, 9.0, c0, 9.0),
                                later.doc_span_index: (c1, 4.0, d1, 4.0)})
    preds = squad.compute_predictions(examples, features, results, 20, 30, True, basic_tokenizer=basic)
    assert preds.predictions == {"edge": "Charles Darwin"}
    best = preds.nbest["edge"][0]
    assert (best["text"], best["start_logit"], best["end_logit"]) == ("Charles Darwin", 4.0, 4.0)
    assert abs(sum(e["probability"] for e in preds.nbest["edge"]) - 1.0) < 1e-9


def test_unanswerable_prediction_and_null_odds(tmp_path, tokenizer, basic):
    examples = squad.read_squad_examples(dump(tmp_path, DATASET), False, True)[:2]
    features = squad.convert_examples_to_features(examples, tokenizer, 21, 6, 8, False)
    by_ex = {i: [f for f in features if f.example_index == i] for i in (0, 1)}
    later = next(f for f in by_ex[0] if "darwin" in f.tokens and f.doc_span_index > 0)
    spikes = {later.doc_span_index: (_seq_pos(later, "charles"), 3.0, _seq_pos(later, "darwin"), 2.0)}
    results = _spike(by_ex[0], spikes, null=1.0) + _spike(by_ex[1], spikes, null=4.0)
    # Null score = 2, best span = 5 for "edge"; null = 8 vs 5 for "impossible" (same spikes).
    preds = squad.write_predictions(examples, features, results, 20, 30, True, str(tmp_path / "out"),
                                    version_2_with_negative=True, basic_tokenizer=basic)
    assert preds.predictions == {"edge": "Charles Darwin", "impossible": ""}
    assert preds.null_odds == {"edge": pytest.approx(-3.0), "impossible": pytest.approx(3.0)}
    assert json.loads((tmp_path / "out" / "null_odds.json").read_text()) == preds.null_odds
    assert "" in [e["text"] for e in preds.nbest["edge"]]  # the null answer is always in the n-best
    # A higher threshold lets the span through.
    higher = squad.compute_predictions(examples, features, results, 20, 30, True, True, 3.5, basic)
    assert higher.predictions["impossible"] == "Charles Darwin"


def test_nan_logits_are_one_line_not_nan_probabilities(tmp_path, tokenizer, basic):
    examples = squad.read_squad_examples(dump(tmp_path, DATASET), False)[:1]
    features = squad.convert_examples_to_features(examples, tokenizer, 21, 6, 8, False)
    results = _spike(features, {})
    results[-1].start_logits[3] = np.nan  # as a diverged model gives
    with pytest.raises(UserError, match="the model's logits for question 'edge' are not finite: did training diverge"):
        squad.compute_predictions(examples, features, results, 20, 30, True, basic_tokenizer=basic)


def test_non_ascii_predictions_keep_the_original_text(tmp_path, tokenizer, basic):
    examples = squad.read_squad_examples(dump(tmp_path, DATASET), False)[2:4]
    features = squad.convert_examples_to_features(examples, tokenizer, 64, 32, 16, False)
    f0, f1 = features
    last = tokenizer.tokenize("Núñez")[-1]  # accents are stripped in the pieces
    assert last.isascii()
    results = [
        squad.RawResult(f0.unique_id, *[np.where(np.arange(64) == _seq_pos(f0, p), 5.0, -5.0) for p in ("jose", last)]),
        squad.RawResult(f1.unique_id, *[np.where(np.arange(64) == _seq_pos(f1, p), 5.0, -5.0) for p in ("北", "学")]),
    ]
    preds = squad.compute_predictions(examples, features, results, 20, 30, True, basic_tokenizer=basic)
    assert preds.predictions == {"jose": "José Núñez", "where": "北京大学"}


def test_get_final_text_alignment(basic):
    assert squad.get_final_text("steve smith", "Steve Smith's", True, basic) == "Steve Smith"
    assert squad.get_final_text("1895", "(1895-1943).", True, basic) == "1895"
    assert squad.get_final_text("zurich", "Zürich,", True, basic) == "Zürich"
    assert squad.get_final_text("absent", "Steve Smith's", True, basic) == "Steve Smith's"
