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
are in ``ImageComments`` as JSON. UIDs are derived from the dataset seed and
sample index, so re-exporting gives the same files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

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


def export_dicom(ds, out: Path, modality: str = "XA", **options) -> Path:
    from pydicom.dataset import Dataset as DicomDataset
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

    modality = modality.upper()
    if modality not in SOP_CLASSES:
        raise ExportError(f"DICOM modality must be one of {sorted(SOP_CLASSES)}, got {modality!r}")
    seed = str(ds.manifest["seed"])
    study = generate_uid(entropy_srcs=["synthex", seed, "study", json.dumps(ds.config, sort_keys=True)])
    folder = out / "dicom"
    folder.mkdir(parents=True)
    for k in range(len(ds)):
        s = ds[k]
        rec = s["params"]
        i = int(s["sample_index"])
        series = generate_uid(entropy_srcs=[study, "series", str(int(s["subject_id"]))])
        uid = generate_uid(entropy_srcs=[study, "image", str(i)])
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = SOP_CLASSES[modality]
        meta.MediaStorageSOPInstanceUID = uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        d = DicomDataset()
        d.file_meta = meta
        d.SOPClassUID, d.SOPInstanceUID = SOP_CLASSES[modality], uid
        d.StudyInstanceUID, d.SeriesInstanceUID = study, series
        d.Modality = modality
        d.PatientName = f"synthex^{rec['subject']['name']}"[:64]
        d.PatientID = f"synthex-{int(s['subject_id']):05d}"
        d.PatientSex = "O"
        d.StudyID, d.SeriesNumber, d.InstanceNumber = "1", int(s["subject_id"]) + 1, i + 1
        d.Manufacturer = "synthex (synthetic)"
        d.ImageType = ["DERIVED", "SECONDARY"]
        d.ConversionType = "SYN"  # synthetic image
        d.BurnedInAnnotation = "NO"
        img = to_uint16(s["image"])
        d.Rows, d.Columns = img.shape
        d.SamplesPerPixel = 1
        d.PhotometricInterpretation = "MONOCHROME2"
        d.BitsAllocated, d.BitsStored, d.HighBit, d.PixelRepresentation = 16, 16, 15, 0
        d.PixelData = img.tobytes()
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
        if modality == "DX":
            d.PresentationIntentType = "FOR PRESENTATION"
            d.ViewPosition = "AP"
        d.ImageComments = json.dumps(
            {
                "synthex_sample_index": i,
                "K": np.asarray(s["K"]).tolist(),
                "world_from_camera_RAS_mm": np.asarray(s["world_from_camera"]).tolist(),
            }
        )
        d.save_as(folder / f"{i:06d}.dcm", enforce_file_format=True)
    return folder
