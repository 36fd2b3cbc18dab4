"""Sample i = f(config, seed, i): purity, labels against independent geometry, replay, samplers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from synthex_tiny import tiny

from domain_randomization import simulation as sim
from synthex.config import resolve_config
from synthex.pipeline import Pipeline


@pytest.fixture(scope="module")
def cfg():
    return resolve_config(tiny())


def test_a_sample_depends_only_on_config_seed_and_index(cfg):
    a = Pipeline(cfg)
    first = {k: a.sample(k) for k in (7, 1, 3)}  # an order that visits subjects out of order
    b = Pipeline(cfg)
    for k in (3, 7, 1):
        s = b.sample(k)
        for key, value in first[k].items():
            if key == "params":
                assert value == s[key]
            else:
                assert np.array_equal(value, s[key], equal_nan=value.dtype.kind == "f"), (k, key)
    other = Pipeline(resolve_config(tiny(seed=8))).sample(3)
    assert not np.array_equal(other["images"], first[3]["images"])


def test_landmarks_masks_and_boxes_follow_the_camera():
    """Landmarks are P @ X of the subject's world points (computed here from the stored P), masks are
    where the subject's structures project, labels pick the class with the longest path."""
    c = resolve_config(tiny(**{"image.size": 48}))
    pipe = Pipeline(c)
    s = pipe.sample(2)
    subject, projector, _ = pipe.subject(s["subject_id"].item())
    P = s["P"]
    for k, name in enumerate(c.landmarks):
        X = np.append(subject.landmarks[name], 1.0)
        x = P @ X
        assert np.allclose(s["landmarks"][k], x[:2] / x[2], atol=1e-3)
        inside = -0.5 <= x[0] / x[2] <= 47.5 and -0.5 <= x[1] / x[2] <= 47.5
        assert s["landmark_visible"][k] == inside
    # the femoral head centre lies inside the femur: where FH projects inside the image, the femur mask is on
    for side, cls in (("l", "femur_left"), ("r", "femur_right")):
        k = c.landmarks.index(f"FH_{side}")
        if s["landmark_visible"][k]:
            u, v = np.round(s["landmarks"][k]).astype(int)
            assert s["masks"][c.classes.index(cls), v, u] == 1
    # boxes enclose each mask exactly (pixel centres +/- 0.5)
    for ci in range(len(c.classes)):
        ys, xs = np.nonzero(s["masks"][ci])
        if ys.size:
            assert np.array_equal(s["boxes"][ci], [xs.min() - 0.5, ys.min() - 0.5, xs.max() + 0.5, ys.max() + 0.5])
        else:
            assert np.all(np.isnan(s["boxes"][ci]))
    # masks and labels from the path lengths of a fresh projection with the stored camera
    from projectors.geometry import Camera, Transform

    cam = Camera(K=s["K"], world_from_camera=Transform(s["world_from_camera"]), width=48, height=48, sdd=c.carm().sdd)
    paths = np.stack([projector.project(cam).path_length.get(n, np.zeros((48, 48))) for n in c.classes])
    assert np.array_equal(s["masks"], (paths > c.labels.min_path_mm).astype(np.uint8))
    longest = np.where((paths > c.labels.min_path_mm).any(axis=0), paths.argmax(axis=0) + 1, 0)
    assert np.array_equal(s["labels"], longest)
    assert (s["masks"].sum(axis=0) > 1).any()  # overlaps exist, so the rule was exercised


def test_the_recorded_physics_replays_the_image(cfg):
    """The stored record (physics parameters, density jitter, noise seed) reproduces the stored image."""
    from domain_randomization.simulation import scale_areal_density
    from projectors.geometry import Camera, Transform
    from projectors.physics import PhysicsParams, simulate

    pipe = Pipeline(cfg)
    for i in (0, 5):
        s = pipe.sample(i)
        rec = json.loads(s["params"])
        assert rec["index"] == i and rec["seed"] == cfg.seed
        _, projector, _ = pipe.subject(rec["subject_id"])
        w, h = cfg.image_size
        cam = Camera(K=s["K"], world_from_camera=Transform(s["world_from_camera"]), width=w, height=h,
                     sdd=rec["camera"]["sdd"])
        areal = scale_areal_density(projector.project(cam).areal_density, rec["materials"])
        image = simulate(areal, cam, PhysicsParams.from_dict(rec["physics"]), np.random.default_rng(rec["noise_seed"]))
        np.testing.assert_array_equal(image.image, s["images"])


def test_view_sampler_stays_in_its_ranges_and_is_centred():
    rng = np.random.default_rng(0)
    ranges = sim.ViewRanges(alpha_deg=(-20, 30), beta_deg=(-5, 5), target_jitter_mm=10.0)
    views = [sim.sample_view(rng, ranges) for _ in range(4000)]
    a = np.array([v["alpha_deg"] for v in views])
    off = np.array([v["isocenter_offset_mm"] for v in views])
    assert a.min() >= -20 and a.max() <= 30 and np.abs(off).max() <= 10
    # uniform on [-20, 30]: mean 5, std 50/sqrt(12); 5-sigma bound on the sample mean
    assert abs(a.mean() - 5.0) < 5 * (50 / np.sqrt(12)) / np.sqrt(len(a))


def test_density_jitter_scales_areal_density_exactly():
    """Scaling a material's density by s scales its line integral by s (A = int rho dl)."""
    from projectors.geometry import parallel_camera
    from projectors.materials import LabelMaterial, MaterialModel
    from projectors.projector import SceneVolume, project
    from projectors.volume import Volume

    hu = np.zeros((8, 8, 8), np.float32)
    labels = np.ones((8, 8, 8), np.int16)
    vol = Volume.from_array(hu, spacing=2.0, labels=labels, label_names={1: "block"})
    cam = parallel_camera((0, 1, 0), size=(8, 8), pitch=2.0)
    dense = project(
        SceneVolume(vol, MaterialModel(label_materials={1: LabelMaterial("soft_tissue", 1.1)})), cam, device="cpu"
    )
    base = project(
        SceneVolume(vol, MaterialModel(label_materials={1: LabelMaterial("soft_tissue", 1.0)})), cam, device="cpu"
    )
    scaled = sim.scale_areal_density(base.areal_density, {"density_scale": {"soft_tissue": 1.1}})
    assert np.allclose(scaled["soft_tissue"], dense.areal_density["soft_tissue"], rtol=1e-6)
    # and 16 mm of water-like tissue at 1 g/cm^3 is 1.6 g/cm^2 on the central ray
    assert base.areal_density["soft_tissue"][4, 4] == pytest.approx(1.6, rel=1e-5)


def test_threshold_jitter_moves_thresholds():
    from projectors.materials import DEFAULT_HU_MATERIALS

    rng = np.random.default_rng(1)
    j = sim.sample_threshold_jitter(rng, len(DEFAULT_HU_MATERIALS.thresholds), sim.MaterialRanges())
    m = sim.jittered_hu_map(DEFAULT_HU_MATERIALS, j)
    shift = np.subtract(m.thresholds, DEFAULT_HU_MATERIALS.thresholds)
    assert np.allclose(shift, j["threshold_shift_hu"]) and np.all(np.abs(shift) <= 20) and np.any(shift != 0)


def test_tool_task_poses_a_tool_per_view_and_labels_it():
    """Tool task: the manipulator mesh is re-posed in every view (pose recorded); its tip and
    base landmarks are P @ X of the placed tool and lie on its mask."""
    c = resolve_config(
        {
            "task": "tool",
            "n": 4,
            "image": {"size": 64},
            "projector": {"device": "cpu"},
            "views": {"target_jitter_mm": 0.0},
            "subjects": [{"source": "pelvis_tool", "count": 1, "spacing_mm": 6.0}],
        }
    )
    assert c.classes == ["tool"] and c.landmarks == ["base", "tip"]
    pipe = Pipeline(c)
    poses = []
    for i in range(2):
        s = pipe.sample(i)
        rec = json.loads(s["params"])
        poses.append(rec["pose"]["direction"])
        subject, _, _ = pipe.subject(0)
        placed = subject.place(rec["pose"])
        for k, name in enumerate(c.landmarks):
            x = s["P"] @ np.append(placed.landmarks[name], 1.0)
            assert np.allclose(s["landmarks"][k], x[:2] / x[2], atol=1e-3)
        # the view aims at the tip (no jitter): it projects to the principal point
        assert np.allclose(s["landmarks"][1], [31.5, 31.5], atol=1e-3)
        u, v = np.round(s["landmarks"][1]).astype(int)
        assert s["masks"][0][max(v - 1, 0) : v + 2, max(u - 1, 0) : u + 2].any()  # the tip sits on the tool's mask
        assert s["masks"][0].sum() > 10
    assert poses[0] != poses[1]


def test_covid_task_labels_lesions_where_their_centres_project():
    c = resolve_config(
        {
            "task": "covid",
            "n": 2,
            "image": {"size": 64},
            "projector": {"device": "cpu"},
            "subjects": [{"source": "chest_lesions", "count": 1, "spacing_mm": 5.0}],
        }
    )
    # the task's radiography defaults: the PA chest stand (1800 mm, PA view)
    assert c.carm().sdd == 1800.0 and c.carm().view == "pa" and c.classes == ["lung", "lesion"]
    pipe = Pipeline(c)
    s = pipe.sample(0)
    subject, _, _ = pipe.subject(0)
    hits = 0
    for lesion in subject.info["lesions"]["lesions"]:
        x = s["P"] @ np.append(lesion["center"], 1.0)
        u, v = np.round(x[:2] / x[2]).astype(int)
        if 0 <= u < 64 and 0 <= v < 64:
            assert s["masks"][1, v, u] == 1  # the ray through a lesion's centre crosses the lesion
            assert s["labels"][v, u] == 2  # and the lesion wins over the lung it lies in (task priority)
            hits += 1
    assert hits >= 1


def test_task_defaults_yield_to_the_users_config():
    c = resolve_config({"task": "covid", "geometry": {"sdd": 2000.0}, "subjects": [{"source": "chest_lesions"}]})
    # a user's sdd wins; the preset's patient stays at the detector (sid follows), the task's image size stays
    assert c.carm().sdd == 2000.0 and c.carm().view == "pa" and c.image_size == (224, 224)
    assert 2000.0 - c.carm().sid == pytest.approx(1800.0 - 1670.0)


def test_monte_carlo_scatter_samples_are_pure_replay_and_share_every_other_draw():
    """physics.scatter_model monte_carlo: a sample is bit-identical when rendered again (its photons'
    seed comes from the sample's stream and is stored), the record replays it, and every other draw
    (view, physics, density jitter, noise) is the fast model's."""
    from projectors.geometry import Camera, Transform
    from projectors.physics import PhysicsParams, simulate
    from projectors.physics.scatter_mc import VoxelScene

    c = resolve_config(tiny(**{"physics.scatter_model": "monte_carlo", "physics.scatter_photons": 200_000}))
    pipe = Pipeline(c)
    a = pipe.sample(3)
    b = Pipeline(c).sample(3)
    assert a["params"] == b["params"] and np.array_equal(a["images"], b["images"])
    rec = json.loads(a["params"])
    assert rec["physics"]["scatter"]["model"] == "monte_carlo" and rec["physics"]["scatter"]["photons"] == 200_000
    fast = json.loads(Pipeline(resolve_config(tiny())).sample(3)["params"])
    assert fast["view"] == rec["view"] and fast["noise_seed"] == rec["noise_seed"] and fast["materials"] == rec["materials"]
    assert {k: v for k, v in fast["physics"].items() if k != "scatter"} == {k: v for k, v in rec["physics"].items() if k != "scatter"}
    # replay from the record alone (and the subject's volume)
    subject, projector, _ = pipe.subject(rec["subject_id"])
    w, h = c.image_size
    cam = Camera(K=a["K"], world_from_camera=Transform(a["world_from_camera"]), width=w, height=h, sdd=rec["camera"]["sdd"])
    areal = sim.scale_areal_density(projector.project(cam).areal_density, rec["materials"])
    scene = VoxelScene.from_scene(subject.scene).scaled(rec["materials"]["density_scale"])
    image = simulate(areal, cam, PhysicsParams.from_dict(rec["physics"]), np.random.default_rng(rec["noise_seed"]),
                     field=a["field"].astype(bool), scene=scene)
    np.testing.assert_array_equal(image.image, a["images"])
    assert image.scatter.mean() > 0


def test_monte_carlo_scatter_renders_a_tool_subject():
    """A tool mesh blocks the primary; the Monte Carlo transports the anatomy's voxels (the mesh is not in
    the transport scene: see projectors.physics.scatter_mc.monte_carlo_scatter)."""
    c = resolve_config({"task": "tool", "n": 2, "image": {"size": 32}, "projector": {"device": "cpu"},
                        "subjects": [{"source": "pelvis_tool", "count": 1, "spacing_mm": 6.0}],
                        "physics": {"scatter_model": "monte_carlo", "scatter_photons": 100_000}})
    s = Pipeline(c).sample(1)
    assert np.all(np.isfinite(s["images"])) and s["images"].std() > 0 and s["masks"][0].sum() > 0
