"""The ``synthex render`` configuration: a YAML file, validated against a schema.

Every key has a default, so an empty file (or no file) is a valid config: the
built-in default, a small hip dataset from procedural pelvis phantoms. A key
the schema does not know, a value of the wrong type or outside its range gets
one :class:`ConfigError` naming the key (``views.alpha_deg``), and a typo gets
the closest known key as a suggestion.

    cfg = load_config("hip.yaml", overrides={"n": 100, "image.size": 128})
    cfg["views"]["alpha_deg"]        # [-25.0, 25.0]

The resolved config is a plain JSON-serializable dict; it is what ``plan.json``
and ``manifest.json`` store, and sample ``i`` of a dataset is a pure function of
(resolved config, seed, i).
"""

from __future__ import annotations

import copy
import difflib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """An invalid render configuration; the message names the offending key."""


# ---------------------------------------------------------------------------
# schema building blocks


@dataclass(frozen=True)
class Key:
    """One leaf of the schema: a default, a parser that checks and normalizes a
    value (raising ``ValueError`` with a short reason), and a one-line doc."""

    default: Any
    parse: Callable[[Any], Any]
    doc: str
    runtime: bool = False  # True: does not change what is rendered (not compared on --resume)


@dataclass(frozen=True)
class Section:
    keys: dict
    doc: str = ""


def _number(kind: type, lo=None, hi=None, lo_open=False, allow_none=False):
    def parse(v):
        if v is None and allow_none:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"expected a number, got {v!r}")
        if kind is int and (isinstance(v, float) and not v.is_integer()):
            raise ValueError(f"expected a whole number, got {v!r}")
        v = kind(v)
        if not math.isfinite(v):
            raise ValueError(f"expected a finite number, got {v!r}")
        if lo is not None and (v <= lo if lo_open else v < lo):
            raise ValueError(f"must be {'>' if lo_open else '>='} {lo}, got {v}")
        if hi is not None and v > hi:
            raise ValueError(f"must be <= {hi}, got {v}")
        return v

    return parse


def _range(lo=None, hi=None):
    """A closed interval ``[min, max]`` (a single number means a fixed value)."""
    element = _number(float, lo, hi)

    def parse(v):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            v = [v, v]
        if not isinstance(v, (list, tuple)) or len(v) != 2:
            raise ValueError(f"expected [min, max], got {v!r}")
        a, b = element(v[0]), element(v[1])
        if b < a:
            raise ValueError(f"min must not exceed max, got [{a}, {b}]")
        return [a, b]

    return parse


def _choice(*choices):
    def parse(v):
        if v not in choices:
            close = difflib.get_close_matches(str(v), [str(c) for c in choices], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"must be one of {list(choices)}, got {v!r}{hint}")
        return v

    return parse


def _string(allow_none=True):
    def parse(v):
        if v is None and allow_none:
            return None
        if not isinstance(v, (str, Path)):
            raise ValueError(f"expected a string, got {v!r}")
        return str(v)

    return parse


def _bool(v):
    if not isinstance(v, bool):
        raise ValueError(f"expected true or false, got {v!r}")
    return v


def _size(v):
    """Detector pixels: one number (square) or [width, height]."""
    px = _number(int, 16, 4096)
    if isinstance(v, (list, tuple)):
        if len(v) != 2:
            raise ValueError(f"expected a pixel count or [width, height], got {v!r}")
        return [px(v[0]), px(v[1])]
    n = px(v)
    return [n, n]


def _string_list(v):
    if v is None:
        return None
    if not isinstance(v, (list, tuple)) or not all(isinstance(s, str) and s for s in v):
        raise ValueError(f"expected a list of names, got {v!r}")
    if len(set(v)) != len(v):
        raise ValueError(f"names must be unique, got {v!r}")
    return list(v)


def _passthrough(v):
    return v


TASK_NAMES = ("hip", "tool", "covid", "custom")
IMAGE_PRESETS = ("none", "mild", "strong")

SCHEMA = Section(
    {
        "task": Key("hip", _choice(*TASK_NAMES), "what the dataset is for: sets the class and landmark names"),
        "seed": Key(0, _number(int, 0, 2**63 - 1), "run seed; sample i is a pure function of (config, seed, i)"),
        "n": Key(
            None,
            _number(int, 1, 10**8, allow_none=True),
            "number of images (default: views.per_subject x number of subjects, or 48)",
        ),
        "output": Key(None, _string(), "dataset folder (the --out flag overrides it)", runtime=True),
        "classes": Key(None, _string_list, "class names without background (default: the task's)"),
        "landmarks": Key(None, _string_list, "landmark names (default: the task's)"),
        "subjects": Key(
            None,
            _passthrough,
            "list of subject sources: {source: ct, path: ...} or {source: PHANTOM, count: N} "
            "(default: the task's built-in phantom source)",
        ),
        "image": Section(
            {
                "size": Key([64, 64], _size, "detector pixels: N or [width, height]"),
                "pixel_size_mm": Key(
                    None,
                    _number(float, 0.0, 50.0, lo_open=True, allow_none=True),
                    "detector pixel pitch in mm (default: carm.detector_mm / width)",
                ),
            }
        ),
        "carm": Section(
            {
                "sdd": Key(1020.0, _number(float, 100.0, 5000.0), "source-detector distance, mm"),
                "sid": Key(530.0, _number(float, 50.0, 5000.0), "source-isocentre distance, mm"),
                "detector_mm": Key(298.0, _number(float, 10.0, 1000.0), "detector width, mm (sets the pitch)"),
            }
        ),
        "views": Section(
            {
                "per_subject": Key(
                    None,
                    _number(int, 1, 10**7, allow_none=True),
                    "views per subject (default: n / number of subjects, rounded up)",
                ),
                "alpha_deg": Key([-25.0, 25.0], _range(-180.0, 180.0), "LAO/RAO angle range, degrees"),
                "beta_deg": Key([-15.0, 15.0], _range(-90.0, 90.0), "cranial/caudal angle range, degrees"),
                "target_jitter_mm": Key(
                    15.0, _number(float, 0.0, 500.0), "isocentre offset from the subject's target, uniform per axis, mm"
                ),
            }
        ),
        "physics": Section(
            {
                "model": Key(
                    "spectral", _passthrough, "physics model (registry name, see synthex.pipeline.PHYSICS)"
                ),
                "energy_kev": Key(60.0, _number(float, 1.0, 500.0), "energy of the monochromatic model, keV"),
                "kvp": Key([70.0, 120.0], _range(20.0, 150.0), "tube voltage range, kV"),
                "filtration_mm_al": Key([2.5, 4.5], _range(0.0, 20.0), "added filtration range, mm Al"),
                "photons_per_pixel": Key(
                    [2.0e4, 3.0e5], _range(1.0, 1.0e9), "dose: unattenuated photons per pixel (log-uniform)"
                ),
                "scatter_fraction": Key([0.0, 0.3], _range(0.0, 0.95), "scatter-to-primary strength range"),
                "blur_px": Key([0.0, 1.0], _range(0.0, 10.0), "detector blur (Gaussian sigma) range, pixels"),
                "electronic_noise": Key(
                    [0.0, 0.005],
                    _range(0.0, 1.0),
                    "electronic noise std range, in units of 1000 detected X-ray quanta (0.001 = one quantum)",
                ),
                "mode": Key("exact", _choice("exact", "trilinear"), "projector mode"),
                "device": Key("auto", _string(allow_none=False), "cpu, cuda, cuda:N or auto", runtime=True),
            }
        ),
        "randomization": Section(
            {
                "image": Key("strong", _choice(*IMAGE_PRESETS), "image-level preset (SyntheX strong, mild, none)"),
                "store_raw": Key(True, _bool, "also store images before image randomization (for replay)"),
                "density_jitter": Key(0.05, _number(float, 0.0, 0.5), "per-material relative density jitter, +/-"),
                "threshold_jitter_hu": Key(
                    20.0, _number(float, 0.0, 100.0), "HU material threshold jitter per subject, +/-"
                ),
            }
        ),
        "labels": Section(
            {
                "min_path_mm": Key(
                    0.0, _number(float, 0.0, 100.0), "a class covers a pixel when its path length exceeds this"
                ),
            }
        ),
        "dataset": Section(
            {
                "shard_size": Key(16, _number(int, 1, 100000), "samples per shard file"),
                "workers": Key(1, _number(int, 1, 1024), "local worker processes", runtime=True),
            }
        ),
    }
)

DEFAULT_N = 48

# CLI flags that override config keys
FLAG_KEYS = {
    "task": "task",
    "n": "n",
    "size": "image.size",
    "seed": "seed",
    "out": "output",
    "workers": "dataset.workers",
}


# ---------------------------------------------------------------------------
# validation


def _suggest(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(sorted(known))}"


def _validate_section(section: Section, data, prefix: str) -> dict:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping of keys, got {data!r}")
    for name in data:
        if name not in section.keys:
            where = f"{prefix}.{name}" if prefix else str(name)
            raise ConfigError(f"unknown config key {where!r}{_suggest(str(name), section.keys)}")
    out = {}
    for name, spec in section.keys.items():
        where = f"{prefix}.{name}" if prefix else name
        if isinstance(spec, Section):
            out[name] = _validate_section(spec, data.get(name), where)
        else:
            value = data.get(name, copy.deepcopy(spec.default))
            try:
                out[name] = spec.parse(value)
            except ValueError as e:
                raise ConfigError(f"config key {where!r}: {e}") from None
    return out


def _set_dotted(data: dict, dotted: str, value) -> None:
    parts = dotted.split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set {dotted!r}: {p!r} is not a mapping")
    node[parts[-1]] = value


def resolve_config(data: dict | None = None, overrides: dict | None = None, base_dir: Path | None = None) -> dict:
    """Validate a config mapping (+ dotted-key ``overrides``) into a resolved config.

    Relative paths of CT subjects are resolved against ``base_dir`` (the
    config file's folder). Raises :class:`ConfigError` naming the key.
    """
    from synthex import subjects as subject_sources
    from synthex.tasks import resolve_task

    data = copy.deepcopy(data) if data is not None else {}
    if not isinstance(data, dict):
        raise ConfigError(f"the config must be a mapping of keys, got {type(data).__name__}")
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(data, dotted, value)
    from synthex.tasks import with_task_defaults

    data = with_task_defaults(data.get("task", SCHEMA.keys["task"].default), data)
    cfg = _validate_section(SCHEMA, data, "")

    from synthex.pipeline import PHYSICS

    if cfg["physics"]["model"] not in PHYSICS:
        raise ConfigError(
            f"config key 'physics.model': unknown model {cfg['physics']['model']!r}; "
            f"available: {sorted(PHYSICS)}{_suggest(str(cfg['physics']['model']), PHYSICS)}"
        )
    if cfg["carm"]["sid"] >= cfg["carm"]["sdd"]:
        raise ConfigError(
            f"config key 'carm.sid': the isocentre must lie between source and detector "
            f"(sid {cfg['carm']['sid']} >= sdd {cfg['carm']['sdd']})"
        )
    cfg["classes"], cfg["landmarks"] = resolve_task(cfg["task"], cfg["classes"], cfg["landmarks"])
    cfg["subjects"] = subject_sources.resolve_subjects(cfg["subjects"], cfg["task"], base_dir)
    n_subjects = subject_sources.count_subjects(cfg["subjects"])
    per, n = cfg["views"]["per_subject"], cfg["n"]
    if n is None:
        n = per * n_subjects if per is not None else DEFAULT_N
    if per is None:
        per = -(-n // n_subjects)
    if n > per * n_subjects:
        raise ConfigError(f"config key 'n': {n} images need more than {n_subjects} subjects x views.per_subject {per}")
    cfg["n"], cfg["views"]["per_subject"] = n, per
    json.dumps(cfg)  # resolved configs are JSON-serializable by construction
    return cfg


def read_yaml(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, got {type(data).__name__}")
    return data


def load_config(path=None, overrides: dict | None = None) -> dict:
    """Read, validate and resolve a YAML config (``None``: the built-in default)."""
    if path is None:
        return resolve_config({}, overrides)
    return resolve_config(read_yaml(path), overrides, base_dir=Path(path).resolve().parent)


def rendering_config(cfg: dict) -> dict:
    """The config without runtime-only keys (output, workers, device): what
    determines the samples. Two runs may resume each other iff these match."""

    def strip(section: Section, data: dict) -> dict:
        out = {}
        for name, value in data.items():
            spec = section.keys.get(name)
            if isinstance(spec, Section):
                out[name] = strip(spec, value)
            elif spec is None or not spec.runtime:
                out[name] = value
        return out

    return strip(SCHEMA, cfg)


def to_yaml(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None)


def schema_reference() -> list[tuple[str, Any, str]]:
    """(dotted key, default, doc) for every key: the README's config reference."""
    rows = []

    def walk(section: Section, prefix: str):
        for name, spec in section.keys.items():
            where = f"{prefix}.{name}" if prefix else name
            if isinstance(spec, Section):
                walk(spec, where)
            else:
                rows.append((where, spec.default, spec.doc))

    walk(SCHEMA, "")
    return rows
