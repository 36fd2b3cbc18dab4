"""Mesh ray casting (projectors/mesh.py) against analytic chords, and surgical tool meshes."""

import numpy as np
import pytest
import trimesh

from phantoms.tools import TOOLS, ToolError, build_tool, load_tool_mesh, sample_tool_parameters, sample_tool_pose, tool_pose
from projectors.geometry import CArm, parallel_camera, rotation_x, rotation_z
from projectors.materials import mass_attenuation
from projectors.mesh import MeshError, MeshObject, mesh_path_lengths


def _sphere_chords(camera, center, radius):
    """Analytic chord length and entry distance of each pixel's ray through a sphere."""
    o, d = camera.rays()
    oc = o - center
    b = np.sum(oc * d, axis=-1)
    disc = b * b - (np.sum(oc * oc, axis=-1) - radius**2)
    chord = 2 * np.sqrt(np.clip(disc, 0, None))
    entry = np.where(disc > 0, -b - np.sqrt(np.clip(disc, 0, None)), np.inf)
    return chord, entry


@pytest.mark.parametrize("projection", ["parallel", "perspective"])
def test_sphere_mesh_matches_analytic_chords_and_depth(projection, device):
    c, r = np.array([5.0, -3.0, 8.0]), 20.0
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=r)
    # a random rotation keeps the icosphere's symmetric vertices off the pixel grid
    R = rotation_z(17.0) @ rotation_x(31.0)
    mesh = MeshObject(sphere.vertices @ R.T + c, sphere.faces, name="ball")
    if projection == "parallel":
        cam = parallel_camera((0, 1, 0), center=c, size=(48, 48), pitch=1.0)
    else:
        cam = CArm(sdd=1000, sid=500, size=(48, 48), pitch=2.0, isocenter=tuple(c)).camera(alpha=20, beta=-10)
    out = mesh_path_lengths(mesh, cam, device=device)
    chord, entry = _sphere_chords(cam, c, r)
    # the icosphere (edge ~1.2 mm) is inscribed in the sphere: its chords are shorter by at most
    # the facet sagitta effect; away from the silhouette the error is a few hundredths of a mm
    inner = chord > 10.0
    err = out.path_length["ball"] - chord
    assert np.abs(err[inner]).max() < 0.1
    assert np.all(err < 0.05)  # never longer than the circumscribing sphere's chord
    hit = np.isfinite(out.depth["ball"])
    assert np.array_equal(hit[inner], np.ones(inner.sum(), bool))
    assert np.abs(out.depth["ball"][inner] - entry[inner]).max() < 0.1
    assert np.all(out.path_length["ball"][~np.isfinite(entry)] == 0)


def test_cylinder_mesh_oblique_chords(device):
    """Rays perpendicular to a cylinder's axis through its middle cross it along 2 sqrt(r^2 - s^2)."""
    r, h = 6.0, 80.0
    cyl = trimesh.creation.cylinder(radius=r, height=h, sections=256)
    mesh = MeshObject(cyl.vertices, cyl.faces, name="rod")
    # parallel rays along +y; the cylinder axis is z; pixel u is the distance s from the axis
    cam = parallel_camera((0, 1, 0), size=(41, 21), pitch=0.4)
    out = mesh_path_lengths(mesh, cam, device=device)
    o, _ = cam.rays()
    s = np.abs(o[..., 0])
    expected = 2 * np.sqrt(np.clip(r**2 - s**2, 0, None))
    np.testing.assert_allclose(out.path_length["rod"], expected, atol=0.02)
    # tilted axis: rays along y through an axis tilted by 40 deg in the y-z plane travel r*2/cos(40)
    tilted = MeshObject(cyl.vertices @ rotation_x(40.0).T, cyl.faces, name="rod")
    centre = mesh_path_lengths(tilted, cam, device=device).path_length["rod"][10, 20]
    assert centre == pytest.approx(2 * r / np.cos(np.deg2rad(40.0)), rel=1e-3)


def test_overlapping_meshes_count_once_and_separate_meshes_separately(device):
    a = trimesh.creation.icosphere(subdivisions=4, radius=10.0)
    two = trimesh.util.concatenate([a.copy().apply_translation([-5, 0, 0]), a.copy().apply_translation([5, 0, 0])])
    cam = parallel_camera((0, 1, 0), size=(3, 3), pitch=1.0)  # centre ray along y through x = 0
    union = mesh_path_lengths(MeshObject(two.vertices, two.faces, name="u"), cam, device=device).path_length["u"][1, 1]
    # union of two balls of radius 10 centred at x = +-5: the ray at x = 0 crosses 2 sqrt(100 - 25)
    assert union == pytest.approx(2 * np.sqrt(75.0), abs=0.1)
    m1 = MeshObject(a.vertices + [-5, 0, 0], a.faces, name="left")
    m2 = MeshObject(a.vertices + [5, 0, 0], a.faces, name="right")
    both = mesh_path_lengths([m1, m2], cam, device=device)
    assert both.path_length["left"][1, 1] == pytest.approx(2 * np.sqrt(75.0), abs=0.1)
    assert both.path_length["right"][1, 1] == pytest.approx(2 * np.sqrt(75.0), abs=0.1)


def test_kwire_path_length_at_normal_incidence_and_visibility(device):
    """A 1.5 mm K-wire seen side-on: the central ray crosses one diameter (within 5 %)."""
    wire = build_tool("kwire", {"diameter": 1.5, "length": 150.0, "tip_length": 3.0, "sections": 64})
    mesh = wire.mesh()
    # fine parallel beam across the wire (axis z), rays along y
    cam = parallel_camera((0, 1, 0), center=(0, 0, 75.0), size=(61, 5), pitch=0.05)
    out = mesh_path_lengths(mesh, cam, device=device)
    profile = out.path_length["kwire"][2]
    assert profile.max() == pytest.approx(1.5, rel=0.05)
    # the area under the profile is the wire's cross-section, pi r^2 (within the polygon's deficit)
    assert profile.sum() * 0.05 == pytest.approx(np.pi * 0.75**2, rel=0.02)
    # visible: steel at 60 keV attenuates the central ray by > 50 % (mu/rho from xraydb, rho = 8 g/cm^3)
    density = out.areal_density["stainless_steel"][2].max()
    assert density == pytest.approx(0.15 * 8.0, rel=0.05)
    assert np.exp(-mass_attenuation("stainless_steel", 60.0) * density) < 0.5


def test_tool_meshes_are_closed_and_have_tip_and_base():
    rng = np.random.default_rng(1)
    for kind in TOOLS:
        tool = build_tool(kind, sample_tool_parameters(kind, rng))
        m = trimesh.Trimesh(tool.vertices, tool.faces, process=False)
        assert m.is_watertight, kind
        assert m.volume > 0, kind  # outward normals
        assert set(tool.landmarks) == {"tip", "base"}


def test_continuum_manipulator_bends_by_its_sampled_angle():
    rng = np.random.default_rng(5)
    p = sample_tool_parameters("continuum_manipulator", rng)
    p.update(bend_angle=60.0, bend_plane=0.0, base_length=30.0, bend_length=35.0)
    tool = build_tool("continuum_manipulator", p)
    # constant curvature: a 60 deg arc of length 35 mm ends at (1 - cos) / k laterally and sin / k axially
    k = np.deg2rad(60.0) / 35.0
    np.testing.assert_allclose(tool.landmarks["tip"], [(1 - np.cos(np.pi / 3)) / k, 0, 30 + np.sin(np.pi / 3) / k], atol=1e-9)
    # the tube wall is present at the tip: the mesh reaches within half a link of the tip landmark
    d = np.linalg.norm(tool.vertices - tool.landmarks["tip"], axis=1)
    assert d.min() < p["outer_diameter"]


def test_tool_pose_puts_tip_on_target_and_shaft_in_cone():
    rng = np.random.default_rng(2)
    tool = build_tool("kwire", sample_tool_parameters("kwire", rng))
    target = np.array([80.0, 0.0, 0.0])
    for _ in range(5):
        pose = sample_tool_pose(rng, tool, target, approach=(0, 1, 0), max_angle=25.0)
        placed = tool.placed(tool_pose(tool, pose))
        lm = placed.world_landmarks()
        np.testing.assert_allclose(lm["tip"], target, atol=1e-9)
        out = (lm["base"] - lm["tip"]) / np.linalg.norm(lm["base"] - lm["tip"])
        assert np.degrees(np.arccos(out @ [0, 1, 0])) <= 25.0 + 1e-9


def test_stl_and_obj_round_trip(tmp_path, device):
    tool = build_tool("cannulated_screw", sample_tool_parameters("cannulated_screw", np.random.default_rng(3)))
    cam = parallel_camera((1, 0, 0), center=(0, 0, 40.0), size=(32, 64), pitch=1.5)
    ref = mesh_path_lengths(tool.mesh(), cam, device=device).path_length["cannulated_screw"]
    for ext in ("stl", "obj"):
        path = tmp_path / f"screw.{ext}"
        tool.trimesh().export(path)
        loaded = load_tool_mesh(path, material="titanium_alloy", name="cannulated_screw")
        got = mesh_path_lengths(loaded.mesh(), cam, device=device).path_length["cannulated_screw"]
        np.testing.assert_allclose(got, ref, atol=2e-3)


def test_bad_meshes_and_files_raise_clear_errors(tmp_path):
    box = trimesh.creation.box()
    with pytest.raises(MeshError, match="face indices"):
        MeshObject(box.vertices, box.faces + 100)
    with pytest.raises(MeshError, match="NaN"):
        MeshObject(np.full((8, 3), np.nan), box.faces)
    with pytest.raises(MeshError, match="unique"):
        mesh_path_lengths([MeshObject(box.vertices, box.faces), MeshObject(box.vertices, box.faces)],
                          parallel_camera((0, 1, 0), size=4))
    with pytest.raises(ToolError, match="no such mesh file"):
        load_tool_mesh(tmp_path / "missing.stl")
    open_mesh = trimesh.Trimesh(box.vertices, box.faces[:-2])
    open_mesh.export(tmp_path / "open.stl")
    with pytest.raises(ToolError, match="not closed"):
        load_tool_mesh(tmp_path / "open.stl")
    (tmp_path / "junk.stl").write_text("not a mesh")
    with pytest.raises(ToolError):
        load_tool_mesh(tmp_path / "junk.stl")
    with pytest.raises(ToolError, match="unknown tool kind"):
        build_tool("scalpel", {})
    with pytest.raises(ToolError, match="missing tool parameter"):
        build_tool("kwire", {"diameter": 1.5})
    import warp as wp

    from projectors.projector import DeviceError

    if wp.get_cuda_device_count() == 0:
        with pytest.raises(DeviceError, match="no CUDA device"):
            mesh_path_lengths(MeshObject(box.vertices, box.faces), parallel_camera((0, 1, 0), size=4), device="cuda")


def test_tools_in_the_pelvis_start_in_bone():
    """Tips placed at their pelvic targets lie in bone of the phantom (femoral head, ilium, ...)."""
    from phantoms.pelvis import build_pelvis, sample_pelvis_parameters
    from phantoms.tools import sample_tool_pose_in_pelvis

    rng = np.random.default_rng(8)
    ph = build_pelvis(sample_pelvis_parameters(rng), spacing=3.0)
    vol = ph.volume
    for kind in ("continuum_manipulator", "kwire", "instrument"):
        tool = build_tool(kind, sample_tool_parameters(kind, rng))
        pose = sample_tool_pose_in_pelvis(rng, tool, kind, ph.landmarks)
        tip = tool.placed(tool_pose(tool, pose)).world_landmarks()["tip"]
        ijk = np.round(vol.ijk_from_world.apply(tip)).astype(int)
        near = vol.labels[tuple(slice(max(i - 2, 0), i + 3) for i in ijk)]
        assert (near > 0).any(), kind
    with pytest.raises(ToolError, match="no pelvis approach"):
        sample_tool_pose_in_pelvis(rng, tool, "scalpel", ph.landmarks)


def test_a_tool_displaces_the_anatomy_it_occupies(device):
    """A 10 mm rod through a 60 mm water-like block: the central ray sees 60 - 10 = 50 mm of tissue plus the
    rod, not 60 mm plus the rod (A = rho x chord; the rod's chord on the central ray is its diameter)."""
    import trimesh

    from projectors.geometry import parallel_camera
    from projectors.materials import MaterialModel
    from projectors.mesh import MeshObject, displaced_areal_density, mesh_path_lengths
    from projectors.projector import project
    from projectors.volume import Volume

    vol = Volume.from_array(np.zeros((60, 60, 60), np.float32), spacing=1.0)  # 0 HU: soft tissue, 1.03 g/cm^3
    rod = trimesh.creation.cylinder(radius=5.0, height=200.0, sections=256)  # along z, through the block
    mesh = MeshObject(rod.vertices, rod.faces, name="rod", material="titanium")
    cam = parallel_camera((0, 1, 0), size=(31, 31), pitch=1.0)  # rays along +y, perpendicular to the rod
    proj = project(vol, cam, device=device)
    mp = mesh_path_lengths([mesh], cam, device=device)
    shifted = displaced_areal_density(vol, MaterialModel(), cam, mp, step_mm=0.25)
    rho = float(MaterialModel().hu_map.density(0.0))
    c = 15  # the central pixel
    assert mp.path_length["rod"][c, c] == pytest.approx(10.0, abs=0.01)
    assert shifted["soft_tissue"][c, c] == pytest.approx(rho * 10.0 / 10.0, rel=1e-3)  # 10 mm of tissue, g/cm^2
    left = proj.areal_density["soft_tissue"][c, c] - shifted["soft_tissue"][c, c]
    assert left == pytest.approx(rho * 50.0 / 10.0, rel=1e-3)
    # a ray that misses the rod keeps all of its tissue
    assert shifted["soft_tissue"][c, 0] == 0.0
