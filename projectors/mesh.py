"""Ray casting through closed triangle meshes (surgical tools, implants) with Warp BVH queries.

For every detector pixel the ray of :meth:`Camera.ray_parameters` is traced
through each mesh with ``wp.mesh_query_ray``, hit after hit. A hit on the
front of a face (outward normal against the ray) enters the solid, a hit on
the back leaves it; the path length is the summed length of the inside
intervals, and the depth is the distance from the ray origin (the source,
or the start plane of a parallel camera) to the first entering hit.

One kernel source runs on ``cpu`` and ``cuda`` devices; on the CPU the rows
of the detector are split over threads (one Warp CPU launch uses one core).

Meshes must be closed (watertight) with outward-facing normals, as written
by :mod:`trimesh` for watertight meshes; rays grazing an edge exactly are
counted once (the march steps past each hit by ``1e-4`` mm), and a ray whose
entries and exits do not pair up (it slipped through a crack between two
triangles at a shared edge) is re-cast 1 micrometre aside. The ray origin
must lie outside every mesh.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from projectors.geometry import Camera, Transform


class MeshError(ValueError):
    """A mesh that cannot be ray cast (empty, non-finite, bad face indices)."""


@dataclass(frozen=True, eq=False)
class MeshObject:
    """A closed triangle mesh in world mm with its material (a name of :data:`projectors.materials.MATERIALS`).

    ``density`` (g/cm^3) overrides the material's nominal density if given.
    """

    vertices: np.ndarray
    faces: np.ndarray
    name: str = "mesh"
    material: str = "titanium"
    density: float | None = None

    def __post_init__(self):
        v = np.asarray(self.vertices, dtype=np.float64)
        f = np.asarray(self.faces)
        if v.ndim != 2 or v.shape[1] != 3 or len(v) < 4:
            raise MeshError(f"{self.name}: vertices must have shape (N >= 4, 3), got {v.shape}")
        if not np.all(np.isfinite(v)):
            raise MeshError(f"{self.name}: vertices contain NaN or infinite values")
        if f.ndim != 2 or f.shape[1] != 3 or len(f) < 4 or not np.issubdtype(f.dtype, np.integer):
            raise MeshError(f"{self.name}: faces must be an integer array of shape (M >= 4, 3), got {f.shape} {f.dtype}")
        if f.min() < 0 or f.max() >= len(v):
            raise MeshError(f"{self.name}: face indices must lie in 0..{len(v) - 1}, got {f.min()}..{f.max()}")
        if self.density is not None and not (np.isfinite(self.density) and self.density > 0):
            raise MeshError(f"{self.name}: density must be positive (g/cm^3), got {self.density}")
        object.__setattr__(self, "vertices", v)
        object.__setattr__(self, "faces", np.ascontiguousarray(f, dtype=np.int32))

    def posed(self, world_from_mesh: Transform) -> "MeshObject":
        return replace(self, vertices=world_from_mesh.apply(self.vertices))

    @property
    def mass_density(self) -> float:
        from projectors.materials import MATERIALS, MaterialError

        if self.density is not None:
            return float(self.density)
        if self.material not in MATERIALS:
            raise MaterialError(f"{self.name}: unknown material {self.material!r}; known: {', '.join(sorted(MATERIALS))}")
        return MATERIALS[self.material].density


@dataclass(frozen=True, eq=False)
class MeshProjection:
    """Per-mesh path lengths (mm) and first-hit depths (mm, ``inf`` where missed), each (H, W)."""

    path_length: dict[str, np.ndarray]
    depth: dict[str, np.ndarray]
    camera: Camera
    areal_density: dict[str, np.ndarray] = field(default_factory=dict)  # material -> g/cm^2


_KERNEL = None


def _kernel():
    global _KERNEL
    if _KERNEL is not None:
        return _KERNEL
    import warp as wp

    @wp.kernel
    def mesh_rays(
        mesh_ids: wp.array(dtype=wp.uint64),
        offsets: wp.array(dtype=wp.vec3d),
        radii: wp.array(dtype=wp.float64),
        o0: wp.vec3d,
        Mo: wp.mat33d,
        Md: wp.mat33d,
        width: int,
        row0: int,
        max_hits: int,
        path: wp.array3d(dtype=wp.float32),
        depth: wp.array3d(dtype=wp.float32),
    ):
        tid = wp.tid()
        v = row0 + tid // width
        u = tid - (tid // width) * width
        h = wp.vec3d(wp.float64(u), wp.float64(v), wp.float64(1.0))
        dd = Md * h
        dn = wp.normalize(dd)
        d = wp.vec3(wp.float32(dn[0]), wp.float32(dn[1]), wp.float32(dn[2]))
        big = float(1.0e7)
        for m in range(mesh_ids.shape[0]):
            # start the march (in float64) just before the mesh's bounding sphere, relative
            # to its centroid, so float32 hit distances stay small and precise
            od = o0 + Mo * h - offsets[m]
            t0 = wp.max(wp.float64(0.0), -wp.dot(od, dn) - radii[m])
            on = od + dn * t0
            o = wp.vec3(wp.float32(on[0]), wp.float32(on[1]), wp.float32(on[2]))
            # a ray through a shared edge or vertex can slip between triangles (the
            # intersection test is not watertight); an unmatched entry or exit shows
            # it, and the ray is re-cast a micrometre aside (up to twice)
            side = wp.vec3(1.0, 0.0, 0.0)
            if wp.abs(d[0]) > 0.9:
                side = wp.vec3(0.0, 1.0, 0.0)
            side = wp.normalize(wp.cross(d, side))
            acc = float(0.0)
            first = big
            for attempt in range(3):
                start = o + side * (float(attempt) * float(1.0e-3))
                t = float(0.0)
                inside = int(0)
                t_in = float(0.0)
                acc = float(0.0)
                first = big
                broken = int(0)
                for _k in range(max_hits):
                    q = wp.mesh_query_ray(mesh_ids[m], start + d * t, d, big)
                    if not q.result:
                        break
                    th = t + q.t
                    if q.sign > 0.0:
                        if inside == 0:
                            t_in = th
                            if first == big:
                                first = th
                        inside += 1
                    else:
                        if inside > 0:
                            inside -= 1
                            if inside == 0:
                                acc += th - t_in
                        else:
                            broken = 1
                    t = th + float(1.0e-4)
                if inside != 0:
                    broken = 1
                if broken == 0:
                    break
            path[m, v, u] = acc
            if first < big:
                first = first + wp.float32(t0)
            depth[m, v, u] = first

    _KERNEL = mesh_rays
    return _KERNEL


def mesh_path_lengths(meshes, camera: Camera, device: str = "auto", threads: int | None = None, max_hits: int = 64) -> MeshProjection:
    """Trace every pixel's ray through each mesh; see the module notes. ``meshes``: MeshObject or a list of them."""
    import warp as wp

    meshes = [meshes] if isinstance(meshes, MeshObject) else list(meshes)
    if not meshes:
        raise MeshError("no meshes to project")
    names = [m.name for m in meshes]
    if len(set(names)) != len(names):
        raise MeshError(f"mesh names must be unique, got {names}")
    from projectors.projector import _wp, cpu_threads, launch_over_rows, resolve_device

    device = resolve_device(device)
    _wp()
    kernel = _kernel()
    H, W = camera.height, camera.width
    o0, Mo, Md = camera.ray_parameters()
    offsets = np.stack([m.vertices.mean(0) for m in meshes])
    wmeshes = [
        wp.Mesh(
            points=wp.array((m.vertices - c).astype(np.float32), dtype=wp.vec3, device=device),
            indices=wp.array(m.faces.reshape(-1), dtype=wp.int32, device=device),
        )
        for m, c in zip(meshes, offsets)
    ]
    ids = wp.array(np.array([m.id for m in wmeshes], dtype=np.uint64), dtype=wp.uint64, device=device)
    off = wp.array(offsets, dtype=wp.vec3d, device=device)
    radii = np.array([np.linalg.norm(m.vertices - c, axis=1).max() * 1.001 + 1e-3 for m, c in zip(meshes, offsets)])
    rad = wp.array(radii, dtype=wp.float64, device=device)
    path = wp.zeros((len(meshes), H, W), dtype=wp.float32, device=device)
    depth = wp.zeros((len(meshes), H, W), dtype=wp.float32, device=device)
    args = (wp.vec3d(*o0), wp.mat33d(*Mo.reshape(-1)), wp.mat33d(*Md.reshape(-1)), W)

    def launch(r0, r1):
        wp.launch(kernel, dim=(r1 - r0) * W, inputs=[ids, off, rad, *args, r0, max_hits, path, depth], device=device)

    wp.load_module(device=device)  # compile once, before threads launch it
    launch_over_rows(launch, H, device, block=max(1, -(-H // (threads or cpu_threads()))))
    wp.synchronize_device(device)
    p, d = path.numpy(), depth.numpy()
    d[d >= 1.0e7] = np.inf
    areal = {}
    for m, pl in zip(meshes, p):
        areal[m.material] = areal.get(m.material, 0.0) + pl * (m.mass_density / 10.0)  # mm * g/cm^3 -> g/cm^2
    return MeshProjection(
        path_length={n: p[i] for i, n in enumerate(names)},
        depth={n: d[i] for i, n in enumerate(names)},
        camera=camera,
        areal_density={k: np.asarray(v, dtype=np.float32) for k, v in areal.items()},
    )


def displaced_areal_density(volume, materials, camera: Camera, mp: MeshProjection, step_mm: float = 0.5) -> dict:
    """Per-material areal density (g/cm^2) of the anatomy the meshes occupy: what a tool displaces.

    A tool in a CT does not add its material on top of bone or muscle; it takes their place. For every
    pixel whose ray hits a mesh, the CT (``volume``, a :class:`~projectors.volume.Volume`, with
    ``materials``, its :class:`~projectors.materials.MaterialModel`'s HU map) is sampled every
    ``step_mm`` along ``[depth, depth + path length]`` (HU trilinear, air outside the volume); the
    density and material weights of each sample, times the step, make the displaced areal density,
    which the caller subtracts from the projection (clipped at zero). One interval per mesh: exact
    for convex tools (wires, cylinders), an approximation where a ray enters a bent or threaded tool
    twice. Label materials are not looked up (a CT's metal and tissue come from its HU map).
    """
    from scipy import ndimage

    if not (np.isfinite(step_mm) and step_mm > 0):
        raise MeshError(f"step_mm must be > 0, got {step_mm}")
    hu_map = materials.hu_map
    out = {m: np.zeros(camera.shape, dtype=np.float64) for m in hu_map.materials}
    origins, dirs = camera.rays()
    ijk_from_world = volume.world_from_ijk.inv()
    for name, path in mp.path_length.items():
        hit = path > 0
        if not hit.any():
            continue
        o, d = origins[hit], dirs[hit]
        t0, length = mp.depth[name][hit].astype(np.float64), path[hit].astype(np.float64)
        n = max(1, int(np.ceil(length.max() / step_mm)))
        frac = (np.arange(n) + 0.5) / n  # midpoints of n equal steps of each ray's own interval
        t = t0[:, None] + frac[None, :] * length[:, None]  # (P, n)
        pts = o[:, None, :] + t[..., None] * d[:, None, :]
        ijk = ijk_from_world.apply(pts.reshape(-1, 3)).T
        hu = ndimage.map_coordinates(volume.hu, ijk, order=1, mode="constant", cval=-1000.0).reshape(t.shape)
        rho_dl = hu_map.density(hu) * (length / n)[:, None] / 10.0  # g/cm^3 x mm -> g/cm^2
        w = hu_map.weights(hu)  # (P, n, n_materials)
        for k, m in enumerate(hu_map.materials):
            out[m][hit] += (rho_dl * w[..., k]).sum(axis=1)
    return {m: a.astype(np.float32) for m, a in out.items() if a.any()}
