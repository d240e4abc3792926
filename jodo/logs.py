"""Structured logging: JSON lines (or text), secrets redacted, one config for every process of a node.

One object per line::

    {"ts":"2024-05-01T10:00:00.123Z","level":"INFO","logger":"jodo.desk","msg":"credited",
     "pid":4242,"payment_id":"pay_1","account":"N1234567"}

``ts`` (UTC, ms), ``level``, ``logger``, ``msg`` and ``pid`` (the process that logged, which in Thespian
is the actor's process, not the logger's) always; then whatever the call passed with ``extra=``, by
convention `CONTEXT_FIELDS` (``payment_id``, ``command_id``, ``account``, ``actor``, ...); ``exc`` holds
a traceback, still on the one line. Thespian adds ``actor_address`` to records forwarded from actors.

Use::

    log = logging.getLogger("jodo.shard")
    log.info("relay confirmed", extra={"command_id": cid, "account": acct, "actor": "meter_shard"})

`logging_dict` builds the ``logging.config.dictConfig`` dict: the node applies it with `configure`
and passes the same dict to ``ActorSystem(..., logDefs=...)`` (Thespian's multiproc bases need a real
dict; its logger process applies it, and actors forward records at or above its lowest level).

Thespian forwards an actor's records to its logger process asynchronously: the last lines of an actor
that is SIGKILLed just after logging can be lost (its metrics are not: see telemetry.metrics).

Secrets: `RedactSecrets`, on every handler, replaces the value of any ``extra`` key, mapping key or
``key=value`` / ``"key": "value"`` in the message whose name looks like secret, token, password,
api key, authorization, credential or signature with ``***``. It is a net, not a licence: log ids,
never credentials.
"""

from __future__ import annotations

import json
import logging
import logging.config
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

__all__ = [
    "CONTEXT_FIELDS",
    "REDACTED",
    "JsonFormatter",
    "RedactSecrets",
    "TextFormatter",
    "configure",
    "logging_dict",
]

CONTEXT_FIELDS: Final = ("payment_id", "command_id", "account", "actor", "pid", "head_end", "gateway")
REDACTED: Final = "***"

# Everything a bare LogRecord carries; anything else on a record came from ``extra=`` (or Thespian).
_STANDARD_ATTRS: Final = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName"}
)
_RENAMED: Final = {"actorAddress": "actor_address"}  # Thespian's attribute, in our spelling

_SECRET_NAME: Final = re.compile(
    r"secret|token|passw(?:or)?d|pwd|api[_-]?key|authori[sz]ation|credential|private[_-]?key|signature",
    re.IGNORECASE,
)
# key=value, key: value, "key": "value", 'key': 'value' where key looks secret; the value is replaced.
_SECRET_IN_TEXT: Final = re.compile(
    r"""(?P<key>["']?[\w.-]*?(?:secret|token|passw(?:or)?d|pwd|api[_-]?key|authori[sz]ation|credential|"""
    r"""private[_-]?key|signature)[\w.-]*["']?)(?P<sep>\s*[=:]\s*)"""
    r"""(?P<value>"[^"]*"|'[^']*'|(?:Bearer|Basic)\s+\S+|[^\s,;}&]+)""",
    re.IGNORECASE,
)


def _redact_value(value: object, depth: int = 0) -> object:
    if depth > 5:
        return value
    if isinstance(value, Mapping):
        return {
            k: REDACTED if isinstance(k, str) and _SECRET_NAME.search(k) else _redact_value(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(_redact_value(v, depth + 1) for v in value)
    if isinstance(value, str):
        return _redact_text(value)
    return value


def _redact_text(text: str) -> str:
    def keep_quotes(match: re.Match[str]) -> str:
        value = match["value"]
        quote = value[0] if value[:1] in ("'", '"') else ""
        return f"{match['key']}{match['sep']}{quote}{REDACTED}{quote}"

    return _SECRET_IN_TEXT.sub(keep_quotes, text)


class RedactSecrets(logging.Filter):
    """Masks secret-looking ``extra`` keys, mapping keys and ``key=value`` text. Put it on handlers."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key in list(vars(record)):
            if key in _STANDARD_ATTRS:
                continue
            if _SECRET_NAME.search(key):
                setattr(record, key, REDACTED)
            else:
                setattr(record, key, _redact_value(getattr(record, key)))
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: let the handler report it, never raise at the call site
            return True
        redacted = _redact_text(message)
        if redacted != message or record.args:
            # Fold the args in once, redacted; later formatters see a plain message.
            record.msg, record.args = redacted, None
        return True


def _extras(record: logging.LogRecord) -> dict[str, object]:
    return {
        _RENAMED.get(key, key): value for key, value in vars(record).items() if key not in _STANDARD_ATTRS
    }


def _utc_ms(created: float) -> str:
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, pid, then the record's extras."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": _utc_ms(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
        }
        for key, value in _extras(record).items():
            if key not in ("ts", "level", "logger", "msg"):
                line[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """``ts LEVEL logger [pid] msg key=value ...`` for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        context = " ".join(f"{key}={value}" for key, value in _extras(record).items() if key != "pid")
        text = f"{_utc_ms(record.created)} {record.levelname:<7} {record.name} [{record.process}] "
        text += record.getMessage() + (f" {context}" if context else "")
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            text += "\n" + record.exc_text
        return text


def logging_dict(
    level: str = "INFO", fmt: str = "text", log_file: Path | str | None = None
) -> dict[str, Any]:
    """A ``dictConfig`` dict: every record at ``level`` or above, as ``fmt``, to ``log_file`` or stderr.

    ``level`` and ``fmt`` come from the ``[logging]`` config section. A file is opened with
    ``WatchedFileHandler`` so logrotate can move it; under systemd, leave it None (stderr → journal).
    """
    level = level.upper()
    if level not in logging.getLevelNamesMapping() or level == "NOTSET":
        raise ValueError(f"unknown log level {level!r}")
    if fmt not in ("json", "text"):
        raise ValueError(f"unknown log format {fmt!r}; expected 'json' or 'text'")
    handler: dict[str, Any] = {"formatter": fmt, "filters": ["redact"], "level": level}
    if log_file is None:
        handler |= {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}
    else:
        handler |= {"class": "logging.handlers.WatchedFileHandler", "filename": str(log_file)}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": f"{__name__}.RedactSecrets"}},
        "formatters": {
            "json": {"()": f"{__name__}.JsonFormatter"},
            "text": {"()": f"{__name__}.TextFormatter"},
        },
        "handlers": {"main": handler},
        "root": {"level": level, "handlers": ["main"]},
        # Chatty libraries stay at WARNING unless we ask for DEBUG everywhere.
        "loggers": {
            name: {"level": "DEBUG" if level == "DEBUG" else "WARNING"}
            for name in ("aiohttp.access", "asyncio")
        },
    }


def configure(level: str = "INFO", fmt: str = "text", log_file: Path | str | None = None) -> dict[str, Any]:
    """Apply `logging_dict` in this process and return it (to pass on as Thespian's ``logDefs``)."""
    config = logging_dict(level, fmt, log_file)
    logging.config.dictConfig(config)
    return config
