"""Settings: every variable the node reads, validated once at start-up.

Sources, later wins: defaults, the env file, the environment, command-line flags.
An invalid value stops start-up with one line per variable naming it and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

Port = Annotated[int, Field(ge=1, le=65535)]

# What to write instead, per variable, when a value is refused.
FIXES: dict[str, str] = {
    "TRADING_MODE": "set it to paper or live",
    "IBKR_GATEWAY_HOST": "set it to the gateway's address, e.g. 127.0.0.1",
    "PAPER_GATEWAY_PORT": "set it to a TCP port from 1 to 65535, e.g. 4002",
    "LIVE_GATEWAY_PORT": "set it to a TCP port from 1 to 65535, e.g. 4001",
    "SIM_CONTROL_PORT": "set it to a TCP port from 1 to 65535, or remove it",
    "LOG_FORMAT": "set it to text or json",
    "LOG_LEVEL": "set it to DEBUG, INFO, WARNING or ERROR",
}


class ConfigError(Exception):
    """Invalid configuration; str() is the operator-facing message, one line per variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",  # the env file also holds variables of later features and of tools
        case_sensitive=True,
    )

    TRADING_MODE: Literal["paper", "live"] = "paper"
    IBKR_GATEWAY_HOST: str = "127.0.0.1"
    PAPER_GATEWAY_PORT: Port = 4002
    LIVE_GATEWAY_PORT: Port = 4001
    SIM_CONTROL_PORT: Port | None = None
    LOG_FORMAT: Literal["text", "json"] = "text"
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @property
    def gateway_port(self) -> int:
        return self.PAPER_GATEWAY_PORT if self.TRADING_MODE == "paper" else self.LIVE_GATEWAY_PORT


def load_settings(env_file: Path | None = None) -> Settings:
    """Read the settings, turning pydantic's report into lines an operator can act on."""
    path = env_file if env_file is not None else Path(".env")
    if env_file is not None and not env_file.is_file():
        raise ConfigError(f"--env-file {env_file}: no such file; give the path of your .env")
    try:
        return Settings(_env_file=path if path.is_file() else None)  # type: ignore[call-arg]
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            name = str(error["loc"][0]) if error["loc"] else "?"
            value = error.get("input")
            fix = FIXES.get(name, "correct or remove it")
            lines.append(f"configuration error: {name}={value!r} is invalid: {fix}")
        raise ConfigError("\n".join(lines)) from None
