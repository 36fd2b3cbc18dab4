"""synthex bench sim2real / realism end to end on the tiny preset (32 px, a few images, 1 epoch, tiny
networks): every source in the table, the reference domain held out, a resumed run skipping what is done.

One study is run once for the module (about 30 s on 2 idle cores; the bundled pelvis CT's deformed
instances dominate); the tests read it, resume it and change it.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from synthex.bench import study as S
from synthex.bench.sim2real import METRICS, run_sim2real
from synthex.bench.steps import BenchError

STEPS = ["render-naive", "render-realistic", "render-reference", "target-split", "gan-pix2pix", "gan-cyclegan",
         *[f"train-{s.name}" for s in S.SOURCES]]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "hip-tiny"
    lines: list[str] = []
    res = run_sim2real("hip", "tiny", out=out, device="cpu", threads=1, progress=False, log=lines.append)
    return {"out": out, "results": res, "lines": lines}


def test_the_table_has_every_source_scored_on_one_target_test_split(tiny):
    res, out = tiny["results"], tiny["out"]
    assert [r["name"] for r in res["rows"]] == [s.name for s in S.SOURCES]
    test_names = None
    for row in res["rows"]:
        for key, _, _ in METRICS["hip"]:
            m = row["metrics"][key]
            assert m is not None and m["mean"] is not None and np.isfinite(m["mean"]), (row["name"], key)
        per_image = json.loads((out / "models" / row["name"] / "metrics.json").read_text())["per_image"]
        names = sorted(r["name"] for r in per_image)
        test_names = test_names or names
        assert names == test_names  # every model scored on the same test images
        assert row["randomization"] == {"naive": "none", "realistic": "none"}.get(row["name"], "strong")
    assert len(test_names) == res["target_split"]["test_images"] == 4
    md = (out / "sim2real_hip.md").read_text()
    assert md.splitlines()[0].startswith("**The target is a rendered reference domain, not real X-rays**")
    for row in res["rows"]:
        assert f"| {row['label']} |" in md
    assert "--task hip --preset tiny" in md
    from PIL import Image

    w, h = Image.open(out / "sim2real_hip_samples.png").size
    assert w >= 6 * 160 and h >= 4 * 160  # 6 sources x (3 examples + the label outlines)
    assert [l.split()[1] for l in tiny["lines"] if l.startswith("[") and " done " in l] == ["done"] * len(STEPS)


def test_reference_subjects_are_disjoint_from_every_training_source(tiny):
    out = tiny["out"]
    training = [S.dataset_anatomy(out / "data" / k) for k in ("naive", "realistic")]
    reference = S.dataset_anatomy(out / "data" / "reference")
    split = json.loads((out / "steps" / "target-split.json").read_text())["result"]
    used = split["train_subjects"] + split["test_subjects"]
    seen = {k for t in training for k in t.values()}
    assert used and all(reference[s] not in seen for s in used)
    # the CT as scanned is in every population, so it was dropped from the reference; nothing else was
    assert list(split["dropped_subjects"].values()) == ["ct:totalseg_example_pelvis:original"]
    assert set(used) | set(split["dropped_subjects"]) == set(reference)
    assert not set(split["train_subjects"]) & set(split["test_subjects"])
    # what the models were tested on carries those subjects only
    from training.data import open_source

    assert set(open_source(out / "data" / "target-test").subjects) == set(split["test_subjects"])
    assert set(open_source(out / "data" / "target-train").subjects) == set(split["train_subjects"])


def test_the_reference_was_rendered_with_monte_carlo_scatter_and_the_held_out_detector(tiny):
    from synthex.dataset import _text, open_dataset

    def physics(name):
        ds = open_dataset(tiny["out"] / "data" / name, verify=False)
        return [json.loads(_text(p))["physics"] for p in ds.read_all("params")]

    ref = physics("reference")
    assert all(p["scatter"]["model"] == "monte_carlo" and p["detector"]["phosphor"] == "gos" for p in ref)
    assert len({p["scatter"]["seed"] for p in ref}) == len(ref)  # each image its own photons
    assert all(p["scatter"]["model"] == "fast" and p["detector"]["phosphor"] != "gos" for p in physics("realistic"))


def test_a_resumed_run_skips_finished_steps_and_reruns_an_unfinished_one(tiny):
    out = tiny["out"]
    stamp = {p: p.stat().st_mtime_ns for p in (out / "data").rglob("*") if p.is_file()}
    lines: list[str] = []
    res = run_sim2real("hip", "tiny", out=out, device="cpu", threads=1, progress=False, log=lines.append)
    assert res["ran_now"] == [] and res["skipped_now"] == STEPS
    assert all(p.stat().st_mtime_ns == t for p, t in stamp.items())
    assert sum(" skip " in l for l in lines) == len(STEPS)
    # an unfinished step (no record): only it runs again, and its result is the same (deterministic training)
    before = json.loads((out / "models" / "target" / "metrics.json").read_text())["summary"]["dice_mean"]
    (out / "steps" / "train-target.json").unlink()
    shutil.rmtree(out / "models" / "target")
    res = run_sim2real("hip", "tiny", out=out, device="cpu", threads=1, progress=False, log=None)
    assert res["ran_now"] == ["train-target"]
    after = json.loads((out / "models" / "target" / "metrics.json").read_text())["summary"]["dice_mean"]
    assert after == before


def test_other_settings_in_the_same_run_folder_are_refused(tiny):
    with pytest.raises(BenchError, match="step 'render-naive' .* other settings .*render.seed"):
        run_sim2real("hip", "tiny", out=tiny["out"], seed=1, device="cpu", progress=False, log=None)


@pytest.mark.slow  # Inception features and 2048 x 2048 eigendecompositions per FID: minutes on a busy CPU
def test_realism_reuses_the_study_and_compares_the_right_sets(tiny):
    from synthex.bench.realism import SETS, run_realism
    from training.gan.data import load_labelled
    from training.realism import InceptionFeatures, fid

    out = tiny["out"]
    res = run_realism("hip", "tiny", out=out, device="cpu", threads=1, progress=False, log=None, kid_subsets=5)
    assert set(res["table"]) == {name for name, _, _ in SETS} and res["references"] == ["target_test"]
    assert json.loads((out / "steps" / "render-naive.json").read_text())["result"]  # reused, not re-rendered
    feats = InceptionFeatures()
    size = S.get_preset("hip", "tiny").image_size
    with S._threads(1):  # one thread: two OpenMP threads on a busy machine are many times slower
        a = feats(load_labelled(out / "data" / "target-train", size, need_labels=False).images)
        b = feats(load_labelled(out / "data" / "target-test", size, need_labels=False).images)
    row = res["table"]["target_train"]["target_test"]
    assert row["fid"] == pytest.approx(fid(a, b), rel=1e-6) and row["n"] == len(a) and row["n_reference"] == len(b)
    assert (out / "realism_hip.md").read_text().splitlines()[0].startswith("**The target is a rendered reference")
