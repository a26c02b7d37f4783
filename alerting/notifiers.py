"""The configured notification channels, each behind one small interface the job calls."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Protocol

from moodwire.config import Settings

from alerting import alertmanager, email, webhook
from alerting.lifecycle import DeliveryOutcome, Notification


class Notifier(Protocol):
    channel: str

    def deliver(self, notification: Notification) -> DeliveryOutcome: ...


class WebhookNotifier:
    channel = webhook.CHANNEL

    def __init__(self, settings: webhook.WebhookSettings) -> None:
        self._settings = settings

    def deliver(self, notification: Notification) -> DeliveryOutcome:
        return webhook.deliver(notification, self._settings)


class AlertmanagerNotifier:
    """Alertmanager's /api/v2/alerts; needs the resolutions to end the alerts it holds."""

    channel = alertmanager.CHANNEL
    needs_resolutions = True

    def __init__(self, settings: alertmanager.AlertmanagerSettings) -> None:
        self._settings = settings

    def deliver(self, notification: Notification) -> DeliveryOutcome:
        return alertmanager.deliver(notification, self._settings)


def needs_resolutions(notifiers: Sequence[Notifier]) -> bool:
    """Whether the job must also queue a message when an episode resolves (then every channel
    gets it: the lifecycle's outbox is one list for all channels)."""
    return any(getattr(n, "needs_resolutions", False) for n in notifiers)


class EmailNotifier:
    """SMTP with a few retries: a mail server restarting for a minute must not lose the alert."""

    channel = email.CHANNEL

    def __init__(
        self,
        settings: email.EmailSettings,
        attempts: int = 3,
        backoff_s: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._settings = settings
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._sleep = sleep

    def deliver(self, notification: Notification) -> DeliveryOutcome:
        outcome = email.send(notification, self._settings)
        attempt = 1
        while not outcome.delivered and attempt < self._attempts:
            self._sleep(self._backoff_s * 2 ** (attempt - 1))
            attempt += 1
            outcome = email.send(notification, self._settings)
        return replace(outcome, attempts=attempt)


def notifiers_from_settings(settings: Settings) -> list[Notifier]:
    notifiers: list[Notifier] = []
    if settings.webhook_url:
        notifiers.append(
            WebhookNotifier(
                webhook.WebhookSettings(
                    url=settings.webhook_url,
                    secret=settings.webhook_secret.get_secret_value() if settings.webhook_secret else None,
                    format=settings.webhook_format,
                    timeout_s=settings.webhook_timeout_s,
                )
            )
        )
    if settings.alertmanager_url:
        notifiers.append(AlertmanagerNotifier(alertmanager.AlertmanagerSettings.from_settings(settings)))
    if settings.smtp_host and settings.email_to:
        notifiers.append(
            EmailNotifier(
                email.EmailSettings(
                    host=settings.smtp_host,
                    port=settings.smtp_port,
                    sender=settings.email_from,
                    recipients=tuple(settings.email_to),
                    security=settings.smtp_security,
                    username=settings.smtp_user,
                    password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
                )
            )
        )
    return notifiers
