"""The process's log lines: `text` for a person, `json` (one object per line) for a collector.

A JSON line holds `time`, `level`, `logger`, `message` and the record's structured fields, the
`extra=` of the call (`bundle_revision`, `peer`, `decision_id`...), rendered by python-json-logger.
Whatever the format, a redaction filter runs first: a string shaped like a JWS or JWT (three
base64url parts, the first a JSON header) or like a bearer credential is replaced before the
record is rendered, in the message and in every field, so a token a caller sent can never reach a
log line, whichever module logged it.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import IO

from pythonjsonlogger.json import JsonFormatter

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REDACTED = "[redacted]"

# `eyJ` is base64url for `{"`: every JOSE header starts so. Two or more dot-separated parts after.
_JOSE = re.compile(r"eyJ[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*){1,4}")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")
# What every LogRecord carries: anything else on a record came from `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


def redact(text: str) -> str:
    """`text` with every token-shaped substring replaced."""
    if "eyJ" in text:
        text = _JOSE.sub(REDACTED, text)
    return _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)


class RedactTokens(logging.Filter):
    """Replaces token-shaped strings in a record's message and fields before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None  # rendered once, here, then fixed
        for key, value in vars(record).items():
            if key not in _STANDARD and isinstance(value, str):
                setattr(record, key, redact(value))
        if record.exc_info:
            # a traceback can quote a token in an exception's message: render and scrub it now,
            # and leave only the text (both formatters print exc_text when exc_info is gone)
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def formatter(fmt: str) -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter(
            "{asctime}{levelname}{name}{message}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            datefmt="%Y-%m-%dT%H:%M:%S%z",
        )
    if fmt == "text":
        return logging.Formatter(TEXT_FORMAT)
    raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")


def configure(level: str, fmt: str, stream: IO[str] | None = None) -> None:
    """Route every logger of the process to one handler on `stream` (stderr), in `fmt`."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(fmt))
    handler.addFilter(RedactTokens())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
