"""The summary pages as an RGB Secondary Capture series: what any PACS viewer can show.

One series (SeriesNumber ``settings.series_number_start + SERIES_NUMBER_OFFSET``), one instance
per page, in reading order:

1. the profile's first page: the core / hypoperfusion mismatch with the volumes and the
   DEFUSE 3 statement (stroke), the hemispheric asymmetry (vasospasm) or the enhancing region
   with each map's means (tumour);
2. to 6. the colour maps CBF, CBV, MTT, Tmax, TTP with colour bars and units (and 7., K^trans,
   for the tumour profile);
then the quality page: AIF and VOF curves and locations, acquisition facts, warnings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import highdicom as hd
import numpy as np
import pydicom

from ctp_node.perfusion.acquisition import Acquisition
from ctp_node.perfusion.result import PerfusionResult
from ctp_node.profiles import DEFAULT_CHOICE, ProfileChoice
from ctp_node.qc import QualityFinding
from ctp_node.report.asymmetry_page import render_asymmetry_page
from ctp_node.report.permeability_page import render_permeability_page
from ctp_node.report.quality_page import quality_banner, render_quality_page
from ctp_node.report.render_pool import PageRenders
from ctp_node.report.settings import ReportSettings
from ctp_node.report.source_headers import declare_utf8
from ctp_node.report.summary_pages import render_map_page, render_mismatch_page

#: SeriesNumber of the summary relative to ``settings.series_number_start``.
SERIES_NUMBER_OFFSET = 20
#: Output kind in the derived UIDs.
KIND = "SC"
#: Colour maps in page order (Tmax before TTP: it drives the hypoperfusion volume).
MAP_PAGES = ("CBF", "CBV", "MTT", "Tmax", "TTP", "Ktrans")
#: The pages in the series, in reading order, and the two that take longest to draw.
_READING_ORDER = ("mismatch", "asymmetry", "permeability", *MAP_PAGES, "quality")
_SLOW_PAGES = ("mismatch", "asymmetry", "permeability", "quality")


def build_secondary_captures(
    *args: Any, processes: int = 0, **kwargs: Any
) -> list[pydicom.Dataset]:
    """The summary pages of a result as RGB Secondary Capture images, in one series: the
    arguments are :class:`SummaryCaptures`'s, and by default the pages are drawn in this
    process."""
    with SummaryCaptures(*args, processes=processes, **kwargs) as captures:
        return captures.datasets()


class SummaryCaptures:
    """The summary series being built: its pages are being drawn from construction on, and
    :meth:`datasets` returns them as Secondary Capture instances. Use as a context manager, so
    that the drawing processes stop if the caller fails first.

    Parameters
    ----------
    result : the engine's result (maps ``(z, y, x)``, masks, curves, volumes).
    acquisition : the acquisition it was computed from (background images, times, geometry,
        header facts).
    source_images : images of the source series (headers suffice); patient and study are taken
        from the first and burned into every page.
    settings : numbering, device identity and algorithm version.
    notes : further findings to print on the quality page (e.g. the assembler's notes).
    quality : the acquisition quality findings: listed on the quality page, and a banner on the
        first page names the checks that warned.
    profile : the protocol profile and what chose it, stated on the first page and the
        quality page; the first page is the mismatch page for a profile with stroke volumes,
        the hemispheric asymmetry page for a result with a hemispheric comparison, the
        permeability page for a result with a permeability measurement.
    processes : other processes drawing the pages while the caller does something else
        (:class:`~ctp_node.report.render_pool.PageRenders`; default one per usable CPU but
        one); 0 draws them in this process when :meth:`datasets` is called.

    :meth:`datasets` returns ``highdicom.sc.SCImage`` datasets, 8-bit RGB, 1280 × 1024 pixels,
    with Series and SOP Instance UIDs derived from the source series UID, ``"SC"`` and the
    version key (:meth:`ReportSettings.uid`).
    """

    def __init__(
        self,
        result: PerfusionResult,
        acquisition: Acquisition,
        source_images: Sequence[pydicom.Dataset],
        settings: ReportSettings,
        *,
        notes: Sequence[str] = (),
        quality: Sequence[QualityFinding] = (),
        processes: int | None = None,
        profile: ProfileChoice = DEFAULT_CHOICE,
    ) -> None:
        source_images = list(source_images)
        if not source_images:
            raise ValueError("source_images is empty: pass the CT images of the source series")
        if result.tissue_mask.shape != acquisition.hu.shape[1:]:
            raise ValueError(
                f"the result's grid {result.tissue_mask.shape} does not match the "
                f"acquisition's {acquisition.hu.shape[1:]}"
            )
        self._source, self._settings = source_images[0], settings
        self._orientation = acquisition.orientation
        renders = _page_renders(
            result, acquisition, self._source, settings, notes, quality, profile
        )
        # The drawing processes take the pages from the front, the caller from the back: the
        # two slow pages (0.3-0.4 s, the colour maps 0.15 s) first, so that the work evens out.
        renders.sort(key=lambda page: page[0] not in _SLOW_PAGES)
        self._names = [name for name, _ in renders]
        self._pages = PageRenders([render for _, render in renders], processes)

    def __enter__(self) -> SummaryCaptures:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._pages.close()

    def datasets(self) -> list[pydicom.Dataset]:
        """The pages, once drawn, as Secondary Capture instances in reading order."""
        descriptions = {
            "mismatch": "Core/hypoperfusion mismatch and volumes",
            "asymmetry": "Hemispheric asymmetry",
            "permeability": "Permeability: enhancing region and its means",
            "quality": "AIF/VOF curves and acquisition quality",
        }
        settings = self._settings
        return [
            sc_page(
                pixels,
                self._source,
                settings,
                kind=KIND,
                number=index + 1,
                series_number=settings.series_number_start + SERIES_NUMBER_OFFSET,
                series_description=settings.series_description("CTP summary"),
                page_description=descriptions.get(name, f"{name} colour map"),
                orientation=self._orientation,
            )
            for index, (name, pixels) in enumerate(
                sorted(
                    zip(self._names, self._pages.results(), strict=True),
                    key=lambda page: _READING_ORDER.index(page[0]),
                )
            )
        ]


def _style(result: PerfusionResult, settings: ReportSettings) -> dict[str, Any]:
    """Every page's footer, research banner and version statement."""
    return {
        "footer": _footer(result, settings),
        "research": settings.content_qualification != "PRODUCT",
        "version": settings.version.statement(),
    }


def _page_renders(
    result: PerfusionResult,
    acquisition: Acquisition,
    source: pydicom.Dataset,
    settings: ReportSettings,
    notes: Sequence[str],
    quality: Sequence[QualityFinding],
    profile: ProfileChoice,
) -> list[tuple[str, Callable[[], np.ndarray]]]:
    """Each page's name and the function that draws it, in reading order: first the mismatch
    page (a profile with stroke volumes) and the asymmetry page (a hemispheric comparison),
    then the maps and the quality page (with the profile statement first among its notes)."""
    style = _style(result, settings)
    banner = quality_banner(quality)
    renders: list[tuple[str, Callable[[], np.ndarray]]] = []
    if profile.profile.stroke_volumes:
        renders.append(
            (
                "mismatch",
                lambda: render_mismatch_page(
                    result, acquisition, source, quality_banner=banner, **style
                ),
            )
        )
    first_pages = {"asymmetry": render_asymmetry_page, "permeability": render_permeability_page}
    for name, render in first_pages.items():
        if getattr(result, name) is not None:
            renders.append(
                (
                    name,
                    partial(
                        render,
                        result,
                        acquisition,
                        source,
                        profile_statement=profile.statement(),
                        quality_banner=banner,
                        **style,
                    ),
                )
            )
    notes = [profile.statement(), *notes]
    renders += [
        (name, lambda name=name: render_map_page(name, result, acquisition, source, **style))
        for name in MAP_PAGES
        if name in result.maps
    ]
    renders.append(
        (
            "quality",
            lambda: render_quality_page(
                result, acquisition, source, notes=notes, quality=quality, **style
            ),
        )
    )
    return renders


def sc_page(
    pixels: np.ndarray,
    source: pydicom.Dataset,
    settings: ReportSettings,
    *,
    kind: str,
    number: int,
    series_number: int,
    series_description: str,
    page_description: str,
    orientation: Sequence[float] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
) -> hd.sc.SCImage:
    """One rendered RGB page as a Secondary Capture instance of the source study.

    ``kind`` and ``number`` make its UIDs: the series UID from ``kind`` alone, the instance UID
    from ``kind`` and ``number``.
    """
    source_series_uid = str(source.SeriesInstanceUID)
    page = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=pixels,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=settings.uid(source_series_uid, kind),
        series_number=series_number,
        sop_instance_uid=settings.uid(source_series_uid, kind, "instance", str(number)),
        instance_number=number,
        manufacturer=settings.manufacturer,
        patient_orientation=_patient_orientation(orientation),
        transfer_syntax_uid=pydicom.uid.ExplicitVRLittleEndian,
    )
    page.SeriesDescription = series_description.strip()[:64]
    page.DerivationDescription = page_description[:1024]
    page.ImageComments = page_description
    # Rendered on a workstation, not digitised; the burned-in identification must be known to
    # anyone de-identifying the study.
    page.ConversionType = "WSD"
    page.BurnedInAnnotation = "YES"
    page.RecognizableVisualFeatures = "NO"
    page.ManufacturerModelName = settings.manufacturer_model_name
    page.SoftwareVersions = settings.software_version
    if settings.institution_name is not None:
        page.InstitutionName = settings.institution_name
    if "BodyPartExamined" in source and source.BodyPartExamined:
        page.BodyPartExamined = source.BodyPartExamined
    elif "Laterality" not in page:
        page.Laterality = ""
    return declare_utf8(page)


def _footer(result: PerfusionResult, settings: ReportSettings) -> str:
    return (
        f"{settings.manufacturer} {settings.software_version} | {result.algorithm} | "
        "computed maps; verify against the source images"
    )


def _patient_orientation(orientation: Sequence[float]) -> tuple[str, str]:
    """PatientOrientation of an image drawn in the source orientation (e.g. ``("L", "P")``)."""
    letters = []
    for cosines in (orientation[:3], orientation[3:6]):
        vector = np.asarray(cosines, dtype=float)
        axis = int(np.argmax(np.abs(vector)))
        positive, negative = (("L", "R"), ("P", "A"), ("H", "F"))[axis]
        letters.append(positive if vector[axis] > 0 else negative)
    return letters[0], letters[1]
