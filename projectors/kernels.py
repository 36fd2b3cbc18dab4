"""Ray-casting kernels (NVIDIA Warp): one source for ``cpu`` and ``cuda``.

One thread per detector pixel. Each ray is clipped to every volume's box and
walks the union of those intervals once, accumulating in the same pass

* areal density per material channel, g/cm^2 (density x path length x weight), and
* path length per labelled structure channel, mm.

Two modes:

* ``MODE_EXACT`` (Siddon/Jacobs incremental traversal): exact path length
  through every voxel, voxels piecewise constant.
* ``MODE_MARCH``: samples at the midpoints of equal steps (at most ``step`` mm)
  with trilinear interpolation of HU (labels: nearest voxel).

In exact mode the hot loop reads, per voxel, a (density, material coordinate)
pair and a structure channel that ``prepare_voxels_kernel`` computes once per
volume from the HU lookup table and the label tables: the ray walk then does no
table lookups. A scene of one volume (the common case) runs one of
``SINGLE_KERNELS``, the same walk without the event and overlap
machinery of ``project_kernel``: on the CPU that machinery's live state and
calls slowed the voxel loop by 1.5-2x (a test checks both give the same images).

Where volumes overlap, they are visited in priority order (highest first, the
order of the ``vols`` array). A volume takes the fraction ``occupancy`` of what
remains of the segment, where occupancy is the non-air fraction of its voxel;
the last active volume takes all that remains. So a tool volume displaces the
anatomy where it has material and lets it show through where it is air.

Index space used inside the kernels is *shifted* by half a voxel: voxel
``(i, j, k)`` spans ``[i, i+1) x [j, j+1) x [k, k+1)``, the box is
``[0, n]``; ``VolumeParams.grid_from_world`` maps world mm there.
"""

from typing import Any

import warp as wp

wp.config.log_level = wp.LOG_WARNING  # no banner or per-module compile messages
wp.config.enable_backward = False  # forward only: halves compile time
wp.set_module_options({"optimization_level": 3})

MAX_VOLUMES = 8
MODE_EXACT = 0
MODE_MARCH = 1
STRIP = wp.constant(64)  # rays per strip along the detector axis nearest the volume's memory order
WIDE = wp.constant(4)  # strips per tile (see strip_pixel)
TILE_RAYS = 64 * 4
NCH = 16  # material channels the single-volume kernels sum in registers (more: project_kernel)
#: register widths of the single-volume kernels: a scene takes the narrowest that holds its channels
#: (a CT's default six materials: 8, one AVX register; 8 instead of 16 is ~1.4x faster per voxel)
CHANNEL_WIDTHS = (8, NCH)

vec8 = wp.types.vector(length=MAX_VOLUMES, dtype=wp.float32)
vecw = wp.types.vector(length=NCH, dtype=wp.float32)
VEC = {8: wp.types.vector(length=8, dtype=wp.float32), NCH: vecw}


def channel_width(n_channels: int) -> int:
    """The narrowest of :data:`CHANNEL_WIDTHS` holding ``n_channels`` material channels."""
    for w in CHANNEL_WIDTHS:
        if n_channels <= w:
            return w
    raise ValueError(f"{n_channels} material channels: more than the single-volume kernels hold ({NCH})")

BIG = 1.0e30


@wp.struct
class VolumeParams:
    grid_from_world: wp.mat44  # world mm -> shifted index space
    shape: wp.vec3i
    hu_offset: int  # start of this volume in the flat HU array
    label_offset: int  # start in the flat label array, -1 if the volume has no labels
    lut_offset: int  # start of this volume's HU lookup table (density, material coordinate, occupancy)
    lut_size: int
    lut_hu_min: float
    qmap_offset: int  # material coordinate index -> material channel
    n_q: int
    label_table_offset: int  # start of label tables
    n_label_table: int  # labels >= this have no entry (material from HU, no structure)


@wp.func
def lut_lookup(lut: wp.array(dtype=wp.vec3), offset: int, size: int, hu_min: float, hu: float):
    # Linear interpolation in a 1-HU table: exact for piecewise-linear functions with integer knots.
    # (Hot-loop helpers take scalars, not the VolumeParams struct: passing the struct costs a copy.)
    x = wp.clamp(hu - hu_min, 0.0, float(size - 1) - 1.0e-3)
    i0 = int(x)
    f = x - float(i0)
    return lut[offset + i0] * (1.0 - f) + lut[offset + i0 + 1] * f


@wp.func
def voxel_index(P: VolumeParams, i: int, j: int, k: int):
    return (i * P.shape[1] + j) * P.shape[2] + k


@wp.func
def occupancy(
    e: wp.vec3,
    label: int,
    lt_off: int,
    n_lt: int,
    label_ints: wp.array(dtype=wp.vec2i),
    label_floats: wp.array(dtype=wp.vec2),
):
    """Non-air fraction of a sample: from HU, or 0/1 for a label that sets the material."""
    occ = e[2]
    if label >= 0 and label < n_lt:
        if label_ints[lt_off + label][0] >= 0:
            occ = label_floats[lt_off + label][1]
    return occ


@wp.func
def flush_material(
    key: int,
    s_lo: float,
    s_hi: float,
    q_off: int,
    n_q: int,
    qmap: wp.array(dtype=wp.int32),
    row: int,
    col: int,
    out_mat: wp.array3d(dtype=wp.float32),
):
    """Write material slot ``key`` = int(q): an HU-map pair (lower, upper material) when key < n_q, else
    label-assigned material channel key - n_q."""
    if key >= n_q:
        ch = key - n_q
        out_mat[ch, row, col] = out_mat[ch, row, col] + s_lo
    elif key >= 0:
        ch = qmap[q_off + key]
        out_mat[ch, row, col] = out_mat[ch, row, col] + s_lo
        if s_hi != 0.0:
            ch1 = qmap[q_off + wp.min(key + 1, n_q - 1)]
            out_mat[ch1, row, col] = out_mat[ch1, row, col] + s_hi


@wp.func
def deposit(
    q_off: int,
    n_q: int,
    lt_off: int,
    n_lt: int,
    e: wp.vec3,
    label: int,
    length_mm: float,
    factor: float,
    qmap: wp.array(dtype=wp.int32),
    label_ints: wp.array(dtype=wp.vec2i),
    label_floats: wp.array(dtype=wp.vec2),
    row: int,
    col: int,
    out_mat: wp.array3d(dtype=wp.float32),
    out_struct: wp.array3d(dtype=wp.float32),
):
    """Add ``length_mm`` x ``factor`` of a sample with LUT entry ``e`` = (density, q, occupancy) to the outputs.

    Used where volumes overlap (rare), so it writes straight to memory; the
    single-volume hot loop in ``project_kernel`` does the same inline.
    """
    density = e[0]
    q = e[1]
    mat = int(-1)
    if label >= 0 and label < n_lt:
        li = label_ints[lt_off + label]
        if li[1] >= 0:
            out_struct[li[1], row, col] = out_struct[li[1], row, col] + length_mm * factor
        if li[0] >= 0:
            mat = li[0]
            lf = label_floats[lt_off + label]
            if lf[0] >= 0.0:
                density = lf[0]
    mass = density * length_mm * 0.1 * factor  # g/cm^3 * cm
    if mat >= 0:
        out_mat[mat, row, col] = out_mat[mat, row, col] + mass
    else:
        lo = wp.min(int(q), n_q - 1)
        fr = q - float(lo)
        flush_material(lo, mass * (1.0 - fr), mass * fr, q_off, n_q, qmap, row, col, out_mat)


@wp.func
def nearest_voxel(P: VolumeParams, g: wp.vec3):
    i = wp.clamp(int(wp.floor(g[0])), 0, P.shape[0] - 1)
    j = wp.clamp(int(wp.floor(g[1])), 0, P.shape[1] - 1)
    k = wp.clamp(int(wp.floor(g[2])), 0, P.shape[2] - 1)
    return wp.vec3i(i, j, k)


@wp.func
def label_at(P: VolumeParams, labels: wp.array(dtype=wp.int32), v: wp.vec3i):
    if P.label_offset < 0:
        return int(-1)
    return labels[P.label_offset + voxel_index(P, v[0], v[1], v[2])]


@wp.func
def trilinear_hu(P: VolumeParams, hu: wp.array(dtype=wp.float32), g: wp.vec3):
    # voxel centres sit at integer + 0.5 in the shifted grid; replicate edges
    x = g - wp.vec3(0.5, 0.5, 0.5)
    i0 = int(wp.floor(x[0]))
    j0 = int(wp.floor(x[1]))
    k0 = int(wp.floor(x[2]))
    fx = x[0] - float(i0)
    fy = x[1] - float(j0)
    fz = x[2] - float(k0)
    ia = wp.clamp(i0, 0, P.shape[0] - 1)
    ib = wp.clamp(i0 + 1, 0, P.shape[0] - 1)
    ja = wp.clamp(j0, 0, P.shape[1] - 1)
    jb = wp.clamp(j0 + 1, 0, P.shape[1] - 1)
    ka = wp.clamp(k0, 0, P.shape[2] - 1)
    kb = wp.clamp(k0 + 1, 0, P.shape[2] - 1)
    o = P.hu_offset
    c000 = hu[o + voxel_index(P, ia, ja, ka)]
    c001 = hu[o + voxel_index(P, ia, ja, kb)]
    c010 = hu[o + voxel_index(P, ia, jb, ka)]
    c011 = hu[o + voxel_index(P, ia, jb, kb)]
    c100 = hu[o + voxel_index(P, ib, ja, ka)]
    c101 = hu[o + voxel_index(P, ib, ja, kb)]
    c110 = hu[o + voxel_index(P, ib, jb, ka)]
    c111 = hu[o + voxel_index(P, ib, jb, kb)]
    c00 = c000 * (1.0 - fz) + c001 * fz
    c01 = c010 * (1.0 - fz) + c011 * fz
    c10 = c100 * (1.0 - fz) + c101 * fz
    c11 = c110 * (1.0 - fz) + c111 * fz
    c0 = c00 * (1.0 - fy) + c01 * fy
    c1 = c10 * (1.0 - fy) + c11 * fy
    return c0 * (1.0 - fx) + c1 * fx


@wp.func
def strip_pixel(tid: int, tile0: int, width: int, along_rows: int):
    """Detector (row, col) of thread ``tid``: threads walk the detector in tiles of STRIP x WIDE pixels,
    STRIP consecutive rays along the detector axis (rows if ``along_rows``, else columns) that is closest
    to the volume's contiguous memory axis, so that consecutive rays on one CPU core (or in one GPU
    warp) read the same cache lines."""
    per_tile = STRIP * WIDE
    tile = tid // per_tile
    within = tid - tile * per_tile
    tile = tile + tile0
    a = within % STRIP
    b = within // STRIP
    row = int(0)
    col = int(0)
    if along_rows != 0:
        tiles_x = (width + WIDE - 1) // WIDE
        ty = tile // tiles_x
        row = ty * STRIP + a
        col = (tile - ty * tiles_x) * WIDE + b
    else:
        tiles_x = (width + STRIP - 1) // STRIP
        ty = tile // tiles_x
        row = ty * WIDE + b
        col = (tile - ty * tiles_x) * STRIP + a
    return row, col


@wp.func
def table_weights(quad: wp.array(dtype=Any), x: float):
    """Per-channel weights at fractional table position ``x`` = HU - hu_min.

    Between whole HU both the density and the material weights are linear (their knots are whole
    HU), so each channel's weight, their product, is a quadratic: ``quad[3 i : 3 i + 3]`` holds its
    coefficients (a, b, c) on [i, i + 1], weight = a + (b + c f) f. This is exactly what
    ``project_kernel`` computes from interpolated (density, material coordinate). No clamp: the
    table spans the volume's HU range, and voxel values and their interpolations stay inside it.
    """
    i0 = int(x)
    f = x - float(i0)
    return quad[3 * i0] + (quad[3 * i0 + 1] + quad[3 * i0 + 2] * f) * f


@wp.func
def march_start(go: wp.vec3, gd: wp.vec3, t: float, hstep: float):
    """Grid position of the first step's midpoint and the step between midpoints: sample k (from 0) of a
    march from ``t`` in equal steps ``hstep`` lies at ``g1 + dg * k`` (both kernels: the same points)."""
    return go + gd * (t + 0.5 * hstep), gd * hstep


@wp.func
def pixel_ray(o0: wp.vec3, Mo: wp.mat33, Md: wp.mat33, row: int, col: int):
    """World origin and unit direction of the ray through detector pixel (row, col)."""
    h = wp.vec3(float(col), float(row), 1.0)
    return o0 + wp.mul(Mo, h), wp.normalize(wp.mul(Md, h))


@wp.func
def box_interval(go: wp.vec3, gd: wp.vec3, shape: wp.vec3i):
    """Ray-parameter interval (t_in, t_out) inside the grid box [0, shape] (empty when t_in >= t_out)."""
    iv = slab(go[0], gd[0], float(shape[0]), 0.0, float(BIG))
    iv = slab(go[1], gd[1], float(shape[1]), iv[0], iv[1])
    return slab(go[2], gd[2], float(shape[2]), iv[0], iv[1])


@wp.func
def dda_next(i: int, s: int, g0: float, inv: float):
    """Ray parameter of the next voxel boundary along one axis (stepping ``s`` from voxel ``i``)."""
    if s > 0:
        return (float(i + 1) - g0) * inv
    if s < 0:
        return (float(i) - g0) * inv
    return BIG


@wp.func
def dda_axis(p: float, g0: float, gd: float, n: int):
    """Start voxel, step, next boundary and 1/direction along one axis for a ray at grid position ``p``."""
    i = int(0)
    s = int(0)
    inv = float(0.0)
    if gd > 0.0:
        i = wp.clamp(int(wp.floor(p)), 0, n - 1)
        s = 1
        inv = 1.0 / gd
    elif gd < 0.0:
        i = wp.clamp(int(wp.ceil(p)) - 1, 0, n - 1)
        s = -1
        inv = 1.0 / gd
    else:
        i = wp.clamp(int(wp.floor(p)), 0, n - 1)
    return i, s, dda_next(i, s, g0, inv), inv


@wp.func
def slab(o: float, d: float, n: float, a: float, b: float):
    # clip [a, b] to the parameter range where o + t d lies in [0, n]
    if d == 0.0:
        if o < 0.0 or o > n:
            return wp.vec2(1.0, 0.0)
        return wp.vec2(a, b)
    inv = 1.0 / d
    t0 = (0.0 - o) * inv
    t1 = (n - o) * inv
    return wp.vec2(wp.max(a, wp.min(t0, t1)), wp.min(b, wp.max(t0, t1)))


@wp.func
def sample_volumes(
    vols: wp.array(dtype=VolumeParams),
    n_vol: int,
    first: int,
    tin: vec8,
    tout: vec8,
    t: float,
    length_mm: float,
    remaining: float,
    mode: int,
    o: wp.vec3,
    d: wp.vec3,
    hu: wp.array(dtype=wp.float32),
    labels: wp.array(dtype=wp.int32),
    lut: wp.array(dtype=wp.vec3),
    qmap: wp.array(dtype=wp.int32),
    label_ints: wp.array(dtype=wp.vec2i),
    label_floats: wp.array(dtype=wp.vec2),
    row: int,
    col: int,
    out_mat: wp.array3d(dtype=wp.float32),
    out_struct: wp.array3d(dtype=wp.float32),
):
    """Share ``remaining`` of a segment centred at ``t`` among volumes ``first..`` in priority order."""
    rem = remaining
    last = int(-1)  # the last active volume takes all that remains
    for v in range(first, n_vol):
        if tin[v] <= t and t < tout[v]:
            last = v
    for v in range(first, n_vol):
        if rem > 0.0 and tin[v] <= t and t < tout[v]:
            P = vols[v]
            g = wp.transform_point(P.grid_from_world, o + d * t)
            vox = nearest_voxel(P, g)
            h = float(0.0)
            if mode == 1:
                h = trilinear_hu(P, hu, g)
            else:
                h = hu[P.hu_offset + voxel_index(P, vox[0], vox[1], vox[2])]
            lab = label_at(P, labels, vox)
            e = lut_lookup(lut, P.lut_offset, P.lut_size, P.lut_hu_min, h)
            share = rem
            if v != last:
                share = rem * occupancy(e, lab, P.label_table_offset, P.n_label_table, label_ints, label_floats)
            if share > 0.0:
                deposit(P.qmap_offset, P.n_q, P.label_table_offset, P.n_label_table, e, lab, length_mm, share, qmap, label_ints, label_floats, row, col, out_mat, out_struct)
            rem = rem - share


@wp.kernel
def project_kernel(
    vols: wp.array(dtype=VolumeParams),
    n_vol: int,
    hu: wp.array(dtype=wp.float32),
    labels: wp.array(dtype=wp.int32),
    lut: wp.array(dtype=wp.vec3),
    qmap: wp.array(dtype=wp.int32),
    label_ints: wp.array(dtype=wp.vec2i),
    label_floats: wp.array(dtype=wp.vec2),
    voxel_dq: wp.array(dtype=wp.vec2),
    voxel_struct: wp.array(dtype=wp.int32),
    o0: wp.vec3,
    Mo: wp.mat33,
    Md: wp.mat33,
    tile0: int,
    along_rows: int,
    mode: int,
    step: float,
    out_mat: wp.array3d(dtype=wp.float32),
    out_struct: wp.array3d(dtype=wp.float32),
):
    row, col = strip_pixel(wp.tid(), tile0, out_mat.shape[2], along_rows)
    if row >= out_mat.shape[1] or col >= out_mat.shape[2]:
        return
    o, d = pixel_ray(o0, Mo, Md, row, col)

    tin = vec8()
    tout = vec8()
    t_lo = float(BIG)
    t_hi = float(-BIG)
    for v in range(n_vol):
        P = vols[v]
        go = wp.transform_point(P.grid_from_world, o)
        gd = wp.transform_vector(P.grid_from_world, d)
        iv = box_interval(go, gd, P.shape)
        tin[v] = iv[0]
        tout[v] = iv[1]
        if iv[0] < iv[1]:
            t_lo = wp.min(t_lo, iv[0])
            t_hi = wp.max(t_hi, iv[1])
    if t_lo >= t_hi:
        return

    # Walk the events (volume entries/exits) along the ray. Between events the
    # highest-priority active volume ("top") is traversed: exact mode steps
    # voxel by voxel (Siddon/Jacobs), march mode in equal steps <= `step`.
    # Where only one volume is active (nearly always) the contribution is
    # accumulated inline in registers: this loop is the projector's hot path,
    # so it calls no functions that take arrays (Warp passes them by value).
    key = int(-1)  # material slot int(q): HU-map coordinate index, or n_q + label material channel
    s_lo = float(0.0)
    s_hi = float(0.0)
    skey = int(-1)  # structure slot
    s_len = float(0.0)
    t = t_lo
    while t < t_hi:
        top = int(-1)
        n_active = int(0)
        t_evt = t_hi
        for v in range(n_vol):
            if tin[v] < tout[v]:
                if tin[v] > t:
                    t_evt = wp.min(t_evt, tin[v])
                elif tout[v] > t:
                    t_evt = wp.min(t_evt, tout[v])
                    n_active = n_active + 1
                    if top < 0:
                        top = v
        if top >= 0:
            P = vols[top]
            nx = P.shape[0]
            ny = P.shape[1]
            nz = P.shape[2]
            hu_off = P.hu_offset
            lab_off = P.label_offset
            lut_off = P.lut_offset
            lut_xmax = float(P.lut_size - 1) - 1.0e-3
            lut_min = P.lut_hu_min
            q_off = P.qmap_offset
            n_q = P.n_q
            lt_off = P.label_table_offset
            n_lt = P.n_label_table
            go = wp.transform_point(P.grid_from_world, o)
            gd = wp.transform_vector(P.grid_from_world, d)
            p = go + gd * t
            ix, sx, tx, ivx = dda_axis(p[0], go[0], gd[0], nx)
            iy, sy, ty, ivy = dda_axis(p[1], go[1], gd[1], ny)
            iz, sz, tz, ivz = dda_axis(p[2], go[2], gd[2], nz)
            lin = (ix * ny + iy) * nz + iz
            n_steps = int(wp.ceil((t_evt - t) / step))
            hstep = (t_evt - t) / float(wp.max(n_steps, 1))
            g1, dg = march_start(go, gd, t, hstep)
            k = int(0)
            tc = t
            done = int(0)
            while done == 0:
                seg = float(0.0)
                h_v = float(0.0)
                lab = int(-1)
                lin_v = int(0)
                tnew = float(0.0)
                if mode == 0:
                    # -- exact: the voxel `lin` from tc to the next plane crossing
                    ax = int(2)
                    tn = tz
                    if tx <= ty and tx <= tz:
                        ax = 0
                        tn = tx
                    elif ty <= tz:
                        ax = 1
                        tn = ty
                    tnew = wp.min(tn, t_evt)
                    seg = tnew - tc
                    lin_v = lin
                    if tn >= t_evt:
                        done = 1
                    elif ax == 0:
                        ix = ix + sx
                        lin = lin + sx * ny * nz
                        tx = dda_next(ix, sx, go[0], ivx)
                        if ix < 0 or ix >= nx:
                            done = 1
                    elif ax == 1:
                        iy = iy + sy
                        lin = lin + sy * nz
                        ty = dda_next(iy, sy, go[1], ivy)
                        if iy < 0 or iy >= ny:
                            done = 1
                    else:
                        iz = iz + sz
                        lin = lin + sz
                        tz = dda_next(iz, sz, go[2], ivz)
                        if iz < 0 or iz >= nz:
                            done = 1
                else:
                    # -- march: trilinear HU at the step midpoint (edges replicated), nearest label;
                    # the same interpolation as trilinear_hu(), inlined: wp.func calls copy their array arguments
                    g = g1 + dg * float(k)
                    k = k + 1
                    tnew = t + float(k) * hstep
                    seg = hstep
                    if k >= n_steps:
                        done = 1
                    xf = g[0] - 0.5
                    yf = g[1] - 0.5
                    zf = g[2] - 0.5
                    i0 = int(wp.floor(xf))
                    j0 = int(wp.floor(yf))
                    k0 = int(wp.floor(zf))
                    fx = xf - float(i0)
                    fy = yf - float(j0)
                    fz = zf - float(k0)
                    ia = wp.clamp(i0, 0, nx - 1) * ny * nz
                    ib = wp.clamp(i0 + 1, 0, nx - 1) * ny * nz
                    ja = wp.clamp(j0, 0, ny - 1) * nz
                    jb = wp.clamp(j0 + 1, 0, ny - 1) * nz
                    ka = wp.clamp(k0, 0, nz - 1)
                    kb = wp.clamp(k0 + 1, 0, nz - 1)
                    c00 = hu[hu_off + ia + ja + ka] * (1.0 - fz) + hu[hu_off + ia + ja + kb] * fz
                    c01 = hu[hu_off + ia + jb + ka] * (1.0 - fz) + hu[hu_off + ia + jb + kb] * fz
                    c10 = hu[hu_off + ib + ja + ka] * (1.0 - fz) + hu[hu_off + ib + ja + kb] * fz
                    c11 = hu[hu_off + ib + jb + ka] * (1.0 - fz) + hu[hu_off + ib + jb + kb] * fz
                    h_v = (c00 * (1.0 - fy) + c01 * fy) * (1.0 - fx) + (c10 * (1.0 - fy) + c11 * fy) * fx
                    if lab_off >= 0:
                        ln = (wp.clamp(int(wp.floor(g[0])), 0, nx - 1) * ny + wp.clamp(int(wp.floor(g[1])), 0, ny - 1)) * nz
                        lab = labels[lab_off + ln + wp.clamp(int(wp.floor(g[2])), 0, nz - 1)]
                if seg > 0.0:
                    if n_active == 1:
                        density = float(0.0)
                        q = float(0.0)
                        sk = int(-1)
                        if mode == 0:
                            # -- exact: the voxel's precomputed (density, material coordinate) and structure
                            e2 = voxel_dq[hu_off + lin_v]
                            density = e2[0]
                            q = e2[1]
                            if lab_off >= 0:
                                sk = voxel_struct[lab_off + lin_v]
                        else:
                            # -- march: LUT (density, material coordinate) of the interpolated HU, label overrides
                            x = wp.clamp(h_v - lut_min, 0.0, lut_xmax)
                            li0 = int(x)
                            lf0 = x - float(li0)
                            e = lut[lut_off + li0] * (1.0 - lf0) + lut[lut_off + li0 + 1] * lf0
                            density = e[0] * 0.1
                            q = e[1]
                            if lab >= 0 and lab < n_lt:
                                li = label_ints[lt_off + lab]
                                sk = li[1]
                                if li[0] >= 0:
                                    q = float(n_q + li[0])
                                    lfl = label_floats[lt_off + lab]
                                    if lfl[0] >= 0.0:
                                        density = lfl[0] * 0.1
                        if sk >= 0:
                            if sk != skey:
                                if skey >= 0:
                                    out_struct[skey, row, col] = out_struct[skey, row, col] + s_len
                                skey = sk
                                s_len = 0.0
                            s_len = s_len + seg
                        newkey = int(q)
                        fr = q - float(newkey)
                        if newkey != key:
                            flush_material(key, s_lo, s_hi, q_off, n_q, qmap, row, col, out_mat)
                            key = newkey
                            s_lo = 0.0
                            s_hi = 0.0
                        mass = density * seg  # (g/cm^3 x 0.1 cm/mm) x mm
                        s_lo = s_lo + mass * (1.0 - fr)
                        s_hi = s_hi + mass * fr
                    else:
                        sample_volumes(
                            vols, n_vol, 0, tin, tout, tnew - 0.5 * seg, seg, 1.0, mode, o, d,
                            hu, labels, lut, qmap, label_ints, label_floats, row, col, out_mat, out_struct,
                        )
                tc = tnew
            # the material slot's HU coordinate belongs to this volume: flush before the next interval
            flush_material(key, s_lo, s_hi, q_off, n_q, qmap, row, col, out_mat)
            key = -1
            s_lo = 0.0
            s_hi = 0.0
        t = t_evt
    if skey >= 0:
        out_struct[skey, row, col] = out_struct[skey, row, col] + s_len


@wp.kernel
def prepare_voxels_kernel(
    P: VolumeParams,
    hu: wp.array(dtype=wp.float32),
    labels: wp.array(dtype=wp.int32),
    lut: wp.array(dtype=wp.vec3),
    label_ints: wp.array(dtype=wp.vec2i),
    label_floats: wp.array(dtype=wp.vec2),
    voxel_dq: wp.array(dtype=wp.vec2),
    voxel_struct: wp.array(dtype=wp.int32),
):
    """Per voxel of one volume, what exact mode reads in its hot loop (so it needs no lookup tables).

    ``voxel_dq`` = (density x 0.1 (g/cm^3 per cm/mm), material slot coordinate q): q < n_q is the HU
    map's coordinate (lower material ``int(q)``, weight ``q - int(q)`` on the next), q = n_q + c a
    label-assigned material channel c. ``voxel_struct`` = structure channel or -1 (labelled volumes).
    """
    lin = wp.tid()
    e = lut_lookup(lut, P.lut_offset, P.lut_size, P.lut_hu_min, hu[P.hu_offset + lin])
    density = e[0]
    q = wp.clamp(e[1], 0.0, float(P.n_q - 1))
    sk = int(-1)
    if P.label_offset >= 0:
        lab = labels[P.label_offset + lin]
        if lab >= 0 and lab < P.n_label_table:
            li = label_ints[P.label_table_offset + lab]
            sk = li[1]
            if li[0] >= 0:
                q = float(P.n_q + li[0])
                lf = label_floats[P.label_table_offset + lab]
                if lf[0] >= 0.0:
                    density = lf[0]
        voxel_struct[P.label_offset + lin] = sk
    voxel_dq[P.hu_offset + lin] = wp.vec2(density * 0.1, q)


# ---------------------------------------------------------------------------------------------
# One volume (the common case): ``SINGLE_KERNELS``
#
# Everything a voxel contributes is read from a table of per-channel weights, so the walk keeps
# NCH running sums in registers (one SIMD register on the CPU) and has no per-voxel branches on
# the data: ``table[h]`` (a vector of NCH floats) is the areal density per mm, in g/cm^2, that a
# voxel of whole HU value ``hu_min + h`` adds to each material channel (density x 0.1 cm/mm split
# by the HU map's material weights). Between whole HU the table is interpolated linearly: for
# fractional HU (and trilinear samples) this is the piecewise-linear interpolation of each
# channel's weight function at 1 HU knots.


def _single_kernel(mode: int, indexed: bool, with_labels: bool, width: int):
    """Kernel for a scene of ONE volume; the same images as ``project_kernel`` (tests compare them).

    ``mode``: MODE_EXACT (Siddon/Jacobs) or MODE_MARCH (trilinear samples at step midpoints).
    ``indexed``: the volume's voxels are a 2-byte index ``HU - hu_min`` (integer-HU CTs) instead of
    float32 HU. ``with_labels``: a 2-byte label per voxel: structure path lengths, label materials.
    An indexed labelled volume is one array of 4 bytes per voxel, ``index | label << 16`` (``vox``):
    the walk then reads one cache line per voxel instead of two, ~25 % of a labelled exact walk on the
    CPU (the chest CT: 127 -> 96 ms a 256^2 view on one core; 70 ms without labels).
    ``width``: material channels summed in registers (:data:`CHANNEL_WIDTHS`).
    """
    exact = mode == MODE_EXACT
    packed = indexed and with_labels
    vt = VEC[width]

    def project_single(
        P: VolumeParams,
        vox: wp.array(dtype=wp.uint32 if packed else wp.uint16),
        vox32: wp.array(dtype=wp.float32),
        labels: wp.array(dtype=wp.uint16),
        table: wp.array(dtype=vt),
        quad: wp.array(dtype=vt),
        label_info: wp.array(dtype=wp.vec2i),
        label_density: wp.array(dtype=wp.float32),
        onehot: wp.array(dtype=vt),
        n_ch: int,
        o0: wp.vec3,
        Mo: wp.mat33,
        Md: wp.mat33,
        tile0: int,
        along_rows: int,
        step: float,
        out_mat: wp.array3d(dtype=wp.float32),
        out_struct: wp.array3d(dtype=wp.float32),
    ):
        row, col = strip_pixel(wp.tid(), tile0, out_mat.shape[2], along_rows)
        if row >= out_mat.shape[1] or col >= out_mat.shape[2]:
            return
        o, d = pixel_ray(o0, Mo, Md, row, col)
        nx = P.shape[0]
        ny = P.shape[1]
        nz = P.shape[2]
        go = wp.transform_point(P.grid_from_world, o)
        gd = wp.transform_vector(P.grid_from_world, d)
        iv = box_interval(go, gd, P.shape)
        t = iv[0]
        t_end = iv[1]
        if t >= t_end:
            return
        hu_min = P.lut_hu_min
        n_lt = P.n_label_table
        acc = vt()  # areal density per channel, g/cm^2
        skey = int(-1)  # structure channel being accumulated, and its path length (mm)
        s_len = float(0.0)
        if wp.static(exact):
            p = go + gd * t
            ix, sx, tx, ivx = dda_axis(p[0], go[0], gd[0], nx)
            iy, sy, ty, ivy = dda_axis(p[1], go[1], gd[1], ny)
            iz, sz, tz, ivz = dda_axis(p[2], go[2], gd[2], nz)
            # plane coordinate of each axis' next crossing (whole numbers, exact in float32)
            px = float(ix + wp.where(sx > 0, 1, 0))
            py = float(iy + wp.where(sy > 0, 1, 0))
            pz = float(iz + wp.where(sz > 0, 1, 0))
            fsx = float(sx)
            fsy = float(sy)
            fsz = float(sz)
            lx = sx * ny * nz
            ly = sy * nz
            lin = (ix * ny + iy) * nz + iz
            last = nx * ny * nz - 1
            while t < t_end:
                # voxel `v` from t to the next plane crossing (Siddon/Jacobs). Rounding can step an
                # index past the box within float precision of t_end: the clamp keeps it in bounds.
                v = wp.clamp(lin, 0, last)
                w = vt()
                lab = int(0)
                if wp.static(packed):
                    x = int(vox[v])  # (as int32 a label >= 32768 turns negative: the masks undo it)
                    w = table[x & 65535]
                    lab = (x >> 16) & 65535
                elif wp.static(indexed):
                    w = table[int(vox[v])]
                else:
                    w = table_weights(quad, vox32[v] - hu_min)
                tn = tz
                if tx <= ty and tx <= tz:
                    tn = tx
                    lin = lin + lx
                    px = px + fsx
                    tx = (px - go[0]) * ivx
                elif ty <= tz:
                    tn = ty
                    lin = lin + ly
                    py = py + fsy
                    ty = (py - go[1]) * ivy
                else:
                    lin = lin + sz
                    pz = pz + fsz
                    tz = (pz - go[2]) * ivz
                tn = wp.where(tn < t_end, tn, t_end)  # (wp.min also handles NaN: 3 more instructions a voxel)
                seg = tn - t
                t = tn
                if wp.static(with_labels):
                    if wp.static(not packed):
                        lab = int(labels[v])
                    if lab < n_lt:
                        li = label_info[lab]
                        if li[0] >= 0:  # a label material: all of the voxel's mass goes to channel li[0]
                            dens = label_density[lab]
                            if dens < 0.0:
                                dens = wp.dot(w, vt(1.0))  # density x 0.1 from HU
                            w = onehot[li[0]] * dens
                        if li[1] >= 0:
                            if li[1] != skey:
                                if skey >= 0:
                                    out_struct[skey, row, col] = out_struct[skey, row, col] + s_len
                                skey = li[1]
                                s_len = 0.0
                            s_len = s_len + seg
                acc = acc + w * seg
        else:
            n_steps = int(wp.ceil((t_end - t) / step))
            hstep = (t_end - t) / float(wp.max(n_steps, 1))
            g1, dg = march_start(go, gd, t, hstep)
            cell = int(-1)  # the cell whose 8 corner values are held (about half the samples reuse it)
            v000 = float(0.0)
            v001 = float(0.0)
            v010 = float(0.0)
            v011 = float(0.0)
            v100 = float(0.0)
            v101 = float(0.0)
            v110 = float(0.0)
            v111 = float(0.0)
            for k in range(n_steps):
                # trilinear value at the step midpoint (edges replicated), nearest label: as project_kernel
                g = g1 + dg * float(k)
                xf = g[0] - 0.5
                yf = g[1] - 0.5
                zf = g[2] - 0.5
                i0 = int(xf + 1.0) - 1  # floor for xf > -1 (samples lie inside the box)
                j0 = int(yf + 1.0) - 1
                k0 = int(zf + 1.0) - 1
                fx = xf - float(i0)
                fy = yf - float(j0)
                fz = zf - float(k0)
                key = ((i0 + 1) * (ny + 1) + (j0 + 1)) * (nz + 1) + (k0 + 1)
                if key != cell:
                    cell = key
                    ia = wp.clamp(i0, 0, nx - 1) * ny * nz
                    ib = wp.clamp(i0 + 1, 0, nx - 1) * ny * nz
                    ja = wp.clamp(j0, 0, ny - 1) * nz
                    jb = wp.clamp(j0 + 1, 0, ny - 1) * nz
                    ka = wp.clamp(k0, 0, nz - 1)
                    kb = wp.clamp(k0 + 1, 0, nz - 1)
                    if wp.static(indexed):  # in index units: HU - hu_min (the mask drops a packed label)
                        v000 = float(int(vox[ia + ja + ka]) & 65535)
                        v001 = float(int(vox[ia + ja + kb]) & 65535)
                        v010 = float(int(vox[ia + jb + ka]) & 65535)
                        v011 = float(int(vox[ia + jb + kb]) & 65535)
                        v100 = float(int(vox[ib + ja + ka]) & 65535)
                        v101 = float(int(vox[ib + ja + kb]) & 65535)
                        v110 = float(int(vox[ib + jb + ka]) & 65535)
                        v111 = float(int(vox[ib + jb + kb]) & 65535)
                    else:
                        v000 = vox32[ia + ja + ka]
                        v001 = vox32[ia + ja + kb]
                        v010 = vox32[ia + jb + ka]
                        v011 = vox32[ia + jb + kb]
                        v100 = vox32[ib + ja + ka]
                        v101 = vox32[ib + ja + kb]
                        v110 = vox32[ib + jb + ka]
                        v111 = vox32[ib + jb + kb]
                c00 = v000 * (1.0 - fz) + v001 * fz
                c01 = v010 * (1.0 - fz) + v011 * fz
                c10 = v100 * (1.0 - fz) + v101 * fz
                c11 = v110 * (1.0 - fz) + v111 * fz
                h = (c00 * (1.0 - fy) + c01 * fy) * (1.0 - fx) + (c10 * (1.0 - fy) + c11 * fy) * fx
                if wp.static(not indexed):
                    h = h - hu_min
                w = table_weights(quad, h)
                if wp.static(with_labels):
                    ln = (wp.clamp(int(g[0]), 0, nx - 1) * ny + wp.clamp(int(g[1]), 0, ny - 1)) * nz
                    lab = int(0)
                    if wp.static(packed):
                        lab = (int(vox[ln + wp.clamp(int(g[2]), 0, nz - 1)]) >> 16) & 65535
                    else:
                        lab = int(labels[ln + wp.clamp(int(g[2]), 0, nz - 1)])
                    if lab < n_lt:
                        li = label_info[lab]
                        if li[0] >= 0:
                            dens = label_density[lab]
                            if dens < 0.0:
                                dens = wp.dot(w, vt(1.0))
                            w = onehot[li[0]] * dens
                        if li[1] >= 0:
                            if li[1] != skey:
                                if skey >= 0:
                                    out_struct[skey, row, col] = out_struct[skey, row, col] + s_len
                                skey = li[1]
                                s_len = 0.0
                            s_len = s_len + hstep
                acc = acc + w  # times hstep once, after the loop (equal steps)
            acc = acc * hstep
        for c in range(n_ch):
            out_mat[c, row, col] = acc[c]
        if skey >= 0:
            out_struct[skey, row, col] = out_struct[skey, row, col] + s_len

    name = f"project_single_{'exact' if exact else 'march'}_{'u16' if indexed else 'f32'}{'_labels' if with_labels else ''}_w{width}"
    return wp.Kernel(project_single, key=name)


#: (mode, indexed, with_labels, width) -> kernel for a scene of one volume
SINGLE_KERNELS = {
    (mode, idx, lab, width): _single_kernel(mode, idx, lab, width)
    for mode in (MODE_EXACT, MODE_MARCH)
    for idx in (False, True)
    for lab in (False, True)
    for width in CHANNEL_WIDTHS
}
