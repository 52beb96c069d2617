"""Access control of the web console on a real ``serve`` (uvicorn on loopback), asked with
httpx: sign-in with users from ``ctp-node user add`` (argon2), the session cookie, pages and
actions refused when signed out, idle sign-out, lockout after repeated failures, a reverse
proxy's header believed only from a trusted address, HTTPS with a test CA, and every sign-in
and action in the console's audit trail (the ``/audit`` page)."""

from __future__ import annotations

import json
import re
import ssl
import stat
import time
from pathlib import Path

import httpx
import pytest

from ctp_node.http.access import SESSION_COOKIE
from tests.conftest import ServedNode, run_cli, wait_until

PASSWORD = "correct horse battery"


def _user(node: ServedNode, *args: str, password: str = PASSWORD) -> None:
    """``ctp-node user ARGS`` on the node's configuration, the password on stdin."""
    done = run_cli("user", *args, "--config", str(node.config_path), stdin=password + "\n")
    assert done.returncode == 0, done.stderr


def _client(node: ServedNode, scheme: str = "http", **options) -> httpx.Client:
    base = f"{scheme}://127.0.0.1:{node.http_port}"
    return httpx.Client(base_url=base, follow_redirects=False, timeout=60, **options)


def _sign_in(client: httpx.Client, name: str, password: str, next_: str = "/") -> httpx.Response:
    return client.post("/login", data={"name": name, "password": password, "next": next_})


def _audit_rows(client: httpx.Client) -> list[str]:
    """The audit page's rows, as text (user, address, action, …)."""
    page = client.get("/audit")
    assert page.status_code == 200, page.text
    rows = re.findall(r"<tr><td>(.*?)</tr>", page.text, re.DOTALL)
    return [re.sub(r"<[^>]+>", " ", row) for row in rows]


@pytest.fixture
def users_node(serve_node, tmp_path: Path) -> ServedNode:
    auth = {"mode": "users", "users_file": "console-users.yaml", "session_minutes": 0.05}
    node = serve_node([], http={"auth": auth})
    _user(node, "add", "alice")
    return node


def test_signed_out_pages_redirect_and_actions_are_refused(users_node: ServedNode) -> None:
    with _client(users_node) as client:
        page = client.get("/jobs/1?message=x")
        assert page.status_code == 303
        assert page.headers["location"] == "/login?next=/jobs/1%3Fmessage%3Dx"
        for path in ("/", "/refusals", "/audit", "/series/1.2.3/baseline.png"):
            assert client.get(path).status_code == 303, path
        refused = client.post("/series/1.2.3/reprocess", data={"aif": "1,2,3"})
        assert refused.status_code == 401 and "sign in first" in refused.text
        assert client.post("/jobs/1/resend").status_code == 401
        # open: a load balancer and Prometheus do not sign in
        assert client.get("/health/live").status_code == 200
        assert client.get("/metrics").status_code == 200
        form = client.get("/login?next=/refusals")
        assert form.status_code == 200 and 'value="/refusals"' in form.text
    assert users_node.status()["jobs"] == []  # nothing was queued


def test_sign_in_session_cookie_actions_audited_and_sign_out(users_node: ServedNode) -> None:
    with _client(users_node) as client:
        wrong = _sign_in(client, "alice", "wrong horse")
        assert wrong.status_code == 401 and "wrong name or password" in wrong.text
        assert SESSION_COOKIE not in client.cookies
        unknown = _sign_in(client, "mallory", PASSWORD)
        assert unknown.status_code == 401

        signed_in = _sign_in(client, "alice", PASSWORD, "/refusals")
        assert (signed_in.status_code, signed_in.headers["location"]) == (303, "/refusals")
        cookie = signed_in.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie
        assert PASSWORD not in signed_in.headers["set-cookie"]
        page = client.get("/")
        assert page.status_code == 200 and "signed in as <b>alice</b>" in page.text

        queued = client.post("/series/1.2.3.4/reprocess", data={"aif": "1,2,3", "vof": ""})
        assert queued.status_code == 400  # no such series: refused, and audited as refused
        rows = _audit_rows(client)
        assert "reprocess" in rows[0] and "alice" in rows[0] and "refused" in rows[0]
        assert "1.2.3.4" in rows[0] and "AIF 1,2,3, VOF auto" in rows[0]
        assert "sign-in" in rows[1] and "alice" in rows[1] and "127.0.0.1" in rows[1]
        assert "sign-in failed" in rows[2] and "mallory" in rows[2]
        assert "sign-in failed" in rows[3] and "alice" in rows[3]
        assert not any(PASSWORD in row or "wrong horse" in row for row in rows)

        assert client.post("/logout").status_code == 303
        assert client.get("/").status_code == 303
        with _client(users_node) as other:
            assert _sign_in(other, "alice", PASSWORD).status_code == 303
            assert "sign-out" in _audit_rows(other)[1]
    log = users_node.log()
    assert "failed sign-in as 'mallory' from 127.0.0.1" in log
    assert PASSWORD not in log and "wrong horse" not in log

    # the same trail from the command line: a table, and JSON lines of the refused only
    config = str(users_node.config_path)
    table = run_cli("status", "--console", "--config", config)
    assert table.returncode == 0, table.stderr
    assert "console audit trail: 6 action(s), newest first" in table.stdout
    assert "alice from 127.0.0.1  sign-out  done" in table.stdout
    refused = run_cli("status", "--console", "--failed", "--json", "--config", config)
    lines = [json.loads(line) for line in refused.stdout.splitlines()]
    assert [(x["action"], x["user"]) for x in lines] == [
        ("sign-in failed", "alice"),
        ("sign-in failed", "mallory"),
        ("reprocess", "alice"),
    ]
    assert lines[2]["series_instance_uid"] == "1.2.3.4" and lines[2]["at"].endswith("Z")


def test_idle_sessions_and_removed_users_are_signed_out(users_node: ServedNode) -> None:
    with _client(users_node) as client:
        assert _sign_in(client, "alice", PASSWORD).status_code == 303
        assert client.get("/").status_code == 200
        time.sleep(3.5)  # session_minutes: 0.05 = 3 s without a request
        assert client.get("/").status_code == 303
        elsewhere = _sign_in(client, "alice", PASSWORD, "/\\evil.example/")
        assert (elsewhere.status_code, elsewhere.headers["location"]) == (303, "/")
        _user(users_node, "remove", "alice")
        assert client.get("/").status_code == 303  # no restart needed
        (users_node.root / "console-users.yaml").write_text("- not\n- users\n")  # by hand
        broken = _sign_in(client, "alice", PASSWORD)
        assert broken.status_code == 503
        assert "nobody can sign in now: the users file" in broken.text
        assert "is not a list of `name: hash` lines" in broken.text


def test_repeated_failures_lock_the_name_out(users_node: ServedNode) -> None:
    with _client(users_node) as client:
        started = time.monotonic()
        for _ in range(5):
            assert _sign_in(client, "alice", "guess").status_code == 401
        assert time.monotonic() - started >= 5  # each failure waited a second
        locked = _sign_in(client, "alice", PASSWORD)  # even the right password
        assert locked.status_code == 429 and "too many failed sign-ins" in locked.text
        assert SESSION_COOKIE not in client.cookies


def test_a_proxy_header_is_believed_only_from_a_trusted_address(serve_node) -> None:
    auth = {"mode": "proxy", "proxy_header": "X-Remote-User", "trusted_proxies": ["127.0.0.1"]}
    node = serve_node([], http={"auth": auth})
    header = {"X-Remote-User": "dr.who"}
    with _client(node) as proxy:
        page = proxy.get("/", headers=header)
        assert page.status_code == 200 and "signed in as <b>dr.who</b>" in page.text
        # as nginx sends it: the browser's address does not replace the proxy's
        forwarded = proxy.get("/", headers={**header, "X-Forwarded-For": "10.9.9.9"})
        assert forwarded.status_code == 200
        assert proxy.get("/").status_code == 403  # no user named: not through the proxy
        refused = proxy.post("/series/9.9/reprocess", data={"aif": ""}, headers=header)
        assert refused.status_code == 400
        assert "dr.who" in _audit_rows_as(proxy, header)[0]
    elsewhere = httpx.HTTPTransport(local_address="127.0.0.2")  # another machine, in effect
    with _client(node, transport=elsewhere) as client:
        forged = client.get("/", headers=header)
        assert forged.status_code == 403
        assert "believed only from http.auth.trusted_proxies" in forged.text
        assert client.get("/health/ready").status_code in (200, 503)  # open to anyone
    with _client(node) as proxy:
        row = _audit_rows_as(proxy, header)[0]
        assert "refused" in row and "127.0.0.2" in row and "dr.who" in row


def _proxy_options(client: httpx.Client, header: dict) -> dict:
    return {"base_url": client.base_url, "headers": header, "timeout": 60}


def _audit_rows_as(client: httpx.Client, header: dict) -> list[str]:
    with httpx.Client(**_proxy_options(client, header)) as signed:
        return _audit_rows(signed)


def test_https_with_a_certificate_and_a_secure_cookie(serve_node, tls_files) -> None:
    tls = {
        "certificate": str(tls_files.server.certificate),
        "private_key": str(tls_files.server.private_key),
    }
    auth = {"mode": "users", "users_file": "console-users.yaml"}
    node = serve_node([], http={"auth": auth, "tls": tls})
    _user(node, "add", "alice")
    with _client(node, "https", verify=ssl.create_default_context(cafile=tls_files.ca)) as client:
        assert client.get("/health/live").status_code == 200
        signed_in = _sign_in(client, "alice", PASSWORD)
        assert signed_in.status_code == 303
        assert "secure" in signed_in.headers["set-cookie"].lower()
        assert client.get("/").status_code == 200
        key = node.root / "storage" / ".http-session-key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        node.restart()  # the key is kept: still signed in
        assert client.get("/").status_code == 200
    with _client(node) as plain, pytest.raises(httpx.HTTPError):
        plain.get("/health/live")  # no plain HTTP on the HTTPS port
    with (
        _client(
            node, "https", verify=ssl.create_default_context(cafile=tls_files.wrong_ca)
        ) as client,
        pytest.raises(httpx.ConnectError),
    ):
        client.get("/health/live")
    # `ctp-node status` asks /health/ready over HTTPS (the restarted workers may take a while)
    wait_until(lambda: node.status()["health"] == [], 120, "status to find the node ready")
