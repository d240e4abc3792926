"""jodo.csvimport: header checks, line-numbered row errors, all-or-nothing vs skip_bad with a reject file."""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path

import pytest

from jodo.csvimport import (
    BillRecord,
    CsvImport,
    CsvRejected,
    ImportKind,
    MeterRecord,
    PaymentRecord,
    ReadRecord,
    RowError,
    parse_rows,
)
from protocols.payments import PaymentReceived

NOW = 1_717_000_000.0  # 2024-05-29 IST
METERS_HEADER = "account,serial,head_end,install_year,relay_capable,control_mode,protected\n"
GOOD_METERS = METERS_HEADER + (
    "N3462019771,SM-IND-000001,hes-1,2021,true,4,false\n"
    "N3462019772,SM-IND-000002,hes-1,2023,yes,2,no\n"
    "N3462019773,SM-IND-000003,hes-2,2020,0,1,1\n"
)


def write(tmp_path: Path, text: str, name: str = "in.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_good_meters_file_yields_typed_records(tmp_path: Path) -> None:
    importer = CsvImport(write(tmp_path, GOOD_METERS), "meters", now=NOW)
    records = list(importer)
    assert records[0] == MeterRecord(
        account="N3462019771", serial="SM-IND-000001", head_end="hes-1", install_year=2021,
        relay_capable=True, control_mode=4, protected=False,
    )
    assert [r.relay_capable for r in records if isinstance(r, MeterRecord)] == [True, True, False]
    assert importer.report.rows == 3 and importer.report.accepted == 3 and importer.report.ok


def test_columns_may_come_in_any_order_with_a_bom_and_spaces(tmp_path: Path) -> None:
    text = "\ufeff Serial ,account,protected,head_end,control_mode,install_year,relay_capable\n"
    text += " SM-1 , N1 ,false,hes-1,4,2022,true\n\n"
    (record,) = CsvImport(write(tmp_path, text), "meters", now=NOW)
    assert isinstance(record, MeterRecord) and (record.account, record.serial) == ("N1", "SM-1")


def test_bad_rows_reject_the_whole_file_with_line_numbers_and_columns(tmp_path: Path) -> None:
    text = METERS_HEADER + (
        "N1,SM-1,hes-1,2021,true,4,false\n"
        "N2,SM-2,hes-1,1890,maybe,9,false\n"  # line 3: three bad cells
        "N1,SM-3,hes-1,2021,true,4,false\n"  # line 4: duplicate account
        "N4,SM-4,hes-1,2021,true\n"  # line 5: too few fields
    )
    importer = CsvImport(write(tmp_path, text), ImportKind.METERS, now=NOW)
    yielded: list[object] = []
    with pytest.raises(CsvRejected) as caught:
        yielded.extend(importer)
    assert yielded == []  # validate-first: nothing reaches the caller
    errors = caught.value.report.errors
    assert [(e.line, e.column) for e in errors] == [
        (3, "install_year"), (3, "relay_capable"), (3, "control_mode"), (4, "account"), (5, None),
    ]
    assert "first seen on line 2" in errors[3].message
    assert "expected 7 fields, got 5" in errors[4].message
    assert caught.value.report.rejected == 3 and caught.value.report.accepted == 1
    assert "line 3, install_year" in str(caught.value)


def test_skip_bad_yields_good_rows_and_writes_a_reject_file_with_an_error_column(tmp_path: Path) -> None:
    text = (
        "payment_id,account,amount_paise,channel,paid_at\n"
        "P1,N1,125050,counter,1716990000\n"
        "P2,N2,120.50,counter,1716990000\n"  # float rupees-and-paise: refused, never rounded
        "P1,N3,100,counter,1716990000\n"  # duplicate payment id
        "P4,N4,100,bbps,2024-05-29T10:15:00+05:30\n"
    )
    rejects = tmp_path / "rejects.csv"
    importer = CsvImport(write(tmp_path, text), "payments", skip_bad=True, reject_path=rejects, now=NOW)
    records = list(importer)
    assert [r.payment_id for r in records if isinstance(r, PaymentRecord)] == ["P1", "P4"]
    assert importer.report.rejected == 2 and importer.report.reject_path == rejects
    with rejects.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["payment_id", "account", "amount_paise", "channel", "paid_at", "error"]
    assert rows[1][:3] == ["P2", "N2", "120.50"]
    assert "line 3, amount_paise" in rows[1][5] and "whole paise" in rows[1][5]
    assert rows[2][0] == "P1" and "duplicate 'P1': first seen on line 2" in rows[2][5]


def test_a_fixed_reject_file_imports_again_ignoring_its_error_column(tmp_path: Path) -> None:
    text = "payment_id,account,amount_paise,channel,paid_at\nP2,N2,120.50,counter,1716990000\n"
    rejects = tmp_path / "rejects.csv"
    list(CsvImport(write(tmp_path, text), "payments", skip_bad=True, reject_path=rejects, now=NOW))
    fixed = rejects.read_text(encoding="utf-8").replace("120.50", "12050")
    (record,) = CsvImport(write(tmp_path, fixed, "fixed.csv"), "payments", now=NOW)
    assert isinstance(record, PaymentRecord) and record.amount_paise == 12050


def test_no_reject_file_is_written_when_every_row_is_good(tmp_path: Path) -> None:
    importer = CsvImport(write(tmp_path, GOOD_METERS), "meters", skip_bad=True, now=NOW)
    assert len(list(importer)) == 3
    assert importer.report.reject_path is None and not (tmp_path / "in.rejects.csv").exists()


@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        (METERS_HEADER.replace(",protected", ""), "missing columns ['protected']"),
        (METERS_HEADER.strip() + ",colour\n", "unknown columns ['colour']"),
        (METERS_HEADER.strip() + ",account\n", "repeated columns ['account']"),
        ("", "file is empty"),
    ],
)
def test_a_wrong_header_rejects_the_file_even_with_skip_bad(
    tmp_path: Path, header: str, fragment: str
) -> None:
    importer = CsvImport(write(tmp_path, header), "meters", skip_bad=True, now=NOW)
    with pytest.raises(CsvRejected) as caught:
        list(importer)
    assert fragment in str(caught.value)
    assert caught.value.report.errors[0].line == 1


def test_bills_take_iso_or_epoch_due_dates_and_timestamps(tmp_path: Path) -> None:
    text = (
        "account,bill_id,amount_paise,due_date,issued_at\n"
        "N1,B-2024-05-N1,245000,2024-06-10,2024-05-20\n"
        "N2,B-2024-05-N2,0,1717957800,1716163200\n"  # 1717957800 = 2024-06-10 00:00 IST
    )
    first, second = CsvImport(write(tmp_path, text), "bills", now=NOW)
    assert first == BillRecord(
        account="N1", bill_id="B-2024-05-N1", amount_paise=245000, due_date=date(2024, 6, 10),
        issued_at=1716143400,  # 2024-05-20 00:00 IST: a date-time without offset is IST
    )
    assert isinstance(second, BillRecord)
    assert second.due_date == date(2024, 6, 10) and second.amount_paise == 0


@pytest.mark.parametrize(
    ("row", "column", "fragment"),
    [
        ("N1,B1,-5,2024-06-10,1716163200", "amount_paise", "out of range"),
        ("N1,B1,1e5,2024-06-10,1716163200", "amount_paise", "not an integer"),
        ("N1,B1,100,10/06/2024,1716163200", "due_date", "neither an ISO date"),
        ("N1,B1,100,2024-06-10,1716163200000", "issued_at", "is not unix seconds between 2000 and"),
        ("N1,B1,100,2024-06-10,yesterday", "issued_at", "neither unix seconds nor an ISO 8601"),
        ("N 1,B1,100,2024-06-10,1716163200", "account", "account must be"),
        ("N1,,100,2024-06-10,1716163200", "bill_id", "is empty"),
    ],
)
def test_a_bad_bill_cell_is_reported_with_its_column(
    tmp_path: Path, row: str, column: str, fragment: str
) -> None:
    text = "account,bill_id,amount_paise,due_date,issued_at\n" + row + "\n"
    report = CsvImport(write(tmp_path, text), "bills", now=NOW).check()
    (error,) = report.errors
    assert (error.line, error.column) == (2, column) and fragment in error.message


def test_an_unknown_head_end_is_a_row_error_when_head_ends_are_given(tmp_path: Path) -> None:
    report = CsvImport(write(tmp_path, GOOD_METERS), "meters", now=NOW, head_ends={"hes-1"}).check()
    assert [(e.line, e.column) for e in report.errors] == [(4, "head_end")]


def test_line_numbers_count_physical_lines_across_quoted_newlines(tmp_path: Path) -> None:
    text = METERS_HEADER + (
        '"N1",SM-1,hes-1,2021,true,4,false\n'
        '"N\n2",SM-2,hes-1,2021,true,4,false\n'  # lines 3-4: a newline inside quotes
        "N3,SM-3,hes-1,1,true,4,false\n"  # line 5
    )
    report = CsvImport(write(tmp_path, text), "meters", now=NOW).check()
    assert [(e.line, e.column) for e in report.errors] == [(4, "account"), (5, "install_year")]


def test_a_non_utf8_file_is_rejected_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(METERS_HEADER.encode() + "N1,SM-é,hes-1,2021,true,4,false\n".encode("latin-1"))
    with pytest.raises(CsvRejected, match="not UTF-8 at line 2, byte 7"):
        list(CsvImport(path, "meters", now=NOW))


def test_a_missing_file_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(CsvRejected, match="cannot read"):
        list(CsvImport(tmp_path / "absent.csv", "meters"))


def test_batches_group_records_for_group_commits(tmp_path: Path) -> None:
    rows = "".join(f"P{i},N{i},100,upi,1716990000\n" for i in range(7))
    path = write(tmp_path, "payment_id,account,amount_paise,channel,paid_at\n" + rows)
    assert [len(b) for b in CsvImport(path, "payments", now=NOW).batches(3)] == [3, 3, 1]


def test_an_import_is_read_once(tmp_path: Path) -> None:
    importer = CsvImport(write(tmp_path, GOOD_METERS), "meters", now=NOW)
    list(importer)
    with pytest.raises(RuntimeError):
        list(importer)


def test_a_payment_record_becomes_a_payment_received() -> None:
    record = PaymentRecord(
        payment_id="P1", account="N1", amount_paise=100, channel="counter", paid_at=1716990000
    )
    payment = record.to_payment(gateway="counter", received_at=1717000000, cashless=False)
    assert payment == PaymentReceived(
        payment_id="P1", account="N1", amount_paise=100, channel="counter", gateway="counter",
        paid_at=1716990000, received_at=1717000000, cashless=False,
    )


def test_parse_rows_works_on_any_line_iterable() -> None:
    names, rows = parse_rows(iter(GOOD_METERS.splitlines(keepends=True)), "meters", now=NOW)
    assert names[0] == "account"
    parsed = list(rows)
    assert [p.line for p in parsed] == [2, 3, 4] and all(p.record is not None for p in parsed)


def test_errors_beyond_max_errors_are_counted_not_kept(tmp_path: Path) -> None:
    rows = "".join(f"P{i},N{i},x,upi,1716990000\n" for i in range(20))
    path = write(tmp_path, "payment_id,account,amount_paise,channel,paid_at\n" + rows)
    report = CsvImport(path, "payments", now=NOW, max_errors=5).check()
    assert len(report.errors) == 5 and report.errors_dropped == 15 and report.rejected == 20
    assert str(report.errors[0]) == str(RowError(2, "amount_paise", report.errors[0].message))
    assert report.summary().startswith("payments: 20 rows, 0 accepted, 20 rejected; first error: line 2")


def test_cells_follow_the_same_value_rules_as_inject(tmp_path: Path) -> None:
    """One parser for every typed-in value (jodo/values.py): a decimal amount is refused with the paise
    it would be, yes/no are booleans, a date may be unix seconds, an offset-less date-time is IST."""
    meters = "account,serial,head_end,install_year,relay_capable,control_mode,protected\n" \
             "N1,S1,hes-sim,2022,yes,2,No\n"
    report = CsvImport(write(tmp_path, meters), "meters", now=NOW).check()
    assert report.ok, report.errors
    bills = "account,bill_id,amount_paise,due_date,issued_at\nN1,B1,1500.00,2024-06-10,2024-05-20T10:00\n"
    (error,) = CsvImport(write(tmp_path, bills), "bills", now=NOW).check().errors
    assert error.column == "amount_paise" and "(Rs 1500.00 is 150000 paise)" in error.message
    good = "account,bill_id,amount_paise,due_date,issued_at\nN1,B1,150000,1717977600,2024-05-20T10:00\n"
    (record,) = list(CsvImport(write(tmp_path, good), "bills", now=NOW))
    assert str(record.due_date) == "2024-06-10"  # type: ignore[union-attr]
    assert record.issued_at == 1716179400  # type: ignore[union-attr]  # 10:00 IST = 04:30 UTC


READS_HEADER = "read_id,account,read_date,energy_wh\n"


def test_a_good_reads_file_yields_daily_reads_in_whole_watt_hours(tmp_path: Path) -> None:
    text = READS_HEADER + (
        "R-N1-2024-05-27,N3462019771,2024-05-27,8250\n"
        "R-N1-2024-05-28,N3462019771,2024-05-28,0\n"
    )
    records = list(CsvImport(write(tmp_path, text), "reads", now=NOW))
    assert records == [
        ReadRecord(read_id="R-N1-2024-05-27", account="N3462019771", read_date=date(2024, 5, 27),
                   energy_wh=8250),
        ReadRecord(read_id="R-N1-2024-05-28", account="N3462019771", read_date=date(2024, 5, 28),
                   energy_wh=0),
    ]


def test_a_bad_read_is_named_by_line_and_column_and_nothing_is_yielded(tmp_path: Path) -> None:
    text = READS_HEADER + (
        "R-1,N3462019771,2024-05-27,8250\n"
        "R-2,N3462019771,2024-05-27,8.25\n"  # kWh where Wh is wanted: refused, not rounded
        "R-3,N3462019771,2024-06-15,8000\n"  # a day that has not happened yet
        "R-4,N3462019771,2024-05-27,-5\n"
        "R-1,N3462019771,2024-05-26,7000\n"  # the same read id again
    )
    importer = CsvImport(write(tmp_path, text), "reads", now=NOW)
    with pytest.raises(CsvRejected) as caught:
        list(importer)
    errors = [(e.line, e.column) for e in caught.value.report.errors]
    assert errors == [(3, "energy_wh"), (4, "read_date"), (5, "energy_wh"), (6, "read_id")]
    messages = [str(e) for e in caught.value.report.errors]
    assert "after today" in messages[1] and "first seen on line 2" in messages[3]
