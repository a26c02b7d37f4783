"""Secrets (SMTP password, webhook signing key, ClickHouse password) never show up in logs,
in repr(settings), in configuration error messages, or in store errors."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from moodwire import logs
from moodwire.config import ConfigError, Settings, load_settings

SECRETS: dict[str, Any] = {
    "smtp_password": "smtp-pw-7f3a9c1e",
    "webhook_secret": "whsec-51be0d77",
    "clickhouse_password": "ch-pw-c0ffee42",
}
ENV = {f"MOODWIRE_{name.upper()}": value for name, value in SECRETS.items()}


def assert_no_secret(text: str, where: str) -> None:
    for name, value in SECRETS.items():
        assert value not in text, f"{name} appears in {where}: {text[:500]!r}"


@pytest.fixture
def secret_settings() -> Settings:
    settings = load_settings(
        **SECRETS, webhook_url="https://hooks.example.com/moodwire", smtp_host="mail.example.com", smtp_user="alerts"
    )
    # The secrets are really in there (or the checks below would prove nothing).
    assert settings.smtp_password is not None and settings.smtp_password.get_secret_value() == SECRETS["smtp_password"]
    assert (
        settings.webhook_secret is not None and settings.webhook_secret.get_secret_value() == SECRETS["webhook_secret"]
    )
    assert settings.clickhouse_password.get_secret_value() == SECRETS["clickhouse_password"]
    return settings


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_settings_render_without_secrets(secret_settings: Settings) -> None:
    renderings = {
        "repr": repr(secret_settings),
        "str": str(secret_settings),
        "format": f"{secret_settings}",
        "model_dump_json": secret_settings.model_dump_json(),
        "str(model_dump)": str(secret_settings.model_dump()),
        "fields": " ".join(repr(getattr(secret_settings, name)) for name in SECRETS),
    }
    for where, text in renderings.items():
        assert_no_secret(text, where)
    assert "**********" in renderings["repr"]


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_logging_settings_and_errors_shows_no_secret(
    fmt: str, secret_settings: Settings, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    logs.configure("DEBUG", fmt)
    log = logging.getLogger("moodwire.test")
    log.info("starting with %s", secret_settings)
    log.info("starting with %r", secret_settings)
    log.debug("dump %s", secret_settings.model_dump())
    log.warning("webhook key %s, smtp %s", secret_settings.webhook_secret, secret_settings.smtp_password)
    try:
        raise RuntimeError(f"connect failed for {secret_settings!r}")
    except RuntimeError:
        log.exception("failed")
    captured = capsys.readouterr()
    assert "starting with" in captured.err
    assert_no_secret(captured.err + captured.out, f"{fmt} logs")


def config_cases(tmp_path: Path) -> list[tuple[str, dict[str, Any], dict[str, str], str | None, str]]:
    """(name, keyword overrides, environment, TOML text, the setting the message must name)."""
    s = SECRETS
    return [
        ("bad port next to secrets", {**s, "smtp_port": "not-a-port"}, {}, None, "MOODWIRE_SMTP_PORT"),
        (
            "secret of the wrong type",
            {"clickhouse_password": {"value": s["clickhouse_password"]}},
            {},
            None,
            "MOODWIRE_CLICKHOUSE_PASSWORD",
        ),
        ("misspelt secret name", {"smtp_pasword": s["smtp_password"]}, {}, None, "MOODWIRE_SMTP_PASWORD"),
        ("secret pasted into a url", {"webhook_url": s["webhook_secret"]}, {}, None, "MOODWIRE_WEBHOOK_URL"),
        ("env: bad list next to secrets", {}, {**ENV, "MOODWIRE_EMAIL_TO": s["smtp_password"]}, None, "email_to"),
        (
            "env: bad number next to secrets",
            {},
            {**ENV, "MOODWIRE_CLICKHOUSE_PORT": "99999999"},
            None,
            "MOODWIRE_CLICKHOUSE_PORT",
        ),
        ("toml: unterminated secret", {}, {}, f'smtp_password = "{s["smtp_password"]}\n', "line 1"),
        ("toml: unquoted secret", {}, {}, f"webhook_secret = {s['webhook_secret']}\n", "line 1"),
        (
            "toml: secret in a list",
            {},
            {},
            f'clickhouse_password = ["{s["clickhouse_password"]}"]\n',
            "MOODWIRE_CLICKHOUSE_PASSWORD",
        ),
        ("toml: misspelt secret", {}, {}, f'webhook_secrte = "{s["webhook_secret"]}"\n', "MOODWIRE_WEBHOOK_SECRTE"),
        (
            "toml: secret given twice",
            {},
            {},
            f'smtp_password = "{s["smtp_password"]}"\nsmtp_password = "{s["smtp_password"]}"\n',
            "line 2",
        ),
        (
            "toml: bad value next to secrets",
            {},
            {},
            "".join(f'{k} = "{v}"\n' for k, v in s.items()) + 'webhook_url = "ftp://x"\nsmtp_port = "x"\n',
            "MOODWIRE_SMTP_PORT",
        ),
    ]


def test_config_errors_never_echo_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, overrides, env, toml, names in config_cases(tmp_path):
        with monkeypatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            if toml is not None:
                path = tmp_path / f"{abs(hash(name))}.toml"
                path.write_text(toml, encoding="utf-8")
                patch.setenv("MOODWIRE_CONFIG", str(path))
            with pytest.raises(ConfigError) as caught:
                load_settings(**overrides)
        message = str(caught.value)
        assert names in message, f"{name}: the message should name {names}: {message}"
        assert_no_secret(message, f"the error for '{name}'")
        # Nor in the traceback a crash would print (the validation error underneath is hidden).
        assert_no_secret("".join(traceback.format_exception(caught.value)), f"the traceback for '{name}'")


def test_the_cli_reports_a_bad_config_without_secrets(tmp_path: Path) -> None:
    env = {**os.environ, **ENV, "MOODWIRE_SMTP_PORT": "not-a-port", "MOODWIRE_LOG_LEVEL": "DEBUG"}
    env.pop("MOODWIRE_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-m", "moodwire.cli", "sql", "SELECT 1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "MOODWIRE_SMTP_PORT" in done.stderr
    assert_no_secret(done.stdout + done.stderr, "the CLI's output")


@pytest.mark.integration
def test_store_errors_and_debug_logs_hide_the_clickhouse_password(
    clickhouse_port: int, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """A wrong password and an unreachable server, with every logger at DEBUG."""
    from moodwire.store import ServerStore

    caplog.set_level(logging.DEBUG)
    messages = []
    for port in (clickhouse_port, _closed_port()):
        settings = load_settings(store="clickhouse", clickhouse_port=port, clickhouse_timeout_s=5.0, **SECRETS)
        store = ServerStore(settings)
        for error in store_errors(store):
            messages.append(str(error))
            assert_no_secret("".join(traceback.format_exception(error)), "a store error's traceback")
        store.close()
    assert any("password" in m.lower() or "authentication" in m.lower() for m in messages), messages
    for message in messages:
        assert_no_secret(message, "a store error")
    assert_no_secret(caplog.text, "the DEBUG logs")

    # The same through the CLI, logging at DEBUG.
    env = {
        **os.environ,
        **ENV,
        "MOODWIRE_STORE": "clickhouse",
        "MOODWIRE_CLICKHOUSE_PORT": str(clickhouse_port),
        "MOODWIRE_LOG_LEVEL": "DEBUG",
        "MOODWIRE_CLICKHOUSE_TIMEOUT_S": "5",
    }
    env.pop("MOODWIRE_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-m", "moodwire.cli", "sql", "SELECT 1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 1 and "moodwire sql:" in done.stderr, done.stderr[-2000:]
    assert_no_secret(done.stdout + done.stderr, "the CLI's output")


def store_errors(store: Any) -> list[BaseException]:
    """What a query, a migration and an insert raise against `store` (each must raise StoreError)."""
    from moodwire.store import StoreError

    errors: list[BaseException] = []
    for call in (lambda: store.query("SELECT 1"), store.migrate, lambda: store.insert_rows("x", ["a"], [(1,)])):
        with pytest.raises(StoreError) as caught:
            call()
        errors.append(caught.value)
    return errors


def _closed_port() -> int:
    from tests.services import free_port

    return free_port()
