"""Write any :class:`~ctp_node.perfusion.acquisition.Acquisition` as a DICOM CT series.

One single-frame CT Image Storage instance per ``(t, z)``: the way a scanner sends a dynamic
perfusion acquisition. Used to write the digital phantom to DICOM and by tests everywhere that
need a realistic series on disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

import ctp_node
from ctp_node.perfusion.acquisition import Acquisition, AcquisitionFacts

#: Stored values are HU + 1024 in 12 bits, the convention of most CT scanners.
RESCALE_INTERCEPT_HU = -1024.0
_BITS_STORED = 12
_MAX_STORED = (1 << _BITS_STORED) - 1

#: One rotation per image; ``Exposure`` (mAs) = ``XRayTubeCurrent`` (mA) × this time.
_EXPOSURE_TIME_MS = 1000


@dataclass(frozen=True)
class StudyIdentity:
    """Who and what a written series belongs to: patient, study, series and frame of reference.

    Attributes
    ----------
    patient_name : DICOM person name, e.g. ``"PHANTOM^CTP"``.
    patient_id : PatientID.
    patient_birth_date : birth date, or ``None`` (written empty: Type 2).
    patient_sex : ``"M"``, ``"F"``, ``"O"`` or ``""``.
    study_instance_uid, series_instance_uid, frame_of_reference_uid : UIDs.
    accession_number, study_id, study_description : study identification.
    study_datetime : StudyDate/StudyTime.
    """

    patient_name: str
    patient_id: str
    patient_birth_date: date | None
    patient_sex: str
    study_instance_uid: str
    accession_number: str
    study_id: str
    study_description: str
    series_instance_uid: str
    frame_of_reference_uid: str
    study_datetime: datetime

    @classmethod
    def new(
        cls,
        *,
        patient_name: str = "PHANTOM^CTP",
        patient_id: str = "CTP-PHANTOM",
        patient_birth_date: date | None = date(1955, 3, 14),
        patient_sex: str = "O",
        accession_number: str = "CTP0001",
        study_id: str = "1",
        study_description: str = "CT Brain Perfusion",
        study_datetime: datetime | None = None,
    ) -> StudyIdentity:
        """A new identity with fresh study, series and frame-of-reference UIDs.

        ``study_datetime`` defaults to now (whole seconds).
        """
        if study_datetime is None:
            study_datetime = datetime.now().replace(microsecond=0)
        return cls(
            patient_name=patient_name,
            patient_id=patient_id,
            patient_birth_date=patient_birth_date,
            patient_sex=patient_sex,
            study_instance_uid=generate_uid(),
            accession_number=accession_number,
            study_id=study_id,
            study_description=study_description,
            series_instance_uid=generate_uid(),
            frame_of_reference_uid=generate_uid(),
            study_datetime=study_datetime,
        )


def write_ct_series(
    acquisition: Acquisition,
    out_dir: Path,
    *,
    identity: StudyIdentity,
    series_description: str = "CT Perfusion",
    start_datetime: datetime | None = None,
    series_number: int = 4,
    first_slice: int = 0,
    series_slices: int | None = None,
) -> list[Path]:
    """Write ``acquisition`` as single-frame CT images, one file per ``(t, z)``.

    Parameters
    ----------
    acquisition : the dynamic acquisition; ``hu`` is ``(t, z, y, x)`` in HU.
    out_dir : folder to write into (created if missing); files are named ``t{t:03d}_z{z:03d}.dcm``.
    identity : patient, study, series and frame-of-reference identity.
    series_description : SeriesDescription.
    start_datetime : date and time of the first image; defaults to ``identity.study_datetime``.
        Each image's AcquisitionDateTime is this plus its own time in seconds
        (``slice_times_s`` if present, else ``times_s``), crossing midnight correctly.
    series_number : SeriesNumber.
    first_slice, series_slices : when ``acquisition`` is one slab of a series too large to hold
        in memory (written slab by slab), the index of its first slice in the series and the
        series' number of slices: they keep file names, SOP Instance UIDs and InstanceNumbers
        distinct across slabs. Slice positions are ``acquisition``'s own.

    Returns
    -------
    The written paths, ordered by time then slice.

    Notes
    -----
    HU are stored as ``round(HU) + 1024`` in 12 bits (RescaleIntercept -1024), so values are
    clipped to ``[-1024, 3071]`` HU.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if start_datetime is None:
        start_datetime = identity.study_datetime
    n_t, n_z, n_rows, n_columns = acquisition.hu.shape
    total_z = n_z if series_slices is None else series_slices

    stored = np.clip(np.rint(acquisition.hu - RESCALE_INTERCEPT_HU), 0, _MAX_STORED).astype(
        np.uint16
    )
    image_times_s = _image_times_s(acquisition)
    positions_mm = _slice_positions_mm(acquisition)
    normal = np.cross(acquisition.orientation[:3], acquisition.orientation[3:])
    slice_locations_mm = positions_mm @ normal

    paths: list[Path] = []
    for t in range(n_t):
        for z in range(n_z):
            series_z = first_slice + z
            image_datetime = start_datetime + timedelta(seconds=float(image_times_s[t, z]))
            ds = _ct_image(
                acquisition,
                identity,
                series_description=series_description,
                series_number=series_number,
                series_datetime=start_datetime,
                image_datetime=image_datetime,
                sop_instance_uid=generate_uid(
                    entropy_srcs=[identity.series_instance_uid, f"CT t={t} z={series_z}"]
                ),
                instance_number=t * total_z + series_z + 1,
                temporal_position_index=t + 1,
                number_of_temporal_positions=n_t,
                position_mm=positions_mm[z],
                slice_location_mm=float(slice_locations_mm[z]),
                shape=(n_rows, n_columns),
            )
            ds.PixelData = stored[t, z].tobytes()
            path = out_dir / f"t{t:03d}_z{series_z:03d}.dcm"
            dcmwrite(path, ds, enforce_file_format=True)
            paths.append(path)
    return paths


def _image_times_s(acquisition: Acquisition) -> np.ndarray:
    """Each image's time ``(t, z)``, s: the slices' own times, or the frame's."""
    if acquisition.slice_times_s is not None:
        return np.asarray(acquisition.slice_times_s, dtype=np.float64)
    n_z = acquisition.hu.shape[1]
    return np.repeat(np.asarray(acquisition.times_s, dtype=np.float64)[:, None], n_z, 1)


def _slice_positions_mm(acquisition: Acquisition) -> np.ndarray:
    """ImagePositionPatient per slice; synthesised along the slice normal when absent."""
    n_z = acquisition.hu.shape[1]
    positions = np.asarray(acquisition.slice_positions_mm, dtype=np.float64)
    if positions.shape == (n_z, 3):
        return positions
    if positions.size:
        raise ValueError(
            f"slice_positions_mm must be ({n_z}, 3) for {n_z} slices; got {positions.shape}"
        )
    normal = np.cross(acquisition.orientation[:3], acquisition.orientation[3:])
    return np.arange(n_z)[:, None] * acquisition.slice_spacing_mm * normal[None, :]


def _ct_image(
    acquisition: Acquisition,
    identity: StudyIdentity,
    *,
    series_description: str,
    series_number: int,
    series_datetime: datetime,
    image_datetime: datetime,
    sop_instance_uid: str,
    instance_number: int,
    temporal_position_index: int,
    number_of_temporal_positions: int,
    position_mm: np.ndarray,
    slice_location_mm: float,
    shape: tuple[int, int],
) -> Dataset:
    ds = Dataset()
    ds.file_meta = _file_meta(sop_instance_uid)
    # SOP Common
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceCreationDate = _da(image_datetime)
    ds.InstanceCreationTime = _tm(image_datetime)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_instance_uid
    _set_study_and_patient(ds, identity, acquisition.facts, series_datetime, image_datetime)
    ds.SeriesDescription = series_description
    _set_technique(ds, acquisition)
    # General Series / Study / Acquisition / Image identification
    ds.StudyInstanceUID = identity.study_instance_uid
    ds.SeriesInstanceUID = identity.series_instance_uid
    ds.StudyID = identity.study_id
    ds.SeriesNumber = series_number
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = instance_number
    ds.PatientOrientation = ""
    # Image Plane / Frame of Reference
    ds.ImagePositionPatient = [_ds(v) for v in position_mm]
    ds.ImageOrientationPatient = [_ds(v) for v in acquisition.orientation]
    ds.FrameOfReferenceUID = identity.frame_of_reference_uid
    ds.NumberOfTemporalPositions = number_of_temporal_positions
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = _ds(slice_location_mm)
    ds.TemporalPositionIndex = temporal_position_index
    _set_pixel_module(ds, acquisition, shape)
    return ds


def _file_meta(sop_instance_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"CTPNODE_{ctp_node.__version__}"[:16]
    return meta


def _set_study_and_patient(
    ds: Dataset,
    identity: StudyIdentity,
    facts: AcquisitionFacts,
    series_datetime: datetime,
    image_datetime: datetime,
) -> None:
    """General Study, dates and times, equipment and Patient."""
    ds.StudyDate = _da(identity.study_datetime)
    ds.SeriesDate = _da(series_datetime)
    ds.AcquisitionDate = _da(image_datetime)
    ds.ContentDate = _da(image_datetime)
    ds.AcquisitionDateTime = _dt(image_datetime)
    ds.StudyTime = _tm(identity.study_datetime)
    ds.SeriesTime = _tm(series_datetime)
    ds.AcquisitionTime = _tm(image_datetime)
    ds.ContentTime = _tm(image_datetime)
    ds.AccessionNumber = identity.accession_number
    ds.Modality = "CT"
    ds.Manufacturer = facts.manufacturer if facts.manufacturer is not None else "ctp-node phantom"
    ds.InstitutionName = "ctp-node"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = identity.study_description
    ds.ManufacturerModelName = facts.model if facts.model is not None else "digital phantom"
    # Patient
    ds.PatientName = identity.patient_name
    ds.PatientID = identity.patient_id
    ds.PatientBirthDate = (
        identity.patient_birth_date.strftime("%Y%m%d") if identity.patient_birth_date else ""
    )
    ds.PatientSex = identity.patient_sex
    if facts.patient_age_years is not None:
        ds.PatientAge = f"{min(int(facts.patient_age_years), 999):03d}Y"


def _set_technique(ds: Dataset, acquisition: Acquisition) -> None:
    """Contrast/Bolus (only what the acquisition records), the CT acquisition parameters and,
    when recorded, CTDIvol."""
    facts = acquisition.facts
    if facts.contrast_agent is not None:
        ds.ContrastBolusAgent = facts.contrast_agent
    ds.BodyPartExamined = "HEAD"
    ds.SliceThickness = _ds(acquisition.slice_spacing_mm)
    ds.KVP = _ds(facts.kvp) if facts.kvp is not None else None
    ds.SpacingBetweenSlices = _ds(acquisition.slice_spacing_mm)
    ds.SoftwareVersions = ctp_node.__version__
    ds.ExposureTime = _EXPOSURE_TIME_MS
    if facts.exposure_mas is not None:
        ds.XRayTubeCurrent = round(facts.exposure_mas * 1000.0 / _EXPOSURE_TIME_MS)
        ds.Exposure = round(facts.exposure_mas)
    ds.PatientPosition = "HFS"
    if facts.contrast_volume_ml is not None:
        ds.ContrastBolusVolume = _ds(facts.contrast_volume_ml)
    if facts.contrast_rate_ml_s is not None:
        ds.ContrastFlowRate = [_ds(facts.contrast_rate_ml_s)]
    if facts.ctdivol_mgy is not None:
        ds.CTDIvol = float(facts.ctdivol_mgy)
        # A brain perfusion CTDIvol refers to the 16 cm head phantom.
        phantom = Dataset()
        phantom.CodeValue = "113690"
        phantom.CodingSchemeDesignator = "DCM"
        phantom.CodeMeaning = "IEC Head Dosimetry Phantom"
        ds.CTDIPhantomTypeCodeSequence = [phantom]


def _set_pixel_module(ds: Dataset, acquisition: Acquisition, shape: tuple[int, int]) -> None:
    """Image Pixel and the CT Image rescale: ``round(HU) + 1024`` in 12 bits."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = shape
    ds.PixelSpacing = [_ds(v) for v in acquisition.pixel_spacing_mm]
    ds.BitsAllocated = 16
    ds.BitsStored = _BITS_STORED
    ds.HighBit = _BITS_STORED - 1
    ds.PixelRepresentation = 0
    ds.WindowCenter = "40"
    ds.WindowWidth = "80"
    ds.RescaleIntercept = _ds(RESCALE_INTERCEPT_HU)
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"


def _ds(value: float) -> str:
    """A DS string (≤ 16 characters) keeping as many digits of ``value`` as fit."""
    text = format_number_as_ds(float(value))
    return "0" if float(text) == 0.0 else text


def _da(moment: datetime) -> str:
    return moment.strftime("%Y%m%d")


def _tm(moment: datetime) -> str:
    return moment.strftime("%H%M%S.%f")


def _dt(moment: datetime) -> str:
    return moment.strftime("%Y%m%d%H%M%S.%f")


__all__ = ["RESCALE_INTERCEPT_HU", "StudyIdentity", "write_ct_series"]
