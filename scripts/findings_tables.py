"""Print the markdown tables of docs/FINDINGS.md from the results store (re-run after new grid runs
land and paste the output over the tables).

    .venv/bin/python scripts/findings_tables.py [--root data/store]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pruning.store.queries import run_sql  # noqa: E402

QUERY = """
WITH zs AS (SELECT run_id, avg(value) acc FROM zeroshot WHERE metric = 'acc' AND task <> 'mean' GROUP BY run_id)
SELECT r.method, r.sparsity, CASE WHEN r.strategy = 'linear' THEN r.preset || ' / ' || r.metric ELSE r.strategy END alloc,
       r.epsilon eps, max(CASE WHEN p.dataset = 'wiki' THEN p.ppl END) wiki, max(CASE WHEN p.dataset = 'lee' THEN p.ppl END) lee,
       any_value(zs.acc) zs
FROM (SELECT * FROM runs WHERE kind = 'run' AND model = 'smollm2-135m' AND status = 'succeeded'
      AND (list_contains(config_tags, 'grid-smollm2') OR list_contains(config_tags, 'eps-wide-smollm2'))) r
JOIN perplexity p USING (run_id) LEFT JOIN zs USING (run_id) GROUP BY ALL ORDER BY 1, 2, 3, 4
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=str(REPO / "data" / "store"))
    args = p.parse_args(argv)
    df = run_sql(QUERY, root=args.root)
    dense = df[df.method == "dense"]
    if not dense.empty:
        d = dense.iloc[0]
        print(f"Dense: wiki {d.wiki:.2f}, lee {d.lee:.2f}, wiki_cloze {d.zs:.3f}\n")
    print(allocation_tables(df))
    print(epsilon_table(df))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
