"""The training loop, evaluation and the commands on tiny fixtures (32 px, tiny model, 1-2 epochs)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from synthex.cli import cli
from training.data import open_source
from training.evaluation import decode_heatmaps
from training.losses import gaussian_heatmaps, heatmap_kl
from training.tasks import TrainingError
from training.toydata import write_synthex_layout, write_toy_hip_dataset
from training.train import TrainConfig, train

TINY = dict(task="hip", image_size=32, model_size="tiny", epochs=2, batch_size=4, randomization="strong",
            patience=5, device="cpu")


@pytest.fixture(scope="module")
def toy_hip(tmp_path_factory):
    return write_toy_hip_dataset(tmp_path_factory.mktemp("toy") / "hip", n_subjects=5, per_subject=3, size=48)


def _weights(model):
    return torch.cat([p.detach().flatten() for p in model.state_dict().values() if p.is_floating_point()])


def test_two_runs_with_the_same_seed_are_identical(toy_hip, tmp_path):
    src = open_source(toy_hip)
    a = train(TrainConfig(**TINY, seed=3), src, tmp_path / "a", progress=False)
    b = train(TrainConfig(**TINY, seed=3), src, tmp_path / "b", progress=False)
    strip = lambda h: [{k: v for k, v in row.items() if k != "seconds"} for row in h]
    assert strip(a.history) == strip(b.history)  # identical losses and validation metrics, exactly
    assert torch.equal(_weights(a.model), _weights(b.model))
    c = train(TrainConfig(**dict(TINY, epochs=1), seed=4), src, tmp_path / "c", progress=False)
    assert strip(c.history)[0]["val_loss"] != strip(a.history)[0]["val_loss"]  # the seed matters
    assert set(a.splits["train"]).isdisjoint(a.splits["val"])


def test_resume_from_first_epoch_matches_uninterrupted(toy_hip, tmp_path, monkeypatch):
    src = open_source(toy_hip)
    cfg = TrainConfig(**TINY, seed=2)
    full = train(cfg, src, tmp_path / "full", progress=False)
    # interrupted run: the loop raises after epoch 1's checkpoint is written
    import training.train as T

    real_save = T._save
    calls = {"n": 0}

    def crash_after_first_epoch(path, *a, **k):
        real_save(path, *a, **k)
        if path.name == "last.pt":
            calls["n"] += 1
            if calls["n"] == 1:
                raise KeyboardInterrupt

    monkeypatch.setattr(T, "_save", crash_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, src, tmp_path / "resumed", progress=False)
    monkeypatch.setattr(T, "_save", real_save)
    resumed = train(cfg, src, tmp_path / "resumed", resume=True, progress=False)
    strip = lambda h: [{k: v for k, v in row.items() if k != "seconds"} for row in h]
    assert strip(resumed.history) == strip(full.history)
    assert torch.equal(_weights(resumed.model), _weights(full.model))


def test_resume_with_other_settings_is_refused(toy_hip, tmp_path):
    src = open_source(toy_hip)
    train(TrainConfig(**dict(TINY, epochs=1)), src, tmp_path, progress=False)
    with pytest.raises(TrainingError, match="cannot resume"):
        train(TrainConfig(**dict(TINY, epochs=1, lr=0.1)), src, tmp_path, resume=True, progress=False)


def test_config_errors():
    with pytest.raises(TrainingError, match="unknown task"):
        TrainConfig(task="knee")
    with pytest.raises(TrainingError, match="multiple of 4"):
        TrainConfig(model_size="tiny", image_size=30)
    with pytest.raises(TrainingError, match="unknown training settings"):
        TrainConfig.from_dict({"task": "hip", "epoch": 3})


def test_heatmap_loss_and_decoding():
    kp = torch.tensor([[[10.3, 7.6], [3.0, 20.0]]])
    vis = torch.tensor([[True, False]])
    target = gaussian_heatmaps(kp, vis, 24, 32, sigma=2.0)
    assert float(target[0, 0].max()) > 0.9 and float(target[0, 1].abs().max()) == 0.0
    # KL is zero when the predicted distribution is the target, positive otherwise
    assert float(heatmap_kl(torch.log(target.clamp_min(1e-30)), target, vis)) == pytest.approx(0, abs=1e-5)
    assert float(heatmap_kl(torch.zeros_like(target), target, vis)) > 1.0
    # decoding log-Gaussian logits (what the KL loss trains towards) recovers the sub-pixel position
    logits = -((torch.arange(32.0)[None, :] - 10.3) ** 2 + (torch.arange(24.0)[:, None] - 7.6) ** 2) / 8.0
    uv = decode_heatmaps(logits[None, None])[0, 0]
    np.testing.assert_allclose(uv.numpy(), [10.3, 7.6], atol=1e-4)


def test_train_downstream_and_evaluate_commands(toy_hip, tmp_path):
    runner = CliRunner()
    out = tmp_path / "run"
    r = runner.invoke(cli, ["train-downstream", "--task", "hip", "--train", str(toy_hip), "--out", str(out),
                            "--image-size", "32", "--model-size", "tiny", "--epochs", "1", "--batch-size", "4",
                            "--device", "cpu"])
    assert r.exit_code == 0, r.output
    for f in ("best.pt", "last.pt", "metrics.json", "report.md", "model_card.md", "curves.png"):
        assert (out / f).is_file(), f
    m = json.loads((out / "metrics.json").read_text())
    s = m["summary"]["landmark_error_mm_mean"]
    per = [p["landmark_error_mm_mean"] for p in m["per_image"]]
    assert s["mean"] == pytest.approx(np.mean(per)) and s["n"] == s["n_images"] == len(per)
    # 15% of 5 subjects are held out: 1 subject, too few for an interval; the reason is stated
    assert s["n_subjects"] == len({p["subject"] for p in m["per_image"]}) == 1
    assert s["ci95"] is None and "1 subject, fewer than 5" in s["ci_note"]
    assert "clustered by subject" in m["ci"] and "no CI (1 subject < 5)" in (out / "report.md").read_text()
    # held-out test subjects were in neither training nor validation
    test_subjects = {p["subject"] for p in m["per_image"]}
    assert test_subjects.isdisjoint(m["training"]["splits"]["train"] + m["training"]["splits"]["val"])
    # mm at the detector = px x pitch x downsample (48 px stored -> 32 px model input, 0.776 mm pixels)
    p = m["per_image"][0]
    assert p["landmark_error_mm_mean"] == pytest.approx(p["landmark_error_px_mean"] * 0.776 * 1.5, rel=1e-6)
    assert list((out / "examples").glob("*.png"))

    ev = tmp_path / "eval"
    r = runner.invoke(cli, ["evaluate", str(out / "best.pt"), str(toy_hip), "--out", str(ev), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    m = json.loads((ev / "metrics.json").read_text())
    assert len(m["per_image"]) == 15
    s = m["summary"]["dice_mean"]  # 5 subjects x 3 images: an interval, from subjects
    assert s["n_subjects"] == 5 and s["n_images"] == 15 and s["ci95"][0] <= s["mean"] <= s["ci95"][1]
    assert m["pixel_size"]["note"] == "manifest.json pixel_size_mm"
    # a training output folder works as well as its best.pt
    r = runner.invoke(cli, ["evaluate", str(out), str(toy_hip), "--out", str(tmp_path / "eval2"), "--device", "cpu"])
    assert r.exit_code == 0, r.output


def test_commands_give_clear_errors(toy_hip, tmp_path):
    runner = CliRunner()
    r = runner.invoke(cli, ["train-downstream", "--task", "knee", "--train", str(toy_hip), "--out", str(tmp_path)])
    assert r.exit_code != 0 and "unknown task 'knee'" in r.output and "Traceback" not in r.output
    r = runner.invoke(cli, ["train-downstream", "--task", "covid", "--train", str(toy_hip), "--out", str(tmp_path),
                            "--image-size", "32", "--model-size", "tiny"])
    assert r.exit_code != 0 and "lacks [" in r.output and "'lesion'" in r.output
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    r = runner.invoke(cli, ["evaluate", str(bad), str(toy_hip)])
    assert r.exit_code != 0 and "not a readable synthex checkpoint" in r.output


def test_covid_task_trains_and_reports_presence_metrics(tmp_path):
    from training.tasks import get_task
    from training.toydata import toy_covid_samples

    classes = list(get_task("covid").classes)
    root = write_synthex_layout(tmp_path / "covid", toy_covid_samples(12, 32, classes), [i // 2 for i in range(12)],
                                classes=classes, landmarks=[], task="covid")
    from training.run import train_downstream

    res = train_downstream(TrainConfig(task="covid", image_size=32, model_size="tiny", epochs=1, batch_size=4,
                                       device="cpu"), [root], tmp_path / "run", progress=False)
    s = res["summary"]
    for key in ("sensitivity", "specificity", "precision", "f1", "f2", "dice_mean"):
        assert key in s
    assert "presence_auc" in s and "pixel_confusion_pooled" in s


def test_training_stack_imports_without_torchvision():
    """MONAI's networks, losses and metrics and all of training work with torchvision absent
    (the project never installs it; MONAI imports it only optionally)."""
    import importlib.util
    import sys

    import monai.losses
    import monai.metrics
    import monai.networks.nets

    import training.run  # noqa: F401

    assert importlib.util.find_spec("torchvision") is None, "torchvision must not be installed"
    assert "torchvision" not in sys.modules


@pytest.mark.slow
def test_learning_beats_trivial_baselines_on_toy_hip(tmp_path):
    """Minutes on CPU: a small model on toy hip images beats predict-background (Dice 0) and
    predict-the-mean-landmark on held-out subjects (the benchmark does the same at full size)."""
    from benchmarks.train_hip import main

    # 40 subjects, so that the 15% held out are enough subjects (>= 5) for subject-clustered intervals
    main(["--toy", "40x3", "--image-size", "64", "--epochs", "15", "--out", str(tmp_path / "run"),
          "--result", "_slow_test_train_hip"])
    from benchmarks.train_hip import RESULTS

    path = RESULTS / "_slow_test_train_hip.json"
    doc = json.loads(path.read_text())
    path.unlink()
    assert doc["clearly_better"] == {"dice": True, "landmarks": True}, doc["model"]


def test_overlapping_train_and_test_data_is_refused(toy_hip, tmp_path):
    from training.run import train_downstream

    cfg = TrainConfig(**dict(TINY, epochs=1))
    with pytest.raises(TrainingError, match="some test data is also training data"):
        train_downstream(cfg, [toy_hip, tmp_path], tmp_path / "o", test_paths=[toy_hip], progress=False)
    with pytest.raises(TrainingError, match="validation data is also training data"):
        train_downstream(cfg, [toy_hip], tmp_path / "o", val_paths=[toy_hip], progress=False)
