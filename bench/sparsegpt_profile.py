"""Where SparseGPT's time goes on one LLaMA-7B-shape block (Frantar & Alistarh 2023).

Stages timed on ``--device`` for one block (hidden 4096, MLP 11008; 128 x 2048 calibration tokens
as random fp16 activations): the Hessian accumulation X^T X per input group (float32 GEMM of a
float32 copy — the old hook — against the 16-bit GEMM with float32 accumulation), the damped
Cholesky inverse (once per matrix as before, once per input group now), mask selection, the
per-column loop of the reference kernel against the batched triangular solves of the new one, and
the host<->device transfer of the block's weights (pageable vs pinned). Also checks on the device
that the new kernel's masks equal the reference's.

    python3 bench/sparsegpt_profile.py --device cuda                  # H200
    .venv/bin/python bench/sparsegpt_profile.py --device cpu --tiny --no-write
Writes section ``sparsegpt_profile`` of bench/RESULTS.md and JSON to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench._results import markdown_table, write_section  # noqa: E402
from pruning.calibration.linear_stats import accumulate_xtx  # noqa: E402
from pruning.methods.select import prune_count  # noqa: E402
from pruning.methods.sparsegpt import (  # noqa: E402
    inverse_hessian_cholesky,
    masked_obs_errors,
    sparsegpt_prune,
    sparsegpt_prune_group,
)

log = logging.getLogger("bench.sparsegpt_profile")


def timed(device: torch.device, fn, repeat: int = 1) -> float:
    """Seconds per call of ``fn`` (synchronised)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) / repeat


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--intermediate", type=int, default=11008)
    p.add_argument("--nsamples", type=int, default=128)
    p.add_argument("--seqlen", type=int, default=2048)
    p.add_argument("--sparsity", type=float, default=0.7)
    p.add_argument("--tiny", action="store_true", help="hidden 128, MLP 344, 4 x 64 tokens (CPU smoke)")
    p.add_argument("--json", default=None, help="write the figures here too")
    p.add_argument("--section", default="sparsegpt_profile")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    if args.tiny:
        args.hidden, args.intermediate, args.nsamples, args.seqlen = 128, 344, 4, 64
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    dev = torch.device(args.device)
    h, m = args.hidden, args.intermediate
    gen = torch.Generator(device="cpu").manual_seed(0)
    # matrices of one block: (name, out, in, input group)
    mats = [("q", h, h, "qkv"), ("k", h, h, "qkv"), ("v", h, h, "qkv"), ("o", h, h, "o"),
            ("gate", m, h, "gateup"), ("up", m, h, "gateup"), ("down", h, m, "down")]
    widths = {"qkv": h, "o": h, "gateup": h, "down": m}
    weights = {name: (torch.randn(out, inp, generator=gen) * 0.02).to(torch.float16) for name, out, inp, _ in mats}
    rows: list[dict] = []

    # 1. Hessian accumulation: one (seqlen, in) fp16 sample per hook call, nsamples calls per group
    xs = {g: torch.randn(args.seqlen, w, generator=gen).to(device=dev, dtype=torch.float16) for g, w in widths.items()}
    for label, use_half in (("float32 copy + addmm_ (old)", False), ("16-bit GEMM, float32 accumulate (new)", True)):
        total = 0.0
        for g, x in xs.items():
            xtx = torch.zeros(widths[g], widths[g], device=dev)

            def step(x=x, xtx=xtx) -> None:
                if use_half:
                    accumulate_xtx(xtx, x, x.float())
                else:
                    xf = x.float()
                    xtx.addmm_(xf.t(), xf)

            total += timed(dev, step, repeat=4) * args.nsamples
        rows.append({"stage": f"Hessian X^T X, 4 groups, {args.nsamples} samples: {label}", "seconds": total})
    hessians = {}
    for g, x in xs.items():
        X = torch.randn(4 * widths[g], widths[g], generator=gen).to(dev)
        hessians[g] = 2.0 / X.shape[0] * X.t() @ X
        del X
    del xs

    # 2. inverse: per matrix (old: 7) vs per input group (new: 4)
    per_group = {g: timed(dev, lambda H=H: inverse_hessian_cholesky(H, 0.01)) for g, H in hessians.items()}
    per_matrix = sum(per_group[g] for *_, g in mats)
    rows.append({"stage": "damped Cholesky inverse, once per matrix (old, 7)", "seconds": per_matrix})
    rows.append({"stage": "damped Cholesky inverse, once per input group (new, 4)", "seconds": sum(per_group.values())})

    # 3. in-block errors for one 128-column block of the widest group, loop vs solve (x blocks per block)
    U, _ = inverse_hessian_cholesky(hessians["gateup"], 0.01)
    W1 = torch.cat([weights["gate"], weights["up"]]).to(dev).float()[:, :128]
    U1 = U[:128, :128]
    sal = W1**2 / torch.diag(U1).reshape(1, -1) ** 2
    mask1 = torch.zeros_like(W1, dtype=torch.bool)
    mask1.view(-1)[torch.sort(sal.reshape(-1), stable=True).indices[: prune_count(W1.numel(), args.sparsity)]] = True
    t_sort = timed(dev, lambda: torch.sort(sal.reshape(-1), stable=True), repeat=3)
    n_blocks = sum(-(-inp // 128) for _, _, inp, _ in mats)
    rows.append({"stage": f"mask selection (stable sort), {n_blocks} column blocks", "seconds": t_sort * n_blocks})
    for method in ("loop", "solve"):
        t = timed(dev, lambda method=method: masked_obs_errors(W1, U1, mask1, method), repeat=2)
        rows.append({"stage": f"in-block errors ({method}), gate+up rows, x{n_blocks // 2} blocks (approx.)",
                     "seconds": t * n_blocks / 2})

    # 4. whole kernels on the block (old: per matrix, column loop; new: per group, solves)
    def old_block() -> None:
        for name, _, _, g in mats:
            sparsegpt_prune(weights[name].to(dev), hessians[g], args.sparsity, reference=True)

    def new_block() -> None:
        for g in widths:
            group = [weights[name].to(dev) for name, _, _, gg in mats if gg == g]
            sparsegpt_prune_group(group, hessians[g], [args.sparsity] * len(group))

    rows.append({"stage": "whole kernel, 7 matrices: reference column loop (old)", "seconds": timed(dev, old_block)})
    rows.append({"stage": "whole kernel, 4 groups: batched solves (new)", "seconds": timed(dev, new_block)})
    agree = []
    for name, _, _, g in mats[:4] + mats[6:]:
        ref_W, ref_mask = sparsegpt_prune(weights[name].to(dev), hessians[g], args.sparsity, reference=True)
        new_W, new_mask = sparsegpt_prune_group([weights[name].to(dev)], hessians[g], [args.sparsity])[0]
        agree.append({"matrix": name, "mask_equal_share": float((ref_mask == new_mask).float().mean()),
                      "max_abs_diff": float((ref_W - new_W).abs().max())})

    # 5. transfers of the block's weights
    host = [w.clone() for w in weights.values()]
    if dev.type == "cuda":
        pinned = [w.pin_memory() for w in host]
        rows.append({"stage": "block host->device, pageable", "seconds": timed(dev, lambda: [w.to(dev) for w in host])})
        rows.append({"stage": "block host->device, pinned non_blocking",
                     "seconds": timed(dev, lambda: [w.to(dev, non_blocking=True) for w in pinned])})
        on_dev = [w.to(dev) for w in host]
        rows.append({"stage": "block device->host, new pageable tensors", "seconds": timed(dev, lambda: [w.to("cpu") for w in on_dev])})
        rows.append({"stage": "block device->host, into pinned non_blocking",
                     "seconds": timed(dev, lambda: [p_.copy_(d, non_blocking=True) for p_, d in zip(pinned, on_dev)])})
    body = (
        f"One LLaMA-7B-shape block (hidden {h}, MLP {m}, fp16 weights), {args.nsamples} x {args.seqlen} tokens, "
        f"{args.sparsity:.0%} unstructured, on {dev}. Times are per block (x32 for the model).\n\n"
        + markdown_table(rows) + "\n\nNew kernel against the reference on this device (one matrix each):\n\n"
        + markdown_table(agree)
    )
    print(body)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"stages": rows, "agreement": agree, "device": str(dev)}, indent=1))
    if not args.no_write:
        write_section(args.section, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
