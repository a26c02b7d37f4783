"""Settings: env vars and TOML, and start-up refusing bad values with a message that helps."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from moodwire.config import ConfigError, load_settings


def test_env_overrides_toml_and_toml_overrides_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "moodwire.toml"
    config.write_text('bus = "kafka"\nbatch_max_size = 128\n[[feeds]]\nurl = "https://news.example/rss"\ninterval_s = 60\n')
    monkeypatch.setenv("MOODWIRE_BATCH_MAX_SIZE", "32")
    settings = load_settings(config)
    assert settings.bus == "kafka"
    assert settings.batch_max_size == 32
    assert settings.feeds[0].url == "https://news.example/rss"
    assert settings.store == "chdb"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"MOODWIRE_STORE": "mysql"}, "MOODWIRE_STORE: Input should be 'chdb' or 'clickhouse'"),
        ({"MOODWIRE_BATCH_MAX_SIZE": "0"}, "MOODWIRE_BATCH_MAX_SIZE: Input should be greater than or equal to 1"),
        ({"MOODWIRE_WEBHOOK_URL": "ftp://x"}, "MOODWIRE_WEBHOOK_URL: Value error, must start with http:// or https://"),
    ],
)
def test_bad_values_name_the_setting_and_what_it_accepts(
    env: dict[str, str], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert expected in str(caught.value)


def test_unknown_setting_in_toml_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "moodwire.toml"
    config.write_text("batch_max_sise = 5\n")
    with pytest.raises(ConfigError, match="MOODWIRE_BATCH_MAX_SISE: is not a known setting"):
        load_settings(config)


def test_a_bad_config_stops_a_service_at_start_with_exit_code_2(tmp_path: Path) -> None:
    env = {**os.environ, "MOODWIRE_BUS": "rabbitmq", "MOODWIRE_DATA_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "moodwire.cli", "score"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "MOODWIRE_BUS: Input should be 'memory' or 'kafka'" in result.stderr
    assert "Traceback" not in result.stderr
