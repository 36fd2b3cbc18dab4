"""Resumable benchmark steps: each step runs once per run folder, and a rerun skips it.

A benchmark is a list of named steps (render a source, split the target, fit a GAN,
train a model ...). Each step has a **key**: a JSON mapping of everything its
output depends on (its settings and the keys of the steps it reads from). When a
step finishes, ``RUN/steps/<name>.json`` is written (atomically, last) with the
key, the step's result (a small JSON summary) and its duration. A later run of
the same benchmark in the same folder

* skips a step whose record exists with the same key and whose outputs exist
  (``[skip]`` in the progress output);
* refuses, with one error naming the step and the keys that differ, a step whose
  record holds another key (the folder belongs to a run with other settings);
* runs again a step without a record (never started, interrupted or failed); the
  step itself continues what it can (a render resumes its shards, training its
  ``last.pt``, a GAN its checkpoint).

A step that raises is reported as ``step '<name>' failed: <error>`` (a
:class:`BenchError`), so the user knows which one to look at.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path


class BenchError(ValueError):
    """A benchmark cannot run or a step failed (one line, naming the step or the bad input)."""


def fingerprint(key) -> str:
    """sha256 of the canonical JSON form of ``key``."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def _differences(old, new, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            where = f"{prefix}.{k}" if prefix else str(k)
            if k not in old or k not in new:
                out.append(where)
            else:
                out += _differences(old[k], new[k], where)
        return out
    return [] if old == new else [prefix or "(value)"]


def write_json_atomic(path: Path, data) -> None:
    """:func:`synthex.dataset.write_json_atomic` into a folder made if missing; unknown objects as text."""
    from synthex.dataset import write_json_atomic as write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write(path, data, default=str)


class Steps:
    """Runs the steps of one benchmark run folder ``root`` (see the module docstring).

    ``total``: the number of steps planned (for the ``[k/total]`` progress prefix);
    ``log``: where progress lines go (``None``: silent).
    """

    def __init__(self, root, total: int | None = None, log: Callable[[str], None] | None = print):
        self.root = Path(root)
        self.dir = self.root / "steps"
        self.total = total
        self.log = log or (lambda _line: None)
        self.ran: list[str] = []
        self.skipped: list[str] = []
        self._k = 0

    def record_path(self, name: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        return self.dir / f"{safe}.json"

    def record(self, name: str) -> dict | None:
        p = self.record_path(name)
        if not p.is_file():
            return None
        try:
            return json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            return None  # a damaged record: the step runs again

    def run(self, name: str, key: dict, fn: Callable[[], dict], outputs=(), what: str = "") -> dict:
        """Run step ``name`` (``fn() -> result dict``) unless a record with the same ``key`` and
        existing ``outputs`` says it is done; returns the step's result."""
        self._k += 1
        prefix = f"[{self._k}/{self.total}]" if self.total else f"[{self._k}]"
        fp = fingerprint(key)
        rec = self.record(name)
        if rec is not None:
            if rec.get("fingerprint") != fp:
                diff = _differences(rec.get("key"), json.loads(json.dumps(key, default=str)))
                raise BenchError(
                    f"step {name!r} in {self.root} was run with other settings (differs in: "
                    f"{', '.join(diff[:6]) or 'its key'}); use another --out for these settings")
            if all(Path(p).exists() for p in outputs):
                self.skipped.append(name)
                self.log(f"{prefix} skip {name}: done ({rec.get('seconds', 0):.0f} s when it ran)")
                return rec.get("result") or {}
        self.log(f"{prefix} {name}" + (f": {what}" if what else ""))
        t0 = time.perf_counter()
        try:
            result = fn() or {}
        except BenchError as e:
            if str(e).startswith("step "):
                raise
            raise BenchError(f"step {name!r} failed: {e}") from e
        except KeyboardInterrupt:
            raise
        except Exception as e:  # one line naming the step; the cause stays chained for --debug
            raise BenchError(f"step {name!r} failed: {type(e).__name__}: {e}") from e
        seconds = time.perf_counter() - t0
        write_json_atomic(self.record_path(name), {"step": name, "fingerprint": fp, "key": key, "result": result,
                                                    "seconds": seconds, "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
        self.ran.append(name)
        self.log(f"{prefix} done {name} in {seconds:.0f} s")
        return result
