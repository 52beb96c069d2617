"""The other objects a scanner sends with a perfusion series when it sends the whole study: a
dose screen (Secondary Capture), a radiation dose SR, an MR image, and a plain single-volume
head CT. Each is written to a folder as a DICOM file of the given study."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    XRayRadiationDoseSRStorage,
    generate_uid,
)

from ctp_node.perfusion import Acquisition
from ctp_node.phantom.dicom import StudyIdentity, write_ct_series


def write_other_objects(ct_image: Path, folder: Path) -> dict[str, list[Path]]:
    """A Secondary Capture, an X-Ray Radiation Dose SR, an MR image, a vendor's private
    "CSA non-image" object and a single-volume CT of ``ct_image``'s study and patient, in
    ``folder``; returns the paths by kind."""
    folder.mkdir(parents=True, exist_ok=True)
    source = pydicom.dcmread(ct_image)
    return {
        "secondary_capture": [_secondary_capture(source, folder / "dose-screen.dcm")],
        "dose_sr": [_dose_report(source, folder / "dose-report.dcm")],
        "mr": [_mr_image(source, folder / "mr.dcm")],
        "private": [_private_object(source, folder / "csa-non-image.dcm")],
        "single_volume_ct": _single_volume_ct(source, folder / "head-ct"),
    }


#: Siemens' CSA Non-Image Storage: a private SOP class scanners send with their studies.
PRIVATE_SOP_CLASS = "1.3.12.2.1107.5.9.1"


#: A DCMTK storescu profile (``-xf FILE P``) that proposes Siemens' private CSA Non-Image Storage.
PRIVATE_PROFILE = """
[[TransferSyntaxes]]
[Uncompressed]
TransferSyntax1 = LocalEndianExplicit
TransferSyntax2 = LittleEndianImplicit
[[PresentationContexts]]
[P]
PresentationContext1 = 1.3.12.2.1107.5.9.1\\Uncompressed
[[Profiles]]
[P]
PresentationContexts = P
"""


def _private_object(source: Dataset, path: Path) -> Path:
    ds = _study_header(source, PRIVATE_SOP_CLASS, "OT", 99)
    block = ds.private_block(0x0029, "SIEMENS CSA NON-IMAGE", create=True)
    block.add_new(0x10, "OB", b"\x00" * 64)  # vendor data, opaque to anyone else
    ds.save_as(path, enforce_file_format=True)
    return path


def _study_header(source: Dataset, sop_class: str, modality: str, series_number: int) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    for keyword in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "StudyID",
        "ReferringPhysicianName",
    ):
        setattr(ds, keyword, source.get(keyword, ""))
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = series_number
    ds.InstanceNumber = 1
    ds.Modality = modality
    ds.Manufacturer = "ctp-node tests"
    return ds


def _secondary_capture(source: Dataset, path: Path) -> Path:
    ds = _study_header(source, SecondaryCaptureImageStorage, "OT", 501)
    ds.ConversionType = "WSD"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 32
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = np.arange(32 * 32, dtype=np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, scheme, meaning
    return code


def _dose_report(source: Dataset, path: Path) -> Path:
    ds = _study_header(source, XRayRadiationDoseSRStorage, "SR", 502)
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.ConceptNameCodeSequence = Sequence([_code("113701", "DCM", "X-Ray Radiation Dose Report")])
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ctdi = Dataset()
    ctdi.RelationshipType = "CONTAINS"
    ctdi.ValueType = "NUM"
    ctdi.ConceptNameCodeSequence = Sequence([_code("113830", "DCM", "Mean CTDIvol")])
    measured = Dataset()
    measured.NumericValue = "220.5"
    measured.MeasurementUnitsCodeSequence = Sequence([_code("mGy", "UCUM", "mGy")])
    ctdi.MeasuredValueSequence = Sequence([measured])
    ds.ContentSequence = Sequence([ctdi])
    ds.save_as(path, enforce_file_format=True)
    return path


def _mr_image(source: Dataset, path: Path) -> Path:
    ds = pydicom.dcmread(source.filename)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "MR"
    ds.SeriesNumber = 601
    ds.save_as(path)
    return path


def _single_volume_ct(source: Dataset, folder: Path) -> list[Path]:
    """Four slices at one time point: CT that is not a perfusion acquisition."""
    rng = np.random.default_rng(11)
    acquisition = Acquisition(
        hu=rng.normal(35, 5, size=(1, 4, 32, 32)).astype(np.float32),
        times_s=np.array([0.0]),
        pixel_spacing_mm=(0.7, 0.7),
        slice_spacing_mm=5.0,
    )
    identity = replace(StudyIdentity.new(), study_instance_uid=str(source.StudyInstanceUID))
    return write_ct_series(
        acquisition, folder, identity=identity, series_description="Head", series_number=2
    )


def write_series_without_bolus(acquisition: Acquisition, folder: Path, seed: int) -> list[Path]:
    """``acquisition``'s first frame repeated at every time point with 5 HU of noise: a
    perfusion series in which contrast never arrives (the engine must fail it), in a study of
    its own, written to ``folder``."""
    rng = np.random.default_rng(seed)
    still = np.repeat(acquisition.hu[:1], acquisition.hu.shape[0], axis=0)
    still = still + rng.normal(0, 5, still.shape).astype(np.float32)
    return write_ct_series(replace(acquisition, hu=still), folder, identity=StudyIdentity.new())
