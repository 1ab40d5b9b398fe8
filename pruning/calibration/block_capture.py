"""Capture of the inputs of every decoder block in one pass of the model (step 1 of the
block-sequential protocol, :mod:`pruning.calibration.sequential`): each block is replaced by a pass-through
catcher, so the model's own code builds what its blocks need (attention masks, ``position_ids``,
rotary ``position_embeddings``); the last catcher stops the forward."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


class _StopForward(Exception):
    """Raised by the last catcher: the capture pass needs nothing after the decoder blocks."""


class _Catcher(nn.Module):
    """Stands in for one decoder block during capture: records its inputs and passes them through."""

    def __init__(self, block: nn.Module, index: int, record: dict[int, Any], last: bool) -> None:
        super().__init__()
        self.block = block
        self.index = index
        self.record = record
        self.last = last

    def __getattr__(self, name: str) -> Any:  # attributes a model may read from its blocks
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("block"), name)

    def forward(self, hidden_states: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        if args:
            raise RuntimeError(
                f"calibration capture: block {self.index} received {len(args)} positional arguments besides "
                "hidden_states; only keyword arguments are supported (extend pruning/calibration/block_capture.py)"
            )
        self.record[self.index] = (hidden_states, kwargs)
        if self.last:
            raise _StopForward
        return hidden_states


def _to_device(obj: Any, device: torch.device, memo: dict[int, Any]) -> Any:
    """Move tensors (also inside tuples/lists/dicts) to ``device``, keeping shared objects shared."""
    key = id(obj)
    if key in memo:
        return memo[key]
    if isinstance(obj, Tensor):
        out: Any = obj.to(device)
    elif isinstance(obj, tuple):
        out = tuple(_to_device(o, device, memo) for o in obj)
    elif isinstance(obj, list):
        out = [_to_device(o, device, memo) for o in obj]
    elif isinstance(obj, dict):
        out = {k: _to_device(v, device, memo) for k, v in obj.items()}
    else:
        out = obj
    memo[key] = out
    return out


def _model_device(model: nn.Module) -> torch.device:
    """Device of the input embedding (where the capture pass runs)."""
    return model.get_input_embeddings().weight.device


@torch.no_grad()
def capture_block_inputs(
    model: nn.Module, layers: nn.ModuleList, calib_ids: Tensor, device: torch.device
) -> tuple[Tensor, list[dict[str, Any]]]:
    """Hidden states entering block 0 ``(nsamples, seqlen, hidden)`` on ``device`` (model dtype)
    and the keyword arguments of every block (tensors moved to ``device``)."""
    nsamples = calib_ids.shape[0]
    n_blocks = len(layers)
    record: dict[int, Any] = {}
    originals = list(layers)
    run_device = _model_device(model)
    inps: Tensor | None = None
    block_kwargs: list[dict[str, Any]] = []
    try:
        for i in range(n_blocks):
            layers[i] = _Catcher(originals[i], i, record, last=i == n_blocks - 1)
        for s in range(nsamples):
            if s == 1:  # kwargs are known; stop at block 0 from now on
                layers[0].last = True
            record.clear()
            try:
                model(input_ids=calib_ids[s : s + 1].to(run_device), use_cache=False)
            except _StopForward:
                pass
            if 0 not in record:
                raise RuntimeError("calibration capture: block 0 was never called; is family.layers_path right?")
            hidden0 = record[0][0]  # (1, seqlen, hidden)
            if inps is None:
                inps = torch.empty((nsamples, *hidden0.shape[1:]), dtype=hidden0.dtype, device=device)
                missing = [i for i in range(n_blocks) if i not in record]
                if missing:
                    raise RuntimeError(f"calibration capture: blocks {missing} were never called by the model's forward")
                memo: dict[int, Any] = {}
                block_kwargs = [_to_device(record[i][1], device, memo) for i in range(n_blocks)]
            inps[s] = hidden0[0].to(device)
    finally:
        for i in range(n_blocks):
            layers[i] = originals[i]
        record.clear()
    assert inps is not None
    return inps, block_kwargs
