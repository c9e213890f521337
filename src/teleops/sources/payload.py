"""Reading untrusted JSON with errors that name the field path (answered as 422)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "MAX_DESCRIPTION_LENGTH",
    "MAX_NAME_LENGTH",
    "MAX_SUMMARY_LENGTH",
    "PayloadError",
    "at",
    "bounded_name",
    "clip",
    "opt_int",
    "opt_list",
    "opt_mapping_of_str",
    "opt_object",
    "opt_str",
    "opt_time",
    "req_int",
    "req_list",
    "req_object",
    "req_str",
]

# Identifiers (alert name, host, fingerprint, dedup key) are indexed columns of 255 characters.
MAX_NAME_LENGTH = 255
# Free text is clipped, not refused: a sender must not lose an alert because its output was long. The summary
# keeps as much as the description: chat messages trim it to fit (saying so and linking the incident page),
# and the incident page shows what is stored, so whatever is cut here is cut for everyone; the cut says so.
MAX_SUMMARY_LENGTH = 16_384
MAX_DESCRIPTION_LENGTH = 16_384

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


def req_str(obj: Mapping[str, Any], key: str, path: str, *, max_length: int | None = None) -> str:
    """A present, non-blank string; refused when longer than `max_length` or not storable text."""
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        what = "an empty string" if isinstance(value, str) else _kind(value)
        raise PayloadError(at(path, key), f"expected a non-empty string, got {what}")
    _check_text(value, at(path, key))
    if max_length is not None:
        bounded_name(value, at(path, key), max_length=max_length)
    return value


def opt_str(obj: Mapping[str, Any], key: str, path: str, default: str = "", *, max_length: int | None = None) -> str:
    """A string field that may be absent or null; numbers are accepted and written as text.

    Raises PayloadError for other types, for text a database cannot store (NUL, lone surrogates)
    and, when `max_length` is given, for longer values.
    """
    value = obj.get(key)
    if value is None:
        return default
    if isinstance(value, bool):
        raise PayloadError(at(path, key), f"expected a string, got {_kind(value)}")
    if isinstance(value, (int, float)):
        return str(value)
    if not isinstance(value, str):
        raise PayloadError(at(path, key), f"expected a string, got {_kind(value)}")
    _check_text(value, at(path, key))
    if max_length is not None:
        bounded_name(value, at(path, key), max_length=max_length)
    return value


def req_int(obj: Mapping[str, Any], key: str, path: str) -> int:
    """A present integer (booleans and fractions refused)."""
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise PayloadError(at(path, key), f"expected an integer, got {_kind(value)}")
    return value


def opt_int(obj: Mapping[str, Any], key: str, path: str) -> int | None:
    """An integer that may be absent or null."""
    if obj.get(key) is None:
        return None
    return req_int(obj, key, path)


def opt_object(obj: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any] | None:
    """An object that may be absent or null; any other type is refused."""
    value = obj.get(key)
    if value is None:
        return None
    return req_object(value, at(path, key))


def opt_list(obj: Mapping[str, Any], key: str, path: str) -> Sequence[Any]:
    """A list that may be absent or null (then empty); any other type is refused."""
    if obj.get(key) is None:
        return []
    return req_list(obj, key, path)


def bounded_name(value: str, path: str, *, max_length: int = MAX_NAME_LENGTH) -> str:
    """`value` unchanged when it fits an identifier column; else PayloadError naming `path`."""
    if len(value) > max_length:
        raise PayloadError(
            path,
            f"is {len(value)} characters long; TeleOps accepts at most {max_length} here, "
            "shorten it in the sender's configuration",
        )
    return value


def clip(text: str, max_length: int) -> str:
    """`text` cut to at most `max_length` characters; a cut says how much: "… 3,976 more characters not stored".

    When `max_length` is too small for that marker, the cut ends with a bare "…".
    """
    if len(text) <= max_length:
        return text
    marker = _cut_marker(len(text))  # the longest the marker can be: the count only shrinks as more is kept
    if len(marker) >= max_length:
        return text[: max(max_length - 1, 0)] + "…"
    kept = text[: max_length - len(marker)]
    return kept + _cut_marker(len(text) - len(kept))


def _cut_marker(cut: int) -> str:
    return f"… {cut:,} more character{'s' if cut != 1 else ''} not stored"


def opt_mapping_of_str(obj: Mapping[str, Any], key: str, path: str) -> dict[str, str]:
    """An object of string values (labels, annotations); scalars are written as text, nested values refused."""
    value = obj.get(key)
    if value is None:
        return {}
    mapping = req_object(value, at(path, key))
    out: dict[str, str] = {}
    for name, item in mapping.items():
        _check_text(name, at(path, key))
        if isinstance(item, str):
            out[name] = _check_text(item, at(at(path, key), name))
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
    if text.isascii() and text.isdigit():  # "²".isdigit() is true too, and int() refuses it
        return opt_time({key: int(text)}, key, path)
    try:
        parsed = datetime.fromisoformat(_trim_fraction(text.replace("Z", "+00:00").replace("z", "+00:00")))
    except ValueError as exc:
        raise PayloadError(at(path, key), f"not an RFC 3339 time: {text[:40]!r}") from exc
    if parsed.year == _GO_ZERO_TIME_YEAR:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError as exc:  # 9999-12-31T23:00:00-05:00 is past datetime.max in UTC
        raise PayloadError(at(path, key), f"time out of range: {text[:40]!r}") from exc


def _check_text(text: str, path: str) -> str:
    """Refuse what JSON allows but databases cannot store: NUL characters and lone surrogates."""
    if "\x00" in text:
        raise PayloadError(path, "contains a NUL character, which TeleOps cannot store; remove it")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PayloadError(path, "contains an unpaired UTF-16 surrogate (\\ud800-\\udfff); send valid text") from exc
    return text


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
