"""Scale-out on Ray: each shard is one Ray task; the driver writes the shards.

``synthex render --ray`` starts a local Ray with 2 CPUs (``ray.init(num_cpus=2)``);
``--ray ADDRESS`` joins a running cluster (``ray://host:10001`` or ``auto``).
Sample ``i`` is a pure function of (config, seed, i), so the output equals a
local run byte for byte, whichever worker renders which shard. A task whose
worker dies is retried by Ray (``max_retries``); since a task returns its
arrays and only the driver writes (atomically, once per shard), a retry can
neither duplicate nor lose samples. Workers need synthex installed (the same
version) but no shared filesystem.

Fault injection for tests: with ``SYNTHEX_RAY_KILL_ONCE=/some/marker`` in the
environment, the first task to find the marker absent creates it and SIGKILLs
its own worker half-way through its shard.
"""

from __future__ import annotations

import os
import signal


class RayError(RuntimeError):
    """Ray is missing or the cluster cannot be reached."""


def _render_task(cfg: dict, first: int, count: int) -> dict:
    from synthex.pipeline import sample_range

    marker = os.environ.get("SYNTHEX_RAY_KILL_ONCE")
    if marker and count > 1:
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pass
        else:
            os.close(fd)
            sample_range(cfg, first, count // 2)  # some work, then die mid-shard
            os.kill(os.getpid(), signal.SIGKILL)
    return sample_range(cfg, first, count)


def _ray():
    try:
        import ray
    except ImportError:
        raise RayError("--ray needs the 'ray' extra: pip install 'synthex-xray[ray]'") from None
    return ray


def init_ray(address: str | None = "local", num_cpus: int = 2):
    """Start (``"local"``/``None``) or join (an address) Ray; returns (ray, started_here)."""
    ray = _ray()
    if ray.is_initialized():
        return ray, False
    try:
        if address in (None, "", "local"):
            ray.init(
                num_cpus=num_cpus,
                include_dashboard=False,
                log_to_driver=False,
                runtime_env={"env_vars": _forwarded_env()},
            )
        else:
            ray.init(address=address, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise RayError(f"cannot start or reach Ray at {address!r}: {e}") from None
    return ray, True


def _forwarded_env() -> dict:
    keep = ("SYNTHEX_RAY_KILL_ONCE", "WARP_CACHE_PATH", "OMP_NUM_THREADS")
    return {k: os.environ[k] for k in keep if k in os.environ}


def run_ray_jobs(cfg: dict, jobs, options: dict, advance):
    """Yield ``(shard, arrays)`` as Ray tasks complete (at most ``max_in_flight`` at a time)."""
    ray, started = init_ray(options.get("address", "local"), int(options.get("num_cpus", 2)))
    try:
        task = ray.remote(num_cpus=1, max_retries=int(options.get("max_retries", 3)))(_render_task)
        queue = list(jobs)
        limit = int(options.get("max_in_flight", 8))
        refs = {}

        def submit():
            while queue and len(refs) < limit:
                k, first, count = queue.pop(0)
                refs[task.remote(cfg, first, count)] = (k, count)

        submit()
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            k, count = refs.pop(ready[0])
            try:
                arrays = ray.get(ready[0])
            except ray.exceptions.RayTaskError as e:  # the task raised: re-raise the user-facing cause
                raise e.as_instanceof_cause() from None
            advance(count)
            submit()
            yield k, arrays
    finally:
        if started:
            ray.shutdown()


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


__all__ = ["RayError", "init_ray", "ray_available", "run_ray_jobs"]
