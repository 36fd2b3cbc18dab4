"""Projector speed, measured fairly: synthex vs plain compiled references vs DiffDRR, side by side.

    python benchmarks/speed.py                  # the comparison on the CPU -> results/speed.json
    python benchmarks/speed.py --quick          # synthetic 256^3 only, one round
    python benchmarks/speed.py --device cuda    # device sweep -> results/speed_device_cuda.json
    python benchmarks/speed.py --device cpu     # the same sweep on the CPU (same code path)
    python benchmarks/speed.py --markdown       # tables of the recorded results (for the docs)

**Comparison** (default). Cases: a synthetic 256^3 CT at 1 mm (integer HU, as
scanners store them) -> 256^2 detector; the same with fractional HU ("-float",
the projector's float32 path); a synthetic 512^3 CT at 0.5 mm -> 512^2; the
shared real chest CT (512 x 512 x 133) -> 512^2. Engines, each in its own
subprocess (so peak memory is its own), all on every core:

* synthex exact (Siddon/Jacobs, every material channel) and trilinear (0.5 mm step);
* plain compiled references of the same two algorithms, one channel
  (``benchmarks/reference_numba.py``, numba ``prange`` over pixels);
* DiffDRR 0.6.1 (when ``--diffdrr-python`` exists; create it with
  ``../shared/tools/diffdrr-venv.sh .venv-diffdrr``): its Siddon and its
  trilinear renderer at the same 0.5 mm step (``n_points`` chosen so), plain
  and ``torch.compile``'d, each with the volume in both memory orders (DiffDRR
  samples ``volume.permute(2, 1, 0)``: x-fastest order is its fast layout); the
  table compares with the faster layout and lists both.

Every engine renders the same five poses, gets the same density (DeepDRR's
HU -> g/cm^3, synthex's default) and must produce the same line integrals: the
relative L2 difference of each engine's image to synthex's is recorded (Siddon
engines ~1e-6; trilinear ones ~1e-3, since synthex interpolates HU and the
references interpolate density). The machine is shared, so each engine
renders the poses in several passes, and each pose counts with its fastest
time (wall, and process CPU time of all threads), in each of ``--rounds``
interleaved rounds (the fastest round kept); reported besides: the median
pass, the cores it kept busy, peak RSS, and the machine load during its run
(load average, and the share of the CPUs busy with other processes, from
/proc/stat). Read ratios, and only those measured in the same run; the CPU
time ratio is the steadier one. ``--markdown`` prints the tables of the
recorded results/speed.json.

**Device sweep** (``--device``): synthex exact and trilinear DRR/s and
ray-samples/s for 256^3 and 512^3 volumes at 256^2, 512^2 and 1024^2
detectors, an image-equality check of the device against the CPU, and the
Monte Carlo scatter kernel's photons/s on the device and the CPU. On CUDA, a
plain numba.cuda kernel of each algorithm (``benchmarks/reference_numba_cuda.py``:
one channel, one thread per pixel, float32) renders the same rays side by side;
synthex returns six material channels to the host per DRR, the reference one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from synthex.shared_data import shared_data  # noqa: E402
RESULTS = REPO / "benchmarks" / "results"
POSES = [(0.0, 0.0), (15.0, 5.0), (-20.0, 10.0), (30.0, -5.0), (45.0, 0.0)]


CHEST = shared_data() / "ct" / "diffdrr_chest_ct" / "cxr.nii.gz"


# ---------------------------------------------------------------------------------------------
# cases


def synthetic_ct(n: int = 256, spacing: float = 1.0, integer_hu: bool = True,
                 rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A torso-like CT of n^3 voxels of ``spacing`` mm: body, fat layer, lungs, spine, ribs, noise.

    The anatomy is in mm (so 512^3 at 0.5 mm is 256^3 at 1 mm at twice the resolution). HU are
    whole numbers (int16), as scanners store them; ``integer_hu=False`` keeps the noise fractional
    (float32: resampled or synthetic volumes), which takes the projector's float32 path. Built in
    slabs (no n^3 temporaries), so a 512^3 volume needs its own 268 MB and little more.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    hu = np.empty((n, n, n), np.int16 if integer_hu else np.float32)
    c = (np.arange(n) - (n - 1) / 2) * spacing
    y = c[None, :, None]
    z = c[None, None, :]
    for a in range(0, n, 16):
        x = c[a : a + 16, None, None]
        s = np.full((len(x), n, n), -1000.0, np.float32)
        s[np.broadcast_to((x / 120) ** 2 + (y / 90) ** 2 <= 1, s.shape)] = -100
        s[np.broadcast_to((x / 112) ** 2 + (y / 82) ** 2 <= 1, s.shape)] = 40
        for sx in (-55, 55):
            s[((x - sx) / 42) ** 2 + (y / 55) ** 2 + (z / 100) ** 2 <= 1] = -850
        s[np.broadcast_to(np.hypot(x, y + 55) <= 14, s.shape)] = 700
        ring = np.abs(np.sqrt((x / 105) ** 2 + (y / 76) ** 2) - 1) * 90 <= 3
        s[ring & (np.mod(z, 24) < 6)] = 900
        noise = rng.normal(0, 10, s.shape).astype(np.float32)
        s += np.rint(noise) if integer_hu else noise
        hu[a : a + 16] = s
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = -(n - 1) / 2 * spacing  # centred on the world origin
    return hu, affine


CASES = {
    # name: (volume, detector pixels, pixel pitch mm, trilinear step mm)
    "synthetic256": (("synthetic", 256, 1.0, True), 256, 1.2, 0.5),
    "synthetic256-float": (("synthetic", 256, 1.0, False), 256, 1.2, 0.5),
    "synthetic512": (("synthetic", 512, 0.5, True), 512, 0.6, 0.5),
    # 1 mm steps: DiffDRR holds every sample of every ray at once (512^2 rays x ~500 samples x 12 B)
    "chest512": (("chest",), 512, 0.776, 1.0),
}


def load_volume(spec) -> tuple[np.ndarray, np.ndarray]:
    """(hu, affine (RAS mm)) of a case's volume."""
    if spec[0] == "synthetic":
        return synthetic_ct(spec[1], spec[2], integer_hu=spec[3])
    import nibabel as nib

    img = nib.load(str(CHEST))
    return np.asarray(img.dataobj), img.affine  # int16, as stored


def cameras(hu_shape, affine, pixels: int, pitch: float):
    from projectors.geometry import CArm

    centre = affine[:3, :3] @ ((np.array(hu_shape) - 1) / 2) + affine[:3, 3]
    carm = CArm(sdd=1020.0, sid=530.0, size=(pixels, pixels), pitch=pitch, isocenter=tuple(centre))
    return [carm.camera(a, b) for a, b in POSES], centre


def density(hu: np.ndarray) -> np.ndarray:
    """g/cm^3 x 0.1 cm/mm (synthex's default calibration, DeepDRR's formula) as float32, in slabs."""
    from projectors.materials import DEFAULT_HU_MATERIALS

    out = np.empty(hu.shape, np.float32)
    for a in range(0, hu.shape[0], 32):
        out[a : a + 32] = DEFAULT_HU_MATERIALS.density(hu[a : a + 32]) * 0.1
    return out


def ray_samples(hu_shape, affine, cams, mode: str, step: float = 1.0) -> float:
    """Voxels visited (exact: planes crossed + 1) or samples taken (trilinear: ceil(chord / step))
    by all rays of ``cams``, from each ray's chord through the volume's box."""
    ijk_from_world = np.linalg.inv(affine)
    total = 0.0
    for cam in cams:
        o, d = cam.rays()
        go = o @ ijk_from_world[:3, :3].T + ijk_from_world[:3, 3] + 0.5
        gd = d @ ijk_from_world[:3, :3].T
        with np.errstate(divide="ignore", invalid="ignore"):
            t0 = (0 - go) / gd
            t1 = (np.array(hu_shape) - go) / gd
        tin = np.nan_to_num(np.minimum(t0, t1), nan=-np.inf).max(-1)
        tout = np.nan_to_num(np.maximum(t0, t1), nan=np.inf).min(-1)
        length = np.maximum(tout - np.maximum(tin, 0), 0)  # mm (unit world directions)
        if mode == "exact":
            total += (np.abs(gd) * length[..., None]).sum() + (length > 0).sum()
        else:
            total += np.ceil(length / step).sum()
    return float(total)


# ---------------------------------------------------------------------------------------------
# measurement helpers (run inside the workers)


def _cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat (0, 0 where unavailable)."""
    try:
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return 0, 0
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return sum(vals) - idle, sum(vals)


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def time_passes(render, views, passes: int) -> dict:
    """Render every view ``passes`` times. The machine is shared: each view's time is its minimum over
    the passes (wall and process CPU time, all threads), DRR/s = views / the sum of those minima;
    the median pass is kept too, and the machine's load while the passes ran."""
    n = len(views)
    wall = np.full((passes, n), np.inf)
    cpu = np.full((passes, n), np.inf)
    load0 = os.getloadavg()[0]
    busy0, tot0 = _cpu_jiffies()
    cpu_all0, wall_all0 = time.process_time(), time.perf_counter()
    for p in range(passes):
        for i, v in enumerate(views):
            t0, c0 = time.perf_counter(), time.process_time()
            render(v)
            wall[p, i] = time.perf_counter() - t0
            cpu[p, i] = time.process_time() - c0
    busy1, tot1 = _cpu_jiffies()
    ours, wall_all = time.process_time() - cpu_all0, time.perf_counter() - wall_all0
    ncpu = os.cpu_count() or 1
    busy_share = (busy1 - busy0) / max(tot1 - tot0, 1)
    others = max(0.0, busy_share - ours / (wall_all * ncpu)) if tot1 > tot0 else None
    best_wall, best_cpu = wall.min(0).sum(), cpu.min(0).sum()
    return {
        "drr_per_s": n / best_wall,
        "drr_per_s_median": n / float(np.median(wall.sum(1))),
        "cpu_s_per_drr": best_cpu / n,
        "cores_busy": float(cpu.sum() / wall.sum()),
        "passes": passes,
        "load_avg_1min": [load0, os.getloadavg()[0]],
        "others_cpu_share": others,
    }


def save_image(img: np.ndarray) -> str:
    fd, path = tempfile.mkstemp(prefix="synthex-speed-", suffix=".npy")
    os.close(fd)
    np.save(path, np.asarray(img, np.float64))
    return path


# ---------------------------------------------------------------------------------------------
# workers: one engine, one case, one process; print one JSON line


def worker_synthex(case: str, mode: str, passes: int, device: str = "cpu") -> dict:
    from projectors.geometry import Transform
    from projectors.projector import Projector, cpu_threads, prepared_cache_info
    from projectors.volume import Volume

    spec, pixels, pitch, step = CASES[case]
    hu, affine = load_volume(spec)
    cams, _ = cameras(hu.shape, affine, pixels, pitch)
    rss_start = peak_rss_mb()
    vol = Volume(hu, Transform(affine))
    del hu
    t0 = time.perf_counter()
    projector = Projector(vol, mode=mode, step=step, device=device)
    setup_s = time.perf_counter() - t0
    proj = projector.project(cams[1])  # compile / load kernels
    image = save_image(proj.total_areal_density())
    timing = time_passes(projector.project, cams, passes)
    samples = ray_samples(vol.shape, affine, cams, mode, step) / len(cams)
    return {
        "engine": f"synthex {mode}", "algorithm": "siddon" if mode == "exact" else "trilinear", **timing,
        "ray_samples_per_drr": samples, "ray_samples_per_s": samples * timing["drr_per_s"],
        "peak_rss_mb": peak_rss_mb(), "rss_at_start_mb": rss_start, "setup_s": setup_s,
        "projector_bytes_per_voxel": prepared_cache_info()["bytes"] / float(np.prod(vol.shape)),
        "kernel": projector.kernel_path, "channels": len(proj.areal_density), "threads": cpu_threads(),
        "image": image,
    }


def worker_numba(case: str, algorithm: str, passes: int) -> dict:
    import numba

    sys.path.insert(0, str(REPO / "benchmarks"))
    import reference_numba as ref

    spec, pixels, pitch, step = CASES[case]
    hu, affine = load_volume(spec)
    cams, _ = cameras(hu.shape, affine, pixels, pitch)
    rss_start = peak_rss_mb()
    dens = density(hu)
    del hu
    G = ref.grid_from_world(affine)

    def render(cam):
        return ref.render(algorithm, dens, G, cam, step)

    image = save_image(render(cams[1]))  # compile
    timing = time_passes(render, cams, passes)
    samples = ray_samples(dens.shape, affine, cams, "exact" if algorithm == "siddon" else "trilinear", step) / len(cams)
    return {
        "engine": f"numba {algorithm}", "algorithm": algorithm, **timing, "ray_samples_per_drr": samples,
        "ray_samples_per_s": samples * timing["drr_per_s"], "peak_rss_mb": peak_rss_mb(),
        "rss_at_start_mb": rss_start, "channels": 1, "threads": numba.get_num_threads(), "image": image,
    }


def worker_diffdrr(case: str, variant: str, passes: int) -> dict:
    """DiffDRR 0.6.1; ``variant`` = renderer[+compile]:layout (C: z fastest, F: x fastest)."""
    import torch
    from diffdrr import renderers
    from diffdrr.data import read
    from diffdrr.drr import DRR
    from diffdrr.pose import RigidTransform
    from torchio import ScalarImage

    renderer, layout = variant.split(":")
    torch.set_num_threads(os.cpu_count() or 1)
    spec, pixels, pitch, step = CASES[case]
    hu, affine = load_volume(spec)
    cams, centre = cameras(hu.shape, affine, pixels, pitch)
    rss_start = peak_rss_mb()
    # DiffDRR's usual set-up (its read() maps HU to its own [0, 1] density), then the density every
    # engine gets: g/cm^3, integrated over mm (x 0.1 = g/cm^2), in the memory order under test
    subject = read(ScalarImage(tensor=torch.from_numpy(hu)[None], affine=affine), orientation="AP")
    cfg = cams[0].to_diffdrr(centre, orientation="AP", sdd=1020.0)
    drr = DRR(subject, sdd=cfg["sdd"], height=cfg["height"], width=cfg["width"], delx=cfg["delx"], dely=cfg["dely"],
              x0=cfg["x0"], y0=cfg["y0"], reverse_x_axis=cfg["reverse_x_axis"], renderer=renderer.split("+")[0],
              compile_renderer=renderer.endswith("+compile"))
    dens = density(hu) * 10.0
    shape = hu.shape
    del hu, subject
    drr.density = torch.from_numpy(np.asfortranarray(dens) if layout == "F" else np.ascontiguousarray(dens))
    del dens
    poses = [RigidTransform(torch.from_numpy(c.to_diffdrr(centre, orientation="AP", sdd=1020.0)["extrinsic"])
                            .to(torch.float32)[None]) for c in cams]
    kwargs = {}
    samples = ray_samples(shape, affine, cams, "exact") / len(cams)
    if renderer.startswith("trilinear"):
        # n_points spanning DiffDRR's sampling interval (all rays' union) at `step` mm
        with torch.no_grad():
            src, tgt = drr.detector(poses[0], None)
            dims = torch.tensor(shape, dtype=torch.float32)
            amin, amax = renderers._get_alpha_minmax(drr.affine_inverse(src), drr.affine_inverse(tgt), dims, 0.5, 1e-8)
            span = float((amax.max() - amin.min()) * (tgt - src).norm(dim=-1).mean())
        kwargs["n_points"] = int(np.ceil(span / step)) + 1
        samples = float(kwargs["n_points"]) * pixels * pixels  # every ray takes every sample
    with torch.no_grad():
        image = save_image(drr(poses[1], **kwargs)[0, 0].numpy().astype(np.float64) * 0.1)  # warm-up, compile
        timing = time_passes(lambda p: drr(p, **kwargs), poses, passes)
    return {
        "engine": f"DiffDRR {renderer} ({layout}-order)", "algorithm": renderer.split("+")[0], "layout": layout,
        **timing, "ray_samples_per_drr": samples, "ray_samples_per_s": samples * timing["drr_per_s"],
        "peak_rss_mb": peak_rss_mb(), "rss_at_start_mb": rss_start, "channels": 1,
        "threads": torch.get_num_threads(), "image": image, **({"n_points": kwargs["n_points"]} if kwargs else {}),
    }


def worker_reuse(case: str, n_views: int) -> dict:
    """``sx.project`` / ``sx.render`` in a loop over views of one volume vs ``Projector.project``."""
    import synthex as sx
    from projectors.geometry import CArm, Transform
    from synthex.rendering import physics_params

    spec, pixels, pitch, _ = CASES[case]
    hu, affine = load_volume(spec)
    vol = sx.Volume(hu, Transform(affine))
    del hu
    centre = vol.center_world
    carm = CArm(sdd=1020.0, sid=530.0, size=(pixels, pixels), pitch=pitch, isocenter=tuple(centre))
    cams = [carm.camera(a, b) for a, b in zip(np.linspace(-40, 40, n_views), np.linspace(-10, 10, n_views))]
    projector = sx.Projector(vol, device="cpu")
    projector.project(cams[0])
    physics = dict(kvp=80, noise=False, scatter=False)
    params = physics_params(None, **physics)
    first = sx.render(vol, cams[0], device="cpu", **physics)  # warm: spectra, attenuation tables
    projections = {id(c): projector.project(c) for c in cams}
    methods = {
        "Projector.project": projector.project,
        "sx.project": lambda c: sx.project(vol, c, device="cpu"),
        "render_from_projection (physics only, no noise/scatter)": lambda c: sx.render_from_projection(projections[id(c)], params),
        "sx.render (no noise, no scatter)": lambda c: sx.render(vol, c, device="cpu", **physics),
        "sx.render (default physics)": lambda c: sx.render(vol, c, device="cpu"),
    }
    wall = {k: 0.0 for k in methods}
    cpu = {k: 0.0 for k in methods}
    for c in cams:  # interleaved view by view, so that load changes hit every method alike
        for name, fn in methods.items():
            w0, c0 = time.perf_counter(), time.process_time()
            fn(c)
            wall[name] += time.perf_counter() - w0
            cpu[name] += time.process_time() - c0
    again = sx.render(vol, cams[0], device="cpu", **physics)
    base = wall["Projector.project"] + wall["render_from_projection (physics only, no noise/scatter)"]
    return {"case": case, "views": n_views, "seconds": wall, "cpu_seconds": cpu,
            "sx.project / Projector.project": wall["sx.project"] / wall["Projector.project"],
            "sx.render / (Projector.project + physics)": wall["sx.render (no noise, no scatter)"] / base,
            "identical_images": bool(np.array_equal(first.image, again.image))}


def worker_device(device: str, quick: bool) -> dict:
    """DRR/s and ray-samples/s over volume and detector sizes on ``device``; device == CPU images."""
    from projectors.geometry import Transform
    from projectors.projector import Projector, clear_prepared_cache, resolve_device
    from projectors.volume import Volume

    device = resolve_device(device)
    reference = cuda_reference() if device.startswith("cuda") else None
    if reference:
        from reference_numba import grid_from_world  # benchmarks/ is on sys.path (cuda_reference)
    rows, checks = [], []
    for n, spacing in ([(256, 1.0)] if quick else [(256, 1.0), (512, 0.5)]):
        hu, affine = synthetic_ct(n, spacing)
        vol = Volume(hu, Transform(affine))
        dens = density(hu) if reference else None
        del hu
        G = grid_from_world(affine) if reference else None
        for mode in ("exact", "trilinear"):
            projector = Projector(vol, mode=mode, step=0.5 * spacing, device=device)
            ref = reference.Renderer(dens, G, "siddon" if mode == "exact" else "trilinear", 0.5 * spacing) if reference else None
            for pixels in ([256] if quick else [256, 512, 1024]):
                cams, _ = cameras(vol.shape, affine, pixels, 1.2 * 256 / pixels)
                ours = projector.project(cams[1])
                timing = time_passes(projector.project, cams, 1 if quick else 3)
                samples = ray_samples(vol.shape, affine, cams, mode, 0.5 * spacing) / len(cams)
                rows.append({"volume": f"{n}^3 at {spacing} mm", "detector": f"{pixels}^2", "mode": mode,
                             "drr_per_s": timing["drr_per_s"], "ray_samples_per_s": samples * timing["drr_per_s"],
                             "cpu_s_per_drr": timing["cpu_s_per_drr"], "kernel": projector.kernel_path})
                if ref is not None:  # the plain CUDA kernel of one channel, same rays, same step
                    theirs = ref.render(cams[1])
                    t_ref = time_passes(ref.render, cams, 1 if quick else 3)
                    a = ours.total_areal_density()
                    rows[-1].update({"reference_drr_per_s": t_ref["drr_per_s"],
                                     "ratio_to_reference": timing["drr_per_s"] / t_ref["drr_per_s"],
                                     "reference_rel_l2": float(np.linalg.norm(a - theirs) / np.linalg.norm(a)),
                                     "gpu_ms": {"synthex": cuda_activity_ms(lambda: projector.project(cams[1])),
                                                "reference kernel": reference_kernel_ms(ref, cams[1])}})
                print(json.dumps(rows[-1]), file=sys.stderr)
            cams, _ = cameras(vol.shape, affine, 256, 1.2)
            a = projector.project(cams[2])
            b = Projector(vol, mode=mode, step=0.5 * spacing, device="cpu", cache=False).project(cams[2])
            # relative to each material's largest areal density; trilinear rays whose step count
            # ceil(L / step) rounds differently on the two devices differ by the quadrature's own error
            rel = {m: np.abs(a.areal_density[m] - b.areal_density[m]) / max(float(np.abs(b.areal_density[m]).max()), 1e-30)
                   for m in b.areal_density}
            diffs = {m: float(r.max()) for m, r in rel.items()}
            checks.append({"volume": f"{n}^3", "mode": mode, "device": device,
                           "max_rel_difference_to_cpu": max(diffs.values()), "per_material": diffs,
                           "share_of_pixels_within_1e-4": min(float((r <= 1e-4).mean()) for r in rel.values())})
        del vol
        clear_prepared_cache()
    import warp as wp

    return {"device": device, "device_name": wp.get_device(device).name, "rows": rows, "equality_to_cpu": checks,
            "monte_carlo": monte_carlo_rates(device, 2_000_000 if quick else 16_000_000)}


def cuda_reference():
    """``benchmarks/reference_numba_cuda.py`` where numba's CUDA target works, else None (said on stderr)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import reference_numba_cuda
        from numba import cuda

        if not cuda.is_available():
            raise RuntimeError("numba sees no CUDA device")
        return reference_numba_cuda
    except Exception as e:  # the comparison is optional: the sweep still runs
        print(f"plain CUDA reference unavailable ({type(e).__name__}: {e}): synthex alone", file=sys.stderr)
        return None


def cuda_activity_ms(fn) -> dict:
    """GPU time of one call of ``fn`` by activity (Warp's CUDA activity timing): kernels, copies
    (the images back to the host) and memsets (zeroing the outputs), ms; and the call's wall time."""
    import warp as wp

    kinds = {wp.TIMING_KERNEL: "kernel", wp.TIMING_MEMCPY: "memcpy", wp.TIMING_MEMSET: "memset"}
    wp.timing_begin(cuda_filter=wp.TIMING_KERNEL | wp.TIMING_MEMCPY | wp.TIMING_MEMSET)
    t0 = time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    out = dict.fromkeys(kinds.values(), 0.0)
    for r in wp.timing_end():
        out[kinds.get(r.filter, "kernel")] += r.elapsed
    out["wall"] = 1000.0 * wall
    return out


def reference_kernel_ms(ref, camera) -> float:
    """The plain CUDA kernel's own time for ``camera`` (CUDA events around the launch), ms."""
    from numba import cuda

    ref.launch(camera)
    start, end = cuda.event(), cuda.event()
    start.record()
    ref.launch(camera)
    end.record()
    end.synchronize()
    return float(start.elapsed_time(end))


def monte_carlo_rates(device: str, n_photons: int) -> dict:
    """Photons per second of the Monte Carlo scatter kernel on ``device`` and on this machine's CPU:
    a 200 mm water slab at 2.5 mm voxels, 80 kV Kramers spectrum (no SpekPy needed), 64^2 detector
    over a 300 mm field. With one seed and photon count the devices transport the same photons (their
    tallies differ in float32 summation order only); the CPU run here takes an eighth of the photons,
    so its means differ from the device's by its own Poisson noise."""
    from projectors.geometry import CArm
    from projectors.physics.scatter_mc import simulate_scatter, water_box_scene
    from projectors.physics.spectrum import Spectrum

    energies = np.arange(15.0, 80.0)
    spec = Spectrum(energies, 80.0 - energies)  # Kramers' thick-target bremsstrahlung shape
    cam = CArm(sdd=1020.0, sid=530.0, size=(64, 64), pitch=300.0 / 64).camera(0, 0)
    scene = water_box_scene(200.0, 400.0, voxel_mm=2.5)
    out = {}
    runs = [(device, n_photons)] + ([("cpu", n_photons // 8)] if device != "cpu" else [])
    for dev, n in runs:
        simulate_scatter(scene, cam, 1020.0, spec, 1000, np.random.default_rng(0), device=dev)  # compile, upload
        t0 = time.perf_counter()
        res = simulate_scatter(scene, cam, 1020.0, spec, n, np.random.default_rng(1), device=dev)
        sec = time.perf_counter() - t0
        out[dev] = {"photons": n, "seconds": sec, "photons_per_s": n / sec,
                    "mean_scatter_to_flat": float(res.scatter.sum() / res.flat.sum()),
                    "mean_primary_to_flat": float(res.primary.sum() / res.flat.sum())}
        print(json.dumps({"monte_carlo": dev, **out[dev]}), file=sys.stderr)
    return out


WORKERS = {"synthex": worker_synthex, "numba": worker_numba, "diffdrr": worker_diffdrr}


# ---------------------------------------------------------------------------------------------
# the parent: run the workers interleaved, check the images agree, tabulate


def run_worker(python: str, args: list[str], timeout: float, env: dict | None = None) -> dict | None:
    cmd = [python, __file__, "--worker", *args]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                             env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        print(f"  {' '.join(args)}: timed out after {timeout:.0f} s", file=sys.stderr)
        return None
    if out.returncode != 0:
        print(f"  {' '.join(args)} failed:\n{out.stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def engines_for(case: str, diffdrr: bool, compiled: bool) -> list[tuple[str, str]]:
    """(worker, variant) pairs measured on ``case``."""
    out = [("synthex", "exact"), ("numba", "siddon"), ("synthex", "trilinear"), ("numba", "trilinear")]
    if diffdrr and case in ("synthetic256", "chest512"):
        renderers = ["siddon", "trilinear"] + (["trilinear+compile"] if compiled else [])
        out += [("diffdrr", f"{r}:{layout}") for r in renderers for layout in ("C", "F")]
    return out


def rel_l2(a_path: str, b_path: str) -> float:
    a, b = np.load(a_path), np.load(b_path)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def summarize(rows: list[dict]) -> dict:
    """Per case and algorithm: synthex vs the plain reference and vs DiffDRR's faster layout."""
    out = {}
    for case in dict.fromkeys(r["case"] for r in rows):
        here = [r for r in rows if r["case"] == case]
        for algo, mode in (("siddon", "exact"), ("trilinear", "trilinear")):
            ours = next((r for r in here if r["engine"] == f"synthex {mode}"), None)
            if ours is None:
                continue
            entry = {}
            ref = next((r for r in here if r["engine"] == f"numba {algo}"), None)
            if ref:
                entry["vs_plain_compiled"] = {"wall": ours["drr_per_s"] / ref["drr_per_s"],
                                              "cpu": ref["cpu_s_per_drr"] / ours["cpu_s_per_drr"]}
            theirs = [r for r in here if r["engine"].startswith("DiffDRR") and r["algorithm"] == algo]
            if theirs:
                best = max(theirs, key=lambda r: r["drr_per_s"])
                entry["vs_diffdrr_fastest"] = {"engine": best["engine"], "wall": ours["drr_per_s"] / best["drr_per_s"],
                                               "cpu": best["cpu_s_per_drr"] / ours["cpu_s_per_drr"]}
            out[f"{case} {algo}"] = entry
    return out


def print_table(rows: list[dict]) -> None:
    print("DRR/s: 5 poses / the sum of each pose's fastest time over the passes (median pass); CPU ms/DRR: the same "
          "with process CPU time (all threads); cores: CPU / wall; others: share of the machine's CPUs busy with other "
          "processes meanwhile")
    head = (f"{'case':<19}{'engine':<36}{'DRR/s':>8}{'(median)':>9}{'CPU ms/DRR':>11}{'cores':>6}"
            f"{'Msamples/s':>11}{'samples/ray':>12}{'peak MB':>8}{'rel L2':>9}{'others':>7}")
    print(head)
    print("-" * len(head))
    for r in rows:
        spr = r["ray_samples_per_drr"] / (CASES[r["case"]][1] ** 2)
        oth = f"{r['others_cpu_share']:.0%}" if r.get("others_cpu_share") is not None else "-"
        print(f"{r['case']:<19}{r['engine']:<36}{r['drr_per_s']:>8.2f}{r['drr_per_s_median']:>9.2f}"
              f"{1000 * r['cpu_s_per_drr']:>11.0f}{r['cores_busy']:>6.2f}{r['ray_samples_per_s'] / 1e6:>11.0f}"
              f"{spr:>12.0f}{r['peak_rss_mb']:>8.0f}{r.get('rel_l2_to_synthex', float('nan')):>9.1e}{oth:>7}")


def read_bandwidth_gb_s(mb: int = 512) -> float:
    """One core's streaming read rate (numpy sum of a float32 array larger than the caches), GB/s."""
    a = np.ones(mb * (1 << 18), np.float32)
    best = np.inf
    for _ in range(3):
        t0 = time.perf_counter()
        a.sum()
        best = min(best, time.perf_counter() - t0)
    return a.nbytes / best / 1e9


def markdown(path: Path) -> str:
    """The comparison as Markdown tables (from a recorded speed.json)."""
    data = json.loads(path.read_text())
    lines = ["| case | engine | DRR/s | CPU ms / DRR | cores | M samples/s | samples / ray | peak RSS MB | rel. L2 to synthex |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in data["rows"]:
        spr = r["ray_samples_per_drr"] / CASES[r["case"]][1] ** 2
        lines.append(f"| {r['case']} | {r['engine']} | {r['drr_per_s']:.2f} | {1000 * r['cpu_s_per_drr']:.0f} | "
                     f"{r['cores_busy']:.2f} | {r['ray_samples_per_s'] / 1e6:.0f} | {spr:.0f} | {r['peak_rss_mb']:.0f} | "
                     f"{r.get('rel_l2_to_synthex', float('nan')):.1e} |")
    lines += ["", "| case, algorithm | synthex / plain compiled (wall, CPU) | synthex / DiffDRR's fastest layout (wall, CPU) |",
              "|---|---|---|"]
    for k, v in data["summary"].items():
        a, d = v.get("vs_plain_compiled"), v.get("vs_diffdrr_fastest")
        plain = f"{a['wall']:.2f}, {a['cpu']:.2f}" if a else "-"
        theirs = f"{d['wall']:.1f}, {d['cpu']:.1f} ({d['engine']})" if d else "-"
        lines.append(f"| {k} | {plain} | {theirs} |")
    for res in data.get("reuse", []):
        lines += ["", f"Reuse, {res['case']}, a loop over {res['views']} views of one volume object:", "",
                  "| loop | wall s | CPU s |", "|---|---:|---:|"]
        lines += [f"| {k} | {w:.2f} | {res['cpu_seconds'][k]:.2f} |" for k, w in res["seconds"].items()]
    return "\n".join(lines)


def comparison(args) -> None:
    cases = ["synthetic256"] if args.quick else [c for c in CASES if c != "chest512" or CHEST.exists()]
    if args.cases:
        cases = args.cases
    bandwidth = read_bandwidth_gb_s()
    have_diffdrr = Path(args.diffdrr_python).exists() and not args.no_diffdrr
    if not have_diffdrr and not args.no_diffdrr:
        print(f"DiffDRR environment not found at {args.diffdrr_python}: synthex and the plain references only",
              file=sys.stderr)
    rounds = 1 if args.quick else args.rounds
    best: dict[tuple, dict] = {}
    history: dict[tuple, list] = {}
    for rnd in range(rounds):
        for case in cases:
            big = "512" in case
            for kind, variant in engines_for(case, have_diffdrr, not args.no_compile):
                slow = kind == "diffdrr" and (big or variant.startswith("siddon"))
                if kind == "diffdrr" and (rnd > 1 or (big and rnd > 0)):
                    continue  # DiffDRR takes minutes per pass: two rounds at 256^2, one at 512^2
                passes = 1 if (args.quick or slow) else (2 if big else 4)
                python = args.diffdrr_python if kind == "diffdrr" else sys.executable
                print(f"round {rnd + 1}/{rounds}: {case} {kind} {variant}", file=sys.stderr)
                r = run_worker(python, [kind, case, variant, str(passes)], timeout=3600)
                if r is None:
                    continue
                key = (case, r["engine"])
                history.setdefault(key, []).append(r["drr_per_s"])
                if key not in best or r["drr_per_s"] > best[key]["drr_per_s"]:
                    if key in best:
                        os.unlink(best[key]["image"])
                    best[key] = {"case": case, **r}
                else:
                    os.unlink(r["image"])
    rows = list(best.values())
    for r in rows:  # the same line integrals: each engine's image vs synthex's of the same algorithm
        mode = "exact" if r["algorithm"] == "siddon" else "trilinear"
        ours = best.get((r["case"], f"synthex {mode}"))
        if ours is not None:
            r["rel_l2_to_synthex"] = rel_l2(r["image"], ours["image"])
        r["drr_per_s_rounds"] = history[(r["case"], r["engine"])]
    for r in rows:
        os.unlink(r.pop("image"))
    reuse = measure_reuse(cases)
    summary = summarize(rows)
    print_table(rows)
    print()
    for k, v in summary.items():
        parts = []
        if "vs_plain_compiled" in v:
            parts.append(f"x plain compiled: {v['vs_plain_compiled']['wall']:.2f} wall, {v['vs_plain_compiled']['cpu']:.2f} CPU")
        if "vs_diffdrr_fastest" in v:
            d = v["vs_diffdrr_fastest"]
            parts.append(f"x {d['engine']}: {d['wall']:.2f} wall, {d['cpu']:.2f} CPU")
        print(f"{k:<30}" + "; ".join(parts))
    print_reuse(reuse)
    meta = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "poses": POSES, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "rounds": rounds, "load_avg_at_end": os.getloadavg(), "one_core_read_gb_per_s": bandwidth,
            "command": "python benchmarks/speed.py" + (" --quick" if args.quick else "")}
    out = RESULTS / ("speed_quick.json" if args.quick else "speed.json")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows, "summary": summary, "reuse": reuse}, indent=2))
    print(f"wrote {out}")


def measure_reuse(cases) -> list[dict]:
    """``sx.project`` / ``sx.render`` in a loop over 20 views of one volume vs ``Projector.project`` (one process per case)."""
    reuse = []
    for case in [c for c in ("synthetic256", "chest512") if c in cases]:
        print(f"reuse: {case}", file=sys.stderr)
        res = run_worker(sys.executable, ["reuse", case, "20", "0"], timeout=3600)
        if res:
            reuse.append(res)
    return reuse


def print_reuse(reuse: list[dict]) -> None:
    for res in reuse:
        print(f"\nreuse, {res['case']}, a loop over {res['views']} views of one volume object (wall s, CPU s):")
        for name, sec in res["seconds"].items():
            print(f"  {name:<58}{sec:>8.2f}{res['cpu_seconds'][name]:>8.2f}")
        print(f"  sx.project / Projector.project: {res['sx.project / Projector.project']:.2f}; sx.render / "
              f"(Projector.project + physics): {res['sx.render / (Projector.project + physics)']:.2f}")


def reuse_only() -> None:
    """Measure the reuse loop again and replace it in the recorded results/speed.json (the rest is kept)."""
    out = RESULTS / "speed.json"
    data = json.loads(out.read_text())
    data["reuse"] = measure_reuse(["synthetic256", "chest512"])
    data["meta"]["reuse_date"] = time.strftime("%Y-%m-%d %H:%M:%S")
    print_reuse(data["reuse"])
    out.write_text(json.dumps(data, indent=2))
    print(f"wrote {out}")


def device_sweep(args) -> None:
    res = worker_device(args.device, args.quick)
    print(f"device {res['device']}: synthex DRR/s and ray-samples/s (exact: voxel visits; trilinear: samples)")
    print(f"{'volume':<18}{'detector':>9}{'mode':>11}{'DRR/s':>9}{'Msamples/s':>12}{'plain CUDA DRR/s':>18}{'ratio':>7}")
    for r in res["rows"]:
        ref = (f"{r['reference_drr_per_s']:>18.2f}{r['ratio_to_reference']:>7.2f}" if "reference_drr_per_s" in r else "")
        print(f"{r['volume']:<18}{r['detector']:>9}{r['mode']:>11}{r['drr_per_s']:>9.2f}{r['ray_samples_per_s'] / 1e6:>12.0f}" + ref)
    timed = [r for r in res["rows"] if "gpu_ms" in r]
    if timed:
        print("GPU time of one DRR (ms): synthex kernel / copies to host / memsets / wall; plain CUDA kernel")
        for r in timed:
            g = r["gpu_ms"]["synthex"]
            print(f"{r['volume']:<18}{r['detector']:>9}{r['mode']:>11}{g['kernel']:>9.3f}{g['memcpy']:>9.3f}{g['memset']:>9.3f}"
                  f"{g['wall']:>9.3f}{r['gpu_ms']['reference kernel']:>11.3f}")
    for c in res["equality_to_cpu"]:
        print(f"{c['volume']} {c['mode']}: max relative difference {c['device']} vs cpu {c['max_rel_difference_to_cpu']:.1e}; "
              f"pixels within 1e-4: {100 * c['share_of_pixels_within_1e-4']:.2f}%")
    for dev, m in res["monte_carlo"].items():
        print(f"Monte Carlo scatter on {dev}: {m['photons_per_s'] / 1e6:.2f} M photons/s ({m['photons']:,} photons); "
              f"scatter / flat {m['mean_scatter_to_flat']:.4f}, primary / flat {m['mean_primary_to_flat']:.4f}")
    name = "cpu" if res["device"] == "cpu" else "cuda"
    out = RESULTS / f"speed_device_{name}{'_quick' if args.quick else ''}.json"
    RESULTS.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": platform.platform(),
                                        "command": f"python benchmarks/speed.py --device {args.device}"
                                        + (" --quick" if args.quick else "")}, **res}, indent=2))
    print(f"wrote {out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", help="run the device sweep on cpu / cuda / cuda:N instead of the comparison")
    ap.add_argument("--quick", action="store_true", help="synthetic 256^3 only, one round (sweep: 256 only)")
    ap.add_argument("--cases", nargs="+", choices=list(CASES), help="comparison cases (default: all)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="interleaved rounds of every engine, the fastest kept (DiffDRR: at most 2 at 256^2, 1 at 512^2)")
    ap.add_argument("--diffdrr-python", default=str(REPO / ".venv-diffdrr" / "bin" / "python"),
                    help="Python of an environment with DiffDRR 0.6.1 (skipped if missing)")
    ap.add_argument("--no-diffdrr", action="store_true", help="skip DiffDRR")
    ap.add_argument("--no-compile", action="store_true", help="skip DiffDRR's torch.compile'd renderer")
    ap.add_argument("--markdown", action="store_true", help="print the recorded results/speed.json as Markdown")
    ap.add_argument("--reuse", action="store_true",
                    help="only the sx.render / sx.project reuse loop, replaced in the recorded results/speed.json")
    ap.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        kind, case, variant, passes = args.worker
        if kind == "reuse":
            print(json.dumps(worker_reuse(case, int(variant))))
        else:
            print(json.dumps(WORKERS[kind](case, variant, int(passes))))
        return
    if args.markdown:
        print(markdown(RESULTS / "speed.json"))
    elif args.reuse:
        reuse_only()
    elif args.device:
        device_sweep(args)
    else:
        comparison(args)


if __name__ == "__main__":
    main()
