"""What ``ctp-node status`` asks a running ``serve``: its ``/health/ready`` (stdlib only)."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass

#: Seconds to wait for the answer; the readiness checks take milliseconds.
PROBE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Readiness:
    """``serve``'s answer: ``ready``, and a sentence for each failing check (or for no answer)."""

    ready: bool
    problems: tuple[str, ...]


def ready_url(bind: str, port: int, https: bool = False) -> str:
    """The URL of ``/health/ready`` for a face bound to ``bind`` (``0.0.0.0``/``::``: asked on
    loopback), over HTTPS when it serves HTTPS (``http.tls``)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(bind, bind)
    host = f"[{host}]" if ":" in host else host
    return f"{'https' if https else 'http'}://{host}:{port}/health/ready"


def ask_ready(url: str) -> Readiness:
    """GET ``url``; 200 is ready, 503 is not ready with the checks' reasons, and no answer
    is not ready, saying so."""
    # The node's own face, on this machine: its certificate is not checked (it may name the
    # machine's public name, not the address asked); the answer is counts, no secret.
    unverified = ssl._create_unverified_context() if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S, context=unverified) as response:
            json.load(response)
            return Readiness(True, ())
    except urllib.error.HTTPError as exc:
        if exc.code != 503:
            return Readiness(False, (f"{url} answered HTTP {exc.code}",))
        checks = json.load(exc).get("checks", {})
        return Readiness(
            False,
            tuple(f"{name}: {c['reason']}" for name, c in checks.items() if not c.get("ok")),
        )
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return Readiness(False, (f"{url} does not answer ({reason}): is serve running?",))
