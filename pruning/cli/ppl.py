"""`python -m pruning ppl --model M --dataset D --seqlen N [--limit-windows K]`."""

from __future__ import annotations

import argparse
import json

from pruning.cli._args import BATCH, COUNT, SEQLEN, add_model_placement, dataset_name
from pruning.config.run_config import MAX_SEQLEN


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ppl", help="perplexity of a (dense) model on a corpus")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--dataset", type=dataset_name, default="wiki", help="wiki | lee | wikitext2 | c4 | text:PATH")
    p.add_argument("--seqlen", type=SEQLEN, default=2048, help=f"window length in tokens, 1..{MAX_SEQLEN}")
    p.add_argument("--limit-windows", type=COUNT, default=None, help="evaluate only the first K windows")
    p.add_argument("--batch-size", type=BATCH, default=1)
    add_model_placement(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pruning.text.data import load_text, tokenize_text
    from pruning.evaluation.perplexity import perplexity
    from pruning.model.load import load_model

    loaded = load_model(args.model, dtype=args.dtype, device=args.device)
    ids = tokenize_text(loaded.tokenizer, load_text(args.dataset, "test"))
    bos = loaded.window_bos
    bar = tqdm(desc=f"ppl {args.dataset}", unit="win")

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    result = perplexity(loaded.model, ids, args.seqlen, args.limit_windows, args.batch_size, bos, args.dataset, progress)
    bar.close()
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(
            f"{args.model} on {args.dataset}: ppl {result.ppl:.4f}  (nll {result.nll:.4f}, {result.n_tokens} tokens, "
            f"{result.n_windows}/{result.total_windows} windows of {result.seqlen})"
        )
    return 0
