"""jodo.logs: one JSON object per line, context from extra=, secrets redacted, a dictConfig Thespian takes."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import pickle
from collections.abc import Iterator
from pathlib import Path

import pytest
from thespian.system.multiprocCommon import get_min_log_level

from jodo import logs

Capture = tuple[logging.Logger, io.StringIO, "logging.StreamHandler[io.StringIO]"]


@pytest.fixture
def capture() -> Iterator[Capture]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    handler.addFilter(logs.RedactSecrets())
    logger = logging.getLogger("jodo.test.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream, handler
    logger.removeHandler(handler)


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_record_is_one_json_object_with_its_context(capture: Capture) -> None:
    logger, stream, _ = capture
    logger.info(
        "relay confirmed for %s\nafter %d tries",
        "N1",
        2,
        extra={"payment_id": "pay_1", "command_id": "cmd_9", "account": "N1", "actor": "meter_shard"},
    )
    [line] = _lines(stream)
    assert line["level"] == "INFO" and line["logger"] == "jodo.test.logs"
    assert line["msg"] == "relay confirmed for N1\nafter 2 tries"
    assert str(line["ts"]).endswith("Z") and "T" in str(line["ts"])
    assert isinstance(line["pid"], int)
    assert {k: line[k] for k in ("payment_id", "command_id", "account", "actor")} == {
        "payment_id": "pay_1",
        "command_id": "cmd_9",
        "account": "N1",
        "actor": "meter_shard",
    }


def test_a_given_pid_wins_and_an_exception_stays_on_the_line(capture: Capture) -> None:
    logger, stream, _ = capture
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("failed", extra={"pid": 4242})
    assert len(stream.getvalue().splitlines()) == 1
    [line] = _lines(stream)
    assert line["pid"] == 4242
    assert "RuntimeError: boom" in str(line["exc"])


@pytest.mark.parametrize(
    ("msg", "args", "extra", "secret"),
    [
        ("connecting", (), {"gateway_secret": "s3cr3t-value"}, "s3cr3t-value"),
        ("headers", (), {"headers": {"Authorization": "Bearer abc.def"}}, "abc.def"),
        ("config %s", ({"name": "rzp", "password": "hunter22"},), {}, "hunter22"),
        ("login token=tok_live_123 user=x", (), {}, "tok_live_123"),
        ('body {"api_key": "k-999", "amount": 5}', (), {}, "k-999"),
        ("auth Authorization: Bearer zzz.yyy", (), {}, "zzz.yyy"),
    ],
)
def test_secrets_never_reach_the_line(
    capture: Capture, msg: str, args: tuple[object, ...], extra: dict[str, object], secret: str
) -> None:
    logger, stream, _ = capture
    logger.warning(msg, *args, extra=extra)
    text = stream.getvalue()
    assert secret not in text
    assert logs.REDACTED in text


def test_ordinary_values_are_left_alone(capture: Capture) -> None:
    logger, stream, _ = capture
    logger.info("amount=%d paise", 50000, extra={"account": "N1", "tokens_used": None})
    [line] = _lines(stream)
    assert line["msg"] == "amount=50000 paise" and line["account"] == "N1"


def test_a_record_forwarded_by_thespian_formats_the_same(capture: Capture) -> None:
    # Thespian's forward handler folds args into msg, adds actorAddress and pickles the record.
    record = logging.LogRecord("jodo.desk", logging.INFO, __file__, 1, "credited %s", ("pay_1",), None)
    record.payment_id = "pay_1"
    record.msg, record.args = record.getMessage(), None
    record.actorAddress = "ActorAddr-(T|:40001)"
    received = pickle.loads(pickle.dumps(record))
    line = json.loads(logs.JsonFormatter().format(received))
    assert line["msg"] == "credited pay_1" and line["payment_id"] == "pay_1"
    assert line["actor_address"] == "ActorAddr-(T|:40001)"
    assert line["pid"] == record.process


def test_text_format_puts_context_after_the_message() -> None:
    record = logging.LogRecord("jodo.gw", logging.ERROR, __file__, 1, "breaker open", None, None)
    record.head_end = "hes-a"
    text = logs.TextFormatter().format(record)
    assert " ERROR   jodo.gw [" in text and text.endswith("breaker open head_end=hes-a")


@pytest.mark.parametrize(("level", "fmt"), [("INFO", "json"), ("debug", "text"), ("WARNING", "json")])
def test_logging_dict_is_valid_and_follows_level_and_format(level: str, fmt: str, tmp_path: Path) -> None:
    config = logs.logging_dict(level, fmt, tmp_path / "jodo.log")
    assert config["handlers"]["main"]["formatter"] == fmt
    assert config["root"]["level"] == level.upper()
    # Thespian forwards records from actors at or above the lowest level it finds in logDefs.
    assert get_min_log_level(config) == logging.getLevelName(level.upper())
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    try:
        logging.config.dictConfig(config)
        logging.getLogger("jodo.test").warning("to the file", extra={"actor": "x"})
        for handler in logging.getLogger().handlers:
            handler.flush()
        written = (tmp_path / "jodo.log").read_text()
        assert "to the file" in written
        if fmt == "json":
            assert json.loads(written.splitlines()[-1])["actor"] == "x"
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = saved[1]
        root.setLevel(saved[0])


def test_unknown_level_or_format_is_refused() -> None:
    with pytest.raises(ValueError):
        logs.logging_dict("LOUD", "json")
    with pytest.raises(ValueError):
        logs.logging_dict("INFO", "xml")
