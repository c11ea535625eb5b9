"""SQuAD 1.1 / 2.0: reading, features and postprocessing, with the semantics of Google's run_squad.py.

Reading splits each context on whitespace into words (`doc_tokens`) and, for training, maps the
answer's character offset to a word span. If the answer text is not found in those words (bad
offsets, odd Unicode), the question is skipped and counted; one warning gives the count.

Features: the question (cut to `max_query_length` WordPieces) and a window of the WordPiece-tokenized
context, `[CLS] question [SEP] window [SEP]`. A context longer than a window is covered by sliding
windows `doc_stride` tokens apart; each context token scores each window it is in by
min(left context, right context) + 0.01 * window length and is "max context" in the best one.
Training targets are token positions of the answer in the sequence, or (0, 0) for an impossible
question and for a window that does not contain the whole answer.

Postprocessing turns per-window start/end logits into text: the n-best start and end indexes of
each window give candidate spans (inside the context, start in its max-context window, end >= start,
at most `max_answer_length` tokens); the best candidates over all windows of a question are
de-tokenized and projected back onto the original text (`get_final_text`). With
`version_2_with_negative`, the null answer competes with score min over windows of start[0] + end[0]:
the answer is "" when null score - best non-null score > `null_score_diff_threshold`, and that
difference is written to null_odds.json.

    examples = read_squad_examples(path, is_training=False)
    features = convert_examples_to_features(examples, tokenizer, 384, 128, 64, is_training=False)
    arrays = features_to_arrays(features)                 # -> model -> start/end logits per feature
    results = [RawResult(unique_id, start_logits, end_logits), ...]
    write_predictions(examples, features, results, n_best_size=20, max_answer_length=30,
                      do_lower_case=True, output_dir=out, version_2_with_negative=False)
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Sequence

import numpy as np

from bert_core import storage
from bert_core.errors import UserError

logger = logging.getLogger(__name__)

FIRST_UNIQUE_ID = 1000000000


@dataclass
class SquadExample:
    """One question. `doc_tokens` are the context's whitespace-separated words; for training,
    `start_position`/`end_position` are word indexes of the answer (-1 for an impossible question)."""

    qas_id: str
    question_text: str
    doc_tokens: list[str]
    orig_answer_text: str | None = None
    start_position: int | None = None
    end_position: int | None = None
    is_impossible: bool = False


@dataclass
class SquadFeature:
    """One window of one example, as Google's InputFeatures; maps are keyed by sequence position."""

    unique_id: int
    example_index: int
    doc_span_index: int
    tokens: list[str]
    token_to_orig_map: dict[int, int]
    token_is_max_context: dict[int, bool]
    input_ids: list[int]
    input_mask: list[int]
    segment_ids: list[int]
    start_position: int | None = None
    end_position: int | None = None
    is_impossible: bool = False


class RawResult(NamedTuple):
    """The model's output for one feature: logits over the max_seq_length positions."""

    unique_id: int
    start_logits: Sequence[float]
    end_logits: Sequence[float]


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------
def _is_whitespace(c: str) -> bool:
    return c in " \t\r\n" or ord(c) == 0x202F


def split_context(text: str) -> tuple[list[str], list[int]]:
    """Whitespace-separated words of `text` and, for every character, the index of its word
    (a whitespace character maps to the word before it, -1 before the first word)."""
    words: list[str] = []
    char_to_word: list[int] = []
    in_word = False
    for c in text:
        if _is_whitespace(c):
            in_word = False
        elif in_word:
            words[-1] += c
        else:
            words.append(c)
            in_word = True
        char_to_word.append(len(words) - 1)
    return words, char_to_word


def _field(obj, key: str, kind: type, path: str, what: str):
    if not isinstance(obj, dict) or key not in obj:
        raise UserError(f"{path}: {what} has no field {key!r} (expected the SQuAD JSON format)")
    value = obj[key]
    if not isinstance(value, kind):
        expected = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise UserError(f"{path}: {what}.{key} is a {type(value).__name__}, expected {expected}")
    return value


def read_squad_examples(input_file: str, is_training: bool, version_2_with_negative: bool = False
                        ) -> list[SquadExample]:
    """Questions of a SQuAD JSON file, in file order. For training each question needs exactly one
    answer (or `is_impossible` with version 2); answers whose text is not at `answer_start` are
    skipped and counted (one warning with the count)."""
    data = _field(storage.read_json(input_file), "data", list, input_file, "the file")
    examples: list[SquadExample] = []
    skipped = 0
    first: dict[str, str] = {}  # qas_id -> where it is: predictions are keyed by it, so it must be unique
    for a, article in enumerate(data):
        for p, paragraph in enumerate(_field(article, "paragraphs", list, input_file, f"data[{a}]")):
            where = f"data[{a}].paragraphs[{p}]"
            context = _field(paragraph, "context", str, input_file, where)
            doc_tokens, char_to_word = split_context(context)
            for q, qa in enumerate(_field(paragraph, "qas", list, input_file, where)):
                qwhere = f"{where}.qas[{q}]"
                qas_id = str(_field(qa, "id", (str, int), input_file, qwhere))  # type: ignore[arg-type]
                if qas_id in first:
                    raise UserError(f"{input_file}: question id {qas_id!r} is used twice ({first[qas_id]} and "
                                    f"{qwhere}): predictions are keyed by id, so ids must be unique")
                first[qas_id] = qwhere
                question = _field(qa, "question", str, input_file, qwhere)
                example = SquadExample(qas_id, question, doc_tokens)
                if is_training:
                    if version_2_with_negative:
                        example.is_impossible = bool(qa.get("is_impossible", False))
                    if example.is_impossible:
                        example.start_position = example.end_position = -1
                        example.orig_answer_text = ""
                    else:
                        answers = _field(qa, "answers", list, input_file, qwhere)
                        if len(answers) != 1:
                            raise UserError(f"{input_file}: question {qas_id!r}: for training each question "
                                            f"needs exactly 1 answer, got {len(answers)}")
                        text = _field(answers[0], "text", str, input_file, f"{qwhere}.answers[0]")
                        offset = _field(answers[0], "answer_start", int, input_file, f"{qwhere}.answers[0]")
                        span = _answer_words(doc_tokens, char_to_word, text, offset)
                        if span is None:
                            skipped += 1
                            continue
                        example.orig_answer_text = text
                        example.start_position, example.end_position = span
                examples.append(example)
    if skipped:
        logger.warning("%s: skipped %d question(s) whose answer text is not at answer_start",
                       input_file, skipped)
    return examples


def _answer_words(doc_tokens: list[str], char_to_word: list[int], text: str, offset: int
                  ) -> tuple[int, int] | None:
    """Word span of the answer, if the words there contain the answer's (whitespace-normalized) text."""
    last = offset + len(text) - 1
    if offset < 0 or not text or last >= len(char_to_word):
        return None
    start, end = char_to_word[offset], char_to_word[last]
    if start < 0:
        return None
    found = " ".join(doc_tokens[start:end + 1])
    if " ".join(text.split()) not in found:
        return None
    return start, end


# --------------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------------
def doc_windows(num_tokens: int, max_tokens_for_doc: int, doc_stride: int) -> list[tuple[int, int]]:
    """(start, length) of each window; the last window ends at the last token."""
    windows = []
    start = 0
    while start < num_tokens:
        length = min(num_tokens - start, max_tokens_for_doc)
        windows.append((start, length))
        if start + length == num_tokens:
            break
        start += min(length, doc_stride)
    return windows


def max_context_window(windows: list[tuple[int, int]], position: int) -> int | None:
    """Index of the window where `position` has the most context (the first one on a tie)."""
    best, best_score = None, -math.inf
    for i, (start, length) in enumerate(windows):
        end = start + length - 1
        if start <= position <= end:
            score = min(position - start, end - position) + 0.01 * length
            if score > best_score:
                best, best_score = i, score
    return best


def _refine_answer(doc_pieces: list[str], start: int, end: int, tokenizer, answer: str) -> tuple[int, int]:
    """The tightest sub-span of [start, end] whose pieces equal the tokenized answer, else unchanged
    (an answer "1895" inside the word "(1895-1943)." becomes the single piece "1895")."""
    target = tokenizer.tokenize(answer)
    for s in range(start, end + 1):
        for e in range(end, s - 1, -1):
            if doc_pieces[s:e + 1] == target:
                return s, e
    return start, end


def convert_examples_to_features(examples: Sequence[SquadExample], tokenizer, max_seq_length: int,
                                 doc_stride: int, max_query_length: int, is_training: bool,
                                 output_fn: Callable[[SquadFeature], None] | None = None
                                 ) -> list[SquadFeature]:
    """Windows of every example, in order, with unique ids from 1000000000. If `output_fn` is given,
    each feature is passed to it instead of being collected (for large sets)."""
    if max_seq_length <= max_query_length + 3:
        raise UserError(f"--max_seq_length={max_seq_length} must be greater than "
                        f"--max_query_length + 3 = {max_query_length + 3}")
    if doc_stride < 1:
        raise UserError(f"--doc_stride={doc_stride}: must be at least 1")
    collected: list[SquadFeature] = []
    emit = output_fn or collected.append
    unique_id = FIRST_UNIQUE_ID
    for example_index, example in enumerate(examples):
        query = tokenizer.tokenize(example.question_text)[:max_query_length]

        piece_to_word: list[int] = []
        word_to_first_piece: list[int] = []
        pieces: list[str] = []
        for w, word in enumerate(example.doc_tokens):
            word_to_first_piece.append(len(pieces))
            for piece in tokenizer.tokenize(word):
                piece_to_word.append(w)
                pieces.append(piece)

        answer_start = answer_end = None
        if is_training and example.is_impossible:
            answer_start = answer_end = -1
        elif is_training:
            answer_start = word_to_first_piece[example.start_position]
            if example.end_position < len(example.doc_tokens) - 1:
                answer_end = word_to_first_piece[example.end_position + 1] - 1
            else:
                answer_end = len(pieces) - 1
            answer_start, answer_end = _refine_answer(pieces, answer_start, answer_end, tokenizer,
                                                      example.orig_answer_text)

        windows = doc_windows(len(pieces), max_seq_length - len(query) - 3, doc_stride)
        doc_offset = len(query) + 2  # [CLS] query [SEP]
        for window_index, (start, length) in enumerate(windows):
            tokens = ["[CLS]", *query, "[SEP]", *pieces[start:start + length], "[SEP]"]
            segment_ids = [0] * doc_offset + [1] * (length + 1)
            token_to_orig_map = {doc_offset + i: piece_to_word[start + i] for i in range(length)}
            token_is_max_context = {doc_offset + i: max_context_window(windows, start + i) == window_index
                                    for i in range(length)}
            ids = tokenizer.convert_tokens_to_ids(tokens)
            pad = max_seq_length - len(ids)
            input_ids = list(ids) + [0] * pad
            input_mask = [1] * len(ids) + [0] * pad
            segment_ids += [0] * pad

            start_position = end_position = None
            if is_training:
                if example.is_impossible or not (start <= answer_start and answer_end <= start + length - 1):
                    start_position = end_position = 0
                else:
                    start_position = answer_start - start + doc_offset
                    end_position = answer_end - start + doc_offset
            emit(SquadFeature(unique_id, example_index, window_index, tokens, token_to_orig_map,
                              token_is_max_context, input_ids, input_mask, segment_ids,
                              start_position, end_position, example.is_impossible))
            unique_id += 1
    return collected


def features_to_arrays(features: Sequence[SquadFeature], is_training: bool = False) -> dict[str, np.ndarray]:
    """Model inputs as arrays: unique_ids [N] int64; input_ids/input_mask/segment_ids [N, L] int32;
    for training also start_positions/end_positions [N] int32 and is_impossible [N] int32."""
    arrays = {
        "unique_ids": np.array([f.unique_id for f in features], np.int64),
        "input_ids": np.array([f.input_ids for f in features], np.int32),
        "input_mask": np.array([f.input_mask for f in features], np.int32),
        "segment_ids": np.array([f.segment_ids for f in features], np.int32),
    }
    if is_training:
        arrays["start_positions"] = np.array([f.start_position for f in features], np.int32)
        arrays["end_positions"] = np.array([f.end_position for f in features], np.int32)
        arrays["is_impossible"] = np.array([int(f.is_impossible) for f in features], np.int32)
    return arrays


# --------------------------------------------------------------------------------------------------
# Postprocessing
# --------------------------------------------------------------------------------------------------
class _Candidate(NamedTuple):
    feature_index: int
    start_index: int
    end_index: int
    start_logit: float
    end_logit: float


def _top_indexes(logits: list[float], n: int) -> list[int]:
    """Indexes of the n largest logits, largest first; equal logits keep their order."""
    order = np.argsort(-np.asarray(logits, dtype=np.float64), kind="stable")
    return [int(i) for i in order[:n]]


def _softmax(scores: list[float]) -> list[float]:
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    total = 0.0
    for x in exps:  # summed left to right, as a plain loop does
        total += x
    return [x / total for x in exps]


def get_final_text(pred_text: str, orig_text: str, do_lower_case: bool, basic_tokenizer=None) -> str:
    """Project the de-tokenized prediction `pred_text` back onto `orig_text` (the original words it
    came from): the basic-tokenized original, with spaces removed, must align character by character
    with the original with spaces removed; then the prediction's first and last characters map back.
    When the alignment fails the whole `orig_text` is returned."""
    if basic_tokenizer is None:
        basic_tokenizer = _basic_tokenizer(do_lower_case)
    tok_text = " ".join(basic_tokenizer.tokenize(orig_text))
    start = tok_text.find(pred_text)
    if start == -1:
        return orig_text
    end = start + len(pred_text) - 1

    def without_spaces(text: str) -> tuple[str, list[int]]:
        kept = [i for i, c in enumerate(text) if c != " "]
        return "".join(text[i] for i in kept), kept

    orig_ns, orig_positions = without_spaces(orig_text)
    tok_ns, tok_positions = without_spaces(tok_text)
    if len(orig_ns) != len(tok_ns):
        return orig_text
    tok_to_ns = {pos: i for i, pos in enumerate(tok_positions)}
    if start not in tok_to_ns or end not in tok_to_ns:
        return orig_text
    return orig_text[orig_positions[tok_to_ns[start]]:orig_positions[tok_to_ns[end]] + 1]


_BASIC_TOKENIZERS: dict[bool, object] = {}


def _basic_tokenizer(do_lower_case: bool):
    if do_lower_case not in _BASIC_TOKENIZERS:
        from bert_core.tokenization import BasicTokenizer

        _BASIC_TOKENIZERS[do_lower_case] = BasicTokenizer(do_lower_case=do_lower_case)
    return _BASIC_TOKENIZERS[do_lower_case]


@dataclass
class SquadPredictions:
    """predictions.json, nbest_predictions.json and (version 2) null_odds.json, as dicts by qas_id."""

    predictions: dict[str, str] = field(default_factory=dict)
    nbest: dict[str, list[dict]] = field(default_factory=dict)
    null_odds: dict[str, float] = field(default_factory=dict)


def compute_predictions(examples: Sequence[SquadExample], features: Sequence[SquadFeature],
                        results: Sequence[RawResult], n_best_size: int = 20, max_answer_length: int = 30,
                        do_lower_case: bool = True, version_2_with_negative: bool = False,
                        null_score_diff_threshold: float = 0.0, basic_tokenizer=None) -> SquadPredictions:
    """Answers for every example from the logits of its windows (see the module docstring)."""
    by_example: dict[int, list[SquadFeature]] = {}
    for feature in features:
        by_example.setdefault(feature.example_index, []).append(feature)
    logits: dict[int, tuple[list[float], list[float]]] = {}
    for r in results:
        logits[int(r.unique_id)] = (np.asarray(r.start_logits).tolist(), np.asarray(r.end_logits).tolist())
    if basic_tokenizer is None:
        basic_tokenizer = _basic_tokenizer(do_lower_case)

    out = SquadPredictions()
    for example_index, example in enumerate(examples):
        windows = by_example.get(example_index, [])
        candidates: list[_Candidate] = []
        null_score, null_feature, null_start, null_end = math.inf, 0, 0.0, 0.0
        for feature_index, feature in enumerate(windows):
            if feature.unique_id not in logits:
                raise UserError(f"no model output for feature {feature.unique_id} (question {example.qas_id!r})")
            start_logits, end_logits = logits[feature.unique_id]
            if math.isnan(sum(start_logits) + sum(end_logits)):
                raise UserError(f"the model's logits for question {example.qas_id!r} are not finite: did training "
                                f"diverge? (see its loss; a lower --learning_rate, or --dtype=fp32)")
            if version_2_with_negative:
                score = start_logits[0] + end_logits[0]
                if score < null_score:
                    null_score, null_feature = score, feature_index
                    null_start, null_end = start_logits[0], end_logits[0]
            n_tokens = len(feature.tokens)
            for s in _top_indexes(start_logits, n_best_size):
                for e in _top_indexes(end_logits, n_best_size):
                    if s >= n_tokens or e >= n_tokens:
                        continue
                    if s not in feature.token_to_orig_map or e not in feature.token_to_orig_map:
                        continue
                    if not feature.token_is_max_context.get(s, False):
                        continue
                    if e < s or e - s + 1 > max_answer_length:
                        continue
                    candidates.append(_Candidate(feature_index, s, e, start_logits[s], end_logits[e]))
        if version_2_with_negative:
            candidates.append(_Candidate(null_feature, 0, 0, null_start, null_end))
        candidates.sort(key=lambda c: c.start_logit + c.end_logit, reverse=True)

        nbest: list[tuple[str, float, float]] = []
        seen: set[str] = set()
        for c in candidates:
            if len(nbest) >= n_best_size:
                break
            if c.start_index > 0:
                feature = windows[c.feature_index]
                pieces = " ".join(feature.tokens[c.start_index:c.end_index + 1])
                pred_text = " ".join(pieces.replace(" ##", "").replace("##", "").split())
                first, last = feature.token_to_orig_map[c.start_index], feature.token_to_orig_map[c.end_index]
                orig_text = " ".join(example.doc_tokens[first:last + 1])
                text = get_final_text(pred_text, orig_text, do_lower_case, basic_tokenizer)
                if text in seen:
                    continue
            else:
                text = ""
            seen.add(text)
            nbest.append((text, c.start_logit, c.end_logit))
        if version_2_with_negative and "" not in seen:
            nbest.append(("", null_start, null_end))
        if not nbest:  # no valid span at all (rare): a placeholder, as the original
            nbest.append(("empty", 0.0, 0.0))

        probs = _softmax([s + e for _, s, e in nbest])
        out.nbest[example.qas_id] = [{"text": t, "probability": p, "start_logit": s, "end_logit": e}
                                     for (t, s, e), p in zip(nbest, probs)]
        if not version_2_with_negative:
            out.predictions[example.qas_id] = nbest[0][0]
        else:
            best = next(((t, s, e) for t, s, e in nbest if t), None)
            if best is None:
                # Only the null answer survived (e.g. n_best_size=1): the original fails here; we
                # answer "" with odds that keep it null at any threshold.
                out.null_odds[example.qas_id] = 1e6
                out.predictions[example.qas_id] = ""
                continue
            diff = null_score - best[1] - best[2]
            out.null_odds[example.qas_id] = diff
            out.predictions[example.qas_id] = "" if diff > null_score_diff_threshold else best[0]
    return out


PREDICTIONS_FILE = "predictions.json"
NBEST_FILE = "nbest_predictions.json"
NULL_ODDS_FILE = "null_odds.json"


def write_predictions(examples, features, results, n_best_size: int, max_answer_length: int,
                      do_lower_case: bool, output_dir: str, version_2_with_negative: bool = False,
                      null_score_diff_threshold: float = 0.0, basic_tokenizer=None) -> SquadPredictions:
    """`compute_predictions`, then write predictions.json, nbest_predictions.json and (version 2)
    null_odds.json into `output_dir`, each atomically, formatted as the original (indent 4)."""
    preds = compute_predictions(examples, features, results, n_best_size, max_answer_length, do_lower_case,
                                version_2_with_negative, null_score_diff_threshold, basic_tokenizer)

    def dump(name: str, obj) -> None:
        storage.write_text(os.path.join(output_dir, name), json.dumps(obj, indent=4) + "\n")

    dump(PREDICTIONS_FILE, preds.predictions)
    dump(NBEST_FILE, preds.nbest)
    if version_2_with_negative:
        dump(NULL_ODDS_FILE, preds.null_odds)
    return preds
