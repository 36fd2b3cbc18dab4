"""Sample ``i`` of a dataset as a pure function of (resolved config, seed, i).

    pipe = Pipeline(cfg)            # cfg from synthex.config.load_config
    s = pipe.sample(17)             # dict of arrays + the JSON record of every drawn parameter

Randomness comes from three generators, each keyed by the run seed and an index
(never the global RNG, never the worker or the order of work):

* subject ``k``: ``default_rng([SUBJECT_STREAM, seed, k])`` draws the subject's
  shape and its HU-threshold jitter (a subject's projector is built once);
* sample ``i``: ``default_rng([SAMPLE_STREAM, seed, i])`` draws the view, the
  X-ray technique, the density jitter and the physics model's noise seed;
* image randomization: ``domain_randomization.image.rng_for(seed, 0, i)``.

Then everything is deterministic: project, physics, labels (masks from path
lengths, landmarks through ``P``), image-level randomization of image, masks and
landmarks with one record; boxes come from the final masks.

Physics models are registry entries (``PHYSICS``): a technique sampler and a
``simulate(areal_density, camera, params, rng) -> image in [0, 1]``. Today only
``monochromatic`` exists; the spectral model with noise and scatter plugs in as
another entry.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from domain_randomization import simulation as sim
from projectors.geometry import Camera, CArm
from projectors.materials import DEFAULT_HU_MATERIALS, MaterialModel
from projectors.projector import Projector, SceneVolume
from synthex import subjects as subject_sources
from synthex._version import __version__

SUBJECT_STREAM = 0x5B1EC7
SAMPLE_STREAM = 0x5A391E


class PipelineError(ValueError):
    """A sample cannot be rendered from this config (a clear, user-facing error)."""


# ---------------------------------------------------------------------------
# physics models


@dataclass(frozen=True)
class PhysicsModel:
    """``sample(rng, physics_cfg) -> params``; ``simulate(areal_density, camera, params, rng) -> (H, W) in [0, 1]``."""

    sample: Callable[[np.random.Generator, dict], dict]
    simulate: Callable[[dict, Camera, dict, np.random.Generator], np.ndarray]
    applies: tuple[str, ...]  # which recorded parameters change the image
    doc: str


def _technique(rng: np.random.Generator, phys: dict) -> dict:
    return sim.sample_technique(
        rng,
        kvp=phys["kvp"],
        filtration_mm_al=phys["filtration_mm_al"],
        photons_per_pixel=phys["photons_per_pixel"],
        scatter_fraction=phys["scatter_fraction"],
        blur_px=phys["blur_px"],
        electronic_noise=phys["electronic_noise"],
    )


def _monochromatic(areal_density: dict, camera: Camera, params: dict, rng: np.random.Generator) -> np.ndarray:
    from synthex.render import display_image, monochromatic_transmission

    t = monochromatic_transmission(areal_density, params["energy_kev"])
    return display_image(-np.log(np.clip(t, 1e-30, None)))


def _spectral_params(params: dict):
    from projectors.physics import DetectorParams, GridParams, PhysicsParams, ScatterParams

    return PhysicsParams.from_options(
        kvp=params["kvp"],
        filtration={"Al": params["filtration_mm_al"]},
        quanta_per_pixel=params["photons_per_pixel"],
        # physical scatter (fast model calibrated against the Monte Carlo) behind a C-arm's 10:1 grid
        scatter=ScatterParams(model="fast", grid=GridParams()),
        noise=True,
        # electronic noise is sampled in units of 1000 detected quanta (a-Si flat panels: about 1-5 quanta)
        detector=DetectorParams(blur_px=params["blur_px"], electronic_noise=params["electronic_noise"] * 1000.0),
    )


def _spectral(areal_density: dict, camera: Camera, params: dict, rng: np.random.Generator) -> np.ndarray:
    from projectors.physics import simulate

    return simulate(areal_density, camera, _spectral_params(params), rng, sdd=camera.sdd or 1020.0).image


# name -> PhysicsModel
PHYSICS: dict[str, PhysicsModel] = {
    "spectral": PhysicsModel(
        sample=_technique,
        simulate=_spectral,
        applies=("kvp", "filtration_mm_al", "photons_per_pixel", "blur_px", "electronic_noise", "noise_seed"),
        doc="projectors.physics: SpekPy spectrum (kVp, Al filtration), energy-integrating CsI detector, fast "
        "scatter model behind a 10:1 grid, quantum + electronic noise, blur, clinical display processing; "
        "scatter_fraction is recorded but not used (scatter is modelled physically)",
    ),
    "monochromatic": PhysicsModel(
        sample=lambda rng, phys: {**_technique(rng, phys), "energy_kev": phys["energy_kev"]},
        simulate=_monochromatic,
        applies=("energy_kev",),
        doc="Beer-Lambert at one energy, percentile display window; kVp, filtration, dose, scatter, blur and "
        "noise are sampled and recorded but not applied (the spectral model will apply them)",
    ),
}


# ---------------------------------------------------------------------------
# labels


def masks_from_paths(path_length: dict, structures: dict, classes: list, shape, min_path_mm: float) -> np.ndarray:
    """(C, H, W) uint8: class ``c`` covers a pixel where any of its structures'
    path lengths exceeds ``min_path_mm``."""
    masks = np.zeros((len(classes),) + tuple(shape), dtype=np.uint8)
    for c, name in enumerate(classes):
        for s in structures.get(name, ()):
            if s in path_length:
                masks[c] |= (path_length[s] > min_path_mm).astype(np.uint8)
    return masks


def label_map(masks: np.ndarray) -> np.ndarray:
    """Exclusive (H, W) uint8 map: class index + 1, later classes win overlaps."""
    labels = np.zeros(masks.shape[1:], dtype=np.uint8)
    for c in range(masks.shape[0]):
        labels[masks[c] > 0] = c + 1
    return labels


def boxes_from_masks(masks: np.ndarray) -> np.ndarray:
    """(C, 4) xyxy boxes in continuous pixel coordinates (pixel (0, 0) spans
    [-0.5, 0.5]^2), enclosing each mask; NaN where a class is absent."""
    out = np.full((masks.shape[0], 4), np.nan, dtype=np.float32)
    for c in range(masks.shape[0]):
        rows = np.flatnonzero(masks[c].any(axis=1))
        cols = np.flatnonzero(masks[c].any(axis=0))
        if rows.size:
            out[c] = (cols[0] - 0.5, rows[0] - 0.5, cols[-1] + 0.5, rows[-1] + 0.5)
    return out


def inside_image(uv: np.ndarray, shape) -> np.ndarray:
    h, w = shape
    return (uv[:, 0] >= -0.5) & (uv[:, 0] < w - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] < h - 0.5)


def project_landmarks(camera: Camera, landmarks: dict, names: list) -> tuple[np.ndarray, np.ndarray]:
    """(L, 2) float32 (u, v) and (L,) uint8 visibility; NaN for landmarks the
    subject does not define or that lie behind the source."""
    uv = np.full((len(names), 2), np.nan, dtype=np.float64)
    for k, name in enumerate(names):
        if name in landmarks:
            p = np.asarray(landmarks[name], dtype=np.float64)[None]
            if camera.depth(p)[0] > 0:
                uv[k] = camera.project(p)[0]
    ok = np.isfinite(uv).all(axis=1)
    visible = np.zeros(len(names), dtype=np.uint8)
    visible[ok] = inside_image(uv[ok], camera.shape)
    return uv.astype(np.float32), visible


# ---------------------------------------------------------------------------
# image randomization (render time)


def _image_module():
    try:
        import domain_randomization.image as dri
    except ImportError as e:  # torch / kornia missing
        raise PipelineError(
            f"image-level randomization needs the 'augment' extra ({e}); install it with "
            "pip install 'synthex-xray[augment]', or set randomization.image: none"
        ) from None
    return dri


def sample_image_params(preset: str, seed: int, index: int) -> dict:
    if preset == "none":
        return {"version": 1, "preset": "none", "ops": []}
    dri = _image_module()
    return dri.sample_params(preset, dri.rng_for(seed, 0, index))


def apply_image_params(image, masks, keypoints, visible, params: dict):
    """Apply a recorded image-randomization record; (image, masks, keypoints, visible)."""
    if not params["ops"]:
        return image, masks, keypoints, visible
    dri = _image_module()
    ok = np.isfinite(keypoints).all(axis=1)
    out = dri.apply(
        image, masks, np.where(ok[:, None], keypoints, 0.0), None, params, visible=visible.astype(bool) & ok
    )
    kp = np.where(ok[:, None], out.keypoints, np.nan).astype(np.float32)
    # the dataset's definition: visible = defined and inside the image (also for a
    # landmark that a warp moved in from outside)
    vis = np.zeros(len(kp), dtype=np.uint8)
    vis[ok] = inside_image(kp[ok].astype(np.float64), image.shape)
    return out.image.astype(np.float32), out.masks.astype(np.uint8), kp, vis


def replay(image_raw: np.ndarray, params: dict | str) -> np.ndarray:
    """Re-apply a sample's recorded image randomization to its un-randomized image."""
    rec = json.loads(params) if isinstance(params, str) else params
    rec = rec.get("image_randomization", rec)
    if not rec["ops"]:
        return np.asarray(image_raw, dtype=np.float32)
    return _image_module().apply(image_raw, params=rec).image


# ---------------------------------------------------------------------------
# the pipeline


class Pipeline:
    """Renders samples of one resolved config; caches the last subjects' projectors."""

    def __init__(self, cfg: dict, cache_size: int = 2):
        self.cfg = cfg
        self.seed = int(cfg["seed"])
        self.classes = list(cfg["classes"])
        self.landmarks = list(cfg["landmarks"])
        self.physics = PHYSICS[cfg["physics"]["model"]]
        w, h = cfg["image"]["size"]
        pitch = cfg["image"]["pixel_size_mm"] or cfg["carm"]["detector_mm"] / w
        self.carm = CArm(sdd=cfg["carm"]["sdd"], sid=cfg["carm"]["sid"], size=(w, h), pitch=pitch)
        self.n_subjects = subject_sources.count_subjects(cfg["subjects"])
        self._cache: OrderedDict[int, tuple] = OrderedDict()
        self._cache_size = cache_size

    def subject_id(self, index: int) -> int:
        return index // self.cfg["views"]["per_subject"]

    def subject(self, subject_id: int):
        """(Subject, Projector, record) of subject ``subject_id`` (cached)."""
        if subject_id in self._cache:
            self._cache.move_to_end(subject_id)
            return self._cache[subject_id]
        entry, instance = subject_sources.locate(self.cfg["subjects"], subject_id)
        source = subject_sources.SOURCES[entry["source"]]
        rng = np.random.default_rng([SUBJECT_STREAM, self.seed, subject_id])
        shape = source.sample(entry, rng)
        jitter = sim.sample_threshold_jitter(
            rng, len(DEFAULT_HU_MATERIALS.thresholds), self.cfg["randomization"]["threshold_jitter_hu"]
        )
        subject = source.build(entry, shape, self.classes)
        hu_map = sim.jittered_hu_map(DEFAULT_HU_MATERIALS, jitter)
        scene = []
        for v in subject.volumes:
            if isinstance(v, SceneVolume):
                scene.append(SceneVolume(v.volume, MaterialModel(hu_map, v.materials.label_materials), v.priority))
            else:
                scene.append(SceneVolume(v, MaterialModel(hu_map)))
        projector = Projector(scene, device=self.cfg["physics"]["device"], mode=self.cfg["physics"]["mode"])
        missing = [s for c in self.classes for s in subject.structures.get(c, [c]) if s not in projector.structures]
        if subject.place is None and all(s in missing for c in self.classes for s in subject.structures.get(c, [c])):
            raise PipelineError(f"subject {subject.name!r} has none of the structures of the classes {self.classes}")
        record = {"source": entry["source"], "instance": instance, "name": subject.name, "shape": shape, **jitter}
        self._cache[subject_id] = (subject, projector, record)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return self._cache[subject_id]

    def sample(self, index: int) -> dict:
        cfg = self.cfg
        if not 0 <= index < cfg["n"]:
            raise IndexError(f"sample index {index} outside 0..{cfg['n'] - 1}")
        sid = self.subject_id(index)
        subject, projector, subject_record = self.subject(sid)
        rng = np.random.default_rng([SAMPLE_STREAM, self.seed, index])
        v = cfg["views"]
        view = sim.sample_view(rng, v["alpha_deg"], v["beta_deg"], v["target_jitter_mm"])
        physics = self.physics.sample(rng, cfg["physics"])
        density = sim.sample_density_jitter(rng, projector.materials, cfg["randomization"]["density_jitter"])
        physics_rng = np.random.default_rng(physics["noise_seed"])

        pose, placement = None, None
        if subject.sample_pose is not None:  # per-view parts (a tool): posed from this sample's generator
            pose = subject.sample_pose(rng)
            placement = subject.place(pose)
        target = placement.target if placement is not None and placement.target is not None else subject.target

        camera = sim.view_camera(self.carm, target, view)
        proj = projector.project(camera)
        areal, paths, landmarks = dict(proj.areal_density), dict(proj.path_length), dict(subject.landmarks)
        if placement is not None and placement.meshes:
            from projectors.mesh import mesh_path_lengths

            mp = mesh_path_lengths(placement.meshes, camera, device=projector.device)
            for m, a in mp.areal_density.items():
                areal[m] = areal[m] + a if m in areal else a
            paths.update(mp.path_length)
            landmarks.update(placement.landmarks)
        image_raw = self.physics.simulate(sim.scale_areal_density(areal, density), camera, physics, physics_rng)
        masks = masks_from_paths(paths, subject.structures, self.classes, camera.shape, cfg["labels"]["min_path_mm"])
        uv, visible = project_landmarks(camera, landmarks, self.landmarks)

        image_params = sample_image_params(cfg["randomization"]["image"], self.seed, index)
        image, masks, uv, visible = apply_image_params(image_raw, masks, uv, visible, image_params)

        record = {
            "index": index,
            "seed": self.seed,
            "subject_id": sid,
            "synthex_version": __version__,
            "subject": subject_record,
            "view": view,
            "pose": pose,
            "camera": {
                "sdd": self.carm.sdd,
                "sid": self.carm.sid,
                "pixel_size_mm": list(self.carm.pixel_size),
                "isocenter": list(camera.world_from_camera.apply(np.array([[0.0, 0.0, self.carm.sid]]))[0]),
            },
            "physics": {"model": cfg["physics"]["model"], "applied": list(self.physics.applies), **physics},
            "materials": density,
            "image_randomization": image_params,
        }
        return {
            "images": np.asarray(image, dtype=np.float32),
            "images_raw": np.asarray(image_raw, dtype=np.float32),
            "labels": label_map(masks),
            "masks": masks,
            "landmarks": uv,
            "landmark_visible": visible,
            "boxes": boxes_from_masks(masks),
            "K": camera.K.astype(np.float64),
            "world_from_camera": camera.world_from_camera.matrix.astype(np.float64),
            "P": camera.P.astype(np.float64),
            "sample_index": np.int64(index),
            "subject_id": np.int64(sid),
            "params": json.dumps(record),
        }


_PIPELINES: OrderedDict[str, Pipeline] = OrderedDict()


def pipeline_for(cfg: dict) -> Pipeline:
    """A per-process cached Pipeline for ``cfg`` (workers render many shards of one config)."""
    key = json.dumps(cfg, sort_keys=True)
    if key not in _PIPELINES:
        _PIPELINES[key] = Pipeline(cfg)
        while len(_PIPELINES) > 2:
            _PIPELINES.popitem(last=False)
    return _PIPELINES[key]


def render_range(cfg: dict, first: int, count: int, progress: Callable[[int], None] | None = None) -> dict:
    """Samples ``first .. first + count - 1`` stacked into shard arrays."""
    pipe = pipeline_for(cfg)
    samples = []
    for i in range(first, first + count):
        samples.append(pipe.sample(i))
        if progress is not None:
            progress(1)
    out = {k: np.stack([s[k] for s in samples]) for k in samples[0] if k != "params"}
    out["params"] = [s["params"] for s in samples]
    if not cfg["randomization"]["store_raw"]:
        del out["images_raw"]
    return out
