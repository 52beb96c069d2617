"""Quality checks from the header facts: tube voltage and current-time product, CTDIvol,
contrast volume and injection rate, patient age."""

from __future__ import annotations

from ctp_node.perfusion.acquisition import Acquisition
from ctp_node.qc.limits import (
    CONTRAST_VOLUME,
    CTDIVOL,
    INJECTION_RATE,
    NOT_RECORDED,
    PASS,
    PATIENT_AGE,
    TUBE_CURRENT_TIME,
    TUBE_VOLTAGE,
    WARN,
    QualityFinding,
    QualityLimits,
    _within,
)


def header_checks(acquisition: Acquisition, limits: QualityLimits) -> list[QualityFinding]:
    facts = acquisition.facts
    return [
        _range_check(TUBE_VOLTAGE, facts.kvp, "kV", limits.kvp_min, limits.kvp_max, "IV.C"),
        _range_check(
            TUBE_CURRENT_TIME,
            facts.exposure_mas,
            "mA.s",
            limits.mas_min,
            limits.mas_max,
            "IV.C",
            display_unit="mAs",
        ),
        _ctdivol(facts.ctdivol_mgy, limits),
        _range_check(
            CONTRAST_VOLUME,
            facts.contrast_volume_ml,
            "ml",
            limits.contrast_volume_min_ml,
            None,
            "IV.C",
            extra=f"agent {facts.contrast_agent or 'not recorded'}",
        ),
        _range_check(
            INJECTION_RATE,
            facts.contrast_rate_ml_s,
            "ml/s",
            limits.injection_rate_min_ml_s,
            None,
            "IV.C",
        ),
        _age(facts.patient_age_years, limits),
    ]


def _range_limit(lower: float | None, upper: float | None, unit: str) -> str:
    if lower is not None and upper is not None:
        return f"{lower:g}-{upper:g} {unit}"
    if lower is not None:
        return f">= {lower:g} {unit}"
    return f"<= {upper:g} {unit}"


def _range_check(
    name: str,
    value: float | None,
    unit: str,
    lower: float | None,
    upper: float | None,
    section: str,
    *,
    display_unit: str | None = None,
    extra: str = "",
) -> QualityFinding:
    shown = display_unit or unit
    limit = _range_limit(lower, upper, shown)
    suffix = f" ({extra})" if extra else ""
    if value is None:
        return QualityFinding(
            name,
            NOT_RECORDED,
            None,
            unit,
            limit,
            section,
            f"{name}: not recorded in the image headers{suffix}.",
        )
    ok = _within(float(value), lower, upper)
    verdict = "within" if ok else "outside"
    return QualityFinding(
        name,
        PASS if ok else WARN,
        float(value),
        unit,
        limit,
        section,
        f"{name} {float(value):g} {shown}{suffix}, {verdict} the recommended {limit}.",
    )


def _ctdivol(value: float | None, limits: QualityLimits) -> QualityFinding:
    limit = f"< {limits.ctdivol_alert_mgy:g} mGy (alert level)"
    if value is None:
        return QualityFinding(
            CTDIVOL,
            NOT_RECORDED,
            None,
            "mGy",
            limit,
            "VII",
            "CTDIvol: not recorded in the image headers.",
        )
    ok = float(value) < limits.ctdivol_alert_mgy
    detail = f"CTDIvol {float(value):g} mGy"
    detail += (
        f", below the alert level of {limits.ctdivol_alert_mgy:g} mGy."
        if ok
        else f", at or above the alert level of {limits.ctdivol_alert_mgy:g} mGy: review by the "
        "medical physicist is needed (an alert, not a limit)."
    )
    return QualityFinding(CTDIVOL, PASS if ok else WARN, float(value), "mGy", limit, "VII", detail)


def _age(age_years: float | None, limits: QualityLimits) -> QualityFinding:
    limit = f">= {limits.adult_age_years:g} years"
    if age_years is None:
        return QualityFinding(
            PATIENT_AGE,
            NOT_RECORDED,
            None,
            "a",
            limit,
            "IV.C",
            "Patient age: not recorded (neither age nor birth date in the headers).",
        )
    ok = float(age_years) >= limits.adult_age_years
    detail = (
        f"Patient age {float(age_years):g} years (adult)."
        if ok
        else f"Paediatric patient, {float(age_years):g} years: a higher threshold applies to CT "
        "perfusion in children and MRI should be considered; adult contrast and dose "
        "recommendations do not apply as such."
    )
    return QualityFinding(
        PATIENT_AGE, PASS if ok else WARN, float(age_years), "a", limit, "IV.C", detail
    )
