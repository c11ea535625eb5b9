"""Model weights in and out under Google's TF1 names; Hugging Face safetensors import.

Names. Every model in bert_core.modeling has `checkpoint_variables()`: {Google TF1 name: variable},
e.g. `bert/encoder/layer_0/attention/self/query/kernel` (docs/model.md lists them all). The same
names are read from Google's checkpoints and written to ours, so Google's own code
(`tf.train.init_from_checkpoint`, `tf.compat.v1.train.Saver`) and `tf.train.load_checkpoint` read
what we write, and a released BERT checkpoint loads with nothing missing and nothing unexpected.

  load_google_checkpoint(model, path, strict=True) -> LoadReport
  save_google_checkpoint(model, prefix) -> prefix
  load_hf_safetensors(model, path, strict=True) -> LoadReport
  load_init_checkpoint(model, path) -> one-line report   (--init_checkpoint: either format)

A report lists `loaded`, `missing` (the model's names not in the file), `unexpected` (the file's
names the model has no variable for) and `ignored` (optimizer slots `*/adam_m`, `*/adam_v`, and
`global_step` in Google's checkpoints; buffers and tied copies in HF's). A shape mismatch, or with
`strict` any missing or unexpected name, is one UserError line naming them; the full lists go to
stderr first. Nothing is assigned unless the whole check passes.

Atomic writes. `save_google_checkpoint` writes `<dir>/.<name>.tmp-<pid>-<random>.{index,data-*}`
with tf.raw_ops.SaveV2, then renames the data file(s) into place and the `.index` last, after
removing any old `.index` under that prefix. A reader finds a checkpoint by its `.index`, so a killed
writer leaves the old checkpoint, no checkpoint, or the new one, never a torn mix; stale temporaries
are removed by the next save in that directory.

Only model weights live here. The training loop keeps step, optimizer slots and loss scale beside
them with tf.train.Checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import struct
import sys
import uuid

import numpy as np
import tensorflow as tf

from bert_core.errors import UserError

# Google's checkpoints carry the optimizer's state next to the weights; a model load skips it.
_GOOGLE_IGNORED = re.compile(r"(^|/)(adam_m|adam_v)$|^global_step$|(^|/)(Momentum|Adam|Adam_1|LAMB|LAMB_1)$"
                             r"|^(beta1_power|beta2_power|loss_scale|good_steps|current_loss_scale)$")
_SHOW = 12  # names shown in the one-line error; the full lists are printed to stderr


@dataclasses.dataclass
class LoadReport:
    """What a load did. `missing`: the model's names absent from the file; `unexpected`: the file's
    names the model lacks; `mismatched`: (name, model shape, file shape); `ignored`: optimizer state
    and the like, skipped on purpose."""

    source: str
    loaded: list[str] = dataclasses.field(default_factory=list)
    missing: list[str] = dataclasses.field(default_factory=list)
    unexpected: list[str] = dataclasses.field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = dataclasses.field(default_factory=list)
    ignored: list[str] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.source}: loaded {len(self.loaded)} variables, {len(self.missing)} missing, "
                f"{len(self.unexpected)} unexpected, {len(self.ignored)} ignored")


def _short(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOW])
    return shown + (f", ... ({len(names) - _SHOW} more)" if len(names) > _SHOW else "")


def _check(report: LoadReport, strict: bool) -> None:
    """Raise one UserError line for mismatched shapes, or (strict) missing/unexpected names."""
    problems = []
    if report.mismatched:
        problems.append(f"{len(report.mismatched)} shape mismatches: " + _short(
            [f"{n} model {list(a)} vs file {list(b)}" for n, a, b in report.mismatched]))
    if strict and report.missing:
        problems.append(f"{len(report.missing)} missing: {_short(report.missing)}")
    if strict and report.unexpected:
        problems.append(f"{len(report.unexpected)} unexpected: {_short(report.unexpected)}")
    if not problems:
        return
    for title, names in (("shape mismatches (name, model, file)", [f"{n} {list(a)} {list(b)}" for n, a, b in report.mismatched]),
                         ("missing from the file", report.missing), ("unexpected in the file", report.unexpected)):
        if names:
            print(f"{report.source}: {title}:", *(f"  {n}" for n in names), sep="\n", file=sys.stderr)
    raise UserError(f"{report.source}: does not fit the model: " + "; ".join(problems))


def _model_variables(model) -> dict:
    if not hasattr(model, "checkpoint_variables"):
        raise TypeError(f"{type(model).__name__} has no checkpoint_variables(); use a bert_core.modeling model")
    return model.checkpoint_variables()


def _assign(model_vars: dict, values: dict, report: LoadReport, strict: bool,
            foreign: list[str] = (), file_names: dict[str, str] | None = None) -> LoadReport:
    """Match names and shapes, check, then assign (all or nothing). `foreign`: file names that
    could not even be translated, reported as unexpected too; `file_names`: Google name -> the
    file's own spelling, so unexpected names are reported as the file spells them."""
    spell = (file_names or {}).get
    report.missing = sorted(n for n in model_vars if n not in values)
    report.unexpected = sorted([spell(n, n) for n in values if n not in model_vars] + list(foreign))
    for name in sorted(set(model_vars) & set(values)):
        want, got = tuple(model_vars[name].shape), tuple(values[name].shape)
        if want != got:
            report.mismatched.append((name, want, got))
    _check(report, strict)
    for name in sorted(set(model_vars) & set(values)):
        var = model_vars[name]
        var.assign(np.asarray(values[name]).astype(var.dtype))
        report.loaded.append(name)
    return report


# --------------------------------------------------------------------------------------------------
# Google TF1 checkpoints
# --------------------------------------------------------------------------------------------------
def _stage_google_checkpoint(path: str) -> str:
    """A gs:// checkpoint prefix, file of it, or directory with a `checkpoint` state object -> the
    local prefix of a staged copy (bert_core.staging), since TensorFlow's own file layer does not
    share our storage settings (credentials, emulator, retries)."""
    from bert_core import staging, storage

    if storage.isdir(path):
        pointer = storage.join(path, "checkpoint")
        found = re.search(r'model_checkpoint_path:\s*"([^"]+)"', storage.read_text(pointer)) \
            if storage.exists(pointer) else None
        if found is None:
            raise UserError(f"{path}: directory holds no TF checkpoint (no 'checkpoint' state file)")
        path = storage.join(path, found.group(1))
    prefix = re.sub(r"\.(index|meta|data-\d+-of-\d+)$", "", path)
    index = storage.glob(prefix + ".index")
    if not index:
        raise UserError(f"{prefix}: no such checkpoint (expected {prefix}.index)")
    local = staging.stage(storage.glob(prefix + ".data-*") + index)
    return os.path.join(os.path.dirname(local[-1]), storage.basename(prefix))


def resolve_checkpoint_path(path: str) -> str:
    """A checkpoint prefix (`model.ckpt-1000`), a file of it (`.index`, `.data-...`), or a directory
    holding a `checkpoint` state file -> the prefix (local or gs://, the latter staged locally)."""
    from bert_core import storage

    path = str(path)
    if storage.is_remote(path):
        return _stage_google_checkpoint(path)
    if tf.io.gfile.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest is None:
            raise UserError(f"{path}: directory holds no TF checkpoint (no 'checkpoint' state file)")
        return latest
    path = re.sub(r"\.(index|meta|data-\d+-of-\d+)$", "", path)
    if not tf.io.gfile.exists(path + ".index"):
        raise UserError(f"{path}: no such checkpoint (expected {path}.index)")
    return path


# What TensorFlow's checkpoint reader raises for a truncated or corrupt .data file.
DAMAGE_ERRORS = (IndexError, tf.errors.DataLossError)


def read_google_checkpoint(path: str) -> tuple[str, dict[str, np.ndarray]]:
    """prefix, {name: array} for every variable in a TF checkpoint (name-based, TF1 or SaveV2)."""
    prefix = resolve_checkpoint_path(path)
    try:
        reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as err:
        raise UserError(f"{prefix}: not a readable TF checkpoint ({str(err).splitlines()[0]})") from None
    try:
        return prefix, {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}
    except DAMAGE_ERRORS as err:
        raise DamagedCheckpoint(prefix, err, "copy the checkpoint again, whole") from None


class DamagedCheckpoint(UserError):
    """A checkpoint whose files are there but do not read whole (a truncated copy, a full disk)."""

    def __init__(self, prefix: str, err: Exception, todo: str):
        files = ", ".join(sorted(tf.io.gfile.glob(prefix + ".data-*"))) or prefix
        super().__init__(f"{files}: truncated or damaged ({str(err).splitlines()[0]}); {todo}")


def check_whole(prefix: str, todo: str) -> None:
    """Read every tensor of a TF checkpoint; DamagedCheckpoint (with what to do) if one does not read."""
    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except DAMAGE_ERRORS as err:
        raise DamagedCheckpoint(prefix, err, todo) from None


def load_google_checkpoint(model, path: str, strict: bool = True) -> LoadReport:
    """Assign a model's variables from a Google-named TF checkpoint; see the module doc."""
    model_vars = _model_variables(model)
    prefix, values = read_google_checkpoint(path)
    report = LoadReport(source=prefix)
    kept = {}
    for name, value in values.items():
        if _GOOGLE_IGNORED.search(name) or name.startswith("_CHECKPOINTABLE_OBJECT_GRAPH"):
            report.ignored.append(name)
        else:
            kept[name] = value
    report.ignored.sort()
    return _assign(model_vars, kept, report, strict)


def _remove_stale(directory: str, base: str) -> None:
    for stale in tf.io.gfile.glob(os.path.join(directory, f".{base}.tmp-*")):
        try:
            tf.io.gfile.remove(stale)
        except tf.errors.NotFoundError:
            pass


def save_google_checkpoint(model, prefix: str) -> str:
    """Write the model's weights under Google's names at `prefix` (files prefix.index and
    prefix.data-00000-of-00001), atomically; returns the prefix."""
    prefix = str(prefix)
    directory, base = os.path.split(prefix)
    directory = directory or "."
    tf.io.gfile.makedirs(directory)
    _remove_stale(directory, base)
    model_vars = _model_variables(model)
    names = sorted(model_vars)
    tmp = os.path.join(directory, f".{base}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        tf.raw_ops.SaveV2(prefix=tmp, tensor_names=names, shape_and_slices=[""] * len(names),
                          tensors=[tf.convert_to_tensor(model_vars[n].value) for n in names])
        written = tf.io.gfile.glob(tmp + ".*")
        data_files = [f for f in written if not f.endswith(".index")]
        if tf.io.gfile.exists(prefix + ".index"):
            tf.io.gfile.remove(prefix + ".index")  # from here on no reader sees a half-replaced checkpoint
        for f in data_files:
            tf.io.gfile.rename(f, prefix + f[len(tmp):], overwrite=True)
        tf.io.gfile.rename(tmp + ".index", prefix + ".index", overwrite=True)
    finally:
        for f in tf.io.gfile.glob(tmp + ".*"):
            tf.io.gfile.remove(f)
    return prefix


# --------------------------------------------------------------------------------------------------
# Hugging Face safetensors
# --------------------------------------------------------------------------------------------------
_ST_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
              "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """{name: array} from a .safetensors file: an 8-byte little-endian header length, a JSON header
    {name: {dtype, shape, data_offsets}}, then the raw little-endian data. BF16 is read through
    ml_dtypes (a TensorFlow dependency)."""
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            blob = f.read()
    except tf.errors.NotFoundError:
        raise UserError(f"{path}: no such file") from None
    try:
        (header_len,) = struct.unpack("<Q", blob[:8])
        header = json.loads(blob[8:8 + header_len])
    except (struct.error, ValueError) as err:
        raise UserError(f"{path}: not a safetensors file ({err})") from None
    data = memoryview(blob)[8 + header_len:]
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        dtype = meta["dtype"]
        if dtype == "BF16":
            import ml_dtypes

            np_dtype = ml_dtypes.bfloat16
        elif dtype in _ST_DTYPES:
            np_dtype = _ST_DTYPES[dtype]
        else:
            raise UserError(f"{path}: tensor {name} has unsupported dtype {dtype}")
        start, end = meta["data_offsets"]
        out[name] = np.frombuffer(data[start:end], dtype=np.dtype(np_dtype).newbyteorder("<")).reshape(meta["shape"])
    return out


# HF names that are not weights of their own: buffers, and the MLM decoder's copies of tied tensors.
_HF_IGNORED = re.compile(r"(^|\.)position_ids$|^cls\.predictions\.decoder\.(weight|bias)$")


def hf_to_google_name(name: str) -> tuple[str | None, bool]:
    """A Hugging Face BERT parameter name -> (Google name, transpose?); (None, False) if not BERT's.

    bert.encoder.layer.3.attention.self.query.weight -> bert/encoder/layer_3/attention/self/query/kernel (T)
    embeddings.LayerNorm.weight (or .gamma)            -> bert/embeddings/LayerNorm/gamma
    cls.predictions.bias                               -> cls/predictions/output_bias
    cls.seq_relationship.weight [2, H]                 -> cls/seq_relationship/output_weights (as is)
    """
    if name.startswith("bert."):
        name = name[len("bert."):]
    if name.startswith("cls."):
        rest = name[len("cls."):]
        fixed = {"predictions.bias": "cls/predictions/output_bias",
                 "seq_relationship.weight": "cls/seq_relationship/output_weights",
                 "seq_relationship.bias": "cls/seq_relationship/output_bias"}
        if rest in fixed:
            return fixed[rest], False
        path = "cls/" + rest.replace(".", "/")
    elif name.split(".")[0] in ("embeddings", "encoder", "pooler"):
        path = "bert/" + name.replace(".", "/")
    else:
        return None, False
    path = re.sub(r"/layer/(\d+)/", r"/layer_\1/", path)
    if re.search(r"/LayerNorm/(weight|gamma)$", path):
        return re.sub(r"/(weight|gamma)$", "/gamma", path), False
    if re.search(r"/LayerNorm/(bias|beta)$", path):
        return re.sub(r"/(bias|beta)$", "/beta", path), False
    if re.search(r"_embeddings/weight$", path):
        return path[: -len("/weight")], False
    if path.endswith("/weight"):
        return path[: -len("/weight")] + "/kernel", True  # torch Linear [out, in] -> TF [in, out]
    return path, False


def _hf_files(path: str) -> list[str]:
    """A .safetensors file, or a model directory: its model.safetensors, or the shards that
    model.safetensors.index.json lists."""
    from bert_core import staging, storage

    path = str(path)
    if storage.is_remote(path):
        if not storage.isdir(path):
            return staging.stage([path])
        index = storage.join(path, "model.safetensors.index.json")
        if storage.exists(index) and not storage.exists(storage.join(path, "model.safetensors")):
            shards = sorted(set(storage.read_json(index)["weight_map"].values()))
            return staging.stage([storage.join(path, s) for s in shards])
        return staging.stage([storage.join(path, "model.safetensors")])
    if not tf.io.gfile.isdir(path):
        return [path]
    single = os.path.join(path, "model.safetensors")
    if tf.io.gfile.exists(single):
        return [single]
    index = os.path.join(path, "model.safetensors.index.json")
    if tf.io.gfile.exists(index):
        with tf.io.gfile.GFile(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        return [os.path.join(path, s) for s in shards]
    raise UserError(f"{path}: directory holds no model.safetensors (or model.safetensors.index.json)")


def load_hf_safetensors(model, path: str, strict: bool = True) -> LoadReport:
    """Assign a model's variables from Hugging Face BERT weights in safetensors (BertModel,
    BertForMaskedLM or BertForPreTraining; with or without the `bert.` prefix). `path`: the file, or
    a model directory (single file or shards)."""
    model_vars = _model_variables(model)
    report = LoadReport(source=str(path))
    values, file_names = {}, {}
    tensors = {}
    for file in _hf_files(path):
        tensors.update(read_safetensors(file))
    for hf_name, value in tensors.items():
        if _HF_IGNORED.search(hf_name):
            report.ignored.append(hf_name)
            continue
        name, transpose = hf_to_google_name(hf_name)
        if name is None:
            report.unexpected.append(hf_name)
            continue
        values[name] = value.T if transpose else value
        file_names[name] = hf_name
    return _assign(model_vars, values, report, strict, foreign=report.unexpected, file_names=file_names)


# --------------------------------------------------------------------------------------------------
# --init_checkpoint: whichever of the two formats the path holds
# --------------------------------------------------------------------------------------------------
def is_hf_safetensors(path: str) -> bool:
    """A .safetensors file, or a directory (local or gs://) with model.safetensors or the shards'
    model.safetensors.index.json; anything else is taken for a Google checkpoint."""
    from bert_core import storage

    path = str(path)
    if path.endswith(".safetensors"):
        return True
    return storage.isdir(path) and (storage.exists(storage.join(path, "model.safetensors"))
                                    or storage.exists(storage.join(path, "model.safetensors.index.json")))


def load_init_checkpoint(model, path: str) -> str:
    """`--init_checkpoint` for pretraining, fine-tuning and feature extraction: the model's weights
    from a Google checkpoint, our output or HF safetensors; returns the one-line report to log.

    Shapes must match (one UserError line listing them); every encoder variable must be in the file
    except the pooler (HF masked-LM exports have none); heads may be missing (a new task, or HF's
    BertModel): they keep their fresh initialisation and the line names them."""
    if is_hf_safetensors(path):
        report = load_hf_safetensors(model, path, strict=False)
    else:
        report = load_google_checkpoint(model, path, strict=False)
    required = [n for n in report.missing if n.startswith("bert/") and not n.startswith("bert/pooler/")]
    if required:
        raise UserError(f"{report.source}: does not fit the model: {len(required)} encoder variables missing "
                        f"from the checkpoint: {_short(required)}")
    line = report.summary()
    if report.missing:
        line += f"; initialised afresh: {_short(report.missing)}"
    return line
