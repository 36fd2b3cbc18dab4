"""Surgical tools as closed triangle meshes with materials and tip/base landmarks.

Kinds (registry :data:`TOOLS`, each a sampler of JSON-serializable parameters
and a deterministic builder):

* ``continuum_manipulator``: a notched NiTi tube (SyntheX's robotic tool task)
  bent along a constant-curvature arc on a straight base tube;
* ``kwire``: a stainless-steel Kirschner wire with a trocar tip;
* ``cannulated_screw``: a titanium-alloy screw with thread, head and a central
  channel;
* ``pedicle_screw``: a solid titanium-alloy screw with a tulip head;
* ``instrument``: a generic steel instrument (shaft, tapered tip, grip block).

A tool is built in its own frame (base at the origin, shaft along +z, tip
beyond) and placed in the world by :func:`sample_tool_pose`: its tip at a
target inside the anatomy, its shaft along a random direction within a cone
around an approach direction. Tools are unions of closed primitives; the mesh
ray caster (:mod:`projectors.mesh`) counts overlapping pieces once.

Meshes from files (STL, OBJ, PLY, ...) load with :func:`load_tool_mesh`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import phantoms.metals  # noqa: F401  (registers the tool metals)
from projectors.geometry import Transform
from projectors.materials import MATERIALS
from projectors.mesh import MeshObject


class ToolError(ValueError):
    """A tool that cannot be built or loaded."""


@dataclass(frozen=True, eq=False)
class Tool:
    """A tool mesh in its own frame, its material, landmarks (tool frame) and pose in the world."""

    name: str
    vertices: np.ndarray
    faces: np.ndarray
    material: str
    landmarks: dict = field(default_factory=dict)  # "tip", "base" -> (3,) in the tool frame
    world_from_tool: Transform = field(default_factory=Transform.identity)
    parameters: dict = field(default_factory=dict)

    def placed(self, world_from_tool: Transform) -> "Tool":
        return Tool(self.name, self.vertices, self.faces, self.material, self.landmarks, world_from_tool, self.parameters)

    def mesh(self) -> MeshObject:
        """The tool's mesh in world mm, ready for :func:`projectors.mesh.mesh_path_lengths`."""
        return MeshObject(self.world_from_tool.apply(self.vertices), self.faces, name=self.name, material=self.material)

    def world_landmarks(self) -> dict[str, np.ndarray]:
        return {k: self.world_from_tool.apply(np.asarray(v)) for k, v in self.landmarks.items()}

    def trimesh(self):
        import trimesh

        return trimesh.Trimesh(self.world_from_tool.apply(self.vertices), self.faces, process=False)


# --- closed primitives (vertices, faces) ---------------------------------------------


def _concat(parts):
    verts, faces, n = [], [], 0
    for v, f in parts:
        verts.append(v)
        faces.append(f + n)
        n += len(v)
    return np.concatenate(verts), np.concatenate(faces)


def revolve_profile(profile, sections: int = 32):
    """Closed solid of revolution about +z of a closed (r, z) profile listed counter-clockwise."""
    import trimesh

    prof = np.asarray(profile, dtype=np.float64)
    prof = np.vstack([prof, prof[:1]])
    m = trimesh.creation.revolve(prof, sections=sections)
    if not m.is_watertight:
        raise ToolError("revolved tool profile is not a closed solid")
    return np.asarray(m.vertices), np.asarray(m.faces)


def annular_sector(r_in: float, r_out: float, z0: float, z1: float, theta0: float = 0.0,
                   theta1: float = 2 * np.pi, sections: int = 32):
    """A closed tube piece: radii r_in..r_out, heights z0..z1, angles theta0..theta1 (radians, about +z)."""
    full = np.isclose(theta1 - theta0, 2 * np.pi)
    n = sections if full else max(2, int(np.ceil(sections * (theta1 - theta0) / (2 * np.pi)))) + 1
    th = theta0 + (theta1 - theta0) * np.arange(n) / (sections if full else n - 1)
    corners = np.array([[r_in, z0], [r_out, z0], [r_out, z1], [r_in, z1]])  # counter-clockwise in (r, z)
    v = np.array([[r * np.cos(t), r * np.sin(t), z] for t in th for r, z in corners])
    faces = []
    rings = n if full else n - 1
    for i in range(rings):
        a, b = 4 * i, 4 * ((i + 1) % n)
        for k in range(4):
            k1 = (k + 1) % 4
            faces += [[a + k, b + k, b + k1], [a + k, b + k1, a + k1]]
    if not full:
        last = 4 * (n - 1)
        faces += [[0, 2, 1], [0, 3, 2], [last, last + 1, last + 2], [last, last + 2, last + 3]]
    f = np.array(faces, dtype=np.int64)
    # orient outward: the signed volume of a closed mesh is positive for outward normals
    tri = v[f]
    vol = np.sum(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])))
    return v, (f if vol > 0 else f[:, ::-1])


def _frame(origin, z_axis, x_hint=(1.0, 0.0, 0.0)) -> np.ndarray:
    z = np.asarray(z_axis, dtype=np.float64)
    z /= np.linalg.norm(z)
    x = np.asarray(x_hint, dtype=np.float64) - np.dot(x_hint, z) * z
    if np.linalg.norm(x) < 1e-6:
        x = np.cross(z, [0.0, 1.0, 0.0])
    x /= np.linalg.norm(x)
    m = np.eye(4)
    m[:3, :3] = np.stack([x, np.cross(z, x), z], axis=1)
    m[:3, 3] = origin
    return m


def _apply(m, part):
    v, f = part
    return v @ m[:3, :3].T + m[:3, 3], f


# --- builders ----------------------------------------------------------------------------


def build_kwire(p: dict) -> Tool:
    r, length, tip = p["diameter"] / 2, p["length"], p["tip_length"]
    profile = [(0.0, 0.0), (r, 0.0), (r, length - tip), (0.0, length)]
    v, f = revolve_profile(profile, sections=p.get("sections", 24))
    return Tool("kwire", v, f, "stainless_steel", {"base": np.zeros(3), "tip": np.array([0.0, 0.0, length])}, parameters=p)


def _thread_profile(r_core, r_major, z0, z1, pitch, r_inner=0.0):
    """(r, z) profile of a threaded shank from z0 up to z1 (outer side, bottom to top)."""
    pts = [(r_core, z0)]
    z = z0 + 0.25 * pitch
    while z + 0.5 * pitch < z1:
        pts += [(r_major, z + 0.25 * pitch), (r_core, z + 0.5 * pitch)]
        z += pitch
    pts.append((r_core, z1))
    return pts


def build_cannulated_screw(p: dict) -> Tool:
    L, rc, rm, ri = p["length"], p["core_diameter"] / 2, p["major_diameter"] / 2, p["cannula_diameter"] / 2
    head_r, head_h, thread_len = p["head_diameter"] / 2, p["head_height"], p["thread_length"]
    # base = head top at z = 0, tip at z = L; thread near the tip; the cannula runs through
    profile = [(ri, 0.0), (head_r, 0.0), (head_r, head_h), (rc, head_h)]
    profile += _thread_profile(rc, rm, L - thread_len, L - 1.5, p["pitch"])
    profile += [(rc * 0.6, L), (ri, L)]
    v, f = revolve_profile(_ccw(profile), sections=p.get("sections", 32))
    return Tool("cannulated_screw", v, f, "titanium_alloy", {"base": np.zeros(3), "tip": np.array([0.0, 0.0, L])}, parameters=p)


def build_pedicle_screw(p: dict) -> Tool:
    L, rc, rm = p["length"], p["core_diameter"] / 2, p["major_diameter"] / 2
    tulip_r, tulip_h = p["tulip_diameter"] / 2, p["tulip_height"]
    shank = [(0.0, tulip_h), (rc, tulip_h)] + _thread_profile(rc, rm, tulip_h + 1.0, L - 2.0, p["pitch"]) + [(0.0, L)]
    v1, f1 = revolve_profile(_ccw(shank), sections=p.get("sections", 32))
    # tulip head: a cup (thick-walled cylinder with a floor) at z in [0, tulip_h]
    cup = [(0.0, tulip_h), (0.0, tulip_h - 3.0), (tulip_r - 2.0, tulip_h - 3.0), (tulip_r - 2.0, 0.0),
           (tulip_r, 0.0), (tulip_r, tulip_h)]
    v2, f2 = revolve_profile(_ccw(cup), sections=p.get("sections", 32))
    v, f = _concat([(v1, f1), (v2, f2)])
    return Tool("pedicle_screw", v, f, "titanium_alloy", {"base": np.zeros(3), "tip": np.array([0.0, 0.0, L])}, parameters=p)


def build_instrument(p: dict) -> Tool:
    L, r, tip = p["length"], p["diameter"] / 2, p["tip_length"]
    shaft = [(0.0, 0.0), (r, 0.0), (r, L - tip), (0.35 * r, L), (0.0, L)]
    v1, f1 = revolve_profile(_ccw(shaft), sections=24)
    g = p["grip_size"]
    v2, f2 = annular_sector(0.0 + r * 0.5, g / 2, -p["grip_length"], 0.0, sections=6)
    v, f = _concat([(v1, f1), (v2, f2)])
    return Tool("instrument", v, f, "stainless_steel", {"base": np.zeros(3), "tip": np.array([0.0, 0.0, L])}, parameters=p)


def _ccw(profile):
    """Order a closed (r, z) profile counter-clockwise (outward normals after revolving)."""
    pr = np.asarray(profile, dtype=np.float64)
    area = 0.5 * np.sum(pr[:, 0] * np.roll(pr[:, 1], -1) - np.roll(pr[:, 0], -1) * pr[:, 1])
    return pr if area > 0 else pr[::-1]


def manipulator_centerline(p: dict, s):
    """Points and unit tangents at arc lengths ``s`` of the manipulator (tool frame)."""
    s = np.atleast_1d(np.asarray(s, dtype=np.float64))
    L0, Lb = p["base_length"], p["bend_length"]
    kappa = np.deg2rad(p["bend_angle"]) / Lb
    phi = np.deg2rad(p["bend_plane"])
    bend_dir = np.array([np.cos(phi), np.sin(phi), 0.0])
    sb = np.clip(s - L0, 0.0, Lb)
    straight = np.minimum(s, L0)
    if abs(kappa) < 1e-9:
        ang = np.zeros_like(sb)
        lateral, axial = np.zeros_like(sb), sb
    else:
        ang = kappa * sb
        lateral, axial = (1 - np.cos(ang)) / kappa, np.sin(ang) / kappa
    pts = (straight + axial)[:, None] * np.array([0.0, 0.0, 1.0]) + lateral[:, None] * bend_dir
    tan = np.cos(ang)[:, None] * np.array([0.0, 0.0, 1.0]) + np.sin(ang)[:, None] * bend_dir
    return pts, tan


def build_continuum_manipulator(p: dict) -> Tool:
    """A notched NiTi tube: a straight base tube, then a bending section of rings and notched links.

    Each notch removes a wedge of the tube wall (leaving ``spine_angle`` degrees
    of wall, the "spine", on the side opposite the bend); the links between
    notches are full rings. Links and notches are short straight pieces placed
    along the constant-curvature centreline.
    """
    ro, ri = p["outer_diameter"] / 2, p["inner_diameter"] / 2
    L0, Lb, n = p["base_length"], p["bend_length"], int(p["n_notches"])
    parts = [annular_sector(ri, ro, 0.0, L0 + 0.05, sections=24)]
    pitch = Lb / n
    notch = p["notch_fraction"] * pitch
    phi = np.deg2rad(p["bend_plane"])
    spine = np.deg2rad(p["spine_angle"])
    # the spine sits opposite the bend direction: angles centred on phi + pi
    for i in range(n):
        s0 = L0 + i * pitch
        for a, b, full in ((s0, s0 + pitch - notch, True), (s0 + pitch - notch, s0 + pitch, False)):
            mid = 0.5 * (a + b)
            (c,), (t,) = manipulator_centerline(p, [mid])
            m = _frame(c, t, x_hint=(np.cos(phi), np.sin(phi), 0.0))
            half = 0.5 * (b - a) + 0.05
            if full:
                piece = annular_sector(ri, ro, -half, half, sections=24)
            else:
                piece = annular_sector(ri, ro, -half, half, np.pi - spine / 2, np.pi + spine / 2, sections=24)
            parts.append(_apply(m, piece))
    v, f = _concat(parts)
    (tip,), _ = manipulator_centerline(p, [L0 + Lb])
    return Tool("continuum_manipulator", v, f, "nitinol", {"base": np.zeros(3), "tip": tip}, parameters=p)


# --- samplers ---------------------------------------------------------------------------


def sample_kwire(rng):
    return {"diameter": float(rng.choice([1.0, 1.25, 1.5, 1.6, 2.0, 2.5])), "length": float(rng.uniform(120, 230)),
            "tip_length": float(rng.uniform(2.0, 4.0))}


def sample_cannulated_screw(rng):
    major = float(rng.choice([4.0, 4.5, 6.5, 7.3]))
    return {"length": float(rng.uniform(30, 90)), "major_diameter": major, "core_diameter": 0.68 * major,
            "cannula_diameter": 0.27 * major, "head_diameter": 1.45 * major, "head_height": 0.55 * major,
            "thread_length": float(rng.uniform(16, 32)), "pitch": float(rng.uniform(1.75, 2.75))}


def sample_pedicle_screw(rng):
    major = float(rng.choice([5.5, 6.5, 7.5]))
    return {"length": float(rng.uniform(35, 55)), "major_diameter": major, "core_diameter": 0.7 * major,
            "tulip_diameter": 12.0, "tulip_height": 14.0, "pitch": float(rng.uniform(2.5, 3.0))}


def sample_instrument(rng):
    return {"length": float(rng.uniform(120, 200)), "diameter": float(rng.uniform(3.0, 8.0)),
            "tip_length": float(rng.uniform(8, 25)), "grip_size": float(rng.uniform(12, 20)),
            "grip_length": float(rng.uniform(15, 40))}


def sample_continuum_manipulator(rng):
    # SyntheX's manipulator: NiTi tube of ~6 mm outer diameter, ~35 mm notched bending section
    return {"outer_diameter": 6.0, "inner_diameter": 4.0, "base_length": float(rng.uniform(20, 60)),
            "bend_length": 35.0, "n_notches": int(rng.integers(20, 28)), "notch_fraction": float(rng.uniform(0.4, 0.6)),
            "spine_angle": float(rng.uniform(90, 140)), "bend_angle": float(rng.uniform(-90, 90)),
            "bend_plane": float(rng.uniform(0, 360))}


@dataclass(frozen=True)
class ToolKind:
    sample: callable
    build: callable


#: tool kind -> sampler of parameters and deterministic builder
TOOLS: dict[str, ToolKind] = {
    "continuum_manipulator": ToolKind(sample_continuum_manipulator, build_continuum_manipulator),
    "kwire": ToolKind(sample_kwire, build_kwire),
    "cannulated_screw": ToolKind(sample_cannulated_screw, build_cannulated_screw),
    "pedicle_screw": ToolKind(sample_pedicle_screw, build_pedicle_screw),
    "instrument": ToolKind(sample_instrument, build_instrument),
}


def _kind(kind: str) -> ToolKind:
    if kind not in TOOLS:
        raise ToolError(f"unknown tool kind {kind!r}; known: {', '.join(sorted(TOOLS))}")
    return TOOLS[kind]


def sample_tool_parameters(kind: str, rng: np.random.Generator) -> dict:
    return _kind(kind).sample(rng)


def build_tool(kind: str, params: dict) -> Tool:
    try:
        return _kind(kind).build(dict(params))
    except KeyError as e:
        raise ToolError(f"{kind}: missing tool parameter {e.args[0]!r}") from None


def sample_tool_pose(rng: np.random.Generator, tool: Tool, target, approach=(0.0, 1.0, 0.0), max_angle: float = 30.0) -> dict:
    """Pose parameters placing the tool's tip at ``target`` (world mm), shaft within ``max_angle`` of ``approach``.

    ``approach`` points from the tip back out towards the base (e.g. anterior,
    +y, for an anterior approach). Returns ``{"target", "direction", "roll"}``
    for :func:`tool_pose`.
    """
    a = np.asarray(approach, dtype=np.float64)
    a /= np.linalg.norm(a)
    cos_max = np.cos(np.deg2rad(max_angle))
    z = rng.uniform(cos_max, 1.0)
    phi = rng.uniform(0, 2 * np.pi)
    local = np.array([np.sqrt(1 - z * z) * np.cos(phi), np.sqrt(1 - z * z) * np.sin(phi), z])
    d = _frame(np.zeros(3), a)[:3, :3] @ local
    return {"target": [float(x) for x in target], "direction": [float(x) for x in d], "roll": float(rng.uniform(0, 360))}


def tool_pose(tool: Tool, pose: dict) -> Transform:
    """``world_from_tool`` with the tip at ``pose["target"]`` and the base along ``pose["direction"]`` from it."""
    tip = np.asarray(tool.landmarks["tip"], dtype=np.float64)
    base = np.asarray(tool.landmarks["base"], dtype=np.float64)
    axis_tool = (tip - base) / np.linalg.norm(tip - base)
    R_align = _frame(np.zeros(3), axis_tool)[:3, :3]  # tool-axis frame in tool coordinates
    roll = np.deg2rad(pose.get("roll", 0.0))
    Rr = np.array([[np.cos(roll), -np.sin(roll), 0], [np.sin(roll), np.cos(roll), 0], [0, 0, 1]])
    R_world = _frame(np.zeros(3), -np.asarray(pose["direction"], dtype=np.float64))[:3, :3]
    R = R_world @ Rr @ R_align.T
    t = np.asarray(pose["target"], dtype=np.float64) - R @ tip
    return Transform.from_rt(R, t)


def load_tool_mesh(path, material: str = "titanium", name: str | None = None, tip=None, base=None) -> Tool:
    """A tool from a mesh file (STL, OBJ, PLY, OFF, GLB; millimetres). The mesh must be closed."""
    import trimesh

    p = Path(path).expanduser()
    if not p.is_file():
        raise ToolError(f"no such mesh file: {p}")
    try:
        m = trimesh.load(p, force="mesh")
    except Exception as e:  # trimesh raises many types for unreadable files
        raise ToolError(f"{p}: cannot read a triangle mesh ({e})") from None
    if not isinstance(m, trimesh.Trimesh) or len(m.faces) == 0:
        raise ToolError(f"{p}: file holds no triangles")
    if not m.is_watertight:
        raise ToolError(f"{p}: mesh is not closed (watertight); path lengths through it are undefined")
    if material not in MATERIALS:
        raise ToolError(f"unknown material {material!r}; known: {', '.join(sorted(MATERIALS))}")
    if m.volume < 0:
        m.invert()
    lms = {}
    if tip is not None:
        lms["tip"] = np.asarray(tip, dtype=np.float64)
    if base is not None:
        lms["base"] = np.asarray(base, dtype=np.float64)
    return Tool(name or p.stem, np.asarray(m.vertices), np.asarray(m.faces), material, lms, parameters={"path": str(p)})


# Where each tool goes in a pelvis (landmark names of phantoms.landmarks.HIP_LANDMARKS): the tip
# lands near the target, the shaft leaves along the approach (tip -> base, world RAS, side-signed x).
_PELVIS_APPROACHES = {
    # femoroplasty / osteolysis curettage through the lateral femur (SyntheX's manipulator task)
    "continuum_manipulator": ("FH", (1.0, 0.0, -0.7), 20.0),
    # femoral neck pinning from the lateral cortex below the greater trochanter
    "kwire": ("FH", (1.0, 0.1, -0.6), 15.0),
    # an iliosacral-like screw aimed from the ilium towards the sacrum
    "cannulated_screw": ("GSN", (1.0, -0.3, 0.2), 15.0),
    "pedicle_screw": ("GSN", (0.3, -1.0, 0.3), 15.0),
    "instrument": ("ASIS", (0.4, 1.0, 0.3), 25.0),
}


def sample_tool_pose_in_pelvis(rng: np.random.Generator, tool: Tool, kind: str, landmarks: dict) -> dict:
    """A surgically plausible pose for ``kind`` in a pelvis with the 14 hip landmarks (world mm).

    The side is drawn at random; the tip lands within 5 mm of the target landmark (FH for the
    manipulator and K-wire, GSN for screws, ASIS for the instrument).
    """
    if kind not in _PELVIS_APPROACHES:
        raise ToolError(f"no pelvis approach for tool kind {kind!r}; known: {', '.join(sorted(_PELVIS_APPROACHES))}")
    name, approach, cone = _PELVIS_APPROACHES[kind]
    side = "l" if rng.random() < 0.5 else "r"
    key = f"{name}-{side}"
    if key not in landmarks:
        raise ToolError(f"landmark {key!r} missing; have {sorted(landmarks)}")
    sign = -1.0 if side == "l" else 1.0
    a = np.array(approach, dtype=np.float64) * [sign, 1.0, 1.0]
    jitter = rng.normal(0.0, 2.0, 3)
    jitter *= min(1.0, 5.0 / max(np.linalg.norm(jitter), 1e-9))
    pose = sample_tool_pose(rng, tool, np.asarray(landmarks[key]) + jitter, approach=a, max_angle=cone)
    pose["side"] = side
    return pose
