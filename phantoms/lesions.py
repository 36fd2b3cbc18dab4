"""COVID-19 pneumonia lesions inserted into the lungs of a CT (real or phantom), with a 3D lesion label.

Model, from the radiology literature:

* **Appearance.** Ground-glass opacities (GGO, hazy increased attenuation
  that keeps bronchial and vascular margins visible; Fleischner Society
  glossary, Hansell et al., Radiology 2008;246:697) and consolidations
  (attenuation that hides the vessels). Default HU bands follow quantitative
  CT practice for COVID-19: GGO -750..-300 HU, consolidation -300..+50 HU
  (the -300 HU GGO/consolidation boundary performed best in Quantitative CT
  for detecting COVID-19 pneumonia, BMC Infect Dis 2021, doi:10.1186/s12879-021-06556-z;
  lesion mean densities of -462 +/- 99 HU with histogram peaks at -500..-700 HU
  were measured by Zhou et al., Chin J Acad Radiol 2020, doi:10.1007/s42058-020-00034-2).
  GGO keeps vessels: a voxel takes ``max(original HU, lesion HU)``; a
  consolidation replaces it. Texture: smooth correlated noise (``texture_hu``).
* **Distribution.** Bilateral, peripheral (subpleural) and basal
  predominance (Bernheim et al., Radiology 2020;295:200463; Shi et al.,
  Lancet Infect Dis 2020;20:425): lesion centres are drawn in lung voxels
  with weight ``exp(-depth / peripheral_mm)`` (depth = distance to the lung
  surface), lower lobes weighted ``basal_weight`` times more, and left/right
  alternate so that two or more lesions are bilateral.
* **Shape.** An ellipsoid (20-60 mm) with an irregular margin: its boundary
  is pushed in and out by smooth noise; cut to the lung mask, so a lesion
  never leaves the lung.

:func:`sample_lesions` draws the parameters (JSON-serializable) from a
``numpy.random.Generator`` and the lung label map; :func:`insert_lesions` is
deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from projectors.volume import Volume


class LesionError(ValueError):
    """Impossible lesion parameters or a volume without usable lung labels."""


KIND_HU = {"ggo": (-750.0, -300.0), "consolidation": (-300.0, 50.0)}


@dataclass(frozen=True)
class LesionParameters:
    lesions: list = field(default_factory=list)  # dicts: kind, center (3), radii (3), hu, margin, seed
    hu_ranges: dict = field(default_factory=lambda: {k: list(v) for k, v in KIND_HU.items()})
    texture_hu: float = 40.0

    def __post_init__(self):
        for k, (lo, hi) in self.hu_ranges.items():
            if not lo < hi:
                raise LesionError(f"HU range of {k} must be (low, high) with low < high, got {(lo, hi)}")
        for les in self.lesions:
            if les.get("kind") not in self.hu_ranges:
                raise LesionError(f"lesion kind must be one of {sorted(self.hu_ranges)}, got {les.get('kind')!r}")
            if len(les["center"]) != 3 or len(les["radii"]) != 3 or min(les["radii"]) <= 0:
                raise LesionError(f"lesion needs a 3D center and three positive radii, got {les}")

    def to_dict(self) -> dict:
        return {"lesions": self.lesions, "hu_ranges": self.hu_ranges, "texture_hu": self.texture_hu}


def _lung_mask(volume: Volume, lung_names) -> np.ndarray:
    if volume.labels is None:
        raise LesionError(f"{volume.name}: lesions need a lung label map")
    values = [v for v, n in volume.label_names.items() if n in set(lung_names)]
    if not values:
        raise LesionError(f"{volume.name}: no lung labels among {sorted(volume.label_names.values())}")
    return np.isin(volume.labels, values)


def sample_lesions(
    rng: np.random.Generator,
    volume: Volume,
    lung_names=("lung", "lung_left", "lung_right", "lung_upper_lobe_left", "lung_lower_lobe_left",
                "lung_upper_lobe_right", "lung_middle_lobe_right", "lung_lower_lobe_right"),
    n_mean: float = 4.0,
    p_consolidation: float = 0.25,
    peripheral_mm: float = 10.0,
    basal_weight: float = 2.5,
) -> LesionParameters:
    """Draw lesions for this lung (see module notes). At least one lesion."""
    from scipy import ndimage

    # work on a ~2.5 mm subgrid: lesion centres need no finer placement
    step = tuple(int(s) for s in np.maximum(np.round(2.5 / volume.spacing), 1))
    sub = tuple(slice(None, None, s) for s in step)
    lung = _lung_mask(volume, lung_names)[sub]
    labels = volume.labels[sub]
    depth = ndimage.distance_transform_edt(lung, sampling=volume.spacing * step)
    idx = np.argwhere(lung) * step
    w = np.exp(-depth[lung] / peripheral_mm)
    world = volume.world_from_ijk.apply(idx.astype(float))
    lower = {v for v, n in volume.label_names.items() if "lower_lobe" in n}
    if lower:
        w = w * np.where(np.isin(labels[lung], list(lower)), basal_weight, 1.0)
    else:  # no lobes: basal = the lower half of the lung
        w = w * (1.0 + (basal_weight - 1.0) * (world[:, 2] < np.median(world[:, 2])))
    mid_x = np.median(world[:, 0])
    n = max(1, int(rng.poisson(n_mean)))
    first_left = rng.random() < 0.5
    lesions = []
    for i in range(n):
        side = (world[:, 0] < mid_x) if ((i % 2 == 0) == first_left) else (world[:, 0] >= mid_x)
        ws = w * side
        k = rng.choice(len(idx), p=ws / ws.sum())
        kind = "consolidation" if rng.random() < p_consolidation else "ggo"
        size = rng.uniform(10.0, 30.0)
        lesions.append({
            "kind": kind,
            "center": [float(x) for x in world[k]],
            "radii": [float(size * rng.uniform(0.7, 1.3)) for _ in range(3)],
            "hu": float(rng.uniform(*KIND_HU[kind])),
            "margin": float(rng.uniform(0.15, 0.35)),
            "seed": int(rng.integers(0, 2**31 - 1)),
        })
    return LesionParameters(lesions=lesions)


def insert_lesions(volume: Volume, params: LesionParameters, lung_names=None, label: str = "lesion") -> Volume:
    """``volume`` with the lesions' HU written into its lungs and a ``label`` structure for them."""
    from scipy import ndimage

    lung_names = lung_names or [n for n in volume.label_names.values() if n.startswith("lung")]
    lung = _lung_mask(volume, lung_names)
    hu = volume.hu.copy()
    labels = volume.labels.copy()
    names = dict(volume.label_names)
    value = next((v for v, n in names.items() if n == label), max(names, default=0) + 1)
    names[value] = label
    ijk_from_world = volume.ijk_from_world
    for les in params.lesions:
        c, r = np.asarray(les["center"]), np.asarray(les["radii"])
        lo_w, hi_w = c - 1.5 * r, c + 1.5 * r
        corners = np.array([[x, y, z] for x in (lo_w[0], hi_w[0]) for y in (lo_w[1], hi_w[1]) for z in (lo_w[2], hi_w[2])])
        ijk = ijk_from_world.apply(corners)
        i0 = np.clip(np.floor(ijk.min(0)).astype(int), 0, volume.shape)
        i1 = np.clip(np.ceil(ijk.max(0)).astype(int) + 1, 0, volume.shape)
        if np.any(i1 <= i0):
            continue
        sl = tuple(slice(a, b) for a, b in zip(i0, i1))
        grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(i0, i1)], indexing="ij"), -1)
        p = volume.world_from_ijk.apply(grid.reshape(-1, 3).astype(float)).reshape(grid.shape)
        rr = np.sqrt(np.sum(((p - c) / r) ** 2, axis=-1))
        rng = np.random.default_rng(les["seed"])
        sigma = np.maximum(0.25 * r.min() / volume.spacing, 1.0)
        noise = ndimage.gaussian_filter(rng.standard_normal(rr.shape), sigma)
        noise /= max(noise.std(), 1e-9)
        inside = (rr < 1.0 + les["margin"] * noise) & lung[sl]
        if not inside.any():
            continue
        tex = ndimage.gaussian_filter(rng.standard_normal(rr.shape), 1.0)
        tex /= max(tex.std(), 1e-9)
        lo, hi = params.hu_ranges[les["kind"]]
        val = np.clip(les["hu"] + params.texture_hu * tex, lo, hi).astype(np.float32)
        block = hu[sl]
        new = np.maximum(block, val) if les["kind"] == "ggo" else val
        block[inside] = new[inside]
        labels[sl][inside] = value
    return Volume(hu, volume.world_from_ijk, labels=labels, label_names=names, name=volume.name)


def crop_to_labels(volume: Volume, names, margin_mm: float = 10.0) -> Volume:
    """The sub-volume around the voxels of the named labels (plus a margin), same world placement."""
    values = [v for v, n in volume.label_names.items() if n in set(names)]
    if volume.labels is None or not values:
        raise LesionError(f"{volume.name}: none of the labels {list(names)}")
    idx = np.argwhere(np.isin(volume.labels, values))
    m = np.ceil(margin_mm / volume.spacing).astype(int)
    i0 = np.maximum(idx.min(0) - m, 0)
    i1 = np.minimum(idx.max(0) + m + 1, volume.shape)
    sl = tuple(slice(int(a), int(b)) for a, b in zip(i0, i1))
    shift = np.eye(4)
    shift[:3, 3] = i0
    from projectors.geometry import Transform

    return Volume(volume.hu[sl], volume.world_from_ijk @ Transform(shift), labels=volume.labels[sl],
                  label_names=volume.label_names, name=volume.name)
