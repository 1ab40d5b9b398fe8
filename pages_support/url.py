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
        memo = st.session_state.get(self._memo)
        self.from_outside = from_outside(self.params, None if memo is None else
                                         {k: v for k, v in memo.items() if v is not None}, self.fields)
        self._values: dict[str, Any] = {}

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

    def select_one(self, label: str, key: str, options: Sequence[Any], container: Any = st, **kwargs: Any) -> Any:
        """One value of ``options`` for the widget ``key``: restored from the address, a stale
        choice dropped (the first option is the default), a selectbox only when there is a choice
        (one option: that one; none: None). ``kwargs`` go to the selectbox (help, format_func)."""
        self.restore(key, options)
        if st.session_state.get(key) not in options:
            st.session_state.pop(key, None)
        if len(options) > 1:
            return container.selectbox(label, options, key=key, **kwargs)
        return options[0] if options else None

    def write(self, values: Mapping[str, Any]) -> None:
        """Put the widgets' values (``{widget key: value}``) into the address when they differ
        from it. A page may call this after each widget (it can stop early): the values of all
        calls of this run are written together; parameters of other fields stay."""
        self._values.update(values)
        written = encode_all(self.fields, self._values)
        managed = {f.param for f in self.fields if f.key in self._values}
        current = {k: v for k, v in st.query_params.to_dict().items() if k in managed}
        if {k: v for k, v in written.items() if k in managed} != current:
            for param in managed - set(written):
                if param in st.query_params:
                    del st.query_params[param]
            st.query_params.update(written)
        st.session_state[self._memo] = {**st.session_state.get(self._memo, {}), **written,
                                        **{p: None for p in managed - set(written)}}
