"""Render a whole dataset: plan, shards (serially, in local processes or on Ray), manifest.

    manifest = render_dataset(cfg, out="data/hip", workers=2)           # local processes
    manifest = render_dataset(cfg, out="data/hip", ray_address="local")  # Ray (see synthex.ray_runner)

Shards are rendered by workers and written by this process only (workers need
no shared filesystem): each shard goes to ``shards/.NNNNN.h5.tmp`` and is
renamed when complete, so an interrupted run keeps every finished shard and
``resume=True`` renders only the missing ones. Executors are registry entries
(``EXECUTORS``) yielding ``(shard, arrays)`` as shards complete.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

from projectors.projector import cpu_threads, set_cpu_threads
from synthex import dataset as ds
from synthex.pipeline import render_range


class RenderInterrupted(RuntimeError):
    """The run was interrupted; finished shards are kept and ``--resume`` continues."""


Job = tuple[int, int, int]  # (shard, first_index, count)


def run_serial(cfg: dict, jobs: list[Job], options: dict, advance: Callable[[int], None]) -> Iterator[tuple[int, dict]]:
    for k, first, count in jobs:
        yield k, render_range(cfg, first, count, progress=advance)


def _worker_threads(threads: int) -> None:
    """Worker-process initializer: ``threads`` for the projector, torch and BLAS/OpenMP pools."""
    for var in ("SYNTHEX_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    set_cpu_threads(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def run_processes(cfg: dict, jobs: list[Job], options: dict, advance) -> Iterator[tuple[int, dict]]:
    workers = max(1, int(options.get("workers", 1)))
    if workers == 1 or len(jobs) <= 1:
        yield from run_serial(cfg, jobs, options, advance)
        return
    # spawn: Warp and torch hold threads; forking a process that has them is unsafe
    ctx = multiprocessing.get_context("spawn")
    # each worker gets its share of the cores (one projector splitting rows over every core per
    # worker would leave nothing for the other workers to gain)
    ex = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_threads,
                             initargs=(max(1, cpu_threads() // workers),))
    try:
        pending = {ex.submit(render_range, cfg, first, count): (k, count) for k, first, count in jobs[: 2 * workers]}
        queue = list(jobs[2 * workers :])
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                k, count = pending.pop(fut)
                arrays = fut.result()
                advance(count)
                if queue:
                    nk, nfirst, ncount = queue.pop(0)
                    pending[ex.submit(render_range, cfg, nfirst, ncount)] = (nk, ncount)
                yield k, arrays
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


def run_ray(cfg: dict, jobs: list[Job], options: dict, advance) -> Iterator[tuple[int, dict]]:
    from synthex.ray_runner import run_ray_jobs

    yield from run_ray_jobs(cfg, jobs, options, advance)


# name -> generator of (shard, arrays)
EXECUTORS = {"serial": run_serial, "processes": run_processes, "ray": run_ray}


def preflight(cfg: dict) -> None:
    """Build one subject of each CT entry now, so that a missing file or label
    fails before anything is written."""
    from synthex import subjects as subject_sources
    from synthex.pipeline import Pipeline

    pipe = Pipeline(cfg, cache_size=1)
    sid = 0
    for entry in cfg["subjects"]:
        if entry["source"] == "ct":
            pipe.subject(sid)
        sid += subject_sources.SOURCES[entry["source"]].count(entry)


def make_plan(cfg: dict) -> dict:
    from synthex._version import __version__

    return {
        "format": ds.FORMAT,
        "format_version": ds.FORMAT_VERSION,
        "synthex_version": __version__,
        "seed": cfg["seed"],
        "config": cfg,
        "shards": [
            {"file": f"shards/{ds.shard_name(k)}", "first_index": a, "count": c}
            for k, (a, c) in enumerate(ds.shard_ranges(cfg["n"], cfg["dataset"]["shard_size"]))
        ],
    }


def render_dataset(
    cfg: dict,
    out,
    resume: bool = False,
    workers: int | None = None,
    ray_address: str | None = None,
    progress: bool = True,
    ray_options: dict | None = None,
) -> dict:
    """Render the dataset of a resolved config into ``out``; returns the manifest."""
    out = Path(out)
    if cfg["n"] < 1:
        raise ds.DatasetError("nothing to render: n must be >= 1")
    preflight(cfg)
    done = set(ds.prepare_output(out, make_plan(cfg), resume))
    ranges = ds.shard_ranges(cfg["n"], cfg["dataset"]["shard_size"])
    jobs = [(k, first, count) for k, (first, count) in enumerate(ranges) if k not in done]
    already = sum(ranges[k][1] for k in done)
    options = {"workers": workers or cfg["dataset"]["workers"], **(ray_options or {})}
    if ray_address is not None:
        executor, options["address"] = EXECUTORS["ray"], ray_address
    else:
        executor = EXECUTORS["processes"]

    with _progress(progress, cfg["n"], already) as advance:
        try:
            for k, arrays in executor(cfg, jobs, options, advance):
                ds.write_shard(out / "shards" / ds.shard_name(k), arrays, ranges[k][0])
        except KeyboardInterrupt:
            n_done = len(list((out / "shards").glob("*.h5")))
            raise RenderInterrupted(
                f"interrupted: {n_done} of {len(ranges)} shards are complete in {out}; "
                f"continue with `synthex render ... --out {out} --resume`"
            ) from None
    return ds.finalize(out, cfg)


class _progress:
    """A rich progress bar (samples, samples/s, ETA), or nothing."""

    def __init__(self, enabled: bool, total: int, completed: int):
        self.enabled, self.total, self.completed = enabled, total, completed

    def __enter__(self):
        if not self.enabled:
            return lambda n: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn("rendering"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            transient=False,
        )
        self.bar.__enter__()
        self.task = self.bar.add_task("render", total=self.total, completed=self.completed, rate="")

        def advance(n: int):
            self.bar.advance(self.task, n)
            speed = self.bar.tasks[0].speed
            self.bar.update(self.task, rate=f"{speed:.2f} samples/s" if speed else "")

        return advance

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.__exit__(*exc)
        return False
