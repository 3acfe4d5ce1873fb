"""The .env file as the node reads it, edited in place: every other byte of it kept.

Values are read with python-dotenv's own parser (the one pydantic-settings uses), so what
this module sees is what the node sees. An edit changes only the value of the last line
that sets the variable (the one that wins), keeping its ``export``, comment and line ending.
Writes are atomic (temp file in the same folder, fsync, rename) and a replaced file is
first copied to ``NAME.bak-YYYYmmdd-HHMMSS``.
"""

from __future__ import annotations

import io
import os
import re
import secrets
import stat
from datetime import datetime
from pathlib import Path

from dotenv import dotenv_values
from dotenv.parser import parse_stream

OWNER_ONLY = 0o600
# python-dotenv's quoted values (parser.py): a backslash escapes the next character.
_SINGLE_QUOTED = re.compile(r"'((?:\\.|[^'\\])*)'", re.DOTALL)
_DOUBLE_QUOTED = re.compile(r'"((?:\\.|[^"\\])*)"', re.DOTALL)
_ASSIGNMENT = re.compile(r"\s*(?:export[^\S\r\n]+)?(?:'[^']+'|[^=#\s]+)[^\S\r\n]*=")


class EnvFileError(ValueError):
    """A value that cannot be written to a .env line, or a file that cannot be read."""


def read_text(path: Path) -> str:
    """The file's text, line endings untouched (so writing it back changes no byte)."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EnvFileError(f"{path} is not UTF-8 text ({exc.reason})") from None


def parse_values(text: str) -> dict[str, str]:
    """The variables a .env text sets, raw (``${VAR}`` not expanded); the last line wins."""
    values = dotenv_values(stream=io.StringIO(text), interpolate=False)
    return {key: value for key, value in values.items() if value is not None}


def bindings(text: str) -> list[tuple[str | None, str]]:
    """The text cut into (variable or None, original text) pieces that add up to the text."""
    return [(b.key if b.value is not None else None, b.original.string)
            for b in parse_stream(io.StringIO(text))]  # fmt: skip


def format_value(value: str) -> str:
    """How ``value`` is written after ``KEY=`` so that python-dotenv reads it back unchanged.

    Plain when that is unambiguous (Windows paths included: unquoted values keep their
    backslashes), else single-quoted with ``\\`` and ``'`` escaped.
    """
    if "\n" in value or "\r" in value:
        raise EnvFileError("a value cannot span lines")
    plain = (
        value == value.strip()
        and not value.startswith(("'", '"', "#"))
        and re.search(r"\s#", value) is None
    )
    if plain:
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def newline_of(text: str) -> str:
    return "\r\n" if "\r\n" in text else "\n"


def set_value(text: str, key: str, value: str) -> str:
    """``text`` with ``key`` set to ``value``: the winning line edited, or a line appended."""
    pieces = bindings(text)
    for index in range(len(pieces) - 1, -1, -1):
        name, original = pieces[index]
        if name == key:
            pieces[index] = (name, _replace_value(original, value))
            return "".join(piece for _, piece in pieces)
    line = f"{key}={format_value(value)}"
    if text and not text.endswith(("\n", "\r")):
        text += newline_of(text)
    return text + line + newline_of(text)


def _replace_value(original: str, value: str) -> str:
    match = _ASSIGNMENT.match(original)
    if match is None:  # pragma: no cover - parse_stream gave it a key and a value
        raise EnvFileError(f"cannot edit the line {original.strip()!r}")
    prefix, rest = original[: match.end()], original[match.end() :]
    body = rest.lstrip(" \t")
    start = len(rest) - len(body)  # the blanks after `=` stay
    if body.startswith("'"):
        quoted = _SINGLE_QUOTED.match(body)
        end = start + quoted.end() if quoted else len(rest)
    elif body.startswith('"'):
        quoted = _DOUBLE_QUOTED.match(body)
        end = start + quoted.end() if quoted else len(rest)
    elif body.startswith("#") and start:  # `KEY= # comment`: an empty value
        start = end = 0
    else:
        line = re.split(r"[\r\n]", body, maxsplit=1)[0]
        comment = re.search(r"[^\S\r\n]+#", line)
        end = start + len((line[: comment.start()] if comment else line).rstrip())
    return prefix + rest[:start] + format_value(value) + rest[end:]


# ---------------------------------------------------------------------------------- files


def write_atomic(path: Path, data: bytes, *, mode: int = OWNER_ONLY) -> None:
    """Replace ``path`` with ``data``: a kill at any instant leaves the old or the new file.

    The temp file is created with ``mode`` (os.open; owner-only by default), so the content
    is never readable by others, not even for a moment.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if os.name == "posix" and mode != OWNER_ONLY:
                os.fchmod(handle.fileno(), mode)  # the umask may have narrowed a kept mode
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def file_mode(path: Path) -> int:
    """The permission bits of an existing file, to keep them when it is rewritten."""
    return stat.S_IMODE(path.stat().st_mode) if os.name == "posix" else OWNER_ONLY


def backup(path: Path, *, now: datetime | None = None) -> Path:
    """Copy ``path`` to ``NAME.bak-YYYYmmdd-HHMMSS`` (owner-only; ``-2``... if taken)."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    data = path.read_bytes()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for attempt in range(1, 1000):
        suffix = "" if attempt == 1 else f"-{attempt}"
        target = path.with_name(f"{path.name}.bak-{stamp}{suffix}")
        try:
            fd = os.open(target, flags, OWNER_ONLY)
        except FileExistsError:
            continue
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        return target
    raise EnvFileError(f"too many backups of {path} this second")  # pragma: no cover
