"""Deterministic UIDs for the node's outputs.

An output's UIDs depend only on the source series, the kind of output and the result's version
key (its inputs, the algorithm version and the version it supersedes; see
:mod:`ctp_node.report.versions`), so that computing and sending the same result twice yields the
same instances (PACS treats the second copy as a duplicate, not as a new series), while a result
from other inputs gets new ones.
"""

from __future__ import annotations

from pydicom.uid import PYDICOM_ROOT_UID, generate_uid

#: Root under which derived UIDs are made: pydicom's root, which pydicom reserves for UIDs
#: it generates from a hash (``generate_uid(entropy_srcs=...)``).
UID_PREFIX = PYDICOM_ROOT_UID


def derive_uid(source_series_uid: str, kind: str, version_key: str, *parts: str) -> str:
    """A valid UID (≤ 64 characters) that is a function of its arguments only.

    Parameters
    ----------
    source_series_uid : SeriesInstanceUID of the dynamic CT series the output was computed from.
    kind : the output kind, e.g. ``"PM-CBF"`` (series UID) or ``"PM-CBF-instance"``.
    version_key : the result version's key (:func:`ctp_node.report.versions.version_key`), or
        the algorithm version for outputs built outside the node's queue.
    parts : further distinguishing strings (e.g. an instance number).

    Returns
    -------
    The same UID for the same arguments; a different UID (up to a SHA-512 collision) when any
    argument differs.
    """
    sources = [source_series_uid, kind, version_key, *parts]
    if not all(isinstance(source, str) for source in sources):
        raise TypeError(f"derive_uid takes strings only; got {sources!r}")
    # Length-prefix every part: pydicom joins the sources without a separator, which would
    # make ("1.2", "3") and ("1.23", "") the same input.
    return str(generate_uid(prefix=UID_PREFIX, entropy_srcs=[f"{len(s)}:{s}" for s in sources]))
