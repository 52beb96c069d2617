"""Who may send: ``node.allowed_callers``, each an AE title and, optionally, the host it must
call from: an IP address, a network (CIDR: ``10.1.2.0/24``, ``fd00::/64``) or a host name.

A host name is resolved (``socket.getaddrinfo``, every address it has) when the listener
starts, and again when its addresses are older than :data:`REFRESH_S`, or at once, at most
every :data:`RETRY_S`, when a caller presents an allowed AE title from an address that matches
nothing: a scanner that DHCP gave a new address gets in at its first try. A name that does not
resolve matches no caller; that is logged once, when it starts or stops resolving, not at each
association. A name that resolved once keeps its last addresses while the name server cannot
be reached, so that a name-server outage does not lock the scanners out.

Resolution happens in the association's thread; one thread at a time resolves a given name,
the others use what is known meanwhile.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_IPV4_MAPPED = ipaddress.ip_network("::ffff:0:0/96")

#: Seconds after which a host name's addresses are looked up again at the next association.
REFRESH_S = 300.0
#: Fewest seconds between two look-ups of a name caused by callers that match nothing: a
#: stream of refused associations does not become a stream of name-server queries.
RETRY_S = 10.0


@dataclass(frozen=True)
class Caller:
    """An allowed calling AE; ``host`` (an IP address, a CIDR network or a host name) None
    matches any address."""

    ae_title: str
    host: str | None = None


def resolve_host(name: str) -> frozenset[IPAddress]:
    """Every address ``name`` has (IPv4 and IPv6). Raises OSError when it has none."""
    found = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    return frozenset(_address(str(info[4][0])) for info in found)


def host_network(host: str) -> IPNetwork | None:
    """The network an IP address (one address) or CIDR range names; None for a host name."""
    try:
        network = ipaddress.ip_network(host, strict=False)
    except ValueError:
        return None
    if network.version == 6 and network.subnet_of(_IPV4_MAPPED) and network.prefixlen >= 96:
        # IPv4 written as IPv6 (::ffff:10.1.2.3), compared as the IPv4 peers are (_address)
        mapped = network.network_address.ipv4_mapped
        return ipaddress.ip_network((mapped, network.prefixlen - 96))
    return network


def unresolvable_hosts(
    callers: Sequence[Caller], resolve: Callable[[str], frozenset[IPAddress]] = resolve_host
) -> dict[int, str]:
    """By index in ``callers``: why an entry's host name does not resolve now (for
    ``ctp-node config check``)."""
    problems = {}
    for index, caller in enumerate(callers):
        if caller.host is None or host_network(caller.host) is not None:
            continue
        try:
            resolve(caller.host)
        except OSError as exc:
            problems[index] = (
                f"host name {caller.host!r} does not resolve ({_why(exc)}): this entry "
                "matches no caller until it does"
            )
    return problems


class _HostName:
    """A host name's addresses as last resolved; the caller holds :attr:`busy`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.addresses: frozenset[IPAddress] = frozenset()
        self.resolved = False  # the last look-up found addresses
        self.looked_up_at = float("-inf")  # time.monotonic() of the last look-up
        self.busy = threading.Lock()


class AllowList:
    """``node.allowed_callers`` as the listener applies it.

    Parameters
    ----------
    callers : the entries; empty allows every caller.
    resolve : turns a host name into its addresses (raises OSError when it has none).
    clock : seconds, monotonic.
    """

    def __init__(
        self,
        callers: Iterable[Caller],
        resolve: Callable[[str], frozenset[IPAddress]] = resolve_host,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.callers = tuple(callers)
        self._resolve = resolve
        self._clock = clock
        self._networks: dict[Caller, IPNetwork] = {}
        self._names: dict[str, _HostName] = {}
        for caller in self.callers:
            if caller.host is None:
                log.warning(
                    "node.allowed_callers: %s has no host: any machine that presents this AE "
                    "title is accepted",
                    caller.ae_title,
                )
            elif (network := host_network(caller.host)) is not None:
                self._networks[caller] = network
            else:
                self._names.setdefault(caller.host, _HostName(caller.host))
        for name in self._names.values():
            self._look_up(name, first=True)

    def __bool__(self) -> bool:
        return bool(self.callers)

    def allows(self, ae_title: str, address: str) -> bool:
        """Whether a caller presenting ``ae_title`` from ``address`` may associate."""
        if not self.callers:
            return True
        candidates = [c for c in self.callers if c.ae_title == ae_title]
        try:
            peer = _address(address)
        except ValueError:
            return any(c.host is None for c in candidates)
        names = [self._names[c.host] for c in candidates if c.host in self._names]
        for name in names:
            if self._clock() - name.looked_up_at >= REFRESH_S:
                self._look_up(name)
        if any(self._matches(c, peer) for c in candidates):
            return True
        retried = [n for n in names if self._clock() - n.looked_up_at >= RETRY_S]
        for name in retried:
            self._look_up(name)
        return bool(retried) and any(self._matches(c, peer) for c in candidates)

    def hosts_of(self, ae_title: str) -> str:
        """Where ``ae_title`` is allowed from, readably (for a refusal's reason)."""
        hosts = []
        for caller in self.callers:
            if caller.ae_title != ae_title:
                continue
            if caller.host in self._names:
                name = self._names[caller.host]
                known = ", ".join(sorted(map(str, name.addresses))) or "does not resolve"
                hosts.append(f"{caller.host} ({known})")
            else:
                hosts.append(caller.host or "any host")
        return ", ".join(hosts)

    def _matches(self, caller: Caller, peer: IPAddress) -> bool:
        if caller.host is None:
            return True
        if caller in self._networks:
            return peer in self._networks[caller]
        return peer in self._names[caller.host].addresses

    def _look_up(self, name: _HostName, first: bool = False) -> None:
        if not name.busy.acquire(blocking=False):
            return  # another association is looking it up; use what is known
        try:
            name.looked_up_at = self._clock()
            try:
                addresses = self._resolve(name.name)
            except OSError as exc:
                if first or name.resolved:
                    kept = ", ".join(sorted(map(str, name.addresses)))
                    log.warning(
                        "node.allowed_callers: host name %s does not resolve (%s); %s",
                        name.name,
                        _why(exc),
                        f"its last addresses are kept: {kept}"
                        if kept
                        else "it matches no caller until it does",
                    )
                name.resolved = False
                return
            if first or addresses != name.addresses or not name.resolved:
                log.info(
                    "node.allowed_callers: host name %s is %s",
                    name.name,
                    ", ".join(sorted(map(str, addresses))),
                )
            name.addresses, name.resolved = addresses, True
        finally:
            name.busy.release()


def _address(text: str) -> IPAddress:
    """An IP address; an IPv4 address seen through an IPv6 socket (``::ffff:10.1.2.3``) as
    the IPv4 address, and without an IPv6 zone (``fe80::1%eth0``)."""
    address = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)
