"""Reading untrusted JSON with errors that name the field path (answered as 422)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "PayloadError",
    "at",
    "opt_mapping_of_str",
    "opt_str",
    "opt_time",
    "req_list",
    "req_object",
    "req_str",
]

# Alertmanager and Go senders write "0001-01-01T00:00:00Z" for "no end time".
_GO_ZERO_TIME_YEAR = 1


class PayloadError(ValueError):
    """The body is valid JSON but not what this source sends. `path` names the field, e.g. `alerts[0].labels`."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path or 'body'}: {message}")
        self.path = path or "body"
        self.message = message


def at(path: str, key: str | int) -> str:
    """Join a field path: at("alerts", 0) -> "alerts[0]", at("alerts[0]", "labels") -> "alerts[0].labels"."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def req_object(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise PayloadError(path, f"expected an object, got {_kind(value)}")
    return value


def req_list(obj: Mapping[str, Any], key: str, path: str) -> Sequence[Any]:
    value = obj.get(key)
    if not isinstance(value, list):
        raise PayloadError(at(path, key), f"expected a list, got {_kind(value)}")
    return value


def req_str(obj: Mapping[str, Any], key: str, path: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise PayloadError(at(path, key), f"expected a non-empty string, got {_kind(value)}")
    return value


def opt_str(obj: Mapping[str, Any], key: str, path: str, default: str = "") -> str:
    """A string field that may be absent or null; numbers are accepted and written as text."""
    value = obj.get(key)
    if value is None:
        return default
    if isinstance(value, bool):
        raise PayloadError(at(path, key), f"expected a string, got {_kind(value)}")
    if isinstance(value, (int, float)):
        return str(value)
    if not isinstance(value, str):
        raise PayloadError(at(path, key), f"expected a string, got {_kind(value)}")
    return value


def opt_mapping_of_str(obj: Mapping[str, Any], key: str, path: str) -> dict[str, str]:
    """An object of string values (labels, annotations); scalars are written as text, nested values refused."""
    value = obj.get(key)
    if value is None:
        return {}
    mapping = req_object(value, at(path, key))
    out: dict[str, str] = {}
    for name, item in mapping.items():
        if isinstance(item, str):
            out[name] = item
        elif isinstance(item, (int, float)) and not isinstance(item, bool):
            out[name] = str(item)
        elif isinstance(item, bool):
            out[name] = "true" if item else "false"
        elif item is None:
            out[name] = ""
        else:
            raise PayloadError(at(at(path, key), name), f"expected a string, got {_kind(item)}")
    return out


def opt_time(obj: Mapping[str, Any], key: str, path: str) -> datetime | None:
    """An RFC 3339 time or Unix seconds; Go's zero time and absent values give None. Always timezone-aware."""
    value = obj.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise PayloadError(at(path, key), f"expected a time, got {_kind(value)}")
    if isinstance(value, (int, float)):
        try:
            return datetime.fromtimestamp(float(value), tz=UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise PayloadError(at(path, key), "Unix time out of range") from exc
    if not isinstance(value, str):
        raise PayloadError(at(path, key), f"expected an RFC 3339 time, got {_kind(value)}")
    text = value.strip()
    if text.isdigit():
        return opt_time({key: int(text)}, key, path)
    try:
        parsed = datetime.fromisoformat(_trim_fraction(text.replace("Z", "+00:00").replace("z", "+00:00")))
    except ValueError as exc:
        raise PayloadError(at(path, key), f"not an RFC 3339 time: {text[:40]!r}") from exc
    if parsed.year == _GO_ZERO_TIME_YEAR:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _trim_fraction(text: str) -> str:
    """Go writes nanoseconds (9 digits); Python reads at most 6."""
    dot = text.find(".")
    if dot < 0:
        return text
    end = dot + 1
    while end < len(text) and text[end].isdigit():
        end += 1
    digits = text[dot + 1 : end][:6]
    return text[: dot + 1] + digits + text[end:] if digits else text[:dot] + text[end:]


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__
