"""How many threads numba's parallel kernels run on: no more than torch may use.

Both the training kernels (:mod:`tdlib.fused`) and the compressed models' kernels
(:mod:`tdlib.compress.chain`) run numba ``prange`` loops beside torch, and torch's thread count
(``torch.set_num_threads``) is the one a run records and a user sets.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numba
import torch


@contextmanager
def kernel_threads() -> Iterator[int]:
    """Run a kernel on no more threads than torch may use (``torch.set_num_threads``), and leave torch's
    count as it was; yields numba's count.

    numba's own default is every core. A worker given one torch thread beside other workers would then
    start threads that wait on cores those workers use, and on 2 cores two such workers trained weight-level
    runs at about half speed (180 against 95 ms a step). The drops do not depend on the thread count.

    numba starts its OpenMP thread pool at its first parallel call in a process, and that call sets the
    OpenMP thread count, the one torch reads, to every core. A worker given one torch thread then trained
    its first weight-level run on two from the first step on: 4x slower beside a second worker, and not on
    the thread count its run records. (Six such runs, retrained on one thread, came out byte-identical,
    but torch does not promise the same bits on another thread count.) torch's count is put back after
    every call.
    """
    torch_threads = torch.get_num_threads()
    wanted = min(torch_threads, numba.config.NUMBA_NUM_THREADS)
    if numba.get_num_threads() != wanted:  # numba's setting is per calling thread
        numba.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        if torch.get_num_threads() != torch_threads:
            torch.set_num_threads(torch_threads)
