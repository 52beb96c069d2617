"""The source images' headers as the outputs copy them: dates and times pydicom cannot parse
are left empty.

highdicom copies the patient and study modules from the source images and parses their dates
and times (DA, DT, TM) on the way; one malformed value (a PatientBirthDate of ``19500230``)
made it refuse to build any output, and then the failure notice, so a study got neither maps
nor a notice. These attributes are type 2 in the modules copied (an empty value is allowed),
and none of them takes part in the computation, so an unreadable one is emptied and named in
the report's notes (by keyword, never by value: it may be the patient's).
"""

from __future__ import annotations

import copy

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.valuerep import DA, DT, TM

_PARSERS = {"DA": DA, "DT": DT, "TM": TM}


def with_readable_dates(ds: Dataset) -> tuple[Dataset, list[str]]:
    """``ds``, or a copy of it whose top-level DA, DT and TM values all parse, and the
    keywords of the values emptied; ``ds`` itself is left as it is."""
    unreadable = [element.tag for element in ds if not _readable(element)]
    if not unreadable:
        return ds, []
    copied = copy.deepcopy(ds)
    for tag in unreadable:
        copied[tag].value = ""
    return copied, [copied[tag].keyword or str(tag) for tag in unreadable]


def _readable(element: DataElement) -> bool:
    parse = _PARSERS.get(str(element.VR))
    if parse is None or element.value in (None, ""):
        return True
    values = element.value if element.VM > 1 else [element.value]
    try:
        for value in values:
            parse(str(value).strip())
    except (ValueError, TypeError, OverflowError):
        return False
    return True


#: The character set every output declares: UTF-8 (DICOM's ``ISO_IR 192``), so that any text
#: (a patient's name in any script, "50–70 s", "≥") survives; a source's own character set
#: (often ``ISO_IR 100``, Latin-1) cannot hold the node's own statements.
UTF8 = "ISO_IR 192"


def declare_utf8(dataset: Dataset) -> Dataset:
    """``dataset`` with SpecificCharacterSet ``ISO_IR 192``: pydicom then writes every text
    value (nested sequence items included, and names read in another character set, which
    it re-encodes) as UTF-8."""
    dataset.SpecificCharacterSet = UTF8
    return dataset
