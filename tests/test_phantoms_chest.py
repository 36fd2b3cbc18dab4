"""Chest phantom: anatomy in RAS, lobes, HU, lesions inserted into it, determinism, errors."""

import json

import numpy as np
import pytest

from phantoms.chest import CHEST_LABELS, ChestError, ChestParameters, build_chest, sample_chest_parameters
from phantoms.lesions import KIND_HU, LesionParameters, insert_lesions, sample_lesions
from phantoms.totalseg import LUNG_LOBES


@pytest.fixture(scope="module")
def chest():
    return build_chest(sample_chest_parameters(np.random.default_rng(3)), spacing=3.0)


def _centroid(vol, name):
    v = [k for k, n in vol.label_names.items() if n == name][0]
    return vol.world_from_ijk.apply(np.argwhere(vol.labels == v).mean(0))


def test_chest_anatomy_and_lobes(chest):
    vol = chest.volume
    present = set(np.unique(vol.labels).tolist()) - {0}
    assert present == set(CHEST_LABELS)
    c = {n: _centroid(vol, n) for n in CHEST_LABELS.values()}
    for lobe in LUNG_LOBES:
        assert (c[lobe][0] < 0) == lobe.endswith("left"), lobe  # RAS: left is -x
    assert c["lung_upper_lobe_left"][2] > c["lung_lower_lobe_left"][2]
    assert c["lung_upper_lobe_right"][2] > c["lung_middle_lobe_right"][2]
    assert c["lung_middle_lobe_right"][1] > c["lung_lower_lobe_right"][1]  # middle lobe is anterior
    assert c["vertebrae"][1] < c["heart"][1] < c["sternum"][1]  # spine at the back, sternum in front
    assert c["heart"][0] < 0  # heart leans to the patient's left
    assert c["scapula_left"][1] < 0 < c["clavicula_left"][1] + 80


def test_chest_hu(chest):
    vol = chest.volume
    p = ChestParameters.from_dict(chest.parameters)
    lobes = np.isin(vol.labels, [k for k, n in CHEST_LABELS.items() if n in LUNG_LOBES])
    assert abs(np.median(vol.hu[lobes]) - p.hu_lung) < 40
    airway = vol.labels == 6
    assert np.percentile(vol.hu[airway], 25) < -800  # the rest: partial volume of 4-9 mm tubes on 3 mm voxels
    heart = vol.labels == 7
    assert abs(np.median(vol.hu[heart]) - p.hu_blood) < 25
    ribs = vol.labels == 9
    assert np.median(vol.hu[ribs]) > 150
    assert vol.hu[0, 0, 0] == pytest.approx(-1000.0)  # air outside the body


def test_lesions_in_the_phantom_lungs(chest):
    vol = chest.volume
    params = sample_lesions(np.random.default_rng(0), vol, n_mean=4)
    out = insert_lesions(vol, params)
    lesion = out.labels == [k for k, n in out.label_names.items() if n == "lesion"][0]
    lobes = np.isin(vol.labels, [k for k, n in CHEST_LABELS.items() if n in LUNG_LOBES])
    assert lesion.sum() > 50 and np.all(lobes[lesion])
    changed = out.hu != vol.hu
    lo = min(r[0] for r in KIND_HU.values())
    hi = max(r[1] for r in KIND_HU.values())
    assert lo <= out.hu[changed].min() and out.hu[changed].max() <= hi
    again = LesionParameters(**json.loads(json.dumps(params.to_dict())))
    np.testing.assert_array_equal(insert_lesions(vol, again).hu, out.hu)


def test_round_trip_determinism_and_errors():
    p = sample_chest_parameters(np.random.default_rng(9))
    q = ChestParameters.from_dict(json.loads(json.dumps(p.to_dict())))
    assert p == q
    np.testing.assert_array_equal(build_chest(p, spacing=6.0).volume.hu, build_chest(q, spacing=6.0).volume.hu)
    with pytest.raises(ChestError, match="unknown chest parameter"):
        ChestParameters.from_dict({"width": 300.0, "lung_size": 2})
    with pytest.raises(ChestError, match="smaller than its width"):
        ChestParameters(width=200.0, depth=250.0)
    with pytest.raises(ChestError, match="spacing"):
        build_chest(p, spacing=-1.0)
