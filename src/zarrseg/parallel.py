"""Map a block function over a ``BlockGrid`` with Dask, with progress, resumability and ordered results.

This is the only scheduler module: every blockwise stage calls ``map_blocks``. Execution is
delegated to Dask (threads, local processes, or a ``distributed`` cluster, including a
dask-jobqueue ``SLURMCluster``); we add only what Dask does not do for us: per-block done
markers that persist each block's small summary, so a killed run redoes only unfinished
blocks, and results returned in block-id order (deterministic for any worker count).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import dask
from dask.callbacks import Callback
from tqdm.auto import tqdm

from .blocks import Block, BlockGrid
from .errors import ConfigError
from .runs import DoneMarkers, Summary  # noqa: F401 (the run protocol's done markers)

log = logging.getLogger(__name__)

@dataclass
class DaskParams:
    """How blockwise work is executed (config section ``dask``)."""

    scheduler: Literal["threads", "processes", "synchronous", "distributed", "slurm"] = "threads"
    n_workers: int = 0  # 0: all cores of this job (SLURM_CPUS_PER_TASK / affinity)
    address: str | None = None  # scheduler address of a running distributed cluster
    slurm: dict | None = None  # keyword arguments for dask_jobqueue.SLURMCluster
    slurm_jobs: int = 2  # number of SLURM worker jobs when scheduler == "slurm"

    def validate(self) -> None:
        if self.n_workers < 0:
            raise ConfigError(f"dask.n_workers must be >= 0, got {self.n_workers}")
        if self.scheduler == "distributed" and self.address is None:
            log.info("dask: no address given, starting a local distributed cluster")

    @property
    def workers(self) -> int:
        if self.n_workers:
            return self.n_workers
        env = os.environ.get("SLURM_CPUS_PER_TASK") or os.environ.get("SNAKEMAKE_THREADS")
        if env and env.isdigit():
            return int(env)
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def progress_bar(total: int, desc: str) -> tqdm:
    """A tqdm bar that stays quiet-ish in log files (updates every 10 s when not a TTY)."""
    interactive = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit="block", mininterval=0.2 if interactive else 10.0,
                disable=os.environ.get("ZARRSEG_NO_PROGRESS") == "1", file=sys.stderr)


class _TqdmCallback(Callback):
    """Advance a tqdm bar each time one of our block tasks finishes (local schedulers)."""

    def __init__(self, bar: tqdm, keys: set):
        super().__init__()
        self._bar, self._keys = bar, keys

    def _posttask(self, key, result, dsk, state, worker_id):
        if key in self._keys:
            self._bar.update(1)


def _run_one(fn: Callable[[Block], Summary | None], block: Block, markers: DoneMarkers) -> Summary:
    summary = fn(block) or {}
    markers.save(block.id, summary)
    return summary


@contextlib.contextmanager
def dask_client(params: DaskParams) -> Iterator[Any]:
    """A distributed Client for the 'distributed'/'slurm' schedulers, else None."""
    if params.scheduler not in ("distributed", "slurm"):
        yield None
        return
    from distributed import Client, LocalCluster

    if params.scheduler == "slurm":
        from dask_jobqueue import SLURMCluster

        cluster = SLURMCluster(**(params.slurm or {}))
        cluster.scale(jobs=params.slurm_jobs)
        with Client(cluster) as client:
            yield client
        cluster.close()
    elif params.address:
        try:
            client = Client(params.address)
        except OSError as err:  # refused or timed out: one line, not a chain of tracebacks
            raise ConfigError(f"dask.address {params.address!r}: no scheduler answered "
                              f"({' '.join(str(err).split())[:200]})") from None
        with client:
            yield client
    else:
        with LocalCluster(n_workers=params.workers, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            yield client


def _local_scheduler(name: str) -> Callable:
    """The local scheduler's get function: dask resolves a scheduler *name* by first importing
    ``distributed`` (~0.7 s of every job's start-up) to look for a client we never use here."""
    if name == "threads":
        from dask.threaded import get
    elif name == "processes":
        from dask.multiprocessing import get
    else:
        from dask.local import get_sync as get
    return get


def map_blocks(
    fn: Callable[[Block], Summary | None],
    grid: BlockGrid | Iterable[Block],
    *,
    name: str,
    dask_params: DaskParams | None = None,
    done_dir: str | Path | None = None,
    client: Any = None,
) -> list[Summary]:
    """Run ``fn(block)`` for every block; return the summaries in block order.

    ``fn`` reads its block's outer box, writes only its inner box to Zarr, and returns a small
    dict of numpy values/arrays. With ``done_dir``, finished blocks are skipped on rerun and
    their saved summaries returned. ``fn`` must be picklable for process/distributed schedulers.
    """
    params = dask_params or DaskParams()
    blocks = list(grid)
    markers = DoneMarkers(done_dir)
    results: dict[int, Summary] = {}
    todo = []
    for block in blocks:
        saved = markers.load(block.id)
        if saved is None:
            todo.append(block)
        else:
            results[block.id] = saved
    if results:
        log.info("%s: %d of %d blocks already done, resuming", name, len(results), len(blocks))
    t0 = time.perf_counter()
    if todo:
        bar = progress_bar(len(todo), name)
        with bar:
            if params.scheduler in ("distributed", "slurm") or client is not None:
                with contextlib.ExitStack() as stack:
                    if client is None:
                        client = stack.enter_context(dask_client(params))
                    from distributed import as_completed

                    futures = {client.submit(_run_one, fn, b, markers, pure=False): b.id for b in todo}
                    for future in as_completed(futures):
                        results[futures[future]] = future.result()
                        bar.update(1)
            else:
                tasks = [dask.delayed(_run_one, pure=False)(fn, b, markers) for b in todo]
                keys = {t.key for t in tasks}
                num_workers = 1 if params.scheduler == "synchronous" else params.workers
                with _TqdmCallback(bar, keys):
                    out = dask.compute(*tasks, scheduler=_local_scheduler(params.scheduler), num_workers=num_workers)
                for b, summary in zip(todo, out, strict=True):
                    results[b.id] = summary
    log.info("%s: %d blocks (%d computed) in %.2f s", name, len(blocks), len(todo), time.perf_counter() - t0)
    return [results[b.id] for b in blocks]
