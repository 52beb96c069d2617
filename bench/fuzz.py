"""A seeded generator of malformed DICOM network inputs, and a raw-socket client that plays them.

A well-behaved client library cannot send broken things, so every PDU here is built by hand with
:mod:`struct` (PS3.8 9.3: A-ASSOCIATE-RQ, P-DATA-TF, A-RELEASE-RQ; PS3.7 9.3.1: the C-STORE-RQ
command set, always Implicit VR Little Endian; PS3.5 7.1: data elements). :func:`cases` yields,
for a seed, the same sequence of :class:`Case` every time; the first ``len(KINDS)`` cases are one
of each kind (in a seeded order), the rest are drawn with :data:`WEIGHTS`. A case is a script of
:class:`Step` and holds every random choice, so playing it (:func:`play`) depends only on what
the node answers. Nothing here imports pydicom or pynetdicom: the tests import a few cases.

Kinds (:data:`KINDS`):

- ``garbage``: random bytes (up to 4 KiB), then close.
- ``unknown_pdu_type``: a PDU header whose type is none of 0x01-0x07.
- ``associate_huge_length``: an A-ASSOCIATE-RQ header declaring 2^32-1 bytes, then a little of
  a request, then a stall or a close.
- ``associate_truncated``: a well-formed A-ASSOCIATE-RQ cut short, then close.
- ``ae_title_control_chars``: an A-ASSOCIATE-RQ whose AE titles hold newlines, escapes, NUL or a
  backslash.
- ``idle``: connect and send nothing, for a while.
- ``half_open``: the first bytes of an A-ASSOCIATE-RQ, then a stall.
- ``closed_mid_pdu``: part of a PDU (before or after association), then a close or a reset.
- ``oversized_pdu``: after association, one P-DATA-TF of 1-16 MiB of garbage.
- ``pdata_huge_length``: after association, a P-DATA-TF header declaring 2^32-1 bytes, then a
  little, then a stall or a close.
- ``dataset_huge_element``: a C-STORE whose data set has an element declaring about 2 GB.
- ``dataset_explicit_under_implicit``: an Explicit VR data set on an Implicit VR context.
- ``dataset_deep_sequence``: sequences nested thousands of levels deep (10 000 by default).
- ``dataset_wrong_sop_class``: an MR data set on a CT Image Storage context.
- ``dataset_missing_uids``: a CT data set without its SOP Instance, Study and Series UIDs.
- ``dataset_short_pixels``: a CT data set whose Pixel Data is shorter than Rows x Columns x 2.
"""

from __future__ import annotations

import random
import select
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
IMPLICIT_VR_LE = "1.2.840.10008.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
#: Presentation context IDs proposed by every association here (odd, PS3.8 9.3.2.2).
CT_IMPLICIT_CONTEXT, CT_EXPLICIT_CONTEXT = 1, 3

KINDS: tuple[str, ...] = (
    "garbage",
    "unknown_pdu_type",
    "associate_huge_length",
    "associate_truncated",
    "ae_title_control_chars",
    "idle",
    "half_open",
    "closed_mid_pdu",
    "oversized_pdu",
    "pdata_huge_length",
    "dataset_huge_element",
    "dataset_explicit_under_implicit",
    "dataset_deep_sequence",
    "dataset_wrong_sop_class",
    "dataset_missing_uids",
    "dataset_short_pixels",
)
#: Relative frequency of each kind after the first round (percent).
WEIGHTS: dict[str, int] = {
    "garbage": 8,
    "unknown_pdu_type": 6,
    "associate_huge_length": 6,
    "associate_truncated": 6,
    "ae_title_control_chars": 6,
    "idle": 8,
    "half_open": 8,
    "closed_mid_pdu": 6,
    "oversized_pdu": 1,
    "pdata_huge_length": 5,
    "dataset_huge_element": 7,
    "dataset_explicit_under_implicit": 7,
    "dataset_deep_sequence": 5,
    "dataset_wrong_sop_class": 7,
    "dataset_missing_uids": 7,
    "dataset_short_pixels": 7,
}


@dataclass(frozen=True)
class Step:
    """One action of a case.

    ``action`` is ``send`` (``data``, ``repeat`` times), ``associate`` (send the A-ASSOCIATE-RQ
    ``data`` and stop unless an A-ASSOCIATE-AC comes back), ``exchange`` (send ``data`` and
    read the answer, which is the case's outcome), ``release`` (A-RELEASE-RQ; its answer is
    noted only if it is not an A-RELEASE-RP), ``hold`` (send nothing for ``seconds``, noting
    if the node answers or closes first), ``close`` (FIN) or ``reset`` (RST).
    """

    action: str
    data: bytes = b""
    seconds: float = 0.0
    repeat: int = 1


@dataclass(frozen=True)
class Case:
    index: int
    kind: str
    steps: tuple[Step, ...]

    @property
    def size_bytes(self) -> int:
        return sum(len(s.data) * s.repeat for s in self.steps)


# --- encoders --------------------------------------------------------------------------------


def pdu(pdu_type: int, body: bytes, length: int | None = None) -> bytes:
    """A PDU: type, reserved byte, 4-byte big-endian length (``length`` overrides the true one)."""
    return struct.pack(">BBL", pdu_type, 0, len(body) if length is None else length) + body


def _item(item_type: int, body: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(body)) + body


def _ae(title: bytes) -> bytes:
    return title[:16].ljust(16, b" ")


def associate_rq(called: bytes = b"CTPNODE", calling: bytes = b"FUZZER") -> bytes:
    """An A-ASSOCIATE-RQ proposing CT Image Storage in Implicit (context 1) and Explicit VR
    Little Endian (context 3), with a maximum PDU length of 16 KiB."""
    contexts = b"".join(
        _item(
            0x20,
            struct.pack(">BBBB", context_id, 0, 0, 0)
            + _item(0x30, CT_IMAGE_STORAGE.encode())
            + _item(0x40, syntax.encode()),
        )
        for context_id, syntax in (
            (CT_IMPLICIT_CONTEXT, IMPLICIT_VR_LE),
            (CT_EXPLICIT_CONTEXT, EXPLICIT_VR_LE),
        )
    )
    user = _item(
        0x50,
        _item(0x51, struct.pack(">L", 16384))
        + _item(0x52, b"1.2.826.0.1.3680043.9.7433.1")
        + _item(0x55, b"CTP_FUZZ"),
    )
    body = (
        struct.pack(">HH", 1, 0)
        + _ae(called)
        + _ae(calling)
        + bytes(32)
        + _item(0x10, APPLICATION_CONTEXT.encode())
        + contexts
        + user
    )
    return pdu(0x01, body)


RELEASE_RQ = pdu(0x05, bytes(4))


def p_data(context_id: int, control: int, value: bytes) -> bytes:
    """A P-DATA-TF with one PDV; ``control`` 0x03 is a last command fragment, 0x02 a last data
    fragment."""
    return pdu(0x04, struct.pack(">LBB", len(value) + 2, context_id, control) + value)


def _pad(value: bytes, vr: str) -> bytes:
    if len(value) % 2:
        return value + (b"\0" if vr in ("UI", "OB") else b" ")
    return value


def implicit(tag: int, value: bytes, length: int | None = None) -> bytes:
    """An Implicit VR Little Endian data element (``length`` overrides the true one)."""
    size = len(value) if length is None else length
    return struct.pack("<HHL", tag >> 16, tag & 0xFFFF, size) + value


_LONG_VRS = {"OB", "OW", "OF", "SQ", "UN", "UT", "UC", "UR"}


def explicit(tag: int, vr: str, value: bytes) -> bytes:
    """An Explicit VR Little Endian data element."""
    if vr in _LONG_VRS:
        return struct.pack("<HH2sHL", tag >> 16, tag & 0xFFFF, vr.encode(), 0, len(value)) + value
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), len(value)) + value


def c_store_rq(sop_class: str, sop_instance: str, message_id: int) -> bytes:
    """The C-STORE-RQ command set (group 0000, Implicit VR Little Endian), with its length."""
    elements = b"".join(
        (
            implicit(0x00000002, _pad(sop_class.encode(), "UI")),
            implicit(0x00000100, struct.pack("<H", 0x0001)),
            implicit(0x00000110, struct.pack("<H", message_id)),
            implicit(0x00000700, struct.pack("<H", 0)),
            implicit(0x00000800, struct.pack("<H", 0x0000)),
            implicit(0x00001000, _pad(sop_instance.encode(), "UI")),
        )
    )
    return implicit(0x00000000, struct.pack("<L", len(elements))) + elements


def uid(rng: random.Random) -> str:
    """A UID under the 2.25 root (a random 96-bit integer)."""
    return f"2.25.{rng.getrandbits(96)}"


def ct_elements(
    rng: random.Random,
    *,
    sop_class: str = CT_IMAGE_STORAGE,
    sop_instance: str,
    series: str,
    study: str,
    rows: int = 16,
    columns: int = 16,
    pixel_bytes: int | None = None,
) -> list[tuple[int, str, bytes]]:
    """A small CT image's elements ``(tag, VR, value)`` in tag order; empty UIDs are left out."""
    size = rows * columns * 2 if pixel_bytes is None else pixel_bytes
    elements = [
        (0x00080008, "CS", b"ORIGINAL\\PRIMARY\\AXIAL"),
        (0x00080016, "UI", sop_class.encode()),
        (0x00080018, "UI", sop_instance.encode()),
        (0x00080060, "CS", b"CT" if sop_class == CT_IMAGE_STORAGE else b"MR"),
        (0x00100010, "PN", b"FUZZ^CASE"),
        (0x00100020, "LO", b"FUZZ"),
        (0x0020000D, "UI", study.encode()),
        (0x0020000E, "UI", series.encode()),
        (0x00200013, "IS", str(rng.randint(1, 999)).encode()),
        (0x00200032, "DS", b"0\\0\\" + str(rng.randint(0, 100)).encode()),
        (0x00200037, "DS", b"1\\0\\0\\0\\1\\0"),
        (0x00280002, "US", struct.pack("<H", 1)),
        (0x00280004, "CS", b"MONOCHROME2"),
        (0x00280010, "US", struct.pack("<H", rows)),
        (0x00280011, "US", struct.pack("<H", columns)),
        (0x00280030, "DS", b"0.5\\0.5"),
        (0x00280100, "US", struct.pack("<H", 16)),
        (0x00280101, "US", struct.pack("<H", 16)),
        (0x00280102, "US", struct.pack("<H", 15)),
        (0x00280103, "US", struct.pack("<H", 1)),
        (0x00281052, "DS", b"0"),
        (0x00281053, "DS", b"1"),
        (0x7FE00010, "OW", rng.randbytes(size)),
    ]
    return [(tag, vr, _pad(value, vr)) for tag, vr, value in elements if value]


def encode(elements: list[tuple[int, str, bytes]], *, explicit_vr: bool = False) -> bytes:
    if explicit_vr:
        return b"".join(explicit(tag, vr, value) for tag, vr, value in elements)
    return b"".join(implicit(tag, value) for tag, _, value in elements)


def deep_sequence(depth: int) -> bytes:
    """Content Sequence (0040,A730) nested ``depth`` levels, undefined lengths, Implicit VR."""
    opening = implicit(0x0040A730, b"", 0xFFFFFFFF) + implicit(0xFFFEE000, b"", 0xFFFFFFFF)
    closing = implicit(0xFFFEE00D, b"") + implicit(0xFFFEE0DD, b"")
    return opening * depth + closing * depth


# --- the generator ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FuzzSettings:
    """What the generated cases target and how long the stalling ones last.

    called : the node's AE title, so that well-formed parts are accepted.
    hold_s : (shortest, longest) time in seconds an idle or stalled connection is held open.
    depth : nesting of ``dataset_deep_sequence``.
    series_pool : data sets that could be stored go to one of this many series per seed, so
        that a long run does not leave thousands of one-image series behind.
    """

    called: bytes = b"CTPNODE"
    hold_s: tuple[float, float] = (1.0, 15.0)
    depth: int = 10_000
    series_pool: int = 8


_CONTROL_TITLES = (
    b"SCAN\nNER",
    b"\r\nINJECT",
    b"\x1b[31mRED",
    b"NUL\x00BYTE",
    b"BACK\\SLASH",
    b"\x07\x08\x7f",
    b"TAB\tTITLE",
)


class _Builder:
    def __init__(self, seed: int, settings: FuzzSettings) -> None:
        self.rng = random.Random(seed)
        self.settings = settings
        self.study = uid(self.rng)
        self.series = [uid(self.rng) for _ in range(settings.series_pool)]
        self.message_id = 0

    def hold(self) -> Step:
        low, high = self.settings.hold_s
        return Step("hold", seconds=round(self.rng.uniform(low, high), 2))

    def associate(self) -> Step:
        return Step("associate", associate_rq(self.settings.called))

    def store(self, data_set: bytes, sop_instance: str, context: int = CT_IMPLICIT_CONTEXT,
              sop_class: str = CT_IMAGE_STORAGE) -> tuple[Step, ...]:  # fmt: skip
        self.message_id = self.message_id % 65535 + 1
        command = p_data(context, 0x03, c_store_rq(sop_class, sop_instance, self.message_id))
        return (
            self.associate(),
            Step("exchange", command + p_data(context, 0x02, data_set)),
            Step("release"),
            Step("close"),
        )

    def image(self, **overrides: object) -> tuple[str, list[tuple[int, str, bytes]]]:
        sop_instance = uid(self.rng)
        fields = {
            "sop_instance": sop_instance,
            "series": self.rng.choice(self.series),
            "study": self.study,
            **overrides,
        }
        return sop_instance, ct_elements(self.rng, **fields)  # type: ignore[arg-type]

    def build(self, kind: str) -> tuple[Step, ...]:
        rng = self.rng
        request = associate_rq(self.settings.called)
        if kind == "garbage":
            return (Step("exchange", rng.randbytes(rng.randint(1, 4096))), Step("close"))
        if kind == "unknown_pdu_type":
            pdu_type = rng.choice([0x00, *range(0x08, 0x100)])
            body = rng.randbytes(rng.randint(0, 512))
            return (Step("exchange", pdu(pdu_type, body)), Step("close"))
        if kind == "associate_huge_length":
            head = pdu(0x01, request[6 : 6 + rng.randint(0, 200)], length=0xFFFFFFFF)
            end = self.hold() if rng.random() < 0.5 else Step("close")
            return (Step("send", head), end, Step("close"))
        if kind == "associate_truncated":
            return (Step("send", request[: rng.randint(7, len(request) - 1)]), Step("close"))
        if kind == "ae_title_control_chars":
            called = rng.choice([self.settings.called, *_CONTROL_TITLES])
            calling = rng.choice(_CONTROL_TITLES)
            return (Step("exchange", associate_rq(called, calling)), Step("close"))
        if kind == "idle":
            return (self.hold(), Step("close"))
        if kind == "half_open":
            return (Step("send", request[: rng.randint(1, len(request) - 1)]), self.hold(),
                    Step("close"))  # fmt: skip
        if kind == "closed_mid_pdu":
            end = Step(rng.choice(["close", "reset"]))
            if rng.random() < 0.5:
                return (Step("send", request[: rng.randint(1, len(request) - 1)]), end)
            sop_instance, elements = self.image()
            command = p_data(1, 0x03, c_store_rq(CT_IMAGE_STORAGE, sop_instance, 1))
            message = command + p_data(1, 0x02, encode(elements))
            return (self.associate(), Step("send", message[: rng.randint(1, len(message) - 1)]),
                    end)  # fmt: skip
        if kind == "oversized_pdu":
            mebibytes = rng.randint(1, 16)
            chunk = rng.randbytes(1 << 20)
            header = pdu(0x04, b"", length=(mebibytes << 20) + 6)
            pdv = struct.pack(">LBB", (mebibytes << 20) + 2, 1, 0x02)
            return (self.associate(), Step("send", header + pdv),
                    Step("send", chunk, repeat=mebibytes), Step("release"),
                    Step("close"))  # fmt: skip
        if kind == "pdata_huge_length":
            head = pdu(0x04, rng.randbytes(rng.randint(0, 256)), length=0xFFFFFFFF)
            end = self.hold() if rng.random() < 0.5 else Step("close")
            return (self.associate(), Step("send", head), end, Step("close"))
        if kind == "dataset_huge_element":
            sop_instance, elements = self.image()
            declared = rng.choice([0x7FFFFFFF, 0x80000000, 0xFFFFFFFE])
            position = rng.randrange(len(elements))
            head = encode(elements[:position])
            tag = elements[position][0]
            broken = head + implicit(tag, rng.randbytes(rng.randint(0, 64)), declared)
            return self.store(broken, sop_instance)
        if kind == "dataset_explicit_under_implicit":
            sop_instance, elements = self.image()
            return self.store(encode(elements, explicit_vr=True), sop_instance)
        if kind == "dataset_deep_sequence":
            sop_instance, elements = self.image()
            head = [e for e in elements if e[0] < 0x0040A730]
            tail = [e for e in elements if e[0] > 0x0040A730]
            data_set = encode(head) + deep_sequence(self.settings.depth) + encode(tail)
            return self.store(data_set, sop_instance)
        if kind == "dataset_wrong_sop_class":
            sop_instance, elements = self.image(sop_class=MR_IMAGE_STORAGE)
            return self.store(encode(elements), sop_instance)
        if kind == "dataset_missing_uids":
            sop_instance = uid(rng)
            _, elements = self.image(sop_instance="", series="", study="")
            return self.store(encode(elements), sop_instance)
        if kind == "dataset_short_pixels":
            rows = rng.choice([256, 512])
            short = rng.randint(0, rows * rows * 2 - 2) // 2 * 2
            sop_instance, elements = self.image(rows=rows, columns=rows, pixel_bytes=short)
            return self.store(encode(elements), sop_instance)
        raise ValueError(f"unknown kind {kind!r}; known: {', '.join(KINDS)}")


def cases(seed: int, count: int, settings: FuzzSettings | None = None) -> Iterator[Case]:
    """``count`` malformed inputs for ``seed``: the same ones, in the same order, every time.
    The first ``len(KINDS)`` are one of each kind; then kinds are drawn with :data:`WEIGHTS`."""
    builder = _Builder(seed, settings or FuzzSettings())
    first = list(KINDS)
    builder.rng.shuffle(first)
    names, weights = list(WEIGHTS), list(WEIGHTS.values())
    for index in range(count):
        if index < len(first):
            kind = first[index]
        else:
            kind = builder.rng.choices(names, weights)[0]
        yield Case(index, kind, builder.build(kind))


# --- the client ------------------------------------------------------------------------------

_PDU_NAMES = {
    0x01: "A-ASSOCIATE-RQ",
    0x02: "A-ASSOCIATE-AC",
    0x03: "A-ASSOCIATE-RJ",
    0x04: "P-DATA-TF",
    0x05: "A-RELEASE-RQ",
    0x06: "A-RELEASE-RP",
    0x07: "A-ABORT",
}


def _read_exact(sock: socket.socket, size: int, deadline: float) -> bytes | None:
    data = bytearray()
    while len(data) < size:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        sock.settimeout(remaining)
        chunk = sock.recv(min(size - len(data), 1 << 16))
        if not chunk:
            return None
        data.extend(chunk)
    return bytes(data)


def read_pdu(sock: socket.socket, timeout_s: float) -> tuple[int, bytes] | None:
    """The next PDU ``(type, body)``; None when the node closed the connection. Bodies above
    1 MiB are refused (the node never needs to send one to this client)."""
    deadline = time.monotonic() + timeout_s
    header = _read_exact(sock, 6, deadline)
    if header is None:
        return None
    pdu_type, _, length = struct.unpack(">BBL", header)
    if length > 1 << 20:
        raise ValueError(f"PDU of {length} bytes from the node")
    body = _read_exact(sock, length, deadline)
    return None if body is None else (pdu_type, body)


def command_status(body: bytes) -> int | None:
    """Status (0000,0900) of the command set in a P-DATA-TF body, if it holds one."""
    offset = 0
    while offset + 6 <= len(body):
        length, _, control = struct.unpack(">LBB", body[offset : offset + 6])
        value = body[offset + 6 : offset + 4 + length]
        offset += 4 + length
        if not control & 0x01:
            continue
        position = 0
        while position + 8 <= len(value):
            group, element, size = struct.unpack("<HHL", value[position : position + 8])
            if (group, element) == (0x0000, 0x0900) and size == 2:
                return int(struct.unpack("<H", value[position + 8 : position + 10])[0])
            position += 8 + size
    return None


def describe(answer: tuple[int, bytes] | None) -> str:
    """The node's answer in a few words: which PDU, and for a C-STORE-RSP its status."""
    if answer is None:
        return "closed by node"
    pdu_type, body = answer
    name = _PDU_NAMES.get(pdu_type, f"PDU 0x{pdu_type:02X}")
    if pdu_type == 0x03 and len(body) >= 4:
        return f"{name} ({body[1]}/{body[2]}/{body[3]})"  # result/source/reason
    if pdu_type == 0x04:
        status = command_status(body)
        return f"status 0x{status:04X}" if status is not None else name
    return name


def play(case: Case, host: str, port: int, answer_timeout_s: float = 10.0) -> str:
    """Play ``case`` against ``host:port``; what the node did, in a few words (the answer to
    the last step that expected one, or what happened to the connection)."""
    outcome = "sent, nothing awaited"
    try:
        sock = socket.create_connection((host, port), timeout=answer_timeout_s)
    except OSError as exc:
        return f"connect failed ({type(exc).__name__})"
    try:
        for step in case.steps:
            if step.action == "send":
                sock.settimeout(answer_timeout_s)
                for _ in range(step.repeat):
                    sock.sendall(step.data)
            elif step.action in ("associate", "exchange"):
                sock.settimeout(answer_timeout_s)
                sock.sendall(step.data)
                answer = read_pdu(sock, answer_timeout_s)
                if step.action == "associate":
                    if answer is None or answer[0] != 0x02:
                        return describe(answer)
                    outcome = "associated"
                if step.action == "exchange":
                    outcome = describe(answer)
                    if answer is None or answer[0] in (0x03, 0x07):
                        return outcome
            elif step.action == "release":
                sock.settimeout(answer_timeout_s)
                sock.sendall(RELEASE_RQ)
                answer = read_pdu(sock, answer_timeout_s)
                if answer is None or answer[0] != 0x06:
                    return f"{outcome}; release: {describe(answer)}"
            elif step.action == "hold":
                started = time.monotonic()
                readable, _, _ = select.select([sock], [], [], step.seconds)
                if readable:
                    answer = read_pdu(sock, answer_timeout_s)
                    return f"{describe(answer)} after {time.monotonic() - started:.0f} s"
                outcome = "held open"
            elif step.action == "reset":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                break
            elif step.action == "close":
                break
    except TimeoutError:
        return "no answer (timeout)"
    except (ConnectionResetError, BrokenPipeError):
        return "reset by node"
    except (OSError, ValueError) as exc:
        return f"client error ({type(exc).__name__})"
    finally:
        sock.close()
    return outcome
