"""Enhanced CT (multi-frame) test data, made from a classic single-frame CT series."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import EnhancedCTImageStorage, ExplicitVRLittleEndian, generate_uid

COPIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "SeriesInstanceUID",
    "SeriesNumber",
    "Modality",
    "FrameOfReferenceUID",
    "Manufacturer",
    "KVP",
    "ContrastBolusAgent",
    "ContrastBolusVolume",
    "ContrastFlowRate",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "SamplesPerPixel",
    "PhotometricInterpretation",
)


def enhanced_ct_per_time_point(classic: list[Path], out_dir: Path) -> list[Path]:
    """One Enhanced CT instance per time point, its frames the slices (in reverse order, to
    check that frames are placed by position, not by index)."""
    by_time: dict[int, list[Dataset]] = defaultdict(list)
    for path in classic:
        ds = pydicom.dcmread(path)
        by_time[int(ds.TemporalPositionIndex)].append(ds)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for t, slices in sorted(by_time.items()):
        slices.sort(key=lambda s: -float(s.ImagePositionPatient[2]))
        first = slices[0]
        ds = Dataset()
        for keyword in COPIED:
            if keyword in first:
                setattr(ds, keyword, getattr(first, keyword))
        ds.SOPClassUID = EnhancedCTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.NumberOfFrames = len(slices)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
        shared = Dataset()
        orientation = Dataset()
        orientation.ImageOrientationPatient = first.ImageOrientationPatient
        measures = Dataset()
        measures.PixelSpacing = first.PixelSpacing
        measures.SliceThickness = first.SliceThickness
        rescale = Dataset()
        rescale.RescaleIntercept = first.RescaleIntercept
        rescale.RescaleSlope = first.RescaleSlope
        rescale.RescaleType = "HU"
        shared.PlaneOrientationSequence = Sequence([orientation])
        shared.PixelMeasuresSequence = Sequence([measures])
        shared.PixelValueTransformationSequence = Sequence([rescale])
        ds.SharedFunctionalGroupsSequence = Sequence([shared])
        frames = []
        for image in slices:
            item = Dataset()
            position = Dataset()
            position.ImagePositionPatient = image.ImagePositionPatient
            content = Dataset()
            content.FrameAcquisitionDateTime = image.AcquisitionDateTime
            content.TemporalPositionIndex = t
            item.PlanePositionSequence = Sequence([position])
            item.FrameContentSequence = Sequence([content])
            frames.append(item)
        ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
        ds.AcquisitionDateTime = slices[0].AcquisitionDateTime
        ds.PixelData = np.stack([s.pixel_array for s in slices]).astype("<u2").tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = out_dir / f"enhanced_t{t:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
