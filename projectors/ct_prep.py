"""CT preparation: what a CT must lose or gain before it is rendered as a radiograph.

A clinical CT is not the patient a radiograph sees. It carries the scanner's
table and the padding outside its reconstruction circle; contrast agent that a
plain radiograph never has; metal whose HU the scanner clipped to bone-like
values; thick slices that stamp a staircase into a projection; and it ends
where the scan ended, while the patient goes on. Each step below is a pure
function of a :class:`~projectors.volume.Volume` that returns a new volume (or
material model) and a JSON record of what it found and did;
:func:`prepare_ct` runs them in order from :class:`CTPrepParams`:

1. :func:`isolate_body`: the patient's body (largest connected parts, thin
   sheets such as the table removed), air outside it, the reconstruction
   padding made air; the volume cropped to the body.
2. :func:`contrast_phase` / :func:`replace_blood`: the blood-pool HU from
   heart and vessel labels (TotalSegmentator names) or, without labels, a
   search of the HU statistics; where labels allow, contrast-enhanced blood
   becomes unenhanced blood (:data:`UNENHANCED_BLOOD_HU`).
3. :func:`metal_mask` / :func:`metal_material_model`: voxels above a metal
   threshold (or labels named like implants) rendered as a metal
   (:data:`METALS`: Ti-6Al-4V, Co-Cr-Mo, 316L steel) at its real density.
4. :func:`interpolate_slices`: monotone cubic (PCHIP) interpolation along
   every axis coarser than ``slice_mm``, nothing done within a slice; and
   :func:`bin_voxels`: block means along axes finer than a radiograph's pixel
   at the patient (``bin_mm``), where one ray per pixel would point-sample
   detail (and CT noise) the pixel's area averages.
5. :func:`coverage_volume` / :class:`Coverage`: where the patient goes on
   beyond the CT (body cut by a face of the volume or by the reconstruction
   circle) a view's rays miss tissue; ``Coverage.mask(camera)`` says which
   pixels are covered, :func:`collimation_field` fits the largest rectangular
   collimator field inside them and :func:`collimate` closes the collimator
   (3 mm of lead) outside it, so the border looks like a radiograph's
   unexposed border instead of a hard edge or a black band.

Units: mm, HU, g/cm^3. Nothing here reads files.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from projectors.geometry import Camera, GeometryError, Transform
from projectors.materials import (
    DEFAULT_HU_MATERIALS,
    MATERIALS,
    DensityCalibration,
    HUMaterialMap,
    LabelMaterial,
    MaterialError,
    MaterialModel,
)
from projectors.volume import Volume, VolumeError


class CTPrepError(ValueError):
    """CT preparation parameters or inputs that cannot be used."""


class CTPrepWarning(UserWarning):
    """Something a CT's preparation could not do (e.g. no labels to remove contrast with)."""


# ---------------------------------------------------------------------------------------------
# parameters and record


#: Metals a CT's metal voxels can be rendered as (material name in projectors.materials).
METALS = ("titanium_alloy", "cocr", "stainless_steel", "titanium")

#: Unenhanced blood, HU: 40 (blood pool of non-contrast CT, 35-50 HU with the haematocrit).
UNENHANCED_BLOOD_HU = 40.0

#: TotalSegmentator (v1 and v2) names of the blood pool: heart (and its chambers), great vessels.
BLOOD_POOL_PATTERN = re.compile(
    r"^(heart(_(atrium|ventricle)_(left|right))?|aorta|pulmonary_(artery|vein|trunk)|atrial_appendage_left"
    r"|(superior|inferior)_vena_cava|brachiocephalic_(trunk|vein_left|vein_right)"
    r"|(subclavian|common_carotid)_artery_(left|right)|portal_vein_and_splenic_vein"
    r"|iliac_(artery|vena)_(left|right))$"
)
#: Label names taken as metal (implants are not TotalSegmentator classes; other tools name them so).
METAL_LABEL_PATTERN = re.compile(r"(implant|prosthes|metal|screw|stent|nail|plate|wire)", re.IGNORECASE)


@dataclass(frozen=True)
class CTPrepParams:
    """What :func:`prepare_ct` does (JSON: ``asdict``; :meth:`from_dict` reads it back).

    * ``isolate_body``: air outside the patient's body (table, padding, objects
      outside), crop to the body; ``body_hu``: body threshold.
    * ``blood``: replace contrast-enhanced blood by ``blood_hu`` where labels
      identify heart and vessels (when the blood pool's median exceeds
      ``contrast_hu``).
    * ``metal``: material of metal (None: leave metal as the CT's HU say, i.e.
      bone); voxels above ``metal_hu`` and labels named like implants;
      ``metal_density`` g/cm^3 (None: the alloy's nominal density).
    * ``slice_mm``: interpolate along every axis whose spacing exceeds this
      (None: keep the CT's slices), to ``spacing / ceil(spacing / slice_mm)``.
    * ``bin_mm``: average blocks of whole voxels along every axis finer than
      this (None: keep the CT's voxels), to ``spacing * floor(bin_mm / spacing)``;
      ``"auto"``: the dataset pipeline sets it to the detector pixel at the
      isocentre; elsewhere ``"auto"`` keeps the voxels. CTs with metal are not binned.
    * ``coverage``: build the coverage volume (the per-view covered masks).
    """

    isolate_body: bool = field(default=True, metadata={"doc": "remove what is outside the body (table, padding), crop to it"})
    body_hu: float = field(default=-500.0, metadata={"doc": "body threshold, HU"})
    blood: bool = field(default=True, metadata={"doc": "render contrast-enhanced blood (heart, vessels from labels) as unenhanced blood"})
    blood_hu: float = field(default=UNENHANCED_BLOOD_HU, metadata={"doc": "HU of unenhanced blood"})
    contrast_hu: float = field(default=120.0, metadata={"doc": "a blood pool median above this is a contrast phase, HU"})
    metal: str | None = field(default="titanium_alloy", metadata={"doc": f"material of metal voxels and implant labels: {', '.join(METALS)} (null: as the HU say, bone)"})
    metal_hu: float = field(default=2500.0, metadata={"doc": "voxels above this are metal, HU"})
    metal_density: float | None = field(default=None, metadata={"doc": "metal density, g/cm^3 (null: the alloy's nominal density)"})
    slice_mm: float | None = field(default=1.5, metadata={"doc": "interpolate along axes with a coarser spacing than this, mm (null: keep the CT's slices)"})
    bin_mm: float | str | None = field(default="auto", metadata={"doc": "average voxel blocks along axes finer than this, mm: a pixel's footprint at the patient (auto: the detector pixel at the isocentre; null: keep the voxels; CTs with metal are kept)"})
    coverage: bool = field(default=True, metadata={"doc": "collimate each view to the CT's coverage (no hard edges where the CT ends)"})

    def __post_init__(self):
        if self.metal is not None and self.metal not in METALS:
            raise CTPrepError(f"metal must be one of {', '.join(METALS)} or None, got {self.metal!r}")
        for name in ("body_hu", "blood_hu", "contrast_hu", "metal_hu"):
            v = getattr(self, name)
            if not np.isfinite(v):
                raise CTPrepError(f"{name} must be a finite HU value, got {v}")
        if not -1000 < self.body_hu < 0:
            raise CTPrepError(f"body_hu must lie between air and water (-1000, 0), got {self.body_hu}")
        if not 1000 < self.metal_hu:
            raise CTPrepError(f"metal_hu must lie above bone (> 1000 HU), got {self.metal_hu}")
        if self.metal_density is not None and not (np.isfinite(self.metal_density) and self.metal_density > 0):
            raise CTPrepError(f"metal_density must be > 0 g/cm^3, got {self.metal_density}")
        if self.slice_mm is not None and not (np.isfinite(self.slice_mm) and 0.2 <= self.slice_mm <= 10):
            raise CTPrepError(f"slice_mm must lie in [0.2, 10] mm or be None, got {self.slice_mm}")
        b = self.bin_mm
        if not (b is None or b == "auto" or (isinstance(b, (int, float)) and not isinstance(b, bool) and np.isfinite(b) and 0.1 <= b <= 20)):
            raise CTPrepError(f"bin_mm must be 'auto', None or a size in [0.1, 20] mm, got {b!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CTPrepParams":
        if not isinstance(d, dict):
            raise CTPrepError(f"CT preparation parameters must be a mapping, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise CTPrepError(f"unknown CT preparation key(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


@dataclass(frozen=True, eq=False)
class PreparedCT:
    """A CT ready to render: the volume, its material model, its coverage and the record of what was done.

    ``body_points``: points of the body's surface (world mm) for
    ``CArm.camera(..., body=...)`` (presets that put the skin at the detector).
    """

    volume: Volume
    materials: MaterialModel
    coverage: "Coverage | None"
    body_points: np.ndarray
    record: dict = field(default_factory=dict)

    def scene(self):
        """The volume with its material model, as the projector takes it."""
        from projectors.projector import SceneVolume

        return SceneVolume(self.volume, materials=self.materials)


def prepare_ct(volume: Volume, params: CTPrepParams | dict | None = None) -> PreparedCT:
    """Run the CT preparation steps in order (see the module docstring); warnings as :class:`CTPrepWarning`."""
    p = params if isinstance(params, CTPrepParams) else CTPrepParams.from_dict(params or {})
    record: dict = {"params": p.to_dict(), "input": _describe(volume), "warnings": []}

    def warn(msg: str):
        record["warnings"].append(msg)
        warnings.warn(f"{volume.name}: {msg}", CTPrepWarning, stacklevel=3)

    body = body_mask(volume, p.body_hu)
    record["body"] = {"voxels": int(body.sum()), "fraction": round(float(body.mean()), 4)}
    if not body.any():
        raise CTPrepError(f"{volume.name}: no body found (no voxels above {p.body_hu} HU)")
    body_points = surface_points(volume, body)
    coverage = None
    if p.coverage:
        cov_vol, cov_rec = coverage_volume(volume, body)
        coverage = Coverage(cov_vol)
        record["coverage"] = cov_rec
    vol = volume
    if p.isolate_body:
        vol, rec = isolate_body(vol, body)
        record["outside"] = rec

    phase = contrast_phase(vol, p.contrast_hu)
    record["contrast"] = phase
    if phase["phase"] == "contrast":
        if p.blood and phase["source"] == "labels":
            vol, rec = replace_blood(vol, p.blood_hu)
            record["contrast"]["replaced"] = rec
        elif p.blood:
            warn(f"contrast-enhanced blood suspected ({phase['detail']}) but no heart/vessel labels identify it: "
                 "it renders as enhanced (bone-like where dense); pass a TotalSegmentator label map to replace it")
        else:
            warn("contrast phase detected and kept (blood=False): blood renders enhanced")
    elif phase["phase"] == "unknown":
        record["contrast"]["note"] = "no heart or vessel labels: the phase was judged from HU statistics only"

    materials = MaterialModel()
    if p.metal is not None:
        vol, specks = clip_metal_specks(vol, p.metal_hu)
        mask, labelled = metal_mask(vol, p.metal_hu)
        materials = metal_material_model(vol, p.metal, p.metal_hu, p.metal_density, labelled)
        record["metal"] = {
            "material": p.metal,
            "density_g_cm3": materials_density(p.metal, p.metal_density),
            "threshold_hu": p.metal_hu,
            "voxels": int(mask.sum()),
            "volume_ml": round(float(mask.sum() * np.prod(vol.spacing) / 1000.0), 2),
            "labels": sorted(vol.label_names[v] for v in labelled),
            "specks_clipped_voxels": specks,
        }
        if phase["phase"] == "contrast" and phase["source"] != "labels" and mask.any():
            warn(f"{int(mask.sum())} voxels above {p.metal_hu:g} HU are rendered as {p.metal}; in a contrast scan "
                 "without vessel labels some may be dense contrast agent")
    if isinstance(p.bin_mm, (int, float)):
        if p.metal is not None and record["metal"]["voxels"]:
            record["binning"] = {"bin_mm": p.bin_mm, "skipped": "metal: its HU -> material threshold is not linear in HU"}
        else:
            vol, record["binning"] = bin_voxels(vol, float(p.bin_mm))
    if p.slice_mm is not None:
        vol, rec = interpolate_slices(vol, p.slice_mm)
        record["slices"] = rec
    record["output"] = _describe(vol)
    return PreparedCT(volume=vol, materials=materials, coverage=coverage, body_points=body_points, record=record)


def aim_point(volume: Volume, pattern: str | None) -> tuple[float, float, float]:
    """Where to centre the beam: the centre of the bounding box of the labels whose names match the regular
    expression ``pattern`` (a preset's ``aim``, e.g. the lungs for a PA chest), world mm; else the
    volume's centre."""
    values = [v for v, n in volume.label_names.items() if pattern and re.search(pattern, n)]
    if volume.labels is not None and values:
        box = _bbox(np.isin(volume.labels, values))
        if box is not None:
            centre = np.array([(b.start + b.stop - 1) / 2.0 for b in box])
            return tuple(float(c) for c in volume.world_from_ijk.apply(centre))
    return tuple(float(c) for c in volume.center_world)


def materials_density(material: str, density: float | None) -> float:
    return float(MATERIALS[material].density if density is None else density)


def _describe(vol: Volume) -> dict:
    return {"shape": list(vol.shape), "spacing_mm": [round(float(s), 4) for s in vol.spacing]}


# ---------------------------------------------------------------------------------------------
# body, padding, table


def padding_mask(volume: Volume) -> np.ndarray:
    """Voxels outside the reconstruction circle: the volume's minimum value, when it lies below -1100 HU
    (no tissue, not even air, measures that low) and fills at least 0.5% of the volume."""
    lo = float(volume.hu.min())
    if lo > -1100:
        return np.zeros(volume.shape, bool)
    pad = volume.hu == lo
    return pad if pad.mean() >= 0.005 else np.zeros(volume.shape, bool)


def _coarse_factors(volume: Volume, target_mm: float) -> tuple[int, ...]:
    return tuple(max(1, int(round(target_mm / s))) for s in volume.spacing)


def _block_any(mask: np.ndarray, f) -> np.ndarray:
    """Block-reduce a boolean volume by factors ``f`` (any voxel set -> set); the edges padded with False."""
    pad = [(0, (-n) % k) for n, k in zip(mask.shape, f)]
    m = np.pad(mask, pad)
    s = m.shape
    return m.reshape(s[0] // f[0], f[0], s[1] // f[1], f[1], s[2] // f[2], f[2]).any(axis=(1, 3, 5))


def _block_mean(mask: np.ndarray, f) -> np.ndarray:
    pad = [(0, (-n) % k) for n, k in zip(mask.shape, f)]
    m = np.pad(mask.astype(np.float32), pad)
    s = m.shape
    return m.reshape(s[0] // f[0], f[0], s[1] // f[1], f[1], s[2] // f[2], f[2]).mean(axis=(1, 3, 5))


def _expand(coarse: np.ndarray, f, shape) -> np.ndarray:
    out = coarse
    for ax, k in enumerate(f):
        out = np.repeat(out, k, axis=ax)
    return out[: shape[0], : shape[1], : shape[2]]


def _bbox(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The bounding box of the True voxels as slices (None when there are none), without argwhere's copy."""
    out = []
    for ax in range(mask.ndim):
        nz = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != ax)))
        if nz.size == 0:
            return None
        out.append(slice(int(nz[0]), int(nz[-1]) + 1))
    return tuple(out)


def _small_groups(mask: np.ndarray, min_voxels: int) -> np.ndarray:
    """Voxels of ``mask`` in 26-connected groups smaller than ``min_voxels`` (labelled inside the bounding box)."""
    from scipy import ndimage

    out = np.zeros(mask.shape, bool)
    box = _bbox(mask)
    if box is None:
        return out
    lab, _ = ndimage.label(mask[box], structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(lab.ravel())
    small = sizes < min_voxels
    small[0] = False
    out[box] = small[lab]
    return out


def _slice_axis(volume: Volume) -> int:
    """The index axis closest to the patient's long axis (world z): the axial slices' normal."""
    return int(np.argmax(np.abs(volume.world_from_ijk.R[2]) / volume.spacing))


def body_mask(volume: Volume, body_hu: float = -500.0, grid_mm: float = 2.0, sheet_mm: float = 4.0) -> np.ndarray:
    """The patient's body: voxels above ``body_hu`` in the large connected parts, holes (lungs, bowel gas) filled.

    Computed on a ``grid_mm`` grid: a binary opening removes sheets thinner
    than about ``sheet_mm`` (the scanner table's shell, blankets, cables), then
    the connected parts of at least 5% of the largest (and 20 mL: torso, limbs)
    are kept, each axial slice's holes filled, and the mask grown by one
    coarse voxel so the skin is never cut. Full resolution, boolean.
    """
    from scipy import ndimage

    f = _coarse_factors(volume, grid_mm)
    pad = padding_mask(volume)
    dense = (volume.hu > body_hu) & ~pad
    if not dense.any():
        return np.zeros(volume.shape, bool)
    coarse = _block_mean(dense, f) >= 0.5
    cs = volume.spacing * np.asarray(f)
    ax = _slice_axis(volume)
    # opening in the axial plane with a disc of radius ~ sheet_mm / 2 (sheets thinner than sheet_mm go)
    r = [max(1, int(round(sheet_mm / 2 / c))) for c in cs]
    r[ax] = 0
    grid = np.ogrid[tuple(slice(-k, k + 1) for k in r)]
    ball = sum((g / max(k, 1)) ** 2 for g, k in zip(grid, r)) <= 1.0 + 1e-9
    opened = ndimage.binary_opening(coarse, structure=ball)
    lab, n = ndimage.label(opened)
    if n == 0:
        opened, lab, n = coarse, *ndimage.label(coarse)
    sizes = np.bincount(lab.ravel())[1:]
    min_vox = max(0.05 * sizes.max(), 20_000.0 / np.prod(cs))
    keep = np.zeros(n + 1, bool)
    keep[1:] = sizes >= min(min_vox, sizes.max())
    kept = keep[lab]
    filled = np.stack([ndimage.binary_fill_holes(s) for s in np.moveaxis(kept, ax, 0)], axis=ax)
    grown = ndimage.binary_dilation(filled, structure=ndimage.generate_binary_structure(3, 1))
    full = _expand(grown, f, volume.shape)
    return full & ((volume.hu > body_hu) | _expand(filled, f, volume.shape)) & ~pad


def surface_points(volume: Volume, body: np.ndarray, max_points: int = 20000) -> np.ndarray:
    """World points (N, 3) on the body's surface (voxels of the body next to non-body), at most ``max_points``."""
    from scipy import ndimage

    edge = body & ~ndimage.binary_erosion(body, structure=ndimage.generate_binary_structure(3, 1))
    ijk = np.argwhere(edge)
    if len(ijk) > max_points:
        ijk = ijk[np.linspace(0, len(ijk) - 1, max_points).astype(int)]
    return volume.world_from_ijk.apply(ijk.astype(np.float64))


def isolate_body(volume: Volume, body: np.ndarray | None = None, margin_mm: float = 5.0) -> tuple[Volume, dict]:
    """Air (-1000 HU) outside the body and in the padding; the volume cropped to the body plus ``margin_mm``."""
    if body is None:
        body = body_mask(volume)
    hu = volume.hu
    pad = padding_mask(volume)
    outside_dense = (~body) & (hu > -500) & ~pad
    box = _bbox(body)
    if box is None:
        raise CTPrepError(f"{volume.name}: the body mask is empty")
    lo = np.array([b.start for b in box])
    hi = np.array([b.stop - 1 for b in box])
    m = np.ceil(margin_mm / volume.spacing).astype(int)
    lo = np.maximum(lo - m, 0)
    hi = np.minimum(hi + m, np.asarray(volume.shape) - 1)
    sl = tuple(slice(int(a), int(b) + 1) for a, b in zip(lo, hi))
    new = np.where(body[sl], hu[sl], np.float32(-1000.0)).astype(np.float32)
    labels = None
    if volume.labels is not None:
        labels = np.where(body[sl], volume.labels[sl], 0)
    shift = Transform.from_rt(translation=lo.astype(np.float64))
    out = Volume(new, volume.world_from_ijk @ shift, labels=labels, label_names=volume.label_names, name=volume.name)
    rec = {
        "removed_dense_voxels": int(outside_dense.sum()),
        "removed_dense_ml": round(float(outside_dense.sum() * np.prod(volume.spacing) / 1000.0), 1),
        "padding_voxels": int(pad.sum()),
        "crop_ijk": [[int(a), int(b) + 1] for a, b in zip(lo, hi)],
    }
    return out, rec


# ---------------------------------------------------------------------------------------------
# contrast


def _values_named(volume: Volume, pattern: re.Pattern, present_only: bool = False) -> dict[int, str]:
    """Label values whose names match ``pattern`` (with ``present_only``: those with voxels)."""
    named = {v: n for v, n in volume.label_names.items() if pattern.search(n)}
    if not present_only:
        return named
    if volume.labels is None:
        return {}
    counts = np.bincount(volume.labels.ravel(), minlength=max(named, default=0) + 1)
    return {v: n for v, n in named.items() if counts[v] > 0}


def contrast_phase(volume: Volume, contrast_hu: float = 120.0) -> dict:
    """Is this a contrast-enhanced CT? A JSON record a dataset card can print.

    With heart or vessel labels (TotalSegmentator names, :data:`BLOOD_POOL_PATTERN`):
    the median HU of every labelled blood-pool structure and of all of them
    together; ``phase`` is ``"contrast"`` when that median exceeds
    ``contrast_hu`` (unenhanced blood measures 35-50 HU, portal-venous blood
    pool 150-200, arterial 250-450), else ``"unenhanced"``; ``source`` =
    ``"labels"``. Without such labels: :func:`suspected_blood_pool` searches the
    HU statistics; ``phase`` is ``"contrast"`` when it finds a blood pool
    (``source`` = ``"hu_statistics"``), else ``"unknown"``.
    """
    present = _values_named(volume, BLOOD_POOL_PATTERN, present_only=True)
    if present:
        structures = {}
        mask = np.isin(volume.labels, list(present))
        for v, n in sorted(present.items(), key=lambda kv: kv[1]):
            h = volume.hu[volume.labels == v]
            structures[n] = {"median_hu": round(float(np.median(h)), 1), "ml": round(h.size * float(np.prod(volume.spacing)) / 1000, 1)}
        med = float(np.median(volume.hu[mask]))
        phase = "contrast" if med > contrast_hu else "unenhanced"
        return {
            "phase": phase,
            "source": "labels",
            "blood_pool_hu": round(med, 1),
            "threshold_hu": contrast_hu,
            "structures": structures,
            "detail": f"blood-pool median {med:.0f} HU over {len(present)} labelled structures",
        }
    found = suspected_blood_pool(volume)
    if found is not None:
        return {
            "phase": "contrast",
            "source": "hu_statistics",
            "blood_pool_hu": found["median_hu"],
            "threshold_hu": contrast_hu,
            "suspected": found,
            "detail": f"a {found['ml']:.0f} mL compact region of {found['median_hu']:.0f} HU with soft-tissue "
                      "surroundings (no bone shell)",
        }
    return {"phase": "unknown", "source": "hu_statistics", "blood_pool_hu": None, "threshold_hu": contrast_hu,
            "detail": "no heart/vessel labels and no compact enhanced region"}


def suspected_blood_pool(volume: Volume, lo_hu: float = 180.0, hi_hu: float = 700.0, min_ml: float = 60.0,
                         grid_mm: float = 2.0) -> dict | None:
    """The largest compact region of enhanced-blood HU that is not bone marrow, or None.

    Blood pool with contrast (heart chambers, aorta) forms large compact
    regions of ``lo_hu``-``hi_hu`` surrounded by soft tissue, fat or lung;
    trabecular bone of the same HU is smaller (a femoral head 30-50 mL, a
    vertebral body about 30 mL) and sits inside a cortical shell. On a
    ``grid_mm`` grid: voxels in the range, opened with a 3 x 3 x 3 cube (drops
    thin trabeculae and partial-volume rims); a component of at least
    ``min_ml`` whose one-voxel shell is less than 10% above ``hi_hu`` (no
    cortex around it) is a blood-pool candidate. On the shared CTs: the
    contrast chest CT 473 mL at 380 HU, the pulmonary CTA crop 647 mL at 481
    HU; the unenhanced pelvis CT none (its largest region is a femoral head,
    26 mL). An abdominal aorta alone (about 60 mL) is at the limit.
    """
    from scipy import ndimage

    f = _coarse_factors(volume, grid_mm)
    pad = [(0, (-n) % k) for n, k in zip(volume.shape, f)]
    h = np.pad(volume.hu, pad, mode="edge")
    s = h.shape
    coarse = h.reshape(s[0] // f[0], f[0], s[1] // f[1], f[1], s[2] // f[2], f[2]).mean(axis=(1, 3, 5))
    cand = ndimage.binary_opening((coarse > lo_hu) & (coarse < hi_hu), structure=np.ones((3, 3, 3), bool))
    lab, n = ndimage.label(cand)
    if n == 0:
        return None
    voxel_ml = float(np.prod(volume.spacing * np.asarray(f))) / 1000.0
    sizes = np.bincount(lab.ravel())[1:]
    best = None
    for i in np.argsort(sizes)[::-1][:10]:
        if sizes[i] * voxel_ml < min_ml:
            break
        comp = lab == i + 1
        shell = ndimage.binary_dilation(comp, iterations=1) & ~comp
        dense = float((coarse[shell] > hi_hu).mean()) if shell.any() else 1.0
        if dense < 0.10:
            best = {"ml": round(float(sizes[i] * voxel_ml), 1), "median_hu": round(float(np.median(coarse[comp])), 1),
                    "shell_dense_fraction": round(dense, 3)}
            break
    return best


def replace_blood(volume: Volume, blood_hu: float = UNENHANCED_BLOOD_HU, enhanced_hu: float = 150.0,
                  beyond_bone_hu: float = 2000.0) -> tuple[Volume, dict]:
    """Contrast-enhanced blood -> unenhanced blood (``blood_hu``), where labels identify it.

    Every voxel of a blood-pool label (:data:`BLOOD_POOL_PATTERN`) becomes
    ``blood_hu``; so does every *unlabelled* voxel above ``enhanced_hu`` that
    is connected to them through such voxels: the enhanced rim a label map
    misses and the vessels it has no class for (the contrast-filled
    subclavian and axillary vein of the injection arm, pulmonary arteries
    outside the lobes). Bones, organs and lungs keep their HU (they carry
    their own labels), except voxels above ``beyond_bone_hu`` (no bone is that
    dense) connected to the blood pool: undiluted contrast that the label map
    gave to a neighbouring bone (the first ribs beside the injected vein).
    The material stays HU-based: soft tissue (ICRU muscle)
    at the calibration's density for ``blood_hu`` (1.054 g/cm^3 at 40 HU),
    whose attenuation per cm is within 1.7% of ICRU blood's (1.06 g/cm^3) at
    40-150 keV and 3.2% at 20 keV (``tests/test_ct_prep.py`` checks it);
    keeping the HU map keeps the projector's fast path.
    """
    from scipy import ndimage

    pool = _values_named(volume, BLOOD_POOL_PATTERN, present_only=True)
    if volume.labels is None or not pool:
        raise CTPrepError(f"{volume.name}: no heart or vessel labels to replace contrast-enhanced blood in")
    inside = np.isin(volume.labels, list(pool))
    candidates = ((volume.labels == 0) & (volume.hu > enhanced_hu)) | (volume.hu > beyond_bone_hu)
    box = _bbox(inside | candidates)
    lab, _ = ndimage.label((inside | candidates)[box], structure=ndimage.generate_binary_structure(3, 1))
    touching = np.zeros(lab.max() + 1, bool)
    touching[np.unique(lab[inside[box]])] = True
    touching[0] = False
    connected = np.zeros(volume.shape, bool)
    connected[box] = touching[lab]
    followed = connected & ~inside
    hu = volume.hu.copy()
    before = float(np.median(hu[inside]))
    hu[connected] = np.float32(blood_hu)
    out = Volume(hu, volume.world_from_ijk, labels=volume.labels, label_names=volume.label_names, name=volume.name)
    names = np.bincount(volume.labels[inside], minlength=max(pool) + 1)
    voxel_ml = float(np.prod(volume.spacing)) / 1000.0
    return out, {
        "blood_hu": blood_hu,
        "labelled_ml": round(float(inside.sum() * voxel_ml), 1),
        "unlabelled_followed_ml": round(float(followed.sum() * voxel_ml), 1),
        "unlabelled_followed_max_hu": round(float(volume.hu[followed].max()), 1) if followed.any() else None,
        "median_before_hu": round(before, 1),
        "structures": sorted(n for v, n in pool.items() if names[v] > 0),
    }


# ---------------------------------------------------------------------------------------------
# metal


def metal_mask(volume: Volume, threshold_hu: float = 2500.0, min_voxels: int = 10) -> tuple[np.ndarray, list[int]]:
    """Metal voxels: HU above ``threshold_hu`` (cortical bone stays below about 2000 HU; a CT clips metal at
    its top value, 3071 or 4095) in groups of at least ``min_voxels``, plus labels named like implants
    (:data:`METAL_LABEL_PATTERN`). Returns the mask and the metal label values."""
    mask = volume.hu > threshold_hu
    mask &= ~_small_groups(mask, min_voxels)
    labelled = list(_values_named(volume, METAL_LABEL_PATTERN, present_only=True))
    if labelled:
        mask |= np.isin(volume.labels, labelled)
    return mask, labelled


def clip_metal_specks(volume: Volume, threshold_hu: float = 2500.0, min_voxels: int = 10) -> tuple[Volume, int]:
    """Groups of fewer than ``min_voxels`` voxels above ``threshold_hu`` (noise in dense cortex, small
    calcifications, not an implant) clipped to just below the metal ramp, so they stay bone."""
    specks = _small_groups(volume.hu > threshold_hu - DEFAULT_HU_MATERIALS.width / 2, min_voxels)
    if not specks.any():
        return volume, 0
    hu = volume.hu.copy()
    hu[specks] = np.float32(threshold_hu - DEFAULT_HU_MATERIALS.width / 2 - 1)
    out = Volume(hu, volume.world_from_ijk, labels=volume.labels, label_names=volume.label_names, name=volume.name)
    return out, int(specks.sum())


def metal_hu_map(metal: str = "titanium_alloy", threshold_hu: float = 2500.0, density: float | None = None,
                 base: HUMaterialMap = DEFAULT_HU_MATERIALS) -> HUMaterialMap:
    """``base`` with a metal above ``threshold_hu``: ``metal`` at its real ``density`` (default: nominal).

    A CT clips metal at its top HU, which the HU -> density calibration reads
    as about 2.5-3 g/cm^3 of bone; here density ramps over the threshold's
    ramp (``base.width`` HU) to the metal's and stays there. The map keeps the
    projector's fast path (no label materials).
    """
    if metal not in MATERIALS:
        raise MaterialError(f"unknown metal {metal!r}; known: {', '.join(METALS)}")
    if threshold_hu - base.width <= base.thresholds[-1]:
        raise CTPrepError(f"metal threshold {threshold_hu} HU must lie above the last material threshold "
                          f"{base.thresholds[-1]} HU by more than the ramp width {base.width}")
    rho = materials_density(metal, density)
    half = base.width / 2.0
    lo, hi = threshold_hu - half, threshold_hu + half
    cal = base.density
    knots = [k for k in cal.hu if k < lo]
    dens = [float(cal(k)) for k in knots]
    calib = DensityCalibration(hu=tuple(knots) + (lo, hi, hi + 1000.0),
                               density=tuple(dens) + (float(cal(lo)), rho, rho))
    return HUMaterialMap(materials=base.materials + (metal,), thresholds=base.thresholds + (threshold_hu,),
                         width=base.width, density=calib)


def metal_material_model(volume: Volume, metal: str = "titanium_alloy", threshold_hu: float | None = 2500.0,
                         density: float | None = None, labels=None) -> MaterialModel:
    """The material model of a CT with metal, rendered as ``metal`` at ``density`` (default: nominal):
    HU above ``threshold_hu`` (:func:`metal_hu_map`; None: HU-based materials unchanged) and every label in
    ``labels`` (default: those named like implants, :data:`METAL_LABEL_PATTERN`)."""
    if labels is None:
        labels = list(_values_named(volume, METAL_LABEL_PATTERN, present_only=True))
    rho = materials_density(metal, density)
    hu_map = DEFAULT_HU_MATERIALS if threshold_hu is None else metal_hu_map(metal, threshold_hu, density)
    return MaterialModel(hu_map=hu_map, label_materials={int(v): LabelMaterial(metal, rho) for v in labels})


# ---------------------------------------------------------------------------------------------
# slices


def _pchip_slopes(y: np.ndarray, h: float) -> np.ndarray:
    """Fritsch-Carlson derivatives along axis 0 of samples ``y`` spaced ``h`` (SciPy's PCHIP rule)."""
    m = np.diff(y, axis=0) / h
    d = np.zeros_like(y)
    if len(y) == 2:
        d[:] = m
        return d
    m0, m1 = m[:-1], m[1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        hm = 2.0 / (1.0 / m0 + 1.0 / m1)  # harmonic mean (equal weights on a uniform grid)
    d[1:-1] = np.where((np.sign(m0) * np.sign(m1) > 0), hm, 0.0)
    for end, (ma, mb) in ((0, (m[0], m[1])), (-1, (m[-1], m[-2]))):
        de = (3.0 * ma - mb) / 2.0
        de = np.where(np.sign(de) != np.sign(ma), 0.0, de)
        de = np.where((np.sign(ma) != np.sign(mb)) & (np.abs(de) > np.abs(3.0 * ma)), 3.0 * ma, de)
        d[end] = de
    return d


def pchip_upsample(y: np.ndarray, factor: int, axis: int, chunk: int = 16) -> np.ndarray:
    """Monotone cubic (PCHIP) samples of ``y`` at ``1/factor`` of its spacing along ``axis``.

    The original samples are kept exactly (new length ``(n - 1) * factor + 1``);
    between them the curve never overshoots its neighbours (no ringing at
    bone edges), unlike cubic splines. Processed in chunks of the first other
    axis to bound memory (float32).
    """
    if factor == 1:
        return y
    y = np.moveaxis(y, axis, 0)
    n = y.shape[0]
    out = np.empty(((n - 1) * factor + 1,) + y.shape[1:], np.float32)
    t = (np.arange(factor, dtype=np.float64) / factor)[:, None, None]
    h00, h10 = 2 * t**3 - 3 * t**2 + 1, t**3 - 2 * t**2 + t
    h01, h11 = -2 * t**3 + 3 * t**2, t**3 - t**2
    for c0 in range(0, y.shape[1], chunk):
        yc = y[:, c0 : c0 + chunk].astype(np.float64)
        if n < 2:
            out[:, c0 : c0 + chunk] = yc
            continue
        d = _pchip_slopes(yc, 1.0)
        y0, y1, d0, d1 = yc[:-1], yc[1:], d[:-1], d[1:]
        seg = (h00[:, None] * y0[None] + h10[:, None] * d0[None] + h01[:, None] * y1[None] + h11[:, None] * d1[None])
        # seg: (factor, n-1, chunk, ...) -> interleave: sample k*factor + j
        seg = np.moveaxis(seg, 0, 1).reshape(((n - 1) * factor,) + yc.shape[1:])
        out[: (n - 1) * factor, c0 : c0 + chunk] = seg
        out[-1, c0 : c0 + chunk] = yc[-1]
    return np.moveaxis(out, 0, axis)


def interpolate_slices(volume: Volume, slice_mm: float = 1.5, round_hu: bool = True) -> tuple[Volume, dict]:
    """Refine every axis whose spacing exceeds ``slice_mm`` by the whole factor ``ceil(spacing / slice_mm)``.

    Along such an axis HU are interpolated by monotone cubic Hermite (PCHIP)
    curves through the original samples; the other axes are untouched (no
    in-plane blur). The box shrinks by half a new voxel at each refined end
    (the first and last samples keep their positions). Labels take the
    nearest original slice. HU are rounded to whole numbers (at most 0.5 HU)
    so the projector keeps its 2-byte fast path.
    """
    factors = [int(np.ceil(s / slice_mm - 1e-6)) if s > slice_mm * (1 + 1e-6) else 1 for s in volume.spacing]
    rec = {"slice_mm": slice_mm, "factors": factors, "spacing_before_mm": [round(float(s), 4) for s in volume.spacing]}
    if all(f == 1 for f in factors):
        rec["spacing_after_mm"] = rec["spacing_before_mm"]
        return volume, rec
    hu = volume.hu
    labels = volume.labels
    for ax, f in enumerate(factors):
        if f == 1 or hu.shape[ax] < 2:
            continue
        hu = pchip_upsample(hu, f, ax)
        if labels is not None:
            src = np.minimum(np.round(np.arange(hu.shape[ax]) / f).astype(int), labels.shape[ax] - 1)
            labels = np.take(labels, src, axis=ax)
    if round_hu:
        hu = np.rint(hu, out=hu)
    scale = np.diag([1.0 / f for f in factors] + [1.0])
    out = Volume(hu, Transform(volume.world_from_ijk.matrix @ scale), labels=labels, label_names=volume.label_names,
                 name=volume.name)
    rec["spacing_after_mm"] = [round(float(s), 4) for s in out.spacing]
    rec["shape_after"] = list(out.shape)
    return out, rec


def bin_voxels(volume: Volume, bin_mm: float) -> tuple[Volume, dict]:
    """Average blocks of ``floor(bin_mm / spacing)`` voxels along every axis finer than ``bin_mm``.

    A radiograph's pixel integrates the patient over its area; one ray per pixel through
    voxels much finer than that area point-samples detail and CT noise instead. Block means
    are that area average, exact for rays along an unbinned axis (a parallel projection's
    total mass is unchanged) and approximate for oblique ones. HU are averaged and rounded to
    whole numbers (the projector's 2-byte path), which is the mean attenuation wherever HU ->
    density is linear: within each tissue ramp, not across a metal threshold (so
    :func:`prepare_ct` does not bin CTs with metal). Labels take the most frequent value of
    each block (ties: the first in memory order). Voxels beyond the last whole block (fewer
    than one block, at the far end of an axis) are dropped.
    """
    factors = [max(int(np.floor(bin_mm / s + 1e-6)), 1) for s in volume.spacing]
    rec = {"bin_mm": bin_mm, "factors": factors, "spacing_before_mm": [round(float(s), 4) for s in volume.spacing]}
    if all(f == 1 for f in factors) or any(n < f for n, f in zip(volume.shape, factors)):
        rec["spacing_after_mm"] = rec["spacing_before_mm"]
        return volume, rec
    fx, fy, fz = factors
    nx, ny, nz = (n // f for n, f in zip(volume.shape, factors))
    blocks = lambda a: a[: nx * fx, : ny * fy, : nz * fz].reshape(nx, fx, ny, fy, nz, fz)  # noqa: E731
    hu = np.rint(blocks(volume.hu).mean(axis=(1, 3, 5), dtype=np.float64)).astype(np.float32)
    labels = None
    if volume.labels is not None:
        labels = np.empty((nx, ny, nz), dtype=volume.labels.dtype)
        for i in range(0, nx, 16):  # (block voxels)^2 comparisons per block, in slabs to bound memory
            b = blocks(volume.labels)[i : i + 16].transpose(0, 2, 4, 1, 3, 5).reshape(-1, fx * fy * fz)
            votes = (b[:, :, None] == b[:, None, :]).sum(axis=2)
            labels[i : i + 16] = b[np.arange(len(b)), votes.argmax(axis=1)].reshape(-1, ny, nz)
    # block (I, J, K) spans fine voxels f*I .. f*I + f - 1: its centre is fine index f*I + (f - 1) / 2
    scale = np.diag([float(f) for f in factors] + [1.0])
    scale[:3, 3] = [(f - 1) / 2.0 for f in factors]
    out = Volume(hu, Transform(volume.world_from_ijk.matrix @ scale), labels=labels, label_names=volume.label_names,
                 name=volume.name)
    rec["spacing_after_mm"] = [round(float(s), 4) for s in out.spacing]
    rec["shape_after"] = list(out.shape)
    return out, rec


# ---------------------------------------------------------------------------------------------
# coverage


def coverage_volume(volume: Volume, body: np.ndarray | None = None, grid_mm: float = 5.0,
                    extend_mm: float = 400.0, extend_inplane_mm: float = 150.0) -> tuple[Volume, dict]:
    """Where the patient goes on beyond the CT: a coarse volume labelled ``uncovered``.

    The body (:func:`body_mask`) is extrapolated into what the CT did not
    reconstruct: into the padding outside the reconstruction circle (each
    padding voxel takes the body state of its nearest reconstructed voxel in
    its slice), and beyond every face of the volume that cuts the body (that
    face's body section extruded outwards: ``extend_mm`` beyond the first and
    last slice, where the patient goes on to the head or the legs;
    ``extend_inplane_mm`` beyond the other faces, where a flank or an arm is
    cut). Tissue there is missing from the CT; a ray through it is not
    covered. On a ``grid_mm`` grid; the voxels of missing tissue are labelled
    1 = ``uncovered_ends`` (beyond the first and last slice) and 2 =
    ``uncovered_sides`` (cut off at the sides).
    """
    from scipy import ndimage

    if body is None:
        body = body_mask(volume)
    f = _coarse_factors(volume, grid_mm)
    cs = volume.spacing * np.asarray(f)
    b = _block_mean(body, f) >= 0.25
    pad = _block_mean(padding_mask(volume), f) >= 0.5
    missing = np.zeros_like(b)
    ax = _slice_axis(volume)
    if pad.any():
        for k in range(b.shape[ax]):
            sl = [slice(None)] * 3
            sl[ax] = k
            p2, b2 = pad[tuple(sl)], b[tuple(sl)]
            if p2.any() and (~p2).any():
                _, idx = ndimage.distance_transform_edt(p2, return_indices=True)
                missing[tuple(sl)] = p2 & b2[tuple(idx)]
    known = (b & ~pad) | missing
    truncated = []
    pads = []
    for a in range(3):
        n_ext = int(np.ceil((extend_mm if a == ax else extend_inplane_mm) / cs[a]))
        lo_face = np.take(known, 0, axis=a).any()
        hi_face = np.take(known, -1, axis=a).any()
        pads.append((n_ext if lo_face else 0, n_ext if hi_face else 0))
        truncated += [f"{'ijk'[a]}{s}" for s, t in (("-", lo_face), ("+", hi_face)) if t]
    grid = np.pad(known, pads, mode="edge")
    inner = tuple(slice(lo, lo + n) for (lo, _), n in zip(pads, known.shape))
    grid[inner] = missing  # inside the CT only the extrapolated padding is missing
    # (edge-padding a face without body extrudes nothing.) Label 1: beyond the first or last slice (the
    # patient goes on to the head or the legs); 2: cut off at the sides (the FOV circle, flanks, arms).
    labels = grid.astype(np.int32) * 2
    idx = np.arange(grid.shape[ax])
    ends = (idx < pads[ax][0]) | (idx >= pads[ax][0] + known.shape[ax])
    shape = [1, 1, 1]
    shape[ax] = -1
    labels[grid & ends.reshape(shape)] = 1
    hu = np.where(grid, np.float32(0.0), np.float32(-1000.0))
    origin_shift = -np.asarray([lo for lo, _ in pads], dtype=np.float64)
    # coarse voxel c covers original voxels [c f, (c + 1) f - 1]: its centre is at c f + (f - 1) / 2
    m = np.eye(4)
    m[:3, :3] = np.diag(np.asarray(f, dtype=np.float64))
    m[:3, 3] = (np.asarray(f) - 1) / 2.0 + origin_shift * np.asarray(f)
    wfi = volume.world_from_ijk @ Transform(m)
    cov = Volume(hu, wfi, labels=labels, label_names=COVERAGE_LABELS, name=f"{volume.name}-coverage")
    rec = {
        "grid_mm": [round(float(c), 3) for c in cs],
        "truncated_faces": truncated,
        "padding_truncation_ml": round(float(missing.sum() * np.prod(cs) / 1000.0), 1),
        "extend_mm": extend_mm,
        "extend_inplane_mm": extend_inplane_mm,
    }
    return cov, rec


#: Labels of a coverage volume (:func:`coverage_volume`).
COVERAGE_LABELS = {1: "uncovered_ends", 2: "uncovered_sides"}


class Coverage:
    """Per-view covered masks of one CT (the coverage volume, projected with its own small projector)."""

    #: a ray is uncovered when it runs more than this through missing tissue, mm
    threshold_mm = 0.5

    def __init__(self, volume: Volume, device: str = "cpu"):
        if volume.labels is None or dict(volume.label_names) != COVERAGE_LABELS:
            raise VolumeError(f"a coverage volume carries the labels {COVERAGE_LABELS} (see coverage_volume)")
        self.volume = volume
        self.device = device
        self._projector = None

    def missing_path_mm(self, camera: Camera, sides: bool = True) -> np.ndarray:
        """Path length (mm) of each pixel's ray through tissue the CT does not contain; ``sides=False``
        counts only what lies beyond its first and last slice."""
        from projectors.projector import Projector

        zero = np.zeros(camera.shape, np.float32)
        if not (self.volume.labels > 0).any():
            return zero
        if self._projector is None:
            self._projector = Projector(self.volume, device=self.device, mode="exact")
        try:
            proj = self._projector.project(camera)
        except GeometryError:  # the view misses the coverage volume entirely: nothing missing on its rays
            return zero
        ends = proj.path_length.get("uncovered_ends", zero)
        return ends + proj.path_length.get("uncovered_sides", zero) if sides else ends

    #: masks are computed on a binned detector of at least this many pixels a side: a bin then spans
    #: about the coverage grid (~5 mm) at the patient for the presets' 256^2 detectors
    min_pixels = 64

    def mask(self, camera: Camera, sides: bool = True) -> np.ndarray:
        """(H, W) bool: True where the ray's whole path through the patient lies inside the CT.

        ``sides=False``: only the ends of the scan count (a lateral chest is taken with the arms raised:
        what a CT cuts off at its sides is mostly arm, which such a radiograph does not show either).
        A large detector is binned by f (to at least :attr:`min_pixels` a side), each bin's centre ray
        read, and the uncovered pixels grown by f / 2: between the centre rays of a covered and an
        uncovered bin the edge lies within half a bin of either block's border, so covered pixels stay
        covered and at most f pixels more are lost at an edge.
        """
        f = 1
        while all(n % (2 * f) == 0 and n // (2 * f) >= self.min_pixels for n in camera.shape):
            f *= 2
        if f == 1:
            return self.missing_path_mm(camera, sides) <= self.threshold_mm
        from scipy.ndimage import binary_dilation

        uncovered = self.missing_path_mm(camera.binned(f), sides) > self.threshold_mm
        uncovered = np.repeat(np.repeat(uncovered, f, axis=0), f, axis=1)
        return ~binary_dilation(uncovered, np.ones((f + 1, f + 1), bool))


def largest_rectangle(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """The largest axis-aligned rectangle of True pixels: ``(v0, v1, u0, u1)`` half-open, or None."""
    H, W = mask.shape
    heights = np.zeros(W + 1, dtype=np.int64)
    best, best_area = None, 0
    for v in range(H):
        heights[:W] = np.where(mask[v], heights[:W] + 1, 0)
        stack: list[int] = []
        for u in range(W + 1):
            h = heights[u]
            while stack and heights[stack[-1]] >= h:
                top = stack.pop()
                height = heights[top]
                left = stack[-1] + 1 if stack else 0
                area = height * (u - left)
                if area > best_area:
                    best_area, best = area, (v - height + 1, v + 1, left, u)
            stack.append(u)
    return best if best_area > 0 else None


def _largest_rectangle_fast(mask: np.ndarray, block: int = 4) -> tuple[int, int, int, int] | None:
    """:func:`largest_rectangle` on ``block`` x ``block`` blocks (a block counts when all its pixels do),
    then each side pushed outwards on the full grid while the new row / column stays inside ``mask``."""
    H, W = mask.shape
    if H * W <= 128 * 128:
        return largest_rectangle(mask)
    hb, wb = H // block, W // block
    coarse = mask[: hb * block, : wb * block].reshape(hb, block, wb, block).all(axis=(1, 3))
    rect = largest_rectangle(coarse)
    if rect is None:
        return largest_rectangle(mask)
    v0, v1, u0, u1 = (x * block for x in rect)
    grown = True
    while grown:
        grown = False
        if v0 > 0 and mask[v0 - 1, u0:u1].all():
            v0, grown = v0 - 1, True
        if v1 < H and mask[v1, u0:u1].all():
            v1, grown = v1 + 1, True
        if u0 > 0 and mask[v0:v1, u0 - 1].all():
            u0, grown = u0 - 1, True
        if u1 < W and mask[v0:v1, u1].all():
            u1, grown = u1 + 1, True
    return v0, v1, u0, u1


def collimation_field(covered: np.ndarray, margin_px: int = 1) -> np.ndarray:
    """The exposed field of a rectangular collimator set inside the covered pixels (bool, (H, W)).

    The largest rectangle of covered pixels, shrunk by ``margin_px`` on each
    side that does not lie on the detector's edge. All True when everything is
    covered; all False when nothing is.
    """
    covered = np.asarray(covered, bool)
    field_ = np.zeros_like(covered)
    if covered.all():
        field_[:] = True
        return field_
    rect = _largest_rectangle_fast(covered)
    if rect is None:
        return field_
    v0, v1, u0, u1 = rect
    H, W = covered.shape
    v0 += margin_px if v0 > 0 else 0
    u0 += margin_px if u0 > 0 else 0
    v1 -= margin_px if v1 < H else 0
    u1 -= margin_px if u1 < W else 0
    if v1 > v0 and u1 > u0:
        field_[v0:v1, u0:u1] = True
    return field_


#: Collimator blades: 3 mm of lead (11.35 g/cm^3), transmission about 3e-4 at 120 kVp (the primary beam
#: outside the field; scatter from the exposed field still reaches the unexposed border).
COLLIMATOR_AREAL_DENSITY = 0.3 * 11.35


def collimate(areal_density: dict[str, np.ndarray], field_mask: np.ndarray) -> dict[str, np.ndarray]:
    """Areal densities with the collimator closed outside ``field_mask``: a ``lead`` channel of 3 mm."""
    field_mask = np.asarray(field_mask, bool)
    out = dict(areal_density)
    lead = np.where(field_mask, np.float32(0.0), np.float32(COLLIMATOR_AREAL_DENSITY))
    out["lead"] = (out["lead"] + lead) if "lead" in out else lead
    return out
