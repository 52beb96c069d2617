"""Derived UIDs: valid, stable, and different whenever any input differs."""

from __future__ import annotations

import pytest
from pydicom.uid import UID

from ctp_node.report.uids import derive_uid

SOURCE = "1.2.840.113619.2.55.3.604688119.969.1268071029.320"


def test_same_inputs_same_valid_uid() -> None:
    uid = derive_uid(SOURCE, "PM-CBF", "0.1.0")
    assert uid == derive_uid(SOURCE, "PM-CBF", "0.1.0")
    assert UID(uid).is_valid
    assert len(uid) <= 64


@pytest.mark.parametrize(
    "other",
    [
        (SOURCE + "1", "PM-CBF", "0.1.0"),
        (SOURCE, "PM-CBV", "0.1.0"),
        (SOURCE, "PM-CBF", "0.1.1"),
        (SOURCE, "PM-CBF", "0.1.0", "instance"),
        (SOURCE, "PM-CB", "F0.1.0"),  # same characters, different split
    ],
)
def test_any_different_input_gives_a_different_uid(other: tuple[str, ...]) -> None:
    assert derive_uid(*other) != derive_uid(SOURCE, "PM-CBF", "0.1.0")


def test_refuses_non_strings() -> None:
    with pytest.raises(TypeError):
        derive_uid(SOURCE, "PM-CBF", 1)  # type: ignore[arg-type]
