"""The node's DICOM face in the configuration: ``node:``, its callers and its TLS listener."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, model_validator

from ctp_node.config.values import (
    AETitle,
    CallerHost,
    PemFile,
    PortNumber,
    PositiveSeconds,
    Section,
    _check_ip_address,
    _raise_at,
)


class AllowedCaller(Section):
    """A scanner or workstation allowed to send to the node.

    Attributes
    ----------
    ae_title : the caller's (calling) AE title.
    host : where it must call from: an IP address (``10.1.2.3``), a network in CIDR notation
        (``10.1.2.0/24``, ``fd00::/64``: a scanner whose address DHCP hands out) or a host
        name (``ct1.hospital.example``), resolved when the listener starts and again at
        most every few minutes, or sooner when a caller's address matches none, so that an
        address change is followed. A name that does not resolve matches no caller.
        ``None`` (kept for existing files) accepts the title from any host: anyone who
        presents it gets in, so ``ctp-node config check`` warns about it.
    """

    ae_title: AETitle
    host: CallerHost | None = None


class ListenerTLSConfig(Section):
    """DICOM TLS on a second listener, TLS-only (BCP 195 non-downgrading: TLS 1.2 or newer,
    forward-secret AEAD suites; see :mod:`ctp_node.tls`). The plain listener on ``node.port``
    stays; same AE title, callers and handling.

    Attributes
    ----------
    port : TCP port of the TLS listener; not ``node.port`` (2762 is DICOM's registered TLS
        port).
    certificate : PEM file with the node's certificate (its chain may follow it).
    private_key : PEM file with its private key, unencrypted (the node starts unattended);
        keep it readable only by the node's user.
    ca_certificates : PEM bundle of the CAs whose certificates callers may present; needed
        when ``require_client_certificate`` is true. Without it no client certificate is
        asked for.
    require_client_certificate : refuse a caller that presents no certificate signed by one
        of ``ca_certificates``. True by default: an AE title is a name anyone can type, a
        certificate is not, and a hospital that sets up TLS wants to know who sends (DCMTK's
        ``storescp +tls`` requires one too). False gives encryption and the node's
        authentication only, a certificate being checked if one is presented.
    """

    port: PortNumber
    certificate: PemFile
    private_key: PemFile
    ca_certificates: PemFile | None = None
    require_client_certificate: bool = True

    @model_validator(mode="after")
    def _ca_for_client_certificates(self) -> ListenerTLSConfig:
        if self.require_client_certificate and self.ca_certificates is None:
            _raise_at(
                ("ca_certificates",),
                "needed when require_client_certificate is true: the PEM bundle of the CAs "
                "that sign the callers' certificates; or set require_client_certificate: false",
                {},
                None,
            )
        return self


class NodeConfig(Section):
    """The DICOM face of the node (the C-STORE SCP).

    A connection is *pending* from its TCP connect (and TLS handshake) until its
    A-ASSOCIATE-RQ is accepted, then *admitted*; each stage has its own budget, so that idle,
    half-open or garbage connections never keep a scanner out (they took the node off the air
    when one budget served both).

    Attributes
    ----------
    ae_title : called AE title the node answers to.
    port : TCP port it listens on.
    bind : IP address it listens on (``0.0.0.0``: every interface).
    allowed_callers : callers accepted; empty accepts any caller.
    max_associations : admitted associations served at the same time. When all are busy, the
        oldest one that has sent no DIMSE message since it was accepted is closed to make
        room, else the one silent for longest if silent for ``idle_eviction_s``; else a new
        one is refused with A-ASSOCIATE-RJ "local limit exceeded" (transient: senders retry).
    max_associations_per_caller : admitted associations from one caller (one calling AE
        title at one address) at the same time; more are refused with "local limit exceeded".
        Below ``max_associations``, so that one busy or hostile caller cannot take every slot
        and a scanner always finds one; above the few a scanner or PACS uses at once.
    max_pending_connections : connections that have not yet sent an accepted A-ASSOCIATE-RQ,
        at the same time; one more closes the oldest of them. A scanner's request follows its
        connect within milliseconds, so a flood of idle connections cannot starve it. Each
        costs two threads.
    request_timeout_s : seconds a connection has, from its TCP connect, to complete its TLS
        handshake and its A-ASSOCIATE-RQ (the ARTIM timer of PS3.8 9.1.5); then it is closed.
        A few seconds: a real sender needs milliseconds.
    idle_eviction_s : seconds an admitted association must have been silent (no PDU) before
        it may be closed to make room for a new one when ``max_associations`` are open. Long
        enough for a scanner that keeps its association open between reconstructions.
    acse_timeout_s : seconds to wait for an A-RELEASE or A-ABORT exchange to finish.
    dimse_timeout_s : seconds to wait for a DIMSE message (pynetdicom).
    network_timeout_s : seconds an admitted association may stay silent (no PDU) before it is
        aborted, and the longest wait for one read from its socket.
    max_pdu_bytes : the largest PDU the node accepts, bytes; announced to senders as the
        A-ASSOCIATE maximum length, and a PDU declaring more is refused before it is read (the
        connection is closed). 4 MiB lets big CT images arrive in few PDUs.
    max_object_bytes : the largest data set one C-STORE may carry, bytes; data sets are
        written to disk as they arrive, and one growing beyond this ends its association
        before it fills the disk. The default, 2 GiB, is above any CT perfusion object (an
        enhanced multi-frame 320 x 512 x 512 volume is 168 MB).
    tls : a second listener, DICOM TLS only (:class:`ListenerTLSConfig`); ``None``: none.
        ``max_associations`` applies to each listener.
    """

    ae_title: AETitle = "CTPNODE"
    port: PortNumber = 11112
    bind: Annotated[str, AfterValidator(_check_ip_address)] = "0.0.0.0"
    allowed_callers: list[AllowedCaller] = []
    max_associations: int = Field(10, ge=1)
    max_associations_per_caller: int = Field(8, ge=1)
    max_pending_connections: int = Field(256, ge=1, le=10_000)
    request_timeout_s: Annotated[float, Field(gt=0, le=300)] = 5.0
    idle_eviction_s: PositiveSeconds = 10.0
    acse_timeout_s: PositiveSeconds = 30.0
    dimse_timeout_s: PositiveSeconds = 60.0
    network_timeout_s: PositiveSeconds = 60.0
    max_pdu_bytes: int = Field(4_194_304, ge=65_536, le=2**31)
    max_object_bytes: int = Field(2_147_483_648, ge=1_000_000)
    tls: ListenerTLSConfig | None = None

    @model_validator(mode="after")
    def _tls_port_of_its_own(self) -> NodeConfig:
        if self.tls is not None and self.tls.port == self.port:
            _raise_at(
                ("tls", "port"),
                "must differ from node.port ({port}): the TLS listener accepts TLS only",
                {"port": self.port},
                self.tls.port,
            )
        return self
