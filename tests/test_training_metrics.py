"""Metrics against hand-computed values and independent implementations (MONAI, scipy)."""

from __future__ import annotations

import numpy as np
import pytest

from training import metrics as M


def test_dice_per_class_matches_hand_count():
    # 4x4 maps; class 1: pred 4 px, ref 6 px, overlap 3 -> 2*3/10; class 2: pred 2 px, ref 0 -> 0;
    # class 3: in neither -> undefined (NaN)
    pred = np.zeros((4, 4), int)
    true = np.zeros((4, 4), int)
    pred[0, 0:4] = 1
    true[0, 1:4] = 1
    true[1, 0:3] = 1
    pred[3, 0:2] = 2
    d = M.dice_per_class(pred, true, 4)
    assert d[0] == pytest.approx(0.6)
    assert d[1] == 0.0
    assert np.isnan(d[2])


def test_dice_agrees_with_monai(rng):
    torch = pytest.importorskip("torch")
    from monai.metrics import DiceMetric

    pred = rng.integers(0, 3, size=(2, 16, 16))
    true = rng.integers(0, 3, size=(2, 16, 16))
    onehot = lambda a: torch.nn.functional.one_hot(torch.as_tensor(a), 3).permute(0, 3, 1, 2).float()
    ref = DiceMetric(include_background=False, reduction="none")(onehot(pred), onehot(true)).numpy()
    ours = np.stack([M.dice_per_class(p, t, 3) for p, t in zip(pred, true)])
    np.testing.assert_allclose(ours, ref, rtol=1e-6)


def test_landmark_error_px_and_mm():
    pred = np.array([[3.0, 4.0], [10.0, 10.0], [0.0, 0.0]])
    true = np.array([[0.0, 0.0], [10.0, 12.0], [np.nan, np.nan]])
    err = M.landmark_errors(pred, true)
    np.testing.assert_allclose(err[:2], [5.0, 2.0])  # 3-4-5 triangle; straight 2 px
    assert np.isnan(err[2])
    # SyntheX: 0.194 mm detector pixels, images downsampled x4 -> 5 px = 5 * 0.194 * 4 mm
    assert M.px_to_mm(5.0, 0.194, 4) == pytest.approx(3.88)


def test_confusion_metrics_hand_computed():
    pred = np.array([1, 1, 1, 0, 0, 0, 0, 1], bool)
    true = np.array([1, 1, 0, 1, 0, 0, 0, 0], bool)
    tp, fp, tn, fn = M.binary_confusion(pred, true)
    assert (tp, fp, tn, fn) == (2, 2, 3, 1)
    m = M.confusion_metrics(tp, fp, tn, fn)
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(3 / 5)
    assert m["precision"] == pytest.approx(0.5)
    assert m["accuracy"] == pytest.approx(5 / 8)
    assert m["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))  # F1 = 2TP / (2TP + FP + FN) = 4/7
    p, r = 0.5, 2 / 3
    assert m["f2"] == pytest.approx(5 * p * r / (4 * p + r))


def test_auc_equals_pairwise_count():
    scores = np.array([0.9, 0.8, 0.8, 0.3, 0.5, 0.1, 0.8])
    labels = np.array([1, 1, 0, 0, 1, 0, 1], bool)
    pos, neg = scores[labels], scores[~labels]
    pairs = [(1.0 if p > n else 0.5 if p == n else 0.0) for p in pos for n in neg]
    assert M.roc_auc(scores, labels) == pytest.approx(np.mean(pairs))
    assert np.isnan(M.roc_auc(scores, np.ones(7, bool)))


def test_bootstrap_ci_equals_direct_numpy_computation():
    values = np.array([0.2, 0.9, 0.4, 0.75, 0.6, 0.1, 0.55, np.nan])
    lo, hi = M.bootstrap_ci(values, np.random.default_rng(7), n_resamples=500)
    # direct computation: the same generator, one resample at a time
    v = values[~np.isnan(values)]
    rng = np.random.default_rng(7)
    idx = rng.integers(0, len(v), size=(500, len(v)))
    means = [np.mean([v[j] for j in row]) for row in idx]
    assert (lo, hi) == pytest.approx((np.percentile(means, 2.5), np.percentile(means, 97.5)))
    assert lo < np.mean(v) < hi


def test_bootstrap_ci_matches_scipy_percentile_bootstrap():
    from scipy.stats import bootstrap

    values = np.random.default_rng(3).normal(5, 2, size=30)
    ours = M.bootstrap_ci(values, np.random.default_rng(11), n_resamples=4000)
    ref = bootstrap((values,), np.mean, n_resamples=4000, method="percentile", confidence_level=0.95,
                    random_state=np.random.default_rng(11), vectorized=True).confidence_interval
    # different resampling draws, same estimator: agree to Monte Carlo error (~0.03 here)
    assert ours == pytest.approx((ref.low, ref.high), abs=0.08)
    # and the normal-theory interval mean +/- 1.96 sd/sqrt(n) is close for n = 30
    se = values.std(ddof=1) / np.sqrt(30)
    assert ours == pytest.approx((values.mean() - 1.96 * se, values.mean() + 1.96 * se), abs=0.15)


def test_summarize_gives_no_interval_below_five_subjects():
    # one image, or 3 images of one subject: a point value and the reason, never a zero-width interval
    s = M.summarize([0.5, 0.7, 0.6, np.nan], np.random.default_rng(0), subjects=["a", "a", "a", "b"])
    assert s["mean"] == pytest.approx(0.6) and s["n_images"] == 3 and s["n_subjects"] == 1
    assert s["ci95"] is None and s["ci_note"].startswith("no 95% CI: 1 subject, fewer than 5")
    s = M.summarize([0.5], np.random.default_rng(0))
    assert s["ci95"] is None and s["std"] == 0.0
    # constant values of 5 subjects: an interval, of zero width (every resample mean is 0.5)
    s = M.summarize([0.5] * 5, np.random.default_rng(0))
    assert s["ci95"] == [0.5, 0.5] and s["n_subjects"] == 5


def test_box_iou():
    a = np.array([0, 0, 4, 4.0])
    b = np.array([2, 2, 6, 6.0])
    assert M.box_iou(a, b) == pytest.approx(4 / 28)


# ---------------------------------------------------------------- subject-clustered bootstrap

def test_clustered_bootstrap_resample_means_by_hand():
    # subjects "a": images 1, 3; "b": image 10; "c": images 4, 4, 4. Clusters are numbered in sorted
    # order of their labels (a=0, b=1, c=2); a resample draws 3 subjects and pools their images.
    values = np.array([1.0, 10.0, 3.0, 4.0, 4.0, 4.0])
    subjects = ["a", "b", "a", "c", "c", "c"]
    draws = M.cluster_resample_draws(3, np.random.default_rng(5), 4)
    by_hand = {0: [1.0, 3.0], 1: [10.0], 2: [4.0, 4.0, 4.0]}
    expect = [np.mean([v for k in row for v in by_hand[k]]) for row in draws]
    got = M.cluster_bootstrap_means(values, subjects, np.random.default_rng(5), 4)
    np.testing.assert_allclose(got, expect)
    # one resample written out: subjects (a, a, b) -> images 1, 3, 1, 3, 10 -> mean 18 / 5
    sums, sizes = np.array([4.0, 10.0, 12.0]), np.array([2, 1, 3])
    row = np.array([0, 0, 1])
    assert sums[row].sum() / sizes[row].sum() == pytest.approx(18 / 5)
    # the generic statistic sees the same draws
    generic = M.cluster_bootstrap(lambda idx: values[idx].mean(), subjects, np.random.default_rng(5), 4)
    np.testing.assert_allclose(generic, expect)


def test_clustered_ci_matches_the_exact_bootstrap_distribution():
    """With 5 subjects there are 5^5 = 3125 equally likely ordered resamples: enumerate them all
    (itertools, independent of the sampler) and compare the percentile interval to the sampled one."""
    import itertools

    rng = np.random.default_rng(2)
    sizes = [1, 2, 3, 4, 5]
    values = np.concatenate([rng.normal(k, 0.3, n) for k, n in enumerate(sizes)])
    subjects = np.repeat([f"s{k}" for k in range(5)], sizes)
    sums = np.array([values[subjects == f"s{k}"].sum() for k in range(5)])
    exact = np.array([sums[list(r)].sum() / np.array(sizes)[list(r)].sum()
                      for r in itertools.product(range(5), repeat=5)])
    s = M.summarize(values, np.random.default_rng(9), 20000, subjects=subjects)
    assert s["n_subjects"] == 5 and s["n_images"] == 15
    assert s["ci95"] == pytest.approx(np.quantile(exact, [0.025, 0.975]), abs=0.03)


def test_clustered_ci_is_wider_than_the_image_level_one_for_correlated_views():
    # 6 subjects x 20 views that share their subject's value (+ small noise): the effective sample size
    # is 6, not 120, so the image-level bootstrap is far too narrow and the clustered one is not
    rng = np.random.default_rng(0)
    subject_values = rng.normal(0.8, 0.1, 6)
    values = np.repeat(subject_values, 20) + rng.normal(0, 0.005, 120)
    subjects = np.repeat(np.arange(6), 20)
    clustered = M.summarize(values, np.random.default_rng(1), 4000, subjects=subjects)["ci95"]
    naive = M.summarize(values, np.random.default_rng(1), 4000)["ci95"]
    width = lambda ci: ci[1] - ci[0]
    assert width(clustered) > 3 * width(naive)
    # and close to the t-interval over the 6 subject means (mean +/- 2.57 sd / sqrt(6), 5 d.o.f.)
    se = subject_values.std(ddof=1) / np.sqrt(6)
    assert width(clustered) == pytest.approx(2 * 2.571 * se, rel=0.35)


def test_landmark_error_mm_uses_the_pixel_size_per_axis():
    # 3 px along u and 4 px along v with 0.5 x 0.25 mm pixels: sqrt(1.5^2 + 1^2) mm
    err = M.landmark_errors_mm([[3.0, 4.0]], [[0.0, 0.0]], (0.5, 0.25))
    assert err[0] == pytest.approx(np.hypot(1.5, 1.0))
    with pytest.raises(ValueError, match="two positive numbers"):
        M.landmark_errors_mm([[0.0, 0.0]], [[1.0, 1.0]], (0.5, -1))
