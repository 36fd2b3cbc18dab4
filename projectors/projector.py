"""Host side of the projector: scenes of volumes -> per-material areal density images.

    proj = project(volume, camera)                      # one call
    projector = Projector([ct, SceneVolume(tool, priority=1)], device="cpu")
    for cam in cameras:
        proj = projector.project(cam)
    proj.areal_density["bone_cortical"]                 # (H, W) g/cm^2
    proj.path_length["femur_left"]                      # (H, W) mm

Nothing is normalized: outputs are physical quantities of the scene.

**Prepared volumes are cached.** What a scene needs on the device (a 2-byte
index per voxel for integer-HU CTs, or the float32 HU, a 2-byte label per
voxel (packed with the index in one 4-byte word), and small per-HU / per-label
tables) is built once per (scene volumes,
material models, device) and kept in a small cache keyed on the ``Volume``
objects themselves: ``project(vol, cam)``, ``Projector(vol)`` and
``synthex.render(vol, cam)`` called in a loop over views of the same volume
object reuse it. An entry is dropped when any of its volumes is garbage
collected (the cache holds no reference to them), when more than
``CACHE_ENTRIES`` scenes are cached (least recently used first), or by
:func:`clear_prepared_cache`. Volumes are treated as immutable: do not write
into ``volume.hu`` / ``volume.labels`` after rendering them (make a new
``Volume`` instead). Pass ``cache=False`` to ``Projector`` to bypass it.

On the CPU a Warp launch runs on one core, so the detector is split into tiles
that a pool of :func:`cpu_threads` threads renders; :func:`set_cpu_threads`
(or the environment variable ``SYNTHEX_THREADS``) sets that number, e.g. to
give each of several worker processes its share of the cores.
"""

from __future__ import annotations

import os
import sys
import threading
import weakref
from collections import OrderedDict
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from projectors.geometry import Camera, GeometryError, Transform
from projectors.materials import MaterialModel
from projectors.volume import Volume, VolumeError

MODES = ("exact", "trilinear")
CACHE_ENTRIES = 8  # prepared scenes kept (least recently used dropped first)
_init_lock = threading.Lock()
_warp = None
_threads: int | None = None


class DeviceError(RuntimeError):
    """The requested compute device is not available."""


def _wp():
    """Import and initialise Warp once, quietly (its kernels compile on first use)."""
    global _warp
    with _init_lock:
        if _warp is None:
            import warp as wp

            import projectors.kernels  # noqa: F401  (sets Warp's configuration before init)

            if _no_cuda_driver():  # Warp's native init would print a CUDA warning on every command
                with _stderr_to_devnull():
                    wp.init()
            else:
                wp.init()
            _warp = wp
    return _warp


def _no_cuda_driver() -> bool:
    """True on Linux when no NVIDIA driver library loads (a CPU-only machine; asking for 'cuda' then raises
    :class:`DeviceError`, which says so)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    for name in ("libcuda.so", "libcuda.so.1"):
        try:
            ctypes.CDLL(name)
            return False
        except OSError:
            continue
    return True


@contextmanager
def _stderr_to_devnull():
    """Silence file descriptor 2 (native code's stderr) for the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


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


def set_cpu_threads(n: int | None) -> None:
    """Threads the CPU projector (and mesh ray caster) use per call; ``None``: every core it may run on."""
    global _threads
    if n is not None and (int(n) != n or n < 1):
        raise ValueError(f"the number of CPU threads must be a whole number >= 1, got {n!r}")
    _threads = None if n is None else int(n)


def cpu_threads() -> int:
    """:func:`set_cpu_threads`, else ``SYNTHEX_THREADS``, else the cores this process may run on."""
    if _threads is not None:
        return _threads
    env = os.environ.get("SYNTHEX_THREADS", "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"SYNTHEX_THREADS must be a whole number >= 1, got {env!r}")
        return n
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


_POOL: tuple[int, ThreadPoolExecutor] | None = None
_POOL_LOCK = threading.Lock()


def _pool(n: int) -> ThreadPoolExecutor:
    """One pool of ``n`` projector threads for the process (starting threads per call cost ~5 ms a view)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL[0] != n:
            if _POOL is not None:
                _POOL[1].shutdown(wait=False)
            _POOL = (n, ThreadPoolExecutor(n, thread_name_prefix="synthex-projector"))
        return _POOL[1]


def _forget_pool() -> None:  # a forked child has the pool object but none of its threads
    global _POOL, _POOL_LOCK
    _POOL, _POOL_LOCK = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool)


def _run_parallel(launch, spans, device: str) -> None:
    n = cpu_threads()
    if device != "cpu" or n == 1 or len(spans) == 1 or threading.current_thread().name.startswith("synthex-projector"):
        for span in spans:
            launch(*span)
        return
    list(_pool(n).map(lambda span: launch(*span), spans))


def launch_over_rows(launch, height: int, device: str, block: int) -> None:
    """Run ``launch(r0, r1)`` over detector rows ``0..height``.

    On CUDA one launch covers every row. A Warp CPU launch runs on one core,
    so on the CPU rows go in blocks of ``block`` to a pool of all cores.
    """
    if device != "cpu":
        launch(0, height)
        return
    _run_parallel(launch, [(r, min(r + block, height)) for r in range(0, height, block)], device)


def launch_over_tiles(launch, n_tiles: int, device: str) -> None:
    """Run ``launch(t0, t1)`` over detector tiles ``0..n_tiles``: one launch on CUDA; on the CPU
    about four contiguous spans per thread (so the threads finish together), each on one core."""
    if device != "cpu":
        launch(0, n_tiles)
        return
    n = cpu_threads()
    chunk = max(1, -(-n_tiles // (4 * n))) if n > 1 else n_tiles
    _run_parallel(launch, [(t, min(t + chunk, n_tiles)) for t in range(0, n_tiles, chunk)], device)


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


# ---------------------------------------------------------------------------------------------
# Prepared scenes: what the kernels read, built once per (volumes, material models, device)


def _hu_range(hu: np.ndarray) -> tuple[float, float]:
    """HU span of the lookup tables: the volume's values, and at least -1024..3071."""
    return float(np.floor(min(float(hu.min()), -1024.0))), float(np.ceil(max(float(hu.max()), 3071.0))) + 1.0


def hu_index(hu: np.ndarray, hu_min: float, size: int) -> np.ndarray | None:
    """``hu - hu_min`` as a 2-byte index when every voxel holds a whole HU value (as CT files store
    them) and the table has at most 65,536 entries, else None. Done in slabs of about 4 M voxels
    (no volume-sized temporaries)."""
    if size > 65536:
        return None
    flat = hu.reshape(-1)
    out = np.empty(flat.shape, np.uint16)
    step = 1 << 22
    for a in range(0, flat.size, step):
        chunk = flat[a : a + step]
        whole = np.rint(chunk)
        if not np.array_equal(whole, chunk):
            return None
        whole -= np.float32(hu_min)
        out[a : a + step] = whole
    return out


class _Prepared:
    """Device arrays of one scene. Holds no reference to its Volume objects (so the cache keyed on
    them lets them be collected); the CPU float path aliases the volume's HU array."""

    def __init__(self, items: list[SceneVolume], device: str):
        from projectors import kernels

        wp = _wp()
        self.device = device
        self.materials: list[str] = []
        self.structures: list[str] = []
        self.luts, self.qmaps, self.label_tables = [], [], []
        for item in items:
            vol, mm = item.volume, item.materials
            hu_lo, hu_hi = _hu_range(vol.hu)
            hu_min, dens, q = mm.hu_map.lut(hu_lo, hu_hi)
            names = list(mm.hu_map.materials)
            self.luts.append((hu_min, dens, q, names))
            self.qmaps.append(np.array([self._channel(n) for n in names], dtype=np.int32))
            # per label value: (material channel, structure channel) and (density or -1, occupancy)
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
            self.label_tables.append((n_table, lint, lflt))
        self.general = None  # project_kernel's arrays, built on first use (GeneralArrays)
        self.single = None
        if len(items) == 1 and len(self.materials) <= kernels.NCH:
            self.single = self._single_arrays(items[0], wp, kernels)

    def _channel(self, material: str) -> int:
        if material not in self.materials:
            self.materials.append(material)
        return self.materials.index(material)

    def _structure(self, name: str) -> int:
        if name not in self.structures:
            self.structures.append(name)
        return self.structures.index(name)

    def _single_arrays(self, item: SceneVolume, wp, kernels) -> dict:
        """What ``SINGLE_KERNELS`` read: the voxels (2-byte HU index, else float32 HU) and 2-byte labels
        (with an index: both in one 4-byte word, ``vox``), the per-HU channel-weight table and the
        per-label tables."""
        d = self.device
        vol, mm = item.volume, item.materials
        hu_min, dens, q, names = self.luts[0]
        n = len(dens)
        # per whole HU: areal density per mm (g/cm^3 x 0.1 cm/mm) split over channels by the HU map's weights
        # (the general kernel's (density, material coordinate) split at each whole HU), and for
        # fractional HU the coefficients of the exact quadratic between whole HU (kernels.table_weights)
        weights = mm.hu_map.weights(np.arange(n, dtype=np.float64) + hu_min)  # (n, n_q), rows sum to 1
        rho = dens.astype(np.float64) * 0.1
        d_rho = np.append(np.diff(rho), 0.0)
        d_w = np.vstack([np.diff(weights, axis=0), np.zeros((1, weights.shape[1]))])
        coef = np.stack([weights * rho[:, None], weights * d_rho[:, None] + d_w * rho[:, None],
                         d_w * d_rho[:, None]], axis=1)  # (n, 3, n_q)
        width = kernels.channel_width(len(self.materials))
        vt = kernels.VEC[width]
        quad = np.zeros((n, 3, width), np.float64)
        np.add.at(quad.transpose(2, 0, 1), self.qmaps[0], coef.transpose(2, 0, 1))
        table = quad[:, 0]
        n_table, lint, lflt = self.label_tables[0]
        index = hu_index(vol.hu, hu_min, n)
        keep = []  # host arrays a CPU Warp array aliases
        vox = vox32 = lab = None
        if index is not None and vol.labels is not None:  # one 4-byte word a voxel: index | label << 16
            packed = vol.labels.reshape(-1).astype(np.uint32)  # (Volume checked 0..65535; in place from here)
            packed <<= 16
            packed |= index
            keep.append(packed)
            vox = wp.array(packed, dtype=wp.uint32, device=d, copy=d != "cpu")
        elif index is not None:
            keep.append(index)
            vox = wp.array(index, dtype=wp.uint16, device=d, copy=d != "cpu")
        else:
            flat = vol.hu.reshape(-1)  # C-contiguous float32 (Volume guarantees it): aliased on the CPU
            keep.append(flat)
            vox32 = wp.array(flat, dtype=wp.float32, device=d, copy=d != "cpu")
            if vol.labels is not None:
                labels = vol.labels.reshape(-1).astype(np.uint16)  # Volume checked 0..65535
                keep.append(labels)
                lab = wp.array(labels, dtype=wp.uint16, device=d, copy=d != "cpu")
        vox = wp.zeros(1, dtype=wp.uint16, device=d) if vox is None else vox  # (unread placeholders)
        vox32 = wp.zeros(1, dtype=wp.float32, device=d) if vox32 is None else vox32
        lab = wp.zeros(1, dtype=wp.uint16, device=d) if lab is None else lab
        label_density = np.where(lflt[:, 0] >= 0, lflt[:, 0] * 0.1, -1.0).astype(np.float32)
        return {
            "indexed": index is not None,
            "labelled": vol.labels is not None,
            "vox": vox,
            "vox32": vox32,
            "labels": lab,
            "width": width,
            "table": wp.array(table.astype(np.float32), dtype=vt, device=d),
            "quad": wp.array(quad.reshape(3 * n, width).astype(np.float32), dtype=vt, device=d),
            "label_info": wp.array(lint, dtype=wp.vec2i, device=d),
            "label_density": wp.array(label_density, dtype=wp.float32, device=d),
            "onehot": wp.array(np.eye(width, dtype=np.float32), dtype=vt, device=d),
            "keep": keep if d == "cpu" else [],
            "bytes": int(sum(a.nbytes for a in keep)) + table.size * 16,
        }

    def general_arrays(self, items: list[SceneVolume]) -> dict:
        """``project_kernel``'s arrays (several volumes, or the single-volume kernels switched off)."""
        if self.general is not None:
            return self.general
        from projectors import kernels

        wp = _wp()
        d = self.device
        hu_parts, lab_parts, lut_parts = [], [], []
        for item, (hu_min, dens, q, names) in zip(items, self.luts):
            vol = item.volume
            hu_parts.append(vol.hu.reshape(-1))
            if vol.labels is not None:
                lab_parts.append(vol.labels.reshape(-1))
            occ = (1.0 - item.materials.hu_map.weights(np.arange(hu_min, hu_min + len(dens)))[:, names.index("air")]
                   if "air" in names else np.ones_like(dens))
            lut_parts.append(np.stack([dens, q, occ], axis=1).astype(np.float32))
        hu = hu_parts[0] if len(hu_parts) == 1 else np.concatenate(hu_parts)
        labels = (lab_parts[0] if len(lab_parts) == 1 else np.concatenate(lab_parts)) if lab_parts else np.zeros(1, np.int32)
        g = {
            "hu": wp.array(hu, dtype=wp.float32, device=d, copy=d != "cpu"),
            "labels": wp.array(labels, dtype=wp.int32, device=d, copy=d != "cpu"),
            "lut": wp.array(np.concatenate(lut_parts), dtype=wp.vec3, device=d),
            "qmap": wp.array(np.concatenate(self.qmaps), dtype=wp.int32, device=d),
            "lint": wp.array(np.concatenate([t[1] for t in self.label_tables]), dtype=wp.vec2i, device=d),
            "lflt": wp.array(np.concatenate([t[2] for t in self.label_tables]), dtype=wp.vec2, device=d),
            "keep": [hu, labels],
            "exact": None,  # per-voxel (density, q) and structure channel, exact mode only
        }
        self.general = g
        return g

    def general_exact_arrays(self, items: list[SceneVolume], params: list) -> tuple:
        g = self.general_arrays(items)
        if g["exact"] is None:
            from projectors import kernels

            wp = _wp()
            n_hu = sum(it.volume.hu.size for it in items)
            n_lab = sum(it.volume.labels.size for it in items if it.volume.labels is not None)
            dq = wp.zeros(n_hu, dtype=wp.vec2, device=self.device)
            sch = wp.zeros(max(n_lab, 1), dtype=wp.int32, device=self.device)
            for p, item in zip(params, items):
                wp.launch(kernels.prepare_voxels_kernel, dim=item.volume.hu.size, device=self.device,
                          inputs=[p, g["hu"], g["labels"], g["lut"], g["lint"], g["lflt"], dq, sch])
            g["exact"] = (dq, sch)
        return g["exact"]


_cache_lock = threading.RLock()
_cache: OrderedDict[tuple, _Prepared] = OrderedDict()
_watched: dict[int, weakref.finalize] = {}


def _materials_key(mm: MaterialModel):
    key = (mm.hu_map, tuple(sorted(mm.label_materials.items())))
    try:
        hash(key)
        return key
    except TypeError:  # pragma: no cover - a material model with unhashable parts
        return repr(key)


def _cache_key(items: list[SceneVolume], device: str) -> tuple:
    """(device, ((volume id, material model, priority), ...)): ids are only valid while the volumes
    live, so every entry is dropped when one of its volumes is collected (``_forget``)."""
    return device, tuple((id(it.volume), _materials_key(it.materials), it.priority) for it in items)


def _forget(volume_id: int) -> None:
    with _cache_lock:
        _watched.pop(volume_id, None)
        for key in [k for k in _cache if any(v == volume_id for v, _, _ in k[1])]:
            del _cache[key]


def clear_prepared_cache() -> None:
    """Drop every cached prepared scene (device memory is released once no Projector uses it)."""
    with _cache_lock:
        _cache.clear()


def prepared_cache_info() -> dict:
    """Number of cached prepared scenes and the host/device bytes their voxel arrays take."""
    with _cache_lock:
        return {"entries": len(_cache),
                "bytes": sum(p.single["bytes"] for p in _cache.values() if p.single is not None)}


def prepared_scene(items: list[SceneVolume], device: str, cache: bool = True) -> _Prepared:
    """The prepared device data of ``items`` (sorted by priority) on ``device``, from the cache if there."""
    if not cache:
        return _Prepared(items, device)
    key = _cache_key(items, device)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
        prepared = _Prepared(items, device)
        _cache[key] = prepared
        for it in items:
            vid = id(it.volume)
            if vid not in _watched:
                _watched[vid] = weakref.finalize(it.volume, _forget, vid)
        while len(_cache) > CACHE_ENTRIES:
            _cache.popitem(last=False)
        return prepared


def _zeros(wp, shape, device: str):
    """A zeroed float32 output. On the CPU numpy's (calloc'd) zeros: pages that no ray writes (most
    of a structure channel) are never touched, where ``wp.zeros`` would write every byte (18 ms
    per view for 117 structures at 256^2)."""
    if device == "cpu":
        return wp.array(np.zeros(shape, np.float32), dtype=wp.float32, device="cpu", copy=False)
    return wp.zeros(shape, dtype=wp.float32, device=device)


# ---------------------------------------------------------------------------------------------


class Projector:
    """A scene prepared on a device; ``project(camera)`` renders one view."""

    #: one-volume scenes run ``SINGLE_KERNELS`` (same images as the general kernel; tests compare them)
    single_volume_kernel = True

    def __init__(self, scene, device: str = "auto", mode: str = "exact", step: float | None = None,
                 cache: bool = True):
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
        self._prep = prepared_scene(self.items, self.device, cache=cache)
        self.materials = self._prep.materials
        self.structures = self._prep.structures

        params = []
        hu_off = lab_off = lut_off = q_off = lt_off = 0
        for item, (hu_min, dens, q, names), (n_table, lint, _) in zip(self.items, self._prep.luts, self._prep.label_tables):
            vol = item.volume
            p = kernels.VolumeParams()
            grid_from_world = Transform.from_rt(translation=(0.5, 0.5, 0.5)) @ vol.ijk_from_world
            p.grid_from_world = wp.mat44(*grid_from_world.matrix.astype(np.float32).ravel())
            p.shape = wp.vec3i(*vol.shape)
            p.hu_offset = hu_off
            hu_off += vol.hu.size
            p.label_offset = lab_off if vol.labels is not None else -1
            lab_off += vol.labels.size if vol.labels is not None else 0
            p.lut_offset, p.lut_size, p.lut_hu_min = lut_off, len(dens), hu_min
            lut_off += len(dens)
            p.qmap_offset, p.n_q = q_off, len(names)
            q_off += len(names)
            p.label_table_offset, p.n_label_table = lt_off, n_table
            lt_off += len(lint)
            params.append(p)
        self._params = params
        # the detector axis along which consecutive rays best share cache lines: the image direction
        # of the largest volume's contiguous (last) index axis
        big = max(self.items, key=lambda s: s.volume.hu.size).volume
        self._memory_axis = (big.center_world, big.world_from_ijk.R[:, 2])
        if len(self.items) > 1 or self._prep.single is None:
            self._general()  # build now: errors and memory at construction, not at the first view

    def _general(self):
        wp = _wp()
        g = self._prep.general_arrays(self.items)
        if self.mode == "exact":
            dq, sch = self._prep.general_exact_arrays(self.items, self._params)
        else:
            dq = wp.zeros(1, dtype=wp.vec2, device=self.device)
            sch = wp.zeros(1, dtype=wp.int32, device=self.device)
        return g, dq, sch

    @property
    def kernel_path(self) -> str:
        """Which kernel renders: ``"single-u16"`` / ``"single-f32"`` (one volume, 2-byte HU index or
        float32 HU) or ``"general"`` (several volumes, more than NCH channels, or switched off)."""
        s = self._prep.single
        if s is None or len(self.items) > 1 or not self.single_volume_kernel:
            return "general"
        return "single-u16" if s["indexed"] else "single-f32"

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

    def _along_rows(self, camera: Camera) -> int:
        c, axis = self._memory_axis
        with np.errstate(all="ignore"):
            uv = camera.project(np.stack([c - axis, c + axis]))
        du, dv = np.abs(uv[1] - uv[0])
        return 0 if np.isfinite(du) and np.isfinite(dv) and du > dv else 1

    def project(self, camera: Camera) -> Projection:
        if not isinstance(camera, Camera):
            raise GeometryError(f"expected a Camera, got {type(camera).__name__}")
        self.check_view(camera)
        wp = _wp()
        k = self._k
        H, W = camera.height, camera.width
        o0, Mo, Md = camera.ray_parameters()
        n_ch = len(self.materials)
        out_mat = _zeros(wp, (n_ch, H, W), self.device)
        out_struct = _zeros(wp, (max(len(self.structures), 1), H, W), self.device)
        rays = [wp.vec3(*o0.astype(np.float32)), wp.mat33(*Mo.astype(np.float32).ravel()),
                wp.mat33(*Md.astype(np.float32).ravel())]
        along_rows = self._along_rows(camera)
        S, Wd = int(k.STRIP), int(k.WIDE)
        n_tiles = (-(-H // S)) * (-(-W // Wd)) if along_rows else (-(-H // Wd)) * (-(-W // S))
        mode = k.MODE_EXACT if self.mode == "exact" else k.MODE_MARCH
        path = self.kernel_path
        if path == "general":
            g, dq, sch = self._general()
            kernel = k.project_kernel
            head = [self._vols_array(), len(self.items), g["hu"], g["labels"], g["lut"], g["qmap"], g["lint"],
                    g["lflt"], dq, sch, *rays]
            tail = [mode, self.step, out_mat, out_struct]
        else:
            s = self._prep.single
            kernel = k.SINGLE_KERNELS[(mode, s["indexed"], s["labelled"], s["width"])]
            head = [self._params[0], s["vox"], s["vox32"], s["labels"], s["table"], s["quad"], s["label_info"],
                    s["label_density"], s["onehot"], n_ch, *rays]
            tail = [self.step, out_mat, out_struct]

        def launch(t0: int, t1: int):
            wp.launch(kernel, dim=(t1 - t0) * k.TILE_RAYS, inputs=[*head, t0, along_rows, *tail], device=self.device)

        wp.load_module(k, device=self.device)  # compile (or load from cache) once, not per thread
        launch_over_tiles(launch, n_tiles, self.device)
        wp.synchronize_device(self.device)
        mats = out_mat.numpy()
        structs = out_struct.numpy() if self.structures else None  # no structures: one unused zero image
        return Projection(
            areal_density={m: mats[i] for i, m in enumerate(self.materials)},
            path_length={s: structs[i] for i, s in enumerate(self.structures)},
            camera=camera,
            mode=self.mode,
            step=self.step if self.mode == "trilinear" else None,
        )

    def _vols_array(self):
        if getattr(self, "_vols", None) is None:
            self._vols = _wp().array(self._params, dtype=self._k.VolumeParams, device=self.device)
        return self._vols


def project(scene, camera: Camera, mode: str = "exact", step: float | None = None, device: str = "auto") -> Projection:
    """Render per-material areal densities and per-structure path lengths of ``scene`` seen by ``camera``.

    Repeated calls with the same volume objects reuse their prepared device data (see the module
    docstring), so a loop over views costs what ``Projector.project`` costs.
    """
    return Projector(scene, device=device, mode=mode, step=step).project(camera)
