"""TFRecord files of `tf.train.Example`s: a writer that needs no TensorFlow, and the tf.data reader.

Writing. A TFRecord file is a sequence of records, each framed as

    uint64 length (little-endian) | uint32 masked crc32c(length bytes) | data | uint32 masked crc32c(data)

with crc32c from `google-crc32c` and TensorFlow's mask `((crc >> 15) | (crc << 17)) + 0xa282ead8`. The data
is a serialized `tf.train.Example`, which we encode by hand: `Example{features=1: Features{feature=1:
map<string, Feature>}}`, each `Feature` holding `int64_list=3` (packed varints) or `float_list=2` (packed
little-endian float32). Map entries are written sorted by name, which is exactly what TensorFlow's
`SerializeToString(deterministic=True)` produces (tests compare the bytes; the default, non-deterministic
serialization uses hash order, which parsers do not care about). The data-generation workers
therefore import no TensorFlow: the data image stays slim and a worker starts in a fraction of a second.
GZIP files are standard gzip streams (no name, mtime 0, so the bytes are deterministic), which is what
TensorFlow's `compression_type="GZIP"` reads.

Reading. `make_dataset` is the one reader of pretraining records, plain or GZIP, for the training loop.
The records' schema (names, types, lengths) is bert_core.layout's.
"""

from __future__ import annotations

import gzip
import struct
from typing import IO, Iterable, Mapping, Sequence

import google_crc32c
import numpy as np

_MASK_DELTA = 0xA282EAD8
_GZIP_MAGIC = b"\x1f\x8b"


# --------------------------------------------------------------------------------------------------
# Framing
# --------------------------------------------------------------------------------------------------
def masked_crc32c(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(record: bytes) -> bytes:
    """One record as it appears in a TFRecord file."""
    header = struct.pack("<Q", len(record))
    return b"".join((header, struct.pack("<I", masked_crc32c(header)), record,
                     struct.pack("<I", masked_crc32c(record))))


class RecordWriter:
    """Writes framed records to an open binary file, optionally through gzip. Does not own `fileobj`."""

    def __init__(self, fileobj: IO[bytes], compression: str = "none"):
        if compression not in ("none", "gzip"):
            raise ValueError(f"compression must be 'none' or 'gzip', got {compression!r}")
        self._gz = None
        if compression == "gzip":
            # filename="" and mtime=0: the same records give the same bytes on every run.
            self._gz = gzip.GzipFile(filename="", mode="wb", fileobj=fileobj, compresslevel=6, mtime=0)
        self._out = self._gz or fileobj
        self.records = 0

    def write(self, record: bytes) -> None:
        self._out.write(frame(record))
        self.records += 1

    def write_many(self, records: Iterable[bytes]) -> None:
        chunk = [frame(r) for r in records]
        self._out.write(b"".join(chunk))
        self.records += len(chunk)

    def close(self) -> None:
        if self._gz is not None:
            self._gz.close()
            self._gz = None

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def iter_records(path: str) -> Iterable[bytes]:
    """The raw records of a TFRecord file (plain or gzip; local or gs://), with both checksums verified.
    No TensorFlow. A damaged record is a ValueError naming the file, the record's index and its byte
    offset (in the uncompressed stream, as TensorFlow counts it)."""
    from bert_core import storage

    with storage.open_read(path, "rb") as raw:
        f = gzip.GzipFile(fileobj=raw, mode="rb") if raw.read(2) == _GZIP_MAGIC else raw
        raw.seek(0)
        index = offset = 0
        while True:
            header = f.read(12)
            if not header:
                return
            where = f"{path}: record {index} (byte offset {offset})"
            if len(header) < 12:
                raise ValueError(f"{where}: truncated record header")
            (length,), (crc,) = struct.unpack("<Q", header[:8]), struct.unpack("<I", header[8:])
            if masked_crc32c(header[:8]) != crc:
                raise ValueError(f"{where}: corrupt record length")
            data = f.read(length)
            tail = f.read(4)
            if len(data) < length or len(tail) < 4 or struct.unpack("<I", tail)[0] != masked_crc32c(data):
                raise ValueError(f"{where}: truncated or corrupt record")
            yield data
            index += 1
            offset += 16 + length


def find_damage(files: Sequence[str]) -> str | None:
    """The first damaged record of `files` ("path: record N (byte offset X): what"), reading them whole
    in order; None if every record reads. For naming the file behind TensorFlow's DataLossError, which
    gives only an offset."""
    import zlib

    for path in files:
        try:
            for _ in iter_records(path):
                pass
        except (ValueError, OSError, EOFError, zlib.error) as err:  # framing and checksums; gzip
            return str(err) if str(err).startswith(str(path)) else f"{path}: {err}"
    return None


# --------------------------------------------------------------------------------------------------
# tf.train.Example encoding
# --------------------------------------------------------------------------------------------------
_SMALL_VARINTS = [bytes([n]) if n < 0x80 else bytes([(n & 0x7F) | 0x80, n >> 7]) for n in range(1 << 14)]


def varint(n: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int (lengths and tags)."""
    if n < (1 << 14):
        return _SMALL_VARINTS[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def encode_varints(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectorized varint encoding of int64 values (negatives as 10-byte two's complement, as protobuf does).

    Returns (bytes as uint8 array, byte length of each value)."""
    v = np.ascontiguousarray(values, dtype=np.int64).ravel().view(np.uint64)
    nbytes = np.ones(v.shape, dtype=np.int64)
    top = v.max(initial=np.uint64(0))
    for k in range(1, 10):
        if top < np.uint64(1 << (7 * k)):
            break
        nbytes += v >= np.uint64(1 << (7 * k))
    starts = np.zeros_like(nbytes)
    np.cumsum(nbytes[:-1], out=starts[1:])
    out = np.empty(int(nbytes.sum()), dtype=np.uint8)
    for j in range(int(nbytes.max(initial=0))):
        sel = nbytes > j
        byte = (v[sel] >> np.uint64(7 * j)) & np.uint64(0x7F)
        more = (nbytes[sel] > j + 1).astype(np.uint64) << np.uint64(7)
        out[starts[sel] + j] = (byte | more).astype(np.uint8)
    return out, nbytes


def _int64_rows(matrix: np.ndarray) -> list[bytes]:
    """Packed-varint payload of each row of a [B, n] int matrix."""
    b, n = matrix.shape
    buf, nbytes = encode_varints(matrix)
    row_ends = np.cumsum(nbytes.reshape(b, n).sum(axis=1)) if n else np.zeros(b, dtype=np.int64)
    data = buf.tobytes()
    out, start = [], 0
    for end in row_ends.tolist():
        out.append(data[start:end])
        start = end
    return out


def _float_rows(matrix: np.ndarray) -> list[bytes]:
    b, n = matrix.shape
    data = np.ascontiguousarray(matrix, dtype="<f4").tobytes()
    step = 4 * n
    return [data[i * step:(i + 1) * step] for i in range(b)]


def _entry_prefix(key: bytes, payload_len: int, is_float: bool) -> bytes:
    """Everything of a map entry before its packed payload:
    entry{key=1: name, value=2: Feature{int64_list=3 | float_list=2: List{value=1: packed}}}.
    An empty list serializes to an empty List message."""
    list_len = (1 + len(varint(payload_len)) + payload_len) if payload_len else 0
    list_head = (b"\x0a" + varint(payload_len)) if payload_len else b""
    feature_len = 1 + len(varint(list_len)) + list_len
    key_field = b"\x0a" + varint(len(key)) + key
    entry_len = len(key_field) + 1 + len(varint(feature_len)) + feature_len
    return (b"\x0a" + varint(entry_len) + key_field + b"\x12" + varint(feature_len)
            + (b"\x12" if is_float else b"\x1a") + varint(list_len) + list_head)


def encode_examples(features: Mapping[str, np.ndarray], float_features: Iterable[str] = ()) -> list[bytes]:
    """Serialize B `tf.train.Example`s at once.

    `features` maps a name to a [B, n] array (row i holds example i's values; every example of a batch
    has the same length per feature). Names in `float_features` are FloatLists, the rest Int64Lists.
    Entries are sorted by name: byte-identical to TensorFlow's SerializeToString(deterministic=True)."""
    floats = set(float_features)
    columns = []
    batch = None
    for name, values in sorted(features.items()):
        m = np.asarray(values)
        if m.ndim == 1:
            m = m[:, None]
        if batch is None:
            batch = m.shape[0]
        elif m.shape[0] != batch:
            raise ValueError(f"feature {name!r} has {m.shape[0]} rows, expected {batch}")
        is_float = name in floats
        rows = _float_rows(m) if is_float else _int64_rows(m)
        columns.append((rows, {}, name.encode("utf-8"), is_float))
    out = []
    for i in range(batch or 0):
        parts = []
        for rows, prefixes, key, is_float in columns:
            payload = rows[i]
            n = len(payload)
            prefix = prefixes.get(n)
            if prefix is None:
                prefix = prefixes[n] = _entry_prefix(key, n, is_float)
            parts.append(prefix)
            parts.append(payload)
        body = b"".join(parts)
        out.append(b"\x0a" + varint(len(body)) + body)
    return out


def encode_example(features: Mapping[str, Sequence[float] | Sequence[int]], float_features: Iterable[str] = ()) -> bytes:
    """One example from plain lists (convenience; the batch form is the fast one)."""
    floats = set(float_features)
    return encode_examples({k: np.asarray([list(v)], dtype=np.float32 if k in floats else np.int64)
                            for k, v in features.items()}, floats)[0]


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes):
    """(field number, wire type, value) of a protobuf message; LEN values as bytes."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 2:
            n, pos = _read_varint(buf, pos)
            value, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def decode_example(record: bytes) -> dict[str, list]:
    """A serialized tf.train.Example -> {name: list of ints, floats or bytes}. No TensorFlow.

    For inspecting and checking records (ours or anyone's); training reads with `make_dataset`."""
    out: dict[str, list] = {}
    for number, _, features in _fields(record):
        if number != 1:
            continue
        for fnum, _, entry in _fields(features):
            if fnum != 1:
                continue
            name, feature = "", b""
            for enum, _, value in _fields(entry):
                if enum == 1:
                    name = value.decode("utf-8")
                elif enum == 2:
                    feature = value
            values: list = []
            for kind, _, lst in _fields(feature):  # 1 bytes_list, 2 float_list, 3 int64_list
                for vnum, wire, v in _fields(lst):
                    if vnum != 1:
                        continue
                    if kind == 1:
                        values.append(v)
                    elif kind == 2:
                        values.extend(np.frombuffer(v, "<f4").tolist())
                    elif wire == 0:
                        values.append(v - (1 << 64) if v >= 1 << 63 else v)
                    else:
                        pos = 0
                        while pos < len(v):
                            x, pos = _read_varint(v, pos)
                            values.append(x - (1 << 64) if x >= 1 << 63 else x)
            out[name] = values
    return out


# --------------------------------------------------------------------------------------------------
# Reading (TensorFlow)
# --------------------------------------------------------------------------------------------------
def detect_compression(path: str) -> str:
    """'gzip' if the file starts with the gzip magic bytes, else 'none'.

    A plain TFRecord starts with its first record's length; it could only look like gzip if that record
    were at least 35,615 bytes long with those exact low bytes, far above a pretraining example (~1 KB). Local or gs:// (two bytes are read)."""
    from bert_core import storage

    with storage.open_read(path, "rb") as f:
        head = getattr(f, "raw", f).read(2)  # unbuffered: on gs:// a 2-byte range, not a 2 MiB buffer
        return "gzip" if head == _GZIP_MAGIC else "none"


def make_dataset(files: str | Sequence[str], max_seq_length: int, max_predictions_per_seq: int,
                 compression: str = "auto", batch_size: int | None = None, drop_remainder: bool = False,
                 int32: bool = True, num_parallel_reads: int | None = None, skip_damaged: bool = False):
    """Pretraining records -> tf.data.Dataset of feature dicts. The one reader, plain or GZIP.

    files: a list of TFRecord paths (or one string: comma-separated paths or globs).
    max_seq_length, max_predictions_per_seq: the values the data was generated with (data_manifest.json
        `parameters`); they fix the feature shapes.
    compression: "none", "gzip", or "auto" (default: look at the first file's magic bytes; all files of
        one dataset share a compression).
    batch_size: None yields single examples; an int batches them (`drop_remainder` as in tf.data).
    int32: cast the int64 features to int32 (what models and accelerators want), as Google's
        run_pretraining.py does; False keeps int64.
    num_parallel_reads: files read in parallel (None: sequentially, in the given order).
    skip_damaged: at a damaged record (truncated, bad checksum) go on with the next file, TensorFlow
        logging a warning with the offset, instead of failing with tf.errors.DataLossError. The rest
        of that file is skipped too: past a damaged length no record boundary can be trusted.

    Each element is a dict of the features of bert_core.layout.PRETRAINING_RECORD, int features as
    int32 (or int64), masked_lm_weights float32.
    Records are returned in file order; shuffling, repeating and sharding across workers are the
    caller's policy (e.g. `ds.shard(hvd.size(), hvd.rank())` or pass each rank its own files).
    """
    import tensorflow as tf

    from bert_core import layout

    if isinstance(files, str):
        from bert_core.data.corpus import expand_inputs

        files = expand_inputs(files)
    files = [str(f) for f in files]
    if not files:
        raise ValueError("make_dataset: no files given")
    if compression == "auto":
        compression = detect_compression(files[0])
    if compression not in ("none", "gzip"):
        raise ValueError(f"compression must be 'none', 'gzip' or 'auto', got {compression!r}")
    spec = layout.parse_spec(max_seq_length, max_predictions_per_seq)

    def parse(record):
        ex = tf.io.parse_single_example(record, spec)
        if int32:
            ex = {k: tf.cast(v, tf.int32) if v.dtype == tf.int64 else v for k, v in ex.items()}
        return ex

    ds = tf.data.TFRecordDataset(files, compression_type="GZIP" if compression == "gzip" else "",
                                 num_parallel_reads=num_parallel_reads)
    if skip_damaged:
        ds = ds.ignore_errors(log_warning=True)
    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if batch_size:
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds
