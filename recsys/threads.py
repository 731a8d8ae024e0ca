"""Pin BLAS to one thread while fitting: implicit parallelises itself, and a multi-threaded
BLAS underneath it oversubscribes the cores and slows ALS down by an order of magnitude."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from threadpoolctl import threadpool_limits


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    with threadpool_limits(limits=1, user_api="blas"):
        yield
