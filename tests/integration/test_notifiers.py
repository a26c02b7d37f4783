"""Notifiers against real local servers: aiosmtpd for e-mail, http.server for webhooks.

No broker or ClickHouse needed: these run in the default test suite.
"""

from __future__ import annotations

import email
import json
import logging
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from alerting import email as mail
from alerting import webhook
from alerting.detector import NEGATIVE_SPIKE, Alert, ExamplePost
from alerting.lifecycle import Notification

SECRET = "s3cr3t-signing-key"
PASSWORD = "hunter2-smtp-password"
T0 = datetime(2024, 3, 5, 14, 32, tzinfo=UTC)


def notification() -> Notification:
    alerts = tuple(
        Alert(
            symbol=symbol,
            kind=NEGATIVE_SPIKE,
            fired_at=T0,
            severity=severity,  # type: ignore[arg-type]
            statistic=11.4,
            p_value=3.9e-12,
            window_minutes=4,
            window_posts=61,
            window_negative=38,
            window_share=38 / 61,
            baseline_share=0.21,
            expected_total=9.5,
            episode_id=f"{symbol}:negative-spike:20240305T1428Z",
            examples=(
                ExamplePost(
                    "rss:1",
                    f"{symbol} recalls <everything> & more",
                    -0.97,
                    T0 - timedelta(minutes=2),
                ),
                ExamplePost("rss:2", f"{symbol} guidance cut", -0.91, T0 - timedelta(minutes=1)),
            ),
        )
        for symbol, severity in (("ACME", "critical"), ("XYZ", "warning"))
    )
    return Notification("firing-20240305T1432Z-abc123", "firing", T0, alerts)


# ---------------------------------------------------------------------------------------------
# webhook receiver


@dataclass
class Receiver:
    """Answers with the queued statuses (then 200) and keeps what it accepted."""

    statuses: list[int] = field(default_factory=list)
    retry_after: str | None = None
    delay_s: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    accepted: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if state.delay_s:
                time.sleep(state.delay_s)
            headers = {k.lower(): v for k, v in self.headers.items()}
            signed = webhook.verify(
                SECRET,
                headers.get("x-moodwire-timestamp", ""),
                body,
                headers.get("x-moodwire-signature", ""),
            )
            state.requests.append({"headers": headers, "body": body, "signed": signed})
            status = state.statuses.pop(0) if state.statuses else 200
            if status == 200 and not signed:
                status = 401
            if status == 200:  # before answering: the sender may look as soon as it has the answer
                state.accepted.append({"headers": headers, "json": json.loads(body)})
            self.send_response(status)
            if status != 200 and state.retry_after is not None:
                self.send_header("Retry-After", state.retry_after)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/{SECRET}-in-the-path"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def settings(url: str, **overrides: Any) -> webhook.WebhookSettings:
    values: dict[str, Any] = {
        "url": url,
        "secret": SECRET,
        "backoff_s": 0.01,
        "max_backoff_s": 0.05,
        "timeout_s": 2.0,
        "jitter": False,
    }
    return webhook.WebhookSettings(**(values | overrides))


def test_webhook_is_signed_versioned_and_verified(receiver: Receiver) -> None:
    outcome = webhook.deliver(notification(), settings(receiver.url))
    assert outcome.delivered and outcome.attempts == 1 and outcome.status_code == 200
    (got,) = receiver.accepted
    assert got["headers"]["x-moodwire-delivery"] == "firing-20240305T1432Z-abc123"
    assert got["headers"]["x-moodwire-signature"].startswith("sha256=")
    body = got["json"]
    assert body["schema_version"] == webhook.SCHEMA_VERSION == 1
    assert body["status"] == "firing" and body["created_at"] == "2024-03-05T14:32:00Z"
    acme = body["alerts"][0]
    assert acme["symbol"] == "ACME" and acme["kind"] == "negative-spike"
    assert acme["window"] == {
        "start": "2024-03-05T14:28:00Z",
        "end": "2024-03-05T14:32:00Z",
        "minutes": 4,
        "total": 61,
        "negative": 38,
        "negative_share": pytest.approx(38 / 61),
    }
    assert acme["baseline"]["negative_share"] == 0.21
    assert [e["id"] for e in acme["examples"]] == ["rss:1", "rss:2"]


def test_signature_rejects_tampering_and_replays() -> None:
    body = b'{"a":1}'
    now = time.time()
    ts = str(int(now))
    sig = webhook.sign(SECRET, ts, body)
    assert webhook.verify(SECRET, ts, body, sig, now=now)
    assert not webhook.verify(SECRET, ts, b'{"a":2}', sig, now=now)
    assert not webhook.verify("other", ts, body, sig, now=now)
    assert not webhook.verify(SECRET, ts, body, sig, now=now + 3600)  # an old capture, replayed
    assert not webhook.verify(SECRET, str(int(now) + 1), body, sig, now=now)


def test_a_receiver_failing_twice_gets_exactly_one_delivery(receiver: Receiver) -> None:
    receiver.statuses = [503, 503]
    receiver.retry_after = "0"
    outcome = webhook.deliver(notification(), settings(receiver.url))
    assert outcome.delivered and outcome.attempts == 3
    assert len(receiver.accepted) == 1 and len(receiver.requests) == 3
    # each attempt is signed afresh, the body stays the same
    assert all(r["signed"] for r in receiver.requests)
    assert len({r["body"] for r in receiver.requests}) == 1


def test_retry_after_is_honoured(receiver: Receiver) -> None:
    receiver.statuses = [429]
    receiver.retry_after = "1"
    began = time.monotonic()
    outcome = webhook.deliver(notification(), settings(receiver.url))
    assert outcome.delivered and outcome.attempts == 2
    assert time.monotonic() - began >= 1.0


def test_a_retry_after_beyond_the_budget_ends_as_a_failure(receiver: Receiver) -> None:
    receiver.statuses = [503]
    receiver.retry_after = "3600"
    outcome = webhook.deliver(notification(), settings(receiver.url, max_retry_after_s=5))
    assert not outcome.delivered and outcome.attempts == 1
    assert outcome.error is not None and "3600" in outcome.error


def test_a_refusal_is_not_retried(receiver: Receiver) -> None:
    receiver.statuses = [400]
    outcome = webhook.deliver(notification(), settings(receiver.url))
    assert not outcome.delivered and outcome.attempts == 1 and outcome.status_code == 400


def test_a_slow_receiver_times_out(receiver: Receiver) -> None:
    receiver.delay_s = 1.0
    began = time.monotonic()
    outcome = webhook.deliver(notification(), settings(receiver.url, timeout_s=0.2, max_attempts=2))
    assert not outcome.delivered and outcome.attempts == 2
    assert outcome.error is not None and outcome.error.startswith("timeout")
    assert time.monotonic() - began < 1.5


def test_a_down_endpoint_fails_quickly_without_leaking_secrets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/hooks/{SECRET}"
    caplog.set_level(logging.DEBUG)
    began = time.monotonic()
    outcome = webhook.deliver(notification(), settings(url, max_attempts=3))
    assert time.monotonic() - began < 2.0
    assert not outcome.delivered and outcome.attempts == 3 and outcome.status_code is None
    assert outcome.target == f"http://127.0.0.1:{port}"
    for text in (repr(outcome), json.dumps(outcome.to_dict()), caplog.text, repr(settings(url))):
        assert SECRET not in text
        assert "/hooks" not in text


def test_slack_format(receiver: Receiver) -> None:
    outcome = webhook.deliver(notification(), settings(receiver.url, format="slack"))
    assert outcome.delivered
    body = receiver.accepted[0]["json"]
    assert body["text"] == "negative-spike: ACME (critical), XYZ"
    sections = [b["text"]["text"] for b in body["blocks"] if b["type"] == "section"]
    assert len(sections) == 2 and "38/61 negative" in sections[0]
    assert "&lt;everything&gt; &amp; more" in sections[0]


# ---------------------------------------------------------------------------------------------
# SMTP


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.envelopes: list[Envelope] = []
        self.logins: list[str] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        assert isinstance(envelope.content, bytes)
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login == b"alerts"
            and data.password == PASSWORD.encode()
        )
        if ok:
            self.logins.append(data.login.decode())
        # handled=False: let the server answer 535 itself
        return AuthResult(success=ok, handled=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def plain_smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield inbox, controller.port
    controller.stop()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make a test certificate; scripts/install-services.sh installs it")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def tls_smtp(certificate: tuple[Path, Path]) -> Iterator[tuple[Inbox, int]]:
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    inbox = Inbox()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=free_port(),
        tls_context=context,
        require_starttls=True,
        auth_required=True,
        auth_require_tls=True,
        authenticator=inbox.authenticate,
    )
    controller.start()
    yield inbox, controller.port
    controller.stop()


def email_settings(port: int, **overrides: Any) -> mail.EmailSettings:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "sender": "moodwire@example.test",
        "recipients": ("desk@example.test", "risk@example.test"),
        "security": "none",
        "timeout_s": 5.0,
    }
    return mail.EmailSettings(**(values | overrides))


def parts(message: Message) -> dict[str, str]:
    out = {}
    for part in message.walk():
        if part.get_content_maintype() == "text":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            out[part.get_content_subtype()] = payload.decode(part.get_content_charset() or "utf-8")
    return out


def test_email_carries_the_evidence_in_text_and_html(plain_smtp: tuple[Inbox, int]) -> None:
    inbox, port = plain_smtp
    outcome = mail.send(notification(), email_settings(port))
    assert outcome.delivered, outcome
    (message,) = inbox.messages
    assert message["Subject"] == "[moodwire] negative-spike: ACME (critical), XYZ"
    assert inbox.envelopes[0].rcpt_tos == ["desk@example.test", "risk@example.test"]
    body = parts(message)
    assert set(body) == {"plain", "html"}
    for needle in ("ACME", "38 of 61", "21.0%", "-log10 p = 11.40", "guidance cut"):
        assert needle in body["plain"]
    assert "<td>38 / 61</td>" in body["html"]
    assert "recalls &lt;everything&gt; &amp; more" in body["html"]  # escaped, not markup


def test_email_over_starttls_with_auth(
    tls_smtp: tuple[Inbox, int], certificate: tuple[Path, Path]
) -> None:
    inbox, port = tls_smtp
    cert, _ = certificate
    good = email_settings(
        port, security="starttls", username="alerts", password=PASSWORD, ca_file=str(cert)
    )
    outcome = mail.send(notification(), good)
    assert outcome.delivered, outcome
    assert inbox.logins == ["alerts"] and len(inbox.messages) == 1

    bad = email_settings(
        port,
        security="starttls",
        username="alerts",
        password="wrong-" + PASSWORD,
        ca_file=str(cert),
    )
    failed = mail.send(notification(), bad)
    assert not failed.delivered and failed.status_code == 535
    assert PASSWORD not in repr(failed) and PASSWORD not in repr(bad)
    assert len(inbox.messages) == 1


def test_starttls_refuses_an_untrusted_certificate(tls_smtp: tuple[Inbox, int]) -> None:
    inbox, port = tls_smtp
    outcome = mail.send(
        notification(),
        email_settings(port, security="starttls", username="alerts", password=PASSWORD),
    )
    assert not outcome.delivered and inbox.messages == []


def test_email_to_a_down_server_is_a_recorded_failure() -> None:
    began = time.monotonic()
    outcome = mail.send(notification(), email_settings(free_port()))
    assert not outcome.delivered and outcome.error is not None
    assert time.monotonic() - began < 2.0
