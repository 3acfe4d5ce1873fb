"""Settings: defaults, validation errors naming the variable and the fix, path resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.config import ConfigError, load_settings
from node.http_server import bind_addresses


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.TRADING_MODE == "paper"
    assert settings.ORDERS_ENABLED is False
    assert settings.gateway_port == 4002
    assert settings.sim_control_port == 4102
    assert tmp_path / "secrets" / "api_key.txt" == settings.API_KEY_FILE
    assert settings.backoff_delays == (2, 5, 10, 30, 60, 120, 300)


@pytest.mark.parametrize(
    ("variable", "value", "fix"),
    [
        ("RUN_WINDOW_END", "04:00", "different from RUN_WINDOW_START"),
        ("RUN_WINDOW_DAYS", "Someday", "day names"),
        ("RUN_WINDOW_TIMEZONE", "Mars/Base", "IANA"),
        ("RUN_WINDOW_START", "25:00", "HH:MM"),
        ("BACKOFF_DELAYS", "2,-5", "comma-separated seconds"),
        ("API_BIND_HOST", "laptop", "IP address"),
        ("ALLOWED_IPS", "10.0.0.1,nope", "addresses or networks"),
        ("HEARTBEAT_INTERVAL", "0", "positive number of seconds"),
        ("GATEWAY_LAUNCHER", "docker", "sim, ibc, exe or external"),
        ("NOTIFY_PUSH_URL", "ftp://x", "http(s) URL"),
    ],
)
def test_invalid_values_name_the_variable_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, fix: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    [line] = str(caught.value).splitlines()
    assert variable in line
    assert fix in line


def test_relative_paths_resolve_against_the_env_file(tmp_path: Path) -> None:
    env = tmp_path / "deploy" / ".env"
    env.parent.mkdir()
    env.write_text("API_KEY_FILE=keys/k.txt\nSTATE_DIR=state\n", encoding="utf-8")
    settings = load_settings(env)
    assert tmp_path / "deploy" / "keys" / "k.txt" == settings.API_KEY_FILE
    assert tmp_path / "deploy" / "state" == settings.STATE_DIR


def test_an_empty_value_means_not_set(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text(
        "MAX_ORDER_QTY=\nGDRIVE_BASE_PATH=\nLIVE_TRADING_OVERRIDE_FILE=\nAPI_PORT=\n",
        encoding="utf-8",
    )
    settings = load_settings(env)
    assert settings.MAX_ORDER_QTY is None
    assert settings.GDRIVE_BASE_PATH is None  # not the env file's own folder
    assert settings.LIVE_TRADING_OVERRIDE_FILE is None
    assert settings.API_PORT == 8000


def test_secrets_are_redacted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("API_KEY", "s3cret")
    monkeypatch.setenv("NOTIFY_WEBHOOK_URL", "https://hooks.example/T/B/token")
    redacted = load_settings().redacted()
    assert "s3cret" not in str(redacted)
    assert "token" not in str(redacted)


@pytest.mark.parametrize(
    ("host", "binds"),
    [
        ("127.0.0.1", ["127.0.0.1:8000"]),
        ("192.168.1.100", ["192.168.1.100:8000", "127.0.0.1:8000"]),
        ("0.0.0.0", ["0.0.0.0:8000"]),
        ("::", ["[::]:8000"]),
    ],
)
def test_bind_addresses(host: str, binds: list[str]) -> None:
    assert bind_addresses(host, 8000) == binds
