"""`python -m pruning run --config run.yaml [--set key=value ...] [--events FILE.jsonl]`."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run one config end to end and publish it to the results store")
    p.add_argument("--config", help="RunConfig YAML (defaults apply to omitted fields)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override, e.g. --set pruning.sparsity=0.7 --set allocation.preset='QKVout + split'")
    shortcuts = (("--model", str), ("--method", str), ("--sparsity", float), ("--preset", str),
                 ("--strategy", str), ("--metric", str), ("--metric-mix", str), ("--epsilon", float), ("--nm", str),
                 ("--device", str), ("--limit-windows", int), ("--nsamples", int))
    for flag, kind in shortcuts:
        p.add_argument(flag, type=kind, help="shortcut for the matching --set key")
    p.add_argument("--events", help="append JSON progress events to this file (one per line)")
    p.add_argument("--no-publish", action="store_true", help="do not write to the results store")
    p.set_defaults(handler=run)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """'a.b=value' strings -> {'a.b': parsed YAML value} (the same parser as ``submit --set``)."""
    from pruning.cli.jobs import parse_overrides as parse_set

    return parse_set(items)


def build_config(args: argparse.Namespace):
    """RunConfig from --config, shortcut flags and --set overrides (validated)."""
    from pruning.config.run_config import RunConfig

    config = RunConfig.from_yaml(args.config) if args.config else RunConfig()
    shortcuts = {
        "model.name": args.model, "pruning.method": args.method, "pruning.sparsity": args.sparsity,
        "allocation.preset": args.preset, "allocation.strategy": args.strategy, "allocation.metric": args.metric,
        "allocation.metric_mix": args.metric_mix, "allocation.epsilon": args.epsilon, "pruning.nm": args.nm,
        "model.device": args.device,
        "evaluation.limit_windows": args.limit_windows, "calibration.nsamples": args.nsamples,
    }
    overrides = {k: v for k, v in shortcuts.items() if v is not None}
    overrides.update(parse_overrides(args.set))
    return config.with_overrides(overrides) if overrides else config


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pruning.run.pipeline import execute_run
    from pruning.run.validation import check_before_work

    config = build_config(args)
    check_before_work(config)  # input errors: one line, nothing published, no progress bar drawn
    events = Path(args.events) if args.events else None
    bar = tqdm(total=100, desc=config.run_id, unit="%", bar_format="{l_bar}{bar}| {n:.0f}/100 [{elapsed}] {postfix}")

    def progress(stage: str, fraction: float, message: str) -> None:
        bar.n = round(100 * fraction, 1)
        bar.set_postfix_str(f"{stage}: {message}")
        if events is not None:
            with events.open("a") as fh:
                fh.write(json.dumps({"t": time.time(), "stage": stage, "fraction": fraction, "message": message}) + "\n")

    outcome = execute_run(config, progress=progress, publish=not args.no_publish)
    bar.close()
    print(f"run {outcome.run_id}: {outcome.status}")
    ppl = outcome.tables.get("perplexity")
    if ppl is not None:
        for row in ppl.itertuples():
            print(f"  ppl {row.dataset} ({row.stage}, {row.n_windows}/{row.total_windows} windows of {row.seqlen}): {row.ppl:.4f}")
    alloc = outcome.tables.get("allocation")
    if alloc is not None and "sparsity_achieved" in alloc:
        total = (alloc["sparsity_achieved"] * alloc["numel"]).sum() / alloc["numel"].sum()
        print(f"  achieved sparsity (parameter-weighted): {total:.4f}")
    if events is not None:
        with events.open("a") as fh:
            fh.write(json.dumps({"t": time.time(), "stage": "done", "fraction": 1.0, "message": outcome.status}) + "\n")
    return 0
