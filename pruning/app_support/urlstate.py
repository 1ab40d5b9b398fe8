"""A page's view in its address: widget values <-> query parameters (pure; the pages call it).

A link pasted into a fresh browser must open the same view, so every widget that shapes a view
writes its value into ``st.query_params`` as it changes, and a page opened with parameters starts
from them. Values are text in the address; each field has a codec that turns it back into the
widget's value, and a value the page does not offer (a stale or hand-edited link) is ignored, never
an error.

Which side wins: the address when it changed from outside (a fresh load, a pasted or edited link),
the widgets otherwise. :func:`from_outside` tells the two apart by comparing the address with
what the page wrote last.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ALL = "all"  # the address of "every value" / None (e.g. the ε filter's "best of all")


@dataclass(frozen=True)
class Field:
    """One widget in the address: parameter name, widget key, text <-> value codec."""

    param: str
    key: str
    encode: Callable[[Any], str]
    decode: Callable[[str], Any]


def _float_or_all(text: str) -> float | None:
    if text == ALL:
        return None
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


def _encode_float_or_all(value: Any) -> str:
    return ALL if value is None else f"{float(value):g}"


def _cell(text: str) -> tuple[str, str]:
    row, sep, column = text.partition("/")
    if not sep:
        raise ValueError(f"{text!r} is not 'row/column'")
    return row, column


def text_field(param: str, key: str) -> Field:
    return Field(param, key, str, str)


def number_field(param: str, key: str) -> Field:
    """A float (or None, written ``all``)."""
    return Field(param, key, _encode_float_or_all, _float_or_all)


def _flag(text: str) -> bool:
    if text not in ("0", "1"):
        raise ValueError(f"{text!r} is not 0 or 1")
    return text == "1"


def flag_field(param: str, key: str) -> Field:
    """A toggle, written ``1`` (on) or ``0`` (off)."""
    return Field(param, key, lambda on: "1" if on else "0", _flag)


def list_field(param: str, key: str) -> Field:
    """A multiselect's values (text), written comma-separated; an empty selection is left out."""
    return Field(param, key, lambda values: ",".join(str(v) for v in values) or None, _list)


def _list(text: str) -> list[str]:
    values = [v for v in text.split(",") if v]
    if not values:
        raise ValueError("empty list")
    return values


def cell_field(param: str, key: str) -> Field:
    """A (row, column) pair, written ``row/column``."""
    return Field(param, key, lambda rc: f"{rc[0]}/{rc[1]}", _cell)


def decode(field: Field, params: Mapping[str, str]) -> tuple[bool, Any]:
    """(True, value) when the address holds a readable value for ``field``, else (False, None)."""
    text = params.get(field.param)
    if text is None:
        return False, None
    try:
        return True, field.decode(str(text))
    except (TypeError, ValueError):
        return False, None


def offered(value: Any, options: Sequence[Any]) -> Any:
    """``value`` as it appears among ``options`` (floats matched within 1e-9), or a KeyError."""
    for option in options:
        if option == value:
            return option
        if isinstance(option, float) and isinstance(value, float) and abs(option - value) < 1e-9:
            return option
    raise KeyError(value)


def encode_all(fields: Sequence[Field], values: Mapping[str, Any]) -> dict[str, str]:
    """{param: text} of the widgets' current values (keys of ``values`` are widget keys; missing
    or unset widgets are left out of the address)."""
    out = {}
    for field in fields:
        if field.key in values and values[field.key] is not None:
            text = field.encode(values[field.key])
            if text is not None:
                out[field.param] = text
        elif field.key in values and field.encode is _encode_float_or_all:
            out[field.param] = ALL
    return out


def from_outside(params: Mapping[str, str], last_written: Mapping[str, str] | None, fields: Sequence[Field]) -> bool:
    """True when the page's parameters in the address differ from what the page wrote last (or
    it wrote nothing yet): a fresh load or a pasted / edited link, whose values should win."""
    mine = {f.param for f in fields}
    current = {k: str(v) for k, v in params.items() if k in mine}
    return last_written is None or current != dict(last_written)
