"""DICOM export: one XA (X-Ray Angiographic Image Storage, default) or DX (Digital
X-Ray Image Storage - For Presentation) object per image, 16-bit MONOCHROME2.

Geometry tags: ``KVP`` (the sampled tube voltage), ``DistanceSourceToDetector``
(sdd), ``DistanceSourceToPatient`` (source-isocentre), ``ImagerPixelSpacing``
(row, column pitch at the detector), ``EstimatedRadiographicMagnificationFactor``
(sdd / sid), and for XA the positioner angles. DICOM angles describe where the
*detector* (image intensifier) is, 0 = detector above a supine patient, LAO and
cranial positive; synthex's C-arm angles describe where the *source* is, with
the source anterior at 0 (see docs/getting-started.md, "Geometry conventions"), so
``PositionerPrimaryAngle = alpha + 180`` (wrapped to (-180, 180]) and
``PositionerSecondaryAngle = -beta``. The exact K and world_from_camera (RAS mm)
are in ``ImageComments`` as JSON.

One study per subject (a subject is a patient: its views share a StudyInstanceUID; a series per
modality), the attributes the IOD requires present (checked with dicom3tools' ``dciodvfy`` in
the tests), and the class masks as a DICOM Segmentation (SEG, binary, one segment per class,
written with highdicom) per image, referencing that image. UIDs are derived from the dataset
identity, the subject and the sample index, and dates from when the dataset was completed, so
re-exporting gives the same files.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np

from pydicom.sr.codedict import codes

from synthex.exports import ExportError, to_uint16

SOP_CLASSES = {
    "XA": "1.2.840.10008.5.1.4.1.1.12.1",  # X-Ray Angiographic Image Storage
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
}


def wrap_degrees(a: float) -> float:
    a = (a + 180.0) % 360.0 - 180.0
    return 180.0 if a == -180.0 else a


def positioner_angles(alpha_deg: float, beta_deg: float) -> tuple[float, float]:
    """(PositionerPrimaryAngle, PositionerSecondaryAngle) of a synthex C-arm view."""
    return wrap_degrees(alpha_deg + 180.0), -float(beta_deg)


def patient_orientation(world_from_camera) -> list[str]:
    """DICOM Patient Orientation (0020,0020) of a projection image: the patient directions of the
    image's row (u, increasing column) and column (v, increasing row) axes, from the camera pose
    (RAS world: +x right, +y anterior, +z head); letters in order of their share, e.g. ``["L", "F"]``."""
    m = np.asarray(world_from_camera, dtype=np.float64)[:3, :3]
    out = []
    for axis in (m[:, 0], m[:, 1]):
        letters = [("R", "L"), ("A", "P"), ("H", "F")]
        parts = sorted(((abs(c), pos if c > 0 else neg) for c, (pos, neg) in zip(axis, letters)), reverse=True)
        out.append("".join(letter for share, letter in parts if share >= 0.25 * parts[0][0]))
    return out


def _date_time(ds) -> tuple[str, str]:
    """When the dataset was completed (manifest.json's time, UTC): re-exports give the same files."""
    from datetime import datetime, timezone

    t = datetime.fromtimestamp((Path(ds.path) / "manifest.json").stat().st_mtime, tz=timezone.utc)
    return t.strftime("%Y%m%d"), t.strftime("%H%M%S")


def _uid(*parts) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=["synthex", *(str(p) for p in parts)])


def export_dicom(ds, out: Path, modality: str = "XA", segmentations: bool = True, **options) -> Path:
    """One image object per sample in ``out/dicom/``, one study per subject; with ``segmentations``
    a DICOM SEG object (highdicom) per image with one segment per class in ``out/dicom/seg/``."""
    from pydicom.dataset import Dataset as DicomDataset
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    modality = modality.upper()
    if modality not in SOP_CLASSES:
        raise ExportError(f"DICOM modality must be one of {sorted(SOP_CLASSES)}, got {modality!r}")
    if segmentations:
        _highdicom()
    dataset_key = ds.manifest.get("plan_id") or json.dumps(ds.config, sort_keys=True)
    seed = str(ds.manifest["seed"])
    date, time = _date_time(ds)
    folder = out / "dicom"
    folder.mkdir(parents=True)
    for k in range(len(ds)):
        s = ds[k]
        rec = s["params"]
        i = int(s["sample_index"])
        sid = int(s["subject_id"])
        study = _uid(dataset_key, seed, "study", sid)  # one study per subject (patient)
        series = _uid(study, "series", modality)
        uid = _uid(study, "image", i)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = SOP_CLASSES[modality]
        meta.MediaStorageSOPInstanceUID = uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        d = DicomDataset()
        d.file_meta = meta
        d.SpecificCharacterSet = "ISO_IR 192"
        d.SOPClassUID, d.SOPInstanceUID = SOP_CLASSES[modality], uid
        d.StudyInstanceUID, d.SeriesInstanceUID = study, series
        d.Modality = modality
        # Patient (a synthetic subject: no birth date, sex "O")
        d.PatientName = f"synthex^{rec['subject']['name']}^{sid:05d}"[:64]
        d.PatientID = f"synthex-{sid:05d}"
        d.PatientBirthDate = ""
        d.PatientSex = "O"
        # General Study
        d.StudyDate, d.StudyTime = date, time
        d.ContentDate, d.ContentTime = date, time
        d.ReferringPhysicianName = ""
        d.StudyID = f"{sid + 1}"
        d.AccessionNumber = ""
        d.StudyDescription = f"synthex {ds.manifest['task']} (synthetic)"
        # General Series / Equipment
        d.SeriesNumber = 1
        d.SeriesDescription = f"synthetic {modality} views"
        d.Manufacturer = "synthex (synthetic images)"
        d.ManufacturerModelName = "synthex"
        d.SoftwareVersions = str(ds.manifest["synthex_version"])
        # General Image
        d.InstanceNumber = i + 1
        d.PatientOrientation = patient_orientation(s["world_from_camera"])
        d.BurnedInAnnotation = "NO"
        d.LossyImageCompression = "00"
        d.DerivationDescription = "synthetic radiograph rendered by synthex from a CT or phantom (not acquired)"
        # Image Pixel
        img = to_uint16(s["image"])
        d.Rows, d.Columns = img.shape
        d.SamplesPerPixel = 1
        d.PhotometricInterpretation = "MONOCHROME2"
        d.BitsAllocated, d.BitsStored, d.HighBit, d.PixelRepresentation = 16, 16, 15, 0
        d.PixelData = img.tobytes()
        # geometry (X-Ray Acquisition / DX Detector / XA Positioner)
        cam = rec["camera"]
        du, dv = cam["pixel_size_mm"]
        d.KVP = round(float(rec["physics"]["spectrum"]["kvp"]), 3)
        d.DistanceSourceToDetector = round(float(cam["sdd"]), 4)
        d.DistanceSourceToPatient = round(float(cam["sid"]), 4)
        d.ImagerPixelSpacing = [round(dv, 6), round(du, 6)]  # row spacing, column spacing
        d.EstimatedRadiographicMagnificationFactor = round(float(cam["sdd"]) / float(cam["sid"]), 6)
        primary, secondary = positioner_angles(rec["view"]["alpha_deg"], rec["view"]["beta_deg"])
        d.PositionerPrimaryAngle = round(primary, 4)
        d.PositionerSecondaryAngle = round(secondary, 4)
        d.XRayTubeCurrent = None  # Type 2: not simulated as a current (the dose is photons per pixel)
        d.ExposureTime = None
        d.Exposure = None
        d.WindowCenter, d.WindowWidth = 32768, 65536  # the stored image is already display-processed
        MODALITY_MODULES[modality](d, s, rec)
        d.ImageComments = json.dumps(
            {
                "synthex_sample_index": i,
                "K": np.asarray(s["K"]).tolist(),
                "world_from_camera_RAS_mm": np.asarray(s["world_from_camera"]).tolist(),
            }
        )
        path = folder / f"{i:06d}.dcm"
        d.save_as(path, enforce_file_format=True)
        if segmentations:
            _write_seg(ds, d, s, folder / "seg" / f"{i:06d}_seg.dcm", _uid(study, "seg-series"), _uid(study, "seg", i))
    return folder


def _xa(d, s, rec) -> None:
    """X-Ray Angiographic Image IOD specifics (PS3.3 A.14): single plane, display-processed."""
    d.ImageType = ["DERIVED", "SECONDARY", "SINGLE PLANE"]
    d.PixelIntensityRelationship = "DISP"  # display processed (log + display LUT already applied)
    d.RadiationSetting = "GR"  # fluoroscopy-like (C-arm) technique
    d.Laterality = ""  # Type 2C; empty = not a paired structure here (dciodvfy warns, as the standard allows)


def _dx(d, s, rec) -> None:
    """Digital X-Ray Image - For Presentation IOD specifics (PS3.3 A.26)."""
    d.ImageType = ["DERIVED", "SECONDARY"]
    d.PresentationIntentType = "FOR PRESENTATION"
    d.PixelIntensityRelationship = "LOG"
    d.PixelIntensityRelationshipSign = -1  # higher values = less X-ray intensity (bone is bright)
    d.RescaleIntercept, d.RescaleSlope, d.RescaleType = 0, 1, "US"
    d.PresentationLUTShape = "IDENTITY"
    d.ViewPosition = "AP"
    d.ViewCodeSequence = [_code(codes.SCT.AnteroPosterior)]
    d.ImageLaterality = "U"
    d.DetectorType = "SCINTILLATOR"
    d.PositionerType = "CARM"
    d.AcquisitionContextSequence = []
    region = _body_region(rec)
    d.AnatomicRegionSequence = [_code(region)] if region else []
    if region:
        d.BodyPartExamined = region.meaning.upper()


def _code(code):
    from pydicom.dataset import Dataset as DicomDataset

    item = DicomDataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code.value, code.scheme_designator, code.meaning
    return item


def _body_region(rec):
    """SNOMED CT code of the imaged region from the subject's name (pelvis or chest phantoms/CTs), else None."""
    name = str(rec["subject"]["name"]).lower()
    return codes.SCT.Pelvis if "pelvis" in name else codes.SCT.Chest if "chest" in name else None


MODALITY_MODULES = {"XA": _xa, "DX": _dx}


def _highdicom():
    try:
        import highdicom
    except ImportError:
        raise ExportError(
            "DICOM SEG objects need highdicom: pip install 'synthex-xray[export]' (or export without segmentations)"
        ) from None
    return highdicom


def _write_seg(ds, image, sample, path: Path, series_uid: str, uid: str) -> None:
    """A binary DICOM SEG (highdicom) of one image: one segment per class, empty segments included."""
    hd = _highdicom()
    from pydicom.dataset import Dataset as DicomDataset

    masks = np.asarray(sample["masks"], dtype=bool)  # (C, H, W)
    descriptions = []
    for c, name in enumerate(ds.classes[1:]):
        category, kind = segment_codes(name)
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=c + 1,
                segment_label=name,
                segmented_property_category=category,
                segmented_property_type=kind,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=hd.AlgorithmIdentificationSequence(
                    name="synthex projection of the 3D label map", version=str(ds.manifest["synthex_version"]),
                    family=codes.DCM.ImageProcessing,
                ),
            )
        )
    path.parent.mkdir(exist_ok=True)
    source = image
    if "NumberOfFrames" not in image:
        # XA is a multi-frame-capable IOD: highdicom reads its frame count and shared functional
        # groups. Give it (on a copy: the referenced image is unchanged) one frame and a pixel
        # spacing (at the isocentre plane), which is removed again from the SEG it writes, as
        # the SEG of a DX image (no frame of reference, no patient pixel spacing) has none.
        source = copy.deepcopy(image)
        source.NumberOfFrames = 1
        mag = float(image.EstimatedRadiographicMagnificationFactor)
        measures = DicomDataset()
        measures.PixelSpacing = [round(float(v) / mag, 6) for v in image.ImagerPixelSpacing]
        shared = DicomDataset()
        shared.PixelMeasuresSequence = [measures]
        source.SharedFunctionalGroupsSequence = [shared]
    seg = hd.seg.Segmentation(
        source_images=[source],
        pixel_array=np.moveaxis(masks, 0, -1)[None],  # (1 frame, H, W, segments)
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=series_uid,
        series_number=2,
        sop_instance_uid=uid,
        instance_number=image.InstanceNumber,
        manufacturer="synthex (synthetic images)",
        manufacturer_model_name="synthex",
        software_versions=str(ds.manifest["synthex_version"]),
        device_serial_number="0",
        series_description="synthex labels (exact, from the CT label map)",
        omit_empty_frames=False,
    )
    seg.PatientOrientation = image.PatientOrientation
    if source is not image:  # the spacing given to highdicom above is not the image's own: do not claim it
        for group in seg.get("SharedFunctionalGroupsSequence") or []:
            if "PixelMeasuresSequence" in group:
                del group.PixelMeasuresSequence
    seg.save_as(path)


BONES = ("pelvis", "femur", "vertebra", "sacrum", "bone", "rib", "skull", "spine")


def segment_codes(name: str):
    """(category, type) SNOMED CT codes of a class: lesions, bones, instruments, else tissue."""
    n = name.lower()
    if "lesion" in n:
        return codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Lesion
    if any(b in n for b in BONES):
        return codes.SCT.AnatomicalStructure, codes.SCT.Bone
    if n in ("manipulator", "tool", "instrument", "screw", "implant"):
        return codes.SCT.PhysicalObject, codes.SCT.PhysicalObject
    return codes.SCT.Tissue, codes.SCT.Tissue
