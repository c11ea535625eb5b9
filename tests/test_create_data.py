"""`bert create-data`: instance semantics, records TensorFlow reads, streaming/sharding/determinism,
atomic resumable output (real SIGKILL), one-line user errors, and statistical parity with Google's
create_pretraining_data.py run on the same corpus and flags."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest

from bert_core.config import DataConfig
from bert_core.data import tfrecord
from bert_core.data.instances import InstanceMaker
from bert_core.data.pretraining import shard_name
from conftest import ROOT, one_line_error, run_bert
from gcs_server import gcs, gcs_prefix  # noqa: F401  (fixtures: a real GCS-API server on loopback)
from processes import descendants, still_running

SMALL = ["--max_seq_length=64", "--max_predictions_per_seq=10"]


def _subset(brown: str, path, docs: int, copies: int = 1) -> str:
    """The first `docs` documents of the Brown corpus (repeated `copies` times)."""
    text = open(brown, encoding="utf-8").read().split("\n\n")[:docs]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n\n".join(text * copies).rstrip("\n") + "\n")
    return str(path)


@pytest.fixture(scope="module")
def brown_small(brown_corpus, tmp_path_factory) -> str:
    return _subset(brown_corpus, tmp_path_factory.mktemp("brown") / "brown60.txt", 60)


def _create(corpus: str, vocab: str, out, *flags: str, env=None) -> subprocess.CompletedProcess:
    return run_bert("create-data", f"--input_file={corpus}", f"--vocab_file={vocab}", f"--output_dir={out}",
                    *flags, check=True, env=env)


def _shards(out) -> dict[str, bytes]:
    return {n: open(os.path.join(out, n), "rb").read() for n in sorted(os.listdir(out)) if n.startswith("train-")}


# --------------------------------------------------------------------------------------------------
# Instance semantics on synthetic documents (every token id unique, so origins can be traced)
# --------------------------------------------------------------------------------------------------
def _toy_vocab(n_words: int = 30000) -> dict[str, int]:
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += [f"w{i}" if i % 3 else f"##w{i}" for i in range(n_words)]
    return {t: i for i, t in enumerate(tokens)}


def _toy_docs(rng: random.Random, n_docs: int = 40) -> list[list[list[int]]]:
    next_id, docs = 5, []
    for _ in range(n_docs):
        doc = []
        for _ in range(rng.randint(1, 15)):
            n = rng.randint(1, 40)
            doc.append(list(range(next_id, next_id + n)))
            next_id += n
        docs.append(doc)
    return docs


def _masked(maker: InstanceMaker, batch):
    """Per instance: (masked tokens, len_a, len_b, positions, labels, is_random_next) from the features."""
    f = maker.features(batch)
    out = []
    for r, (tokens, len_a, is_random_next) in enumerate(batch):
        n = int(f["input_mask"][r].sum())
        assert n == len(tokens) and f["input_ids"][r, n:].sum() == 0
        k = int(f["masked_lm_weights"][r].sum())
        assert f["masked_lm_weights"][r, :k].all() and not f["masked_lm_positions"][r, k:].any()
        assert list(f["segment_ids"][r]) == [0] * (len_a + 2) + [1] * (n - len_a - 2) + [0] * (len(f["segment_ids"][r]) - n)
        assert f["next_sentence_labels"][r, 0] == is_random_next
        out.append((f["input_ids"][r, :n].tolist(), len_a, n - len_a - 3, f["masked_lm_positions"][r, :k].tolist(),
                    f["masked_lm_ids"][r, :k].tolist(), is_random_next, tokens))
    return out


@pytest.mark.parametrize("whole_word", [False, True])
def test_instances_follow_the_original_semantics(whole_word):
    vocab = _toy_vocab()
    cont = {i for t, i in vocab.items() if t.startswith("##")}
    rng = random.Random(7)
    docs = _toy_docs(rng)
    owner = {tok: d for d, doc in enumerate(docs) for s in doc for tok in s}
    cfg = DataConfig(input_file="x", output_dir="y", vocab_file="v", max_seq_length=48,
                     max_predictions_per_seq=8, do_whole_word_mask=whole_word)
    maker = InstanceMaker(vocab, cfg, 1)
    decisions = {"mask": 0, "kept": 0, "random": 0}
    n = 0
    for d in list(range(len(docs))) * 6:
        batch = list(maker.from_document(docs, d))
        for tokens, len_a, len_b, positions, labels, is_random_next, unmasked in _masked(maker, batch):
            n += 1
            assert len(tokens) == len_a + len_b + 3 <= 48
            assert tokens[0] == vocab["[CLS]"] and tokens[len_a + 1] == vocab["[SEP]"] and tokens[-1] == vocab["[SEP]"]
            assert len_a >= 1 and len_b >= 1
            want = min(8, max(1, int(round(len(tokens) * 0.15))))
            assert positions == sorted(set(positions))
            assert len(positions) <= want and (whole_word or len(positions) == want)
            assert all(0 < p < len(tokens) - 1 and p != len_a + 1 for p in positions)
            original = list(tokens)
            for p, label in zip(positions, labels):
                original[p] = label
                decisions["mask" if tokens[p] == vocab["[MASK]"] else "kept" if tokens[p] == label else "random"] += 1
            assert original == unmasked
            assert all(tokens[p] == unmasked[p] for p in range(len(tokens)) if p not in positions)
            a, b = original[1:len_a + 1], original[len_a + 2:-1]
            # A and B are contiguous runs of real text (truncation only trims the ends)
            assert a == list(range(a[0], a[0] + len(a))) and all(owner[t] == d for t in a)
            if is_random_next:
                assert b == list(range(b[0], b[0] + len(b)))
                assert any(owner[t] != d for t in b) or len(docs) == 1
            else:
                assert b == list(range(b[0], b[0] + len(b))) and all(owner[t] == d for t in b)
                assert b[0] > a[-1]
            if whole_word:  # a masked piece's whole word is masked with it
                masked = set(positions)
                for p in positions:
                    if original[p] in cont and p - 1 not in (0, len_a + 1):
                        assert p - 1 in masked
                    if p + 1 < len(original) - 1 and p + 1 != len_a + 1 and original[p + 1] in cont:
                        assert p + 1 in masked
    total = sum(decisions.values())
    assert n > 300 and total > 1500
    assert abs(decisions["mask"] / total - 0.8) < 0.03
    assert abs(decisions["kept"] / total - 0.1) < 0.025
    assert abs(decisions["random"] / total - 0.1) < 0.025
    st = maker.stats
    assert (st.instances, st.masked) == (n, total)
    assert st.masked_as_mask + st.masked_as_random + st.masked_as_kept == total


def test_long_pairs_are_truncated_from_both_ends():
    vocab = _toy_vocab()
    cfg = DataConfig(input_file="x", output_dir="y", vocab_file="v", max_seq_length=16, max_predictions_per_seq=3,
                     short_seq_prob=0)
    maker = InstanceMaker(vocab, cfg, 3)
    docs = [[list(range(100, 160)), list(range(200, 260))], [list(range(300, 400))]]
    fronts = backs = 0
    for _ in range(200):
        for tokens, len_a, _ in maker.from_document(docs, 0):
            len_b = len(tokens) - len_a - 3
            assert len(tokens) == 16 and abs(len_a - len_b) <= 1
            a = tokens[1:len_a + 1]
            fronts += a[0] > 100
            backs += a[-1] < 159
    assert fronts > 50 and backs > 50


def test_segments_and_truncation_equal_googles_with_the_same_random_stream(monkeypatch):
    """Google's create_instances_from_document (its masking set aside: it draws from the same generator,
    ours from numpy) makes exactly our pairs, truncation included, from the same seed and documents."""
    google = _google_create_data()
    monkeypatch.setattr(google, "create_masked_lm_predictions", lambda tokens, *args: (tokens, [], []))
    vocab = _toy_vocab()
    words = list(vocab)
    docs = _toy_docs(random.Random(11))
    docs_as_words = [[[words[i] for i in sentence] for sentence in doc] for doc in docs]
    for max_seq_length, short_seq_prob in ((32, 0.1), (128, 0.5)):
        cfg = DataConfig(input_file="x", output_dir="y", vocab_file="v", max_seq_length=max_seq_length,
                         short_seq_prob=short_seq_prob)
        maker = InstanceMaker(vocab, cfg, 5)
        rng = random.Random(5)
        for d in list(range(len(docs))) * 3:
            theirs = google.create_instances_from_document(docs_as_words, d, max_seq_length, short_seq_prob,
                                                           0.15, 20, words, rng)
            ours = list(maker.from_document(docs, d))
            assert [([words[i] for i in tokens], [0] * (len_a + 2) + [1] * (len(tokens) - len_a - 2), nsp)
                    for tokens, len_a, nsp in ours] == \
                [(g.tokens, g.segment_ids, g.is_random_next) for g in theirs]


# --------------------------------------------------------------------------------------------------
# End to end through the CLI
# --------------------------------------------------------------------------------------------------
def test_shards_manifest_and_tensorflow_parsing(brown_small, uncased_vocab, tmp_path):
    out = tmp_path / "out"
    proc = _create(brown_small, uncased_vocab, out, "--num_shards=3", "--dupe_factor=2", *SMALL)
    assert "instances" in proc.stdout
    assert "instances/s" in proc.stderr and "100.0% of input" in proc.stderr
    names = sorted(_shards(out))
    assert names == [shard_name(i, 3) for i in range(3)] == ["train-00000-of-00003.tfrecord",
                                                              "train-00001-of-00003.tfrecord",
                                                              "train-00002-of-00003.tfrecord"]
    m = json.loads((out / "data_manifest.json").read_text())
    assert m["parameters"]["max_seq_length"] == 64 and m["parameters"]["dupe_factor"] == 2
    assert m["vocab"]["sha256"] and m["vocab"]["size"] == 30522
    assert m["inputs"] == [{"path": brown_small, "bytes": os.path.getsize(brown_small)}]
    # 60 documents, and a document that crosses one of the 2 shard boundaries counts once in each shard
    assert 60 <= m["totals"]["documents"] <= 62 and m["totals"]["bad_utf8_lines"] == 0
    assert m["version"] and [s["file"] for s in m["shards"]] == names
    assert sum(s["instances"] for s in m["shards"]) == m["totals"]["instances"]

    tf = pytest.importorskip("tensorflow")
    files = [str(out / n) for n in names]
    count = tokens = masked = 0
    for ex in tfrecord.make_dataset(files, 64, 10).as_numpy_iterator():
        count += 1
        tokens += int(ex["input_mask"].sum())
        masked += int(ex["masked_lm_weights"].sum())
        n = int(ex["input_mask"].sum())
        assert ex["input_ids"][0] == 101 and ex["input_ids"][n - 1] == 102 and not ex["input_ids"][n:].any()
        assert ex["next_sentence_labels"].shape == (1,)
    assert (count, tokens, masked) == (m["totals"]["instances"], m["totals"]["tokens"], m["totals"]["masked"])
    # the files are plain TFRecords: TF's own record reader agrees with ours
    assert [r.numpy() for r in tf.data.TFRecordDataset(files[:1])] == list(tfrecord.iter_records(files[0]))


def test_deterministic_across_workers_and_gzip(brown_small, uncased_vocab, tmp_path):
    one = tmp_path / "one"
    _create(brown_small, uncased_vocab, one, "--num_shards=3", "--dupe_factor=2", "--num_workers=1", *SMALL)
    two = tmp_path / "two"
    _create(brown_small, uncased_vocab, two, "--num_shards=3", "--dupe_factor=2", "--num_workers=2", *SMALL)
    assert _shards(one) == _shards(two)
    m1, m2 = (json.loads((d / "data_manifest.json").read_text()) for d in (one, two))
    assert m1["totals"] == m2["totals"] and m1["shards"] == m2["shards"]
    other_seed = tmp_path / "seed"
    _create(brown_small, uncased_vocab, other_seed, "--num_shards=3", "--dupe_factor=2", "--random_seed=1", *SMALL)
    assert _shards(other_seed) != _shards(one)
    gz = tmp_path / "gz"
    _create(brown_small, uncased_vocab, gz, "--num_shards=3", "--dupe_factor=2", "--compression=gzip", *SMALL)
    for name, data in _shards(gz).items():
        assert data[:2] == b"\x1f\x8b"
        assert list(tfrecord.iter_records(str(gz / name))) == list(tfrecord.iter_records(str(one / name)))


def test_output_file_writes_exactly_that_file(brown_small, uncased_vocab, tmp_path):
    target = tmp_path / "o" / "brown.tfrecord"
    run_bert("create-data", f"--input_file={brown_small}", f"--vocab_file={uncased_vocab}",
             f"--output_file={target}", "--dupe_factor=1", *SMALL, check=True)
    assert os.listdir(target.parent) == ["brown.tfrecord"]
    assert len(list(tfrecord.iter_records(str(target)))) > 500


def test_nsp_ratio_does_not_depend_on_the_random_document_pool(brown_small, uncased_vocab, tmp_path):
    ratios = {}
    for pool in (2, 8, 1000):
        out = tmp_path / f"pool{pool}"
        # short_seq_prob=0: a short target makes every sentence its own (randomly paired) chunk, and on 60
        # documents which ones draw it is seed noise that would hide what this test looks at: the pool.
        _create(brown_small, uncased_vocab, out, f"--random_doc_pool_size={pool}", "--dupe_factor=3",
                "--short_seq_prob=0", *SMALL)
        t = json.loads((out / "data_manifest.json").read_text())["totals"]
        ratios[pool] = t["random_next"] / t["instances"]
        assert t["instances"] > 3000
    # Half the pairs are random by the coin; a chunk of one sentence is always paired at random (as in the
    # original), which puts the ratio a little above one half whatever the pool.
    for pool, r in ratios.items():
        assert 0.49 < r < 0.56, ratios
    assert max(ratios.values()) - min(ratios.values()) < 0.02, ratios


def test_sigkill_leaves_no_partial_shard_and_rerun_completes(brown_corpus, uncased_vocab, tmp_path):
    flags = ["--num_shards=4", "--dupe_factor=3", *SMALL]
    clean = tmp_path / "clean"
    _create(brown_corpus, uncased_vocab, clean, *flags)
    expected = _shards(clean)

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "bert_core.cli", "create-data", f"--input_file={brown_corpus}",
           f"--vocab_file={uncased_vocab}", f"--output_dir={out}", *flags]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    first_done = out / ".shard_stats" / "train-00000-of-00004.json"
    deadline = time.time() + 120
    while not first_done.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # well inside shard 1
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    left = sorted(os.listdir(out))
    temporaries = [n for n in left if n.endswith(".tmp")]
    assert temporaries, f"the kill should land mid-shard: {left}"
    for name, data in _shards(out).items():  # anything under a final name is complete
        assert data == expected[name], name
    assert len(_shards(out)) < 4 and "data_manifest.json" not in left

    rerun = _create(brown_corpus, uncased_vocab, out, *flags)
    assert "removed" in rerun.stderr and "kept from an earlier run" in rerun.stderr
    assert _shards(out) == expected
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]
    assert json.loads((out / "data_manifest.json").read_text())["totals"] == \
        json.loads((clean / "data_manifest.json").read_text())["totals"]
    # a rerun of a finished job redoes nothing; different parameters redo every shard
    again = _create(brown_corpus, uncased_vocab, out, *flags)
    assert "4 finished shard(s) kept from an earlier run, 0 to go" in again.stderr
    assert _shards(out) == expected
    _create(brown_corpus, uncased_vocab, out, *flags[:-1], "--max_predictions_per_seq=12")
    assert _shards(out) != expected


def test_sigkill_ends_the_workers_too(brown_corpus, uncased_vocab, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "bert_core.cli", "create-data", f"--input_file={brown_corpus}",
           f"--vocab_file={uncased_vocab}", f"--output_dir={out}", "--num_shards=4", "--num_workers=2",
           "--dupe_factor=20", *SMALL]  # the worker alone would take many seconds to finish
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)

    def writing() -> int:
        return len([n for n in os.listdir(out) if n.endswith(".tmp") and ".tokens." not in n]) \
            if out.exists() else 0

    deadline = time.time() + 120  # until this process and its worker both write a shard
    while writing() < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    children = descendants(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert any("forkserver" in c or "multiprocessing" in c for c in children.values()), children
    assert still_running(children, seconds=3) == {}
    assert not (out / "data_manifest.json").exists()


def test_one_document_fills_every_shard(brown_corpus, uncased_vocab, tmp_path):
    """A book without blank lines is one document; with 4 shards each still gets a quarter of it."""
    text = open(brown_corpus, encoding="utf-8").read().split("\n\n")[:40]
    novel = tmp_path / "novel.txt"
    novel.write_text("\n".join(d.strip("\n") for d in text) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    _create(str(novel), uncased_vocab, out, "--num_shards=4", "--dupe_factor=2", "--short_seq_prob=0", *SMALL)
    m = json.loads((out / "data_manifest.json").read_text())
    counts = [s["instances"] for s in m["shards"]]
    assert m["totals"]["documents"] == 4 and sum(counts) > 1000, m["totals"]
    assert min(counts) > 0.8 * max(counts), counts
    assert counts == [len(list(tfrecord.iter_records(str(out / s["file"])))) for s in m["shards"]]


def test_ranks_never_get_only_empty_shards(uncased_vocab, tmp_path):
    """Two lines over four shards leave two empty; `bert pretrain` on 2 ranks (round-robin by file, as it
    was) gave rank 1 only those. The manifest's counts leave them out; too few records is one line."""
    from bert_core.data import manifest
    from bert_core.errors import UserError

    corpus = _write(tmp_path / "two.txt", b"the first line has some words in it.\nand the second one has more.\n")
    out = tmp_path / "out"
    proc = _create(corpus, uncased_vocab, out, "--num_shards=4", "--dupe_factor=5", *SMALL)
    assert "2 of 4 shard(s) hold no instances" in proc.stderr
    files = [str(out / n) for n in _shards(out)]
    assert manifest.record_counts(files) == {files[0]: 5, files[1]: 0, files[2]: 5, files[3]: 0}
    assert [manifest.split_files(files, r, 2) for r in range(2)] == [([files[0]], False), ([files[2]], False)]
    assert manifest.split_files(files, 1, 3) == ([files[0], files[2]], True)
    pytest.importorskip("tensorflow")
    from bert_core import pretrain
    from bert_core.config import PretrainConfig

    cfg = PretrainConfig(input_file=str(out / "train-*.tfrecord"), output_dir=str(tmp_path / "run"), model="bert-mini",
                         do_eval=True, max_seq_length=64, max_predictions_per_seq=10, eval_batch_size=1)
    assert [len(list(pretrain.make_eval_dataset(files, cfg, r, 2, 30522))) for r in range(2)] == [5, 5]
    with pytest.raises(UserError, match="hold 10 record\\(s\\) for 16 ranks: rank 10 and above would get none"):
        manifest.split_files(files, 0, 16)
    with pytest.raises(UserError, match="no records"):
        manifest.split_files([files[1], files[3]], 0, 1)
    os.remove(out / "data_manifest.json")  # without a manifest, an empty file is found by reading it
    assert manifest.split_files(files, 1, 2) == ([files[2]], False)


def test_files_are_shared_out_by_their_record_counts(tmp_path):
    from bert_core.data import manifest

    def split(counts: list[int], size: int) -> list[tuple[list[str], bool]]:
        names = [shard_name(i, len(counts)) for i in range(len(counts))]
        for n in names:
            (tmp_path / n).write_bytes(b"")
        (tmp_path / "data_manifest.json").write_text(json.dumps(
            {"shards": [{"file": n, "instances": c} for n, c in zip(names, counts)]}))
        return [([os.path.basename(f) for f in mine], by_record)
                for mine, by_record in (manifest.split_files([str(tmp_path / n) for n in names], r, size)
                                        for r in range(size))]

    # 75 against 67 records by file order; by counts 71 and 71
    assert split([40, 36, 35, 31], 2) == [([shard_name(0, 4), shard_name(3, 4)], False),
                                          ([shard_name(1, 4), shard_name(2, 4)], False)]
    # 3 equal files do split over 3 ranks, not over 2 (one rank would get twice the records)
    assert [by_record for _, by_record in split([7, 7, 7], 3)] == [False] * 3
    assert split([7, 7, 7], 2) == [([shard_name(i, 3) for i in range(3)], True)] * 2


def test_pretrain_checks_its_files_against_the_manifest(brown_small, uncased_vocab, tmp_path):
    from bert_core.data import manifest
    from bert_core.errors import UserError

    out = tmp_path / "out"
    _create(brown_small, uncased_vocab, out, "--num_shards=2", "--dupe_factor=1", *SMALL)
    files = [str(out / n) for n in _shards(out)]
    manifest.check_files(files, uncased_vocab)
    other_vocab = _write(tmp_path / "vocab.txt", open(uncased_vocab, "rb").read().replace(b"\nthe\n", b"\nteh\n"))
    with pytest.raises(UserError, match=r"--vocab_file=.*vocab.txt \(sha256 .*\) is not the vocab .* was made with"):
        manifest.check_files(files, other_vocab)
    stray = out / "train-00000-of-00003.tfrecord"  # e.g. left by a run with another --num_shards
    shutil.copy(files[0], stray)
    with pytest.raises(UserError, match=r"train-00000-of-00003.tfrecord: not one of the 2 shard\(s\)"):
        manifest.check_files(files + [str(stray)])
    stray.unlink()
    with open(files[1], "ab") as f:
        f.write(b"\0" * 16)
    with pytest.raises(UserError, match=r"train-00001-of-00002.tfrecord: .* bytes but .* records"):
        manifest.check_files(files)
    # in one line from the command, before TensorFlow starts
    proc = run_bert("pretrain", f"--input_file={out}/train-*.tfrecord", f"--output_dir={tmp_path / 'run'}",
                    "--model=bert-mini", "--do_train", "--num_train_steps=1", "--num_warmup_steps=0",
                    f"--vocab_file={uncased_vocab}")
    assert "train-00001-of-00002.tfrecord:" in one_line_error(proc)


def test_create_data_owns_its_output_dir(brown_small, uncased_vocab, tmp_path):
    """A rerun with another --num_shards leaves only the new shards (the old ones would match
    'train-*.tfrecord' too); a file create-data did not write is refused, never deleted."""
    out = tmp_path / "out"
    _create(brown_small, uncased_vocab, out, "--num_shards=3", "--dupe_factor=1", *SMALL)
    os.remove(out / "train-00000-of-00003.tfrecord")  # as if killed after removing one old shard
    proc = _create(brown_small, uncased_vocab, out, "--num_shards=2", "--dupe_factor=1", *SMALL)
    assert "removed 2 shard(s) an earlier run wrote with another --num_shards" in proc.stderr
    assert sorted(_shards(out)) == [shard_name(i, 2) for i in range(2)]
    assert sorted(os.listdir(out / ".shard_stats")) == ["train-00000-of-00002.json", "train-00001-of-00002.json"]
    assert [s["file"] for s in json.loads((out / "data_manifest.json").read_text())["shards"]] == sorted(_shards(out))
    before = _shards(out)
    for name, data in (("notes.txt", b"mine"), ("train-00000-of-00003.tfrecord", b"not a create-data shard")):
        _write(out / name, data)
        msg = _user_error(f"--input_file={brown_small}", f"--vocab_file={uncased_vocab}", f"--output_dir={out}",
                          "--num_shards=3", "--dupe_factor=1", *SMALL)
        assert f"holds {name}, which bert create-data did not write" in msg
        assert (out / name).read_bytes() == data
        os.remove(out / name)
        assert _shards(out) == before
    # another vocab: same names, every shard made again, the manifest names the new vocab
    other_vocab = _write(tmp_path / "vocab.txt", open(uncased_vocab, "rb").read().replace(b"\nthe\n", b"\nteh\n"))
    proc = _create(brown_small, other_vocab, out, "--num_shards=2", "--dupe_factor=1", *SMALL)
    after = _shards(out)
    assert "kept from an earlier run" not in proc.stderr and after.keys() == before.keys()
    assert all(after[n] != before[n] for n in before)
    assert json.loads((out / "data_manifest.json").read_text())["vocab"]["path"] == other_vocab
    # without .shard_stats (copied with `cp data/*`), the manifest proves the shards ours
    shutil.rmtree(out / ".shard_stats")
    _create(brown_small, uncased_vocab, out, "--num_shards=1", "--dupe_factor=1", *SMALL)
    assert sorted(_shards(out)) == [shard_name(0, 1)]


def test_output_to_object_storage(brown_small, uncased_vocab, tmp_path, gcs, gcs_prefix):
    from bert_core import storage

    local = tmp_path / "local"
    _create(brown_small, uncased_vocab, local, "--num_shards=2", "--dupe_factor=2", *SMALL)
    remote = f"{gcs_prefix}/data"
    _create(brown_small, uncased_vocab, remote, "--num_shards=2", "--dupe_factor=2", *SMALL, env=gcs.env)
    for name, data in _shards(local).items():
        assert storage.read_bytes(f"{remote}/{name}") == data
    manifest = json.loads(storage.read_bytes(f"{remote}/data_manifest.json"))
    assert manifest["totals"] == json.loads((local / "data_manifest.json").read_text())["totals"]
    again = _create(brown_small, uncased_vocab, remote, "--num_shards=2", "--dupe_factor=2", *SMALL, env=gcs.env)
    assert "2 finished shard(s) kept from an earlier run, 0 to go" in again.stderr


@pytest.mark.skipif(shutil.which("mpirun") is None, reason="no mpirun")
def test_mpi_ranks_split_the_shards(brown_small, uncased_vocab, tmp_path):
    single = tmp_path / "single"
    _create(brown_small, uncased_vocab, single, "--num_shards=3", *SMALL)
    out = tmp_path / "mpi"
    cmd = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "2", sys.executable, "-m", "bert_core.cli",
           "create-data", f"--input_file={brown_small}", f"--vocab_file={uncased_vocab}", f"--output_dir={out}",
           "--num_shards=3", *SMALL]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "rank 0/2" in proc.stderr and "rank 1/2" in proc.stderr
    assert _shards(out) == _shards(single)
    m = json.loads((out / "data_manifest.json").read_text())
    assert m["totals"] == json.loads((single / "data_manifest.json").read_text())["totals"]


# --------------------------------------------------------------------------------------------------
# A user's mistakes: one line, exit 2, no traceback
# --------------------------------------------------------------------------------------------------
def _write(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _user_error(*args: str) -> str:
    proc = run_bert("create-data", *args)
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr  # nothing else on stderr either
    return one_line_error(proc)


def test_user_errors_are_one_line(tmp_path, uncased_vocab):
    good = _write(tmp_path / "good.txt", b"One sentence here.\nAnother one.\n\nSecond doc.\n")
    out = f"--output_dir={tmp_path / 'out'}"
    vocab = f"--vocab_file={uncased_vocab}"
    assert "nope.txt: no such file" in _user_error(f"--input_file={tmp_path / 'nope.txt'}", vocab, out)
    assert "matches no file" in _user_error(f"--input_file={tmp_path / '*.xyz'}", vocab, out)
    empty = _write(tmp_path / "empty.txt", b"")
    assert "empty.txt: empty input file" in _user_error(f"--input_file={empty}", vocab, out)
    blank = _write(tmp_path / "blank.txt", b"\n \n\t\n\n")
    assert "no text" in _user_error(f"--input_file={blank}", vocab, out)
    bad = _write(tmp_path / "bad.txt", b"fine\n\nstill fine\nbad \xff here\n")
    assert "bad.txt:4: invalid UTF-8" in _user_error(f"--input_file={bad}", vocab, out)
    no_mask = _write(tmp_path / "v1.txt", b"[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n")
    assert "[MASK]" in _user_error(f"--input_file={good}", f"--vocab_file={no_mask}", out)
    dup = _write(tmp_path / "v2.txt", b"[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\nhello\n")
    assert "duplicate" in _user_error(f"--input_file={good}", f"--vocab_file={dup}", out)
    assert "no such file" in _user_error(f"--input_file={good}", f"--vocab_file={tmp_path / 'v.txt'}", out)
    msg = _user_error(f"--input_file={good}", vocab, out, "--max_seq_length=512", "--max_predictions_per_seq=20")
    assert "--max_predictions_per_seq=20" in msg and "76.8" in msg
    assert "exactly one of" in _user_error(f"--input_file={good}", vocab)
    assert "--masked_lm_prob" in _user_error(f"--input_file={good}", vocab, out, "--masked_lm_prob=1.5")
    assert "give one file" in _user_error(f"--input_file={good}", vocab, f"--output_file={tmp_path}/a,{tmp_path}/b")
    a_file = _write(tmp_path / "afile", b"x")
    assert "not a directory" in _user_error(f"--input_file={good}", vocab, f"--output_dir={a_file}")
    assert not (tmp_path / "out").exists() or not [n for n in os.listdir(tmp_path / "out") if n.startswith("train")]


def test_bad_utf8_replace_is_counted_in_the_manifest(tmp_path, uncased_vocab):
    bad = _write(tmp_path / "bad.txt", b"fine words here\nmore words\n\nbad \xff here\nand more\n")
    out = tmp_path / "out"
    proc = _create(bad, uncased_vocab, out, "--on_bad_utf8=replace", "--dupe_factor=1", *SMALL)
    assert "bad.txt:4" in proc.stderr
    t = json.loads((out / "data_manifest.json").read_text())["totals"]
    assert t["bad_utf8_lines"] == 1 and t["first_bad_utf8"] == [f"{bad}:4"] and t["instances"] > 0


# --------------------------------------------------------------------------------------------------
# Statistical parity with Google's create_pretraining_data.py (bert-tensorflow 1.0.4, tf.compat.v1)
# --------------------------------------------------------------------------------------------------
def _google_create_data():
    """Google's create_pretraining_data module, imported (its absl flags parsed, as its main would)."""
    from absl import flags

    from bert_reference import import_google

    google = import_google("create_pretraining_data")
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["test"])
    return google


def run_google(corpus: str, vocab: str, output: str, **flags) -> subprocess.CompletedProcess:
    args = [f"--{k}={v}" for k, v in flags.items()]
    cmd = [sys.executable, "-m", "bert.create_pretraining_data", f"--input_file={corpus}",
           f"--output_file={output}", f"--vocab_file={vocab}", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=os.path.dirname(output), timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _measure(paths: list[str], mask_id: int) -> dict:
    """Instance count, mean real tokens, masked fraction, the [MASK]/random/kept split and the NSP ratio
    of pretraining records (ours or Google's), read without TensorFlow. A masked position counts as [MASK]
    if its input id is [MASK], kept if it equals the label, random otherwise (a random id that happens to
    be one of those is counted as it looks: 2 in 30k of the random 10%)."""
    n = tokens = masked = as_mask = as_kept = random_next = 0
    for path in paths:
        for record in tfrecord.iter_records(path):
            ex = tfrecord.decode_example(record)
            ids = ex["input_ids"]
            n += 1
            tokens += sum(ex["input_mask"])
            k = int(sum(ex["masked_lm_weights"]))
            masked += k
            for p, label in zip(ex["masked_lm_positions"][:k], ex["masked_lm_ids"][:k]):
                if ids[p] == mask_id:
                    as_mask += 1
                elif ids[p] == label:
                    as_kept += 1
            random_next += ex["next_sentence_labels"][0]
    m = max(masked, 1)
    return {"instances": n, "mean_tokens": tokens / max(n, 1), "masked_fraction": masked / max(tokens, 1),
            "mask": as_mask / m, "random": (masked - as_mask - as_kept) / m, "kept": as_kept / m,
            "nsp_random": random_next / max(n, 1)}


def _parity(corpus: str, vocab: str, tmp_path, **flags) -> tuple[dict, dict]:
    google_out = tmp_path / "google.tfrecord"
    run_google(corpus, vocab, str(google_out), **flags)
    ours = tmp_path / "ours"
    _create(corpus, vocab, ours, *[f"--{k}={v}" for k, v in flags.items()])
    files = [str(ours / n) for n in _shards(ours)]
    return _measure([str(google_out)], 103), _measure(files, 103)


def _assert_parity(g: dict, o: dict) -> None:
    assert abs(o["instances"] / g["instances"] - 1) < 0.02, (g, o)
    assert abs(o["mean_tokens"] / g["mean_tokens"] - 1) < 0.015, (g, o)
    assert abs(o["masked_fraction"] - g["masked_fraction"]) < 0.003, (g, o)
    for k, want in (("mask", 0.8), ("random", 0.1), ("kept", 0.1)):
        assert abs(o[k] - want) < 0.01 and abs(o[k] - g[k]) < 0.015, (k, g, o)
    assert abs(o["nsp_random"] - g["nsp_random"]) < 0.02, (g, o)


def test_statistical_parity_with_google_on_a_brown_subset(brown_corpus, uncased_vocab, tmp_path):
    # short_seq_prob=0 keeps the instance count's noise well under the 2% bound on a small corpus: with
    # the default 0.1 a whole document gets a short target, and on 120 documents that alone moves the count
    # by several percent from seed to seed (for both tools). The slow test covers the default flags.
    corpus = _subset(brown_corpus, tmp_path / "brown120.txt", 120)
    g, o = _parity(corpus, uncased_vocab, tmp_path, max_seq_length=128, max_predictions_per_seq=20,
                   masked_lm_prob=0.15, dupe_factor=3, short_seq_prob=0.0, random_seed=12345)
    _assert_parity(g, o)


@pytest.mark.slow
def test_statistical_parity_with_google_on_full_brown(brown_corpus, uncased_vocab, tmp_path):
    g, o = _parity(brown_corpus, uncased_vocab, tmp_path, max_seq_length=128, max_predictions_per_seq=20,
                   masked_lm_prob=0.15, dupe_factor=10, short_seq_prob=0.1, random_seed=12345)
    print(json.dumps({"google": g, "ours": o}, indent=1))
    _assert_parity(g, o)


@pytest.mark.slow
def test_expected_instance_count_matches_google_over_seeds(brown_corpus, uncased_vocab):
    """The instance count of one run is noisy for both tools (a document drawing a short target yields
    about twice the instances; sd ~1.8% per pass on Brown), so compare means over seeds: Google's own
    create_instances_from_document against our InstanceMaker on the same tokenized documents."""
    import statistics

    from bert_core.data import corpus
    from bert_core.tokenization import FastTokenizer, load_vocab

    google = _google_create_data()
    vocab = load_vocab(uncased_vocab)
    tok = FastTokenizer(vocab, True)
    docs = []
    for d in corpus.iter_documents(brown_corpus):
        ids = [x for x in tok.encode_batch(d) if x]
        if ids:
            docs.append(ids)
    words = list(vocab)
    g_counts, o_counts, g_len, o_len = [], [], [], []
    for seed in range(10, 20):
        rng = random.Random(seed)
        got = [inst for i in range(len(docs))
               for inst in google.create_instances_from_document(docs, i, 128, 0.1, 0.15, 20, words, rng)]
        g_counts.append(len(got))
        g_len.append(statistics.mean(len(x.tokens) for x in got))
        cfg = DataConfig(input_file="x", output_dir="y", vocab_file="v", random_seed=seed)
        maker = InstanceMaker(vocab, cfg, seed)
        ours = [inst for i in range(len(docs)) for inst in maker.from_document(docs, i)]
        o_counts.append(len(ours))
        o_len.append(statistics.mean(len(x[0]) for x in ours))
    print(f"google {statistics.mean(g_counts):.0f} (sd {statistics.stdev(g_counts):.0f}) tokens "
          f"{statistics.mean(g_len):.2f}; ours {statistics.mean(o_counts):.0f} (sd {statistics.stdev(o_counts):.0f}) "
          f"tokens {statistics.mean(o_len):.2f}")
    assert abs(statistics.mean(o_counts) / statistics.mean(g_counts) - 1) < 0.01
    assert abs(statistics.mean(o_len) / statistics.mean(g_len) - 1) < 0.01
