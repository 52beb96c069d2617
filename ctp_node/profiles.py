"""Protocol profiles (issue 34): what the node computes and reports for a series, chosen by
ordered rules on its header fields and the sending AE title, or named by the person who asks.

A profile is a named set of stages and outputs:

- ``stroke`` (the default): CBF, CBV, MTT, TTP, Tmax, the ischaemic core and the hypoperfused
  volumes, the mismatch (DEFUSE 3).
- ``vasospasm`` (suspected vasospasm or delayed cerebral ischaemia after subarachnoid
  haemorrhage): the same maps, and per map the hemispheric means with their right − left
  difference and lower/higher ratio, flagged against thresholds
  (:mod:`ctp_node.perfusion.asymmetry`); no core or penumbra volumes (they are stroke
  definitions, not validated for vasospasm).
- ``tumour`` (the angiogenesis of a tumour, blood-brain barrier permeability): the leak across
  the barrier measured by Patlak analysis of the images after the first pass and removed from
  the curves before deconvolution (:mod:`ctp_node.perfusion.permeability`): K^trans, and CBF,
  CBV (leakage-corrected) and MTT of the intravascular curves; each map's statistics in the
  enhancing region (significant K^trans); the quality checks expect the 90–150 s acquisitions
  tumour protocols use; no core or penumbra volumes.

This module is pure: it reads headers and rules, and neither the network nor the database. It
imports neither pydicom nor numpy: the command line and the configuration import it before
``ctp-node`` sets the BLAS threads (``cli._one_blas_thread``), which must come before numpy
loads.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # not at run time: the CLI imports this before numpy may load (cli.py)
    import pydicom

#: The profiles, in the order the configuration reference lists them.
PROFILE_NAMES = ("stroke", "vasospasm", "tumour")
#: The profile of a series no rule chose.
DEFAULT_PROFILE = "stroke"
#: The match key that stands for the sending AE title (not a DICOM attribute of the images).
CALLING_AE = "CallingAETitle"


@dataclass(frozen=True)
class Profile:
    """What one profile computes and reports.

    Attributes
    ----------
    name : one of :data:`PROFILE_NAMES`.
    title : how the pages and the SR name it.
    stroke_volumes : report the core, hypoperfusion and mismatch volumes.
    asymmetry : compute and report the hemispheric asymmetry of each map.
    permeability : measure and remove the leak across the blood-brain barrier (K^trans, the
        enhancing region), with the quality checks' limits for long acquisitions.
    """

    name: str
    title: str
    stroke_volumes: bool
    asymmetry: bool
    permeability: bool = False


PROFILES: dict[str, Profile] = {
    "stroke": Profile("stroke", "acute stroke", stroke_volumes=True, asymmetry=False),
    "vasospasm": Profile(
        "vasospasm", "vasospasm / delayed cerebral ischaemia", stroke_volumes=False, asymmetry=True
    ),
    "tumour": Profile(
        "tumour",
        "tumour, blood-brain barrier permeability",
        stroke_volumes=False,
        asymmetry=False,
        permeability=True,
    ),
}
assert tuple(PROFILES) == PROFILE_NAMES


@dataclass(frozen=True)
class ProfileRule:
    """One selection rule: every ``match`` pattern must be found (``re.search``) in its field's
    value for ``profile`` to be chosen; an empty ``match`` matches every series.

    Attributes
    ----------
    match : DICOM keyword (e.g. ``ProtocolName``, ``SeriesDescription``, ``StudyDescription``)
        or :data:`CALLING_AE` → regular expression.
    profile : one of :data:`PROFILE_NAMES`.
    """

    match: Mapping[str, str]
    profile: str

    def matches(self, header: pydicom.Dataset, calling_ae: str | None) -> bool:
        for keyword, pattern in self.match.items():
            value = calling_ae if keyword == CALLING_AE else header.get(keyword)
            text = "" if value is None else str(value)
            if re.search(pattern, text) is None:
                return False
        return True

    def describe(self) -> str:
        """The rule as the reports state it, e.g. ``ProtocolName ~ "(?i)tumou?r"``."""
        if not self.match:
            return "every series"
        return ", ".join(f'{key} ~ "{pattern}"' for key, pattern in self.match.items())


@dataclass(frozen=True)
class ProfileChoice:
    """The profile a series is computed with, and what chose it.

    Attributes
    ----------
    profile : the chosen :class:`Profile`.
    chosen_by : a sentence fragment: ``rule 2 of profiles (ProtocolName ~ "(?i)glioma")``,
        ``no rule matched (the default)`` or ``asked for (process --profile)``.
    """

    profile: Profile
    chosen_by: str

    @property
    def name(self) -> str:
        return self.profile.name

    def statement(self) -> str:
        """The report's sentence about the profile."""
        return f"Profile: {self.profile.name} ({self.profile.title}); chosen by {self.chosen_by}."

    def to_dict(self) -> dict[str, str]:
        return {"name": self.profile.name, "chosen_by": self.chosen_by}


#: Words scanners' protocols for each profile carry (regular expressions, any case).
VASOSPASM_WORDS = r"(?i)vasospasm|\bSAH\b|\bDCI\b"
TUMOUR_WORDS = r"(?i)tumou?r|glioma|metasta|\bonco|permeab"

#: The rules a node uses when its configuration names none (``profiles:`` left out): a series
#: whose ProtocolName, else SeriesDescription, names vasospasm (SAH, DCI) or a tumour (glioma,
#: metastasis, oncology, permeability) gets that profile; every other series is ``stroke``.
#: Only the fields the scanner's protocol sets are read (not StudyDescription, where an
#: emergency stroke study may mention a patient's history).
DEFAULT_RULES: tuple[ProfileRule, ...] = tuple(
    ProfileRule({field: words}, profile)
    for field in ("ProtocolName", "SeriesDescription")
    for words, profile in ((VASOSPASM_WORDS, "vasospasm"), (TUMOUR_WORDS, "tumour"))
)

#: The choice when no rule matches.
DEFAULT_CHOICE = ProfileChoice(PROFILES[DEFAULT_PROFILE], "the default (no rule matched)")


def choose_profile(
    header: pydicom.Dataset,
    rules: Sequence[ProfileRule] = (),
    *,
    calling_ae: str | None = None,
    asked: str | None = None,
    asked_by: str = "process --profile",
) -> ProfileChoice:
    """The profile of a series: ``asked`` when given (a person's choice, ``asked_by`` names
    how), else the first of ``rules`` (in order) that matches ``header`` and ``calling_ae``,
    else :data:`DEFAULT_PROFILE`.

    Raises
    ------
    ValueError : ``asked`` names no profile.
    """
    if asked is not None:
        check_profile_name(asked)
        return ProfileChoice(PROFILES[asked], f"request ({asked_by})")
    for number, rule in enumerate(rules, start=1):
        if rule.matches(header, calling_ae):
            return ProfileChoice(
                PROFILES[rule.profile], f"rule {number} of profiles ({rule.describe()})"
            )
    return DEFAULT_CHOICE


def check_profile_name(name: str) -> str:
    """``name`` if it is a profile, else ValueError saying which exist."""
    if name not in PROFILES:
        raise ValueError(f"no profile {name!r}; the profiles are {', '.join(PROFILE_NAMES)}")
    return name
