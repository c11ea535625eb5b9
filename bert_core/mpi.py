"""The MPI communicator of a run started by mpirun, for the stages that read their shards per rank
(create-data, prepare-corpus). A module of its own so that finding out costs no import of a stage's
code, and mpi4py is imported only under mpirun."""

from __future__ import annotations

import os


def comm():
    """COMM_WORLD when launched by mpirun with more than one rank, else None (mpi4py not imported)."""
    launched = any(os.environ.get(k) for k in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"))
    if not launched:
        return None
    from mpi4py import MPI

    world = MPI.COMM_WORLD
    return world if world.Get_size() > 1 else None
