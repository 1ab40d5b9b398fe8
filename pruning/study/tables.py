"""Markdown of the study: the table, the verdicts, the GPU time and the proxy runs
(``scripts/allocation_study.py table`` and ``proxy``, and docs/FINDINGS.md)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from pruning.study.protocol import FAMILY_BY_NAME, UNCHOSEN, ZEROSHOT_TASK
from pruning.study.results import format_mean_std, format_value, proxy_runs, study_runs, summarize, verdicts

def family_label(family: str) -> str:
    """Table label of a summary family: the family's label, marked for the runs of knobs that
    validation did not choose (``family~``)."""
    name = family.removesuffix(UNCHOSEN)
    label = FAMILY_BY_NAME[name].label
    return f"{label} — *not chosen on validation, not compared*" if family.endswith(UNCHOSEN) else label


def study_table(summary: pd.DataFrame) -> str:
    """Markdown: one row per (model, method, sparsity, family)."""
    out = ["| model | method | sparsity | allocation | knobs (chosen on wiki:validation) | wiki test ppl | lee ppl | "
           "wiki_cloze acc | wiki test ppl, lee-calibrated |", "|---|---|---|---|---|---|---|---|---|"]
    for r in summary.itertuples():
        cells = [format_mean_std((getattr(r, f"{k}_mean"), getattr(r, f"{k}_std"), getattr(r, f"{k}_n")), k)
                 for k in ("wiki", "lee", ZEROSHOT_TASK)]
        label = "dense" if r.family == "dense" else family_label(r.family)
        sparsity = "0%" if r.family == "dense" else f"{r.sparsity:.0%}"
        knobs = "" if r.family == "dense" else getattr(r, "knobs", "")
        out.append(f"| {r.model} | {r.method} | {sparsity} | {label} | {knobs} | " + " | ".join(cells)
                   + f" | {format_value(r.lee_calibrated_wiki, 'wiki')} |")
    return "\n".join(out)


def verdict_table(table: pd.DataFrame) -> str:
    """Markdown of :func:`verdicts` for several metrics, with the count of cells won."""
    out = ["Does ours beat every other allocation by more than the seed spread? (mean of the rival − mean of ours "
           "> max(std of ours, std of the rival), std over calibration seeds, ddof 1; rival = the family closest to "
           "winning)", "",
           "| model | method | sparsity | text | ours | closest rival | rival | margin | spread | verdict | ahead on means |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        if r.verdict == "no data":
            out.append(f"| {r.model} | {r.method} | {r.sparsity:.0%} | {r.metric} | | | | | | no data | |")
            continue
        label = FAMILY_BY_NAME[r.rival].label
        spread = "" if math.isnan(r.spread) else f"{r.spread:.2f}"
        out.append(f"| {r.model} | {r.method} | {r.sparsity:.0%} | {r.metric} | {r.ours} | {label} | {r.rival_value} | "
                   f"{r.margin:+.2f} | {spread} | {r.verdict} | {'yes' if r.ahead_on_means else 'no'} |")
    out.append("")
    for metric, grp in table.groupby("metric", sort=False):
        undecided = grp["verdict"].str.startswith("undecided").sum()
        incomplete = grp["verdict"].str.contains("rivals)", regex=False).sum()
        out.append(f"- {metric}: ours wins by more than the spread in {(grp['verdict'] == 'yes').sum()} of {len(grp)} "
                   f"(model, method, sparsity) cells ({undecided} undecided with 1 seed, {incomplete} missing some rivals)")
    return "\n".join(out)


def timing_tables(runs: pd.DataFrame, per_run: bool = True) -> str:
    """GPU time from each run's ``timings.total`` (wall seconds of the run in its worker; several
    workers share one GPU, so the sum is worker-seconds, more than the machine's wall time)."""
    out = ["GPU time (each run's timings.total: wall seconds in its worker; workers share the GPU, so sums are "
           "worker-seconds):", "", "| model | phase | runs | mean s/run | min | max | sum (h) |", "|---|---|---|---|---|---|---|"]
    for (model, phase), grp in runs.groupby(["model", "phase"]):
        s = grp["seconds"].dropna()
        out.append(f"| {model} | {phase} | {len(grp)} | {s.mean():.1f} | {s.min():.1f} | {s.max():.1f} | {s.sum() / 3600:.2f} |")
    total = runs["seconds"].dropna()
    out.append(f"| all | all | {len(runs)} | {total.mean():.1f} | {total.min():.1f} | {total.max():.1f} | {total.sum() / 3600:.2f} |")
    if per_run:
        out += ["", "| run_id | model | phase | method | sparsity | family | seed | status | seconds |",
                "|---|---|---|---|---|---|---|---|---|"]
        for r in runs.sort_values(["model", "phase", "method", "sparsity", "family", "seed"], na_position="first").itertuples():
            out.append(f"| {r.run_id} | {r.model} | {r.phase} | {r.method} | {r.sparsity:.0%} | {r.family} | {r.seed} | "
                       f"{r.status} | {r.seconds:.1f} |")
    return "\n".join(out)


def study_report(store: str | Path | None = None, per_run: bool = True, choices_dir: Path | None = None) -> str:
    """The whole study section: table, verdicts (wiki test and lee) and GPU time; "" without study runs.
    choices_dir: where the choices files are (default docs/study)."""
    runs = study_runs(store, choices_dir)
    if runs.empty:
        return ""
    summary = summarize(runs)
    parts = ["## Allocation study (issue 16)", ""]
    if not summary.empty:
        verdict = pd.concat([verdicts(summary, "wiki"), verdicts(summary, "lee")], ignore_index=True)
        parts += [study_table(summary), "", verdict_table(verdict), ""]
    parts.append(timing_tables(runs, per_run))
    from pruning.study.sensitivity import sensitivity_report  # the probes, when the store holds them

    sensitivity = sensitivity_report(store)
    if sensitivity:
        parts += ["", sensitivity.rstrip("\n")]
    return "\n".join(parts) + "\n"


def proxy_report(store: str | Path | None = None) -> str:
    """Markdown of :func:`proxy_runs`, with each run's change against the uniform run of its (model,
    method, sparsity) where there is one; "" without proxy runs."""
    runs = proxy_runs(store)
    if runs.empty:
        return ""
    uniform = runs[runs["allocation"] == FAMILY_BY_NAME["uniform"].label].set_index(["model", "method", "sparsity"])["ppl"]
    out = ["| model | method | sparsity | allocation | knobs | wiki:validation ppl | vs uniform | windows | calibration | CPU min |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs.itertuples():
        base = uniform.get((r.model, r.method, r.sparsity))
        plain = base is None or r.method == "dense" or r.allocation == FAMILY_BY_NAME["uniform"].label
        change = "" if plain else f"{(r.ppl - base) / base:+.1%}"
        sparsity = "0%" if r.method == "dense" else f"{r.sparsity:.0%}"
        out.append(f"| {r.model} | {r.method} | {sparsity} | {r.allocation} | {r.knobs} | {r.ppl:.2f} | {change} | "
                   f"{r.windows} | {r.calibration} | {r.seconds / 60:.1f} |")
    return "\n".join(out) + "\n"
