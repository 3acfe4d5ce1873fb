"""Settings: every variable the node reads, validated once at start-up.

Sources, later wins: defaults, the env file, the environment, command-line flags.
Relative paths resolve against the env file's folder, so a scheduled task that starts
in another directory still finds them. An invalid value stops start-up with one line
per variable naming it and the fix.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from datetime import time
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import Field, PositiveFloat, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Port = Annotated[int, Field(ge=1, le=65535)]
Seconds = PositiveFloat

# What to write instead, per variable, when a value is refused.
FIXES: dict[str, str] = {
    "TRADING_MODE": "set it to paper or live",
    "ORDERS_ENABLED": "set it to true or false",
    "IBKR_GATEWAY_HOST": "set it to the gateway's address, e.g. 127.0.0.1",
    "PAPER_GATEWAY_PORT": "set it to a TCP port from 1 to 65535, e.g. 4002",
    "LIVE_GATEWAY_PORT": "set it to a TCP port from 1 to 65535, e.g. 4001",
    "SIM_CONTROL_PORT": "set it to a TCP port from 1 to 65535, or remove it",
    "IBC_COMMAND_PORT": "set it to a TCP port from 1 to 65535, e.g. 7462",
    "API_PORT": "set it to a TCP port from 1 to 65535, e.g. 8000",
    "API_BIND_HOST": "set it to an IP address of this machine, e.g. 127.0.0.1 or 192.168.1.100",
    "PI_IP": "set it to the Pi's IP address, e.g. 192.168.1.50",
    "ALLOWED_IPS": "set it to comma-separated addresses or networks, e.g. 192.168.1.60,10.0.0.0/24",
    "IB_CLIENT_ID": "set it to a whole number from 0 to 999999",
    "RUN_WINDOW_START": "set it to HH:MM, e.g. 04:00",
    "RUN_WINDOW_END": "set it to HH:MM or 24:00, e.g. 20:00, and different from RUN_WINDOW_START",
    "RUN_WINDOW_DAYS": "set it to day names, e.g. Mon,Tue,Wed,Thu,Fri or Mon-Fri",
    "RUN_WINDOW_TIMEZONE": "set it to an IANA zone name, e.g. America/Toronto",
    "GATEWAY_LAUNCHER": "set it to sim, ibc, exe or external (or an installed launcher plugin)",
    "BACKOFF_DELAYS": "set it to comma-separated seconds, e.g. 2,5,10,30,60,120,300",
    "BACKOFF_JITTER": "set it to a fraction from 0 to 1, e.g. 0.2",
    "MAX_RESTARTS_PER_HOUR": "set it to a whole number of at least 1, e.g. 5",
    "LOGIN_FAILURE_LIMIT": "set it to a whole number of at least 1, e.g. 3",
    "HEARTBEAT_MISSES": "set it to a whole number of at least 1, e.g. 2",
    "WINDOW_CLOSE_ORDERS": "set it to keep or cancel_all",
    "LOG_FORMAT": "set it to text or json",
    "LOG_LEVEL": "set it to DEBUG, INFO, WARNING or ERROR",
    "NOTIFY_WEBHOOK_URL": "set it to an http(s) URL or remove it",
    "MAX_ORDER_QTY": "set it to a positive number of shares, or remove it for no limit",
    "MAX_ORDER_NOTIONAL": "set it to a positive amount in USD, or remove it for no limit",
    "MAX_OPEN_ORDERS": "set it to a whole number, or remove it for no limit",
    "MAX_ORDERS_PER_MINUTE": "set it to a whole number of at least 1, or remove it",
    "NOTIFY_PUSH_URL": "set it to an http(s) URL or remove it",
}
SECONDS_FIX = "set it to a positive number of seconds"
PATH_SETTINGS = (
    "ARM_ORDERS_FILE", "LIVE_TRADING_OVERRIDE_FILE", "API_KEY_FILE", "TLS_CERT_FILE",
    "TLS_KEY_FILE", "GDRIVE_BASE_PATH", "STATE_DIR", "AUDIT_DB_PATH", "LOG_FILE_PATH",
    "IBKR_GATEWAY_PATH", "IBC_PATH", "IBC_INI",
)  # fmt: skip


class ConfigError(Exception):
    """Invalid configuration; str() is the operator-facing message, one line per variable."""


def default_state_dir() -> Path:
    if sys.platform == "win32":  # pragma: no cover - Windows only
        return Path(os.environ.get("PROGRAMDATA", r"C:\ProgramData")) / "mm-ibkr-gateway"
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ibkr-node"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",  # the env file also holds variables of tools and later features
        case_sensitive=True,
        validate_default=True,
        # `MAX_ORDER_QTY=` or `GDRIVE_BASE_PATH=` in a .env means "not set", as an operator
        # reads it, not an invalid number or the env file's own folder.
        env_ignore_empty=True,
    )

    # Safety
    TRADING_MODE: Literal["paper", "live"] = "paper"
    ORDERS_ENABLED: bool = False
    ARM_ORDERS_FILE: Path | None = None
    LIVE_TRADING_OVERRIDE_FILE: Path | None = None
    API_KEY: str | None = Field(default=None, repr=False)
    API_KEY_FILE: Path = Path("secrets/api_key.txt")

    # Network
    API_BIND_HOST: str = "127.0.0.1"
    API_PORT: Port = 8000
    PI_IP: str | None = None
    ALLOWED_IPS: str = ""
    TLS_CERT_FILE: Path | None = None
    TLS_KEY_FILE: Path | None = None
    IBKR_GATEWAY_HOST: str = "127.0.0.1"
    PAPER_GATEWAY_PORT: Port = 4002
    LIVE_GATEWAY_PORT: Port = 4001
    IB_CLIENT_ID: Annotated[int, Field(ge=0, le=999_999)] = 1
    SIM_CONTROL_PORT: Port | None = None
    IBC_COMMAND_PORT: Port = 7462

    # Window
    RUN_WINDOW_START: str = "04:00"
    RUN_WINDOW_END: str = "20:00"
    RUN_WINDOW_DAYS: str = "Mon,Tue,Wed,Thu,Fri"
    RUN_WINDOW_TIMEZONE: str = "America/Toronto"
    FORCE_MAX_HOURS: PositiveFloat = 12

    # Paths
    GDRIVE_BASE_PATH: Path | None = None
    STATE_DIR: Path = Field(default_factory=default_state_dir)
    AUDIT_DB_PATH: Path | None = None
    LOG_FILE_PATH: Path | None = None
    IBKR_GATEWAY_PATH: Path | None = None
    IBC_PATH: Path | None = None
    IBC_INI: Path | None = None

    # Gateway
    GATEWAY_LAUNCHER: str | None = None  # a built-in or a `node.launchers` entry point

    # Timings (DESIGN.md §3)
    HEARTBEAT_INTERVAL: Seconds = 3
    HEARTBEAT_TIMEOUT: Seconds = 3
    HEARTBEAT_MISSES: Annotated[int, Field(ge=1)] = 2
    CONNECTIVITY_GRACE: Seconds = 300
    GATEWAY_START_TIMEOUT: Seconds = 120
    GATEWAY_STOP_TIMEOUT: Seconds = 60
    BACKOFF_DELAYS: str = "2,5,10,30,60,120,300"
    BACKOFF_JITTER: Annotated[float, Field(ge=0, le=1)] = 0.2
    BACKOFF_RESET_AFTER: Seconds = 600
    MAX_RESTARTS_PER_HOUR: Annotated[int, Field(ge=1)] = 5
    LOGIN_FAILURE_LIMIT: Annotated[int, Field(ge=1)] = 3
    RECONCILE_TIMEOUT: Seconds = 60
    CLOCK_TICK: Seconds = 30
    CONNECT_ATTEMPT_TIMEOUT: Seconds = 15
    ORDER_ACK_TIMEOUT: Seconds = 5
    WINDOW_CLOSE_ORDERS: Literal["keep", "cancel_all"] = "keep"
    AUDIT_SNAPSHOT_INTERVAL: Seconds = 900
    LOG_RETENTION_DAYS: Annotated[int, Field(ge=1)] = 30
    LOG_FORMAT: Literal["text", "json"] = "text"
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # Risk limits (unset = no limit)
    MAX_ORDER_QTY: Annotated[Decimal, Field(gt=0)] | None = None
    MAX_ORDER_NOTIONAL: Annotated[Decimal, Field(gt=0)] | None = None
    MAX_OPEN_ORDERS: Annotated[int, Field(ge=0)] | None = None
    MAX_ORDERS_PER_MINUTE: Annotated[int, Field(ge=1)] | None = None
    SYMBOL_ALLOWLIST: str = ""  # empty = every symbol

    # Notifiers
    NOTIFY_WEBHOOK_URL: str | None = Field(default=None, repr=False)
    NOTIFY_PUSH_URL: str | None = Field(default=None, repr=False)

    @field_validator("API_BIND_HOST", "IBKR_GATEWAY_HOST")
    @classmethod
    def _address(cls, value: str) -> str:
        if value != "localhost":
            ipaddress.ip_address(value)
        return value

    @field_validator("PI_IP")
    @classmethod
    def _pi(cls, value: str | None) -> str | None:
        if value:
            ipaddress.ip_address(value)
        return value or None

    @field_validator("ALLOWED_IPS")
    @classmethod
    def _allowed(cls, value: str) -> str:
        for item in _split(value):
            ipaddress.ip_network(item, strict=False)
        return value

    @field_validator("GATEWAY_LAUNCHER")
    @classmethod
    def _launcher(cls, value: str | None) -> str | None:
        from node.plugins.registry import launcher_names

        if value and value not in launcher_names():
            raise ValueError(f"unknown launcher {value!r}")
        return value or None

    @field_validator("RUN_WINDOW_START")
    @classmethod
    def _start(cls, value: str) -> str:
        from node.clock import parse_clock_time

        parse_clock_time(value)
        return value

    @field_validator("RUN_WINDOW_END")
    @classmethod
    def _end(cls, value: str, info: ValidationInfo) -> str:
        from node.clock import parse_clock_time, parse_end_time

        end = parse_end_time(value)
        start = info.data.get("RUN_WINDOW_START")
        if start is not None and end is not None and parse_clock_time(start) == end:
            raise ValueError("the window would be empty")
        return value

    @field_validator("RUN_WINDOW_DAYS")
    @classmethod
    def _days(cls, value: str) -> str:
        from node.clock import parse_days

        parse_days(value)
        return value

    @field_validator("RUN_WINDOW_TIMEZONE")
    @classmethod
    def _zone(cls, value: str) -> str:
        from node.clock import load_zone

        load_zone(value)
        return value

    @field_validator("BACKOFF_DELAYS")
    @classmethod
    def _delays(cls, value: str) -> str:
        from node.backoff import parse_delays

        parse_delays(value)
        return value

    @field_validator("NOTIFY_WEBHOOK_URL", "NOTIFY_PUSH_URL")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("not an http(s) URL")
        return value or None

    # ------------------------------------------------------------------ derived values

    @property
    def symbol_allowlist(self) -> frozenset[str]:
        return frozenset(s.upper() for s in _split(self.SYMBOL_ALLOWLIST))

    @property
    def gateway_port(self) -> int:
        return self.PAPER_GATEWAY_PORT if self.TRADING_MODE == "paper" else self.LIVE_GATEWAY_PORT

    @property
    def sim_control_port(self) -> int:
        return self.SIM_CONTROL_PORT or self.gateway_port + 100

    @property
    def allowed_ips(self) -> tuple[str, ...]:
        extra = tuple(_split(self.ALLOWED_IPS))
        return ((self.PI_IP,) if self.PI_IP else ()) + extra

    @property
    def window_start(self) -> time:
        from node.clock import parse_clock_time

        return parse_clock_time(self.RUN_WINDOW_START)

    @property
    def window_end(self) -> time | None:
        from node.clock import parse_end_time

        return parse_end_time(self.RUN_WINDOW_END)

    @property
    def window_zone(self) -> ZoneInfo:
        from node.clock import load_zone

        return load_zone(self.RUN_WINDOW_TIMEZONE)

    @property
    def backoff_delays(self) -> tuple[float, ...]:
        from node.backoff import parse_delays

        return parse_delays(self.BACKOFF_DELAYS)

    @property
    def arm_orders_file(self) -> Path:
        if self.ARM_ORDERS_FILE is not None:
            return self.ARM_ORDERS_FILE
        return (self.GDRIVE_BASE_PATH or self.STATE_DIR) / "arm_orders_confirmed.txt"

    @property
    def audit_db_path(self) -> Path:
        return self.AUDIT_DB_PATH or self.STATE_DIR / "audit.db"

    @property
    def log_dir(self) -> Path:
        if self.LOG_FILE_PATH is not None:
            return self.LOG_FILE_PATH
        return (
            (self.GDRIVE_BASE_PATH / "logs") if self.GDRIVE_BASE_PATH else self.STATE_DIR / "logs"
        )

    @property
    def ibc_ini(self) -> Path | None:
        if self.IBC_INI is not None:
            return self.IBC_INI
        return self.IBC_PATH / "config.ini" if self.IBC_PATH else None

    def redacted(self) -> dict[str, Any]:
        """The configuration for logs and the audit trail: secrets replaced."""
        data = self.model_dump(mode="json")
        for secret in ("API_KEY", "NOTIFY_WEBHOOK_URL", "NOTIFY_PUSH_URL"):
            if data.get(secret):
                data[secret] = "***"
        return data


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def load_settings(env_file: Path | None = None, **overrides: Any) -> Settings:
    """Read the settings, turning pydantic's report into lines an operator can act on."""
    path = env_file if env_file is not None else Path(".env")
    if env_file is not None and not env_file.is_file():
        raise ConfigError(f"--env-file {env_file}: no such file; give the path of your .env")
    try:
        settings = Settings(
            _env_file=path if path.is_file() else None,  # type: ignore[call-arg]
            **overrides,
        )
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            name = str(error["loc"][0]) if error["loc"] else "?"
            value = error.get("input")
            fix = FIXES.get(
                name,
                SECONDS_FIX
                if name.endswith(("_TIMEOUT", "_INTERVAL", "_GRACE", "_AFTER", "_TICK"))
                else "correct or remove it",
            )
            lines.append(f"configuration error: {name}={value!r} is invalid: {fix}")
        raise ConfigError("\n".join(lines)) from None
    return _resolve_paths(settings, path.resolve().parent)


def _resolve_paths(settings: Settings, base: Path) -> Settings:
    updates: dict[str, Path] = {}
    for name in PATH_SETTINGS:
        value = getattr(settings, name)
        if isinstance(value, Path) and not value.is_absolute():
            updates[name] = base / value
    return settings.model_copy(update=updates) if updates else settings
