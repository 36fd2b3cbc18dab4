"""Render a whole dataset: plan, shards (serially, in local processes or on Ray), manifest.

    manifest = render_dataset(cfg, out="data/hip", workers=2)           # local processes
    manifest = render_dataset(cfg, out="data/hip", ray_address="local")  # Ray (see synthex.ray_runner)

Shards are rendered by workers and written by this process only (workers need
no shared filesystem): each shard goes to ``shards/.NNNNN.h5.tmp`` and is
renamed when complete (its sha256 recorded in ``checksums.json``), so an
interrupted run keeps every finished shard and ``resume=True`` renders only the
missing or damaged ones. Executors are registry entries (``EXECUTORS``) yielding
``(shard, arrays)`` as shards complete.

Crash safety:

* one render at a time per output folder (a ``filelock`` on ``OUT/.synthex.lock``);
* SIGINT, SIGTERM (what schedulers send on pre-emption) and SIGHUP stop the run
  the same way: shards in flight are abandoned, worker processes are terminated,
  finished shards are kept and the message says how to ``--resume``;
* worker processes die with their parent even when it is SIGKILLed (Linux
  ``PR_SET_PDEATHSIG``; elsewhere a watchdog thread polls the parent);
* a run that fails (a geometry error, disk full, ...) before any shard is complete
  leaves nothing behind; after that, it keeps the finished shards for ``--resume``.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

from projectors.projector import cpu_threads, set_cpu_threads
from synthex import dataset as ds
from synthex.pipeline import sample_range


class RenderInterrupted(RuntimeError):
    """The run was interrupted (SIGINT, SIGTERM, SIGHUP); finished shards are kept and ``--resume`` continues."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


class _Stop(BaseException):
    """Raised in the main thread by the SIGTERM/SIGHUP handler (like KeyboardInterrupt for SIGINT)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP) if hasattr(signal, "SIGHUP") else (signal.SIGTERM,)
#: stop signals received during the current render: a library with a bare ``except:`` (SpekPy's file
#: reader) may turn the handler's :class:`_Stop` into its own error; the render is still an interruption
_RECEIVED: list[int] = []


@contextlib.contextmanager
def _stop_on_signals():
    """Turn SIGTERM/SIGHUP into :class:`_Stop` in the main thread while rendering (no-op elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        _RECEIVED.append(signum)
        raise _Stop(signum)

    def interrupt(signum, frame):  # Ctrl-C as Python's default does, but recorded (see _RECEIVED)
        _RECEIVED.append(signum)
        raise KeyboardInterrupt

    _RECEIVED.clear()
    old = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    old[signal.SIGINT] = signal.signal(signal.SIGINT, interrupt)
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def _die_with_parent(parent: int) -> None:
    """Worker initializer: exit when the parent dies (even by SIGKILL); ignore Ctrl-C (the parent
    stops workers itself, so a terminal's SIGINT to the whole group cannot leave half-written state)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            PR_SET_PDEATHSIG = 1
            if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
                if os.getppid() != parent:  # the parent died before prctl took effect
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass

    def watch():  # portable fallback: poll for re-parenting
        import time

        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="synthex-parent-watch").start()


def _terminate_workers(ex: ProcessPoolExecutor) -> None:
    """Stop every worker of ``ex`` now (SIGTERM, then SIGKILL after a grace period); shards in flight are abandoned."""
    procs = list((getattr(ex, "_processes", None) or {}).values())
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout=5)
        if p.is_alive():
            p.kill()
            p.join(timeout=5)


Job = tuple[int, int, int]  # (shard, first_index, count)


def run_serial(cfg, jobs: list[Job], options: dict, advance: Callable[[int], None]) -> Iterator[tuple[int, dict]]:
    for k, first, count in jobs:
        yield k, sample_range(cfg, first, count, progress=advance)


def _worker_threads(threads: int) -> None:
    """Worker-process initializer: ``threads`` for the projector, torch and BLAS/OpenMP pools.

    The BLAS pool is limited with threadpoolctl: by the time an initializer runs, the spawned worker
    has imported numpy and OpenBLAS has read its thread count, so the environment variables alone
    (kept for the worker's own subprocesses) do not reach it. Left at every core, two workers'
    BLAS threads wait on one another: a 64 x 64 -> 256 x 256 matrix upsampling took 24-35 ms
    instead of 0.7 ms on a loaded 2-core machine."""
    from threadpoolctl import threadpool_limits

    for var in ("SYNTHEX_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    threadpool_limits(threads)
    set_cpu_threads(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def _worker_init(parent: int, threads: int) -> None:
    _die_with_parent(parent)
    _worker_threads(threads)


def run_processes(cfg, jobs: list[Job], options: dict, advance) -> Iterator[tuple[int, dict]]:
    workers = max(1, int(options.get("workers", 1)))
    if workers == 1 or len(jobs) <= 1:
        yield from run_serial(cfg, jobs, options, advance)
        return
    # spawn: Warp and torch hold threads; forking a process that has them is unsafe
    ctx = multiprocessing.get_context("spawn")
    # each worker dies with this process and gets its share of the cores (one projector splitting rows
    # over every core per worker would leave nothing for the other workers to gain)
    ex = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                             initargs=(os.getpid(), max(1, cpu_threads() // workers)))
    finished = False
    try:
        pending = {ex.submit(sample_range, cfg, first, count): (k, count) for k, first, count in jobs[: 2 * workers]}
        queue = list(jobs[2 * workers :])
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                k, count = pending.pop(fut)
                arrays = fut.result()
                advance(count)
                if queue:
                    nk, nfirst, ncount = queue.pop(0)
                    pending[ex.submit(sample_range, cfg, nfirst, ncount)] = (nk, ncount)
                yield k, arrays
        finished = True
    finally:
        if not finished:  # interrupted, or a shard failed: abandon the shards in flight
            _terminate_workers(ex)
        ex.shutdown(wait=finished, cancel_futures=True)


def run_ray(cfg, jobs: list[Job], options: dict, advance) -> Iterator[tuple[int, dict]]:
    from synthex.ray_runner import run_ray_jobs

    yield from run_ray_jobs(cfg, jobs, options, advance)


# name -> generator of (shard, arrays)
EXECUTORS = {"serial": run_serial, "processes": run_processes, "ray": run_ray}


def preflight(cfg) -> None:
    """Read every CT of the config and check it has what the task needs, so that a missing file, an
    unreadable CT or a CT without the task's anatomy fails before anything is written."""
    from synthex import subjects as subject_sources

    for entry in cfg.subjects:
        subject_sources.check_entry(entry, cfg.task_spec)


def check_device(cfg) -> None:
    """Fail before anything is written when the configured device does not exist (``--device cuda`` without a GPU)."""
    if cfg.projector.device in ("cpu", "auto"):
        return  # these always resolve (without importing Warp here)
    from projectors.projector import DeviceError, resolve_device

    try:
        resolve_device(cfg.projector.device)
    except DeviceError as e:
        raise ds.DatasetError(f"projector.device / --device: {e}") from None


def make_plan(cfg) -> dict:
    from synthex._version import __version__

    return {
        "format": ds.FORMAT,
        "format_version": ds.FORMAT_VERSION,
        "synthex_version": __version__,
        "seed": cfg.seed,
        "plan_id": ds.plan_id(cfg),
        "config": cfg.to_json(),
        "shards": [
            {"file": f"shards/{ds.shard_name(k)}", "first_index": a, "count": c}
            for k, (a, c) in enumerate(ds.shard_ranges(cfg.n, cfg.dataset.shard_size))
        ],
    }


def render_dataset(
    cfg,
    out,
    resume: bool = False,
    workers: int | None = None,
    ray_address: str | None = None,
    progress: bool = True,
    ray_options: dict | None = None,
) -> dict:
    """Render the dataset of a resolved config into ``out``; returns the manifest."""
    out = Path(out)
    if cfg.n < 1:
        raise ds.DatasetError("nothing to render: n must be >= 1")
    check_device(cfg)
    preflight(cfg)
    created = _make_folder(out)
    lock = _lock(out, created)
    try:
        return _render_locked(cfg, out, resume, workers, ray_address, progress, ray_options)
    finally:
        lock.release()
        # the lock file goes too (a second render never waits on it: it is refused at once, so
        # removing the file cannot let two renders in)
        (out / ds.LOCK_NAME).unlink(missing_ok=True)
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()


def _make_folder(out: Path) -> bool:
    """Create ``out`` (and its parents); True when this call created it."""
    try:
        if out.exists() and not out.is_dir():
            raise ds.DatasetError(f"output {out} exists and is not a folder")
        created = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        return created
    except PermissionError as e:
        raise ds.DatasetError(f"cannot write the dataset to {out}: permission denied ({e.filename})") from None
    except OSError as e:
        raise ds.DatasetError(f"cannot write the dataset to {out}: {e.strerror} ({e.filename})") from None


def _lock(out: Path, created: bool):
    from filelock import FileLock, Timeout

    lock = FileLock(out / ds.LOCK_NAME, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise ds.DatasetError(
            f"another synthex render is writing to {out} (it holds {out / ds.LOCK_NAME}); "
            "wait for it to finish, or choose another --out"
        ) from None
    except OSError as e:
        if created:
            out.rmdir()
        raise ds.DatasetError(f"cannot lock {out} for writing: {e.strerror or e}") from None
    return lock


def _render_locked(cfg, out: Path, resume, workers, ray_address, progress, ray_options) -> dict:
    plan = make_plan(cfg)
    ranges = ds.shard_ranges(cfg.n, cfg.dataset.shard_size)
    done = set(ds.prepare_output(out, plan, resume))
    started_with = len(done)
    jobs = [(k, first, count) for k, (first, count) in enumerate(ranges) if k not in done]
    already = sum(ranges[k][1] for k in done)
    options = {"workers": workers or cfg.dataset.workers, **(ray_options or {})}
    if ray_address is not None:
        executor, options["address"] = EXECUTORS["ray"], ray_address
    else:
        executor = EXECUTORS["processes"]

    def n_complete() -> int:
        return started_with + written

    written = 0
    try:
        with _stop_on_signals(), _progress(progress, cfg.n, already) as advance:
            with contextlib.closing(executor(cfg, jobs, options, advance)) as shards:
                for k, arrays in shards:
                    rel = f"shards/{ds.shard_name(k)}"
                    try:
                        ds.write_shard(out / rel, arrays, ranges[k][0], plan["plan_id"], out=out)
                    except (OSError, RuntimeError) as e:  # h5py reports failed writes as RuntimeError
                        raise ds.DatasetError(f"cannot write shard {out / rel}: {_write_error(e)}") from None
                    written += 1
        return ds.finalize(out, cfg)
    except BaseException as e:
        if isinstance(e, (KeyboardInterrupt, _Stop)) or _RECEIVED:  # a stop signal, whatever it became
            signum = e.signum if isinstance(e, _Stop) else _RECEIVED[0] if _RECEIVED else signal.SIGINT
            raise RenderInterrupted(
                f"interrupted ({signal.Signals(signum).name}): {n_complete()} of {len(ranges)} shards are "
                f"complete in {out}; continue with `synthex render ... --out {out} --resume`",
                signum,
            ) from None
        if n_complete() == 0:  # nothing worth keeping: leave nothing that blocks a fresh run
            ds._remove_own_files(out)
        elif isinstance(e, Exception):
            note = (
                f" ({n_complete()} of {len(ranges)} shards are complete in {out} and kept: fix the cause and "
                f"continue with `synthex render ... --out {out} --resume`, or delete the folder)"
            )
            if isinstance(e, ds.DatasetError):
                raise ds.DatasetError(str(e) + note) from None
            e.add_note(note.strip())
        raise


def _write_error(e: BaseException) -> str:
    """One line for a failed write (h5py's messages run over several HDF5 stack frames)."""
    import errno

    if getattr(e, "errno", None) == errno.ENOSPC or "No space left on device" in str(e):
        return "No space left on device (the disk is full)"
    if getattr(e, "strerror", None):
        return str(e.strerror)
    return " ".join(str(e).split())[:300] or type(e).__name__


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
