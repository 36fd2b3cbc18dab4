"""Image-level domain randomization (SyntheX "strong domain randomization").

References used here come from outside the code under test: the probabilities
and ranges of SyntheX (written out below from the paper's description), closed
forms (x**gamma, 1 - x, ...), scipy.ndimage filters, hand-written loops, and
the intensity centroid of a point-like blob in the warped image.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage, special, stats

pytest.importorskip("kornia", reason="image randomization needs the 'augment' extra (torch, kornia)")
torch = pytest.importorskip("torch")

import domain_randomization.image as dri  # noqa: E402
from domain_randomization.image import OPS, ImageRandomizationError, apply, sample_params  # noqa: E402

H, W = 96, 128


def rec(op, **params):
    return {"version": 1, "preset": "custom", "ops": [{"op": op, **params}]}


def one(image, op, **params):
    return apply(image, params=rec(op, **params)).image


@pytest.fixture(scope="module")
def scene():
    """A smooth image with structure, a 3-class label map, landmarks and boxes."""
    g = np.random.default_rng(7)
    vv, uu = np.mgrid[0:H, 0:W]
    image = 0.2 + 0.5 * np.exp(-((uu - 60) ** 2 + (vv - 50) ** 2) / (2 * 25.0**2))
    image = ndimage.gaussian_filter(image + 0.1 * g.random((H, W)), 1.0).astype(np.float32)
    masks = np.zeros((H, W), np.int32)
    masks[(uu - 50) ** 2 + (vv - 40) ** 2 < 20**2] = 1
    masks[30:70, 80:110] = 2
    keypoints = np.array([[50.0, 40.0], [95.3, 50.6], [10.0, 80.0], [120.0, 5.0]])
    boxes = np.array([[30.0, 20.0, 70.0, 60.0], [80.0, 30.0, 110.0, 70.0]])
    return image, masks, keypoints, boxes


def blob_image(points, sigma=1.0, shape=(H, W)):
    vv, uu = np.mgrid[0 : shape[0], 0 : shape[1]]
    img = np.zeros(shape)
    for u, v in points:
        img += np.exp(-((uu - u) ** 2 + (vv - v) ** 2) / (2 * sigma**2))
    return np.clip(img, 0, 1).astype(np.float32)


def centroid_near(image, point, radius=6):
    u0, v0 = int(round(point[0])), int(round(point[1]))
    rows = np.arange(max(0, v0 - radius), min(image.shape[0], v0 + radius + 1))
    cols = np.arange(max(0, u0 - radius), min(image.shape[1], u0 + radius + 1))
    patch = image[np.ix_(rows, cols)].astype(np.float64)
    return np.array([(patch * cols[None]).sum(), (patch * rows[:, None]).sum()]) / patch.sum()


# ------------------------------------------------------------------ presets


def test_none_preset_is_identity(scene):
    image, masks, keypoints, boxes = scene
    for i in range(20):
        params = sample_params("none", np.random.default_rng(i))
        assert params["ops"] == []
    out = apply(image, masks, keypoints, boxes, params)
    assert out.image.dtype == np.float32
    assert np.array_equal(out.image, image) and np.array_equal(out.masks, masks)
    assert np.array_equal(out.keypoints, keypoints) and np.array_equal(out.boxes, boxes)
    assert out.visible.all()


@pytest.mark.parametrize("preset", ["strong", "mild"])
def test_replay_is_bit_exact(scene, preset):
    image, masks, keypoints, boxes = scene
    n_ops = 0
    for i in range(40):
        out = dri.randomize(image, masks, keypoints, boxes, rng=np.random.default_rng([3, i]), preset=preset)
        stored = json.loads(json.dumps(out.params))  # what a dataset keeps
        again = apply(image, masks, keypoints, boxes, stored)
        n_ops += len(stored["ops"])
        for field in ("image", "masks", "keypoints", "visible", "boxes"):
            assert np.array_equal(getattr(out, field), getattr(again, field)), (i, field, stored)
    assert n_ops > 20  # the draws exercised real ops, not just the empty record


@pytest.mark.parametrize("op", sorted(OPS))
def test_every_op_replays_bit_exactly_with_any_thread_count(scene, op):
    image, masks, keypoints, boxes = scene
    for seed in range(11, 40):  # coarse ops on a coarse grid sometimes hit no cell: take a draw that acts
        params = json.loads(json.dumps({"version": 1, "ops": OPS[op]().sample(np.random.default_rng(seed))}))
        first = apply(image, masks, keypoints, boxes, params)
        if not np.array_equal(first.image, image):
            break
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        second = apply(image, masks, keypoints, boxes, params)
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(first.image, second.image)
    assert np.array_equal(first.masks, second.masks)
    assert np.array_equal(first.keypoints, second.keypoints)
    assert not np.array_equal(first.image, image), f"{op} with {params} changed nothing"
    assert first.image.dtype == np.float32 and 0.0 <= first.image.min() and first.image.max() <= 1.0


# ------------------------------------------------------- statistics of draws
# SyntheX strong: block p = 0.5; invert p = 0.5; noise (one of 3) p = 0.5; contrast
# (one of 4) p = 0.5; affine p = 0.5; then SomeOf(1..2) of 6 groups in random order,
# each group firing with p = 0.5 (and choosing one of its options uniformly).
# A group is selected with probability P(n=1) 1/6 + P(n=2) 2/6 = 1/4.
_BLOCK = 0.5
_GROUP = _BLOCK * (0.5 * 1 / 6 + 0.5 * 2 / 6) * 0.5
STRONG_P = {
    "invert": _BLOCK * 0.5,
    **{op: _BLOCK * 0.5 / 3 for op in ("impulse_noise", "salt_and_pepper", "coarse_salt_and_pepper")},
    **{op: _BLOCK * 0.5 / 4 for op in ("linear_contrast", "gamma_contrast", "log_contrast", "sigmoid_contrast")},
    "affine": _BLOCK * 0.5,
    **{op: _GROUP / 2 for op in ("gaussian_blur", "average_blur", "dropout", "coarse_dropout", "sharpen", "emboss",
                                 "multiply", "elementwise_multiply")},
    **{op: _GROUP / 4 for op in ("average_pooling", "max_pooling", "min_pooling", "median_pooling")},
    "elastic": _GROUP,
    "gaussian_noise": 0.0,
}
MILD_P = {"gaussian_noise": 0.5 * 0.5, "gamma_contrast": 0.5 * 0.5}

# continuous parameter ranges (uniform) and integer ranges (closed), from SyntheX
STRONG_RANGES = {
    "coarse_salt_and_pepper": {"size": (0.01, 0.10)},
    "linear_contrast": {"alpha": (0.5, 2.0)},
    "gamma_contrast": {"gamma": (0.5, 2.0)},
    "log_contrast": {"gain": (0.6, 1.4)},
    "sigmoid_contrast": {"gain": (3.0, 10.0), "cutoff": (0.4, 0.6)},
    "affine": {"rotation_deg": (-5.0, 5.0), "translate_px": (0.0, 20.0), "translate_dir_deg": (0.0, 360.0),
               "shear_x_deg": (-2.0, 2.0), "shear_y_deg": (-2.0, 2.0), "scale": (0.9, 1.1)},
    "gaussian_blur": {"sigma": (0.0, 3.0)},
    "dropout": {"p": (0.10, 0.15)},
    "coarse_dropout": {"p": (0.10, 0.15), "size": (0.10, 0.15)},
    "sharpen": {"alpha": (0.5, 1.0), "lightness": (1.0, 1.5)},
    "emboss": {"alpha": (0.5, 1.0), "strength": (1.0, 2.0)},
    "multiply": {"factor": (0.5, 1.5)},
    "elastic": {"alpha": (0.5, 3.5)},
}
STRONG_INTS = {"average_blur": {"k": (4, 6)},
               **{f"{m}_pooling": {"k": (2, 4)} for m in ("average", "max", "min", "median")}}
STRONG_FIXED = {"impulse_noise": {"p": 0.1}, "salt_and_pepper": {"p": 0.1}, "coarse_salt_and_pepper": {"p": 0.05},
                "elementwise_multiply": {"low": 0.5, "high": 1.5}, "elastic": {"sigma": 0.25}}
GROUPS = [{"gaussian_blur", "average_blur"}, {"dropout", "coarse_dropout"}, {"sharpen", "emboss"},
          {"average_pooling", "max_pooling", "min_pooling", "median_pooling"},
          {"multiply", "elementwise_multiply"}, {"elastic"}]
FIXED_ORDER = ["invert", "noise", "contrast", "affine"]


def _draws(preset, n, seed):
    g = np.random.default_rng(seed)
    return [sample_params(preset, g)["ops"] for _ in range(n)]


def _assert_rate(k, n, p, what):
    ci = stats.binomtest(k, n, p).proportion_ci(confidence_level=0.99999)
    assert ci.low <= p <= ci.high, f"{what}: fired {k}/{n} = {k / n:.4f}, SyntheX probability {p:.4f}"


@pytest.fixture(scope="module")
def strong_draws():
    return _draws("strong", 40000, 2023)


def test_strong_ops_fire_with_synthex_probabilities(strong_draws):
    n = len(strong_draws)
    counts = {op: 0 for op in OPS}
    for ops in strong_draws:
        names = [r["op"] for r in ops]
        assert len(names) == len(set(names)), names  # no op twice in one record
        for name in names:
            counts[name] += 1
    assert set(STRONG_P) == set(OPS)
    for op, p in STRONG_P.items():
        _assert_rate(counts[op], n, p, op)
    # empty record: block off, or block on with the 4 fixed steps off and no SomeOf op firing
    # (n = 1: its group off, 1/2; n = 2: both off, 1/4)
    p_empty = (1 - _BLOCK) + _BLOCK * 0.5**4 * (0.5 * 0.5 + 0.5 * 0.25)
    _assert_rate(sum(not ops for ops in strong_draws), n, p_empty, "empty record")


def test_strong_structure_one_of_groups_and_random_order(strong_draws):
    category = {"invert": "invert", "affine": "affine",
                **{op: "noise" for op in ("impulse_noise", "salt_and_pepper", "coarse_salt_and_pepper")},
                **{op: "contrast" for op in ("linear_contrast", "gamma_contrast", "log_contrast", "sigmoid_contrast")}}
    two_fired, first_before_second, pair_total = 0, 0, 0
    for ops in strong_draws:
        names = [r["op"] for r in ops]
        fixed = [category[x] for x in names if x in category]
        assert fixed == [c for c in FIXED_ORDER if c in fixed]  # one per category, fixed order
        tail = names[len(fixed):]
        assert all(x not in category for x in tail)  # SomeOf ops come last
        groups = [next(i for i, g in enumerate(GROUPS) if x in g) for x in tail]
        assert len(tail) <= 2 and len(set(groups)) == len(groups)
        two_fired += len(tail) == 2
        if len(tail) == 2 and set(groups) == {0, 5}:  # blur and elastic: both orders must occur
            pair_total += 1
            first_before_second += groups[0] == 0
    n = len(strong_draws)
    _assert_rate(two_fired, n, _BLOCK * 0.5 * 0.25, "two SomeOf ops fired")
    _assert_rate(first_before_second, pair_total, 0.5, "blur before elastic (random order)")


def test_strong_parameters_stay_in_range_and_cover_it(strong_draws):
    values: dict[tuple[str, str], list] = {}
    for ops in strong_draws:
        for r in ops:
            for key, v in r.items():
                if key not in ("op", "seed"):
                    values.setdefault((r["op"], key), []).append(v)
                elif key == "seed":
                    assert isinstance(v, int) and 0 <= v < 2**32
    for op, ranges in STRONG_RANGES.items():
        for key, (lo, hi) in ranges.items():
            x = np.asarray(values[(op, key)])
            assert x.min() >= lo and x.max() <= hi, (op, key, x.min(), x.max())
            ks = stats.kstest(x, stats.uniform(lo, hi - lo).cdf)
            assert ks.pvalue > 1e-5, (op, key, ks)
    for op, ranges in STRONG_INTS.items():
        for key, (lo, hi) in ranges.items():
            x = np.asarray(values[(op, key)])
            levels = np.arange(lo, hi + 1)
            observed = np.array([(x == k).sum() for k in levels])
            assert observed.sum() == len(x)
            assert stats.chisquare(observed).pvalue > 1e-5, (op, key, observed)
    for op, fixed in STRONG_FIXED.items():
        for key, v in fixed.items():
            assert set(values[(op, key)]) == {v}, (op, key)


def test_mild_preset_probabilities_and_ranges():
    draws = _draws("mild", 20000, 5)
    n = len(draws)
    names = [[r["op"] for r in ops] for ops in draws]
    for op, p in MILD_P.items():
        _assert_rate(sum(op in x for x in names), n, p, op)
    _assert_rate(sum(len(x) == 2 for x in names), n, 0.5 * 0.25, "both mild ops")
    assert all(set(x) <= set(MILD_P) for x in names)
    gammas = np.array([r["gamma"] for ops in draws for r in ops if r["op"] == "gamma_contrast"])
    sigmas = np.array([r["sigma"] for ops in draws for r in ops if r["op"] == "gaussian_noise"])
    assert stats.kstest(gammas, stats.uniform(0.7, 0.6).cdf).pvalue > 1e-5
    assert stats.kstest(sigmas, stats.uniform(0.005, 0.005).cdf).pvalue > 1e-5


def test_sampling_uses_only_the_given_generator():
    np.random.seed(1)
    torch.manual_seed(1)
    a = sample_params("strong", np.random.default_rng(99))
    np.random.seed(2)
    torch.manual_seed(2)
    b = sample_params("strong", np.random.default_rng(99))
    assert a == b
    c = [sample_params("strong", np.random.default_rng(s))["ops"] for s in range(60)]
    assert len({json.dumps(x) for x in c}) > 20  # about half the records are empty (block off)



def test_some_of_without_random_order_keeps_list_order():
    tree = dri.SomeOf((2, 3), (dri.Sometimes(1.0, dri.intensity.Invert()), dri.intensity.Multiply(),
                               dri.intensity.GammaContrast()), random_order=False)
    order = {"invert": 0, "multiply": 1, "gamma_contrast": 2}
    seen = set()
    for s in range(200):
        names = [r["op"] for r in sample_params(tree, np.random.default_rng(s))["ops"]]
        assert [order[x] for x in names] == sorted(order[x] for x in names)
        seen.add(len(names))
    assert seen == {2, 3}

# ----------------------------------------------------------------- geometry

AFFINE_CASES = [
    dict(rotation_deg=5.0, translate_px=20.0, translate_dir_deg=30.0, shear_x_deg=2.0, shear_y_deg=-2.0, scale=1.1),
    dict(rotation_deg=-5.0, translate_px=7.0, translate_dir_deg=250.0, shear_x_deg=-2.0, shear_y_deg=2.0, scale=0.9),
]


@pytest.mark.parametrize("params", AFFINE_CASES + [dri.Affine().draw(np.random.default_rng(s)) for s in range(3)])
def test_affine_blob_lands_on_the_transformed_landmark(params):
    points = np.array([[40.3, 30.6], [70.0, 55.5], [90.8, 40.2], [55.5, 70.1]])
    out = apply(blob_image(points), keypoints=points, params=rec("affine", **params))
    for moved in out.keypoints:
        assert np.linalg.norm(centroid_near(out.image, moved) - moved) < 0.5
    assert out.visible.all()


def test_affine_conventions_translation_direction_and_rotation_sense():
    g = np.random.default_rng(0)
    img = g.random((65, 65)).astype(np.float32)
    shifted = one(img, "affine", rotation_deg=0.0, translate_px=10.0, translate_dir_deg=90.0,
                  shear_x_deg=0.0, shear_y_deg=0.0, scale=1.0)
    assert np.allclose(shifted[10:], img[:-10], atol=1e-5)  # direction 90 deg = +v (down)
    turned = one(img, "affine", rotation_deg=90.0, translate_px=0.0, translate_dir_deg=0.0,
                 shear_x_deg=0.0, shear_y_deg=0.0, scale=1.0)
    assert np.allclose(turned, np.rot90(img, k=-1), atol=1e-4)  # positive = clockwise on screen
    same = one(img, "affine", rotation_deg=0.0, translate_px=0.0, translate_dir_deg=0.0,
               shear_x_deg=0.0, shear_y_deg=0.0, scale=1.0)
    assert np.allclose(same, img, atol=1e-5)


def _reflect_index(x, n):
    period = 2 * (n - 1)
    r = np.mod(x, period)
    return np.where(r > n - 1, period - r, r)


def _numpy_sample(image, su, sv, nearest):
    """Independent resampler: image at continuous (su, sv), reflecting about border pixel centres."""
    h, w = image.shape
    su, sv = _reflect_index(su, w), _reflect_index(sv, h)
    if nearest:
        return image[np.rint(sv).astype(int), np.rint(su).astype(int)]
    u0 = np.clip(np.floor(su).astype(int), 0, w - 2)
    v0 = np.clip(np.floor(sv).astype(int), 0, h - 2)
    fu, fv = su - u0, sv - v0
    return ((1 - fu) * (1 - fv) * image[v0, u0] + fu * (1 - fv) * image[v0, u0 + 1]
            + (1 - fu) * fv * image[v0 + 1, u0] + fu * fv * image[v0 + 1, u0 + 1])


def _near_tie(x):
    return np.abs(np.mod(x, 1.0) - 0.5) < 1e-3


@pytest.mark.parametrize("params", AFFINE_CASES)
def test_affine_mask_moves_like_the_image(scene, params):
    image, masks, _, _ = scene
    out = apply(image, masks, params=rec("affine", **params))
    # independent inverse mapping: build the forward matrix from the documented formula
    c = np.array([(W - 1) / 2, (H - 1) / 2])
    a, s = np.deg2rad(params["rotation_deg"]), params["scale"]
    lin = (np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
           @ np.array([[1, np.tan(np.deg2rad(params["shear_x_deg"]))], [0, 1]])
           @ np.array([[1, 0], [np.tan(np.deg2rad(params["shear_y_deg"])), 1]]) * s)
    d = np.deg2rad(params["translate_dir_deg"])
    t = params["translate_px"] * np.array([np.cos(d), np.sin(d)])
    vv, uu = np.mgrid[0:H, 0:W]
    q = np.stack([uu.ravel(), vv.ravel()], axis=1) - c - t
    src = q @ np.linalg.inv(lin).T + c
    su, sv = src[:, 0].reshape(H, W), src[:, 1].reshape(H, W)
    ok = ~(_near_tie(_reflect_index(su, W)) | _near_tie(_reflect_index(sv, H)))
    assert np.array_equal(out.masks[ok], _numpy_sample(masks, su, sv, nearest=True)[ok])
    assert ok.mean() > 0.99
    assert np.allclose(out.image, _numpy_sample(image.astype(np.float64), su, sv, nearest=False), atol=1e-4)
    assert out.masks.dtype == masks.dtype and set(np.unique(out.masks)) <= set(np.unique(masks))
    stacked = apply(image, np.stack([masks, masks == 1]).astype(np.uint8), params=rec("affine", **params)).masks
    assert np.array_equal(stacked[0], out.masks) and np.array_equal(stacked[1], out.masks == 1)


def test_elastic_synthex_field_point_blob_centroid_is_the_moved_landmark():
    # SyntheX's field (sigma 0.25) is rough, so a landmark's intensity scatters; the
    # recorded landmark must be the centroid of where a one-pixel landmark's intensity goes
    params = dict(alpha=3.5, sigma=0.25, seed=12345)
    points = np.array([[30.0, 40.0], [64.0, 48.0], [100.0, 20.0], [1.0, 50.0]])
    moved = apply(blob_image(points[:1], 1e-3), keypoints=points, params=rec("elastic", **params)).keypoints
    for p, m in zip(points, moved):
        delta = np.zeros((H, W), np.float32)
        delta[int(p[1]), int(p[0])] = 1.0
        out = one(delta, "elastic", **params)
        ys, xs = np.nonzero(out)
        centre = np.array([(out[ys, xs] * xs).sum(), (out[ys, xs] * ys).sum()]) / out.sum()
        assert np.linalg.norm(centre - m) < 1e-3, (p, m, centre)
        assert np.linalg.norm(m - p) < 3.5 * np.sqrt(2)


def test_elastic_smooth_field_blob_lands_on_the_landmark(scene):
    params = dict(alpha=150.0, sigma=8.0, seed=4)  # a smooth field of a few pixels
    image, masks, _, _ = scene
    points = np.array([[30.3, 30.7], [60.0, 50.0], [95.5, 35.2], [70.2, 75.9]])
    out = apply(blob_image(points), masks, points, params=rec("elastic", **params))
    shift = np.linalg.norm(out.keypoints - points, axis=1)
    assert shift.max() > 1.0  # the field really moved things
    for moved in out.keypoints:
        assert np.linalg.norm(centroid_near(out.image, moved) - moved) < 0.5
    # image and mask follow the same sampling positions (independent resampler)
    vv, uu = np.mgrid[0:H, 0:W].astype(float)
    du, dv = dri.Elastic.displacement((H, W), **params)
    su, sv = uu + du, vv + dv
    ok = ~(_near_tie(_reflect_index(su, W)) | _near_tie(_reflect_index(sv, H)))
    assert np.array_equal(out.masks[ok], _numpy_sample(masks, su, sv, nearest=True)[ok])
    warped = one(image, "elastic", **params)
    assert np.allclose(warped, _numpy_sample(image.astype(np.float64), su, sv, nearest=False), atol=1e-4)


def test_landmark_leaving_the_image_is_flagged_and_kept():
    pts = np.array([[W - 5.0, 40.0], [50.0, 40.0], [20.0, 20.0]])
    vis = np.array([True, True, False])
    out = apply(np.full((H, W), 0.5, np.float32), keypoints=pts, visible=vis,
                params=rec("affine", rotation_deg=0.0, translate_px=20.0, translate_dir_deg=0.0,
                           shear_x_deg=0.0, shear_y_deg=0.0, scale=1.0))
    assert np.allclose(out.keypoints, pts + [20.0, 0.0])
    assert out.visible.tolist() == [False, True, False]  # left the image / inside / stays invisible


def test_boxes_follow_the_warp():
    boxes = np.array([[20.0, 30.0, 50.0, 60.0], [100.0, 10.0, 120.0, 20.0]])
    params = dict(rotation_deg=5.0, translate_px=10.0, translate_dir_deg=0.0, shear_x_deg=0.0,
                  shear_y_deg=0.0, scale=1.0)
    out = apply(np.full((H, W), 0.5, np.float32), boxes=boxes, params=rec("affine", **params))
    a = np.deg2rad(5.0)
    c = np.array([(W - 1) / 2, (H - 1) / 2])
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    for box, got in zip(boxes, out.boxes):
        corners = np.array([[box[0], box[1]], [box[2], box[1]], [box[2], box[3]], [box[0], box[3]]])
        moved = (corners - c) @ rot.T + c + [10.0, 0.0]
        want = np.concatenate([moved.min(0), moved.max(0)])
        want = np.clip(want, -0.5, [W - 0.5, H - 0.5, W - 0.5, H - 0.5])
        assert np.allclose(got, want, atol=1e-9)
    assert out.boxes[1, 2] == W - 0.5  # clipped at the image edge


# --------------------------------------------- each op against a reference


@pytest.fixture(scope="module")
def ramp():
    g = np.random.default_rng(1)
    return g.random((37, 50)).astype(np.float32)


def test_pointwise_ops_match_closed_forms(ramp):
    x = ramp.astype(np.float64)
    assert np.array_equal(one(ramp, "invert"), (1 - ramp))
    assert np.allclose(one(ramp, "gamma_contrast", gamma=1.7), x**1.7, atol=1e-6)
    assert np.allclose(one(ramp, "gamma_contrast", gamma=0.5), np.sqrt(x), atol=1e-6)
    assert np.allclose(one(ramp, "linear_contrast", alpha=1.8), np.clip(0.5 + 1.8 * (x - 0.5), 0, 1), atol=1e-6)
    assert np.allclose(one(ramp, "log_contrast", gain=1.3), np.clip(1.3 * np.log2(1 + x), 0, 1), atol=1e-6)
    assert np.allclose(one(ramp, "sigmoid_contrast", gain=7.0, cutoff=0.45), special.expit(7 * (x - 0.45)), atol=1e-6)
    assert np.allclose(one(ramp, "multiply", factor=1.4), np.clip(1.4 * x, 0, 1), atol=1e-6)


@pytest.mark.parametrize("sigma", [0.5, 1.3, 3.0])
def test_gaussian_blur_matches_scipy(ramp, sigma):
    radius = int(3 * sigma + 0.5)
    want = ndimage.gaussian_filter(ramp.astype(np.float64), sigma, mode="mirror", truncate=radius / sigma)
    assert np.allclose(one(ramp, "gaussian_blur", sigma=sigma), want, atol=1e-5)


def test_gaussian_blur_of_sigma_near_zero_is_identity(ramp):
    assert np.array_equal(one(ramp, "gaussian_blur", sigma=0.05), ramp)


@pytest.mark.parametrize("k", [4, 5, 6])
def test_average_blur_matches_a_hand_window_mean(ramp, k):
    lo, hi = (k - 1) // 2, k // 2  # window offsets, documented for even k
    padded = np.pad(ramp.astype(np.float64), ((lo, hi), (lo, hi)), mode="reflect")
    want = np.zeros_like(ramp, dtype=np.float64)
    for dv in range(k):
        for du in range(k):
            want += padded[dv : dv + ramp.shape[0], du : du + ramp.shape[1]]
    assert np.allclose(one(ramp, "average_blur", k=k), want / k**2, atol=1e-5)


def test_sharpen_and_emboss_match_their_kernels(ramp):
    x = ramp.astype(np.float64)
    ident = np.zeros((3, 3))
    ident[1, 1] = 1
    a, light = 0.7, 1.2
    sharp = -np.ones((3, 3))
    sharp[1, 1] = 8 + light
    want = np.clip(ndimage.correlate(x, (1 - a) * ident + a * sharp, mode="mirror"), 0, 1)
    assert np.allclose(one(ramp, "sharpen", alpha=a, lightness=light), want, atol=1e-5)
    a, s = 0.9, 1.5
    emb = np.array([[-1 - s, -s, 0], [-s, 1, s], [0, s, 1 + s]])
    want = np.clip(ndimage.correlate(x, (1 - a) * ident + a * emb, mode="mirror"), 0, 1)
    assert np.allclose(one(ramp, "emboss", alpha=a, strength=s), want, atol=1e-5)


@pytest.mark.parametrize("mode,reduce", [("average", np.mean), ("max", np.max), ("min", np.min), ("median", np.median)])
@pytest.mark.parametrize("k", [2, 3, 4])
def test_pooling_matches_hand_block_reduction(ramp, mode, reduce, k):
    got = one(ramp, f"{mode}_pooling", k=k)
    h, w = ramp.shape
    for r0 in range(0, h, k):
        for c0 in range(0, w, k):
            block = ramp[r0 : r0 + k, c0 : c0 + k]
            assert np.allclose(got[r0 : r0 + k, c0 : c0 + k], reduce(block.astype(np.float64)), atol=1e-6)


def test_dropout_zeroes_a_fraction_p_and_leaves_the_rest():
    img = np.full((200, 200), 0.6, np.float32)
    out = one(img, "dropout", p=0.12, seed=3)
    zero = out == 0
    _assert_rate(int(zero.sum()), zero.size, 0.12, "dropout")
    assert np.array_equal(out[~zero], img[~zero])


@pytest.mark.parametrize("op,extra", [("coarse_dropout", {"p": 0.3}), ("coarse_salt_and_pepper", {"p": 0.3})])
def test_coarse_ops_hit_whole_cells(op, extra):
    img = np.full((200, 200), 0.6, np.float32)
    size = 0.1  # 20 x 20 cells of 10 x 10 px
    hit = one(img, op, size=size, seed=8, **extra) != 0.6
    cells = hit.reshape(20, 10, 20, 10).transpose(0, 2, 1, 3).reshape(20, 20, 100)
    assert np.all(cells.all(-1) | ~cells.any(-1)), "a cell was hit partially"
    _assert_rate(int(cells.all(-1).sum()), 400, 0.3, op)


def test_salt_and_pepper_replaces_p_with_black_or_white():
    img = np.full((200, 200), 0.6, np.float32)
    out = one(img, "salt_and_pepper", p=0.1, seed=5)
    hit = out != 0.6
    _assert_rate(int(hit.sum()), hit.size, 0.1, "salt and pepper")
    assert set(np.unique(out[hit])) == {0.0, 1.0}
    _assert_rate(int((out[hit] == 1.0).sum()), int(hit.sum()), 0.5, "salt share")


def test_impulse_noise_replaces_p_with_uniform_values():
    img = np.full((200, 200), 0.6, np.float32)
    out = one(img, "impulse_noise", p=0.1, seed=6)
    hit = out != 0.6
    _assert_rate(int(hit.sum()), hit.size, 0.1, "impulse noise")
    assert stats.kstest(out[hit], stats.uniform(0, 1).cdf).pvalue > 1e-4


def test_gaussian_noise_has_the_recorded_sigma():
    img = np.full((200, 200), 0.5, np.float32)
    noise = (one(img, "gaussian_noise", sigma=0.01, seed=9) - img).astype(np.float64).ravel()
    n = noise.size
    chi2 = (noise**2).sum() / 0.01**2  # ~ chi-square with n dof when the sigma is right
    assert stats.chi2(n).ppf(1e-5) < chi2 < stats.chi2(n).ppf(1 - 1e-5)
    assert abs(noise.mean()) < 5 * 0.01 / np.sqrt(n)


def test_elementwise_multiply_factors_are_uniform_in_range():
    img = np.full((200, 200), 0.5, np.float32)
    factors = one(img, "elementwise_multiply", low=0.5, high=1.5, seed=10) / 0.5
    assert factors.min() >= 0.5 - 1e-6 and factors.max() <= 1.5 + 1e-6
    assert stats.kstest(factors.ravel(), stats.uniform(0.5, 1.0).cdf).pvalue > 1e-4


def test_per_pixel_noise_is_a_function_of_the_recorded_seed(ramp):
    a = one(ramp, "dropout", p=0.12, seed=1)
    assert np.array_equal(a, one(ramp, "dropout", p=0.12, seed=1))
    assert not np.array_equal(a, one(ramp, "dropout", p=0.12, seed=2))


# --------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(image=np.full((32, 32), np.nan, np.float32)), "NaN"),
        (dict(image=np.zeros((3, 32, 32), np.float32)), "2-D"),
        (dict(image=np.zeros((8, 32), np.float32)), "at least 16 x 16"),
        (dict(image=np.full((32, 32), 2.0, np.float32)), r"\[0, 1\]"),
        (dict(image=np.zeros((32, 32), np.uint8)), "floating point"),
        (dict(masks=np.zeros((30, 32), np.int32)), "masks"),
        (dict(masks=np.zeros((32, 32), np.float32)), "integer"),
        (dict(keypoints=np.zeros((3, 3))), "keypoints"),
        (dict(boxes=np.array([[5.0, 5.0, 1.0, 9.0]])), "u1 >= u0"),
        (dict(params={"ops": [{"op": "twirl"}]}), "unknown image op 'twirl'"),
        (dict(params={"ops": [{"op": "gamma_contrast", "gama": 1.0}]}), "needs parameters"),
        (dict(params={"ops": [{"op": "gamma_contrast", "gamma": float("nan")}]}), "finite"),
        (dict(params=None), "params"),
    ],
)
def test_bad_input_gets_one_clear_error(kwargs, match):
    args = dict(image=np.zeros((32, 32), np.float32), params={"ops": []})
    args.update(kwargs)
    with pytest.raises(ImageRandomizationError, match=match):
        apply(**args)


def test_bad_preset_and_generator():
    with pytest.raises(ImageRandomizationError, match="unknown image randomization preset 'strnog'"):
        sample_params("strnog", np.random.default_rng(0))
    with pytest.raises(ImageRandomizationError, match="numpy.random.Generator"):
        sample_params("strong", None)
    with pytest.raises(ImageRandomizationError, match="probability"):
        dri.Sometimes(1.5, dri.NONE)


# ------------------------------------------------------- data loader wrapper


class _Items(torch.utils.data.Dataset):
    def __init__(self, scene, n=8):
        self.scene, self.n = scene, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        image, masks, keypoints, boxes = self.scene
        return {"image": image, "masks": masks, "keypoints": keypoints, "boxes": boxes, "index": i}


def _collect(loader):
    return [{k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in batch.items()} for batch in loader]


def test_dataset_wrapper_is_worker_safe_and_replayable(scene):
    data = dri.RandomizedDataset(_Items(scene), preset="strong", seed=5)
    serial = _collect(torch.utils.data.DataLoader(data, batch_size=2, num_workers=0))
    parallel = _collect(torch.utils.data.DataLoader(data, batch_size=2, num_workers=2))
    for a, b in zip(serial, parallel):
        assert a["randomization"] == b["randomization"]
        for key in ("image", "masks", "keypoints", "visible", "boxes"):
            assert np.array_equal(a[key], b[key]), key
    first = [data[i]["randomization"] for i in range(len(data))]
    data.set_epoch(1)
    second = [data[i]["randomization"] for i in range(len(data))]
    assert first != second and len(set(first)) > 1
    item = data[3]  # the stored record replays the item
    again = apply(scene[0], scene[1], scene[2], scene[3], json.loads(item["randomization"]))
    assert np.array_equal(item["image"], again.image) and np.array_equal(item["keypoints"], again.keypoints)


def test_rng_for_depends_on_seed_epoch_and_index():
    draws = {(s, e, i): dri.rng_for(s, e, i).random() for s in range(2) for e in range(2) for i in range(3)}
    assert len(set(draws.values())) == len(draws)
    assert dri.rng_for(1, 1, 2).random() == draws[(1, 1, 2)]
    with pytest.raises(ImageRandomizationError, match="index"):
        dri.rng_for(0, 0, -1)
