"""GAN baselines (training.gan): network shapes, loss terms against hand computations,
determinism, exact resume, tiny runs that must learn, the written sets read back by
training's own folder reader, and clear errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from training.data import open_source
from training.gan import GANError, cyclegan, pix2pix
from training.gan.common import ImagePool, linear_decay
from training.gan.data import apply_label_warp, load_images, load_labelled, sample_label_warp, write_folder_dataset
from training.gan.losses import AdversarialLoss, cycle_terms
from training.gan.metrics import chance_edge_correlation, edge_correlation, intensity_w1, region_contrast
from training.gan.networks import NetSpec, build_discriminator, build_generator

REPO = Path(__file__).resolve().parents[1]
GREYS = (0.2, 0.5, 0.8)  # the synthetic "anatomy": one constant grey level per class


def blob_labels(n: int, size: int, seed: int) -> np.ndarray:
    """Label maps with classes 0, 1, 2: a random disc (1) and a random rectangle (2) on background."""
    rng = np.random.default_rng(seed)
    v, u = np.mgrid[0:size, 0:size]
    out = np.zeros((n, size, size), np.int64)
    for i in range(n):
        (cu, cv), r = rng.uniform(0.3, 0.7, 2) * size, rng.uniform(0.15, 0.3) * size
        u0, v0 = rng.integers(0, size // 2, 2)
        out[i, v0:v0 + size // 3, u0:u0 + size // 3] = 2
        out[i][(u - cu) ** 2 + (v - cv) ** 2 <= r * r] = 1
    return out


def write_grey_set(root: Path, n: int = 12, size: int = 32, seed: int = 0) -> Path:
    """A folder dataset whose image is GREYS[label] (a known label -> image mapping); 3 subjects."""
    labels = blob_labels(n, size, seed)
    images = np.asarray(GREYS, np.float32)[labels]
    return write_folder_dataset(root, images, labels=labels, subjects=[f"s{i % 3}" for i in range(n)],
                                names=[f"img{i:03d}" for i in range(n)], classes=["background", "disc", "box"])


def write_blob_images(root: Path, n: int, size: int, seed: int, transform) -> Path:
    """A plain folder of 8-bit PNGs: transform(disc/box grey image) (an unlabelled target domain)."""
    from PIL import Image

    root.mkdir(parents=True)
    labels = blob_labels(n, size, seed)
    for i, lab in enumerate(labels):
        img = transform(np.asarray(GREYS, np.float64)[lab])
        Image.fromarray(np.rint(np.clip(img, 0, 1) * 255).astype(np.uint8)).save(root / f"{i:03d}.png")
    return root


# ---- networks --------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", [NetSpec("resnet", 8, 2, 2), NetSpec("unet", 8, 3, dropout=0.1)])
def test_generator_maps_to_same_size_in_tanh_range(spec):
    g = build_generator(spec, in_channels=3, out_channels=1, seed=0)
    with torch.no_grad():
        y = g(torch.randn(2, 3, 64, 48))
    assert y.shape == (2, 1, 64, 48)
    assert float(y.abs().max()) <= 1.0  # tanh output


def test_patchgan_output_shape_is_the_pix2pix_one():
    # pix2pix's 70x70 PatchGAN at 128 px: 4x4 convs with padding 1, strides 2, 2, 2, 1, 1:
    # 128 -> 64 -> 32 -> 16 -> 15 -> 14 (floor((n + 2 - 4) / s) + 1 per layer)
    d = build_discriminator(NetSpec(disc_features=8, disc_layers=3), in_channels=4, seed=0)
    with torch.no_grad():
        assert d(torch.zeros(2, 4, 128, 128)).shape == (2, 1, 14, 14)
    # its receptive field: r = 1, then r = r * s + (k - s) backwards over the 5 layers = 70
    r = 1
    for s in (1, 1, 2, 2, 2):
        r = r * s + (4 - s)
    assert r == 70


def test_weights_come_from_the_seed_and_leave_global_rng_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = build_generator(NetSpec("resnet", 8, 2, 1), 1, 1, seed=5)
    b = build_generator(NetSpec("resnet", 8, 2, 1), 1, 1, seed=5)
    c = build_generator(NetSpec("resnet", 8, 2, 1), 1, 1, seed=6)
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))


# ---- losses ----------------------------------------------------------------------------------

REAL = torch.tensor([[[[0.5, 2.0], [-1.0, 1.0]]]])
FAKE = torch.tensor([[[[0.0, -0.5], [1.5, 0.3]]]])


def test_lsgan_terms_equal_hand_computation():
    adv = AdversarialLoss("lsgan")
    r, f = REAL.flatten().tolist(), FAKE.flatten().tolist()
    d_hand = 0.5 * (sum((x - 1) ** 2 for x in r) / 4 + sum(x ** 2 for x in f) / 4)
    g_hand = sum((x - 1) ** 2 for x in f) / 4
    assert float(adv.discriminator(REAL, FAKE)) == pytest.approx(d_hand, rel=1e-6)
    assert float(adv.generator(FAKE)) == pytest.approx(g_hand, rel=1e-6)


def test_bce_terms_equal_hand_computation():
    adv = AdversarialLoss("bce")
    sig = lambda x: 1 / (1 + math.exp(-x))
    r, f = REAL.flatten().tolist(), FAKE.flatten().tolist()
    d_hand = 0.5 * (-sum(math.log(sig(x)) for x in r) / 4 - sum(math.log(1 - sig(x)) for x in f) / 4)
    g_hand = -sum(math.log(sig(x)) for x in f) / 4
    assert float(adv.discriminator(REAL, FAKE)) == pytest.approx(d_hand, rel=1e-5)
    assert float(adv.generator(FAKE)) == pytest.approx(g_hand, rel=1e-5)


def test_cycle_and_identity_terms():
    a, b = torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8)
    ident = torch.nn.Identity()
    t = cycle_terms(ident, ident, a, b)
    for key in ("cycle_a", "cycle_b", "identity_a", "identity_b"):
        assert float(t[key]) == 0.0
    # G_AB adds 0.1, G_BA is the identity: every A round trip and G_AB(b) are off by exactly 0.1
    shift = lambda x: x + 0.1
    t = cycle_terms(shift, ident, a, b)
    assert float(t["cycle_a"]) == pytest.approx(0.1, abs=1e-6)
    assert float(t["cycle_b"]) == pytest.approx(0.1, abs=1e-6)
    assert float(t["identity_b"]) == pytest.approx(0.1, abs=1e-6)
    assert float(t["identity_a"]) == 0.0


def test_schedule_is_constant_then_linear_to_zero():
    # pix2pix/CycleGAN code: lr factor 1 - max(0, epoch + 1 - n_const) / (n_decay + 1)
    f = linear_decay(4, 0.5)
    assert [f(e) for e in range(4)] == pytest.approx([1, 1, 2 / 3, 1 / 3])
    assert [linear_decay(3, 0.0)(e) for e in range(3)] == [1, 1, 1]


def test_image_pool_returns_new_images_until_full_then_mixes():
    pool = ImagePool(3, np.random.default_rng(0))
    firsts = [torch.full((1, 1, 2, 2), float(k)) for k in range(3)]
    for x in firsts:
        assert torch.equal(pool.query(x), x)  # filling: the new image itself
    seen = set()
    for k in range(3, 40):
        out = float(pool.query(torch.full((1, 1, 2, 2), float(k)))[0, 0, 0, 0])
        assert out == k or out < k  # the new image or an earlier one kept in the pool
        seen.add(out == k)
    assert seen == {True, False}  # both happen (probability 1/2 each over 37 draws)
    assert len(pool.images) == 3


# ---- data in and out -------------------------------------------------------------------------

def test_written_folder_set_reads_back_with_labels_landmarks_subjects(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 1, (3, 20, 24)).astype(np.float32)
    labels = rng.integers(0, 3, (3, 20, 24))
    lms = rng.uniform(0, 19, (3, 2, 2))
    lms[1, 0] = np.nan
    out = write_folder_dataset(tmp_path / "set", images, labels=labels, landmarks=lms, subjects=["a", "a", "b"],
                               names=["x0", "x1", "x2"], classes=["bg", "one", "two"], landmark_names=["p", "q"],
                               pixel_size_mm=(0.5, 0.5), meta={"synthesized_by": {"method": "test"}})
    src = open_source(out)
    assert src.format == "folder" and src.classes == ["bg", "one", "two"] and src.landmarks == ["p", "q"]
    assert src.subjects == ["a", "a", "b"]
    assert np.allclose(np.ravel(src.pixel_size_mm), 0.5)
    for i in range(3):
        rec = src[i]
        assert np.array_equal(rec.labels, labels[i])
        assert np.allclose(rec.image, images[i], atol=0.5 / 65535)  # 16-bit PNG
        assert np.array_equal(np.isnan(rec.landmarks), np.isnan(lms[i]))
        assert np.allclose(rec.landmarks[~np.isnan(lms[i])], lms[i][~np.isnan(lms[i])])
    with pytest.raises(GANError, match="exists and is not empty"):
        write_folder_dataset(out, images, subjects=["a"] * 3, names=["x0", "x1", "x2"], classes=["bg"])


def test_load_labelled_resizes_labels_and_scales_landmarks(tmp_path):
    from training.toydata import write_toy_hip_dataset

    root = write_toy_hip_dataset(tmp_path / "hip", n_subjects=2, per_subject=2, size=64)
    data = load_labelled(root, 32)
    src = open_source(root)
    rec = src[1]
    assert data.images.shape == (4, 32, 32) and data.labels.shape == (4, 32, 32)
    # pixel centres: (p + 0.5) * 32 / 64 - 0.5
    ok = np.isfinite(rec.landmarks)
    assert np.allclose(data.landmarks[1][ok], ((rec.landmarks + 0.5) * 0.5 - 0.5)[ok])
    # 'nearest-exact' at half size: output pixel i reads input floor((i + 0.5) * 2) = 2 i + 1
    assert np.array_equal(data.labels[1], rec.labels[1::2, 1::2])
    assert np.allclose(np.ravel(data.pixel_size_mm), 0.776 * 2)
    assert data.subjects == src.subjects


def test_label_warp_moves_landmarks_with_the_mask():
    size = 64
    lab = np.zeros((size, size), np.int64)
    lab[20:27, 40:47] = 1  # a 7x7 square, centre (u, v) = (43, 23)
    lm = np.array([[43.0, 23.0], [np.nan, np.nan]])
    rec = sample_label_warp("affine", size, np.random.default_rng(3))
    assert rec["ops"][0]["op"] == "affine"
    moved_lab, moved_lm = apply_label_warp(lab, lm, rec)
    vv, uu = np.nonzero(moved_lab == 1)
    assert np.hypot(uu.mean() - moved_lm[0, 0], vv.mean() - moved_lm[0, 1]) < 0.75  # landmark at the square's centre
    assert np.isnan(moved_lm[1]).all()  # unlabelled stays unlabelled
    assert json.loads(json.dumps(rec)) == rec  # the record is JSON
    again_lab, again_lm = apply_label_warp(lab, lm, json.loads(json.dumps(rec)))
    assert np.array_equal(again_lab, moved_lab) and np.array_equal(again_lm, moved_lm, equal_nan=True)


def test_load_images_reads_a_plain_folder_and_crops_to_the_centre(tmp_path):
    from PIL import Image

    (tmp_path / "t").mkdir()
    img = np.zeros((40, 80), np.uint8)
    img[:, 20:60] = 255  # the centred 40x40 square is all white, the sides black
    Image.fromarray(img).save(tmp_path / "t" / "a.png")
    crop, names = load_images(tmp_path / "t", 32, fit="crop")
    squash, _ = load_images(tmp_path / "t", 32, fit="resize")
    assert names == ["a.png"] and crop.shape == (1, 32, 32)
    assert crop.min() == pytest.approx(1.0)
    assert squash.mean() == pytest.approx(0.5, abs=0.02)


def test_empty_target_folder_is_one_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(GANError, match="holds no images"):
        load_images(tmp_path / "empty", 32)
    src = write_grey_set(tmp_path / "src", n=4)
    r = subprocess.run([sys.executable, "-m", "training.gan.cyclegan", "fit", "--source", str(src), "--target",
                        str(tmp_path / "empty"), "--out", str(tmp_path / "run"), "--preset", "test", "--quiet"],
                       cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 1
    assert "holds no images" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_bad_sizes_are_clear_errors(tmp_path):
    with pytest.raises(GANError, match="multiple of 8"):
        pix2pix.preset("test", size=36, nets={"generator": "unet", "features": 8, "depth": 3})
    with pytest.raises(GANError, match="between 32 and 1024"):
        cyclegan.preset("test", size=16)
    src = write_grey_set(tmp_path / "g", n=4)
    model = pix2pix.fit(src, pix2pix.preset("test", epochs=1), tmp_path / "run", progress=False, threads=1)
    with pytest.raises(GANError, match=r"must be \(N, 32, 32\)"):
        model.generate(np.zeros((1, 64, 64), np.int64))
    with pytest.raises(GANError, match="outside the 3 classes"):
        model.generate(np.full((1, 32, 32), 5))
    with pytest.raises(GANError, match="exists: pass resume"):
        pix2pix.fit(src, pix2pix.preset("test", epochs=1), tmp_path / "run", progress=False, threads=1)
    tgt = write_blob_images(tmp_path / "t", 2, 48, 1, lambda x: x)  # other sizes are fine: resized to 32
    cg = cyclegan.fit(src, tgt, cyclegan.preset("test"), tmp_path / "cg", progress=False, threads=1)
    with pytest.raises(GANError, match=r"must be \(N, 32, 32\)"):
        cg.translate(np.zeros((1, 48, 48), np.float32))
    with pytest.raises(GANError, match=r"in \[0, 1\]"):
        cg.translate(np.full((1, 32, 32), 2.0, np.float32))


# ---- training: determinism, resume, learning --------------------------------------------------

def _weights(module) -> list:
    return [p.detach().clone() for p in module.state_dict().values()]


def test_pix2pix_is_deterministic_given_the_seed(tmp_path):
    src = write_grey_set(tmp_path / "g", n=8)
    cfg = pix2pix.preset("test", epochs=1, batch_size=4)  # 2 steps
    runs = [pix2pix.fit(src, cfg, tmp_path / f"r{k}", progress=False, threads=1) for k in range(2)]
    other = pix2pix.fit(src, pix2pix.preset("test", epochs=1, batch_size=4, seed=1), tmp_path / "r2",
                        progress=False, threads=1)
    a, b, c = (_weights(r.generator) for r in (*runs, other))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_cyclegan_is_deterministic_and_resumes_exactly(tmp_path, monkeypatch):
    import training.gan.cyclegan as cg

    src = write_grey_set(tmp_path / "g", n=4)
    tgt = write_blob_images(tmp_path / "t", 4, 32, 7, lambda x: 1.0 - x)
    cfg = cyclegan.preset("test", epochs=2, batch_size=2)  # 2 steps per epoch
    whole = [cyclegan.fit(src, tgt, cfg, tmp_path / f"w{k}", progress=False, threads=1) for k in range(2)]

    class Interrupted(Exception):
        pass

    real_save = cg.save_checkpoint

    def save_then_stop(path, state):  # the run is killed right after its first checkpoint
        real_save(path, state)
        raise Interrupted

    monkeypatch.setattr(cg, "save_checkpoint", save_then_stop)
    with pytest.raises(Interrupted):
        cyclegan.fit(src, tgt, cfg, tmp_path / "cut", progress=False, threads=1)
    monkeypatch.setattr(cg, "save_checkpoint", real_save)
    assert torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)["epoch"] == 0
    resumed = cyclegan.fit(src, tgt, cfg, tmp_path / "cut", resume=True, progress=False, threads=1)
    for model in (whole[1], resumed):
        for name in ("g_ab", "g_ba"):
            assert all(torch.equal(x, y) for x, y in zip(_weights(getattr(whole[0], name)),
                                                        _weights(getattr(model, name))))
    other = cyclegan.fit(src, tgt, cyclegan.preset("test", epochs=2, batch_size=2, seed=3), tmp_path / "o",
                         progress=False, threads=1)
    assert not all(torch.equal(x, y) for x, y in zip(_weights(whole[0].g_ab), _weights(other.g_ab)))


def test_cyclegan_steps_per_epoch_of_one_pass_is_the_plain_epoch(tmp_path):
    """steps_per_epoch = N (batch 1) draws the same order as 'one pass over the N source images'."""
    src = write_grey_set(tmp_path / "g", n=3)
    tgt = write_blob_images(tmp_path / "t", 2, 32, 7, lambda x: 1.0 - x)
    plain = cyclegan.fit(src, tgt, cyclegan.preset("test", batch_size=1), tmp_path / "a", progress=False, threads=1)
    steps = cyclegan.fit(src, tgt, cyclegan.preset("test", batch_size=1, steps_per_epoch=3), tmp_path / "b",
                         progress=False, threads=1)
    more = cyclegan.fit(src, tgt, cyclegan.preset("test", batch_size=1, steps_per_epoch=4), tmp_path / "c",
                        progress=False, threads=1)
    assert all(torch.equal(x, y) for x, y in zip(_weights(plain.g_ab), _weights(steps.g_ab)))
    assert not all(torch.equal(x, y) for x, y in zip(_weights(plain.g_ab), _weights(more.g_ab)))


def test_pix2pix_learns_a_label_to_grey_mapping(tmp_path):
    """Image = a constant grey per class (0.2, 0.5, 0.8). An untrained generator outputs about
    0.5 everywhere (tanh of small values), an L1 error of about (0.3 + 0 + 0.3) weighted by the
    class areas (> 0.12 here); 40 steps of L1 + adversarial training must cut it by 3x or more."""
    size = 32
    src = write_grey_set(tmp_path / "g", n=16, size=size, seed=1)
    cfg = pix2pix.preset("test", epochs=10, batch_size=4, lr=1e-3, decay_fraction=0.0)  # 40 steps
    held = blob_labels(8, size, seed=99)
    truth = np.asarray(GREYS, np.float32)[held]
    untrained = pix2pix.fit(src, pix2pix.preset("test", epochs=1, lr=1e-12), tmp_path / "u", progress=False, threads=1)
    before = np.abs(untrained.generate(held, noise=False, threads=1) - truth).mean()
    model = pix2pix.fit(src, cfg, tmp_path / "r", progress=False, threads=1)
    after = np.abs(model.generate(held, noise=False, threads=1) - truth).mean()
    assert before > 0.12
    assert after < before / 3, (before, after)


def test_cyclegan_moves_the_histogram_toward_the_target(tmp_path):
    """Target = 1 - source grey levels (an inversion, unpaired: other blob layouts). After 48
    steps the translated source must be at least 2x closer (1-Wasserstein) to the target's
    intensity distribution than the source itself, and keep its edges (correlation > chance)."""
    size = 32
    src = write_grey_set(tmp_path / "g", n=16, size=size, seed=2)
    tgt = write_blob_images(tmp_path / "t", 16, size, 3, lambda x: 1.0 - x)
    cfg = cyclegan.preset("test", epochs=6, batch_size=2, lr=1e-3, decay_fraction=0.0)  # 48 steps
    model = cyclegan.fit(src, tgt, cfg, tmp_path / "r", progress=False, threads=1)
    a = load_labelled(src, size).images
    b, _ = load_images(tgt, size)
    moved = model.translate(a, threads=1)
    w_before, w_after = intensity_w1(a, b), intensity_w1(moved, b)
    assert w_after < w_before / 2, (w_before, w_after)
    rng = np.random.default_rng(0)
    assert edge_correlation(a, moved).mean() > chance_edge_correlation(a, moved, rng).mean() + 0.2


def test_pix2pix_samples_read_back_with_exact_labels(tmp_path):
    """The synthesized set: label maps and landmarks are the source's moved by the recorded warp
    (replayed here), subjects are the source subjects, and the reader sees it all."""
    from training.toydata import write_toy_hip_dataset

    root = write_toy_hip_dataset(tmp_path / "hip", n_subjects=2, per_subject=3, size=64)
    pix2pix.fit(root, pix2pix.preset("test", epochs=1), tmp_path / "run", progress=False, threads=1)
    out = pix2pix.sample(tmp_path / "run", 8, tmp_path / "set", seed=4, progress=False, threads=1)
    synth, src = open_source(out), load_labelled(root, 32)
    records = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert len(synth) == 8 and synth.classes == src.classes and synth.landmarks == src.landmark_names
    assert synth.subjects == [src.subjects[r["source_index"]] for r in records]
    for i in (0, 6):  # 6 wraps around to source label map 0
        r = records[i]
        assert r["source_index"] == i % 6
        lab, lm = apply_label_warp(src.labels[r["source_index"]], src.landmarks[r["source_index"]], r["label_warp"])
        rec = synth[i]
        assert not np.array_equal(lab, src.labels[r["source_index"]])  # the warp moved the label map
        assert np.array_equal(rec.labels, lab)
        assert np.allclose(rec.landmarks, lm, equal_nan=True)
        assert 0.0 <= rec.image.min() and rec.image.max() <= 1.0
    # two sample calls with one seed give identical sets
    again = pix2pix.sample(tmp_path / "run", 8, tmp_path / "set2", seed=4, progress=False, threads=1)
    assert all(np.array_equal(synth[i].image, open_source(again)[i].image) for i in range(8))


def test_cyclegan_translated_set_keeps_source_labels(tmp_path):
    src = write_grey_set(tmp_path / "g", n=4)
    tgt = write_blob_images(tmp_path / "t", 4, 32, 5, lambda x: x ** 2)
    cyclegan.fit(src, tgt, cyclegan.preset("test"), tmp_path / "run", progress=False, threads=1)
    out = cyclegan.translate_dataset(tmp_path / "run", src, tmp_path / "set", progress=False, threads=1)
    a, b = open_source(src), open_source(out)
    assert b.subjects == a.subjects and b.classes == a.classes
    assert all(np.array_equal(a[i].labels, b[i].labels) for i in range(4))
    assert json.loads((out / "dataset.json").read_text())["synthesized_by"]["method"] == "cyclegan"


# ---- metrics ---------------------------------------------------------------------------------

def test_metrics_against_hand_values():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, (4, 32, 32))
    assert np.allclose(edge_correlation(a, a), 1.0)
    assert np.allclose(edge_correlation(a, 0.3 * a + 0.5), 1.0)  # an affine grey change keeps every edge
    assert abs(chance_edge_correlation(a, a, rng).mean()) < 0.2  # independent noise images
    assert intensity_w1(a, a + 0.1) == pytest.approx(0.1)  # a shift by c moves every quantile by c
    img = np.full((1, 10, 10), 0.2)
    img[0, 4:6, 4:6] = 0.9
    lab = (img > 0.5).astype(int)
    assert region_contrast(img, lab, 1, ring_px=2)[0] == pytest.approx(0.7)
    assert np.isnan(region_contrast(img, lab, 2)[0])


def test_one_checkpoint_format_tells_its_kinds_apart(tmp_path):
    """Training runs and both GANs write one checkpoint format (versioned, atomic); each reader refuses the
    others' files and a truncated file with its own error naming the problem."""
    from training.gan.common import GANError, load_checkpoint, save_checkpoint
    from training.train import TrainingError
    from training.train import load_checkpoint as load_training

    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"kind": "pix2pix", "generator": {}})
    assert load_checkpoint(tmp_path, "pix2pix")["kind"] == "pix2pix"  # the run folder works too
    with pytest.raises(GANError, match="not a synthex cyclegan checkpoint"):
        load_checkpoint(path, "cyclegan")
    with pytest.raises(TrainingError, match="not a synthex training checkpoint"):
        load_training(path)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(GANError, match="not a readable synthex checkpoint"):
        load_checkpoint(path, "pix2pix")
