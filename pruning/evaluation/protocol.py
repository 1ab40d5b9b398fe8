"""Evaluation protocols: which numbers may be compared with which.

A perplexity is only comparable with another measured the same way (Frantar & Alistarh 2023 and
Sun et al. 2023 score WikiText-2 test in non-overlapping 2048-token windows, all of them). Here a
perplexity's protocol is (dataset, text digest, seqlen, windows scored of the windows there are,
tokens scored); values published in papers or the notes form one protocol per dataset, "as
published". A zero-shot accuracy's protocol is (task, limit, few-shot, harness version).

Views key every comparison by these (grid cells, ε curves, the compare page, the FINDINGS
tables): values of different protocols are never merged. A *budgeted* perplexity scored fewer
windows than its text holds (``evaluation.limit_windows``: a smoke run); it is shown only when its
protocol is chosen and is labelled as such.

Everything here is pure pandas; ``pruning.store.queries`` adds the columns these read.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

PUBLISHED = "as published"
#: columns of a perplexity row that identify its protocol (``text_digest`` may be missing)
PPL_PROTOCOL_COLUMNS = ("dataset", "text_digest", "seqlen", "n_windows", "total_windows", "n_tokens")
ZEROSHOT_PROTOCOL_COLUMNS = ("task", "limit", "num_fewshot", "harness_version")


def is_missing(value: Any) -> bool:
    """True for None, NaN, NaT and pandas NA (a value the store writes as null)."""
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _int(value: Any) -> int | None:
    return None if is_missing(value) else int(value)


def is_budgeted(n_windows: Any, total_windows: Any) -> bool:
    """True when fewer windows were scored than the text holds (a window budget was applied)."""
    n, total = _int(n_windows), _int(total_windows)
    return n is not None and total is not None and n < total


def ppl_protocol_key(dataset: Any, text_digest: Any, seqlen: Any, n_windows: Any, total_windows: Any,
                     n_tokens: Any) -> str:
    """Identity of a perplexity's protocol, e.g. ``wiki|0cc60813547efec8|2048|175/175|358225``;
    ``wikitext2|as published`` for values without a measured protocol (papers, the notes)."""
    ds = "" if is_missing(dataset) else str(dataset)
    if is_missing(seqlen) or is_missing(n_windows):
        return f"{ds}|{PUBLISHED}"
    digest = "" if is_missing(text_digest) else str(text_digest)
    return f"{ds}|{digest}|{int(seqlen)}|{int(n_windows)}/{_int(total_windows) or '?'}|{_int(n_tokens) or '?'}"


def ppl_protocol_label(dataset: Any, text_digest: Any, seqlen: Any, n_windows: Any, total_windows: Any,
                       n_tokens: Any) -> str:
    """Readable protocol: ``full: 175 × 2048 tokens (358,225 scored), text 0cc60813``,
    ``budgeted: 1 of 44,778 windows × 8 tokens, text 0cc60813`` or ``as published``."""
    if is_missing(seqlen) or is_missing(n_windows):
        return PUBLISHED
    n, total, tokens = int(n_windows), _int(total_windows), _int(n_tokens)
    text = "" if is_missing(text_digest) else f", text {str(text_digest)[:8]}"
    scored = f" ({tokens:,} scored)" if tokens is not None else ""
    if is_budgeted(n, total):
        return f"budgeted: {n:,} of {total:,} windows × {int(seqlen)} tokens{text}"
    return f"full: {n:,} × {int(seqlen)} tokens{scored}{text}"


def infer_text_digests(frame: pd.DataFrame) -> pd.Series:
    """``text_digest`` with missing digests filled where the rest of the protocol pins the text.

    Runs published before the text digest was recorded (some of the first SmolLM2 grid) carry none.
    A missing digest takes the one known digest of the rows that scored the same dataset with the
    same seqlen, windows and token count: another text tokenizing to exactly as many tokens is not
    a credible accident (the older wiki build scored 356,178 tokens, today's 358,225). Where the
    group holds no known digest, or several, it stays missing (its own protocol)."""
    digest = frame["text_digest"] if "text_digest" in frame.columns else pd.Series(None, index=frame.index, dtype=object)
    keys = [c for c in ("dataset", "seqlen", "n_windows", "total_windows", "n_tokens") if c in frame.columns]
    if not keys or digest.notna().all() or digest.isna().all():
        return digest
    group = pd.Series(["|".join(map(str, r)) for r in zip(*(frame[k] for k in keys))], index=frame.index)
    known = pd.DataFrame({"group": group, "digest": digest}).dropna().groupby("group")["digest"].unique()
    unique = {g: d[0] for g, d in known.items() if len(d) == 1}
    return digest.where(digest.notna(), group.map(unique))


def ppl_protocol_short(seqlen: Any, n_windows: Any, total_windows: Any) -> str:
    """A table-cell label: ``full 175×2048``, ``budgeted 1/44,778×8`` or ``as published``."""
    if is_missing(seqlen) or is_missing(n_windows):
        return PUBLISHED
    n, total = int(n_windows), _int(total_windows)
    if is_budgeted(n, total):
        return f"budgeted {n:,}/{total:,}×{int(seqlen)}"
    return f"full {n:,}×{int(seqlen)}"


def add_ppl_protocol(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (perplexity rows) with ``protocol``, ``protocol_label`` and ``budgeted`` columns
    (``text_digest`` completed by :func:`infer_text_digests`)."""
    out = frame.copy()
    if len(out):
        out["text_digest"] = infer_text_digests(out)
    cols = [out[c] if c in out.columns else pd.Series(None, index=out.index, dtype=object)
            for c in PPL_PROTOCOL_COLUMNS]
    rows = list(zip(*cols))
    out["protocol"] = [ppl_protocol_key(*r) for r in rows]
    out["protocol_label"] = [ppl_protocol_label(*r) for r in rows]
    out["budgeted"] = [is_budgeted(r[3], r[4]) for r in rows]
    return out


def ppl_protocol_options(cells: pd.DataFrame) -> list[str]:
    """Protocols of ``cells`` (rows carrying ``protocol``, ``budgeted``, ``kind``), the default
    first: the full (unbudgeted) protocol holding the most of the team's own values (the team's
    sweeps), else the published one; budgeted protocols last. Ties: most values, then key."""
    if cells.empty or "protocol" not in cells.columns:
        return []
    stats = cells.assign(own=(cells.get("kind", pd.Series("run", index=cells.index)) == "run").astype(int))
    summary = stats.groupby("protocol").agg(budgeted=("budgeted", "max"), own=("own", "sum"), n=("protocol", "size"))
    summary["rank"] = [(1 if b else 0) for b in summary["budgeted"]]
    summary = summary.reset_index().sort_values(["rank", "own", "n", "protocol"], ascending=[True, False, False, True])
    return summary["protocol"].tolist()


def zeroshot_protocol_key(task: Any, limit: Any, num_fewshot: Any, harness_version: Any) -> str:
    """Identity of a zero-shot score's protocol: ``boolq|limit=all|shots=0|harness=0.4.13``."""
    lim = "all" if is_missing(limit) else (f"{float(limit):g}")
    shots = "?" if is_missing(num_fewshot) else str(int(num_fewshot))
    harness = "?" if is_missing(harness_version) else str(harness_version)
    return f"{'' if is_missing(task) else task}|limit={lim}|shots={shots}|harness={harness}"


def zeroshot_protocol_label(limit: Any, num_fewshot: Any, harness_version: Any) -> str:
    """``0-shot, every example, lm-eval 0.4.13`` or ``0-shot, limit 20 (budgeted), lm-eval ?``."""
    shots = "?-shot" if is_missing(num_fewshot) else f"{int(num_fewshot)}-shot"
    lim = "every example" if is_missing(limit) else f"limit {float(limit):g} (budgeted)"
    harness = "lm-eval ?" if is_missing(harness_version) else f"lm-eval {harness_version}"
    return f"{shots}, {lim}, {harness}"


def add_zeroshot_protocol(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (zero-shot rows) with ``protocol`` (per task) and ``protocol_label`` (task-free:
    the settings a mean across tasks must share) columns."""
    out = frame.copy()
    get = {c: (out[c] if c in out.columns else pd.Series(None, index=out.index, dtype=object))
           for c in ZEROSHOT_PROTOCOL_COLUMNS}
    out["protocol"] = [zeroshot_protocol_key(*r) for r in zip(*(get[c] for c in ZEROSHOT_PROTOCOL_COLUMNS))]
    out["protocol_label"] = [zeroshot_protocol_label(*r) for r in zip(get["limit"], get["num_fewshot"],
                                                                         get["harness_version"])]
    return out
