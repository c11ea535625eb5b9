"""The TensorFlow-free TFRecord writer against TensorFlow itself: same bytes, parsed by tf.data.

TensorFlow's deterministic serialization sorts map keys; the default one uses hash order. Parsers accept
any order, and our writer is byte-identical to the deterministic form."""

import collections
import gzip

import numpy as np
import pytest

from bert_core import layout
from bert_core.data import tfrecord

tf = pytest.importorskip("tensorflow")


def _tf_example(features: dict, floats=()) -> bytes:
    feats = collections.OrderedDict()
    for name, values in features.items():
        if name in floats:
            feats[name] = tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))
        else:
            feats[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))
    example = tf.train.Example(features=tf.train.Features(feature=feats))
    return example.SerializeToString(deterministic=True)


def test_varints_match_protobuf_for_edge_values():
    edge = [0, 1, 127, 128, 255, 300, 16383, 16384, 2**21 - 1, 2**21, 2**31 - 1, 2**35, 2**62, 2**63 - 1,
            -1, -2, -128, -(2**31), -(2**63)]
    ours = tfrecord.encode_example({"v": edge})
    assert ours == _tf_example({"v": edge})


def test_examples_byte_identical_to_tensorflow_serialization():
    rng = np.random.default_rng(0)
    names = list(layout.PRETRAINING_FEATURES)
    for trial in range(30):
        batch = {}
        for name in names:
            n = 1 if name == "next_sentence_labels" else int(rng.integers(0, 40))
            if name in layout.FLOAT_FEATURES:
                batch[name] = rng.standard_normal((5, n)).astype(np.float32)
            else:
                hi = [2, 200, 40000, 2**40][trial % 4]
                batch[name] = rng.integers(-5 if trial % 5 == 0 else 0, hi, size=(5, n))
        ours = tfrecord.encode_examples(batch, layout.FLOAT_FEATURES)
        for row in range(5):
            want = _tf_example({k: v[row].tolist() for k, v in batch.items()}, layout.FLOAT_FEATURES)
            assert ours[row] == want, (trial, row)


def test_framing_matches_tf_writer(tmp_path):
    records = [b"", b"x", bytes(range(256)) * 50]
    ours = tmp_path / "ours.tfrecord"
    with open(ours, "wb") as f:
        w = tfrecord.RecordWriter(f)
        for r in records:
            w.write(r)
    theirs = tmp_path / "tf.tfrecord"
    with tf.io.TFRecordWriter(str(theirs)) as w:
        for r in records:
            w.write(r)
    assert ours.read_bytes() == theirs.read_bytes()
    assert list(tfrecord.iter_records(str(ours))) == records


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_one_reader_for_plain_and_gzip(tmp_path, compression):
    L, P = 16, 4
    rows = []
    for i in range(7):
        rows.append({"input_ids": [101] + list(range(1000 + i, 1010 + i)) + [102] + [0] * 4,
                     "input_mask": [1] * 12 + [0] * 4, "segment_ids": [0] * 6 + [1] * 6 + [0] * 4,
                     "masked_lm_positions": [2, 5, 0, 0][: P], "masked_lm_ids": [7, 8, 0, 0],
                     "masked_lm_weights": [1.0, 1.0, 0.0, 0.0], "next_sentence_labels": [i % 2]})
    path = tmp_path / "d.tfrecord"
    with open(path, "wb") as f, tfrecord.RecordWriter(f, compression) as w:
        for r in rows:
            w.write(tfrecord.encode_example(r, layout.FLOAT_FEATURES))
    raw = path.read_bytes()
    assert raw[:2] == (b"\x1f\x8b" if compression == "gzip" else raw[:2])
    if compression == "gzip":  # a standard gzip stream with no name or time: deterministic bytes
        assert gzip.decompress(raw)[:8] == len(tfrecord.encode_example(rows[0], layout.FLOAT_FEATURES)).to_bytes(8, "little")
    got = list(tfrecord.make_dataset([str(path)], L, P).as_numpy_iterator())
    assert len(got) == 7
    for r, g in zip(rows, got):
        for k, v in r.items():
            np.testing.assert_array_equal(g[k], np.asarray(v, dtype=g[k].dtype))
        assert g["input_ids"].dtype == np.int32 and g["masked_lm_weights"].dtype == np.float32
    # explicit compression, int64, batching
    batched = list(tfrecord.make_dataset(str(path), L, P, compression=compression, batch_size=3,
                                         int32=False).as_numpy_iterator())
    assert [b["input_ids"].shape for b in batched] == [(3, L), (3, L), (1, L)]
    assert batched[0]["input_ids"].dtype == np.int64


def test_iter_records_detects_corruption(tmp_path):
    path = tmp_path / "c.tfrecord"
    with open(path, "wb") as f:
        tfrecord.RecordWriter(f).write(b"hello world")
    data = bytearray(path.read_bytes())
    data[14] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt"):
        list(tfrecord.iter_records(str(path)))


def test_find_damage_names_the_record_and_its_offset(tmp_path):
    good, path = tmp_path / "good.tfrecord", tmp_path / "bad.tfrecord"
    for p in (good, path):
        with open(p, "wb") as f:
            tfrecord.RecordWriter(f).write_many([b"one", b"two", b"three"])
    path.write_bytes(path.read_bytes()[:-2])  # the last record cut short, as by a killed copy
    assert tfrecord.find_damage([str(good)]) is None
    assert tfrecord.find_damage([str(good), str(path)]) == (
        f"{path}: record 2 (byte offset {2 * 16 + 3 + 3}): truncated or corrupt record")


def test_decode_example_reads_tensorflow_serialization():
    values = {"input_ids": [101, 2023, 30000, 0], "masked_lm_weights": [1.0, 0.5, 0.0],
              "next_sentence_labels": [1], "neg": [-3, 2**40], "empty": []}
    for deterministic in (False, True):
        feats = collections.OrderedDict()
        for k, v in values.items():
            feats[k] = (tf.train.Feature(float_list=tf.train.FloatList(value=v)) if k == "masked_lm_weights"
                        else tf.train.Feature(int64_list=tf.train.Int64List(value=v)))
        data = tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString(
            deterministic=deterministic)
        assert tfrecord.decode_example(data) == values
