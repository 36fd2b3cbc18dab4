"""Plain CUDA reference projectors (numba.cuda), the GPU yardstick of ``benchmarks/speed.py --device cuda``.

The GPU counterpart of ``reference_numba.py``: the same two algorithms, one channel (a float32
volume of g/cm^3 x 0.1 cm/mm), one thread per pixel, written the way a competent engineer writes
a first CUDA kernel: the volume in global memory (no textures), float32 ray arithmetic (as GPUs
prefer and as synthex's kernels use), no tiling. Rays, box clipping and the shifted index space
(voxel ``(i, j, k)`` spans ``[i, i+1) x ...``) are synthex's, so the images are the same line
integrals as synthex's total areal density (the sweep checks that every run). The image is
copied back to the host in every call, as synthex's projector returns its images.

The helpers are device functions built from plain Python with ``math`` (so the CUDA simulator,
``NUMBA_ENABLE_CUDASIM=1``, runs them on a machine without a GPU: the test of this file).
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda, float32

# float32 constants: a bare Python float (or an int mixed with a float32) would make numba compute
# in float64, which a GPU runs at half the float32 rate or less
F0, F1, FH, BIG = np.float32(0.0), np.float32(1.0), np.float32(0.5), np.float32(1.0e30)


@cuda.jit(device=True)
def _slab(o, d, n, a, b):
    if d == F0:
        if o < F0 or o > n:
            return F1, F0
        return a, b
    t0 = (F0 - o) / d
    t1 = (n - o) / d
    return max(a, min(t0, t1)), min(b, max(t0, t1))


@cuda.jit(device=True)
def _axis(g0, gd, t, n):
    p = g0 + gd * t
    if gd > F0:
        i = min(max(int(math.floor(p)), 0), n - 1)
        return i, 1, (float32(i + 1) - g0) / gd, F1 / gd
    if gd < F0:
        i = min(max(int(math.ceil(p)) - 1, 0), n - 1)
        return i, -1, (float32(i) - g0) / gd, -F1 / gd
    return min(max(int(math.floor(p)), 0), n - 1), 0, BIG, F0


@cuda.jit(device=True)
def _ray(P, row, col):
    """Grid-space origin and unit-world-length direction of pixel (row, col) from the 24 ray parameters
    ``P`` (origin o0, origin per (u, v, 1) Mo, direction per (u, v, 1) Md, grid-from-world G)."""
    u = float32(col)
    v = float32(row)
    ox = P[0] + P[3] * u + P[4] * v + P[5]
    oy = P[1] + P[6] * u + P[7] * v + P[8]
    oz = P[2] + P[9] * u + P[10] * v + P[11]
    dx = P[12] * u + P[13] * v + P[14]
    dy = P[15] * u + P[16] * v + P[17]
    dz = P[18] * u + P[19] * v + P[20]
    inv = F1 / math.sqrt(dx * dx + dy * dy + dz * dz)
    dx *= inv
    dy *= inv
    dz *= inv
    # G: rows 21.. hold the 3x3 scale-rotation and translation of grid_from_world, row-major 3x4
    return (P[21] * ox + P[22] * oy + P[23] * oz + P[24], P[25] * ox + P[26] * oy + P[27] * oz + P[28],
            P[29] * ox + P[30] * oy + P[31] * oz + P[32],
            P[21] * dx + P[22] * dy + P[23] * dz, P[25] * dx + P[26] * dy + P[27] * dz,
            P[29] * dx + P[30] * dy + P[31] * dz)


@cuda.jit(device=True)
def _box(gx, gy, gz, dx, dy, dz, nx, ny, nz):
    """The ray's entry and exit parameters of the grid box [0, n) per axis (empty: t >= t_end)."""
    t, t_end = _slab(gx, dx, float32(nx), F0, BIG)
    t, t_end = _slab(gy, dy, float32(ny), t, t_end)
    return _slab(gz, dz, float32(nz), t, t_end)


@cuda.jit
def _siddon(vol, P, out):
    r, c = cuda.grid(2)
    if r >= out.shape[0] or c >= out.shape[1]:
        return
    nx, ny, nz = vol.shape
    gx, gy, gz, dx, dy, dz = _ray(P, r, c)
    t, t_end = _box(gx, gy, gz, dx, dy, dz, nx, ny, nz)
    acc = F0
    if t < t_end:
        i, si, tx, dtx = _axis(gx, dx, t, nx)
        j, sj, ty, dty = _axis(gy, dy, t, ny)
        k, sk, tz, dtz = _axis(gz, dz, t, nz)
        while t < t_end:
            v = vol[i, j, k]
            if tx <= ty and tx <= tz:
                t1 = min(tx, t_end)
                i += si
                tx += dtx
            elif ty <= tz:
                t1 = min(ty, t_end)
                j += sj
                ty += dty
            else:
                t1 = min(tz, t_end)
                k += sk
                tz += dtz
            acc += v * (t1 - t)
            t = t1
            if i < 0 or i >= nx or j < 0 or j >= ny or k < 0 or k >= nz:
                break
    out[r, c] = acc


@cuda.jit
def _trilinear(vol, P, step, out):
    r, c = cuda.grid(2)
    if r >= out.shape[0] or c >= out.shape[1]:
        return
    nx, ny, nz = vol.shape
    gx, gy, gz, dx, dy, dz = _ray(P, r, c)
    t, t_end = _box(gx, gy, gz, dx, dy, dz, nx, ny, nz)
    acc = F0
    if t < t_end:
        n_steps = max(int(math.ceil((t_end - t) / step)), 1)
        h = (t_end - t) / float32(n_steps)
        for s in range(n_steps):
            tm = t + (float32(s) + FH) * h
            x = gx + dx * tm - FH
            y = gy + dy * tm - FH
            z = gz + dz * tm - FH
            i0 = int(math.floor(x))
            j0 = int(math.floor(y))
            k0 = int(math.floor(z))
            fx = x - float32(i0)
            fy = y - float32(j0)
            fz = z - float32(k0)
            ia = min(max(i0, 0), nx - 1)
            ib = min(max(i0 + 1, 0), nx - 1)
            ja = min(max(j0, 0), ny - 1)
            jb = min(max(j0 + 1, 0), ny - 1)
            ka = min(max(k0, 0), nz - 1)
            kb = min(max(k0 + 1, 0), nz - 1)
            c00 = vol[ia, ja, ka] * (F1 - fz) + vol[ia, ja, kb] * fz
            c01 = vol[ia, jb, ka] * (F1 - fz) + vol[ia, jb, kb] * fz
            c10 = vol[ib, ja, ka] * (F1 - fz) + vol[ib, ja, kb] * fz
            c11 = vol[ib, jb, ka] * (F1 - fz) + vol[ib, jb, kb] * fz
            acc += ((c00 * (F1 - fy) + c01 * fy) * (F1 - fx) + (c10 * (F1 - fy) + c11 * fy) * fx) * h
    out[r, c] = acc


class Renderer:
    """One volume uploaded once; :meth:`render` projects a camera and returns the image on the host."""

    def __init__(self, vol: np.ndarray, grid_from_world: np.ndarray, kind: str, step: float | None = None):
        if kind not in ("siddon", "trilinear"):
            raise ValueError(f"kind must be 'siddon' or 'trilinear', got {kind!r}")
        self.vol = cuda.to_device(np.ascontiguousarray(vol, dtype=np.float32))
        self.G = np.asarray(grid_from_world, np.float64)[:3].ravel()
        self.kind, self.step = kind, float(step or 0.0)

    def render(self, camera) -> np.ndarray:
        return self.launch(camera).copy_to_host()

    def launch(self, camera):
        """Launch the kernel for ``camera``; the image stays on the device."""
        o0, Mo, Md = (np.asarray(a, np.float64) for a in camera.ray_parameters())
        P = cuda.to_device(np.concatenate([o0.ravel(), Mo.ravel(), Md.ravel(), self.G]).astype(np.float32))
        out = cuda.device_array((camera.height, camera.width), np.float32)
        threads = (8, 32)
        blocks = ((camera.height + 7) // 8, (camera.width + 31) // 32)
        if self.kind == "siddon":
            _siddon[blocks, threads](self.vol, P, out)
        else:
            _trilinear[blocks, threads](self.vol, P, np.float32(self.step), out)
        return out
