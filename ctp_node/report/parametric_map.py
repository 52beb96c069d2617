"""Perfusion maps as DICOM Parametric Maps (SOP class 1.2.840.10008.5.1.4.1.1.30).

One instance, in its own series, per map of :data:`~ctp_node.perfusion.result.MAP_UNITS`: float32
frames at the source slice positions, a Real World Value Mapping whose ``LUTLabel`` is the map's
name, UCUM units, and the quantity coded from DICOM CID 4108 (Tracer Kinetic Model Parameters).

Voxels outside the brain tissue hold 0. Brain voxels whose value the acquisition cannot support
(:attr:`PerfusionResult.unsupported`: CBV and MTT where most of the bolus passage came after the
last image, TTP where the curve peaks on the last image) hold NaN, the IEEE 754 not-a-number that
Float Pixel Data may carry (PS3.5 §6.2, CP-2352), and the instance's Image Comments say how many
and why; without a venous curve, the CBF and CBV maps' Image Comments say they are not corrected
for partial volume.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from ctp_node.perfusion.maps.stage import PASSAGE_SUPPORT_MIN
from ctp_node.perfusion.result import MAP_UNITS, PERMEABILITY_UNITS, PerfusionResult
from ctp_node.report.settings import ReportSettings
from ctp_node.report.source_headers import declare_utf8


@dataclass(frozen=True)
class MapDefinition:
    """How one perfusion map is described in DICOM.

    Attributes
    ----------
    name : the map's name; also the RWVM ``LUTLabel`` and the start of SeriesDescription.
    explanation : LUTExplanation and ContentDescription (≤ 64 characters).
    quantity : coded quantity from DICOM CID 4108.
    unit : UCUM unit code (:data:`MAP_UNITS`).
    window : the conventional display window ``(lower, upper)`` in the map's unit: the window
        of a map whose ``window_from`` is ``"fixed"``, and of any map when the study has no
        tissue to measure.
    window_from : how :func:`map_window` chooses the study's window: ``"fixed"`` (Tmax: its
        clinical thresholds, 6 s and 10 s, are absolute, so its colours mean the same seconds
        in every study), ``"tissue"`` (CBF, CBV, MTT: from 0 to the brain's upper values, which
        differ between scanners, protocols and patients; a fixed window saturates a brain with
        high values and squeezes one with low values into a few colours) or ``"bolus"`` (TTP:
        around the brain's arrival times, as TTP counts from the first image).
    """

    name: str
    explanation: str
    quantity: Code
    unit: Code
    window: tuple[float, float]
    window_from: str


def _ucum(value: str, meaning: str) -> Code:
    return Code(value=value, scheme_designator="UCUM", meaning=meaning)


#: The maps in report order (MAP_UNITS order), with their DICOM descriptions.
MAP_DEFINITIONS: tuple[MapDefinition, ...] = (
    MapDefinition(
        name="CBF",
        explanation="Cerebral blood flow",
        quantity=codes.DCM.AbsoluteRegionalBloodFlow,
        unit=_ucum(MAP_UNITS["CBF"], "ml/100g/min"),
        window=(0.0, 60.0),
        window_from="tissue",
    ),
    MapDefinition(
        name="CBV",
        explanation="Cerebral blood volume",
        quantity=codes.DCM.AbsoluteRegionalBloodVolume,
        unit=_ucum(MAP_UNITS["CBV"], "ml/100g"),
        window=(0.0, 6.0),
        window_from="tissue",
    ),
    MapDefinition(
        name="MTT",
        explanation="Mean transit time",
        quantity=codes.DCM.MeanTransitTime,
        unit=_ucum(MAP_UNITS["MTT"], "second"),
        window=(0.0, 12.0),
        window_from="tissue",
    ),
    MapDefinition(
        name="TTP",
        explanation="Time to peak, from the first image of the acquisition",
        quantity=codes.DCM.TimeToPeak,
        unit=_ucum(MAP_UNITS["TTP"], "second"),
        window=(0.0, 60.0),
        window_from="bolus",
    ),
    MapDefinition(
        name="Tmax",
        explanation="Time to the maximum of the residue function",
        quantity=codes.DCM.Tmax,
        unit=_ucum(MAP_UNITS["Tmax"], "second"),
        window=(0.0, 10.0),
        window_from="fixed",
    ),
)

assert tuple(d.name for d in MAP_DEFINITIONS) == tuple(MAP_UNITS), "MAP_UNITS order changed"

#: The tumour profile's permeability map, after the five (SeriesNumber start + 5). DICOM's
#: quantity for it is DCM 126312 "Ktrans" (CID 4107 / 7469, the volume transfer constant
#: between blood plasma and the extravascular extracellular space), the same quantity DCE-MRI
#: reports per minute; CT perfusion reports it per 100 g of tissue, so the unit is
#: ``ml/[100]g/min`` (K^trans in 1/min × 100 / ρ). The window is fixed, 0–10: intact barrier
#: reads 0–0.5 and enhancing tumours 2–15, and fixed colours mean the same leak in every study.
KTRANS_DEFINITION = MapDefinition(
    name="Ktrans",
    explanation="Volume transfer constant Ktrans, Patlak with back-flux",
    quantity=codes.DCM.Ktrans,
    unit=_ucum(PERMEABILITY_UNITS["Ktrans"], "ml/100g/min"),
    window=(0.0, 10.0),
    window_from="fixed",
)


def map_definitions(result: PerfusionResult) -> tuple[MapDefinition, ...]:
    """The Parametric Maps ``result`` gives, in report order: the five of
    :data:`MAP_DEFINITIONS`, and K^trans when the permeability was measured."""
    if "Ktrans" in result.maps:
        return (*MAP_DEFINITIONS, KTRANS_DEFINITION)
    return MAP_DEFINITIONS


def build_parametric_maps(
    result: PerfusionResult,
    source_images: Sequence[pydicom.Dataset],
    settings: ReportSettings,
) -> list[pydicom.Dataset]:
    """One Parametric Map instance (in its own series) per map, in :data:`MAP_UNITS` order.

    Parameters
    ----------
    result : the engine's result; ``result.maps[name]`` is float32 ``(z, y, x)``.
    source_images : the CT images of one time point of the source series, one per slice, in the
        order of the result's z axis. Header-only datasets (read with
        ``stop_before_pixels=True``) are enough: highdicom takes geometry, patient and study
        from the headers and never reads the source pixels.
    settings : numbering, device identity and algorithm version.

    Returns
    -------
    Five ``highdicom.pm.ParametricMap`` datasets (CBF, CBV, MTT, TTP, Tmax; and Ktrans when
    ``result`` measured the permeability), ready to be saved
    or sent. Their Series and SOP Instance UIDs are derived from the source series UID, the map
    and ``settings.version`` (see :meth:`ReportSettings.uid`), so building twice gives the same
    UIDs.

    Frames sit at the source slice positions in the order of the source images (the result's
    z axis), as the summary pages show the slices: slice 1 of the pages is frame 1. Readers may
    still place frames by their Plane Position (or ``ParametricMap.get_volume()``).

    highdicom builds the first map (and checks it); the others are copies of its skeleton (the
    per-frame functional groups, geometry, patient and study, equipment) with their own UIDs,
    numbering, description, mapping, window and pixels, which saves ~4/5 of highdicom's work.

    Raises
    ------
    ValueError
        If a map is missing or its shape does not match the source images.
    """
    source_images = list(source_images)
    _check_sources(source_images)
    definitions = map_definitions(result)
    values = {d.name: _map_values(result, d.name, source_images) for d in definitions}
    first = definitions[0]
    sources, geometry = _highdicom_sources(source_images)
    skeleton = hd.pm.ParametricMap(
        source_images=sources,
        pixel_array=values[first.name],
        **_identity(first, 0, source_images[0], settings),
        manufacturer=settings.manufacturer,
        manufacturer_model_name=settings.manufacturer_model_name,
        software_versions=settings.software_version,
        device_serial_number=settings.device_serial_number,
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[_mapping(first, values[first.name])],
        voi_lut_transformations=[_window(first, result)],
        image_flavor=hd.pm.ImageFlavorValues.PERFUSION,
        derived_pixel_contrast=hd.pm.DerivedPixelContrastValues.QUANTITY,
        derivation=codes.DCM.PerfusionImageAnalysis,
        content_qualification=settings.content_qualification,
        **geometry,
    )
    _in_source_order(skeleton, source_images, geometry)
    _describe_anatomy(skeleton, source_images[0])
    if settings.institution_name is not None:
        skeleton.InstitutionName = settings.institution_name
    maps = []
    for index, definition in enumerate(definitions):
        parametric_map = skeleton if index == 0 else _sibling(skeleton)
        identity = _identity(definition, index, source_images[0], settings)
        _describe_map(parametric_map, definition, identity, values[definition.name], result)
        parametric_map.SeriesDescription = settings.series_description(definition.name)
        maps.append(declare_utf8(parametric_map))
    return maps


def _identity(
    definition: MapDefinition, index: int, source: pydicom.Dataset, settings: ReportSettings
) -> dict[str, object]:
    """The map's series and instance: UIDs, numbers, content label and description."""
    source_series_uid = str(source.SeriesInstanceUID)
    kind = f"PM-{definition.name}"
    return {
        "series_instance_uid": settings.uid(source_series_uid, kind),
        "series_number": settings.series_number_start + index,
        "sop_instance_uid": settings.uid(source_series_uid, kind, "instance", "1"),
        "instance_number": 1,
        "content_label": definition.name.upper(),
        "content_description": definition.explanation,
    }


def _mapping(definition: MapDefinition, values: np.ndarray) -> hd.pm.RealWorldValueMapping:
    finite = values[np.isfinite(values)]
    value_range = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    return hd.pm.RealWorldValueMapping(
        lut_label=definition.name,
        lut_explanation=definition.explanation,
        unit=definition.unit,
        value_range=value_range,
        slope=1.0,
        intercept=0.0,
        quantity_definition=definition.quantity,
    )


def _window(definition: MapDefinition, result: PerfusionResult) -> hd.VOILUTTransformation:
    lower, upper = map_window(definition.name, result)
    return hd.VOILUTTransformation(
        # Lists throughout: highdicom splits a bare explanation string into characters, and
        # then wants lists for centre and width too.
        window_center=[(lower + upper) / 2.0],
        window_width=[max(upper - lower, 1e-3)],
        window_explanation=[f"{definition.name} {lower:g}-{upper:g}"],
    )


def _sibling(skeleton: pydicom.Dataset) -> pydicom.Dataset:
    """A deep copy of ``skeleton`` without its pixels, with a dimension organisation UID of
    its own."""
    pixels = skeleton.FloatPixelData
    del skeleton.FloatPixelData
    try:
        sibling = copy.deepcopy(skeleton)
    finally:
        skeleton.FloatPixelData = pixels
    uid = hd.UID()
    sibling.DimensionOrganizationSequence[0].DimensionOrganizationUID = uid
    for item in sibling.DimensionIndexSequence:
        item.DimensionOrganizationUID = uid
    return sibling


def _describe_map(
    parametric_map: pydicom.Dataset,
    definition: MapDefinition,
    identity: dict[str, object],
    values: np.ndarray,
    result: PerfusionResult,
) -> None:
    """Give ``parametric_map`` (the skeleton or a copy of it) map ``definition``'s identity,
    ``identity`` (:func:`_identity`), mapping,
    window and pixels (``values`` in source order)."""
    for keyword, value in identity.items():
        setattr(parametric_map, _KEYWORDS.get(keyword, keyword), value)
    parametric_map.file_meta.MediaStorageSOPInstanceUID = parametric_map.SOPInstanceUID
    shared = parametric_map.SharedFunctionalGroupsSequence[0]
    shared.RealWorldValueMappingSequence = [_mapping(definition, values)]
    shared.FrameVOILUTSequence = [_window(definition, result)]
    parametric_map.FloatPixelData = values.tobytes()
    comments = map_comments(definition.name, result)
    if comments:
        parametric_map.ImageComments = comments
    elif "ImageComments" in parametric_map:
        del parametric_map.ImageComments


#: Maps whose absolute values scale with the arterial curve's venous partial-volume correction
#: (MTT, their ratio, and the times do not).
_SCALED_BY_THE_VEIN = ("CBF", "CBV")


def map_comments(name: str, result: PerfusionResult) -> str:
    """What a reader of map ``name`` must know about its values (General Image's Image
    Comments; empty when nothing): the voxels it leaves NaN and why, and, for CBF and CBV,
    that no vein was found to correct the arterial curve's partial volume."""
    notes = []
    unsupported = result.unsupported.get(name)
    if unsupported is not None and unsupported.any():
        why = (
            "their curve peaks on the last image, so the peak may come later"
            if name == "TTP"
            else f"less than {100 * PASSAGE_SUPPORT_MIN:.0f} % of their bolus passage was "
            "acquired, so the value would be more extrapolation than measurement"
        )
        notes.append(
            f"NaN (not a number) marks {int(unsupported.sum())} brain voxels whose {name} the "
            f"acquisition cannot support: {why}."
        )
    if name in _SCALED_BY_THE_VEIN and result.vof is None:
        notes.append(
            "No venous outflow curve was found: the arterial curve is not corrected for "
            f"partial volume, so absolute {name} may be overestimated."
        )
    return " ".join(notes)


#: DICOM keywords of :func:`_identity`'s keys.
_KEYWORDS = {
    "series_instance_uid": "SeriesInstanceUID",
    "series_number": "SeriesNumber",
    "sop_instance_uid": "SOPInstanceUID",
    "instance_number": "InstanceNumber",
    "content_label": "ContentLabel",
    "content_description": "ContentDescription",
}


def _in_source_order(
    parametric_map: pydicom.Dataset, source_images: list[pydicom.Dataset], geometry: dict
) -> None:
    """Put the per-frame functional groups in the order of the source slices (highdicom
    sorts them along its own slice normal); the caller writes the pixels in that order."""
    if "plane_positions" in geometry:
        wanted = [p[0].ImagePositionPatient for p in geometry["plane_positions"]]
    else:
        wanted = [ds.ImagePositionPatient for ds in source_images]
    wanted_mm = np.asarray(wanted, dtype=float)
    frames = list(parametric_map.PerFrameFunctionalGroupsSequence)
    frame_mm = np.asarray(
        [f.PlanePositionSequence[0].ImagePositionPatient for f in frames], dtype=float
    )
    order = [int(np.argmin(np.abs(frame_mm - p).sum(axis=1))) for p in wanted_mm]
    if sorted(order) != list(range(len(frames))):
        raise ValueError("the Parametric Map's frames do not match the source slice positions")
    parametric_map.PerFrameFunctionalGroupsSequence = [frames[i] for i in order]


def _describe_anatomy(parametric_map: pydicom.Dataset, source: pydicom.Dataset) -> None:
    """Carry the examined body part over from the source (highdicom does not).

    Without BodyPartExamined the General Series module's Laterality (Type 2C, required for
    paired body parts) cannot be shown to be unnecessary, so it is then written empty
    ("unknown"), which validators accept.
    """
    body_part = str(source.get("BodyPartExamined", "") or "")
    if body_part:
        parametric_map.BodyPartExamined = body_part
    elif "Laterality" not in parametric_map:
        parametric_map.Laterality = ""


def _highdicom_sources(
    source_images: list[pydicom.Dataset],
) -> tuple[list[pydicom.Dataset], dict[str, object]]:
    """Sources and geometry arguments for highdicom.

    Classic CT: one header per slice, and highdicom takes the geometry from them. Enhanced CT
    (a multi-frame IOD): highdicom wants the one instance, so the per-slice views (see
    :func:`ctp_node.assemble.loader.slice_headers`) give the geometry explicitly, in z order.
    """
    first = source_images[0]
    if str(first.SOPClassUID) not in _MULTI_FRAME_CT:
        return source_images, {}
    instances = {str(ds.SOPInstanceUID) for ds in source_images}
    if len(instances) != 1:
        raise ValueError(
            "the slices of one time point are spread over several Enhanced CT instances; "
            "the Parametric Map can reference one"
        )
    spacing = [float(v) for v in first.PixelSpacing]
    geometry: dict[str, object] = {
        "plane_positions": [
            hd.PlanePositionSequence(
                hd.CoordinateSystemNames.PATIENT,
                image_position=[float(v) for v in ds.ImagePositionPatient],
            )
            for ds in source_images
        ],
        "plane_orientation": hd.PlaneOrientationSequence(
            hd.CoordinateSystemNames.PATIENT,
            image_orientation=[float(v) for v in first.ImageOrientationPatient],
        ),
        "pixel_measures": hd.PixelMeasuresSequence(
            pixel_spacing=spacing, slice_thickness=float(first.get("SliceThickness") or 1.0)
        ),
    }
    return [first], geometry


#: Multi-frame CT storage classes (Enhanced CT, Legacy Converted Enhanced CT).
_MULTI_FRAME_CT = {"1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2"}


def _check_sources(source_images: list[pydicom.Dataset]) -> None:
    if not source_images:
        raise ValueError("source_images is empty: pass the CT images of one time point")
    series = {str(ds.SeriesInstanceUID) for ds in source_images}
    if len(series) != 1:
        raise ValueError(
            f"source_images must come from one series; got {len(series)} series: {sorted(series)}"
        )


def _map_values(
    result: PerfusionResult, name: str, source_images: list[pydicom.Dataset]
) -> np.ndarray:
    """The map as float32 ``(z, y, x)``, checked against the source geometry."""
    if name not in result.maps:
        raise ValueError(f"the result has no {name} map; it has {sorted(result.maps)}")
    values = np.ascontiguousarray(result.reported(name), dtype=np.float32)
    expected = (len(source_images), int(source_images[0].Rows), int(source_images[0].Columns))
    if values.shape != expected:
        raise ValueError(
            f"the {name} map has shape {values.shape}, but the source images are "
            f"{expected[0]} slices of {expected[1]}x{expected[2]} pixels"
        )
    return values


#: The brain's TTP window runs between these percentiles of its TTP values, rounded outward to
#: whole seconds: TTP counts from the first image, so a fixed window (0 s to the acquisition's
#: end) would spend most of its colours on times before the bolus arrives and squeeze the brain,
#: whose TTP lies within ~10 s of the arrival, into one colour.
TTP_WINDOW_PERCENTILES = (2.0, 98.0)
#: Narrowest TTP window, s (a uniform brain still gets a readable scale around its value).
TTP_WINDOW_MIN_S = 6.0
#: A CBF, CBV or MTT window runs from 0 to this percentile of the brain's values, rounded up to
#: a readable number (:data:`READABLE_STEPS`): the top 2 % (vessels left in the tissue, noise)
#: saturate instead of taking the colours from the parenchyma.
TISSUE_WINDOW_PERCENTILE = 98.0
#: The narrowest tissue window, as a fraction of the map's conventional window (``window``):
#: a brain with almost no flow still shows its values on a scale, not its noise stretched over
#: every colour.
TISSUE_WINDOW_MIN_FRACTION = 0.25
#: The upper ends a tissue window is rounded up to, times a power of ten (at most 25 % above the
#: percentile, so the colour bar's labels stay round).
READABLE_STEPS = (1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0)
#: Every how many pixels in-plane the percentiles are sampled (a window needs no more).
_WINDOW_SAMPLING = 4


def map_window(name: str, result: PerfusionResult) -> tuple[float, float]:
    """The display window ``(lower, upper)`` of map ``name`` in its unit, chosen from this
    study's brain as its :class:`MapDefinition`'s ``window_from`` says (Tmax: fixed; CBF, CBV,
    MTT: 0 to the :data:`TISSUE_WINDOW_PERCENTILE` of the tissue's values, rounded up; TTP: the
    :data:`TTP_WINDOW_PERCENTILES`, at least :data:`TTP_WINDOW_MIN_S` wide). Without tissue
    values: the conventional ``window`` (TTP: the acquisition). The pages' colour bars and the
    Parametric Maps' VOI (its explanation states the window) both use it."""
    definition = next(d for d in map_definitions(result) if d.name == name)
    if definition.window_from == "fixed":
        return definition.window
    step = (slice(None), slice(None, None, _WINDOW_SAMPLING), slice(None, None, _WINDOW_SAMPLING))
    values = result.reported(name)[step][result.tissue_mask[step]]
    values = values[np.isfinite(values)]
    if definition.window_from == "tissue":
        if values.size == 0:
            return definition.window
        narrowest = TISSUE_WINDOW_MIN_FRACTION * definition.window[1]
        high = float(np.percentile(values, TISSUE_WINDOW_PERCENTILE))
        return 0.0, readable_ceiling(max(high, narrowest))
    if values.size == 0:
        return 0.0, _duration_s(result)
    low, high = np.percentile(values, TTP_WINDOW_PERCENTILES)
    lower, upper = float(np.floor(low)), float(np.ceil(high))
    if upper - lower < TTP_WINDOW_MIN_S:
        middle = round((lower + upper) / 2)
        lower, upper = middle - TTP_WINDOW_MIN_S / 2, middle + TTP_WINDOW_MIN_S / 2
    return max(0.0, lower), upper


def readable_ceiling(value: float) -> float:
    """The smallest of :data:`READABLE_STEPS` × 10^k at or above ``value`` (> 0)."""
    power = 10.0 ** np.floor(np.log10(value))
    mantissa = value / power
    step = next(s for s in READABLE_STEPS if s >= mantissa - 1e-9)
    return float(round(step * power, 10))


def _duration_s(result: PerfusionResult) -> float:
    """Duration of the acquisition in seconds."""
    times_s = np.asarray(result.aif.times_s, dtype=np.float64)
    if times_s.size >= 2 and times_s[-1] > times_s[0]:
        return float(times_s[-1] - times_s[0])
    return 60.0
