"""Sample ``i`` of a dataset as a pure function of (resolved config, seed, i).

    pipe = Pipeline(cfg)            # cfg: synthex.config.RenderConfig
    s = pipe.sample(17)             # dict of arrays + the JSON record of every drawn parameter

The stages follow the data flow, each a function of the previous ones' outputs:

    subject -> view -> projection -> physics -> labels -> record

Randomness comes from two generators, each keyed by the run seed and an index
(never the global RNG, never the worker or the order of work):

* subject ``k``: ``default_rng([SUBJECT_STREAM, seed, k])`` draws the subject's
  shape and its HU-threshold jitter (a subject's projector is built once);
* sample ``i``: ``default_rng([SAMPLE_STREAM, seed, i])`` draws the view, the
  tool pose (if any), the physics parameters (``domain_randomization.simulation``),
  the density jitter, the seed of the physics noise and, with the Monte Carlo
  scatter model, the seed of its photons (``ScatterParams.seed``), in that order
  (the last draw comes after all others, so a config differing only in its
  scatter model renders the same views, physics and noise).

Everything else is deterministic. The stored image is the one the physics and
display processing made: image-level randomization (SyntheX's strong
augmentation) is applied once, on the fly, by training.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from domain_randomization import simulation as sim
from projectors.ct_prep import CTPrepParams, collimate, collimation_field
from projectors.geometry import Camera, geometry_preset
from projectors.labels import bounding_box, class_path_lengths, in_field, label_image, project_landmarks
from projectors.materials import DEFAULT_HU_MATERIALS, MaterialModel
from projectors.physics import patient_geometry, simulate
from projectors.physics.simulate import detector_pitch
from projectors.projector import Projector, SceneVolume
from synthex import subjects as subject_sources
from synthex._version import __version__

SUBJECT_STREAM = 0x5B1EC7
SAMPLE_STREAM = 0x5A391E


class PipelineError(ValueError):
    """A sample cannot be rendered from this config (a clear, user-facing error)."""


# ---------------------------------------------------------------------------
# labels (projectors.labels does the work; this arranges it into the dataset's arrays)


def class_structures(task, structures: dict) -> set[str]:
    """The structure names whose path lengths make the task's foreground classes (``structures`` maps a
    class to its structures; a class without an entry is its own structure, as in :func:`make_labels`)."""
    return {s for c in task.foreground for s in structures.get(c, [c])}


def make_labels(path_length: dict, structures: dict, task, camera: Camera, landmarks: dict, min_path_mm: float,
                field=None) -> dict:
    """The dataset's label arrays of one view.

    ``labels`` (H, W) uint8: one class per pixel, overlaps to the task's priority
    classes, then to the longest path; ``masks`` (C, H, W) uint8: class path
    length > ``min_path_mm`` (may overlap); ``boxes`` (C, 4): outer pixel edges of
    each mask (NaN if empty); ``landmarks`` (L, 2) ``camera.project`` of each
    landmark (NaN where the subject has none or it lies behind the source) and
    ``landmark_visible`` (L,) = on the detector (and inside the collimated ``field`` when one is given).
    """
    names = task.foreground
    paths = class_path_lengths(path_length, {c: structures.get(c, [c]) for c in names}, camera.shape)
    masks = np.stack([paths[c] > min_path_mm for c in names]).astype(np.uint8)
    labels = label_image(paths, dict(enumerate(names, start=1)), min_path_mm, priority=task.priority)
    boxes = np.array([bounding_box(m) or (np.nan,) * 4 for m in masks], dtype=np.float32).reshape(len(names), 4)
    uv = np.full((len(task.landmarks), 2), np.nan, dtype=np.float32)
    visible = np.zeros(len(task.landmarks), dtype=np.uint8)
    have = [k for k, n in enumerate(task.landmarks) if n in landmarks and np.all(np.isfinite(landmarks[n]))]
    if have:
        pts = project_landmarks(camera, {task.landmarks[k]: landmarks[task.landmarks[k]] for k in have})
        uv[have] = pts.uv
        seen = pts.visible
        if field is not None:  # behind the collimator a landmark is not in the image
            seen = seen & in_field(pts.uv, field)
        visible[have] = seen
    return {"labels": labels.astype(np.uint8), "masks": masks, "boxes": boxes, "landmarks": uv, "landmark_visible": visible}


def _binned_spacing(binning: dict | None):
    """Voxel spacing after ``ct_prep.bin_voxels`` when it averaged any blocks, else None."""
    return binning["spacing_after_mm"] if binning and any(f > 1 for f in binning.get("factors", [])) else None


def subject_summary(info: dict) -> dict:
    """What a sample's record says about how its subject was made (compact: it is stored with every image)."""
    out = {}
    prep = info.get("ct_prep")
    if prep:
        c = prep.get("contrast", {})
        out["ct_prep"] = {
            "contrast": c.get("phase"), "blood_replaced": "replaced" in c,
            "metal": {k: prep["metal"][k] for k in ("material", "volume_ml")} if "metal" in prep else None,
            "slices_mm": (prep.get("slices") or {}).get("spacing_after_mm"), "warnings": prep.get("warnings", []),
            "binned_mm": _binned_spacing(prep.get("binning")),
        }
    if info.get("landmarks", {}).get("missing"):
        out["landmarks_missing"] = sorted(info["landmarks"]["missing"])
    if "lesions" in info:
        out["lesion_free"] = bool(info["lesions"].get("lesion_free", False))
    if "deformation" in info:
        out["deformation_targets"] = info["deformation"].get("targets")
    if "tool" in info:
        out["tool"] = info["tool"]["kind"]
    return out


def coverage_shift(camera: Camera, covered: np.ndarray, sid: float, limit: float = 0.35) -> np.ndarray:
    """World shift (mm) of the isocentre that centres the detector on the collimated field a view would get.

    A radiographer centres the beam on the anatomy that is there; when a CT ends inside the field
    (a pelvis CT cut at the femoral heads), the field is moved towards what the CT covers, by at most
    ``limit`` of the field of view, so the task's target stays in the image.
    """
    field = collimation_field(covered)
    if field.all() or not field.any():
        return np.zeros(3)
    rows, cols = np.flatnonzero(field.any(axis=1)), np.flatnonzero(field.any(axis=0))
    h, w = field.shape
    dv = 0.5 * (rows[0] + rows[-1]) - (h - 1) / 2
    du = 0.5 * (cols[0] + cols[-1]) - (w - 1) / 2
    dv, du = (float(np.clip(d, -limit * n, limit * n)) for d, n in ((dv, h), (du, w)))
    K = camera.K
    # a pixel step at the detector is (pitch x sid / sdd) at the isocentre; camera x, y are the image's u, v
    R = camera.world_from_camera.R
    return sid * (du / K[0, 0] * R[:, 0] + dv / K[1, 1] * R[:, 1])


# ---------------------------------------------------------------------------
# the pipeline


class Pipeline:
    """Renders samples of one resolved config; caches the last subjects' projectors."""

    def __init__(self, cfg, cache_size: int = 2):
        self.cfg = cfg
        self.seed = int(cfg.seed)
        self.task = cfg.task_spec
        self.carm = cfg.carm()
        self.arms_raised = geometry_preset(cfg.geometry.preset).arms_raised
        prep = CTPrepParams(**cfg.ct_prep.model_dump())
        if prep.bin_mm == "auto":  # a pixel's footprint at the isocentre: it averages any finer CT detail
            prep = replace(prep, bin_mm=self.carm.isocentre_pixel_mm)
        self.context = subject_sources.BuildContext(task=self.task, ct_prep=prep)
        self.n_subjects = subject_sources.count_subjects(cfg.subjects)
        self._cache: OrderedDict[int, tuple] = OrderedDict()
        self._cache_size = cache_size
        self._transport: dict[int, object] = {}  # subject id -> its Monte Carlo transport scene (built on first use)

    def subject_id(self, index: int) -> int:
        return index // self.cfg.views.per_subject

    # -- stage 1: subject (built once per subject, cached) ---------------------

    def subject(self, subject_id: int):
        """(Subject, Projector, record) of subject ``subject_id`` (cached)."""
        if subject_id in self._cache:
            self._cache.move_to_end(subject_id)
            return self._cache[subject_id]
        entry, instance = subject_sources.locate(self.cfg.subjects, subject_id)
        source = subject_sources.SOURCES[entry.source]
        rng = np.random.default_rng([SUBJECT_STREAM, self.seed, subject_id])
        shape = source.sample(entry, rng)
        jitter = sim.sample_threshold_jitter(rng, len(DEFAULT_HU_MATERIALS.thresholds), self.cfg.materials)
        subject = source.build(entry, shape, self.context, instance)
        scene = []
        for v in subject.volumes:
            v = v if isinstance(v, SceneVolume) else SceneVolume(v, MaterialModel())
            # the jitter moves the thresholds between tissues; a CT's metal threshold (ct_prep) stays
            hu_map = sim.jittered_hu_map(v.materials.hu_map, jitter)
            scene.append(SceneVolume(v.volume, replace(v.materials, hu_map=hu_map), v.priority))
        subject.scene = scene
        projector = Projector(scene, device=self.cfg.projector.device, mode=self.cfg.projector.mode)
        if subject.place is None and not class_structures(self.task, subject.structures) & set(projector.structures):
            raise PipelineError(
                f"subject {subject.name!r} has none of the structures of the classes {list(self.task.foreground)}"
            )
        record = {"source": entry.source, "instance": instance, "name": subject.name, "shape": shape, **jitter,
                  **subject_summary(subject.info)}
        self._cache[subject_id] = (subject, projector, record)
        while len(self._cache) > self._cache_size:
            self._transport.pop(self._cache.popitem(last=False)[0], None)
        return self._cache[subject_id]

    def transport_scene(self, subject_id: int):
        """The Monte Carlo's voxel scene of a cached subject (its volume with the subject's jittered material
        model), built on first use and kept while the subject is cached. A subject of several volumes is a
        clear error (:meth:`projectors.physics.scatter_mc.VoxelScene.from_scene`)."""
        from projectors.physics.scatter_mc import MonteCarloError, VoxelScene

        if subject_id not in self._transport:
            subject = self.subject(subject_id)[0]
            try:
                self._transport[subject_id] = VoxelScene.from_scene(subject.scene)
            except MonteCarloError as e:
                raise PipelineError(f"subject {subject.name!r}: {e}") from None
        return self._transport[subject_id]

    # -- one sample -----------------------------------------------------------

    def sample(self, index: int) -> dict:
        cfg = self.cfg
        if not 0 <= index < cfg.n:
            raise IndexError(f"sample index {index} outside 0..{cfg.n - 1}")
        subject_id = self.subject_id(index)
        subject, projector, subject_record = self.subject(subject_id)
        rng = np.random.default_rng([SAMPLE_STREAM, self.seed, index])

        # stage 2: view (and the pose of per-view parts, such as a tool)
        view = sim.sample_view(rng, cfg.views)
        pose = subject.sample_pose(rng) if subject.sample_pose is not None else None
        placement = subject.place(pose) if pose is not None else None
        target = placement.target if placement is not None and placement.target is not None else subject.target
        camera = sim.view_camera(self.carm, target, view, body=subject.body_points)
        shift, covered = np.zeros(3), None
        if subject.coverage is not None:  # where the CT ends inside the field, centre the beam on what it covers
            covered = subject.coverage.mask(camera, sides=not self.arms_raised)
            shift = coverage_shift(camera, covered, self.carm.sid)
            if np.any(shift):
                target = np.asarray(target, dtype=np.float64) + shift
                camera = sim.view_camera(self.carm, target, view, body=subject.body_points)
                covered = subject.coverage.mask(camera, sides=not self.arms_raised)

        # stage 3: projection (volumes, then meshes), collimated to what the CT covers
        proj = projector.project(camera)
        # only the structures of the task's classes are labelled (a TotalSegmentator map has ~120)
        wanted = class_structures(self.task, subject.structures)
        paths = {k: v for k, v in proj.path_length.items() if k in wanted}
        areal, landmarks = dict(proj.areal_density), dict(subject.landmarks)
        if placement is not None and placement.meshes:
            from projectors.mesh import displaced_areal_density, mesh_path_lengths

            mp = mesh_path_lengths(placement.meshes, camera, device=projector.device)
            anatomy = subject.scene[0]  # the tool takes the place of the anatomy it occupies
            for m, a in displaced_areal_density(anatomy.volume, anatomy.materials, camera, mp).items():
                if m in areal:
                    areal[m] = np.maximum(areal[m] - a, 0.0)
            for m, a in mp.areal_density.items():
                areal[m] = areal[m] + a if m in areal else a
            paths.update(mp.path_length)
            landmarks.update(placement.landmarks)
        field = np.ones(camera.shape, dtype=bool)
        if subject.coverage is not None:
            field = collimation_field(covered)
            areal = collimate(areal, field)
            paths = {k: np.where(field, v, 0.0) for k, v in paths.items()}  # nothing is seen behind the collimator

        # stage 4: physics
        physics = sim.sample_physics_params(rng, cfg.physics, pixel_mm=detector_pitch(camera))
        if subject.scene is not None and physics.mode == "spectral":  # scatter: the patient's thickness and air gap
            physics = physics.replace(scatter=replace(physics.scatter, **patient_geometry(subject.scene[0].volume, camera)))
        density = sim.sample_density_jitter(rng, projector.materials, cfg.materials)
        noise_seed = int(rng.integers(0, 2**32))
        transport = None
        if physics.mode == "spectral" and physics.scatter.model == "monte_carlo":
            # the photons' seed from the sample's stream (last draw); the transport scene gets the same density
            # jitter as the projected areal densities (tool meshes are not transported: see monte_carlo_scatter)
            physics = physics.replace(scatter=replace(physics.scatter, seed=int(rng.integers(0, 2**63))))
            transport = self.transport_scene(subject_id).scaled(density["density_scale"])
        result = simulate(sim.scale_areal_density(areal, density), camera, physics, np.random.default_rng(noise_seed),
                          field=field, scene=transport, device=projector.device)

        # stage 5: labels
        labels = make_labels(paths, subject.structures, self.task, camera, landmarks, cfg.labels.min_path_mm, field)

        # stage 6: record
        iso = np.asarray(target, dtype=np.float64) + np.asarray(view["isocenter_offset_mm"], dtype=np.float64)
        view = {**view, "coverage_shift_mm": [float(c) for c in shift]}
        record = {
            "index": index,
            "seed": self.seed,
            "subject_id": subject_id,
            "synthex_version": __version__,
            "subject": subject_record,
            "view": view,
            "pose": pose,
            "camera": {
                "preset": cfg.geometry.preset,
                "view": self.carm.view,
                "sdd": camera.sdd,
                "sid": float(camera.depth(iso[None])[0]),  # fitted per view where the patient is at the detector
                "pixel_size_mm": list(self.carm.pixel_size),
                "target": [float(c) for c in iso],
                "field_fraction": float(field.mean()),
            },
            "physics": physics.to_dict(),
            "noise_seed": noise_seed,
            "materials": density,
        }
        return {
            "images": np.asarray(result.image, dtype=np.float32),
            "field": field.astype(np.uint8),
            **labels,
            "K": camera.K.astype(np.float64),
            "world_from_camera": camera.world_from_camera.matrix.astype(np.float64),
            "P": camera.P.astype(np.float64),
            "sample_index": np.int64(index),
            "subject_id": np.int64(subject_id),
            "params": json.dumps(record),
        }


_PIPELINES: OrderedDict[str, Pipeline] = OrderedDict()


def pipeline_for(cfg) -> Pipeline:
    """A per-process cached Pipeline for ``cfg`` (workers render many shards of one config)."""
    key = json.dumps(cfg.to_json(), sort_keys=True)
    if key not in _PIPELINES:
        _PIPELINES[key] = Pipeline(cfg)
        while len(_PIPELINES) > 2:
            _PIPELINES.popitem(last=False)
    return _PIPELINES[key]


def sample_range(cfg, first: int, count: int, progress: Callable[[int], None] | None = None) -> dict:
    """Samples ``first .. first + count - 1`` stacked into shard arrays."""
    pipe = pipeline_for(cfg)
    samples = []
    for i in range(first, first + count):
        samples.append(pipe.sample(i))
        if progress is not None:
            progress(1)
    out = {k: np.stack([s[k] for s in samples]) for k in samples[0] if k != "params"}
    out["params"] = [s["params"] for s in samples]
    return out
