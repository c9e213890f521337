"""Duration settings: a config key written like `30s`, `10m`, `2h` or `7d`, parsed once when the config loads.

A field declared `DurationSetting` accepts exactly what a `str` field did before (a string; a number is refused
with pydantic's "Input should be a valid string"), turns it into a `teleops.domain.duration.Duration` (a bad text
fails the load with "Value error, 'x' is not a duration; write it like 30s, 10m, 2h or 7d"), and dumps back the
text as written, in both `model_dump()` and `model_dump(mode="json")`. Its JSON schema is a plain string.
Defaults are written as text too, `Field("5m", validate_default=True)`, and validated like a configured value: a JSON
schema (and the OpenAPI page, for API bodies) shows the default as "5m", which a `Duration` default could not give.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from teleops.domain.duration import Duration, parse_duration

__all__ = ["Duration", "DurationSetting", "parse_duration"]


def _from_text(value: Any, as_text: core_schema.ValidatorFunctionWrapHandler) -> Duration:
    if isinstance(value, Duration):  # settings built in code from parsed values
        return value
    return Duration(as_text(value))  # the str check first, so a number gets the same error as before


class _DurationSchema:
    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_wrap_validator_function(
            _from_text,
            core_schema.str_schema(),
            serialization=core_schema.plain_serializer_function_ser_schema(
                str, return_schema=core_schema.str_schema(), when_used="always"
            ),
        )


DurationSetting = Annotated[Duration, _DurationSchema]
