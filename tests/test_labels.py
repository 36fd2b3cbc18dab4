"""2D labels line up with rendered images: landmark beads, structure masks, tool masks and boxes."""

import numpy as np
import pytest
from PIL import Image, ImageDraw

from phantoms.landmarks import HIP_CLASSES, HIP_LANDMARKS
from phantoms.pelvis import build_pelvis, pelvis_landmarks, sample_pelvis_parameters
from phantoms.tools import build_tool, sample_tool_parameters, sample_tool_pose, tool_pose
from projectors.geometry import CArm, Transform, rotation_x, rotation_y, rotation_z
from projectors.labels import (
    LabelError,
    boundary_band,
    bounding_box,
    box_to_coco,
    label_image,
    project_landmarks,
    structure_masks,
)
from projectors.mesh import mesh_path_lengths
from projectors.projector import project
from projectors.volume import Volume

CARM = CArm(sdd=1020, sid=530, size=(384, 384), pitch=1.6)  # ~320 mm field at the isocentre


def bead_volume(center, radius=1.5, spacing=0.25, n=15, hu=3000.0):
    """A partial-volume ball of dense material on a small grid centred on ``center`` (world mm)."""
    sub = 4
    c = (np.arange(n * sub) - (n * sub - 1) / 2) * spacing / sub
    X, Y, Z = np.meshgrid(c, c, c, indexing="ij")
    inside = (X**2 + Y**2 + Z**2 <= radius**2).reshape(n, sub, n, sub, n, sub).mean(axis=(1, 3, 5))
    origin = np.asarray(center) - (n - 1) / 2 * spacing
    return Volume.from_array(-1000.0 + (hu + 1000.0) * inside, spacing=spacing, origin=origin, name="bead")


def test_landmark_beads_render_on_projected_landmarks():
    """A 1.5 mm bead at each of the 14 landmarks renders within 0.5 px of its projected landmark."""
    rng = np.random.default_rng(11)
    for trial in range(3):
        lm = pelvis_landmarks(sample_pelvis_parameters(rng))
        # the patient lies a little rotated and off-centre on the table
        R = rotation_z(rng.uniform(-10, 10)) @ rotation_x(rng.uniform(-10, 10)) @ rotation_y(rng.uniform(-5, 5))
        world_from_pelvis = Transform.from_rt(R, rng.uniform(-20, 20, 3))
        lm = {k: world_from_pelvis.apply(v) for k, v in lm.items()}
        cam = CARM.camera(alpha=rng.uniform(-40, 40), beta=rng.uniform(-25, 25))
        pts = project_landmarks(cam, lm, HIP_LANDMARKS)
        assert pts.visible.all()
        vv, uu = np.mgrid[0 : cam.height, 0 : cam.width]
        for n in HIP_LANDMARKS:  # one bead per render: some landmarks project only a few pixels apart
            img = project(bead_volume(lm[n]), cam, device="cpu").total_areal_density()
            img = img - np.median(img)
            u, v = pts.uv[pts.names.index(n)]
            win = (np.hypot(uu - u, vv - v) < 5.5) & (img > 1e-6)
            assert img[~win].max() < 1e-6  # the bead's whole shadow lies in the window
            w = img[win]
            centroid = np.array([(uu[win] * w).sum(), (vv[win] * w).sum()]) / w.sum()
            assert np.linalg.norm(centroid - (u, v)) < 0.5, (trial, n, centroid, (u, v))


def test_landmark_flags():
    cam = CARM.camera(0, 0)
    src = cam.source_world
    pts = project_landmarks(cam, {"iso": [0, 0, 0], "far": [500, 0, 0], "behind": src - 50 * cam.principal_ray_world})
    assert pts.in_front.tolist() == [True, True, False]
    assert pts.in_image.tolist() == [True, False, False]
    assert np.all(np.isnan(pts.uv[2]))
    np.testing.assert_allclose(pts.uv[0], [(384 - 1) / 2, (384 - 1) / 2])
    with pytest.raises(LabelError, match="not given"):
        project_landmarks(cam, {"a": [0, 0, 0]}, names=["b"])
    with pytest.raises(LabelError, match="NaN"):
        project_landmarks(cam, np.array([[np.nan, 0, 0]]))


@pytest.fixture(scope="module")
def phantom():
    return build_pelvis(sample_pelvis_parameters(np.random.default_rng(21)), spacing=3.0)


def test_masks_match_each_structure_rendered_alone(phantom):
    """Mask from the scene's per-structure path length == where that structure, rendered alone, attenuates.

    The second route renders a volume holding only the structure's voxels (as
    bone HU, air elsewhere) and reads the non-air areal densities: the HU
    material channel, not the label path-length channel.
    """
    vol = phantom.volume
    cam = CArm(sdd=1020, sid=530, size=(96, 96), pitch=6.4).camera(alpha=25, beta=-10)  # 320 mm at the isocentre
    proj = project(vol, cam, device="cpu")
    masks = structure_masks(proj.path_length)
    assert set(HIP_CLASSES.values()) <= set(masks)
    for value, name in vol.label_names.items():
        alone = Volume(np.where(vol.labels == value, 1000.0, -1000.0), vol.world_from_ijk, name=name)
        ad = project(alone, cam, device="cpu").areal_density
        rendered = sum(a for m, a in ad.items() if m != "air") > 0
        assert rendered.sum() > 20, name
        differ = masks[name] ^ rendered
        assert not (differ & ~boundary_band(rendered, 1)).any(), name
        assert differ.sum() < 0.05 * rendered.sum(), name
    # the hip label image: every labelled pixel belongs to the mask of its class
    lab = label_image(proj.path_length, HIP_CLASSES)
    for value, name in HIP_CLASSES.items():
        assert np.all(masks[name][lab == value])


def test_label_image_overlaps():
    a = np.array([[0.0, 2.0, 5.0, 1.0]])
    b = np.array([[0.0, 3.0, 1.0, 0.05]])
    pl = {"a": a, "b": b}
    np.testing.assert_array_equal(label_image(pl, {1: "a", 2: "b"}), [[0, 2, 1, 1]])
    np.testing.assert_array_equal(label_image(pl, {1: "a", 2: "b"}, overlap="order"), [[0, 2, 2, 1]])
    np.testing.assert_array_equal(label_image(pl, {1: "a", 3: "missing"}), [[0, 1, 1, 1]])
    with pytest.raises(LabelError, match="overlap"):
        label_image(pl, {1: "a"}, overlap="max")
    with pytest.raises(LabelError, match="threshold"):
        structure_masks(pl, threshold_mm=-1)


def test_bounding_box_edges_and_coco():
    m = np.zeros((10, 12), bool)
    m[2:5, 3:9] = True
    assert bounding_box(m) == (2.5, 1.5, 8.5, 4.5)
    assert box_to_coco(bounding_box(m)) == [3.0, 2.0, 6.0, 3.0]
    assert bounding_box(np.zeros((4, 4), bool)) is None


def _rasterized_silhouette(camera, vertices, faces):
    """Independent route: draw every projected triangle with PIL at 8x resolution, pixel = any coverage."""
    s = 8
    uv = camera.project(vertices)
    img = Image.new("1", (camera.width * s, camera.height * s), 0)
    draw = ImageDraw.Draw(img)
    for f in faces:
        draw.polygon([tuple((uv[i] + 0.5) * s) for i in f], fill=1)
    big = np.asarray(img, dtype=bool)
    return big.reshape(camera.height, s, camera.width, s).any(axis=(1, 3))


@pytest.mark.parametrize("kind", ["kwire", "continuum_manipulator", "cannulated_screw"])
def test_tool_mask_and_box_contain_the_tool_and_nothing_else(kind):
    rng = np.random.default_rng(4)
    tool = build_tool(kind, sample_tool_parameters(kind, rng))
    pose = sample_tool_pose(rng, tool, target=[10.0, 5.0, 0.0], approach=(0, 1, 0.3), max_angle=35)
    tool = tool.placed(tool_pose(tool, pose))
    cam = CArm(sdd=1020, sid=530, size=(160, 160), pitch=1.2).camera(alpha=-20, beta=10)
    out = mesh_path_lengths(tool.mesh(), cam, device="cpu")
    mask = structure_masks(out.path_length)[tool.name]
    silhouette = _rasterized_silhouette(cam, tool.mesh().vertices, tool.mesh().faces)
    assert mask.sum() > 30
    differ = mask ^ silhouette
    assert not (differ & ~boundary_band(silhouette, 1)).any()
    # the box is the rasterized silhouette's box to within a pixel on each side (and never larger)
    box, sbox = bounding_box(mask), bounding_box(silhouette)
    assert np.all(np.abs(np.subtract(box, sbox)) <= 1.0)
    assert box[0] >= sbox[0] and box[1] >= sbox[1] and box[2] <= sbox[2] and box[3] <= sbox[3]
    # tip and base land on the tool's mask (within a pixel)
    pts = project_landmarks(cam, tool.world_landmarks(), ["tip", "base"])
    for u, v in pts.uv[pts.in_image]:
        r0, c0 = int(round(v)), int(round(u))
        assert mask[max(r0 - 1, 0) : r0 + 2, max(c0 - 1, 0) : c0 + 2].any()
    # first-hit depth lies between the source and the tool's far side, only on the mask
    depth = out.depth[tool.name]
    assert np.all(np.isfinite(depth[mask])) and np.all(np.isinf(depth[~silhouette]))
    zs = np.linalg.norm(tool.mesh().vertices - cam.source_world, axis=1)
    assert zs.min() - 1e-3 <= depth[mask].min() and depth[mask].max() <= zs.max() + 1e-3
