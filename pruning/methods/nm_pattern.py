"""The one N:M parser: ``"2:4"`` <-> ``(2, 4)``, torch-free so that the config, the CLI and the
app's form read N:M the same way as the kernels (:func:`pruning.methods.nm.nm_mask`).

N:M semi-structured sparsity prunes N of every M consecutive input weights of each row
(Sun et al. 2023 ``--sparsity_type N:M``; Frantar & Alistarh 2023 ``prunen, prunem``), so it
needs ``0 < N < M``. Error messages name the reason and what is accepted but not the field or
the value: every caller prefixes its own ("pruning.nm: '4:2' is invalid: ...").
"""

from __future__ import annotations

import re

_NM_TEXT = re.compile(r"\s*(\d+)\s*:\s*(\d+)\s*")
ACCEPTED = "accepted: 'N:M' with 0 < N < M, e.g. '2:4' or '4:8'"


def looks_like_nm(text: str) -> bool:
    """True when ``text`` has the N:M form (two whole numbers around a colon), valid or not:
    YAML 1.1 would read ``2:4`` as the base-60 number 124, so such text must stay a string."""
    return _NM_TEXT.fullmatch(text) is not None


def parse_nm(nm: str | tuple[int, int] | list[int] | None) -> tuple[int, int] | None:
    """``"2:4"`` or ``(2, 4)`` -> ``(2, 4)``; ``None`` or blank text -> ``None`` (unstructured).

    Raises ValueError on a bad form or on ``not 0 < N < M``; the message says why and what is accepted.
    """
    if nm is None or (isinstance(nm, str) and not nm.strip()):
        return None
    if isinstance(nm, str):
        match = _NM_TEXT.fullmatch(nm)
        if match is None:
            raise ValueError(f"not of the form N:M; {ACCEPTED}")
        n, m = int(match.group(1)), int(match.group(2))
    else:
        try:
            n, m = (int(v) for v in nm)
        except (TypeError, ValueError):
            raise ValueError(f"not a pair (N, M) of whole numbers; {ACCEPTED}") from None
    if not 0 < n < m:
        raise ValueError(f"N={n}, M={m} breaks 0 < N < M; {ACCEPTED}")
    return n, m


def format_nm(nm: tuple[int, int] | None) -> str | None:
    """``(2, 4)`` -> ``"2:4"``; ``None`` -> ``None`` (the canonical text stored in configs)."""
    return None if nm is None else f"{nm[0]}:{nm[1]}"
