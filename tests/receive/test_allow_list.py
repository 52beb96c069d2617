"""``node.allowed_callers`` hosts: IP addresses, CIDR networks and host names, with real
echoscu associations to a real listener; and how names are looked up again (a DHCP change)."""

from __future__ import annotations

import ipaddress
import logging
import subprocess

import pytest

from ctp_node.receive.allow_list import REFRESH_S, RETRY_S, AllowList, Caller, unresolvable_hosts
from ctp_node.store.ingest import list_rejections
from tests.conftest import FAST_TCP_ENV, dcmtk
from tests.receive.conftest import AE_TITLE

#: A name that never resolves (RFC 6761 reserves .invalid).
NOWHERE = "ct1.invalid"


def _echo(port: int, calling: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            dcmtk("echoscu"),
            *("-v", "-aet", calling, "-aec", AE_TITLE, "-to", "5"),
            *("127.0.0.1", str(port)),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env=FAST_TCP_ENV,
    )


@pytest.mark.parametrize("host", ["localhost", "127.0.0.0/8", "127.0.0.1", "::ffff:127.0.0.1"])
def test_caller_from_an_allowed_host_name_network_or_address_gets_in(listener, host) -> None:
    port, _, db = listener(allowed=(Caller("CT1", host),))
    assert _echo(port, "CT1").returncode == 0
    assert list_rejections(db) == []
    refused = _echo(port, "CT2")  # the host alone is not enough
    assert "Calling AE Title Not Recognized" in refused.stdout + refused.stderr


def test_caller_from_another_network_is_rejected_and_recorded(listener) -> None:
    port, _, db = listener(allowed=(Caller("CT1", "10.0.0.0/8"),))
    refused = _echo(port, "CT1")
    assert refused.returncode != 0
    assert "Calling AE Title Not Recognized" in refused.stdout + refused.stderr  # A-ASSOCIATE-RJ
    (rejection,) = list_rejections(db)
    assert (rejection.kind, rejection.calling_ae_title) == ("association", "CT1")
    assert "'CT1' at 127.0.0.1 is not in node.allowed_callers" in rejection.reason
    assert "CT1 is allowed from 10.0.0.0/8" in rejection.reason


def test_a_name_that_does_not_resolve_matches_nobody_and_is_logged_once(listener, caplog) -> None:
    with caplog.at_level(logging.INFO):
        port, _, db = listener(allowed=(Caller("CT1", NOWHERE), Caller("CT9", "127.0.0.1")))
        assert _echo(port, "CT1").returncode != 0
        assert _echo(port, "CT1").returncode != 0
        assert _echo(port, "CT9").returncode == 0
    rejections = list_rejections(db)
    assert len(rejections) == 2
    assert f"{NOWHERE} (does not resolve)" in rejections[0].reason
    warned = [r.getMessage() for r in caplog.records if NOWHERE in r.getMessage()]
    warned = [line for line in warned if "does not resolve" in line and "refused" not in line]
    assert len(warned) == 1  # at start, not once per association
    assert "matches no caller" in warned[0]


def test_unresolvable_hosts_names_the_entry() -> None:
    callers = [Caller("CT1", "localhost"), Caller("CT2", NOWHERE), Caller("CT3", "10.0.0.0/8")]
    assert list(unresolvable_hosts(callers)) == [1]
    assert NOWHERE in unresolvable_hosts(callers)[1]


class _NameServer:
    """A name server whose answers a test changes (as DHCP and DNS would), and a clock."""

    def __init__(self, **names: str) -> None:
        self.names = dict(names)
        self.queries = 0
        self.now = 1000.0

    def resolve(self, name: str) -> frozenset:
        self.queries += 1
        if self.names.get(name) is None:
            raise OSError(-2, "Name or service not known")
        return frozenset({ipaddress.ip_address(self.names[name])})

    def clock(self) -> float:
        return self.now


def test_a_new_address_is_followed_at_once_and_lookups_are_rate_limited(caplog) -> None:
    dns = _NameServer(ct1="10.1.2.3")
    allowed = AllowList([Caller("CT1", "ct1")], dns.resolve, dns.clock)
    assert dns.queries == 1  # at start
    assert allowed.allows("CT1", "10.1.2.3")
    assert dns.queries == 1  # known: no query
    assert not allowed.allows("CT2", "10.1.2.3")
    assert dns.queries == 1  # no entry for this title: no query

    dns.names["ct1"] = "10.1.2.99"  # DHCP gave the scanner another address
    dns.now += RETRY_S
    assert allowed.allows("CT1", "10.1.2.99")  # looked up again on the miss
    assert dns.queries == 2
    assert not allowed.allows("CT1", "10.66.0.1")  # an intruder at once: no look-up
    assert dns.queries == 2
    dns.now += RETRY_S
    assert not allowed.allows("CT1", "10.66.0.1")  # later: one look-up, then ...
    assert not allowed.allows("CT1", "10.66.0.1")
    assert not allowed.allows("CT1", "10.66.0.1")
    assert dns.queries == 3  # ... none until RETRY_S has passed
    assert not allowed.allows("CT1", "10.1.2.3")  # the old address no longer matches


def test_stale_addresses_are_refreshed_and_kept_while_the_name_server_is_away(caplog) -> None:
    dns = _NameServer(ct1="10.1.2.3")
    allowed = AllowList([Caller("CT1", "ct1")], dns.resolve, dns.clock)
    dns.names["ct1"] = None  # the name server cannot answer
    with caplog.at_level(logging.INFO):
        dns.now += REFRESH_S
        assert allowed.allows("CT1", "10.1.2.3")  # last addresses kept
        dns.now += REFRESH_S
        assert allowed.allows("CT1", "10.1.2.3")
    assert dns.queries == 3
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "ct1 does not resolve" in warning and "last addresses are kept: 10.1.2.3" in warning
    dns.names["ct1"] = "10.1.2.4"
    dns.now += REFRESH_S
    assert allowed.allows("CT1", "10.1.2.4")
    assert not allowed.allows("CT1", "10.1.2.3")


def test_entry_without_host_accepts_any_address_and_is_logged(caplog) -> None:
    with caplog.at_level(logging.WARNING):
        allowed = AllowList([Caller("CT1")])
    assert allowed.allows("CT1", "192.0.2.7") and not allowed.allows("CT2", "192.0.2.7")
    assert "CT1 has no host: any machine" in caplog.text
    assert AllowList([]).allows("ANYONE", "192.0.2.7")
