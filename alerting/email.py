"""E-mail delivery over SMTP (STARTTLS, implicit TLS or plain; optional AUTH).

One message per notification, multipart/alternative: a plain-text body and an HTML body with the
same evidence (window counts, baseline share, statistic, the most negative posts).

One attempt per call: a failed notification stays in the lifecycle's outbox and is tried again
on the next run. The password never reaches a log line, an exception message or an outcome.
"""

from __future__ import annotations

import html
import logging
import math
import smtplib
import ssl
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Literal

from alerting.alert import Alert
from alerting.lifecycle import DeliveryOutcome, Notification
from alerting.symbol_groups import describe
from alerting.webhook import headline

CHANNEL = "email"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmailSettings:
    host: str
    sender: str
    recipients: tuple[str, ...]
    port: int = 587
    security: Literal["starttls", "ssl", "none"] = "starttls"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout_s: float = 10.0
    subject_prefix: str = "[moodwire]"
    ca_file: str | None = None  # a private CA bundle; the system store otherwise

    def __post_init__(self) -> None:
        if not self.recipients:
            raise ValueError("e-mail needs at least one recipient")
        if (self.username is None) != (self.password is None):
            raise ValueError("set both username and password, or neither")

    def tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file)


def build_message(notification: Notification, settings: EmailSettings) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = f"{settings.subject_prefix} {headline(notification)}".strip()
    message["From"] = settings.sender
    message["To"] = ", ".join(settings.recipients)
    message["Date"] = formatdate(notification.created_at.timestamp(), usegmt=True)
    message["Message-ID"] = make_msgid(idstring=notification.notification_id)
    message["X-Moodwire-Notification"] = notification.notification_id
    message.set_content(render_text(notification))
    message.add_alternative(render_html(notification), subtype="html")
    return message


def render_text(notification: Notification) -> str:
    lines = [headline(notification), f"at {_when(notification.created_at)}", ""]
    if notification.group is not None:
        group = notification.group
        lines += [
            f"Market-wide: {describe(group.symbols)} so far, since {_when(group.opened_at)}:",
            f"  {', '.join(group.symbols)}",
            "",
        ]
    for alert in notification.alerts:
        lines += [
            f"{alert.symbol}: {alert.kind}, {alert.severity}",
            (
                f"  window     {_when(alert.window_start)} to {_when(alert.fired_at)} "
                f"({alert.window_minutes} min)"
            ),
            (
                f"  negative   {alert.window_negative} of {alert.window_posts} stories "
                f"({alert.window_share:.1%})"
            ),
            f"  baseline   {alert.baseline_share:.1%} negative"
            + (
                f", ~{alert.expected_total:.0f} stories expected"
                if math.isfinite(alert.expected_total)
                else ""
            ),
            f"  statistic  -log10 p = {alert.statistic:.2f} (p = {alert.p_value:.2g})",
            f"  episode    {alert.episode_id}",
        ]
        if alert.examples:
            lines.append("  most negative posts:")
            lines += [f"    [{e.polarity_score:+.2f}] {e.text} ({e.id})" for e in alert.examples]
        lines.append("")
    return "\n".join(lines)


def render_html(notification: Notification) -> str:
    esc = html.escape
    rows = "".join(_html_alert(alert) for alert in notification.alerts)
    return (
        '<!DOCTYPE html><html><body style="font-family:sans-serif">'
        f"<h2>{esc(headline(notification))}</h2>"
        f"<p>at {esc(_when(notification.created_at))}</p>"
        f"{_html_group(notification)}"
        '<table border="1" cellpadding="4" cellspacing="0">'
        "<tr><th>symbol</th><th>kind</th><th>severity</th><th>window</th>"
        "<th>negative</th><th>share</th><th>baseline</th><th>-log10 p</th></tr>"
        f"{rows}</table>"
        f"{''.join(_html_examples(alert) for alert in notification.alerts)}"
        "</body></html>"
    )


def _html_group(notification: Notification) -> str:
    group = notification.group
    if group is None:
        return ""
    esc = html.escape
    return (
        f"<p><b>Market-wide:</b> {esc(describe(group.symbols))} so far, since {esc(_when(group.opened_at))}: "
        f"{esc(', '.join(group.symbols))}</p>"
    )


def _html_alert(alert: Alert) -> str:
    esc = html.escape
    return (
        f"<tr><td><b>{esc(alert.symbol)}</b></td><td>{esc(alert.kind)}</td>"
        f"<td>{esc(alert.severity)}</td>"
        f"<td>{esc(_when(alert.window_start))} +{alert.window_minutes} min</td>"
        f"<td>{alert.window_negative} / {alert.window_posts}</td>"
        f"<td>{alert.window_share:.1%}</td><td>{alert.baseline_share:.1%}</td>"
        f"<td>{alert.statistic:.2f}</td></tr>"
    )


def _html_examples(alert: Alert) -> str:
    if not alert.examples:
        return ""
    esc = html.escape
    items = "".join(
        f"<li>[{e.polarity_score:+.2f}] {esc(e.text)} <small>({esc(e.id)})</small></li>"
        for e in alert.examples
    )
    return f"<h3>Most negative posts: {esc(alert.symbol)}</h3><ul>{items}</ul>"


def send(
    notification: Notification,
    settings: EmailSettings,
    tls_context: ssl.SSLContext | None = None,
) -> DeliveryOutcome:
    """Send one message; the outcome says whether the server accepted it."""
    began = time.monotonic()
    message = build_message(notification, settings)
    context = tls_context or (settings.tls_context() if settings.security != "none" else None)
    error: str | None = None
    code: int | None = None
    try:
        smtp: smtplib.SMTP
        if settings.security == "ssl":
            smtp = smtplib.SMTP_SSL(
                settings.host, settings.port, timeout=settings.timeout_s, context=context
            )
        else:
            smtp = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout_s)
        with smtp:
            smtp.ehlo()
            if settings.security == "starttls":
                smtp.starttls(context=context)
                smtp.ehlo()
            if settings.username is not None and settings.password is not None:
                smtp.login(settings.username, settings.password)
            refused = smtp.send_message(message, settings.sender, list(settings.recipients))
            if refused:
                error = f"{len(refused)} recipient(s) refused"
    except smtplib.SMTPResponseException as exc:
        # the server's words can echo what we sent; keep the code and the kind only
        code, error = exc.smtp_code, f"SMTP {exc.smtp_code} ({type(exc).__name__})"
    except (smtplib.SMTPException, OSError) as exc:
        error = f"{type(exc).__name__}"
    outcome = DeliveryOutcome(
        channel=CHANNEL,
        notification_id=notification.notification_id,
        delivered=error is None,
        attempts=1,
        status_code=code,
        error=error,
        elapsed_s=time.monotonic() - began,
        target=f"smtp://{settings.host}:{settings.port}",
    )
    level = logging.INFO if outcome.delivered else logging.WARNING
    log.log(
        level,
        "e-mail %s via %s: %s",
        notification.notification_id,
        outcome.target,
        "sent" if outcome.delivered else f"failed ({error})",
    )
    return outcome


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
