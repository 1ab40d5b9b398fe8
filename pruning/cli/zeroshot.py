"""`python -m pruning zeroshot --model M --tasks T1,T2 [--limit N] [--out FILE.json]`."""

from __future__ import annotations

import argparse
import json

from pruning.cli._args import BATCH, SEED, add_model_placement, float_in, int_in
from pruning.config.run_config import MAX_COUNT


def register(sub: argparse._SubParsersAction) -> None:
    from pruning.evaluation.zeroshot import PAPER_TASKS

    p = sub.add_parser("zeroshot", help="zero-shot accuracy through lm-eval (offline task: wiki_cloze)")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--tasks", nargs="+", default=[",".join(PAPER_TASKS)],
                   help=f"lm-eval task names, comma- or space-separated (default: the papers' {','.join(PAPER_TASKS)}, "
                        "which need the Hugging Face Hub; offline: wiki_cloze)")
    p.add_argument("--limit", type=float_in(0.0, MAX_COUNT, low_open=True), default=None,
                   help="first N documents per task (a fraction if < 1)")
    p.add_argument("--num-fewshot", type=int_in(0, 100), default=0)
    p.add_argument("--batch-size", type=BATCH, default=1)
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--stage", default="dense", help="label stored in the stage column")
    add_model_placement(p)
    p.add_argument("--out", default=None, help="write rows, settings and lm-eval results as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pruning.evaluation.zeroshot import resolve_tasks, zeroshot_evaluate
    from pruning.model.load import load_model

    tasks = [t for arg in args.tasks for t in arg.split(",") if t.strip()]
    resolve_tasks(tasks)  # fail on a bad name before loading the model
    limit = None if args.limit is None else (int(args.limit) if args.limit >= 1 else args.limit)
    loaded = load_model(args.model, dtype=args.dtype, device=args.device)
    result = zeroshot_evaluate(loaded.model, loaded.tokenizer, tasks, stage=args.stage, limit=limit,
                               num_fewshot=args.num_fewshot, batch_size=args.batch_size, seed=args.seed)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(result.to_dict(), fh, indent=1, default=str)
        print(f"wrote {args.out}")
    print(result.rows.drop(columns=["stage", "harness_version"]).to_string(index=False))
    print(f"mean acc: {result.mean_acc():.4f}  (lm-eval {result.settings.harness_version}, limit {limit}, "
          f"{args.num_fewshot}-shot, {result.seconds:.0f} s)")
    return 0
