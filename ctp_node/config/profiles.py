"""The ``profiles:`` section: ordered rules that choose a series' protocol profile
(:mod:`ctp_node.profiles`) from its header fields and the sending AE title."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field
from pydantic_core import PydanticCustomError

from ctp_node.config.values import SECTION_CONFIG
from ctp_node.profiles import CALLING_AE, DEFAULT_RULES, ProfileRule, check_profile_name


def _check_match_key(value: str) -> str:
    # pydicom (and with it numpy) only when a configuration is checked: this module is
    # imported before the command line sets the BLAS threads (cli._one_blas_thread).
    from pydicom.datadict import tag_for_keyword

    if value != CALLING_AE and tag_for_keyword(value) is None:
        raise PydanticCustomError(
            "match_key",
            "must be a DICOM keyword of the images (ProtocolName, SeriesDescription, "
            "StudyDescription, ...) or {calling}; got '{value}'",
            {"value": value, "calling": CALLING_AE},
        )
    return value


def _check_pattern(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise PydanticCustomError(
            "pattern",
            "must be a regular expression (Python re); '{value}': {reason}",
            {"value": value, "reason": str(exc)},
        ) from None
    return value


def _check_profile(value: str) -> str:
    try:
        return check_profile_name(value)
    except ValueError as exc:
        raise PydanticCustomError("profile", "{reason}", {"reason": str(exc)}) from None


class ProfileRuleConfig(BaseModel):
    """One rule of ``profiles:``. The rules are tried in order; the first whose every pattern
    is found (Python ``re.search``, so ``(?i)`` makes it case-insensitive and ``^…$`` anchors
    it) in its field chooses the profile; a series no rule matches is computed as ``stroke``.
    ``match: {}`` matches every series (a last rule with it sets another default).

    Attributes
    ----------
    match : DICOM keyword of the series' first image (``ProtocolName``,
        ``SeriesDescription``, ``StudyDescription``, ``BodyPartExamined``, ...) or
        ``CallingAETitle`` (the AE title that sent the series) → regular expression. A field
        the images lack reads as "".
    profile : ``stroke``, ``vasospasm`` or ``tumour``.
    """

    model_config = SECTION_CONFIG

    match: dict[
        Annotated[str, AfterValidator(_check_match_key)],
        Annotated[str, AfterValidator(_check_pattern)],
    ] = Field(default_factory=dict)
    profile: Annotated[str, AfterValidator(_check_profile)]

    def rule(self) -> ProfileRule:
        return ProfileRule(dict(self.match), self.profile)


def default_profile_rules() -> list[ProfileRuleConfig]:
    """:data:`ctp_node.profiles.DEFAULT_RULES` as configuration rules (``profiles:`` left
    out)."""
    return [ProfileRuleConfig(match=dict(r.match), profile=r.profile) for r in DEFAULT_RULES]
