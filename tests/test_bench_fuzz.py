"""The soak benchmark's fuzzer (bench/fuzz.py): a seed gives the same inputs, every kind comes
up, and the well-formed parts are well formed (DICOM parses what should parse)."""

from __future__ import annotations

import struct
from io import BytesIO

import pytest
from pydicom.filereader import read_dataset
from pynetdicom.pdu import A_ASSOCIATE_RQ

from bench.fuzz import KINDS, WEIGHTS, Case, FuzzSettings, c_store_rq, cases, command_status


def test_a_seed_gives_the_same_cases_and_another_seed_others() -> None:
    first = list(cases(7, 300))
    assert first == list(cases(7, 300))
    assert [c.steps for c in first] != [c.steps for c in cases(8, 300)]


def test_the_first_cases_are_one_of_each_kind_and_later_ones_follow_the_weights() -> None:
    drawn = list(cases(3, len(KINDS) + 3000))
    assert sorted(c.kind for c in drawn[: len(KINDS)]) == sorted(KINDS)
    assert set(WEIGHTS) == set(KINDS)
    counts = {kind: sum(c.kind == kind for c in drawn[len(KINDS) :]) for kind in KINDS}
    assert counts["garbage"] > counts["oversized_pdu"] * 3  # weights 8 and 1


def _by_kind(kind: str) -> Case:
    return next(c for c in cases(0, 200, FuzzSettings(depth=50)) if c.kind == kind)


def test_the_association_request_is_one_pynetdicom_decodes() -> None:
    request = _by_kind("dataset_wrong_sop_class").steps[0]
    assert request.action == "associate"
    pdu = A_ASSOCIATE_RQ()
    pdu.decode(request.data)
    assert pdu.called_ae_title == "CTPNODE"
    assert [str(c.abstract_syntax) for c in pdu.presentation_context] == [
        "1.2.840.10008.5.1.4.1.1.2"
    ] * 2


def test_huge_lengths_are_declared_and_not_sent() -> None:
    head = _by_kind("associate_huge_length").steps[0].data
    assert struct.unpack(">BBL", head[:6]) == (0x01, 0, 0xFFFFFFFF)
    assert len(head) < 300


@pytest.mark.parametrize(
    ("kind", "problem"),
    [("dataset_wrong_sop_class", "MR"), ("dataset_short_pixels", "short"),
     ("dataset_missing_uids", "uids")],
)  # fmt: skip
def test_broken_data_sets_parse_and_are_broken_as_named(kind: str, problem: str) -> None:
    exchange = next(s for s in _by_kind(kind).steps if s.action == "exchange")
    command_pdu_length = struct.unpack(">L", exchange.data[2:6])[0]
    data_pdu = exchange.data[6 + command_pdu_length :]
    data_set = read_dataset(BytesIO(data_pdu[12:]), is_implicit_VR=True, is_little_endian=True)
    if problem == "MR":
        assert data_set.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"
    elif problem == "short":
        assert len(data_set.PixelData) < data_set.Rows * data_set.Columns * 2
    else:
        assert "SOPInstanceUID" not in data_set and "SeriesInstanceUID" not in data_set


def test_the_deep_sequence_is_as_deep_as_asked() -> None:
    exchange = next(s for s in _by_kind("dataset_deep_sequence").steps if s.action == "exchange")
    assert exchange.data.count(struct.pack("<HHL", 0x0040, 0xA730, 0xFFFFFFFF)) == 50


def test_command_status_reads_a_c_store_response() -> None:
    body = bytearray(c_store_rq("1.2.3", "1.2.3.4", 1))
    body += struct.pack("<HHLH", 0x0000, 0x0900, 2, 0xA700)
    pdv = struct.pack(">LBB", len(body) + 2, 1, 0x03) + bytes(body)
    assert command_status(pdv) == 0xA700
