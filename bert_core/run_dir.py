"""A training run's output directory: whole checkpoints, TF's pointer to the latest, summaries.

    run = RunDirectory(output_dir, dist, keep=5)
    latest = run.sync()                     # every rank: a local CheckpointDir to resume from, or None
    run.restore_input_position(latest, iterator)
    run.save(step, iterator, write)         # every rank; write(CheckpointDir) adds weights and state
    run.upload_summaries()                  # gs://: the TensorBoard files of summaries_dir
    run.start_history(step); run.append_history(row)   # chief: train/history.jsonl, one line a logged step

The layout (`CheckpointDir` names every file; the caller writes weights and state there):

  output_dir/ckpt-<step>/        a checkpoint; the last `keep` are kept
      model.ckpt-<step>.*        the weights (Google's names when the trainer saves them so)
      state.*                    step, optimizer slots and loss scale, RNG states
      data-rank<r>.*             rank r's tf.data iterator, so a resumed run reads what it would have
      metadata.json              step, world size, time of the save
      _COMPLETE                  storage's marker, written last: only a directory with it is a checkpoint
  output_dir/checkpoint          TF's pointer to the latest weights (tf.train.latest_checkpoint works)
  output_dir/train/              summaries (TensorBoard's event files) and history.jsonl (layout.TRAIN_HISTORY)

Every checkpoint directory is made by storage.publish_dir, so it has the one artifact marker
(storage.COMPLETE_MARKER) locally and on gs:// alike. Locally the ranks write into .ckpt-<step>.tmp,
which is fsynced and published (renamed into place, marker inside) only when complete: a kill during
a save leaves the previous checkpoint as the latest.

A gs:// output_dir: the run works in a node-local directory (work_dir, default
bert_core.staging.local_dir_for(output_dir, "work")) and publishes each checkpoint to
output_dir/ckpt-<step>/: every other rank uploads its own data-rank<r> files first (ranks on other
hosts share no disk with the chief), then the chief uploads the rest and the marker last, rewrites
output_dir/checkpoint and prunes. `sync` deletes gs:// checkpoints without a marker and makes each
host's work directory hold the newest complete one.
"""

from __future__ import annotations

import contextlib
import datetime
import glob
import json
import os
import re
import shutil
from typing import Callable, NamedTuple

import tensorflow as tf

from bert_core import distributed, layout, staging, storage
from bert_core.errors import UserError

WEIGHTS_NAME = "model.ckpt"  # Google's: ckpt-<step>/model.ckpt-<step>.index, .data-*
METADATA = "metadata.json"
# What versions before 2026-12-06 wrote into each checkpoint instead of METADATA (and locally instead
# of the marker). Such a run is refused in one line, never resumed wrongly or trained over.
OLDER_LAYOUT = "COMPLETE.json"
_CKPT_RE = re.compile(r"^ckpt-(\d+)$")


def _name(step: int) -> str:
    return f"ckpt-{step}"


class CheckpointDir(NamedTuple):
    """One checkpoint directory (local or gs://) and the names of its files."""

    step: int
    path: str

    @property
    def weights(self) -> str:
        """The weights' checkpoint prefix."""
        return storage.join(self.path, f"{WEIGHTS_NAME}-{self.step}")

    @property
    def state(self) -> str:
        return storage.join(self.path, "state")

    def input_position(self, rank: int) -> str:
        return storage.join(self.path, f"data-rank{rank}")

    def metadata(self) -> dict:
        return storage.read_json(storage.join(self.path, METADATA))


def list_checkpoints(directory: str) -> list[CheckpointDir]:
    """The complete checkpoints in a run directory (local or gs://), oldest first."""
    found = []
    for marker in storage.glob(storage.join(directory, "ckpt-*", storage.COMPLETE_MARKER)):
        path = storage.dirname(marker)
        m = _CKPT_RE.match(storage.basename(path))
        if m:
            found.append(CheckpointDir(int(m.group(1)), path))
    return sorted(found)


def latest_checkpoint(directory: str) -> CheckpointDir | None:
    ckpts = list_checkpoints(directory)
    return ckpts[-1] if ckpts else None


class RunDirectory:
    """The checkpoints and summaries of one run in output_dir; see the module docstring."""

    def __init__(self, output_dir: str, dist: distributed.Distributed, work_dir: str | None = None,
                 keep: int = 5, log: Callable[[str], None] = print):
        self.output_dir = output_dir
        self.dist = dist
        self.keep = keep
        self._log = log
        self.remote = storage.is_remote(output_dir)  # the one place that asks
        # Where checkpoints are written and read: output_dir itself, or a node-local mirror of it.
        self.local = (work_dir or staging.local_dir_for(output_dir, "work")) if self.remote else output_dir
        self.summaries_dir = os.path.join(self.local, layout.SUMMARIES_DIR)
        self.history_path = os.path.join(self.summaries_dir, layout.TRAIN_HISTORY)
        self._uploaded: dict[str, int] = {}  # summary file -> size last uploaded

    def latest(self) -> CheckpointDir | None:
        """The newest complete checkpoint in output_dir (on gs:// if it is there; nothing downloaded)."""
        return latest_checkpoint(self.output_dir)

    def published(self, ckpt: CheckpointDir) -> str:
        """Where a local checkpoint lives in output_dir."""
        return storage.join(self.output_dir, storage.basename(ckpt.path))

    # ------------------------------------------------------------------ resume
    def sync(self) -> CheckpointDir | None:
        """Every rank: the newest complete checkpoint as a local directory, or None.

        Removes what killed saves left (.ckpt-*.tmp). gs://: the chief deletes checkpoints without a
        marker; then each host's local rank 0 makes the work directory hold exactly the newest
        complete gs:// checkpoint (gs:// is the record: other local ones are removed)."""
        dist = self.dist
        older = storage.glob(storage.join(self.output_dir, "ckpt-*", OLDER_LAYOUT))
        if older:  # every rank sees it, so every rank stops (no rank waits at a barrier)
            raise UserError(f"{self.output_dir}: holds checkpoints in an older layout ({older[0]}), which "
                            f"this version does not resume; finish that run with the version that "
                            f"started it, or give a new --output_dir")
        if dist.is_chief or (self.remote and dist.local_rank == 0):  # one process per directory
            os.makedirs(self.local, exist_ok=True)
            for tmp in glob.glob(os.path.join(self.local, ".ckpt-*.tmp")):
                shutil.rmtree(tmp, ignore_errors=True)
            storage.remove_stale_temporaries(self.local)
        if self.remote and dist.is_chief:
            for path in storage.glob(storage.join(self.output_dir, "ckpt-*")):
                if _CKPT_RE.match(storage.basename(path)) and not storage.is_complete(path):
                    storage.remove_dir(path)
                    self._log(f"removed {path}: an incomplete checkpoint (no {storage.COMPLETE_MARKER})")
        dist.barrier()
        if self.remote:
            if dist.local_rank == 0:
                newest = self.latest()
                keep = storage.basename(newest.path) if newest else None
                for path in glob.glob(os.path.join(self.local, "ckpt-*")):
                    if os.path.basename(path) != keep:
                        shutil.rmtree(path, ignore_errors=True)
                if newest:
                    _mirror(newest.path, os.path.join(self.local, keep))
            dist.barrier()
        return latest_checkpoint(self.local)

    @contextlib.contextmanager
    def reading(self, ckpt: CheckpointDir):
        """Around reading `ckpt`: a truncated or damaged file of it is one line naming the file and
        saying how to go on (the checkpoint before it is whole: saves are atomic)."""
        from bert_core import checkpoints

        try:
            yield
        except checkpoints.DAMAGE_ERRORS + (checkpoints.DamagedCheckpoint,):
            todo = (f"remove {self.published(ckpt)} and rerun: the run resumes from the checkpoint before it "
                    f"(or starts afresh if there is none)")
            for prefix in (ckpt.weights, ckpt.state, ckpt.input_position(self.dist.rank)):  # which file it is
                if glob.glob(prefix + ".index"):
                    checkpoints.check_whole(prefix, todo)
            raise

    def restore_input_position(self, ckpt: CheckpointDir, iterator) -> None:
        """This rank's tf.data position from `ckpt`; a rank the saving run did not have starts afresh."""
        prefix = ckpt.input_position(self.dist.rank)
        if os.path.exists(prefix + ".index"):
            with self.reading(ckpt):
                tf.train.Checkpoint(iterator=iterator).read(prefix).assert_existing_objects_matched()
        else:
            self._log(f"rank {self.dist.rank}: {ckpt.path} has no input position for this rank (saved by "
                      f"{ckpt.metadata()['world_size']} ranks); its data starts afresh")

    # ------------------------------------------------------------------ save
    def save(self, step: int, iterator, write: Callable[[CheckpointDir], None]) -> str | None:
        """Every rank: checkpoint ckpt-<step> whole, with each rank's input position (if `iterator`);
        `write` (chief only) adds the weights and state. Returns the chief's checkpoint path."""
        dist = self.dist
        tmp = CheckpointDir(step, os.path.join(self.local, f".{_name(step)}.tmp"))
        remote = storage.join(self.output_dir, _name(step)) if self.remote else None
        if dist.is_chief:
            shutil.rmtree(tmp.path, ignore_errors=True)
            os.makedirs(tmp.path)
            if remote:  # an earlier version of this step reads as incomplete before any rank uploads
                storage.remove(storage.join(remote, storage.COMPLETE_MARKER))
        dist.barrier()
        if iterator is not None:
            if remote and not dist.is_chief:
                self._upload_input_position(iterator, step, remote)
            else:
                tf.train.Checkpoint(iterator=iterator).write(tmp.input_position(dist.rank))
        dist.barrier()
        if dist.is_chief:
            write(tmp)
            storage.write_json(storage.join(tmp.path, METADATA), {
                "global_step": step, "world_size": dist.size,
                "time": datetime.datetime.now(datetime.timezone.utc).isoformat()})  # also tells saves apart
            _fsync_files(tmp.path)
            if remote:
                storage.publish_dir(tmp.path, remote, others=_other_ranks_file)
            final = os.path.join(self.local, _name(step))
            storage.publish_dir(tmp.path, final)
            shutil.rmtree(tmp.path)
            self._point_and_prune(self.local, step)
            if remote:
                self._point_and_prune(self.output_dir, step)
                self.upload_summaries()
        dist.barrier()
        return (remote or final) if dist.is_chief else None

    def _point_and_prune(self, directory: str, step: int) -> None:
        weights = CheckpointDir(step, _name(step)).weights  # relative to `directory`
        storage.write_text(storage.join(directory, "checkpoint"),
                           f'model_checkpoint_path: "{weights}"\nall_model_checkpoint_paths: "{weights}"\n')
        for old in list_checkpoints(directory)[:-self.keep]:
            storage.remove_dir(old.path)

    def _upload_input_position(self, iterator, step: int, remote: str) -> None:
        """A non-chief rank's data-rank<r> files, straight to the gs:// checkpoint, through a private
        local directory."""
        own = os.path.join(self.local, f".{_name(step)}.rank{self.dist.rank}.tmp")
        shutil.rmtree(own, ignore_errors=True)
        try:
            tf.train.Checkpoint(iterator=iterator).write(CheckpointDir(step, own).input_position(self.dist.rank))
            for name in sorted(os.listdir(own)):
                storage.copy(os.path.join(own, name), storage.join(remote, name))
        finally:
            shutil.rmtree(own, ignore_errors=True)

    # ------------------------------------------------------------------ summaries
    def upload_summaries(self) -> None:
        """gs:// (chief): the summary files that changed since the last upload."""
        if not (self.remote and self.dist.is_chief and os.path.isdir(self.summaries_dir)):
            return
        for info in storage.list_files(self.summaries_dir):
            if self._uploaded.get(info.path) != info.size:
                rel = os.path.relpath(info.path, self.summaries_dir).replace(os.sep, "/")
                storage.copy(info.path, storage.join(self.output_dir, layout.SUMMARIES_DIR, rel))
                self._uploaded[info.path] = info.size


    # ------------------------------------------------------------------ history
    def start_history(self, step: int) -> None:
        """Chief, before training from `step`: the history keeps the rows up to `step` (a resumed run logs
        the steps after its checkpoint again); an object-store run's is fetched first if this host has none."""
        if not self.dist.is_chief:
            return
        if self.remote and not os.path.exists(self.history_path):
            remote = layout.train_history_path(self.output_dir)
            if storage.exists(remote):
                storage.download(remote, self.history_path)
        if not os.path.exists(self.history_path):
            return
        kept = []
        with open(self.history_path, encoding="utf-8") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a kill
                    continue
                if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
                    kept.append(line if line.endswith("\n") else line + "\n")
        storage.write_text(self.history_path, "".join(kept))

    def append_history(self, row: dict) -> None:
        """Chief: one logged step's numbers as a JSON line (uploaded with the summaries)."""
        if not self.dist.is_chief:
            return
        os.makedirs(self.summaries_dir, exist_ok=True)
        with open(self.history_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


def _other_ranks_file(rel: str) -> bool:
    """`data-rank<r>.*` of a rank r > 0: uploaded by that rank, not by the chief."""
    m = re.match(r"^data-rank(\d+)\.", rel)
    return bool(m) and int(m.group(1)) != 0


def _mirror(remote: str, local: str) -> None:
    """Make `local` a complete copy of the complete gs:// checkpoint `remote`. Files of the same save
    already there (same metadata.json) are linked, not downloaded again."""
    files = [f["path"] for f in storage.read_json(storage.join(remote, storage.COMPLETE_MARKER))["files"]]
    same = storage.is_complete(local) and storage.read_bytes(os.path.join(local, METADATA)) == \
        storage.read_bytes(storage.join(remote, METADATA))
    if same and all(os.path.exists(os.path.join(local, rel)) for rel in files):
        return
    with storage.atomic_dir(local) as tmp:
        for rel in files:
            have, dst = os.path.join(local, *rel.split("/")), os.path.join(tmp, *rel.split("/"))
            if same and os.path.exists(have):
                os.link(have, dst)
            else:
                storage.download(storage.join(remote, rel), dst)


def _fsync_files(path: str) -> None:
    """The bytes of every file under `path` on disk before the directory is published."""
    for root, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
