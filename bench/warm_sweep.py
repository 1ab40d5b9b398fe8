"""Sweep throughput through the job queue: warm runners against the cold path (issue 26).

The same sweep (Wanda and SparseGPT, 60 and 70 %, several allocations; wiki test + lee perplexity
and ``wiki_cloze``) is submitted to a fresh store and run by ``WORKERS`` local workers on one device,
once with warm runners and once with ``worker --cold``; each mode gets its own store and its own
cache of dense statistics and spectra (the model files and corpora are shared, read-only), so
neither reuses the other's work. Reported: runs, wall time of the sweep, wall ÷ runs (the
GPU-seconds per run when the GPU is the device), and the mean of each stage's timing from the store.

    python -m bench.warm_sweep --model smollm2-135m --device cuda --workers 8 --runs 24    # GPU
    python -m bench.warm_sweep --tiny --device cpu --workers 1 --runs 8                      # CPU

Writes section ``warm_sweep_<model>_<device>`` of bench/RESULTS.md (and JSON with ``--json``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._results import markdown_table, write_section  # noqa: E402
from pruning.paths import REPO_ROOT, cache_dir  # noqa: E402

log = logging.getLogger("bench.warm_sweep")

#: the allocations of the sweep, in order (a run count below 4 x len takes the first ones per method)
ALLOCATIONS: list[dict[str, object]] = [
    {"allocation.strategy": "uniform"},
    {"allocation.strategy": "owl", "allocation.owl_threshold_m": 5.0, "allocation.owl_lambda": 0.08},
    {"allocation.strategy": "dlp", "allocation.dlp_alpha": 0.15},
    {"allocation.strategy": "linear", "allocation.preset": "all", "allocation.metric": "alpha_peak",
     "allocation.epsilon": 0.2},
    {"allocation.strategy": "depth", "allocation.depth_beta": 0.005},
    {"allocation.strategy": "linear", "allocation.preset": "all", "allocation.metric": "hessian_alpha",
     "allocation.epsilon": 0.2},
]


def sweep_configs(model: str, device: str, runs: int, tiny: bool, cal_batch: int, eval_batch: int,
                  dtype: str = "float32"):
    """``runs`` configs: methods x sparsities x the first allocations (full protocol, or a small one for --tiny)."""
    from pruning.config.run_config import RunConfig

    if tiny:
        cal = {"dataset": "wiki:train", "nsamples": 8, "seqlen": 128, "seed": 0, "batch_size": cal_batch}
        ev = {"perplexity": ["wiki", "lee"], "seqlen": 128, "limit_windows": 16, "batch_size": eval_batch,
              "zeroshot_tasks": ["wiki_cloze"], "zeroshot_limit": 20, "attention": False}
    else:
        cal = {"dataset": "wiki:train", "nsamples": 128, "seqlen": 2048, "seed": 0, "batch_size": cal_batch}
        ev = {"perplexity": ["wiki", "lee"], "seqlen": 2048, "limit_windows": None, "batch_size": eval_batch,
              "zeroshot_tasks": ["wiki_cloze"], "attention": False}
    base = RunConfig.from_dict({"model": {"name": model, "device": device, "dtype": dtype}, "calibration": cal,
                                "evaluation": ev,
                                "tags": ["bench-warm-sweep"]})
    cells = [(m, s) for m in ("wanda", "sparsegpt") for s in (0.6, 0.7)]
    per_cell = -(-runs // len(cells))
    configs = [base.with_overrides({"pruning.method": m, "pruning.sparsity": s, **alloc})
               for m, s in cells for alloc in ALLOCATIONS[:per_cell]]
    return configs[:runs]


def _private_cache(root: Path) -> Path:
    """A cache directory of its own (dense statistics, spectra, attention) that links the shared
    model files and corpora."""
    shared = cache_dir()
    private = root / "cache"
    private.mkdir(parents=True, exist_ok=True)
    for name in ("models", "corpora"):
        link = private / name
        if not link.exists():
            link.symlink_to(shared / name)
    return private


def run_mode(mode: str, configs, root: Path, workers: int, gpu: str | None) -> dict:
    """Submit ``configs`` to a fresh store under ``root/mode`` and run them with ``workers`` workers."""
    from pruning.jobs import LocalBackend

    base = root / mode
    data = base / "data"
    data.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PRUNING_LAB_DATA=str(data), PRUNING_LAB_CACHE=str(_private_cache(base)),
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p))
    saved = {k: os.environ.get(k) for k in ("PRUNING_LAB_DATA", "PRUNING_LAB_CACHE")}
    os.environ.update(PRUNING_LAB_DATA=env["PRUNING_LAB_DATA"], PRUNING_LAB_CACHE=env["PRUNING_LAB_CACHE"])
    try:
        backend = LocalBackend()
        for config in configs:
            backend.submit(config, force=True)
        argv = [sys.executable, "-m", "pruning", "worker", "--once", "--poll", "0.2"]
        argv += ["--gpus", gpu] if gpu is not None else []
        argv += ["--cold"] if mode == "cold" else []
        threads = str(max(1, (os.cpu_count() or 1) // workers))
        started = time.perf_counter()
        procs = []
        for i in range(workers):
            with (base / f"worker{i}.log").open("ab") as fh:
                procs.append(subprocess.Popen(argv, cwd=REPO_ROOT, stdout=fh, stderr=subprocess.STDOUT,
                                              env=dict(env, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)))
        for proc in procs:
            proc.wait()
        wall = time.perf_counter() - started
        return {"mode": mode, "workers": workers, "wall_s": wall, **_from_store(data)}
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _from_store(data: Path) -> dict:
    """Runs by status and the mean seconds of each stage over the succeeded runs."""
    from pruning.store import list_runs, run_detail

    runs = list_runs(root=data / "store")
    ok = runs[runs["status"] == "succeeded"]
    stages: dict[str, list[float]] = {}
    for run_id in ok["run_id"]:
        for stage, seconds in (run_detail(run_id, root=data / "store").get("timings") or {}).items():
            stages.setdefault(stage, []).append(float(seconds))
    return {"runs": int(len(runs)), "succeeded": int(len(ok)),
            "stage_mean_s": {k: sum(v) / len(v) for k, v in sorted(stages.items())},
            "stage_runs": {k: len(v) for k, v in sorted(stages.items())}}


def from_collected(mode: str, data: Path, workers: int) -> dict:
    """The figures of a sweep run elsewhere (a GPU machine) from its collected ``data`` directory: the
    wall time is the queue's span, from the first job's start to the last job's end."""
    import sqlite3

    with sqlite3.connect(f"file:{data / 'jobs' / 'queue.sqlite'}?mode=ro", uri=True) as db:
        rows = db.execute("select state, started_at, finished_at from jobs").fetchall()
    done = [r for r in rows if r[0] == "succeeded"]
    span = max(r[2] for r in done) - min(r[1] for r in rows if r[1] is not None)
    result = {"mode": mode, "workers": workers, "wall_s": span, **_from_store(data)}
    result["runs"] = len(rows)
    result["succeeded"] = len(done)  # jobs the queue saw finish inside the span (a run can publish as its job is killed)
    return result


def report(results: list[dict], model: str) -> str:
    rows = [{"runner": r["mode"], "workers": r["workers"], "runs ok": f"{r['succeeded']}/{r['runs']}",
             "sweep wall s": f"{r['wall_s']:.1f}", "s per run (wall / runs)": f"{r['wall_s'] / max(r['succeeded'], 1):.2f}"}
            for r in results]
    body = markdown_table(rows)
    if len(results) == 2 and all(r["succeeded"] for r in results):
        per = {r["mode"]: r["wall_s"] / r["succeeded"] for r in results}
        body += f"\n\nwarm is **{per['cold'] / per['warm']:.2f}x** faster per run than cold on {model}.\n"
    stages = sorted({s for r in results for s in r["stage_mean_s"]})
    stage_rows = [{"stage": s, **{r["mode"]: f"{r['stage_mean_s'][s]:.2f} ({r['stage_runs'][s]})"
                                  if s in r["stage_mean_s"] else "–" for r in results}} for s in stages]
    body += "\n\nMean seconds per stage over the runs that have it (count), from the store's timings " \
            "(each run's own wall time inside its worker; with several workers on one device they overlap):\n\n"
    body += markdown_table(stage_rows)
    return body


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--tiny", action="store_true", help="a tiny random model with SmolLM2's tokenizer (CPU benchmark)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--gpu", default=None, help="GPU index the workers use (default 0 on cuda)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--runs", type=int, default=24)
    p.add_argument("--modes", default="warm,cold")
    p.add_argument("--cal-batch", type=int, default=1, help="calibration.batch_size of every run")
    p.add_argument("--eval-batch", type=int, default=8, help="evaluation.batch_size of every run")
    p.add_argument("--dtype", default="float32", help="model.dtype of every run")
    p.add_argument("--root", default=None, help="working directory (default: a new temporary one)")
    p.add_argument("--json", default=None, help="also write the figures here")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--collected", nargs="+", metavar="MODE:WORKERS:DATA_DIR",
                   help="report sweeps run elsewhere from their collected data directories instead of running one")
    p.add_argument("--machine", help="with --collected: the machine the sweeps ran on")
    p.add_argument("--section", help="with --collected: the RESULTS.md section name")
    p.add_argument("--note", default="", help="with --collected: a sentence placed above the figures")
    args = p.parse_args(argv)
    if args.collected:
        results = []
        for item in args.collected:
            mode, workers, data = item.split(":", 2)
            results.append(from_collected(mode, Path(data), int(workers)))
        body = (args.note + "\n\n" if args.note else "") + report(results, args.model)
        print(body)
        if not args.no_write:
            write_section(args.section or f"warm_sweep_{args.model}_collected", body, machine=args.machine)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import tempfile

    root = Path(args.root or tempfile.mkdtemp(prefix="warm-sweep-"))
    model = args.model
    if args.tiny:
        from pruning.model.synthetic import save_tiny_model_dir

        model = str(save_tiny_model_dir(root / "tiny-model", layers=4))
    gpu = args.gpu if args.gpu is not None else ("0" if args.device.startswith("cuda") else None)
    configs = sweep_configs(model, args.device, args.runs, args.tiny, args.cal_batch, args.eval_batch, args.dtype)
    results = []
    for mode in args.modes.split(","):
        result = run_mode(mode, configs, root, args.workers, gpu)
        log.info("%s: %s", mode, result)
        results.append(result)
    name = "tiny" if args.tiny else args.model
    body = report(results, name)
    body = (f"{len(configs)} runs ({name}, {args.dtype}, {args.device}, calibration batch {args.cal_batch}, evaluation batch "
            f"{args.eval_batch}), each mode on a fresh store and cache.\n\n" + body)
    print(body)
    if args.json:
        Path(args.json).write_text(json.dumps({"model": name, "device": args.device, "results": results}, indent=1))
    if not args.no_write:
        write_section(f"warm_sweep_{name}_{args.dtype}_{args.device.split(':')[0]}_w{args.workers}", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
