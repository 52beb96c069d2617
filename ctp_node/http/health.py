"""Readiness: is the node able to do its work now? Each check is a function that returns
``None`` when it passes, or a sentence saying what is wrong."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from ctp_node.store import Database
from ctp_node.store.counts import ping

log = logging.getLogger(__name__)

#: A readiness check: ``None`` when it passes, else the reason it fails (one sentence).
Check = Callable[[], str | None]


class Listener(Protocol):
    def accepting(self) -> bool: ...


def run_checks(checks: Mapping[str, Check]) -> tuple[bool, dict[str, dict]]:
    """Run every check (one that raises fails, with the exception as its reason). Returns
    whether all passed, and ``{name: {"ok": bool, "reason": str}}`` (reason "" when ok)."""
    results = {}
    for name, check in checks.items():
        try:
            reason = check()
        except Exception as exc:  # a check must answer, whatever breaks below it
            reason = f"the check failed: {type(exc).__name__}: {exc}"
        results[name] = {"ok": reason is None, "reason": reason or ""}
    return all(r["ok"] for r in results.values()), results


def database_check(db: Database) -> Check:
    """The database answers ``SELECT 1``."""

    def check() -> str | None:
        try:
            ping(db)
        except Exception as exc:
            # one line, no URL: the driver's message may quote the connection string
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            return f"the database does not answer: {type(exc).__name__}: {first_line}"
        return None

    return check


def disk_check(free_bytes: Callable[[], int], min_free_bytes: int) -> Check:
    """The file system of ``storage.root`` has at least ``storage.min_free_bytes`` free, the
    watermark below which the listener refuses C-STORE (0xA700)."""

    def check() -> str | None:
        free = free_bytes()
        if free < min_free_bytes:
            return (
                f"{free / 1e6:.0f} MB free below storage.root, under storage.min_free_bytes "
                f"({min_free_bytes / 1e6:.0f} MB): C-STORE is refused (0xA700)"
            )
        return None

    return check


def listener_check(listeners: Callable[[], Iterable[tuple[str, Listener | None]]]) -> Check:
    """Every DICOM listener (plain, and TLS when configured) has its socket open and its
    accepting thread running. ``listeners()`` gives ``(description, server)`` pairs."""

    def check() -> str | None:
        down = [name for name, server in listeners() if server is None or not server.accepting()]
        if down:
            return f"the DICOM listener on {', '.join(down)} is not accepting connections"
        return None

    return check
