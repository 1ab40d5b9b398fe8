"""`python -m pruning attention --model M [--tokens N] [--seqlen L] [--out FILE.csv]`."""

from __future__ import annotations

import argparse

from pruning.cli._args import add_model_placement, dataset_name, int_in
from pruning.config.run_config import MAX_SEQLEN


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("attention", help="attention entropy per block/head and QK/V spectral statistics")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--tokens", type=int_in(2, MAX_SEQLEN), default=512,
                   help="evaluation tokens (first N of the test split)")
    p.add_argument("--seqlen", type=int_in(2, MAX_SEQLEN), default=None,
                   help="window length (default: --tokens, one window)")
    p.add_argument("--dataset", type=dataset_name, default="wiki", help="wiki | lee | wikitext2 | text:PATH")
    p.add_argument("--stage", default="dense", help="label stored in the stage column")
    add_model_placement(p)
    p.add_argument("--out", default=None, help="write the tidy table (stage, block, head, statistic, value) as CSV")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pruning.attention import attention_table, summary
    from pruning.model.load import load_model

    loaded = load_model(args.model, dtype=args.dtype, device=args.device)
    bar = tqdm(desc="attention", unit="win")

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    frame = attention_table(loaded, args.stage, args.tokens, args.dataset, args.seqlen, device=args.device, progress=progress)
    bar.close()
    if args.out:
        frame.to_csv(args.out, index=False)
        print(f"wrote {len(frame)} rows to {args.out}")
    print(f"{args.model}: {frame.attrs['tokens']} tokens in windows of {frame.attrs['seqlen']}; attention "
          f"implementation {frame.attrs['attn_implementation']!r}, probabilities measured with "
          f"{frame.attrs['measured_with']!r}")
    print(summary(frame).to_string(index=False))
    return 0
