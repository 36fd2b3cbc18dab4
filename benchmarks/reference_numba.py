"""Plain compiled reference projectors (numba), the yardstick of ``benchmarks/speed.py``.

What a competent engineer writes in an afternoon: one channel (a float32 volume
of values already multiplied into g/cm^3 x 0.1 cm/mm), one ray per iteration of
a ``prange`` loop over all pixels (every core), no tiling, no tricks:

* ``siddon``: Siddon/Jacobs incremental traversal, the textbook form (pick the
  axis of the nearest plane crossing with if/elif, step one voxel);
* ``trilinear``: equal steps of at most ``step`` mm, sampled at their midpoints
  with trilinear interpolation (edges replicated), as synthex's trilinear mode.

Rays, box clipping and the shifted index space (voxel ``(i, j, k)`` spans
``[i, i+1) x ...``) are synthex's, so the images are the same line integrals as
synthex's total areal density (``benchmarks/speed.py`` checks that every run).
numba is in the ``bench`` extra, not a dependency of synthex.
"""

from __future__ import annotations

import numba
import numpy as np

BIG = 1.0e30


@numba.njit
def _slab(o, d, n, a, b):
    if d == 0.0:
        if o < 0.0 or o > n:
            return 1.0, 0.0
        return a, b
    inv = 1.0 / d
    t0 = (0.0 - o) * inv
    t1 = (n - o) * inv
    return max(a, min(t0, t1)), min(b, max(t0, t1))


@numba.njit
def _ray(o0, Mo, Md, G, row, col):
    """Grid-space origin and direction of pixel (row, col)'s ray (unit world direction, so t is in mm)."""
    u = float(col)
    v = float(row)
    ox = o0[0] + Mo[0, 0] * u + Mo[0, 1] * v + Mo[0, 2]
    oy = o0[1] + Mo[1, 0] * u + Mo[1, 1] * v + Mo[1, 2]
    oz = o0[2] + Mo[2, 0] * u + Mo[2, 1] * v + Mo[2, 2]
    dx = Md[0, 0] * u + Md[0, 1] * v + Md[0, 2]
    dy = Md[1, 0] * u + Md[1, 1] * v + Md[1, 2]
    dz = Md[2, 0] * u + Md[2, 1] * v + Md[2, 2]
    norm = np.sqrt(dx * dx + dy * dy + dz * dz)
    dx, dy, dz = dx / norm, dy / norm, dz / norm
    return (
        (G[0, 0] * ox + G[0, 1] * oy + G[0, 2] * oz + G[0, 3],
         G[1, 0] * ox + G[1, 1] * oy + G[1, 2] * oz + G[1, 3],
         G[2, 0] * ox + G[2, 1] * oy + G[2, 2] * oz + G[2, 3]),
        (G[0, 0] * dx + G[0, 1] * dy + G[0, 2] * dz,
         G[1, 0] * dx + G[1, 1] * dy + G[1, 2] * dz,
         G[2, 0] * dx + G[2, 1] * dy + G[2, 2] * dz),
    )


@numba.njit
def _box(go, gd, nx, ny, nz):
    t, t_end = _slab(go[0], gd[0], float(nx), 0.0, BIG)
    t, t_end = _slab(go[1], gd[1], float(ny), t, t_end)
    return _slab(go[2], gd[2], float(nz), t, t_end)


@numba.njit
def _axis(g0, gd, t, n):
    """Start voxel, step, first crossing and crossing interval along one axis."""
    p = g0 + gd * t
    if gd > 0.0:
        i = min(max(int(np.floor(p)), 0), n - 1)
        return i, 1, (i + 1 - g0) / gd, 1.0 / gd
    if gd < 0.0:
        i = min(max(int(np.ceil(p)) - 1, 0), n - 1)
        return i, -1, (i - g0) / gd, -1.0 / gd
    return min(max(int(np.floor(p)), 0), n - 1), 0, BIG, 0.0


@numba.njit(parallel=True, cache=True)
def siddon(vol, G, o0, Mo, Md, height, width):
    """Exact line integral of ``vol`` (piecewise constant voxels) along every pixel's ray."""
    nx, ny, nz = vol.shape
    flat = vol.ravel()
    out = np.zeros(height * width, np.float32)
    for r in numba.prange(height * width):
        go, gd = _ray(o0, Mo, Md, G, r // width, r % width)
        t, t_end = _box(go, gd, nx, ny, nz)
        if t >= t_end:
            continue
        i, si, tx, dtx = _axis(go[0], gd[0], t, nx)
        j, sj, ty, dty = _axis(go[1], gd[1], t, ny)
        k, sk, tz, dtz = _axis(go[2], gd[2], t, nz)
        acc = 0.0
        while t < t_end:
            v = flat[(i * ny + j) * nz + k]
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
        out[r] = acc
    return out.reshape(height, width)


@numba.njit(parallel=True, cache=True)
def trilinear(vol, G, o0, Mo, Md, height, width, step):
    """Line integral of ``vol`` sampled trilinearly at the midpoints of equal steps <= ``step`` mm."""
    nx, ny, nz = vol.shape
    flat = vol.ravel()
    out = np.zeros(height * width, np.float32)
    for r in numba.prange(height * width):
        go, gd = _ray(o0, Mo, Md, G, r // width, r % width)
        t, t_end = _box(go, gd, nx, ny, nz)
        if t >= t_end:
            continue
        n_steps = max(int(np.ceil((t_end - t) / step)), 1)
        h = (t_end - t) / n_steps
        acc = 0.0
        for s in range(n_steps):
            tm = t + (s + 0.5) * h
            x = go[0] + gd[0] * tm - 0.5
            y = go[1] + gd[1] * tm - 0.5
            z = go[2] + gd[2] * tm - 0.5
            i0 = int(np.floor(x))
            j0 = int(np.floor(y))
            k0 = int(np.floor(z))
            fx = x - i0
            fy = y - j0
            fz = z - k0
            ia = min(max(i0, 0), nx - 1) * ny * nz
            ib = min(max(i0 + 1, 0), nx - 1) * ny * nz
            ja = min(max(j0, 0), ny - 1) * nz
            jb = min(max(j0 + 1, 0), ny - 1) * nz
            ka = min(max(k0, 0), nz - 1)
            kb = min(max(k0 + 1, 0), nz - 1)
            c00 = flat[ia + ja + ka] * (1 - fz) + flat[ia + ja + kb] * fz
            c01 = flat[ia + jb + ka] * (1 - fz) + flat[ia + jb + kb] * fz
            c10 = flat[ib + ja + ka] * (1 - fz) + flat[ib + ja + kb] * fz
            c11 = flat[ib + jb + ka] * (1 - fz) + flat[ib + jb + kb] * fz
            acc += ((c00 * (1 - fy) + c01 * fy) * (1 - fx) + (c10 * (1 - fy) + c11 * fy) * fx) * h
        out[r] = acc
    return out.reshape(height, width)


def grid_from_world(world_from_ijk: np.ndarray) -> np.ndarray:
    """The references' grid space from a volume's voxel-to-world affine: voxel ``(i, j, k)`` spans
    ``[i, i+1) x ...`` (synthex's kernels' shifted index space), so grid = ijk + 0.5."""
    shift = np.eye(4)
    shift[:3, 3] = 0.5
    return shift @ np.linalg.inv(np.asarray(world_from_ijk, np.float64))


def render(kind: str, vol: np.ndarray, grid_from_world: np.ndarray, camera, step: float | None = None) -> np.ndarray:
    """One view with the reference ``kind`` ("siddon" or "trilinear"); ``vol`` float32, C order."""
    o0, Mo, Md = (np.asarray(a, np.float64) for a in camera.ray_parameters())
    G = np.asarray(grid_from_world, np.float64)
    if kind == "siddon":
        return siddon(vol, G, o0, Mo, Md, camera.height, camera.width)
    return trilinear(vol, G, o0, Mo, Md, camera.height, camera.width, float(step))
