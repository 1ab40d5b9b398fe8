"""The Study page's tables, without Streamlit: one (model, method, sparsity) cell of the allocation
study (issue 16, :mod:`pruning.study`) with every family side by side in human names, the verdict in
words, the validation candidates behind each family's knobs, and each family's allocation per block.

Inputs are the frames of :func:`pruning.study.study_runs` / :func:`pruning.study.summarize` /
:func:`pruning.study.verdicts` and a model's choices file (``docs/study/choices-MODEL.json``), so the
page shows exactly the numbers ``scripts/allocation_study.py table`` prints.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import pandas as pd

from pruning.app_support.plots import sparsity_per_block
from pruning.study.protocol import FAMILIES, FAMILY_BY_NAME, OURS, UNCHOSEN, ZEROSHOT_TASK
from pruning.study.results import format_mean_std, format_value

#: the families in the words of a review meeting (the paper or source each one comes from)
FAMILY_NAMES: dict[str, str] = {
    "dense": "dense (unpruned)",
    "uniform": "uniform",
    "owl": "OWL (outlier ratio)",
    "alpha_peak": "AlphaPruning (weight α_peak)",
    "dlp": "DLP (block unimportance)",
    "depth": "ATP (rising with depth)",
    "hessian_alpha": "the notes' Hessian α",
    OURS: "★ ours",
}
#: ours' variants by their settings (pruning.study.protocol.FAMILIES: the three variants of ``ours``)
OURS_VARIANTS: dict[tuple[str, str | None], str] = {
    ("split", None): "Hessian α per sub-block",
    ("all", "alpha_peak"): "Hessian α + weight α_peak",
    ("all", "depth"): "Hessian α + depth",
}
#: what each family's allocation score per block is, for the metric chart's panel titles
SCORE_NAMES: dict[str, str] = {
    "owl": "outlier ratio (higher: denser)",
    "alpha_peak": "weight α_peak (higher: sparser)",
    "dlp": "unimportance (higher: sparser)",
    "depth": "block index (later: sparser)",
    "hessian_alpha": "Hessian α (higher: sparser)",
    OURS: "mixed score, min-max normalised (higher: sparser)",
}
#: the table's value columns: (summary column prefix, header)
VALUE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("wiki", "wiki test ppl"), ("lee", "lee ppl"), (ZEROSHOT_TASK, "wiki_cloze acc"),
)


class Cell(NamedTuple):
    """One cell of the study: a model, a pruning method and a mean sparsity."""

    model: str
    method: str
    sparsity: float

    def text(self) -> str:
        return f"{self.model} · {self.method} · {self.sparsity:.0%}"


def family_name(family: str, knobs: str = "") -> str:
    """The family in human words; ``ours`` names its variant from its knobs (``preset=all, metric=
    hessian_alpha, metric_mix=depth, epsilon=0.2`` is "★ ours: Hessian α + depth")."""
    base = family.removesuffix(UNCHOSEN)
    name = FAMILY_NAMES.get(base, FAMILY_BY_NAME[base].label if base in FAMILY_BY_NAME else base)
    if base == OURS and knobs:
        settings = dict(part.split("=", 1) for part in knobs.split(", ") if "=" in part)
        variant = OURS_VARIANTS.get((settings.get("preset", ""), settings.get("metric_mix")))
        if variant:
            name = f"{name}: {variant}"
    return name + (" (not chosen on validation)" if family.endswith(UNCHOSEN) else "")


#: the study's knob names in the notation of the papers (pruning.study.knob_text writes the config's names)
KNOB_SYMBOLS: dict[str, str] = {"owl_threshold_m": "M", "owl_lambda": "λ", "dlp_alpha": "α", "depth_beta": "β",
                                "epsilon": "ε"}


def short_knobs(knobs: str) -> str:
    """The knobs a family's name does not already say, in the papers' symbols:
    ``preset=all, metric=hessian_alpha, metric_mix=depth, epsilon=0.2`` → ``ε 0.2``;
    ``owl_threshold_m=5, owl_lambda=0.12`` → ``M 5, λ 0.12``."""
    parts = [part.split("=", 1) for part in knobs.split(", ") if "=" in part]
    kept = [f"{KNOB_SYMBOLS[k]} {v}" for k, v in parts if k in KNOB_SYMBOLS]
    return ", ".join(kept) or knobs


def study_cells(summary: pd.DataFrame) -> list[Cell]:
    """The (model, method, sparsity) cells with at least one pruned family, in table order."""
    if summary.empty:
        return []
    pruned = summary[summary["family"] != "dense"]
    cells = pruned[["model", "method", "sparsity"]].drop_duplicates()
    return [Cell(r.model, r.method, float(r.sparsity)) for r in cells.itertuples()]


def default_cell(cells: list[Cell], runs: pd.DataFrame, model: str | None = None) -> Cell:
    """The cell a fresh page opens on: of ``model`` when it has cells, the one with the most succeeded
    final runs of ours (the cells where a verdict exists come first), then the most final runs."""
    pool = [c for c in cells if c.model == model] or cells
    ok = runs[(runs["status"] == "succeeded") & (runs["phase"] == "final")] if not runs.empty else runs

    def weight(c: Cell) -> tuple[int, int]:
        if ok.empty:
            return 0, 0
        here = ok[(ok["model"] == c.model) & (ok["method"] == c.method)
                  & (ok["sparsity"].astype(float).round(6) == round(c.sparsity, 6))]
        return int((here["family"] == OURS).sum()), len(here)

    return max(pool, key=weight)


def mean_pm(mean: float, std: float, key: str = "wiki") -> str:
    """"316.24 ± 6.28" (± left out for one seed); "" without a mean (:func:`pruning.study.results.format_mean_std`)."""
    return format_mean_std((mean, std), key) if format_value(mean, key) else ""


def cell_table(summary: pd.DataFrame, cell: Cell) -> pd.DataFrame:
    """The families of ``cell`` (validation's choices only; the dense run first): columns family
    (the key), allocation (human name), knobs, wiki test ppl / lee ppl / wiki_cloze acc (mean ± std),
    seeds (n of the wiki test), vs uniform (the change of the wiki test mean against uniform's) and
    wiki test, lee-calibrated (one seed). Sorted in :data:`pruning.study.protocol.FAMILIES` order."""
    rows = summary[(summary["model"] == cell.model) & (summary["method"] == cell.method)
                   & (summary["sparsity"].astype(float).round(6) == round(cell.sparsity, 6))
                   & ~summary["family"].str.contains(UNCHOSEN, regex=False)]
    dense = summary[(summary["model"] == cell.model) & (summary["family"] == "dense")]
    uniform = rows[rows["family"] == "uniform"]["wiki_mean"]
    base = float(uniform.iloc[0]) if len(uniform) else float("nan")
    out = []
    for r in pd.concat([dense.head(1), rows]).itertuples():
        knobs = "" if r.family in ("dense", "uniform") else str(getattr(r, "knobs", "") or "")
        row: dict[str, Any] = {"family": r.family, "allocation": family_name(r.family, knobs),
                               "knobs": short_knobs(knobs), "settings": knobs}
        for key, header in VALUE_COLUMNS:
            row[header] = mean_pm(getattr(r, f"{key}_mean"), getattr(r, f"{key}_std"), key)
        row["seeds"] = int(r.wiki_n)
        change = (r.wiki_mean - base) / base if base == base and r.family not in ("dense", "uniform") else float("nan")
        row["vs uniform"] = "" if math.isnan(change) else f"{change:+.1%}"
        row["wiki test ppl, lee-calibrated"] = format_value(r.lee_calibrated_wiki, "wiki")
        out.append(row)
    return pd.DataFrame(out, columns=["family", "allocation", "knobs", *(h for _, h in VALUE_COLUMNS), "seeds",
                                      "vs uniform", "wiki test ppl, lee-calibrated", "settings"])


def best_rows(summary: pd.DataFrame, cell: Cell) -> dict[str, str]:
    """{table header: family} of the best pruned family per value column of :func:`cell_table` (lowest
    perplexity, highest accuracy, by the mean; validation's choices only)."""
    rows = summary[(summary["model"] == cell.model) & (summary["method"] == cell.method)
                   & (summary["sparsity"].astype(float).round(6) == round(cell.sparsity, 6))
                   & ~summary["family"].str.contains(UNCHOSEN, regex=False) & (summary["family"] != "dense")]
    out = {}
    for key, header in VALUE_COLUMNS:
        values = rows.set_index("family")[f"{key}_mean"].dropna()
        if not values.empty:
            out[header] = str(values.idxmax() if key == ZEROSHOT_TASK else values.idxmin())
    domain = rows.set_index("family")["lee_calibrated_wiki"].dropna()
    if not domain.empty:
        out["wiki test ppl, lee-calibrated"] = str(domain.idxmin())
    return out


def unchosen_table(summary: pd.DataFrame, cell: Cell) -> pd.DataFrame:
    """Final runs of knobs that validation did not choose in the end (never compared): allocation,
    knobs, wiki test ppl, seeds."""
    rows = summary[(summary["model"] == cell.model) & (summary["method"] == cell.method)
                   & (summary["sparsity"].astype(float).round(6) == round(cell.sparsity, 6))
                   & summary["family"].str.contains(UNCHOSEN, regex=False)]
    return pd.DataFrame([{"allocation": family_name(r.family, r.knobs), "knobs": r.knobs,
                          "wiki test ppl": mean_pm(r.wiki_mean, r.wiki_std), "seeds": int(r.wiki_n)}
                         for r in rows.itertuples()], columns=["allocation", "knobs", "wiki test ppl", "seeds"])


def verdict_text(verdict: pd.DataFrame, cell: Cell, metric: str) -> tuple[str, str]:
    """(kind, sentence) of the verdict of ``cell`` on ``metric`` ("wiki" or "lee"): kind is ``win``,
    ``loss``, ``undecided`` or ``none``. A win only where ours' mean beats every other family's by
    more than the seed spread (:func:`pruning.study.beats_by_spread`)."""
    text_name = {"wiki": "wiki test", "lee": "lee"}.get(metric, metric)
    if verdict.empty:
        return "none", f"{text_name}: no verdict (no final runs of ours)"
    rows = verdict[(verdict["model"] == cell.model) & (verdict["method"] == cell.method)
                   & (verdict["sparsity"].astype(float).round(6) == round(cell.sparsity, 6))
                   & (verdict["metric"] == metric)]
    if rows.empty or rows.iloc[0]["verdict"] == "no data":
        return "none", f"{text_name}: no verdict (ours has no final runs in this cell)"
    r = rows.iloc[0]
    rival = family_name(str(r["rival"]))
    spread = "" if math.isnan(r["spread"]) else f", seed spread {r['spread']:.2f}"
    facts = (f"ours {r['ours']} against the closest rival, {rival}, {r['rival_value']} "
             f"(margin {r['margin']:+.2f}{spread})")
    verdict_word = str(r["verdict"])
    if verdict_word.startswith("yes"):
        kind, lead = "win", "ours beats every rival beyond the seed spread"
    elif verdict_word.startswith("undecided"):
        kind, lead = "undecided", "undecided: one seed, no spread to beat"
    else:
        kind = "loss"
        lead = ("ours is ahead on the means but not beyond the seed spread" if bool(r["ahead_on_means"])
                else "ours does not beat every rival")
    missing = verdict_word[verdict_word.index("("):] if "rivals)" in verdict_word else ""
    return kind, f"{text_name}: {lead}{' ' + missing if missing else ''} — {facts}"


def validation_candidates(choices: dict[str, Any] | None, cell: Cell) -> pd.DataFrame:
    """The validation candidates of ``cell`` from a choices file: family (key), allocation, knobs,
    wiki:validation ppl, chosen (bool), status, run_id; empty without a choices file for its model."""
    columns = ["family", "allocation", "knobs", "wiki:validation ppl", "chosen", "status", "run_id"]
    if not choices or choices.get("model") != cell.model:
        return pd.DataFrame(columns=columns)
    out = []
    for c in choices.get("cells", []):
        if c["method"] != cell.method or not math.isclose(float(c["sparsity"]), cell.sparsity):
            continue
        chosen_id = (c.get("chosen") or {}).get("run_id")
        for cand in c.get("candidates", []):
            knobs = _candidate_knobs(c["family"], cand)
            out.append({"family": c["family"], "allocation": family_name(c["family"], knobs), "knobs": short_knobs(knobs),
                        "wiki:validation ppl": cand.get("validation_ppl"), "chosen": cand["run_id"] == chosen_id,
                        "status": cand.get("status", ""), "run_id": cand["run_id"]})
    return pd.DataFrame(out, columns=columns)


def _candidate_knobs(family: str, cand: dict[str, Any]) -> str:
    """A candidate's variant and knobs in the words of :func:`pruning.study.knob_text`."""
    settings = {**FAMILY_BY_NAME[family].fixed, **cand.get("variant", {}), **cand.get("knobs", {})} \
        if family in FAMILY_BY_NAME else dict(cand.get("knobs", {}))
    shown = {k.split(".")[-1]: v for k, v in settings.items() if k != "allocation.strategy"}
    text = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())
    if "depth_fraction" in cand:
        text += f" (f={cand['depth_fraction']:g})"
    return text


def final_run_ids(runs: pd.DataFrame, cell: Cell, chosen_only: bool = True) -> dict[str, list[str]]:
    """{family: run ids of its succeeded final runs in ``cell``, lowest seed first} (the dense run
    under "dense"); ``chosen_only`` leaves out runs of knobs validation did not choose."""
    if runs.empty:
        return {}
    ok = runs[(runs["status"] == "succeeded") & (runs["phase"] == "final") & (runs["model"] == cell.model)]
    if chosen_only:
        ok = ok[ok["chosen"].astype(bool)]
    pruned = ok[(ok["method"] == cell.method) & (ok["sparsity"].astype(float).round(6) == round(cell.sparsity, 6))]
    dense = ok[ok["family"] == "dense"]
    out: dict[str, list[str]] = {}
    for frame in (dense, pruned):
        for family, grp in frame.sort_values("seed").groupby("family", sort=False):
            out.setdefault(str(family), []).extend(grp["run_id"])
    order = {f.name: i for i, f in enumerate(FAMILIES)} | {"dense": -1}
    return dict(sorted(out.items(), key=lambda kv: order.get(kv[0], len(order))))


def per_block(allocations: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """{family: allocation table of one run} → long frame: family, block, sparsity (parameter-weighted),
    score (the family's allocation score per block: the mean over the block's matrices; NaN where the
    family has none, e.g. uniform)."""
    frames = []
    for family, alloc in allocations.items():
        if alloc is None or alloc.empty:
            continue
        sp = sparsity_per_block(alloc)[["block", "sparsity"]]
        score = (alloc.groupby("block")["score"].mean() if "score" in alloc else pd.Series(dtype=float))
        frames.append(sp.assign(family=family, score=sp["block"].map(score).astype(float)))
    if not frames:
        return pd.DataFrame(columns=["family", "block", "sparsity", "score"])
    return pd.concat(frames, ignore_index=True)[["family", "block", "sparsity", "score"]]
