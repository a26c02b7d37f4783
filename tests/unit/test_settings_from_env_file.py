"""The settings as the compose stack hands them to the services: .env.example (compose's
env_file) over the compose file's environment and the image's ENV. An empty variable, the way
an env file writes "not set", must mean unset."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from moodwire.config import load_settings
from tests.compose import ROOT, read_dockerfile, read_env_file


def test_an_empty_variable_means_unset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MOODWIRE_WEBHOOK_URL", "")
    monkeypatch.setenv("MOODWIRE_METRICS_PORT", "")
    monkeypatch.setenv("MOODWIRE_ALERTMANAGER_URL", "")
    settings = load_settings(data_dir=tmp_path)
    assert settings.webhook_url is None and settings.metrics_port is None and settings.alertmanager_url is None


def test_the_env_example_as_compose_passes_it_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    environment = {
        **read_dockerfile(ROOT / "Dockerfile").env,
        **{k: str(v) for k, v in compose["x-moodwire"]["environment"].items()},
        **read_env_file(ROOT / ".env.example"),
    }
    for key, value in environment.items():
        if key.startswith("MOODWIRE_"):
            monkeypatch.setenv(key, value)
    settings = load_settings()
    assert settings.webhook_url is None  # MOODWIRE_WEBHOOK_URL= in the example
    assert settings.data_dir == Path("/var/lib/moodwire") and settings.data_dir.is_absolute()
    assert settings.smtp_host == "mailcatcher" and settings.email_to == ["analysts@example.com"]
    assert settings.push is not None and settings.push.host == "0.0.0.0"
