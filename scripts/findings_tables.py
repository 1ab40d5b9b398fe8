"""Print the markdown tables of docs/FINDINGS.md from the results store (re-run after new grid runs
land and paste the output over the tables).

    .venv/bin/python scripts/findings_tables.py [--root data/store]

Only values of one evaluation protocol enter the tables (``pruning.evaluation.protocol``): the whole wiki test
split and the whole lee text in 2048-token windows, no window budget; the protocol of each dataset
is printed first, and a second protocol among the selected runs is an error, never a merge. The
last table compares, for every run re-run with float64 spectra, its float32-spectra attempt with it.
When the store holds runs of the allocation study (tag ``allocation-study``, issue 16), its table, the
"ours beats every other allocation by more than the seed spread" verdicts and the GPU time come first
(``scripts/allocation_study.py table``, which also lists the GPU time of every run).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pruning.evaluation.protocol import ppl_protocol_label  # noqa: E402
from pruning.store.queries import run_attempts, run_sql  # noqa: E402

QUERY = """
WITH zs AS (SELECT run_id, avg(value) acc FROM zeroshot
            WHERE metric = 'acc' AND task <> 'mean' AND "limit" IS NULL AND num_fewshot = 0 GROUP BY run_id)
SELECT r.method, r.sparsity, CASE WHEN r.strategy = 'linear' THEN r.preset || ' / ' || r.metric ELSE r.strategy END alloc,
       r.epsilon eps, max(CASE WHEN p.dataset = 'wiki' THEN p.ppl END) wiki, max(CASE WHEN p.dataset = 'lee' THEN p.ppl END) lee,
       any_value(zs.acc) zs
FROM (SELECT * FROM runs WHERE kind = 'run' AND model = 'smollm2-135m' AND status = 'succeeded'
      AND (list_contains(config_tags, 'grid-smollm2') OR list_contains(config_tags, 'eps-wide-smollm2'))) r
JOIN (SELECT * FROM perplexity WHERE stage IN ('pruned', 'dense') AND seqlen = 2048 AND n_windows = total_windows) p
     USING (run_id) LEFT JOIN zs USING (run_id) GROUP BY ALL ORDER BY 1, 2, 3, 4
"""
PROTOCOL_QUERY = """
SELECT p.dataset, p.seqlen, p.n_windows, p.total_windows, p.n_tokens, count(DISTINCT run_id) runs
FROM perplexity p JOIN runs r USING (run_id)
WHERE r.kind = 'run' AND r.model = 'smollm2-135m' AND r.status = 'succeeded' AND p.stage IN ('pruned', 'dense')
  AND (list_contains(r.config_tags, 'grid-smollm2') OR list_contains(r.config_tags, 'eps-wide-smollm2'))
GROUP BY ALL ORDER BY 1
"""
ALLOCATIONS = {  # stored label -> column header
    "uniform": "uniform", "owl": "OWL", "all / alpha_peak": "all · α_peak", "QKVout / alpha_peak": "QKVout · α_peak",
    "QKVout + split / alpha_peak": "QKVout + split · α_peak", "Q OUT GATE / alpha_peak": "Q out gate · α_peak",
    "all / hessian_alpha": "all · **Hessian α**",
}
METRICS = (("wiki", "wiki perplexity", min), ("lee", "lee perplexity", min), ("zs", "wiki_cloze accuracy", max))


def fmt(value: float, key: str) -> str:
    if pd.isna(value):
        return ""
    if key == "zs":
        return f"{value:.3f}"
    return f"{value:,.0f}" if value >= 1000 else f"{value:.2f}"


def allocation_tables(df: pd.DataFrame) -> str:
    """One table per metric: method x sparsity rows, allocation columns, best per row in bold (ε 0.2)."""
    main = df[(df.method != "dense") & (df.eps.isna() | ((df.eps - 0.2).abs() < 1e-9))]
    out = []
    for key, title, better in METRICS:
        out += [f"### {title}", "", "| method | sparsity | " + " | ".join(ALLOCATIONS.values()) + " |",
                "|---|---|" + "---|" * len(ALLOCATIONS)]
        for (method, sparsity), grp in main.groupby(["method", "sparsity"], sort=True):
            values = [grp.loc[grp.alloc == a, key].iloc[0] if (grp.alloc == a).any() else float("nan") for a in ALLOCATIONS]
            best = better(v for v in values if pd.notna(v))
            cells = [f"**{fmt(v, key)}**" if v == best else fmt(v, key) for v in values]
            out.append(f"| {method} | {sparsity:.0%} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def epsilon_table(df: pd.DataFrame) -> str:
    """70 %, all types, alpha_peak: one row per method and metric, one column per ε."""
    sub = df[(df.sparsity == 0.7) & (df.alloc == "all / alpha_peak") & df.method.isin(["wanda", "sparsegpt"])]
    eps = sorted(sub.eps.dropna().unique())
    out = ["| ε | " + " | ".join(f"{e:.2f}" for e in eps) + " |", "|---|" + "---|" * len(eps)]
    for method in ("wanda", "sparsegpt"):
        rows = sub[sub.method == method].set_index("eps")
        for key, title, better in METRICS:
            values = [rows.loc[e, key] if e in rows.index else float("nan") for e in eps]
            best = better(v for v in values if pd.notna(v))
            cells = [f"**{fmt(v, key)}**" if v == best else fmt(v, key) for v in values]
            out.append(f"| {'Wanda' if method == 'wanda' else 'SparseGPT'} {title.replace('perplexity', 'ppl').replace('accuracy', 'acc')} | "
                       + " | ".join(cells) + " |")
    return "\n".join(out)


def protocol_lines(root: str) -> str:
    """One line per dataset: the protocol of every value in the tables; raises on a second one."""
    proto = run_sql(PROTOCOL_QUERY, root=root)
    lines = []
    for dataset, grp in proto.groupby("dataset"):
        if len(grp) > 1:
            raise SystemExit(f"{dataset}: the selected runs hold {len(grp)} evaluation protocols:\n{grp}\n"
                             "tables would mix them; select one (pruning.evaluation.protocol)")
        r = grp.iloc[0]
        label = ppl_protocol_label(dataset, None, r.seqlen, r.n_windows, r.total_windows, r.n_tokens)
        lines.append(f"- {dataset}: {label}, {r.runs} runs")
    return "Protocol of every perplexity below:\n" + "\n".join(lines) + "\n"


def what_changed(root: str, df: pd.DataFrame) -> str:
    """Runs whose previous attempt computed spectra in float32 and whose latest one in float64:
    wiki and lee perplexity of both attempts and the change."""
    runs = run_sql("SELECT run_id, method, sparsity, preset, metric, epsilon FROM runs WHERE kind = 'run' "
                   "AND model = 'smollm2-135m' AND status = 'succeeded' ORDER BY method, sparsity, preset, metric, epsilon",
                   root=root)
    out = ["| method | sparsity | allocation | ε | wiki float32 → float64 | change | lee float32 → float64 | change |",
           "|---|---|---|---|---|---|---|---|"]
    n = 0
    for r in runs.itertuples():
        att = run_attempts(r.run_id, root=root)
        if len(att) < 2 or att.iloc[-1]["eig_dtype"] != "float64" or "float32" not in str(att.iloc[-2]["eig_dtype"]):
            continue
        old, new = att.iloc[-2], att.iloc[-1]
        n += 1
        alloc = "dense" if r.method == "dense" else f"{r.preset} · {r.metric}"
        cells = []
        for key in ("ppl_wiki", "ppl_lee"):
            a, b = float(old[key]), float(new[key])
            cells += [f"{fmt(a, key)} → {fmt(b, key)}", f"{(b / a - 1):+.1%}"]
        eps = "" if pd.isna(r.epsilon) else f"{r.epsilon:.2f}"
        out.append(f"| {r.method} | {r.sparsity:.0%} | {alloc} | {eps} | " + " | ".join(cells) + " |")
    return f"{n} runs re-run with float64 spectra (attempt before → latest attempt):\n\n" + "\n".join(out) + "\n"


def study_section(root: str, choices_dir: Path | None = None) -> str:
    """The allocation study's tables (pruning.study, as scripts/allocation_study.py table); "" when the store holds none of its runs.
    choices_dir: the folder of its choices files (default docs/study)."""
    from pruning.study import study_report

    return study_report(root, per_run=False, choices_dir=choices_dir)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=str(REPO / "data" / "store"))
    p.add_argument("--what-changed", action="store_true", help="also the float32 -> float64 spectra re-run table")
    args = p.parse_args(argv)
    study = study_section(args.root)
    if study:
        print(study)
    print(protocol_lines(args.root))
    df = run_sql(QUERY, root=args.root)
    dense = df[df.method == "dense"]
    if not dense.empty:
        d = dense.iloc[0]
        print(f"Dense: wiki {d.wiki:.2f}, lee {d.lee:.2f}, wiki_cloze {d.zs:.3f}\n")
    print(allocation_tables(df))
    print(epsilon_table(df))
    if args.what_changed:
        print()
        print(what_changed(args.root, df))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
