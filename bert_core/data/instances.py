"""Google's instance creation and masking (create_pretraining_data.py), on token ids.

What a reader compares with Google's script, and where it is here:

* `create_instances_from_document` -> `InstanceMaker.from_document(pool, index)`: sentences are
  gathered into a chunk up to a target length (`max_seq_length - 3`, or with `short_seq_prob` a random
  shorter one); the chunk is split at a random sentence into A and B, and B is replaced by a run of
  sentences from another document ("random next", NSP label 1) when the chunk has one sentence or a 50%
  coin says so; the sentences that then go unused start the next chunk. The other document comes from
  `pool` (`bert create-data` passes a block of documents, not the whole corpus).
* `truncate_seq_pair` -> `truncate_seq_pair` below: drop one token at a time from the longer of A and
  B, from the front or the back at random, until the pair fits. The instance is [CLS] A [SEP] B [SEP].
* `create_masked_lm_predictions` -> `InstanceMaker.features(batch)`: num_to_predict =
  min(max_predictions_per_seq, max(1, round(len * masked_lm_prob))) positions other than [CLS]/[SEP]
  (whole words with `do_whole_word_mask`), of which 80% become [MASK], 10% a random vocab id and 10%
  keep their token. It runs on a batch of instances at once with numpy, and returns the seven features
  of Google's `write_instance_to_example_files` as zero-padded arrays, in Google's order.

The masking draws are not Google's (see InstanceMaker), so the records equal Google's statistically, not
bitwise (tests/test_create_data.py runs both on the same corpus and compares); the pairs alone, before
masking, are exactly Google's given the same `random.Random` stream (tested too).
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from bert_core.config import DataConfig


@dataclass
class InstanceStats:
    instances: int = 0
    tokens: int = 0             # real tokens, [CLS]/[SEP] included (sum of input_mask)
    masked: int = 0             # masked LM predictions (sum of masked_lm_weights)
    masked_as_mask: int = 0     # ... replaced by [MASK]
    masked_as_random: int = 0   # ... replaced by a random vocab id
    masked_as_kept: int = 0     # ... left as they were
    random_next: int = 0        # NSP label 1


class InstanceMaker:
    """Turns tokenized documents into masked-LM/NSP instances and their features.

    A document is a list of sentences; a sentence is a sequence of token ids (anything `list.extend`
    takes). `from_document(pool, i)` yields unmasked instances (tokens, len_a, is_random_next) for
    document `pool[i]`, drawing random next segments from the other documents of `pool`; `features(batch)`
    masks a batch of them and returns Google's seven features as arrays. Segment choice uses
    `random.Random(seed)`; masking uses numpy's generator (seed + 1), vectorized over the batch, except
    for whole-word masking, which walks each instance's words with the Python generator."""

    def __init__(self, vocab: dict[str, int], cfg: DataConfig, seed: int):
        self.rng = random.Random(seed)
        self.np_rng = np.random.default_rng(seed + 1)
        self.max_seq_length = cfg.max_seq_length
        self.max_num_tokens = cfg.max_seq_length - 3  # [CLS] A [SEP] B [SEP]
        self.short_seq_prob = cfg.short_seq_prob
        self.masked_lm_prob = cfg.masked_lm_prob
        self.max_predictions = cfg.max_predictions_per_seq
        self.whole_word = cfg.do_whole_word_mask
        self.vocab_size = max(vocab.values()) + 1
        self.cls, self.sep, self.mask = vocab["[CLS]"], vocab["[SEP]"], vocab["[MASK]"]
        cont = bytearray(self.vocab_size)
        for token, i in vocab.items():
            if token.startswith("##"):
                cont[i] = 1
        self.continuation = bytes(cont)
        self.stats = InstanceStats()

    # -- segments A and B (as Google's create_instances_from_document) -----------------------------
    def from_document(self, pool: list, index: int) -> Iterator[tuple[list[int], int, bool]]:
        rng = self.rng
        document = pool[index]
        target = self.max_num_tokens
        if rng.random() < self.short_seq_prob:
            target = rng.randint(2, self.max_num_tokens)
        chunk: list = []
        length = 0
        i = 0
        n = len(document)
        while i < n:
            chunk.append(document[i])
            length += len(document[i])
            if i == n - 1 or length >= target:
                a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
                tokens_a: list[int] = []
                for sentence in chunk[:a_end]:
                    tokens_a.extend(sentence)
                tokens_b: list[int] = []
                if len(chunk) == 1 or rng.random() < 0.5:
                    is_random_next = True
                    target_b = target - len(tokens_a)
                    other = index
                    for _ in range(10):  # another document of the pool, if there is one
                        other = rng.randint(0, len(pool) - 1)
                        if other != index:
                            break
                    random_doc = pool[other]
                    for j in range(rng.randint(0, len(random_doc) - 1), len(random_doc)):
                        tokens_b.extend(random_doc[j])
                        if len(tokens_b) >= target_b:
                            break
                    i -= len(chunk) - a_end  # the unused sentences start the next chunk
                else:
                    is_random_next = False
                    for sentence in chunk[a_end:]:
                        tokens_b.extend(sentence)
                yield self._pair(tokens_a, tokens_b, is_random_next)
                chunk = []
                length = 0
            i += 1

    def _pair(self, a: list[int], b: list[int], is_random_next: bool) -> tuple[list[int], int, bool]:
        a0, a1, b0, b1 = truncate_seq_pair(len(a), len(b), self.max_num_tokens, self.rng)
        tokens = [self.cls]
        tokens += a[a0:a1]
        tokens.append(self.sep)
        tokens += b[b0:b1]
        tokens.append(self.sep)
        return tokens, a1 - a0, is_random_next

    # -- masking and features -----------------------------------------------------------------------
    def features(self, batch: list[tuple[list[int], int, bool]]) -> dict[str, np.ndarray]:
        """Mask a batch of instances; Google's features as [B, n] arrays (zero-padded), in Google's order."""
        B, L, P = len(batch), self.max_seq_length, self.max_predictions
        n_real = np.fromiter((len(t) for t, _, _ in batch), dtype=np.int64, count=B)
        b_start = np.fromiter((la + 2 for _, la, _ in batch), dtype=np.int64, count=B)
        nsp = np.fromiter((r for _, _, r in batch), dtype=np.int64, count=B)[:, None]
        cols = np.arange(L)
        real = cols < n_real[:, None]
        input_ids = np.zeros((B, L), dtype=np.int64)
        input_ids[real] = np.fromiter(itertools.chain.from_iterable(t for t, _, _ in batch), dtype=np.int64,
                                      count=int(n_real.sum()))
        segment_ids = (real & (cols >= b_start[:, None])).astype(np.int64)
        # num_to_predict = min(max_predictions, max(1, round(len * prob))); np.round rounds half to even,
        # as Python's round does
        want = np.minimum(P, np.maximum(1, np.round(n_real * self.masked_lm_prob))).astype(np.int64)
        if self.whole_word:
            positions = np.zeros((B, P), dtype=np.int64)
            n_pred = np.zeros(B, dtype=np.int64)
            for r, (tokens, len_a, _) in enumerate(batch):
                pos = self._whole_word_positions(tokens, len_a, int(want[r]))
                positions[r, :len(pos)] = pos
                n_pred[r] = len(pos)
        else:
            candidate = real & (cols > 0) & (cols != b_start[:, None] - 1) & (cols != n_real[:, None] - 1)
            keys = self.np_rng.random((B, L))
            keys[~candidate] = 2.0  # never ordered before a candidate
            order = np.argsort(keys, axis=1)[:, :P]  # a uniformly random ordering of the candidates
            n_pred = np.minimum(want, candidate.sum(axis=1))
            take = np.arange(P) < n_pred[:, None]
            positions = np.sort(np.where(take, order, L), axis=1)  # the chosen positions, ascending
            positions[positions == L] = 0
        valid = np.arange(P) < n_pred[:, None]
        rows = np.broadcast_to(np.arange(B)[:, None], (B, P))
        label_ids = np.where(valid, input_ids[rows, positions], 0)
        # 80% [MASK], 10% a random vocab id, 10% unchanged
        u = self.np_rng.random((B, P))
        random_ids = self.np_rng.integers(0, self.vocab_size, size=(B, P))
        as_mask = valid & (u < 0.8)
        as_random = valid & (u >= 0.9)
        new_ids = np.where(as_mask, self.mask, np.where(as_random, random_ids, label_ids))
        vr, vc = np.nonzero(valid)
        input_ids[vr, positions[vr, vc]] = new_ids[vr, vc]
        st = self.stats
        st.instances += B
        st.tokens += int(n_real.sum())
        st.masked += int(valid.sum())
        st.masked_as_mask += int(as_mask.sum())
        st.masked_as_random += int(as_random.sum())
        st.masked_as_kept += int(valid.sum() - as_mask.sum() - as_random.sum())
        st.random_next += int(nsp.sum())
        return {"input_ids": input_ids, "input_mask": real.astype(np.int64), "segment_ids": segment_ids,
                "masked_lm_positions": positions, "masked_lm_ids": label_ids,
                "masked_lm_weights": valid.astype(np.float32), "next_sentence_labels": nsp}

    def _whole_word_positions(self, tokens: list[int], len_a: int, num_to_predict: int) -> list[int]:
        """Whole words in random order; a word that would overflow num_to_predict is skipped, not split."""
        cont = self.continuation
        sep_a = len_a + 1
        groups: list[list[int]] = []
        for p in range(1, len(tokens) - 1):
            if p == sep_a:
                continue
            if groups and cont[tokens[p]]:
                groups[-1].append(p)
            else:
                groups.append([p])
        self.rng.shuffle(groups)
        picked: list[int] = []
        for g in groups:
            if len(picked) >= num_to_predict:
                break
            if len(picked) + len(g) > num_to_predict:
                continue
            picked.extend(g)
        return sorted(picked)


def truncate_seq_pair(len_a: int, len_b: int, max_num_tokens: int, rng: random.Random) -> tuple[int, int, int, int]:
    """Google's truncate_seq_pair on lengths: (a_start, a_end, b_start, b_end) of the kept tokens. While
    the pair is too long, one token goes from the longer side (B on a tie), from its front or back by a
    coin."""
    a0, a1, b0, b1 = 0, len_a, 0, len_b
    while (a1 - a0) + (b1 - b0) > max_num_tokens:
        if a1 - a0 > b1 - b0:
            if rng.random() < 0.5:
                a0 += 1
            else:
                a1 -= 1
        elif rng.random() < 0.5:
            b0 += 1
        else:
            b1 -= 1
    return a0, a1, b0, b1
