"""Shared field types and the base model of every request body.

* `RequestModel`: request bodies refuse, anywhere in them (nested lists and objects, keys
  included), a string holding NUL (PostgreSQL refuses U+0000 in text) or a lone surrogate (it
  cannot be encoded as UTF-8), and non-finite numbers (NaN, Infinity) — one validator for
  every field, so no field can forget it.
* `Int4`: an integer that fits a 32-bit INTEGER column (PostgreSQL int4); JSON's 3.0 counts
  as the integer 3, strings and booleans do not.
* `Flag`, `Real`: a JSON boolean or number, nothing coerced into one (0, "yes", "0.5").
* `UtcDateTime`: response timestamps. Rows hold naive UTC (SQLite returns naive values);
  answers carry the offset, as OpenAPI's `date-time` requires.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, TypeVar, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationInfo,
    field_validator,
)

INT4_MIN = -(2**31)
INT4_MAX = 2**31 - 1


def text_problem(value: str) -> str | None:
    """Why `value` cannot be stored as text, or None when it can."""
    if "\x00" in value:
        return "NUL characters (\\u0000) are not allowed"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "lone surrogates are not allowed (the text is not valid Unicode)"
    return None


_T = TypeVar("_T")


def check_input(value: _T) -> _T:
    """Refuse NUL, lone surrogates and non-finite numbers anywhere in a parsed JSON value."""
    pending: list[object] = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            problem = text_problem(item)
            if problem:
                raise ValueError(problem)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise ValueError("numbers must be finite (no NaN or Infinity)")
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
    return value


class RequestModel(BaseModel):
    """The base of every request body: see the module docstring."""

    model_config = ConfigDict(allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _storable(cls, value: object, info: ValidationInfo) -> object:
        check_input(value)
        # JSON Schema's "integer" includes 3.0; a strict int does not (done here: a validator
        # inside Int4 would hide its bounds from the OpenAPI document).
        field = cls.model_fields.get(info.field_name or "")
        if (
            isinstance(value, float)
            and value.is_integer()
            and field is not None
            and _takes_int(field.annotation)
        ):
            return int(value)
        return value


def _takes_int(annotation: object) -> bool:
    if annotation is int:
        return True
    return any(_takes_int(arg) for arg in get_args(annotation))


Int4 = Annotated[int, Strict(), Field(ge=INT4_MIN, le=INT4_MAX)]
Flag = Annotated[bool, Strict()]
# A JSON number: integers are welcome, strings ("0.5") and booleans are not.
Real = Annotated[float, Strict()]


def _as_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


UtcDateTime = Annotated[datetime, AfterValidator(_as_utc)]
