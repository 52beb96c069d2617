"""One acquisition end to end: load, compute, build the DICOM outputs, write them and a summary.

Used by the worker (a job from the queue, outputs then enqueued to every destination) and by
``ctp-node process`` (files in, files out).
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from ctp_node.assemble import spill
from ctp_node.assemble.headers import UnreadableImageError, element_name, read_header
from ctp_node.assemble.layout import NotPerfusionError
from ctp_node.assemble.loader import Examination, LoadedSeries, examine_series, load_series
from ctp_node.perfusion import PerfusionResult
from ctp_node.perfusion.engine import ALGORITHM, compute_perfusion
from ctp_node.perfusion.errors import PerfusionError
from ctp_node.perfusion.parameters import PerfusionParameters
from ctp_node.perfusion.resolution import block_factor
from ctp_node.perfusion.result import RegionOfInterest
from ctp_node.profiles import (
    DEFAULT_CHOICE,
    DEFAULT_RULES,
    ProfileChoice,
    ProfileRule,
    choose_profile,
)
from ctp_node.qc import QualityFinding, QualityLimits, assess_acquisition
from ctp_node.receive.header import not_ct_reason
from ctp_node.report import (
    ReportSettings,
    build_failure_notice,
    build_parametric_maps,
    build_structured_report,
)
from ctp_node.report.secondary_capture import SummaryCaptures
from ctp_node.report.source_headers import with_readable_dates
from ctp_node.report.summary_png import write_summary_png
from ctp_node.report.versions import ResultVersion, content_digest, version_key
from ctp_node.results_summary import WrittenOutput, summarise
from ctp_node.user_region import UserRegion

log = logging.getLogger(__name__)

RESULTS_JSON = "results.json"
SUMMARY_PNG = "summary.png"


#: Engine parameters that change how fast a result is computed, not the result.
RESULT_NEUTRAL_PARAMETERS = frozenset({"worker_threads"})


class AcquisitionUnusableError(Exception):
    """The series cannot give maps; final (retrying will not help). The message says why."""


@dataclass(frozen=True)
class PipelineSettings:
    parameters: PerfusionParameters = field(default_factory=PerfusionParameters)
    report: ReportSettings = field(default_factory=ReportSettings)
    min_time_points: int = 10
    quality_limits: QualityLimits = field(default_factory=QualityLimits)
    #: A whole-resolution HU array larger than this (bytes) is held in a file in ``spill_dir``
    #: and its pages released while the engine works on its binned copy
    #: (:mod:`ctp_node.assemble.spill`); with no ``spill_dir`` it is always in memory.
    resident_hu_max_bytes: int | None = spill.RESIDENT_MAX_BYTES
    spill_dir: Path | None = None
    #: The ordered rules that choose each series' protocol profile (``profiles:``; without a
    #: configuration, the default rules: vasospasm and tumour by their protocols' words).
    profile_rules: tuple[ProfileRule, ...] = DEFAULT_RULES

    def digest_text(self) -> str:
        """Everything of the settings that changes a result, as stable text for its version's
        digest: the engine (its method and version), its parameters, the quality limits and
        the report's numbering and wording; not how many threads compute it."""
        parameters = {
            k: v for k, v in asdict(self.parameters).items() if k not in RESULT_NEUTRAL_PARAMETERS
        }
        report = {k: v for k, v in asdict(self.report).items() if k != "version"}
        rules = [(rule.match, rule.profile) for rule in self.profile_rules]
        return repr(
            (ALGORITHM, parameters, asdict(self.quality_limits), self.min_time_points, report)
            + ((rules,) if rules else ())
        )


@dataclass(frozen=True)
class ProcessedSeries:
    series_instance_uid: str
    outputs: list[WrittenOutput]
    summary: dict[str, Any]


@dataclass(frozen=True)
class ComputedSeries:
    """A series' maps and volumes, before any output is written.

    Attributes
    ----------
    loaded : the acquisition and its DICOM context.
    result : the engine's result.
    quality : the acquisition quality findings.
    load_s, compute_s : seconds spent reading the images and computing.
    profile : the protocol profile it was computed with, and what chose it.
    """

    loaded: LoadedSeries
    result: PerfusionResult
    quality: list[QualityFinding]
    load_s: float
    compute_s: float
    profile: ProfileChoice = DEFAULT_CHOICE

    @property
    def series_instance_uid(self) -> str:
        return str(self.loaded.header.SeriesInstanceUID)


def compute_series(
    paths: Sequence[Path],
    settings: PipelineSettings,
    *,
    aif_zyx: tuple[int, int, int] | None = None,
    vof_zyx: tuple[int, int, int] | None = None,
    other_slabs: int = 0,
    profile: str | None = None,
    calling_ae: str | None = None,
    region: UserRegion | None = None,
) -> ComputedSeries:
    """Load a series and compute its maps, volumes and quality findings.

    ``aif_zyx``/``vof_zyx`` are a person's choice of the arterial input and venous output,
    voxel indices ``(slice, row, column)``, 0-based; ``other_slabs`` is the number of further
    perfusion series (slabs with their own bolus) of the same study, for the quality checks.
    ``profile`` names the protocol profile a person asked for; without it the first of
    ``settings.profile_rules`` that matches the series' header (and ``calling_ae``, the AE
    title that sent it) chooses, else ``stroke``. ``region`` is a region a person gave, whose
    statistics the outputs report (``PerfusionResult.user_region``).

    Raises
    ------
    AcquisitionUnusableError : the series is unreadable, not a perfusion acquisition, or the
        engine cannot produce maps from it (reason in the message).
    """
    started = time.perf_counter()
    try:
        loaded = load_series(
            paths,
            settings.min_time_points,
            spill_dir=settings.spill_dir,
            resident_max_bytes=settings.resident_hu_max_bytes,
        )
        loaded = _engine_ready(loaded, settings.parameters)
        choice = choose_profile(
            loaded.header, settings.profile_rules, calling_ae=calling_ae, asked=profile
        )
        parameters = replace(
            settings.parameters,
            hemispheric_asymmetry=settings.parameters.hemispheric_asymmetry
            or choice.profile.asymmetry,
            permeability=settings.parameters.permeability or choice.profile.permeability,
        )
        loaded_s = time.perf_counter() - started
        result = compute_perfusion(
            loaded.acquisition,
            parameters,
            aif_zyx=aif_zyx,
            vof_zyx=vof_zyx,
            release_source=partial(spill.release, loaded.acquisition.hu),
        )
    except (UnreadableImageError, NotPerfusionError, PerfusionError) as exc:
        raise AcquisitionUnusableError(str(exc)) from exc
    if region is not None:
        result = replace(result, user_region=_region_of_interest(region, loaded, result))
    computed_s = time.perf_counter() - started - loaded_s
    limits = settings.quality_limits
    quality = assess_acquisition(
        loaded.acquisition,
        result,
        limits.for_permeability() if choice.profile.permeability else limits,
        other_slabs=other_slabs,
    )
    spill.release(loaded.acquisition.hu)  # the reports read only a few of its images
    return ComputedSeries(loaded, result, list(quality), loaded_s, computed_s, choice)


def _region_of_interest(
    region: UserRegion, loaded: LoadedSeries, result: PerfusionResult
) -> RegionOfInterest:
    """The tissue of ``region`` on the result's grid.

    Raises
    ------
    AcquisitionUnusableError : the region's centre lies outside the images.
    """
    acquisition = loaded.acquisition
    outside = region.outside(result.tissue_mask.shape)
    if outside is not None:
        raise AcquisitionUnusableError(outside)
    mask = result.tissue_mask & region.mask(
        result.tissue_mask.shape, acquisition.pixel_spacing_mm, acquisition.slice_spacing_mm
    )
    volume = float(mask.sum() * acquisition.voxel_volume_ml)
    return RegionOfInterest(mask, region.describe(), region.text(), volume)


def _engine_ready(loaded: LoadedSeries, parameters: PerfusionParameters) -> LoadedSeries:
    """``loaded``, its whole HU (int16) in float32 when the engine will not bin its pixels:
    the engine would otherwise make that float32 copy and hold it beside the int16 array."""
    acquisition = loaded.acquisition
    factor = block_factor(acquisition.pixel_spacing_mm, parameters.processing_pixel_mm)
    if factor > 1 or acquisition.hu.dtype == np.float32:
        return loaded
    hu = acquisition.hu.astype(np.float32)
    return replace(loaded, acquisition=replace(acquisition, hu=hu))


def write_outputs(
    computed: ComputedSeries, out_dir: Path, report: ReportSettings, *, summary_png: bool = True
) -> ProcessedSeries:
    """Build the DICOM outputs of a computed series (the version in ``report.version``) and
    write them, ``results.json`` and (with ``summary_png``) ``summary.png`` into ``out_dir``.

    ``serve``'s worker writes ``summary.png`` (:func:`write_summary_page`) once the outputs
    are queued for PACS: the page is for people reading the result folder, and rendering it
    (about half a second) would otherwise delay every output's sending."""
    started = time.perf_counter()
    loaded, result, quality = computed.loaded, computed.result, computed.quality
    out_dir.mkdir(parents=True, exist_ok=True)
    sources, notes = _output_sources(loaded.source_images, loaded.notes)
    # The summary pages are drawn in other processes while the maps and the SR are built.
    with SummaryCaptures(
        result,
        loaded.acquisition,
        sources,
        report,
        notes=notes,
        quality=quality,
        profile=computed.profile,
    ) as captures:
        outputs = [
            _save(dataset, out_dir, "parametric_maps")
            for dataset in build_parametric_maps(result, sources, report)
        ]
        structured_report = build_structured_report(
            result,
            sources,
            report,
            acquisition_facts=loaded.acquisition.facts,
            notes=notes,
            quality=quality,
            profile=computed.profile,
        )
        outputs += [_save(page, out_dir, "secondary_captures") for page in captures.datasets()]
    outputs.append(_save(structured_report, out_dir, "structured_report"))
    summary = summarise(loaded, result, outputs, quality, computed.profile)
    summary["version"] = {
        "number": report.version.number,
        "key": report.version.key,
        "statement": report.version.statement(),
    }
    summary["timing_s"] = {
        "load": round(computed.load_s, 2),
        "compute": round(computed.compute_s, 2),
        "total": round(computed.load_s + computed.compute_s + time.perf_counter() - started, 2),
    }
    (out_dir / RESULTS_JSON).write_text(json.dumps(summary, indent=2) + "\n")
    if summary_png:
        write_summary_page(computed, summary, out_dir)
    log.info(
        "series %s: %d outputs (version %d) in %.1f s (core %.1f ml, Tmax>6s %.1f ml)",
        computed.series_instance_uid,
        len(outputs),
        report.version.number,
        summary["timing_s"]["total"],
        result.volumes.core_ml,
        result.volumes.tmax6_ml,
    )
    return ProcessedSeries(computed.series_instance_uid, outputs, summary)


def write_summary_page(computed: ComputedSeries, summary: dict[str, Any], out_dir: Path) -> Path:
    """Write ``summary.png`` into ``out_dir`` (``summary``: what ``results.json`` holds, as
    :func:`write_outputs` returned it); returns its path."""
    path = out_dir / SUMMARY_PNG
    write_summary_png(computed.result, computed.loaded.acquisition, summary, path)
    return path


def first_version(
    computed: ComputedSeries, settings: PipelineSettings, *, aif_zyx=None, vof_zyx=None, region=None
) -> ResultVersion:  # type: ignore[no-untyped-def]
    """Version 1 of a series' result computed outside the node's queue (``ctp-node process``):
    its UIDs are those the node gives the same inputs' first version."""
    digest = content_digest(
        computed.series_instance_uid,
        computed.loaded.sop_instance_uids,
        algorithm_version=settings.report.algorithm_version,
        settings=settings.digest_text(),
        aif_zyx=aif_zyx,
        vof_zyx=vof_zyx,
        region=region.text() if region is not None else "",
    )
    return ResultVersion(number=1, key=version_key(digest, None))


def process_series(
    paths: Sequence[Path],
    out_dir: Path,
    settings: PipelineSettings,
    *,
    aif_zyx: tuple[int, int, int] | None = None,
    vof_zyx: tuple[int, int, int] | None = None,
    other_slabs: int = 0,
    profile: str | None = None,
    region: UserRegion | None = None,
) -> ProcessedSeries:
    """Compute one series' maps and write its outputs (version 1), ``results.json`` and
    ``summary.png``: :func:`compute_series` (``profile``: a person's choice of protocol
    profile; ``region``: a region a person gave) then :func:`write_outputs`.

    Raises
    ------
    AcquisitionUnusableError : as :func:`compute_series`.
    """
    if settings.spill_dir is None:  # a study too large for memory is held beside the outputs
        settings = replace(settings, spill_dir=out_dir)
    computed = compute_series(
        paths,
        settings,
        aif_zyx=aif_zyx,
        vof_zyx=vof_zyx,
        other_slabs=other_slabs,
        profile=profile,
        region=region,
    )
    version = first_version(computed, settings, aif_zyx=aif_zyx, vof_zyx=vof_zyx, region=region)
    return write_outputs(computed, out_dir, replace(settings.report, version=version))


def write_failure_notice(
    paths: Sequence[Path], out_dir: Path, reason: str, report: ReportSettings
) -> list[WrittenOutput]:
    """Write the Secondary Capture and SR that tell PACS users why no maps will come.

    Returns no outputs when not even one source header can be read (nothing to attach the
    notice to); the reason is recorded with the job either way.
    """
    header = None
    for path in paths:
        try:
            header = read_header(path)
            break
        except UnreadableImageError:
            continue
    if header is None:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    kinds = {"1.2.840.10008.5.1.4.1.1.7": "secondary_captures"}
    return [
        _save(dataset, out_dir, kinds.get(str(dataset.SOPClassUID), "structured_report"))
        for dataset in build_failure_notice(reason, [with_readable_dates(header)[0]], report)
    ]


def _output_sources(
    headers: Sequence[pydicom.Dataset], notes: Sequence[str]
) -> tuple[list[pydicom.Dataset], list[str]]:
    """The source headers as the outputs copy them (unreadable dates emptied), and the notes
    with one more saying which, if any."""
    sources, emptied = [], set()
    for header in headers:
        source, keywords = with_readable_dates(header)
        sources.append(source)
        emptied.update(keywords)
    if not emptied:
        return sources, list(notes)
    note = (
        f"{', '.join(sorted(emptied))}: not a valid date or time in the source images; left "
        "empty in these outputs"
    )
    return sources, [*notes, note]


@dataclass
class SeriesFiles:
    """One series' files among ``process``'s inputs, sorted as the receiver sorts objects.

    Attributes
    ----------
    ct : the CT images (CT or Enhanced CT Image Storage): what perfusion is computed from.
    other_classes : the SOP Class UIDs of the series' other objects (e.g. MR, Secondary
        Capture), one per object: never computed from, as ``serve`` never computes them.
    """

    ct: list[Path] = field(default_factory=list)
    other_classes: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.ct) + len(self.other_classes)

    def examine(self, min_time_points: int) -> Examination:
        """``serve``'s decision for this series: only its CT images are examined
        (:func:`~ctp_node.assemble.loader.examine_series`)."""
        if not self.ct:
            return Examination("other", not_ct_reason(self.other_classes[0]) or "not CT")
        return examine_series(self.ct, min_time_points)


def group_files_by_series(inputs: Iterable[Path]) -> tuple[dict[str, SeriesFiles], list[str]]:
    """DICOM files below the inputs, grouped by Series Instance UID (in the order first met);
    plus one line per file that was skipped, naming it and why."""
    groups: dict[str, SeriesFiles] = defaultdict(SeriesFiles)
    skipped: list[str] = []
    for path in _files(inputs):
        try:
            ds = pydicom.dcmread(
                path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID", "SOPClassUID"]
            )
            series = groups[str(ds.SeriesInstanceUID)]
        except (InvalidDicomError, OSError, ValueError) as exc:
            skipped.append(f"file {path}: not a DICOM file ({exc.__class__.__name__})")
            continue
        except AttributeError:
            skipped.append(f"file {path}: no {element_name('SeriesInstanceUID')}")
            continue
        sop_class = str(ds.get("SOPClassUID", "") or "")
        if not_ct_reason(sop_class) is None:
            series.ct.append(path)
        else:
            series.other_classes.append(sop_class)
    return dict(groups), skipped


def _files(inputs: Iterable[Path]) -> Iterable[Path]:
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            yield from sorted(p for p in item.rglob("*") if p.is_file())
        elif item.is_file():
            yield item
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")


def _save(dataset: pydicom.Dataset, out_dir: Path, kind: str) -> WrittenOutput:
    path = out_dir / f"{kind}-{dataset.SeriesNumber}-{dataset.SOPInstanceUID}.dcm"
    dataset.save_as(path, enforce_file_format=True)
    return WrittenOutput(
        str(dataset.SOPInstanceUID), kind, path, str(dataset.get("SeriesDescription", ""))
    )
