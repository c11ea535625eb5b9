"""Horovod, or a single process, behind one small interface.

    dist = distributed.initialize()        # Horovod under horovodrun/mpirun, else one process
    dist.rank, dist.size, dist.local_rank, dist.is_chief
    grads = dist.allreduce(grads)          # average over ranks (a no-op for one process)
    dist.broadcast_variables(variables)    # rank 0's values everywhere
    dist.barrier()

Without a launcher this runs as one process even if Horovod is not importable. Under a launcher
(horovodrun sets HOROVOD_RANK; mpirun sets OMPI_COMM_WORLD_RANK or PMI_RANK) Horovod is required.

Each process sees one GPU: `initialize()` pins it before the first TensorFlow op, as Horovod's
TensorFlow guide says (step 2: one GPU per process, the local rank's, with memory growth). Without it
every rank of an 8-GPU node places its ops on GPU:0, and TensorFlow reserves the memory of every
visible GPU in every rank. The choice is `gpu_index(visible, local_rank, local_size)`.

Two facts found on this machine shape the Horovod side:
- `horovod.tensorflow.keras`'s optimizer wrapper does not average gradients under Keras 3 (ranks
  silently diverge), so the training loop allreduces gradients itself through `allreduce` here.
- Keras 3 variables are not tf.Variables; Horovod needs their underlying `v.value`.
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

import tensorflow as tf

from bert_core.errors import UserError

# Environment variables that a launcher sets for each worker process: (rank, size, local rank).
_LAUNCHER_ENV = (
    ("HOROVOD_RANK", "HOROVOD_SIZE", "HOROVOD_LOCAL_RANK"),                           # horovodrun
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),   # Open MPI
    ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),                                      # MPICH, Intel MPI
    ("PMIX_RANK", "PMIX_SIZE", "PMIX_LOCAL_RANK"),
)


def launcher_world_size() -> int:
    """The number of processes the launcher started, or 1 without a launcher."""
    for _, size_var, _ in _LAUNCHER_ENV:
        if os.environ.get(size_var):
            return int(os.environ[size_var])
    return 1


def launcher_rank() -> int:
    """This process's rank as its launcher set it, or 0 without a launcher (no Horovod call)."""
    for rank_var, _, _ in _LAUNCHER_ENV:
        if os.environ.get(rank_var):
            return int(os.environ[rank_var])
    return 0


def _tf_variable(v):
    """Keras 3 variables wrap a tf.Variable; Horovod and tf ops want the tf.Variable itself."""
    return getattr(v, "value", v) if not isinstance(v, tf.Variable) else v


def _dense(g):
    # Embedding gradients arrive as IndexedSlices; BERT's are dense enough that a dense allreduce
    # is cheaper than an allgather of slices (and averaging slices needs care anyway).
    return tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g


def gpu_index(visible: int, local_rank: int, local_size: int) -> int | None:
    """Which of the `visible` GPUs the process of `local_rank` (of `local_size` on its node) uses.

    None without a GPU. One GPU a rank when the node shows at least as many GPUs as it runs ranks
    (`slotsPerWorker` = GPUs); index 0 when only one is visible, which is also what a process sees
    when its launcher already narrowed HIP_VISIBLE_DEVICES/ROCR_VISIBLE_DEVICES to one GPU a rank.
    More ranks than GPUs (but more than one GPU) is refused: ranks would share GPUs unevenly.
    """
    if not 0 <= local_rank < local_size:
        raise ValueError(f"local rank {local_rank} is outside 0..{local_size - 1}")
    if visible <= 0:
        return None
    if visible == 1:
        return 0
    if local_size > visible:
        raise UserError(f"{local_size} ranks on this node but {visible} GPUs are visible: start at most "
                        f"one rank per GPU (mpirun -np / slotsPerWorker = GPUs per node)")
    return local_rank


def pin_gpu(rank: int, local_rank: int, local_size: int) -> str:
    """Make the local rank's GPU the only one this process sees, with memory growth; say which.

    Must run before TensorFlow initializes its devices (the first op): afterwards the visible
    devices cannot change and TensorFlow raises RuntimeError. Returns the device's name, or "CPU".
    """
    gpus = tf.config.list_physical_devices("GPU")
    index = gpu_index(len(gpus), local_rank, local_size)
    if index is None:
        device = "CPU"
    else:
        tf.config.set_visible_devices(gpus[index], "GPU")
        tf.config.experimental.set_memory_growth(gpus[index], True)
        device = gpus[index].name
    print(f"distributed: rank {rank} (local rank {local_rank} of {local_size}) uses {device}"
          f" ({len(gpus)} GPU(s) visible)", file=sys.stderr, flush=True)
    return device


class Distributed:
    """One process: every collective is the identity."""

    backend = "single"

    def __init__(self) -> None:
        self.rank = 0
        self.size = 1
        self.local_rank = 0
        self.local_size = 1

    @property
    def is_chief(self) -> bool:
        return self.rank == 0

    def allreduce(self, tensors: Sequence[tf.Tensor], fp16: bool = False) -> list[tf.Tensor]:
        """Average each tensor over all ranks (None entries stay None). Usable inside tf.function."""
        return [None if t is None else _dense(t) for t in tensors]

    def allreduce_sum(self, tensors: Sequence[tf.Tensor]) -> list[tf.Tensor]:
        """Sum each tensor over all ranks (e.g. eval counts)."""
        return [tf.convert_to_tensor(t) for t in tensors]

    def broadcast_variables(self, variables: Sequence, root_rank: int = 0) -> None:
        """Assign root_rank's values to `variables` on every rank (eager)."""

    def barrier(self) -> None:
        """Return once every rank has reached this point."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, size={self.size}, local_rank={self.local_rank})"


class HorovodDistributed(Distributed):
    backend = "horovod"

    def __init__(self) -> None:
        super().__init__()
        try:
            import horovod.tensorflow as hvd
        except ImportError as err:
            raise UserError(f"started under a launcher with {launcher_world_size()} processes but Horovod is not "
                            f"importable ({err}); install horovod or run without horovodrun/mpirun") from None
        hvd.init()
        self.hvd = hvd
        self.rank = hvd.rank()
        self.size = hvd.size()
        self.local_rank = hvd.local_rank()
        self.local_size = hvd.local_size()

    def allreduce(self, tensors, fp16: bool = False):
        hvd = self.hvd
        present = [i for i, t in enumerate(tensors) if t is not None]
        if not present:
            return list(tensors)
        compression = hvd.Compression.fp16 if fp16 else hvd.Compression.none
        reduced = hvd.grouped_allreduce([_dense(tensors[i]) for i in present], op=hvd.Average,
                                        compression=compression)
        out = list(tensors)
        for i, r in zip(present, reduced):
            out[i] = r
        return out

    def allreduce_sum(self, tensors):
        return self.hvd.grouped_allreduce([tf.convert_to_tensor(t) for t in tensors], op=self.hvd.Sum)

    def broadcast_variables(self, variables, root_rank: int = 0) -> None:
        self.hvd.broadcast_variables([_tf_variable(v) for v in variables], root_rank=root_rank)

    def barrier(self) -> None:
        # horovod.tensorflow has no barrier; an allreduce completes only when every rank joined it.
        self.hvd.allreduce(tf.constant(0.0), op=self.hvd.Sum, name="bert_barrier")


_CURRENT: Distributed | None = None


def initialize(backend: str = "auto") -> Distributed:
    """The process's Distributed: Horovod under a launcher (or if asked), else a single process.

    backend: "auto" (Horovod iff a launcher started this process), "horovod" or "single".
    Pins this process's GPU (`pin_gpu`), so call it before the first TensorFlow op.
    Idempotent: later calls return the same object.
    """
    global _CURRENT
    if _CURRENT is not None:
        return _CURRENT
    if backend not in ("auto", "horovod", "single"):
        raise ValueError(f"unknown backend {backend!r}")
    use_horovod = backend == "horovod" or (backend == "auto" and launcher_world_size() > 1)
    dist = HorovodDistributed() if use_horovod else Distributed()
    pin_gpu(dist.rank, dist.local_rank, dist.local_size)
    _CURRENT = dist
    return _CURRENT


def current() -> Distributed:
    return _CURRENT if _CURRENT is not None else initialize()
