"""``python -m pruning sweep --config sweep.yaml | --from-store WHERE [--dry-run] [--yes] [--backend local|ray] [--force]``.

Expands the grid (see :mod:`pruning.jobs.sweep`), prints what will run (count, duplicates, already
done or queued, invalid combinations with the field named) and then submits the new runs.
``--from-store`` takes the stored configs of runs matching an SQL condition instead (re-running
what a fix changed: with ``--force`` each becomes a new attempt of the same run id).
"""

from __future__ import annotations

import argparse
import sys

from pruning.config.run_config import RunConfig, load_yaml_file
from pruning.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``sweep`` command."""
    p = sub.add_parser("sweep", help="expand a grid of runs and queue them")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="sweep YAML (base: RunConfig + lists to sweep)")
    source.add_argument("--from-store", metavar="WHERE", default=None,
                        help="re-run the stored configs of the runs matching this SQL condition on the runs view, "
                             "e.g. \"run_id IN (SELECT run_id FROM spectra WHERE eig_dtype = 'float32')\"")
    p.add_argument("--dry-run", action="store_true", help="show the summary and the runs, submit nothing")
    p.add_argument("--yes", "-y", action="store_true", help="submit without asking")
    p.add_argument("--backend", choices=("local", "ray"), default="local")
    p.add_argument("--address", default=None, help="Ray Jobs address (ray backend)")
    p.add_argument("--force", action="store_true", help="run again even runs that already succeeded")
    p.set_defaults(handler=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    from pruning.jobs import get_backend
    from pruning.jobs.queue import JobQueue
    from pruning.jobs.sweep import load_sweep_spec, plan_from_store, plan_sweep

    if args.from_store is not None:
        plan = plan_from_store(args.from_store)
        what = f"--from-store {args.from_store!r}"
    else:
        load_yaml_file(args.config, "sweep file")  # malformed or non-UTF-8 YAML: one line, no traceback
        plan = plan_sweep(load_sweep_spec(args.config))
        what = f"sweep {args.config}"
    print(plan.summary())
    if plan.invalid:
        raise ConfigError(f"{what}: {len(plan.invalid)} invalid combination(s) listed above; "
                          "fix the sweep (nothing was submitted)")
    check_sweep_names(plan.configs, what)
    # --force re-runs done runs too, but never queues a second job for a queued/running one
    todo = [c for c in plan.configs if c.run_id not in plan.active] if args.force else plan.to_run
    if args.force and plan.done:
        print(f"--force: the {len(plan.done)} done run(s) run again ({len(todo)} to submit); "
              "each new attempt supersedes the stored one")
    if args.dry_run:
        for config in plan.configs:
            mark = ("done: " + plan.done[config.run_id]) if config.run_id in plan.done else (
                ("active: job " + plan.active[config.run_id]) if config.run_id in plan.active else "to run")
            print(f"  {config.run_id}  {config.model.name}  {config.pruning.method}  "
                  f"s={config.pruning.sparsity}  {_allocation_label(config)}  seed={config.calibration.seed}  [{mark}]")
        print("dry run: nothing submitted")
        return 0
    if not todo:
        print("nothing to submit")
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            raise ConfigError("sweep: confirmation needed; pass --yes to submit without a terminal")
        answer = input(f"submit {len(todo)} job(s) to the {args.backend} backend? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing submitted")
            return 1
    options = {"address": args.address} if args.backend == "ray" and args.address else {}
    backend = get_backend(args.backend, **options)
    submitted = 0
    for config in todo:
        result = backend.submit(config, force=args.force)
        if result.job is not None and not result.deduped:
            submitted += 1
            print(f"queued job {result.job.job_id}  run {config.run_id}")
    print(f"submitted {submitted} job(s)")
    if args.backend == "local" and submitted and not JobQueue().live_workers():
        print("no live worker: start one with `python -m pruning worker`")
    return 0


def check_sweep_names(configs: list[RunConfig], what: str) -> None:
    """Every name of every run (corpora, zero-shot tasks, metric: pruning.run.validation.check_names)
    before anything is submitted, so a bad name never leaves a sweep half-queued."""
    from pruning.run.validation import check_names

    seen: set[tuple] = set()
    for config in configs:
        key = (config.calibration.dataset, config.evaluation.perplexity, config.evaluation.zeroshot_tasks,
               config.allocation.metrics)
        if key in seen:
            continue
        seen.add(key)
        try:
            check_names(config)
        except ConfigError as exc:
            raise ConfigError(f"{what}: run {config.run_id}: {exc} (nothing was submitted)") from None


def _allocation_label(config: RunConfig) -> str:
    """``uniform``, ``owl M=5 λ=0.08`` or ``linear preset=all metric=alpha_peak eps=0.2`` for one dry-run line."""
    a = config.allocation
    if a.strategy == "linear":
        return f"linear preset={a.preset or 'custom'}  metric={'+'.join(a.metrics)}  eps={a.epsilon:g}"
    if a.strategy == "owl":
        return f"owl M={a.owl_threshold_m:g} λ={a.owl_lambda:g}"
    return a.strategy
