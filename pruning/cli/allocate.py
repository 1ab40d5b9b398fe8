"""`python -m pruning allocate --model M --sparsity 0.7 --metric alpha_peak --epsilon 0.2 ... --out alloc.csv`.

Computes (or reads) the per-matrix spectral table, allocates a sparsity to every prunable matrix
(:func:`pruning.allocation.allocate`: AlphaPruning, Lu et al. 2024; OWL, Yin et al. 2023; DLP, Chen et
al. 2025; ATP depth, Huang et al. 2025), prints
the per-unit table (per block for ``--granularity matrix``) and writes the per-matrix CSV.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from pruning.cli._args import SPARSITY, device_name, float_in
from pruning.allocation.registry import STRATEGY_SPECS, registered_specs, strategy_names, strategy_spec
from pruning.errors import ConfigError

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "allocate",
        help="layer-wise sparsity allocation (uniform | AlphaPruning linear | OWL | DLP | ATP depth) "
             "for every prunable matrix",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--model", default=None, help="model reference (alias, directory, .gguf, hub id); default smollm2-135m"
    )
    src.add_argument(
        "--spectra", type=Path, default=None,
        help="per-matrix table (CSV or Parquet: block, matrix_type, name, numel + metric columns) instead of --model",
    )
    p.add_argument("--sparsity", type=SPARSITY, required=True, help="target sparsity S (parameter-weighted mean)")
    p.add_argument("--strategy", default="linear", choices=strategy_names(),
                   help="a registered allocation strategy (pruning.allocation.registry)")
    p.add_argument("--metric", default="alpha_peak", help="metric column scoring the units (alpha_peak, alpha, ...)")
    p.add_argument("--metric-mix", default=None,
                   help="second metric column, averaged with --metric after min-max normalisation (linear only)")
    p.add_argument("--epsilon", type=float_in(0.0, 1.0, high_open=True), default=0.2,
                   help="AlphaPruning epsilon: ratios in [1 - eps, 1 + eps]")
    p.add_argument(
        "--lower-prunes-more", action="store_true",
        help="reverse the direction: a lower metric value means more pruning (default: higher prunes more)",
    )
    p.add_argument("--preset", default=None, help='notes column header, e.g. "QKVout + split" (see docs/allocation.md)')
    p.add_argument("--score-groups", default=None, help="matrix types scoring a unit, e.g. q,k,v,o")
    p.add_argument("--granularity", default=None, choices=("block", "split", "matrix"))
    p.add_argument("--min-sparsity", type=SPARSITY, default=None)
    p.add_argument("--max-sparsity", type=float_in(0.0, 1.0, low_open=True), default=None)
    p.add_argument("--owl-lambda", type=SPARSITY, default=None, help="OWL lambda (sparsity spread is 2 lambda)")
    p.add_argument(
        "--owl-ratios", type=Path, default=None,
        help="CSV with columns block, outlier_ratio (OWL's D_l from calibration); needed for --strategy owl",
    )
    p.add_argument("--dlp-alpha", type=float, default=None, help="DLP alpha (sparsity spread is 2 alpha; 0.15)")
    p.add_argument("--dlp-statistic", default=None, choices=("median", "mean"),
                   help="DLP's per-block statistic of the Wanda scores (recorded; the CSV holds its values)")
    p.add_argument(
        "--dlp-unimportance", type=Path, default=None,
        help="CSV with columns block, unimportance (DLP's U_l from calibration); needed for --strategy dlp",
    )
    p.add_argument("--depth-beta", type=float, default=None,
                   help="ATP common difference per block (--strategy depth)")
    p.add_argument("--device", type=device_name, default="cpu", help="device for the spectral computation")
    p.add_argument("--out", type=Path, default=None, help="write the per-matrix allocation CSV here")
    p.set_defaults(handler=run)


def _read_table(path: Path, flag: str = "--spectra") -> Any:
    import pandas as pd

    if not path.is_file():
        raise ConfigError(f"{flag}: file {str(path)!r} does not exist")
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, encoding="utf-8")
    except (ValueError, OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        # binary or malformed input (UnicodeDecodeError and pyarrow's ArrowInvalid are ValueErrors)
        detail = str(exc).splitlines()[0][:200] if str(exc) else exc.__class__.__name__
        raise ConfigError(f"{flag}: {str(path)!r} is not a readable {'Parquet' if path.suffix == '.parquet' else 'CSV'} "
                          f"table ({detail}); accepted: CSV (UTF-8) or Parquet") from None


def _model_matrices(reference: str, device: str, metrics: tuple[str, ...]) -> Any:
    """Per-matrix table of a model: block, matrix_type, name, numel + weight-spectrum metrics."""
    import pandas as pd
    from tqdm import tqdm

    from pruning.model.families import prunable_matrices
    from pruning.model.load import load_model

    try:
        from pruning.spectral import pivot_for_allocation, weight_spectra
    except ImportError as exc:  # the spectral package is built separately (docs/CONTRACTS.md)
        raise ConfigError(
            f"the spectral metrics module is not available ({exc}); pass a per-matrix table with --spectra"
        ) from None
    for flag, metric in zip(("--metric", "--metric-mix"), metrics):
        if metric.startswith("hessian_"):
            raise ConfigError(
                f"{flag} {metric!r} needs calibration Hessians, which `allocate` does not compute; "
                "use a weight metric (alpha_peak, alpha, ...) or --spectra with a table holding hessian_ columns"
            )
    loaded = load_model(reference, dtype="float32", device=device)
    bar = tqdm(desc="weight spectra", unit="matrix")

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    table = weight_spectra(loaded, device=device, progress=progress)
    bar.close()
    metrics = pivot_for_allocation(table)
    base = pd.DataFrame(
        [(m.block, m.matrix_type, m.name, m.numel) for m in prunable_matrices(loaded.model, loaded.family)],
        columns=["block", "matrix_type", "name", "numel"],
    )
    extra = [c for c in metrics.columns if c not in ("block", "matrix_type", "numel")]
    return base.merge(metrics[extra], on="name", how="left", validate="one_to_one")


def _block_values(path: Path | None, flag: str, column: str) -> dict[int, float] | None:
    """``{block: value}`` from a CSV/Parquet table with columns ``block`` and ``column``."""
    if path is None:
        return None
    table = _read_table(path, flag)
    if not {"block", column} <= set(table.columns):
        raise ConfigError(f"{flag}: {str(path)!r} needs columns block, {column}; has {list(table.columns)}")
    return {int(b): float(d) for b, d in zip(table["block"], table[column])}


#: built-in strategies that need the model during a run (the allocate command reads a table): why, and what
#: to use (what is registered now: the registry's ``run_only``)
RUN_STRATEGIES: dict[str, str] = {s.name: s.run_only for s in STRATEGY_SPECS if s.run_only}


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from pruning.allocation import allocate, allocation_config, summarize

    run_only = strategy_spec(args.strategy).run_only
    if run_only:  # they prune or search with the model: a run, not a table
        raise ConfigError(f"--strategy {args.strategy}: {run_only}; accepted here: "
                          + ", ".join(s.name for s in registered_specs() if not s.run_only))
    fields: dict[str, Any] = {
        "strategy": args.strategy,
        "metric": args.metric,
        "epsilon": args.epsilon,
        "higher_prunes_more": not args.lower_prunes_more,
    }
    optional = {
        "preset": args.preset,
        "metric_mix": args.metric_mix,
        "score_groups": args.score_groups,
        "granularity": args.granularity,
        "min_sparsity": args.min_sparsity,
        "max_sparsity": args.max_sparsity,
        "owl_lambda": args.owl_lambda,
        "dlp_alpha": args.dlp_alpha,
        "dlp_statistic": args.dlp_statistic,
        "depth_beta": args.depth_beta,
    }
    fields.update({k: v for k, v in optional.items() if v is not None})
    config = allocation_config(**fields)
    owl = _block_values(args.owl_ratios, "--owl-ratios", "outlier_ratio")
    if config.strategy == "owl" and owl is None:
        raise ConfigError("--strategy owl needs --owl-ratios CSV (block, outlier_ratio) from calibration")
    dlp = _block_values(args.dlp_unimportance, "--dlp-unimportance", "unimportance")
    if config.strategy == "dlp" and dlp is None:
        raise ConfigError("--strategy dlp needs --dlp-unimportance CSV (block, unimportance) from calibration")

    if args.spectra is not None:
        matrices = _read_table(args.spectra)
    else:
        matrices = _model_matrices(args.model or "smollm2-135m", args.device, config.metrics)
    result = allocate(matrices, config, args.sparsity, owl_outlier_ratio=owl, dlp_unimportance=dlp)

    by_block = config.granularity == "matrix" and not strategy_spec(config.strategy).per_block
    table = summarize(result, by="block" if by_block else "unit")
    achieved = float((result["sparsity"] * result["numel"]).sum() / result["numel"].sum())
    with pd.option_context("display.max_rows", None, "display.width", 160, "display.float_format", "{:.4f}".format):
        print(table.to_string(index=False))
    groups = ",".join(config.score_groups)
    print(
        f"strategy {config.strategy}, metric {'+'.join(config.metrics)}, eps {config.epsilon}, score_groups {groups}, "
        f"granularity {config.granularity}: target {args.sparsity}, weighted mean {achieved:.10f}, "
        f"{len(result)} matrices"
    )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        result.to_csv(args.out, index=False)
        log.info("wrote %d rows to %s", len(result), args.out)
    return 0
