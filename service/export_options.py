"""Options of the csv, xlsx and pdf record exports.

The API validates them (anything unknown or ill-typed is a 422) and the worker validates the
stored copy again; names are checked against the tool's fields when the job runs, since only
then is the tool at hand. Every error raised here has a stable pydantic error `type`
(`invalid_time_zone`, `invalid_file_name`, ...), so clients and tests can rely on it.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime, tzinfo
from functools import cache
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, available_timezones

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    model_validator,
)
from pydantic_core import PydanticCustomError

__all__ = [
    "BUILTIN_COLUMNS",
    "CsvOptions",
    "Filters",
    "PdfOptions",
    "RecordOptions",
    "SortKey",
    "XlsxOptions",
    "zone",
]

# Columns every record has besides its data fields.
BUILTIN_COLUMNS = ("record_id", "created_at")
MAX_COLUMNS = 200
MAX_FILTERS = 20
MAX_SORT_KEYS = 3
MAX_FILE_NAME_BYTES = 150
_ZONE_NAME = re.compile(r"[A-Za-z0-9_+-]+(?:/[A-Za-z0-9_+-]+)*")
# Characters Windows, shells or HTTP headers treat specially; replaced, not refused.
_UNSAFE_IN_NAME = re.compile(r'[<>:"|?*;%$`\'!&{}\[\]#^~]')
_RESERVED_NAMES = {
    "CON",
    "PRN",
    "AUX",
    "NUL",
    *(f"COM{i}" for i in range(1, 10)),
    *(f"LPT{i}" for i in range(1, 10)),
}


def _no_control(value: str) -> bool:
    return not any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in value)


def _field_name(value: str) -> str:
    if not 1 <= len(value) <= 128 or not _no_control(value):
        raise PydanticCustomError(
            "invalid_field_name", "field names are 1 to 128 characters without control characters"
        )
    return value


def _label(value: str) -> str:
    if not 1 <= len(value) <= 200 or not _no_control(value):
        raise PydanticCustomError("invalid_label", "1 to 200 characters without control characters expected")
    return value


@cache
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


def zone(name: str) -> tzinfo:
    """The time zone for a validated `time_zone` option."""
    return ZoneInfo(name)


def _time_zone(value: str) -> str:
    # The pattern first: ZoneInfo would also open files for names like "../x" or "localtime".
    if not _ZONE_NAME.fullmatch(value) or value == "localtime" or value not in _zones():
        raise PydanticCustomError(
            "invalid_time_zone",
            "unknown time zone '{name}': use an IANA name such as 'Europe/Paris' or 'UTC'",
            {"name": value[:64]},
        )
    return value


def _file_name(value: str) -> str:
    name = unicodedata.normalize("NFC", value).strip()
    if "/" in name or "\\" in name or not _no_control(name):
        raise PydanticCustomError(
            "invalid_file_name", "a file name without directories or control characters is expected"
        )
    name = _UNSAFE_IN_NAME.sub("_", name).strip(" .")
    if not name or len(name.encode()) > MAX_FILE_NAME_BYTES:
        raise PydanticCustomError(
            "invalid_file_name",
            "file names are 1 to {limit} bytes, not only dots or spaces",
            {"limit": MAX_FILE_NAME_BYTES},
        )
    if name.split(".")[0].upper() in _RESERVED_NAMES:
        name = "_" + name
    return name


FieldName = Annotated[StrictStr, AfterValidator(_field_name)]
Label = Annotated[StrictStr, AfterValidator(_label)]
# JSON scalars a field can be compared with; strict, so "1" and 1 and true stay apart.
Scalar = StrictBool | StrictInt | StrictFloat | StrictStr | None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SortKey(_Model):
    field: FieldName
    direction: Literal["asc", "desc"] = "asc"


class Filters(_Model):
    """Records kept: created_at in [created_from, created_to) and every `equals` field equal.

    A datetime without an offset is read in the export's time zone. `equals` compares JSON
    values (1 equals 1.0, "1" does not); null matches a missing field too.
    """

    created_from: datetime | None = None
    created_to: datetime | None = None
    equals: dict[FieldName, Scalar] = Field(default_factory=dict, max_length=MAX_FILTERS)


class RecordOptions(_Model):
    """Options shared by every record format."""

    columns: list[FieldName] | None = Field(default=None, min_length=1, max_length=MAX_COLUMNS)
    labels: dict[FieldName, Label] = Field(default_factory=dict, max_length=MAX_COLUMNS)
    filters: Filters = Field(default_factory=Filters)
    sort: list[SortKey] = Field(default_factory=list, max_length=MAX_SORT_KEYS)
    time_zone: Annotated[StrictStr, AfterValidator(_time_zone)] = "UTC"
    file_name: Annotated[StrictStr, AfterValidator(_file_name)] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> RecordOptions:
        if self.columns is not None and len(set(self.columns)) != len(self.columns):
            raise PydanticCustomError("duplicate_column", "a column is listed twice")
        if len({key.field for key in self.sort}) != len(self.sort):
            raise PydanticCustomError("duplicate_sort_key", "a field is sorted on twice")
        start, end = self.created_range()
        if start is not None and end is not None and start >= end:
            raise PydanticCustomError(
                "invalid_range", "filters.created_from must be before filters.created_to"
            )
        return self

    def created_range(self) -> tuple[datetime | None, datetime | None]:
        """The created_at filter as aware datetimes (naive ones are in the export's zone)."""
        tz = zone(self.time_zone)

        def aware(value: datetime | None) -> datetime | None:
            return value.replace(tzinfo=tz) if value is not None and value.tzinfo is None else value

        return aware(self.filters.created_from), aware(self.filters.created_to)


class CsvOptions(RecordOptions):
    bom: StrictBool = False  # a UTF-8 byte order mark, so that Excel detects the encoding
    # Text cells starting with = + - @ tab or CR get a leading ' (OWASP CSV injection).
    formula_guard: StrictBool = True


class XlsxOptions(RecordOptions):
    """No options of its own: text is always written as text, never as a formula."""


class PdfOptions(RecordOptions):
    title: Label | None = None  # default: the tool's name
    orientation: Literal["auto", "portrait", "landscape"] = "auto"
