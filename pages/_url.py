"""A page's view in its address, the Streamlit side of ``pruning.app_support.urlstate``.

Each page declares its fields once, calls :meth:`PageAddress.restore` before drawing each widget
(the address wins when it changed from outside: a fresh load or a pasted link) and
:meth:`PageAddress.write` after the last one (the widgets win otherwise). Parameters of other
pages (and the sidebar's) are left as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import streamlit as st

from pruning.app_support.urlstate import Field, decode, encode_all, from_outside, offered


class PageAddress:
    """The address parameters of one page (``fields``); ``name`` keys what it wrote last."""

    def __init__(self, name: str, fields: Sequence[Field]) -> None:
        self.fields = list(fields)
        self._by_key = {f.key: f for f in self.fields}
        self._memo = f"_url_{name}"
        self.params = st.query_params.to_dict()
        self.from_outside = from_outside(self.params, st.session_state.get(self._memo), self.fields)

    def restore(self, key: str, options: Iterable[Any] | None = None) -> None:
        """Before the widget ``key`` is drawn: take the address's value when the address changed
        from outside and the page offers it (``options``: None accepts any value; a list-valued
        field keeps the offered values only); ignore it otherwise."""
        found, value = decode(self._by_key[key], self.params)
        if not (self.from_outside and found):
            return
        if options is None:
            st.session_state[key] = value
            return
        choices = list(options)
        if isinstance(value, list):
            kept = []
            for item in value:
                try:
                    kept.append(offered(item, choices))
                except KeyError:
                    pass
            st.session_state[key] = kept
            return
        try:
            st.session_state[key] = offered(value, choices)
        except KeyError:
            pass

    def write(self, values: Mapping[str, Any]) -> None:
        """Put the widgets' values (``{widget key: value}``) into the address when they differ
        from it; other parameters stay."""
        written = encode_all(self.fields, values)
        mine = {f.param for f in self.fields}
        current = {k: v for k, v in self.params.items() if k in mine}
        if written != current:
            for param in mine - set(written):
                if param in st.query_params:
                    del st.query_params[param]
            st.query_params.update(written)
        st.session_state[self._memo] = written
