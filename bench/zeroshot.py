"""Zero-shot accuracy through lm-eval on the offline model: dense vs 50% Wanda (uniform).

`python -m bench.zeroshot [--limit N]` — the offline `wiki_cloze` task (4 choices, chance 0.25)
scored by lm-eval 0.4 on SmolLM2-135M, dense and after Wanda (Sun et al. 2023) at 50%
unstructured sparsity, every matrix at the same sparsity; the same items for both. Also records
the attention statistics summary (pruning/attention/) of both stages and a short perplexity
as a check that pruning happened. Writes section "zeroshot" of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import time

from bench._results import markdown_table, write_section

log = logging.getLogger("bench.zeroshot")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--limit", type=int, default=60, help="wiki_cloze items per stage")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--nsamples", type=int, default=16, help="Wanda calibration windows")
    parser.add_argument("--seqlen", type=int, default=512, help="calibration / perplexity window")
    parser.add_argument("--attention-tokens", type=int, default=256)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from pruning.attention import attention_table, summary
    from pruning.text.data import calibration_batch, load_text, tokenize_text
    from pruning.evaluation.perplexity import perplexity
    from pruning.evaluation.zeroshot import zeroshot_evaluate
    from pruning.model.families import prunable_matrices
    from pruning.model.load import load_model
    from pruning.run.prune import prune_model

    t_start = time.perf_counter()
    loaded = load_model(args.model)
    test_ids = tokenize_text(loaded.tokenizer, load_text("wiki", "test"))
    rows, attention_frames, timings = [], [], {}

    def evaluate(stage: str) -> None:
        t0 = time.perf_counter()
        result = zeroshot_evaluate(loaded.model, loaded.tokenizer, ["wiki_cloze"], stage=stage,
                                   limit=args.limit, batch_size=args.batch_size)
        timings[f"zero-shot {stage}"] = time.perf_counter() - t0
        ppl = perplexity(loaded.model, test_ids, args.seqlen, limit_windows=4, dataset="wiki")
        acc = result.rows[(result.rows.task == "wiki_cloze")].set_index("metric")
        rows.append({
            "stage": stage, "task": "wiki_cloze", "items": args.limit,
            "acc": float(acc.loc["acc", "value"]), "acc_stderr": float(acc.loc["acc", "stderr"]),
            "acc_norm": float(acc.loc["acc_norm", "value"]), "chance": 0.25,
            f"wiki ppl (4x{args.seqlen})": ppl.ppl, "lm-eval": result.settings.harness_version,
            "seconds": round(timings[f"zero-shot {stage}"], 1),
        })
        t0 = time.perf_counter()
        attention_frames.append(attention_table(loaded, stage, tokens=args.attention_tokens))
        timings[f"attention {stage}"] = time.perf_counter() - t0

    evaluate("dense")
    t0 = time.perf_counter()
    calib = calibration_batch(loaded.tokenizer, "wiki", args.nsamples, args.seqlen, seed=0)
    sparsity = {ref.name: args.sparsity for ref in prunable_matrices(loaded.model, loaded.family)}
    table = prune_model(loaded, "wanda", sparsity, calib)
    timings["wanda prune"] = time.perf_counter() - t0
    achieved = float((table.sparsity_achieved * table.numel).sum() / table.numel.sum())
    evaluate(f"wanda {args.sparsity:.0%}")

    import pandas as pd

    stats = pd.concat([summary(f) for f in attention_frames])
    keep = ["attn_entropy", "attn_entropy_norm", "qk_entropy", "qk_entropy_layer", "v_entropy", "v_rank_ratio"]
    pivot = stats[stats.statistic.isin(keep)].pivot(index="statistic", columns="stage", values="value").reset_index()
    dense, pruned = rows
    verdict = "drops" if pruned["acc"] < dense["acc"] else "stays (within noise)" if pruned["acc"] - dense["acc"] <= 2 * dense["acc_stderr"] else "rises"
    body = "\n\n".join([
        f"Offline lm-eval task `wiki_cloze` (first {args.limit} of 500 items, 4 choices, 0-shot, batch {args.batch_size}) on "
        f"`{args.model}`; Wanda {args.sparsity:.0%} uniform (achieved {achieved:.4f}), calibration "
        f"{args.nsamples} x {args.seqlen} tokens of the wiki calib split, seed 0.",
        markdown_table(rows),
        f"Dense accuracy {dense['acc']:.3f} ± {dense['acc_stderr']:.3f} vs chance 0.25; after Wanda "
        f"{pruned['acc']:.3f} ± {pruned['acc_stderr']:.3f}: accuracy {verdict}.",
        f"Attention statistics (mean over blocks/heads, {args.attention_tokens} tokens; definitions in docs/attention.md):",
        markdown_table(pivot.to_dict(orient="records")),
        "Timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items())
        + f"; total {time.perf_counter() - t_start:.0f} (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the end).",
    ])
    write_section("zeroshot", body)
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
