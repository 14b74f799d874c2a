"""The record export options: what passes, what is refused and with which stable error type."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import BaseModel, ValidationError

from service.export_options import CsvOptions, PdfOptions, RecordOptions, XlsxOptions


def error(model: type[BaseModel], options: dict[str, Any]) -> tuple[str, tuple[int | str, ...]]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(options)
    first = caught.value.errors()[0]
    return first["type"], tuple(first["loc"])


FULL = {
    "columns": ["created_at", "full_name", "age"],
    "labels": {"full_name": "Name"},
    "filters": {
        "created_from": "2026-01-01T00:00:00",
        "created_to": "2026-02-01T00:00:00+00:00",
        "equals": {"country": "RO", "age": 30, "score": 1.5, "newsletter": True, "email": None},
    },
    "sort": [{"field": "created_at", "direction": "desc"}, {"field": "full_name"}],
    "time_zone": "Europe/Bucharest",
    "file_name": "Q1 report.csv",
    "bom": True,
    "formula_guard": False,
}


def test_full_options_survive_the_round_trip_through_json() -> None:
    parsed = CsvOptions.model_validate(FULL)
    stored = parsed.model_dump(mode="json", exclude_unset=True)  # what the API keeps
    assert CsvOptions.model_validate(stored) == parsed
    assert parsed.filters.equals == {
        "country": "RO",
        "age": 30,
        "score": 1.5,
        "newsletter": True,
        "email": None,
    }
    assert type(parsed.filters.equals["newsletter"]) is bool and type(parsed.filters.equals["age"]) is int


def test_defaults() -> None:
    parsed = CsvOptions()
    assert parsed.columns is None and parsed.sort == [] and parsed.filters.equals == {}
    assert parsed.time_zone == "UTC" and parsed.bom is False and parsed.formula_guard is True
    assert PdfOptions().orientation == "auto"


def test_a_naive_created_at_bound_is_read_in_the_export_zone() -> None:
    start, end = CsvOptions.model_validate(FULL).created_range()
    assert start == datetime(2026, 1, 1, tzinfo=ZoneInfo("Europe/Bucharest"))
    assert start is not None and start.utcoffset() == timedelta(hours=2)
    assert end is not None and end.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("model", "options", "expected"),
    [
        (CsvOptions, {"unknown": 1}, ("extra_forbidden", ("unknown",))),
        (XlsxOptions, {"bom": True}, ("extra_forbidden", ("bom",))),
        (XlsxOptions, {"formula_guard": False}, ("extra_forbidden", ("formula_guard",))),
        (CsvOptions, {"title": "x"}, ("extra_forbidden", ("title",))),
        (CsvOptions, {"filters": {"nope": 1}}, ("extra_forbidden", ("filters", "nope"))),
        (CsvOptions, {"sort": [{"field": "a", "order": "asc"}]}, ("extra_forbidden", ("sort", 0, "order"))),
        (CsvOptions, {"bom": "yes"}, ("bool_type", ("bom",))),
        (CsvOptions, {"formula_guard": 0}, ("bool_type", ("formula_guard",))),
        (CsvOptions, {"columns": "full_name"}, ("list_type", ("columns",))),
        (CsvOptions, {"columns": [1]}, ("string_type", ("columns", 0))),
        (CsvOptions, {"columns": []}, ("too_short", ("columns",))),
        (CsvOptions, {"columns": ["a"] * 2}, ("duplicate_column", ())),
        (CsvOptions, {"columns": [""]}, ("invalid_field_name", ("columns", 0))),
        (CsvOptions, {"columns": ["a\nb"]}, ("invalid_field_name", ("columns", 0))),
        (CsvOptions, {"columns": ["x" * 129]}, ("invalid_field_name", ("columns", 0))),
        (CsvOptions, {"labels": {"a": ""}}, ("invalid_label", ("labels", "a"))),
        (CsvOptions, {"labels": {"a": "x\u202ey"}}, ("invalid_label", ("labels", "a"))),
        (
            CsvOptions,
            {"sort": [{"field": "a", "direction": "up"}]},
            ("literal_error", ("sort", 0, "direction")),
        ),
        (
            CsvOptions,
            {"sort": [{"field": "a"}, {"field": "a", "direction": "desc"}]},
            ("duplicate_sort_key", ()),
        ),
        (CsvOptions, {"sort": [{"field": f"f{i}"} for i in range(4)]}, ("too_long", ("sort",))),
        (CsvOptions, {"filters": {"equals": {"a": [1]}}}, ("bool_type", ("filters", "equals", "a", "bool"))),
        (
            CsvOptions,
            {"filters": {"equals": {f"f{i}": 1 for i in range(21)}}},
            ("too_long", ("filters", "equals")),
        ),
        (
            CsvOptions,
            {"filters": {"created_from": "yesterday"}},
            ("datetime_from_date_parsing", ("filters", "created_from")),
        ),
        (
            CsvOptions,
            {"filters": {"created_from": "2026-02-01T00:00:00", "created_to": "2026-01-01T00:00:00"}},
            ("invalid_range", ()),
        ),
        (CsvOptions, {"time_zone": "Mars/Olympus"}, ("invalid_time_zone", ("time_zone",))),
        (CsvOptions, {"time_zone": "../../etc/passwd"}, ("invalid_time_zone", ("time_zone",))),
        (CsvOptions, {"time_zone": "/usr/share/zoneinfo/UTC"}, ("invalid_time_zone", ("time_zone",))),
        (CsvOptions, {"time_zone": "localtime"}, ("invalid_time_zone", ("time_zone",))),
        (CsvOptions, {"time_zone": 2}, ("string_type", ("time_zone",))),
        (CsvOptions, {"file_name": "../report.csv"}, ("invalid_file_name", ("file_name",))),
        (CsvOptions, {"file_name": "dir\\report.csv"}, ("invalid_file_name", ("file_name",))),
        (CsvOptions, {"file_name": "a\x00b"}, ("invalid_file_name", ("file_name",))),
        (CsvOptions, {"file_name": "line\nbreak"}, ("invalid_file_name", ("file_name",))),
        (CsvOptions, {"file_name": " .. "}, ("invalid_file_name", ("file_name",))),
        (CsvOptions, {"file_name": "é" * 100}, ("invalid_file_name", ("file_name",))),
        (PdfOptions, {"orientation": "sideways"}, ("literal_error", ("orientation",))),
        (PdfOptions, {"title": ""}, ("invalid_label", ("title",))),
    ],
)
def test_refused_with_a_stable_type(
    model: type[RecordOptions], options: dict[str, Any], expected: tuple[str, tuple[Any, ...]]
) -> None:
    assert error(model, options) == expected


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("report", "report"),
        ("  Q1 report.csv  ", "Q1 report.csv"),
        ('a<b>c:d"e|f?g*h;i%j$k`l', "a_b_c_d_e_f_g_h_i_j_k_l"),
        ("raport lunar – martie.xlsx", "raport lunar – martie.xlsx"),
        ("CON.csv", "_CON.csv"),
        ("nul", "_nul"),
        ("..hidden..", "hidden"),
        ("e\u0301te", "éte"),  # NFC: one code point per letter
    ],
)
def test_file_names_are_sanitised(given: str, kept: str) -> None:
    assert CsvOptions.model_validate({"file_name": given}).file_name == kept


@pytest.mark.parametrize(
    "name", ["UTC", "Europe/Paris", "America/Argentina/Buenos_Aires", "Etc/GMT+5", "Asia/Kolkata"]
)
def test_iana_zones_accepted(name: str) -> None:
    assert CsvOptions.model_validate({"time_zone": name}).time_zone == name
