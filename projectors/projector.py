"""Host side of the projector: scenes of volumes -> per-material areal density images.

    proj = project(volume, camera)                      # one call
    projector = Projector([ct, SceneVolume(tool, priority=1)], device="cpu")
    for cam in cameras:                                 # volumes uploaded once
        proj = projector.project(cam)
    proj.areal_density["bone_cortical"]                 # (H, W) g/cm^2
    proj.path_length["femur_left"]                      # (H, W) mm

Nothing is normalized: outputs are physical quantities of the scene.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from projectors.geometry import Camera, GeometryError, Transform
from projectors.materials import MaterialModel
from projectors.volume import Volume, VolumeError

MODES = ("exact", "trilinear")
_init_lock = threading.Lock()
_warp = None


class DeviceError(RuntimeError):
    """The requested compute device is not available."""


def _wp():
    """Import and initialise Warp once, quietly (its kernels compile on first use)."""
    global _warp
    with _init_lock:
        if _warp is None:
            import warp as wp

            import projectors.kernels  # noqa: F401  (sets Warp's configuration before init)

            wp.init()
            _warp = wp
    return _warp


def resolve_device(device: str = "auto") -> str:
    """The Warp device for ``device``: ``"auto"`` -> ``"cuda:0"`` when a CUDA device is present, else
    ``"cpu"``; ``"cuda"`` -> ``"cuda:0"``; ``"cuda:N"`` as given. Raises ``DeviceError`` otherwise."""
    wp = _wp()
    if device is None or device == "auto":
        return "cuda:0" if wp.get_cuda_device_count() > 0 else "cpu"
    if device == "cpu":
        return "cpu"
    if str(device).startswith("cuda"):
        if wp.get_cuda_device_count() == 0:
            raise DeviceError(f"device {device!r} requested but no CUDA device is available; use device='cpu'")
        return "cuda:0" if device == "cuda" else str(device)
    raise DeviceError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}")


def cpu_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def launch_over_rows(launch, height: int, device: str, block: int) -> None:
    """Run ``launch(r0, r1)`` over detector rows ``0..height``.

    On CUDA one launch covers every row. A Warp CPU launch runs on one core,
    so on the CPU rows go in blocks of ``block`` to a pool of all cores.
    """
    if device != "cpu":
        launch(0, height)
        return
    n = cpu_threads()
    spans = [(r, min(r + block, height)) for r in range(0, height, block)]
    if n == 1 or len(spans) == 1:
        for r0, r1 in spans:
            launch(r0, r1)
        return
    with ThreadPoolExecutor(n) as ex:
        list(ex.map(lambda span: launch(*span), spans))


@dataclass(frozen=True)
class SceneVolume:
    """A volume in a scene with its material model and overlap priority (higher wins)."""

    volume: Volume
    materials: MaterialModel = field(default_factory=MaterialModel)
    priority: int = 0

    def __post_init__(self):
        if not isinstance(self.volume, Volume):
            raise VolumeError(f"a scene holds Volume objects, got {type(self.volume).__name__}")


@dataclass
class Projection:
    """Per-pixel line integrals of one view."""

    areal_density: dict[str, np.ndarray]  # material -> (H, W) g/cm^2
    path_length: dict[str, np.ndarray]  # structure -> (H, W) mm
    camera: Camera
    mode: str
    step: float | None

    def total_areal_density(self) -> np.ndarray:
        return np.sum(list(self.areal_density.values()), axis=0)


def as_scene(scene) -> list[SceneVolume]:
    items = scene if isinstance(scene, (list, tuple)) else [scene]
    if not items:
        raise VolumeError("the scene is empty: pass at least one Volume")
    out = []
    for it in items:
        if isinstance(it, SceneVolume):
            out.append(it)
        elif isinstance(it, Volume):
            out.append(SceneVolume(it))
        else:
            raise VolumeError(f"a scene holds Volume or SceneVolume objects, got {type(it).__name__}")
    return out


class Projector:
    """Volumes uploaded once to a device; ``project(camera)`` renders one view."""

    #: exact mode with one volume runs a dedicated kernel (same result; tests compare the two)
    single_volume_kernel = True

    def __init__(self, scene, device: str = "auto", mode: str = "exact", step: float | None = None):
        from projectors import kernels

        self._k = kernels
        wp = _wp()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        items = as_scene(scene)
        if len(items) > kernels.MAX_VOLUMES:
            raise VolumeError(f"at most {kernels.MAX_VOLUMES} volumes per scene, got {len(items)}")
        # stable sort: higher priority first; ties keep the caller's order
        self.items = sorted(items, key=lambda s: -s.priority)
        min_spacing = min(float(s.volume.spacing.min()) for s in self.items)
        if step is None:
            step = 0.5 * min_spacing
        if not (np.isfinite(step) and step > 0):
            raise ValueError(f"ray-marching step must be a positive number of mm, got {step}")
        self.step = float(step)
        self.device = resolve_device(device)

        self.materials: list[str] = []
        self.structures: list[str] = []
        params, hu_parts, lab_parts, lut_parts, qmap_parts, lint_parts, lflt_parts = [], [], [], [], [], [], []
        hu_off = lab_off = lut_off = q_off = lt_off = 0
        for item in self.items:
            vol, mm = item.volume, item.materials
            p = kernels.VolumeParams()
            grid_from_world = Transform.from_rt(translation=(0.5, 0.5, 0.5)) @ vol.ijk_from_world
            p.grid_from_world = wp.mat44(*grid_from_world.matrix.astype(np.float32).ravel())
            p.shape = wp.vec3i(*vol.shape)
            p.hu_offset = hu_off
            hu_parts.append(vol.hu.ravel())
            hu_off += vol.hu.size
            if vol.labels is not None:
                p.label_offset = lab_off
                lab_parts.append(vol.labels.ravel())
                lab_off += vol.labels.size
            else:
                p.label_offset = -1

            hu_lo = float(np.floor(min(vol.hu.min(), -1024.0)))
            hu_hi = float(np.ceil(max(vol.hu.max(), 3071.0))) + 1.0
            hu_min, dens, q = mm.hu_map.lut(hu_lo, hu_hi)
            names = list(mm.hu_map.materials)
            occ = 1.0 - mm.hu_map.weights(np.arange(hu_min, hu_min + len(dens)))[:, names.index("air")] if "air" in names else np.ones_like(dens)
            lut_parts.append(np.stack([dens, q, occ], axis=1).astype(np.float32))
            p.lut_offset, p.lut_size, p.lut_hu_min = lut_off, len(dens), hu_min
            lut_off += len(dens)
            qmap_parts.append(np.array([self._channel(n) for n in names], dtype=np.int32))
            p.qmap_offset, p.n_q = q_off, len(names)
            q_off += len(names)

            # label tables: material channel / structure channel / density / occupancy per label value
            names_by_label = dict(vol.label_names)
            keys = set(names_by_label) | set(mm.label_materials)
            n_table = (max(keys) + 1) if keys else 0
            lint = np.full((max(n_table, 1), 2), -1, dtype=np.int32)
            lflt = np.full((max(n_table, 1), 2), -1.0, dtype=np.float32)
            for lab, lm in mm.label_materials.items():
                lint[lab, 0] = self._channel(lm.material)
                lflt[lab, 0] = -1.0 if lm.density is None else lm.density
                lflt[lab, 1] = 0.0 if lm.material == "air" else 1.0
            for lab, name in names_by_label.items():
                if lab == 0 and name.lower() in ("background", "bg", ""):
                    continue
                lint[lab, 1] = self._structure(name)
            lint_parts.append(lint)
            lflt_parts.append(lflt)
            p.label_table_offset, p.n_label_table = lt_off, n_table
            lt_off += len(lint)
            params.append(p)

        d = self.device
        self._params = params
        self._vols = wp.array(params, dtype=kernels.VolumeParams, device=d)
        self._hu = wp.array(np.concatenate(hu_parts), dtype=wp.float32, device=d)
        self._labels = wp.array(np.concatenate(lab_parts) if lab_parts else np.zeros(1, np.int32), dtype=wp.int32, device=d)
        self._lut = wp.array(np.concatenate(lut_parts), dtype=wp.vec3, device=d)
        self._qmap = wp.array(np.concatenate(qmap_parts), dtype=wp.int32, device=d)
        self._lint = wp.array(np.concatenate(lint_parts), dtype=wp.vec2i, device=d)
        self._lflt = wp.array(np.concatenate(lflt_parts), dtype=wp.vec2, device=d)
        # exact mode reads each voxel's (density, material coordinate) and structure, computed here once
        self._dq = wp.zeros(hu_off if mode == "exact" else 1, dtype=wp.vec2, device=d)
        self._sch = wp.zeros(lab_off if mode == "exact" and lab_off else 1, dtype=wp.int32, device=d)
        if mode == "exact":
            for p, item in zip(params, self.items):
                wp.launch(
                    kernels.prepare_voxels_kernel, dim=item.volume.hu.size, device=d,
                    inputs=[p, self._hu, self._labels, self._lut, self._lint, self._lflt, self._dq, self._sch],
                )
        # one volume of integer HU without label materials: 2-byte index into a (density, q) table
        self._index = self._table = None
        self._no_index = wp.zeros(1, dtype=wp.uint16, device=d)
        item = self.items[0]
        if mode == "exact" and len(self.items) == 1 and not item.materials.label_materials:
            hu = item.volume.hu
            lut = lut_parts[0]
            if np.array_equal(hu, np.rint(hu)) and len(lut) <= 65536:
                # the LUT's entry at an integer HU is exactly what prepare_voxels_kernel computes there
                n_q = len(item.materials.hu_map.materials)
                table = np.stack([lut[:, 0] * np.float32(0.1), np.clip(lut[:, 1], 0, n_q - 1)], axis=1)
                self._table = wp.array(table.astype(np.float32), dtype=wp.vec2, device=d)
                index = (hu - np.float32(params[0].lut_hu_min)).astype(np.uint16).ravel()
                self._index = wp.array(index, dtype=wp.uint16, device=d)

    def _channel(self, material: str) -> int:
        if material not in self.materials:
            self.materials.append(material)
        return self.materials.index(material)

    def _structure(self, name: str) -> int:
        if name not in self.structures:
            self.structures.append(name)
        return self.structures.index(name)

    def check_view(self, camera: Camera) -> None:
        """Raise GeometryError when no detector ray can meet any volume of the scene."""
        for item in self.items:
            corners = item.volume.corners_world
            z = camera.depth(corners)
            if camera.projection == "perspective" and np.all(z <= 0):
                continue  # entirely behind the source
            if camera.projection == "perspective" and np.any(z <= 0):
                return  # the volume surrounds the source plane: some rays hit it
            uv = camera.project(corners)
            if (uv[:, 0].max() >= -0.5 and uv[:, 0].min() <= camera.width - 0.5
                    and uv[:, 1].max() >= -0.5 and uv[:, 1].min() <= camera.height - 0.5):
                return
        raise GeometryError(
            "no detector ray passes through the volume: the camera points away from it or the volume "
            "lies outside the field of view (check the isocentre, angles and volume position)"
        )

    def project(self, camera: Camera) -> Projection:
        if not isinstance(camera, Camera):
            raise GeometryError(f"expected a Camera, got {type(camera).__name__}")
        self.check_view(camera)
        wp = _wp()
        k = self._k
        H, W = camera.height, camera.width
        o0, Mo, Md = camera.ray_parameters()
        out_mat = wp.zeros((len(self.materials), H, W), dtype=wp.float32, device=self.device)
        out_struct = wp.zeros((max(len(self.structures), 1), H, W), dtype=wp.float32, device=self.device)
        mode = k.MODE_EXACT if self.mode == "exact" else k.MODE_MARCH

        T = int(k.TILE)
        tiles_x = -(-W // T)

        rays = [wp.vec3(*o0.astype(np.float32)), wp.mat33(*Mo.astype(np.float32).ravel()),
                wp.mat33(*Md.astype(np.float32).ravel())]

        def launch(r0: int, r1: int):  # rows r0..r1, r0 a multiple of TILE
            dim = (-(-(r1 - r0) // T)) * tiles_x * T * T
            if self.mode == "exact" and len(self.items) == 1 and self.single_volume_kernel:
                indexed = self._index is not None
                kernel = k.EXACT_KERNELS[(self.items[0].volume.labels is not None, indexed)]
                inputs = [self._params[0], self._table if indexed else self._dq, self._sch,
                          self._index if indexed else self._no_index, self._qmap, *rays, r0, out_mat, out_struct]
                wp.launch(kernel, dim=dim, inputs=inputs, device=self.device)
                return
            inputs = [self._vols, len(self.items), self._hu, self._labels, self._lut, self._qmap, self._lint,
                      self._lflt, self._dq, self._sch, *rays, r0, mode, self.step, out_mat, out_struct]
            wp.launch(k.project_kernel, dim=dim, inputs=inputs, device=self.device)

        wp.load_module(k, device=self.device)  # compile (or load from cache) once, not per thread
        # blocks of whole tiles, at least 4 per core so the cores finish together
        launch_over_rows(launch, H, self.device, block=T * max(1, min(2, H // (4 * cpu_threads() * T))))
        wp.synchronize_device(self.device)
        mats = out_mat.numpy()
        structs = out_struct.numpy()
        return Projection(
            areal_density={m: mats[i] for i, m in enumerate(self.materials)},
            path_length={s: structs[i] for i, s in enumerate(self.structures)},
            camera=camera,
            mode=self.mode,
            step=self.step if self.mode == "trilinear" else None,
        )


def project(scene, camera: Camera, mode: str = "exact", step: float | None = None, device: str = "auto") -> Projection:
    """Render per-material areal densities and per-structure path lengths of ``scene`` seen by ``camera``."""
    return Projector(scene, device=device, mode=mode, step=step).project(camera)
