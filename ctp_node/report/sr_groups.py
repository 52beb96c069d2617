"""The SR's TID 1501 measurement groups (:mod:`ctp_node.report.structured_report`): a finding's
volume, a hemisphere's or a region's means, an input curve's arrival, each with the algorithm
identification and a tracking identifier derived from the source series."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from ctp_node.perfusion.asymmetry import HemisphericComparison
from ctp_node.perfusion.result import InputCurve
from ctp_node.report.parametric_map import MAP_DEFINITIONS
from ctp_node.report.rounding import rounded
from ctp_node.report.sr_content import curve_location_text, curve_samples_text, text_evaluation
from ctp_node.report.uids import derive_uid

#: UCUM millilitre and dimensionless ratio.
MILLILITRE = Code(value="ml", scheme_designator="UCUM", meaning="milliliter")
RATIO = codes.UCUM.Ratio
#: How the volumes were measured.
CT_PERFUSION_METHOD = codes.DCM.PerfusionAnalysisByIVIodinatedContrastCTTechnique
SECOND = Code(value="s", scheme_designator="UCUM", meaning="second")


@dataclass(frozen=True)
class GroupBuilder:
    """Builds the measurement groups of one SR, which share the algorithm identification and
    the source series (their tracking UIDs derive from it and from the algorithm version)."""

    source_series_uid: str
    algorithm: hd.sr.AlgorithmIdentification
    source_images: list[pydicom.Dataset]
    version: str

    def measurement(
        self, name: Code, value: float, unit: Code, derivation: Code | None = None
    ) -> hd.sr.Measurement:
        # To the resolution the method supports (ctp_node.report.rounding): 0.1 ml, 0.1 s,
        # ratios 0.01.
        return hd.sr.Measurement(
            name=name,
            value=rounded(value, "ratio" if unit == RATIO else unit.value),
            unit=unit,
            derivation=derivation,
            method=CT_PERFUSION_METHOD,
            algorithm_id=self.algorithm,
        )

    def group(
        self,
        identifier: str,
        measurements: list[hd.sr.Measurement],
        texts: Sequence[str] = (),
        laterality: Code | None = None,
    ) -> hd.sr.MeasurementsAndQualitativeEvaluations:
        site = hd.sr.FindingSite(anatomic_location=codes.SCT.Brain, laterality=laterality)
        built = hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=derive_uid(self.source_series_uid, "SR-group", self.version, identifier),
                identifier=identifier,
            ),
            method=CT_PERFUSION_METHOD,
            algorithm_id=self.algorithm,
            finding_sites=[site],
            measurements=measurements,
        )
        # TID 1501 qualitative evaluations as TEXT (highdicom only builds coded ones).
        built[0].ContentSequence.extend(text_evaluation(text) for text in texts)
        return built

    def volume_group(
        self, identifier: str, volume_ml: float, ratio: float | None = None
    ) -> hd.sr.MeasurementsAndQualitativeEvaluations:
        """A finding's volume (ml) and, for some, a ratio."""
        measurements = [self.measurement(codes.SCT.Volume, volume_ml, MILLILITRE)]
        if ratio is not None:
            measurements.append(self.measurement(codes.DCM.VolumeRatio, ratio, RATIO))
        return self.group(identifier, measurements)

    def hemisphere_group(
        self, side: str, comparison: HemisphericComparison
    ) -> hd.sr.MeasurementsAndQualitativeEvaluations:
        """One hemisphere's mean of each compared map (the PM's quantity codes and units),
        its laterality coded when the patient's sides are known."""
        measurements = [
            self.measurement(d.quantity, comparison.maps[d.name].mean[side], d.unit, codes.SCT.Mean)
            for d in MAP_DEFINITIONS
            if d.name in comparison.maps
        ]
        laterality = {"left": codes.SCT.Left, "right": codes.SCT.Right}.get(side)
        return self.group(f"Hemisphere: {side}", measurements, laterality=laterality)

    def region_group(
        self,
        identifier: str,
        values: dict[str, float],
        definitions: Sequence,
        volume_ml: float | None = None,
        texts: Sequence[str] = (),
    ) -> hd.sr.MeasurementsAndQualitativeEvaluations:
        """A region's volume (when given) and each map's mean in ``values``, with the
        Parametric Maps' quantity codes and units."""
        by_name = {d.name: d for d in definitions}
        measurements = [
            self.measurement(by_name[n].quantity, v, by_name[n].unit, codes.SCT.Mean)
            for n, v in values.items()
            if np.isfinite(v)
        ]
        if volume_ml is not None:
            measurements.insert(0, self.measurement(codes.SCT.Volume, volume_ml, MILLILITRE))
        return self.group(identifier, measurements, texts)

    def curve_group(
        self, identifier: str, curve: InputCurve
    ) -> hd.sr.MeasurementsAndQualitativeEvaluations:
        """An input curve's bolus arrival time (s), with its location and samples as TEXT."""
        return self.group(
            identifier,
            [self.measurement(codes.DCM.BolusArrivalTime, curve.arrival_s, SECOND)],
            [curve_location_text(curve, self.source_images), curve_samples_text(curve)],
        )
