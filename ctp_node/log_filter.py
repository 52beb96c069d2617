"""Log lines without patient data.

The node's own messages name UIDs, accession numbers, AE titles and addresses only, never a
patient's name, ID or birth date. The libraries it reads and writes headers with may quote an
element's value, and that value may be a patient's: pydicom warns ``Invalid value for VR DA:
'1950-02-30'.`` when a header holds a malformed birth date, and raises ``Unable to convert
'1950-02-30' to 'DA' object`` when it is used; highdicom warns ``The string "DOE JOHN" is
unlikely to represent the intended person name`` for every output of a patient whose name has
one component. :class:`WithheldValues` replaces such quoted values, in messages, warnings and
tracebacks, before a handler writes them.
"""

from __future__ import annotations

import logging
import re
import warnings

#: Library messages that quote an element's value, and the part of each that is the value.
_QUOTED_VALUES = (
    # pydicom.valuerep.validate_regex (CS, DA, DT, TM, AS, UI…)
    re.compile(r"(Invalid value for VR \w+: ).+?(\.?)$", re.MULTILINE),
    # pydicom.valuerep.DA / DT / TM
    re.compile(r"(Unable to convert (?:non-conformant value )?)'.*?'( to '\w+' object)"),
    # pydicom.valuerep.DSfloat / IS
    re.compile(r'(Value )".*?"( is not valid for elements with a VR of \w+)'),
    # highdicom.valuerep.check_person_name: a name without "^" (a name in one component)
    re.compile(r'(The string )".*"( is unlikely to represent the intended person name)'),
    # highdicom.base.SOPClass
    re.compile(r'(value of argument "\w+" is potentially invalid: )".*"()'),
)

WITHHELD = "(value withheld)"


def withhold_values(text: str) -> str:
    """``text`` with every element value a library message quotes replaced by a marker."""
    for pattern in _QUOTED_VALUES:
        text = pattern.sub(rf"\g<1>{WITHHELD}\g<2>", text)
    return text


class WithheldValues(logging.Filter):
    """A handler filter that withholds the element values quoted in a record's message and
    traceback (:func:`withhold_values`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        withheld = withhold_values(message)
        if withheld != message:
            record.msg, record.args = withheld, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = withhold_values(record.exc_text)
        return True


def withhold_values_in_logs() -> None:
    """Filter every root handler with :class:`WithheldValues`, and route warnings through
    logging so that they are filtered too. pydicom logs each of its warnings as well as
    issuing it: its warnings are not shown a second time."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, WithheldValues) for f in handler.filters):
            handler.addFilter(WithheldValues())
    logging.captureWarnings(True)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom(\.|$)")
