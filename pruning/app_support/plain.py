"""User text shown as plain text in Streamlit's Markdown elements.

Labels, model names, notes, dataset names and error messages that echo them are typed by users
(or imported from files), and most Streamlit text elements (``st.markdown``, ``st.caption``,
``st.info``/``st.error``, widget labels, radio options, progress text) render GitHub-flavoured
Markdown: ``![x](http://evil/x.png)`` in a job label would make every viewer's browser fetch an
outside URL. :func:`plain` makes any string render as exactly its own characters.
"""

from __future__ import annotations

import re
from typing import Any

# Markdown's inline and block markers, backslash-escaped (CommonMark allows it for any ASCII
# punctuation): emphasis * _ ~, code `, links and images ! [ ] ( ), headings #, tables |, LaTeX $,
# Streamlit directives and GFM autolinks : @ { } ^, and the backslash itself. "." "-" "+" stay
# readable ("pruning.sparsity: 1.2") and are escaped only where they start a list or a www. link.
_MARKERS = re.compile(r"([\\`*_{}\[\]()#!|~$:@^])")
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}  # as entities: no "<img" survives even as raw text
_LINE_BREAK = re.compile(r"\s*[\r\n]+\s*")
_LIST_START = re.compile(r"^(\s*)(\d{1,9})([.)])(?=\s|$)|^(\s*)([-+])(?=\s|$)")  # "1. x", "- x"
_WWW = re.compile(r"(www)\.", re.IGNORECASE)
#: Streamlit's renderer (react-markdown + remark-gfm) finds GFM autolink literals in the *text* after the
#: escapes are resolved (mdast-util-gfm-autolink-literal), so a backslash cannot stop ``http://``, ``www.``
#: or ``user@host`` from becoming a link there: a zero-width space inside each breaks the pattern and
#: shows nothing (issue 27: an escaped image's URL was still a clickable link)
ZWSP = "\u200b"
_SCHEME = re.compile(r"\\:(?=//)")
_AT = re.compile(r"\\@")


def plain(text: Any) -> str:
    """``text`` (any value; None -> "") escaped so that Markdown renders it verbatim: Markdown's
    markers backslash-escaped, ``& < >`` as HTML entities, line breaks folded into one space
    (a line break could start a heading, list or quote). No link, image, emphasis, HTML, LaTeX or
    Streamlit directive can be formed from the result; it is only for Markdown elements (use the
    raw text in dataframes, ``st.code``, ``st.text`` and selectbox options, which show text as is).
    """
    if text is None:
        return ""
    one_line = _LINE_BREAK.sub(" ", str(text)).strip()  # leading spaces could start a code block
    escaped = _MARKERS.sub(r"\\\1", one_line)
    escaped = _LIST_START.sub(lambda m: f"{m[1]}{m[2]}\\{m[3]}" if m[2] else f"{m[4]}\\{m[5]}", escaped)
    escaped = _WWW.sub(r"\1" + ZWSP + r"\\.", escaped)
    escaped = _SCHEME.sub(lambda m: "\\:" + ZWSP, escaped)
    escaped = _AT.sub(lambda m: "\\@" + ZWSP, escaped)
    return "".join(_ENTITIES.get(ch, ch) for ch in escaped)
