"""How much each block changes the residual stream, beside its measured sensitivity (issue 28).

A candidate metric that needs one dense forward: block b's relative update ``||h_{b+1} - h_b|| / ||h_b||``
per token (h_b: the hidden state entering block b; position 0 left out: the attention sink), its mean over
the tokens of the first ``--windows`` wiki:validation windows of 2048 tokens (the windows the per-block
sensitivity proxies read). The last block is left out: the model's last hidden state is after the final
norm. Prints the update per block and its Spearman rho with each stored sensitivity profile
(:func:`pruning.study.sensitivity.sensitivity_profiles`, tag ``proxy-sensitivity`` by default).

    .venv/bin/python scripts/residual_updates.py smollm2-135m gemma3-270m
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from pruning.evaluation.perplexity import make_windows  # noqa: E402
from pruning.model.load import load_model  # noqa: E402
from pruning.study.sensitivity import PROXY_SENSITIVITY_TAG, sensitivity_profiles  # noqa: E402
from pruning.text.data import load_text, tokenize_text  # noqa: E402


@torch.no_grad()
def residual_updates(model: str, windows: int = 4, seqlen: int = 2048) -> pd.Series:
    """Mean relative update ``||h_{b+1} - h_b|| / ||h_b||`` per block (index: block) of the dense ``model``."""
    loaded = load_model(model)
    ids = tokenize_text(loaded.tokenizer, load_text("wiki", "validation"))
    bos = loaded.tokenizer.bos_token_id if loaded.family.bos_each_window else None
    sums: dict[int, list[torch.Tensor]] = {}
    for window in make_windows(ids, seqlen, bos)[:windows]:
        hidden = loaded.model(input_ids=window.unsqueeze(0), output_hidden_states=True).hidden_states
        for b in range(len(hidden) - 2):  # the last entry is after the final norm
            x, y = hidden[b][0, 1:].float(), hidden[b + 1][0, 1:].float()
            sums.setdefault(b, []).append((y - x).norm(dim=-1) / x.norm(dim=-1).clamp_min(1e-6))
    return pd.Series({b: float(torch.cat(v).mean()) for b, v in sums.items()}, name="residual_update")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+")
    p.add_argument("--windows", type=int, default=4)
    p.add_argument("--tag", default=PROXY_SENSITIVITY_TAG, help="the sensitivity profiles to compare with")
    args = p.parse_args(argv)
    profiles = sensitivity_profiles(tag=args.tag)
    for model in args.models:
        update = residual_updates(model, args.windows)
        print(f"{model}: relative residual update per block ({args.windows} wiki:validation windows)")
        print(update.round(3).to_frame().T.to_string())
        for method, grp in profiles[profiles["model"] == model].groupby("method"):
            both = pd.concat([grp.set_index("block")["sensitivity"], update], axis=1, join="inner").dropna()
            rho = both["sensitivity"].rank().corr(both["residual_update"].rank())
            print(f"  Spearman rho with the {method} sensitivity ({args.tag}, {len(both)} blocks): {rho:+.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
