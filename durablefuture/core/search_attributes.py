"""Search attributes (typed, indexed values a run can be found by) and memos (unindexed notes).

A search attribute has one of seven types, inferred from the Python value given:

===============  ==========================================  ===========================
type             Python value                                stored as (JSON)
===============  ==========================================  ===========================
``keyword``      ``str``                                     the string (matched whole)
``text``         ``df.Text("...")``                          the string (matched by words)
``int``          ``int`` (64-bit)                            the number
``float``        ``float`` (finite)                          the number
``bool``         ``bool``                                    true / false
``datetime``     ``datetime`` (naive means UTC)              ISO 8601 string, UTC
``keyword_list`` ``list`` / ``tuple`` of ``str``             a list of strings
===============  ==========================================  ===========================

``None`` in an upsert removes the attribute. Names are identifiers (letters, digits, ``_``, at
most 64, not a built-in field such as ``WorkflowId``). Sizes are bounded: at most 64 attributes
per run, 2,048 characters per string, 100 items per list, 32 KiB in all; a memo at most 64 keys
and 32 KiB. Values arriving from the wire are checked the same way (:func:`check_wire`).
Search attributes and memos are stored in the clear (they are indexed): keep secrets out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime

from attrs import field, frozen

from durablefuture.core.errors import InvalidArgumentError
from durablefuture.core.query import BUILTIN_FIELDS, FieldValue, Text, parse_datetime
from durablefuture.core.types import JsonValue

__all__ = [
    "MAX_ATTRIBUTES",
    "SEARCH_ATTRIBUTE_TYPES",
    "SearchAttribute",
    "SearchAttributes",
    "Text",
    "apply_upsert",
    "check_memo",
    "check_wire",
    "row_values",
    "search_attribute",
    "search_attributes",
]

SEARCH_ATTRIBUTE_TYPES = ("keyword", "text", "int", "float", "bool", "datetime", "keyword_list")
MAX_ATTRIBUTES = 64
MAX_STRING = 2048
MAX_LIST = 100
MAX_TOTAL = 32 * 1024
MAX_MEMO_KEYS = 64
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
_INT64 = 2**63


def _type(value: str) -> str:
    if value not in SEARCH_ATTRIBUTE_TYPES:
        raise InvalidArgumentError(
            f"search attribute type {value!r:.40} is not one of {', '.join(SEARCH_ATTRIBUTE_TYPES)}"
        )
    return value


@frozen
class SearchAttribute:
    """One typed value; ``value`` None (in an upsert) removes the attribute."""

    type: str = field(converter=_type)
    value: JsonValue = None


SearchAttributes = dict[str, SearchAttribute]


def _name(name: object, what: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidArgumentError(
            f"{what} name {name!r:.80} is not valid: use letters, digits and _ (at most 64, "
            "not starting with a digit)"
        )
    if name in BUILTIN_FIELDS:
        raise InvalidArgumentError(f"{what} name {name!r} is a built-in field; choose another name")
    return name


def _string(s: object, where: str) -> str:
    if not isinstance(s, str):
        raise InvalidArgumentError(f"search attribute {where}: expected a string, got {s!r:.80}")
    if len(s) > MAX_STRING:
        raise InvalidArgumentError(
            f"search attribute {where}: {len(s)} characters, more than {MAX_STRING}"
        )
    return s


def search_attribute(name: str, value: object) -> SearchAttribute:
    """``value`` as a typed attribute (the type inferred as in the module's table).

    Raises:
        InvalidArgumentError: the value has no search attribute type, or is too large.
    """
    if isinstance(value, SearchAttribute):
        return check_wire({name: value})[name]
    if value is None:
        return SearchAttribute("keyword", None)
    if isinstance(value, bool):
        return SearchAttribute("bool", value)
    if isinstance(value, int):
        if not -_INT64 <= value < _INT64:
            raise InvalidArgumentError(f"search attribute {name!r}: {value} is not a 64-bit int")
        return SearchAttribute("int", value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidArgumentError(f"search attribute {name!r}: {value} is not finite")
        return SearchAttribute("float", value)
    if isinstance(value, datetime):
        when = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return SearchAttribute("datetime", when.isoformat())
    if isinstance(value, Text):
        return SearchAttribute("text", _string(str(value), repr(name)))
    if isinstance(value, str):
        return SearchAttribute("keyword", _string(value, repr(name)))
    if isinstance(value, list | tuple):
        if len(value) > MAX_LIST:
            raise InvalidArgumentError(
                f"search attribute {name!r}: {len(value)} items, more than {MAX_LIST}"
            )
        return SearchAttribute("keyword_list", [_string(v, repr(name)) for v in value])
    raise InvalidArgumentError(
        f"search attribute {name!r}: a {type(value).__name__} has no search attribute type; "
        "use str, df.Text, int, float, bool, datetime or a list of str"
    )


def _size(attrs: Mapping[str, SearchAttribute]) -> int:
    total = 0
    for name, a in attrs.items():
        v = a.value
        if isinstance(v, list):
            total += len(name) + sum(len(str(x)) + 3 for x in v)
        else:
            total += len(name) + len(str(v))
    return total


def _bounded(attrs: SearchAttributes) -> SearchAttributes:
    if len(attrs) > MAX_ATTRIBUTES:
        raise InvalidArgumentError(
            f"{len(attrs)} search attributes, more than {MAX_ATTRIBUTES} per run"
        )
    if _size(attrs) > MAX_TOTAL:
        raise InvalidArgumentError(
            f"search attributes take {_size(attrs)} bytes, more than {MAX_TOTAL}; keep large "
            "values in the memo or in the workflow's arguments"
        )
    return attrs


def search_attributes(values: object, *, upsert: bool = False) -> SearchAttributes:
    """``values`` (name -> Python value) as typed attributes, checked (None removes a name
    in an upsert, and is refused at start)."""
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise InvalidArgumentError(
            f"search_attributes must be a dict of name -> value, got {type(values).__name__}"
        )
    out = {_name(k, "search attribute"): search_attribute(k, v) for k, v in values.items()}
    if not upsert:
        out = {k: a for k, a in out.items() if a.value is not None}
    return _bounded(out)


def check_wire(attrs: object) -> SearchAttributes:
    """Attributes that came from the wire, checked like the ones a user passes."""
    if not isinstance(attrs, dict):
        raise InvalidArgumentError("search attributes are not a map")
    for name, a in attrs.items():
        _name(name, "search attribute")
        if not isinstance(a, SearchAttribute):
            raise InvalidArgumentError(f"search attribute {name!r}: not a typed value")
        v = a.value
        if v is None:
            continue
        ok = {
            "keyword": isinstance(v, str) and len(v) <= MAX_STRING,
            "text": isinstance(v, str) and len(v) <= MAX_STRING,
            "int": isinstance(v, int) and not isinstance(v, bool) and -_INT64 <= v < _INT64,
            "float": isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v),
            "bool": isinstance(v, bool),
            "datetime": isinstance(v, str) and parse_datetime(v) is not None,
            "keyword_list": isinstance(v, list)
            and len(v) <= MAX_LIST
            and all(isinstance(x, str) and len(x) <= MAX_STRING for x in v),
        }[a.type]
        if not ok:
            raise InvalidArgumentError(
                f"search attribute {name!r}: {v!r:.80} is not a valid {a.type} value"
            )
    return _bounded(attrs)


def apply_upsert(current: SearchAttributes, upsert: SearchAttributes) -> SearchAttributes:
    """``current`` with ``upsert`` applied (a None value removes the name)."""
    out = dict(current)
    for name, a in upsert.items():
        if a.value is None:
            out.pop(name, None)
        else:
            out[name] = a
    return out


def check_memo(memo: object) -> dict[str, JsonValue]:
    """A memo (name -> value), bounded in keys and size."""
    if memo is None:
        return {}
    if not isinstance(memo, Mapping):
        raise InvalidArgumentError(
            f"memo must be a dict of name -> value, got {type(memo).__name__}"
        )
    if len(memo) > MAX_MEMO_KEYS:
        raise InvalidArgumentError(f"memo has {len(memo)} keys, more than {MAX_MEMO_KEYS}")
    for k in memo:
        if not isinstance(k, str) or not k or len(k) > 256:
            raise InvalidArgumentError(f"memo key {k!r:.80} must be a string of 1 to 256 chars")
    size = len(repr(memo))
    if size > MAX_TOTAL:
        raise InvalidArgumentError(
            f"memo takes about {size} bytes, more than {MAX_TOTAL}; keep large values in the "
            "workflow's arguments"
        )
    return dict(memo)


def row_values(attrs: Mapping[str, SearchAttribute]) -> dict[str, FieldValue]:
    """The attributes as the query evaluator reads them."""
    out: dict[str, FieldValue] = {}
    for name, a in attrs.items():
        v = a.value
        if v is None:
            continue
        if a.type == "datetime" and isinstance(v, str):
            out[name] = parse_datetime(v)
        elif a.type == "text" and isinstance(v, str):
            out[name] = Text(v)
        elif a.type == "keyword_list" and isinstance(v, list):
            out[name] = tuple(str(x) for x in v)
        elif a.type == "float" and isinstance(v, int | float) and not isinstance(v, bool):
            out[name] = float(v)
        elif isinstance(v, str | int | float | bool):
            out[name] = v
    return out
