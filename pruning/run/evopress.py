"""EvoPress on a loaded model (the ``evopress`` allocation strategy; the search itself is
:mod:`pruning.allocation.evopress`): the level database, the KL fitness, the resumable search, and the
per-matrix sparsities a run then prunes with.

1. **Database** (:func:`build_database`): one pass of the dense model over the calibration windows
   (:func:`pruning.calibration.sequential.calibrate_blocks`, blocks unchanged), and for every prunable matrix its
   weight pruned with the run's method at every level of the ladder, from the dense model's statistics
   of that matrix (the reference code's database is built the same way, one matrix at a time on dense
   inputs). Held on the compute device in the model's dtype: the sum over matrices of (levels x size),
   about 17 x the prunable weights at 8 levels (7 GB for SmolLM2-135M in float32). It is rebuilt from
   (model, calibration, method, ladder), never stored.
2. **Fitness** (:class:`KLFitness`): the mean per-token KL divergence KL(dense || candidate) of the
   next-token distributions on the first ``evopress_windows`` calibration windows — calibration text,
   never the validation or test split. The dense log-probabilities are computed once (float16 on the
   device: windows x seqlen x vocabulary); a candidate is put in place by copying only the matrices whose
   level changed.
3. **Search**: ``evopress_units`` says what gets a level: every matrix (the paper) or every block (its
   matrices share it; :func:`search_units`). ``evopress_start = "additive"`` first measures every unit's
   KL at every level alone and starts from the levels minimising their sum with the mean exact
   (:func:`pruning.allocation.evopress.additive_start`, SPDY's programme); ``uniform`` starts from the
   target everywhere, as the paper. Then the (1 + λ) evolution seeded with the calibration seed; after each generation the state is
   written to ``$PRUNING_LAB_CACHE/evopress/<run id>.json``, so a run stopped mid-search resumes there
   when started again with the same config (the file is removed once the run has its levels).
4. The model gets its dense weights back; the run then prunes block-sequentially at the searched
   per-matrix sparsities like every other allocation, so families differ by their allocation only.

The trace (parent fitness per generation) is stored in the run's ``metrics`` table
(:mod:`pruning.run.evopress_trace`: stage ``search``, names ``evopress_fitness/gen0001`` ...), the chosen
level of each matrix in its allocation table's ``score`` column.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from pruning.allocation.evopress import Ladder, SearchState, additive_start, make_ladder, search
from pruning.atomic import write_atomic
from pruning.calibration.sequential import BlockContext, calibrate_blocks
from pruning.config.run_config import RunConfig
from pruning.errors import ConfigError
from pruning.model.families import prunable_matrices
from pruning.methods.apply import pruned_weight
from pruning.methods.registry import get_method
from pruning.model.load import LoadedModel
from pruning.model.placement import Compute
from pruning.paths import cache_dir

log = logging.getLogger(__name__)

Database = dict[str, dict[int, Tensor]]


@torch.no_grad()
def build_database(loaded: LoadedModel, calib_ids: Tensor, method: str, ladder: Ladder, *,
                   compute: Compute, blocksize: int = 128, percdamp: float = 0.01,
                   unit_of: dict[str, int] | None = None,
                   progress: Callable[[int, int], None] | None = None) -> Database:
    """{matrix name: {level: pruned weight}} for every matrix of ``ladder``'s units, each matrix pruned with
    ``method`` at every level of its unit from the dense model's statistics (see the module docstring).
    ``compute``: the device and samples per block call of the pass; the whole model is on the device for the
    search, so the pass never offloads (``compute.offload`` is taken as False). ``unit_of``: matrix name ->
    unit index (default: the units are the matrices, ``ladder.names``)."""
    spec = get_method(method)
    index = unit_of if unit_of is not None else {name: i for i, name in enumerate(ladder.names)}
    db: Database = {}

    def on_block(ctx: BlockContext) -> None:
        for ref in ctx.matrices:
            if ref.name not in index:
                continue
            u = index[ref.name]
            stats = ctx.stats.get(ref.name)
            levels = range(int(ladder.lo[u]), int(ladder.hi[u]) + 1)
            db[ref.name] = {
                level: pruned_weight(ref.module.weight, method, ladder.unit_sparsity(u, level),
                                     act_sq_sum=None if stats is None else stats.act_sq_sum,
                                     hessian=None if stats is None else stats.hessian,
                                     blocksize=blocksize, percdamp=percdamp)
                for level in levels
            }

    calibrate_blocks(loaded, calib_ids, on_block, compute=dataclasses.replace(compute, offload=False),
                     collect_hessian=spec.statistics == "hessian", modifies_blocks=False, progress=progress)
    missing = [n for n in index if n not in db]
    if missing:
        raise RuntimeError(f"evopress database: {len(missing)} matrices were not visited, e.g. {missing[0]}")
    return db


class KLFitness:
    """The mean per-token KL(dense || candidate) on calibration windows (module docstring, item 2).
    ``windows``: ``(n, seqlen)`` token ids; call with (levels, window indices)."""

    def __init__(self, loaded: LoadedModel, db: Database, ladder: Ladder, windows: Tensor, device: torch.device,
                 batch_size: int = 1, unit_of: dict[str, int] | None = None) -> None:
        self.model = loaded.model
        self.modules = {ref.name: ref.module for ref in prunable_matrices(loaded.model, loaded.family)}
        self.db, self.ladder, self.device, self.batch_size = db, ladder, device, max(1, int(batch_size))
        self.unit_of = unit_of if unit_of is not None else {name: i for i, name in enumerate(ladder.names)}
        self.windows = windows.to(device)
        self.dense = {name: self.modules[name].weight.detach().clone() for name in self.unit_of}
        self.current: np.ndarray | None = None
        self.dense_logprobs = torch.cat([self._logprobs(self.windows[i:i + self.batch_size]).to(torch.float16)
                                         for i in range(0, len(self.windows), self.batch_size)])
        self.evaluations = 0

    @torch.no_grad()
    def _logprobs(self, ids: Tensor) -> Tensor:
        logits = self.model(input_ids=ids, use_cache=False).logits
        return F.log_softmax(logits.float(), dim=-1)

    @torch.no_grad()
    def apply(self, levels: np.ndarray) -> None:
        """Put the weights of ``levels`` in place (only the matrices whose level changed are copied)."""
        for name, u in self.unit_of.items():
            level = int(levels[u])
            if self.current is None or int(self.current[u]) != level:
                self.modules[name].weight.data.copy_(self.db[name][level])
        self.current = np.array(levels, dtype=np.int64, copy=True)

    @torch.no_grad()
    def __call__(self, levels: np.ndarray, idx: np.ndarray) -> float:
        self.apply(levels)
        self.evaluations += 1
        total, tokens = 0.0, 0
        idx = np.asarray(idx, dtype=np.int64)
        for start in range(0, len(idx), self.batch_size):
            part = torch.as_tensor(idx[start:start + self.batch_size], device=self.device)
            dense = self.dense_logprobs[part].float()
            cand = self._logprobs(self.windows[part])
            kl = (dense.exp() * (dense - cand)).sum(-1)  # (batch, seqlen)
            total += float(kl.sum())
            tokens += kl.numel()
        return total / max(tokens, 1)

    @torch.no_grad()
    def restore_dense(self) -> None:
        """Give every searched matrix its dense weight back (the run prunes from the dense model)."""
        for name, weight in self.dense.items():
            self.modules[name].weight.data.copy_(weight)
        self.current = None


def check_windows(calib_ids: Tensor | None, windows: int, what: str) -> None:
    """Raise ConfigError when fewer than ``windows`` calibration samples ``(nsamples, seqlen)`` are there to
    read the KL on (``what``: the windows' use in the message, e.g. ``fitness``)."""
    if calib_ids is None or len(calib_ids) < windows:
        have = 0 if calib_ids is None else len(calib_ids)
        raise ConfigError(f"allocation.evopress_windows: {windows} {what} windows need as many calibration "
                          f"samples; calibration.nsamples is {have}")


def checkpoint_path(run_id: str) -> Path:
    """Where a run's search state is kept between generations."""
    return cache_dir() / "evopress" / f"{run_id}.json"


def _load_checkpoint(path: Path, ladder: Ladder) -> SearchState | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if data.get("names") != list(ladder.names) or data.get("delta") != ladder.delta:
        log.warning("evopress checkpoint %s is of another ladder; starting afresh", path)
        return None
    return SearchState.from_dict(data["state"])


def evopress_allocation(loaded: LoadedModel, config: RunConfig, calib_ids: Tensor, matrices: pd.DataFrame, *,
                        compute: Compute,
                        progress: Callable[[str, float, str], None] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The searched levels of ``config`` (strategy ``evopress``): (one row per matrix: name, level,
    sparsity; the trace: generation, fitness, candidates). ``matrices``: the run's matrix table
    (name, numel). ``compute``: the device (the whole model moves there; never offloaded) and the samples per
    block call (also windows per fitness forward). The model is on ``compute.device`` with its dense weights
    afterwards."""
    a = config.allocation
    target = float(config.pruning.sparsity)
    check_windows(calib_ids, a.evopress_windows, "fitness")
    names, numel, unit_of = search_units(matrices, a.evopress_units)
    ladder = make_ladder(names, numel, target, a.evopress_levels, a.min_sparsity, a.max_sparsity)
    say = progress or (lambda stage, fraction, message: None)
    device, batch_size = torch.device(compute.device), compute.batch_size
    loaded.model.to(device)
    n_blocks = int(matrices["block"].max()) + 1
    say("allocation", 0.0, "EvoPress: level database")
    db = build_database(loaded, calib_ids, config.pruning.method, ladder, compute=compute,
                        blocksize=config.pruning.blocksize, percdamp=config.pruning.percdamp, unit_of=unit_of,
                        progress=lambda done, total: say("allocation", 0.3 * done / total,
                                                         f"EvoPress database: block {done}/{n_blocks}"))
    fitness = KLFitness(loaded, db, ladder, calib_ids[: a.evopress_windows], device, batch_size, unit_of=unit_of)
    path = checkpoint_path(config.run_id)
    state = _load_checkpoint(path, ladder)
    if state is not None:
        log.info("evopress: resuming %s at generation %d", config.run_id, state.generation)

    def keep(current: SearchState) -> None:
        text = json.dumps({"names": list(ladder.names), "delta": ladder.delta, "state": current.to_dict()})
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda tmp: tmp.write_text(text))
        say("allocation", 0.4 + 0.6 * current.generation / max(a.evopress_generations, 1),
            f"EvoPress generation {current.generation}/{a.evopress_generations}: KL {current.fitness:.4f}")

    try:
        if state is None and a.evopress_start == "additive":
            start, _cost = additive_start(ladder, fitness, a.evopress_windows,
                                          progress=lambda done, total: say("allocation", 0.3 + 0.1 * done / total,
                                                                           f"EvoPress additive costs: unit {done}/{total}"))
            state = SearchState(0, start, float(fitness(start, np.arange(a.evopress_windows))))
            log.info("evopress: additive start, KL %.5f", state.fitness)
            keep(state)
        final = search(ladder, fitness, windows=a.evopress_windows, generations=a.evopress_generations,
                       offspring=a.evopress_offspring, survivors=a.evopress_survivors,
                       first_windows=a.evopress_first_windows, seed=config.calibration.seed, state=state,
                       on_generation=keep)
    finally:
        fitness.restore_dense()
        del db
    path.unlink(missing_ok=True)
    log.info("evopress: %d generations, %d fitness evaluations, KL %.5f, mean sparsity %.9f",
             final.generation, fitness.evaluations, final.fitness, ladder.mean_sparsity(final.parent))
    unit = np.array([unit_of[name] for name in matrices["name"]], dtype=np.int64)
    chosen = final.parent[unit]
    levels = pd.DataFrame({"name": list(matrices["name"]), "level": chosen,
                           "sparsity": ladder.sparsity(final.parent)[unit]})
    trace = pd.DataFrame(final.trace, columns=["generation", "fitness", "candidates", "first_best"])
    return levels, trace


def search_units(matrices: pd.DataFrame, units: str) -> tuple[list[str], list[int], dict[str, int]]:
    """The units of a search over ``matrices`` (columns name, numel, block): ``"matrix"`` = one unit per
    matrix; ``"block"`` = one unit per block (``block3``; size the sum of its matrices, which share its
    level). Returns (unit names, unit sizes, matrix name -> unit index)."""
    if units == "matrix":
        names = [str(n) for n in matrices["name"]]
        return names, [int(x) for x in matrices["numel"]], {n: i for i, n in enumerate(names)}
    if units != "block":
        raise ConfigError(f"allocation.evopress_units: {units!r} is invalid; accepted: 'matrix', 'block'")
    blocks = sorted(int(b) for b in set(matrices["block"]))
    position = {b: i for i, b in enumerate(blocks)}
    sizes = matrices.groupby("block")["numel"].sum()
    return ([f"block{b}" for b in blocks], [int(sizes[b]) for b in blocks],
            {str(n): position[int(b)] for n, b in zip(matrices["name"], matrices["block"])})
