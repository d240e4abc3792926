"""Validate-first CSV import of meters, bills and payments, streamed row by row.

Files (UTF-8, a BOM is allowed; header row first; columns in any order; cells are stripped)::

    meters    account, serial, head_end, install_year, relay_capable, control_mode, protected
    bills     account, bill_id, amount_paise, due_date, issued_at
    payments  payment_id, account, amount_paise, channel, paid_at
    reads     read_id, account, read_date, energy_wh
    reads     account, interval_start, interval_end, energy_wh       (interval reads: summed per day)

Values: money in integer paise (``12050``; ``120.50`` is refused, never rounded); booleans
``true/false/yes/no/y/n/1/0``; ``control_mode`` the DLMS disconnect-control mode 0-6; ``due_date`` an
ISO date (``2024-05-10``) or unix seconds; ``issued_at``/``paid_at`` unix seconds or ISO 8601 date-time
(no offset means IST); ``read_date`` the IST day the energy was used (not after today), ``energy_wh`` the
day's energy in whole watt-hours (``8250``; ``8.25`` kWh is refused, energy is never a float). An interval
reads file (``interval_start``/``interval_end``: unix seconds or ISO 8601, no offset means IST; any
whole-minute lengths) is summed per meter and IST day into day reads with read id ``"{account}:{day}"``,
only where a day's intervals cover it exactly; gaps, overlaps and intervals crossing midnight are refused
with the line and what is wrong (`jodo.intervals`, which also says why the meter does not sum them). Ids are
checked like `protocols.payments` checks them. Duplicates within a file
(meters: account and serial; bills: bill_id; payments: payment_id; reads: read_id) are errors on the later
line.

Two ways to run, the caller's choice:

* default — every row is validated first (one pass, nothing yielded); any bad row raises `CsvRejected`
  with a report of line-numbered errors; otherwise a second pass yields the records.
* ``skip_bad=True`` — one pass: good rows are yielded, bad rows go to a reject file (the same columns
  plus ``error``) that can be fixed and imported again (an ``error`` column is ignored on import).

A wrong header rejects the file either way. Records are plain frozen dataclasses; the caller turns them
into domain commands (`PaymentRecord.to_payment` gives a `PaymentReceived`). Memory: one row at a time
plus a set of the file's keys for the duplicate check.
"""

from __future__ import annotations

import csv
import re
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from jodo.errors import JodoError
from jodo.intervals import DayIntervals, day_read_id
from jodo.values import IST, BadValue, parse_bool, parse_date, parse_datetime, parse_int, parse_paise
from protocols.payments import MAX_PAYMENT_PAISE, PaymentReceived, validate_account, validate_payment_id

__all__ = [
    "BillRecord",
    "CsvImport",
    "CsvRejected",
    "ImportKind",
    "ImportReport",
    "IntervalRecord",
    "MeterRecord",
    "ParsedRow",
    "PaymentRecord",
    "ReadRecord",
    "Record",
    "RowError",
    "parse_rows",
]

_FUTURE_SLACK_S = 86_400
MAX_DAILY_WH = 10_000_000  # as domain.commands.ReportConsumption: far above any consumer meter's day
_SERIAL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,63}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,31}$")
_IGNORED_COLUMNS = frozenset({"error"})  # a fixed reject file goes straight back in


class ImportKind(StrEnum):
    """Which file: the kind fixes the columns and the record type."""

    METERS = "meters"
    BILLS = "bills"
    PAYMENTS = "payments"
    READS = "reads"


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterRecord:
    """One meter: the consumer account (entity id) and what decides automatic reconnection."""

    account: str
    serial: str
    head_end: str
    install_year: int
    relay_capable: bool
    control_mode: int  # DLMS class 70 attribute 4; 2 and 4 reconnect without a button press
    protected: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class BillRecord:
    """One bill posted to an account."""

    account: str
    bill_id: str
    amount_paise: int
    due_date: date
    issued_at: int  # unix seconds


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentRecord:
    """One cleared payment (counter/BBPS reconciliation file)."""

    payment_id: str
    account: str
    amount_paise: int
    channel: str
    paid_at: int  # unix seconds

    def to_payment(self, *, gateway: str, received_at: int, cashless: bool) -> PaymentReceived:
        """The payment desk's input record for this row."""
        return PaymentReceived(
            payment_id=self.payment_id, account=self.account, amount_paise=self.amount_paise,
            channel=self.channel, gateway=gateway, paid_at=self.paid_at, received_at=received_at,
            cashless=cashless,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadRecord:
    """One day's energy read of a prepaid meter (the head-end's daily read, or a file of them)."""

    read_id: str  # idempotency key: the same read twice is debited once
    account: str
    read_date: date  # the IST day the energy was used
    energy_wh: int


@dataclass(frozen=True, slots=True, kw_only=True)
class IntervalRecord:
    """One interval's energy (a row of an interval reads file); `CsvImport` sums a day's into a
    `ReadRecord` and never yields these."""

    account: str
    interval_start: int  # unix seconds
    interval_end: int
    energy_wh: int


Record = MeterRecord | BillRecord | PaymentRecord | ReadRecord | IntervalRecord


@dataclass(frozen=True, slots=True)
class RowError:
    """What is wrong with one cell (or, with ``column`` None, the row or header) at a 1-based line."""

    line: int
    column: str | None
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}, {self.column}" if self.column else f"line {self.line}"
        return f"{where}: {self.message}"


@dataclass(kw_only=True)
class ImportReport:
    """Counts and the first ``max_errors`` errors of one run; filled in while the file is read."""

    kind: ImportKind
    path: Path | None = None
    rows: int = 0  # data rows seen (blank lines not counted)
    accepted: int = 0
    rejected: int = 0
    errors: list[RowError] = field(default_factory=list)
    errors_dropped: int = 0  # errors beyond max_errors, counted only
    reject_path: Path | None = None  # written only if a row was rejected with skip_bad

    @property
    def ok(self) -> bool:
        return self.rejected == 0 and not self.errors

    def summary(self) -> str:
        """One line for a CLI: counts plus the first error."""
        first = f"; first error: {self.errors[0]}" if self.errors else ""
        return f"{self.kind}: {self.rows} rows, {self.accepted} accepted, {self.rejected} rejected{first}"


class CsvRejected(JodoError):
    """Raised by `jodo.csvimport` when a file must not be imported.

    The header is wrong (then even ``skip_bad`` cannot help), or a row is bad and the caller did not
    choose ``skip_bad``. ``report`` holds the line-numbered errors; nothing was yielded to the caller.
    """

    def __init__(self, message: str, report: ImportReport) -> None:
        super().__init__(message)
        self.report = report


# ---------------------------------------------------------------- cells


class _Bad(ValueError):
    """One cell's problem; the row parser collects these."""


def _text(value: str) -> str:
    if not value:
        raise _Bad("is empty")
    return value


def _check(fn: Callable[[str], None]) -> Callable[[str], str]:
    def parse(value: str) -> str:
        try:
            fn(_text(value))
        except ValueError as exc:
            raise _Bad(str(exc)) from None
        return value

    return parse


def _pattern(regex: re.Pattern[str], what: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if not regex.match(_text(value)):
            raise _Bad(f"{value[:40]!r} is not a valid {what}")
        return value

    return parse


def _typed(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """A `jodo.values` parser (the rules of every typed-in value) for one cell."""
    def cell(value: str) -> Any:
        try:
            return parse(_text(value))
        except BadValue as exc:
            raise _Bad(str(exc)) from None

    return cell


def _whole(lo: int, hi: int) -> Callable[[str], int]:
    return _typed(lambda v: parse_int(v, lo, hi))


def _paise(lo: int) -> Callable[[str], int]:
    return _typed(lambda v: parse_paise(v, lo, MAX_PAYMENT_PAISE))


_bool = _typed(parse_bool)
_due_date = _typed(parse_date)


def _timestamp(now: float) -> Callable[[str], int]:
    """A date-time up to a day ahead of ``now`` (later is a unit or clock mistake)."""
    return _typed(lambda v: parse_datetime(v, latest=now + _FUTURE_SLACK_S))


def _channel(value: str) -> str:
    if not 1 <= len(_text(value)) <= 32:
        raise _Bad("must be 1-32 characters")
    return value


@dataclass(frozen=True, slots=True)
class _Schema:
    columns: tuple[str, ...]
    parsers: dict[str, Callable[[str], Any]]
    unique: tuple[str, ...]
    build: Callable[..., Record]


def _interval_schema(now: float) -> _Schema:
    def ends(value: str) -> int:
        seconds: int = _typed(parse_datetime)(value)
        if seconds > now:
            raise _Bad(f"{value[:40]!r} is after now: that energy is not used yet")
        return seconds

    return _Schema(
        ("account", "interval_start", "interval_end", "energy_wh"),
        {
            "account": _check(validate_account),
            "interval_start": _typed(parse_datetime),
            "interval_end": ends,
            "energy_wh": _whole(0, MAX_DAILY_WH),
        },
        (),
        IntervalRecord,
    )


def _schema(kind: ImportKind, now: float, head_ends: Collection[str] | None) -> _Schema:
    account = _check(validate_account)
    if kind is ImportKind.METERS:
        def head_end(value: str) -> str:
            _pattern(_NAME, "head-end name")(value)
            if head_ends is not None and value not in head_ends:
                raise _Bad(f"unknown head-end {value!r} (configured: {', '.join(sorted(head_ends))})")
            return value

        this_year = datetime.fromtimestamp(now, IST).year
        return _Schema(
            ("account", "serial", "head_end", "install_year", "relay_capable", "control_mode", "protected"),
            {
                "account": account,
                "serial": _pattern(_SERIAL, "meter serial (1-64 of letters, digits, _.-/)"),
                "head_end": head_end,
                "install_year": _whole(1990, this_year + 1),
                "relay_capable": _bool,
                "control_mode": _whole(0, 6),
                "protected": _bool,
            },
            ("account", "serial"),
            MeterRecord,
        )
    if kind is ImportKind.BILLS:
        return _Schema(
            ("account", "bill_id", "amount_paise", "due_date", "issued_at"),
            {
                "account": account,
                "bill_id": _check(lambda v: validate_payment_id(v, "bill_id")),
                "amount_paise": _paise(0),
                "due_date": _due_date,
                "issued_at": _timestamp(now),
            },
            ("bill_id",),
            BillRecord,
        )
    if kind is ImportKind.READS:
        today = datetime.fromtimestamp(now, IST).date()

        def read_date(value: str) -> date:
            day: date = _due_date(value)
            if day > today:
                raise _Bad(f"{day.isoformat()} is after today ({today.isoformat()}); energy not yet used")
            return day

        return _Schema(
            ("read_id", "account", "read_date", "energy_wh"),
            {
                "read_id": _check(lambda v: validate_payment_id(v, "read_id")),
                "account": account,
                "read_date": read_date,
                "energy_wh": _whole(0, MAX_DAILY_WH),
            },
            ("read_id",),
            ReadRecord,
        )
    return _Schema(
        ("payment_id", "account", "amount_paise", "channel", "paid_at"),
        {
            "payment_id": _check(validate_payment_id),
            "account": account,
            "amount_paise": _paise(1),
            "channel": _channel,
            "paid_at": _timestamp(now),
        },
        ("payment_id",),
        PaymentRecord,
    )


# ---------------------------------------------------------------- rows


@dataclass(frozen=True, slots=True)
class ParsedRow:
    """One data row: its line, its raw cells (header order) and either a record or its errors."""

    line: int
    cells: list[str]
    record: Record | None
    errors: tuple[RowError, ...]


def parse_rows(
    lines: Iterable[str],
    kind: ImportKind | str,
    *,
    now: float | None = None,
    head_ends: Collection[str] | None = None,
) -> tuple[list[str], Iterator[ParsedRow]]:
    """Check the header of ``lines`` (a CSV text stream) and return it with a lazy row parser.

    Raises `CsvRejected` at once if the header is wrong. Blank lines are skipped; line numbers count
    physical lines from 1 (the header), so a quoted cell spanning lines moves the count on correctly.
    """
    kind = ImportKind(kind)
    now = time.time() if now is None else now
    schema = _schema(kind, now, head_ends)
    reader = csv.reader(lines, strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise _header_rejected(kind, f"header is not valid CSV: {exc}") from None
    if header is None:
        raise _header_rejected(kind, f"file is empty; expected the header {', '.join(schema.columns)}")
    names = [h.strip().lstrip("\ufeff").lower() for h in header]
    if kind is ImportKind.READS and "interval_start" in names:
        schema = _interval_schema(now)
    problems = []
    missing = [c for c in schema.columns if c not in names]
    unknown = [n for n in names if n not in schema.columns and n not in _IGNORED_COLUMNS]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if missing:
        problems.append(f"missing columns {missing}")
    if unknown:
        problems.append(f"unknown columns {unknown}")
    if duplicated:
        problems.append(f"repeated columns {duplicated}")
    if problems:
        raise _header_rejected(kind, f"{'; '.join(problems)}; expected {', '.join(schema.columns)}")
    return names, _rows(reader, names, schema)


def _header_rejected(kind: ImportKind, message: str) -> CsvRejected:
    report = ImportReport(kind=kind, errors=[RowError(1, None, message)])
    return CsvRejected(f"{kind} file rejected: line 1: {message}", report)


def _rows(reader: Any, names: list[str], schema: _Schema) -> Iterator[ParsedRow]:
    first_line: dict[str, dict[str, int]] = {column: {} for column in schema.unique}
    index = {name: names.index(name) for name in schema.columns}
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            error = RowError(reader.line_num, None, f"not valid CSV: {exc}")
            yield ParsedRow(reader.line_num, [], None, (error,))
            continue
        line = reader.line_num
        if not cells or all(not c.strip() for c in cells):
            continue
        cells = [c.strip() for c in cells]
        if len(cells) != len(names):
            message = f"expected {len(names)} fields, got {len(cells)}"
            yield ParsedRow(line, cells, None, (RowError(line, None, message),))
            continue
        values: dict[str, Any] = {}
        errors: list[RowError] = []
        for name in schema.columns:
            try:
                values[name] = schema.parsers[name](cells[index[name]])
            except _Bad as exc:
                errors.append(RowError(line, name, str(exc)))
        for name in schema.unique:
            seen = first_line[name]
            key = cells[index[name]]
            if name in values and key in seen:
                errors.append(RowError(line, name, f"duplicate {key[:40]!r}: first seen on line {seen[key]}"))
        if errors:
            yield ParsedRow(line, cells, None, tuple(errors))
            continue
        for name in schema.unique:
            first_line[name][cells[index[name]]] = line
        yield ParsedRow(line, cells, schema.build(**values), ())


# ---------------------------------------------------------------- files


class CsvImport:
    """One import of one file. Iterate it (or `batches`) once; read `report` afterwards.

    ``skip_bad=False`` (default): a first pass validates everything and raises `CsvRejected` before
    yielding anything if one row is bad. ``skip_bad=True``: bad rows go to ``reject_path`` (default
    ``<name>.rejects.csv`` beside the file), good rows are yielded.
    """

    def __init__(
        self,
        path: str | Path,
        kind: ImportKind | str,
        *,
        skip_bad: bool = False,
        reject_path: str | Path | None = None,
        max_errors: int = 1000,
        now: float | None = None,
        head_ends: Collection[str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.kind = ImportKind(kind)
        self.skip_bad = skip_bad
        self.reject_path = Path(reject_path) if reject_path else self.path.with_suffix(".rejects.csv")
        self.max_errors = max_errors
        self.now = time.time() if now is None else now
        self.head_ends = head_ends
        self.report = ImportReport(kind=self.kind, path=self.path)
        self._started = False

    def check(self) -> ImportReport:
        """Validate the whole file and return the report; yields nothing, writes nothing."""
        try:
            return self._validate()
        except CsvRejected as exc:
            exc.report.path = self.path
            return exc.report

    def _validate(self) -> ImportReport:
        if self._is_intervals():
            return self._sum_intervals()[0]
        report = ImportReport(kind=self.kind, path=self.path)
        with self._open() as f:
            _, rows = self._parse(f)
            for row in rows:
                self._count(report, row)
        return report

    def __iter__(self) -> Iterator[Record]:
        if self._started:
            raise RuntimeError("a CsvImport is read once; make a new one")
        self._started = True
        if self._is_intervals():
            return self._interval_reads()
        return self._skip_bad() if self.skip_bad else self._all_or_nothing()

    # ------------------------------------------------------------ interval reads (jodo/intervals.py)

    def _is_intervals(self) -> bool:
        if self.kind is not ImportKind.READS:
            return False
        with self._open() as f:
            names, _ = self._parse(f)
        return "interval_start" in names

    def _sum_intervals(self) -> tuple[ImportReport, list[ReadRecord], dict[int, str]]:
        """One pass over an interval file: the report, the day reads of the days covered exactly, and
        why each refused row is refused (by line: its own errors, or its day's)."""
        report = ImportReport(kind=self.kind, path=self.path)
        summed = DayIntervals()
        refused: dict[int, str] = {}
        errors: list[RowError] = []
        lines_of: dict[tuple[str, date], list[int]] = {}
        with self._open() as f:
            _, rows = self._parse(f)
            for row in rows:
                report.rows += 1
                record = row.record
                if not isinstance(record, IntervalRecord):
                    errors.extend(row.errors)
                    refused[row.line] = "; ".join(str(e) for e in row.errors)
                    continue
                d, why = summed.add(row.line, record.account, record.interval_start, record.interval_end,
                                    record.energy_wh)
                if d is not None:
                    lines_of.setdefault((d.account, d.day), []).append(row.line)
                if why is not None:
                    errors.append(RowError(row.line, "interval_start", why))
                    refused[row.line] = f"line {row.line}, interval_start: {why}"
        days: list[ReadRecord] = []
        for key, d in summed.days.items():
            problem = summed.problem(d, MAX_DAILY_WH)
            if problem is None:
                days.append(ReadRecord(read_id=day_read_id(d.account, d.day), account=d.account,
                                       read_date=d.day, energy_wh=d.energy_wh))
                continue
            if not d.bad_rows:  # a day refused for its own rows already says so on those lines
                errors.append(RowError(d.first_line, "interval_start", problem))
            for line in lines_of.get(key, ()):
                refused.setdefault(line, problem)
        report.rejected = len(refused)
        report.accepted = report.rows - report.rejected
        errors.sort(key=lambda e: e.line)
        report.errors = errors[: self.max_errors]
        report.errors_dropped = max(len(errors) - self.max_errors, 0)
        return report, days, refused

    def _interval_reads(self) -> Iterator[Record]:
        report, days, refused = self._sum_intervals()
        self.report = report
        if not self.skip_bad:
            if not report.ok:
                first = report.errors[0]
                message = f"{self.kind} file {self.path} rejected: {report.rejected} bad rows; first: {first}"
                raise CsvRejected(message, report)
        elif refused:
            self._write_interval_rejects(refused)
        yield from days

    def _write_interval_rejects(self, refused: dict[int, str]) -> None:
        with self._open() as f, self.reject_path.open("w", newline="", encoding="utf-8") as out:
            names, rows = self._parse(f)
            writer = csv.writer(out)
            writer.writerow([n for n in names if n not in _IGNORED_COLUMNS] + ["error"])
            for row in rows:
                why = refused.get(row.line)
                if why is not None:
                    kept = _reject_cells(names, ParsedRow(row.line, row.cells, None, ()))[:-1]
                    writer.writerow([*kept, why])
        self.report.reject_path = self.reject_path

    def batches(self, size: int) -> Iterator[list[Record]]:
        """The records in lists of up to ``size`` (for group-committed commands)."""
        batch: list[Record] = []
        for record in self:
            batch.append(record)
            if len(batch) >= size:
                yield batch
                batch = []
        if batch:
            yield batch

    def _open(self) -> IO[bytes]:
        try:
            return self.path.open("rb")
        except OSError as exc:
            report = ImportReport(kind=self.kind, path=self.path, errors=[RowError(0, None, str(exc))])
            raise CsvRejected(f"cannot read {self.path}: {exc.strerror or exc}", report) from None

    def _parse(self, f: IO[bytes]) -> tuple[list[str], Iterator[ParsedRow]]:
        return parse_rows(_utf8_lines(f, self.kind), self.kind, now=self.now, head_ends=self.head_ends)

    def _count(self, report: ImportReport, row: ParsedRow) -> None:
        report.rows += 1
        if row.record is not None:
            report.accepted += 1
            return
        report.rejected += 1
        room = self.max_errors - len(report.errors)
        report.errors.extend(row.errors[: max(room, 0)])
        report.errors_dropped += max(len(row.errors) - max(room, 0), 0)

    def _all_or_nothing(self) -> Iterator[Record]:
        checked = self._validate()
        if not checked.ok:
            self.report = checked
            raise CsvRejected(
                f"{self.kind} file {self.path} rejected: {checked.rejected} bad rows; "
                f"first: {checked.errors[0]}",
                checked,
            )
        with self._open() as f:
            _, rows = self._parse(f)
            for row in rows:
                self._count(self.report, row)
                if row.record is None:  # the file changed under us since the check
                    raise CsvRejected(f"{self.path} changed during import at line {row.line}", self.report)
                yield row.record

    def _skip_bad(self) -> Iterator[Record]:
        with self._open() as f:
            names, rows = self._parse(f)
            writer: Any = None
            out: IO[str] | None = None
            try:
                for row in rows:
                    self._count(self.report, row)
                    if row.record is not None:
                        yield row.record
                        continue
                    if writer is None:
                        out = self.reject_path.open("w", newline="", encoding="utf-8")
                        writer = csv.writer(out)
                        writer.writerow([n for n in names if n not in _IGNORED_COLUMNS] + ["error"])
                        self.report.reject_path = self.reject_path
                    writer.writerow(_reject_cells(names, row))
            finally:
                if out is not None:
                    out.close()


def _reject_cells(names: list[str], row: ParsedRow) -> list[str]:
    cells = (row.cells + [""] * len(names))[: len(names)]
    kept = [c for n, c in zip(names, cells, strict=True) if n not in _IGNORED_COLUMNS]
    return [*kept, "; ".join(str(e) for e in row.errors)]


def _utf8_lines(f: IO[bytes], kind: ImportKind) -> Iterator[str]:
    """The file's lines decoded one by one, so a byte that is not UTF-8 is reported with its line."""
    for line, raw in enumerate(f, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            report = ImportReport(kind=kind, errors=[RowError(line, None, f"not UTF-8: {exc.reason}")])
            message = f"{kind} file is not UTF-8 at line {line}, byte {exc.start + 1}"
            raise CsvRejected(message, report) from None
        yield text.removeprefix("\ufeff") if line == 1 else text
