"""Power-law fits of an empirical spectral density (ESD): Hill/MLE exponent and KS distance for
every candidate xmin at once, and the three xmin rules of DESIGN.md.

Heavy-tailed self-regularization (Martin & Mahoney 2021, "Implicit self-regularization in deep
neural networks", JMLR 22(165)) fits the tail of the ESD of W^T W with p(lambda) ~ lambda^-alpha.
The fit is the continuous power-law MLE with xmin chosen by minimum Kolmogorov-Smirnov distance
(Clauset, Shalizi & Newman 2009, "Power-law distributions in empirical data", SIAM Review 51(4)):

    alpha(xmin) = 1 + n / sum_{lambda_j >= xmin} ln(lambda_j / xmin)      n = tail size
    D(xmin)     = max_j | 1 - (lambda_j / xmin)^(1 - alpha) - k_j / n |   k_j = 0 .. n-1

(the empirical CDF is taken as k/n, k = 0..n-1, exactly as weightwatcher 0.7.7's ``WWFit`` and
AlphaPruning's ``net_esd_estimator`` do, not Clauset's two-sided KS).

Everything works on a batch ``x`` of shape ``(B, n)``: each row one spectrum, ascending, float64.
Rows of different lengths are left-padded with zeros: a non-positive entry is never a candidate,
and the tail of candidate ``i`` only holds entries ``j >= i``, so padding changes nothing.
The KS scan is a vectorized sweep over candidate chunks (reverse cumulative sums of ln(lambda)
give every alpha at once; one ``(B, chunk, n)`` tensor gives every D), runnable on any device.

xmin rules (DESIGN.md "The science"):

* ``ww``   — weightwatcher 0.7.7 default (``fit_powerlaw`` -> ``WWFit``): eigenvalues <= 1e-5
  are dropped; candidates are all remaining eigenvalues but the largest; alpha <= 1 scores D = 1;
  first minimum of D. Fewer than 20 remaining eigenvalues: its small-N rule (bias-corrected
  alpha = 1 + (n-1)/S on tails of at least 8; ``fit_powerlaw_smallN`` picks by D - 0.868/sqrt(n)
  but ``WWFit.__init__`` then re-selects the first minimum of D, which is what 0.7.7 returns).
* ``peak`` — AlphaPruning (Lu et al. 2024, "AlphaPruning: using heavy-tailed self regularization
  theory for improved layer-wise pruning of LLMs", NeurIPS) ``fix_fingers='xmin_peak'``:
  unfiltered (positive) eigenvalues; 100-bin histogram of log10(lambda) between its min and max;
  peak = 10^(left edge of the fullest bin); candidates with log10(0.95 peak) <= xmin <= 1.5 peak
  (the lower bound compares a log with a linear value, as the reference code does); among those
  with alpha > 1 the smallest D.
* ``mid``  — AlphaPruning ``xmin_mid``: xmin = the eigenvalue at index m // 2 of the m positive
  eigenvalues (the median for odd m).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

WW_EVALS_THRESH = 1e-5  # weightwatcher.constants.EVALS_THRESH
WW_SMALL_N = 20  # weightwatcher WW_powerlaw.SMALL_N_CUTOFF
WW_SMALL_N_MIN_TAIL = 8  # WWFit.fit_powerlaw_smallN(k_min=8)
PEAK_BINS = 100
PEAK_XMIN_MAX_FACTOR = 1.5
PEAK_XMIN_MIN_FACTOR = 0.95


@dataclass
class TailFit:
    """One xmin rule's result for each row of a batch; every field ``(B,)`` float64 / int64.

    ``index`` is the chosen candidate's position in the (padded) row, -1 where no candidate fits;
    ``alpha``, ``xmin``, ``D`` are NaN there and ``n_tail`` is 0.
    """

    alpha: Tensor
    xmin: Tensor
    D: Tensor
    n_tail: Tensor
    index: Tensor


@dataclass
class PowerLawFits:
    """The three rules of one batch, plus the ESD peak used by the ``peak`` rule (``(B,)``)."""

    ww: TailFit
    peak: TailFit
    mid: TailFit
    esd_peak: Tensor  # 10^(left edge of the fullest log10 bin), NaN if no positive eigenvalue


def hill_alphas(logx: Tensor, bias_corrected: bool = False) -> Tensor:
    """Hill/MLE exponent for every candidate xmin = x_i, i = 0..n-2 (Clauset et al. 2009, eq. 3.1).

    logx: ``(B, n)`` ln of an ascending spectrum. Returns ``(B, n-1)``; alpha_i = 1 + n_i / S_i with
    n_i = n - i and S_i = sum_{j>=i} (ln x_j - ln x_i) (reverse cumulative sums, centred for
    precision). ``bias_corrected``: 1 + (n_i - 1) / S_i (weightwatcher's small-N rule).
    """
    n = logx.shape[-1]
    centred = logx - logx[..., -1:]  # values <= 0, so the sums stay small
    rev_cumsum = centred.flip(-1).cumsum(-1).flip(-1)  # (B, n): sum_{j>=i}
    n_tail = torch.arange(n, 0, -1, dtype=logx.dtype, device=logx.device)  # (n,): n - i
    spread = rev_cumsum - n_tail * centred  # (B, n): S_i
    numer = n_tail - 1 if bias_corrected else n_tail
    return (1.0 + numer / spread)[..., :-1]


def ks_distances(logx: Tensor, alphas: Tensor, first: int = 0, max_elements: int = 1 << 18) -> Tensor:
    """KS distance D_i = max_{j>=i} |1 - (x_j/x_i)^(1-alpha_i) - (j-i)/(n-i)| of every candidate.

    logx: ``(B, n)`` ln of ascending spectra; alphas: ``(B, n-1)`` one exponent per candidate.
    Candidates ``i < first`` are skipped (D = +inf). Work is chunked over candidates so that one
    ``(B, chunk, n - chunk_start)`` tensor has at most ``max_elements`` entries. Returns ``(B, n-1)``.
    """
    batch, n = logx.shape
    out = torch.full((batch, n - 1), float("inf"), dtype=logx.dtype, device=logx.device)
    cols = torch.arange(n, dtype=logx.dtype, device=logx.device)
    start = max(0, first)
    while start < n - 1:
        width = n - start
        chunk = max(1, min(n - 1 - start, max_elements // max(1, batch * width)))
        stop = start + chunk
        cand = torch.arange(start, stop, device=logx.device)  # (c,)
        # one (B, c, w) buffer, updated in place: ln(x_j/x_i) -> |F_fit - F_emp|
        gap = logx[:, None, start:] - logx[:, start:stop, None]  # (B, c, w): ln(x_j / x_i)
        gap.mul_(1.0 - alphas[:, start:stop, None]).exp_()  # (x_j/x_i)^(1-alpha) = 1 - F_fit
        offset = cols[start:][None, :] - cand[:, None].to(logx.dtype)  # (c, w): j - i
        emp_cdf = offset / (n - cand).to(logx.dtype)[:, None]  # (c, w): k / n_i
        gap.add_(emp_cdf - 1.0).abs_()  # |(1 - F_fit) + F_emp - 1| = |F_fit - F_emp|
        gap.masked_fill_((offset < 0)[None], 0.0)  # j < i is not in candidate i's tail
        out[:, start:stop] = gap.amax(dim=-1)
        start = stop
    return out


def _select(alphas: Tensor, ds: Tensor, allowed: Tensor, x: Tensor, objective: Tensor | None = None) -> TailFit:
    """First minimum of the objective (default: D, with D := 1 where alpha <= 1, as both reference
    codes initialise their D arrays with ones) over the allowed candidates ``(B, n-1)``."""
    n = x.shape[-1]
    score = objective if objective is not None else torch.where(alphas > 1, ds, torch.ones_like(ds))
    score = torch.where(allowed & torch.isfinite(score), score, torch.full_like(score, float("inf")))
    index = score.argmin(dim=-1)  # first minimum, like numpy / torch argmin
    picked_alpha = alphas.gather(-1, index[:, None])[:, 0]
    ok = torch.isfinite(score.gather(-1, index[:, None])[:, 0]) & (picked_alpha > 1)
    nan = torch.full_like(picked_alpha, float("nan"))
    return TailFit(
        alpha=torch.where(ok, picked_alpha, nan),
        xmin=torch.where(ok, x.gather(-1, index[:, None])[:, 0], nan),
        D=torch.where(ok, ds.gather(-1, index[:, None])[:, 0], nan),
        n_tail=torch.where(ok, n - index, torch.zeros_like(index)),
        index=torch.where(ok, index, torch.full_like(index, -1)),
    )


def esd_peak(x: Tensor, bins: int = PEAK_BINS) -> Tensor:
    """10^(left edge of the fullest bin) of a ``bins``-bin histogram of log10(x) over the positive
    entries of each row, between their min and max (AlphaPruning's ``torch.histc`` + ``linspace``).
    x: ``(B, n)`` ascending. Returns ``(B,)``; NaN for rows without positive entries."""
    positive = x > 0
    logs = torch.where(positive, x, torch.ones_like(x)).log10()  # (B, n)
    lo = torch.where(positive, logs, torch.full_like(logs, float("inf"))).amin(-1)  # (B,)
    hi = torch.where(positive, logs, torch.full_like(logs, float("-inf"))).amax(-1)
    width = (hi - lo).clamp_min(torch.finfo(x.dtype).tiny)
    idx = ((logs - lo[:, None]) / width[:, None] * bins).floor().clamp(0, bins - 1).long()  # (B, n)
    counts = torch.zeros(x.shape[0], bins, dtype=x.dtype, device=x.device)
    counts.scatter_add_(-1, idx, positive.to(x.dtype))
    fullest = counts.argmax(-1).to(x.dtype)  # first maximum
    peak = 10.0 ** (lo + fullest * (hi - lo) / bins)
    return torch.where(positive.any(-1), peak, torch.full_like(peak, float("nan")))


def fit_power_laws(x: Tensor, max_elements: int = 1 << 18) -> PowerLawFits:
    """All three xmin rules (module docstring) for a batch of spectra.

    x: ``(B, n)`` eigenvalues, ascending along each row, any float dtype (computed in float64 on
    x's device); rows may be left-padded with zeros. Returns :class:`PowerLawFits` of ``(B,)``.
    """
    x = x.to(torch.float64)
    batch, n = x.shape
    device = x.device
    if n < 2:
        empty = torch.full((batch,), float("nan"), dtype=x.dtype, device=device)
        none = TailFit(empty, empty, empty, torch.zeros(batch, dtype=torch.long, device=device),
                       torch.full((batch,), -1, dtype=torch.long, device=device))
        return PowerLawFits(none, none, none, empty)
    positive = x > 0
    logx = torch.where(positive, x, torch.ones_like(x)).log()  # (B, n); padding masked below
    cand = torch.arange(n - 1, device=device)  # (n-1,)
    cand_x = x[:, :-1]  # (B, n-1): xmin of each candidate
    first_pos = (~positive).sum(-1)  # (B,): index of the first positive entry (ascending rows)
    first_ww = (x <= WW_EVALS_THRESH).sum(-1)  # (B,): weightwatcher drops evals <= 1e-5
    start = int(first_pos.min().item())

    alphas = hill_alphas(logx)  # (B, n-1)
    ds = ks_distances(logx, alphas, first=start, max_elements=max_elements)

    # weightwatcher default rule (filtered count >= 20); the small-N rule is patched in below
    ww_allowed = cand[None, :] >= first_ww[:, None]
    ww = _select(alphas, ds, ww_allowed, x)
    n_ww = n - first_ww
    small = (n_ww < WW_SMALL_N) & (n_ww >= 2)
    if bool(small.any()):
        rows = small.nonzero()[:, 0]
        ww_small = _ww_small_n(x[rows], logx[rows], first_ww[rows], max_elements)
        for field in ("alpha", "xmin", "D", "n_tail", "index"):
            getattr(ww, field)[rows] = getattr(ww_small, field)
    few = n_ww < 2
    if bool(few.any()):
        ww.alpha[few], ww.xmin[few], ww.D[few], ww.n_tail[few], ww.index[few] = float("nan"), float("nan"), float("nan"), 0, -1

    # AlphaPruning xmin_peak
    peak = esd_peak(x)  # (B,)
    lower = torch.log10(PEAK_XMIN_MIN_FACTOR * peak)  # sic: a log compared with a linear value
    upper = PEAK_XMIN_MAX_FACTOR * peak
    peak_allowed = (cand[None, :] >= first_pos[:, None]) & (cand_x >= lower[:, None]) & (cand_x <= upper[:, None])
    peak_fit = _select(alphas, ds, peak_allowed, x)

    # AlphaPruning xmin_mid: index m // 2 of the m positive eigenvalues; no alpha > 1 condition
    mid_index = first_pos + (n - first_pos) // 2  # (B,)
    mid_ok = mid_index <= n - 2
    safe = mid_index.clamp(max=n - 2)[:, None]
    nan = torch.full((batch,), float("nan"), dtype=x.dtype, device=device)
    mid = TailFit(
        alpha=torch.where(mid_ok, alphas.gather(-1, safe)[:, 0], nan),
        xmin=torch.where(mid_ok, x.gather(-1, safe)[:, 0], nan),
        D=torch.where(mid_ok, ds.gather(-1, safe)[:, 0], nan),
        n_tail=torch.where(mid_ok, n - mid_index, torch.zeros_like(mid_index)),
        index=torch.where(mid_ok, mid_index, torch.full_like(mid_index, -1)),
    )
    return PowerLawFits(ww=ww, peak=peak_fit, mid=mid, esd_peak=peak)


def _ww_small_n(x: Tensor, logx: Tensor, first: Tensor, max_elements: int) -> TailFit:
    """weightwatcher 0.7.7's result for rows with fewer than 20 filtered eigenvalues
    (``fit_powerlaw_smallN`` followed by ``WWFit.__init__``'s re-selection): alpha = 1 + (n-1)/S on
    candidates with tails of at least 8, S > 1e-12 and alpha > 1 (others score D = 1); the first
    minimum of D wins; if no candidate qualifies, the whole filtered spectrum is the tail."""
    batch, n = x.shape
    cand = torch.arange(n - 1, device=x.device)
    alphas = hill_alphas(logx, bias_corrected=True)  # (B, n-1)
    ds = ks_distances(logx, alphas, first=int(first.min().item()), max_elements=max_elements)
    n_tail = (n - cand).to(x.dtype)  # (n-1,)
    inv_spread = (alphas - 1.0) / (n_tail - 1.0).clamp_min(1.0)  # (n-1)/S / (n-1) = 1/S
    allowed = (
        (cand[None, :] >= first[:, None])
        & (n_tail[None, :] >= WW_SMALL_N_MIN_TAIL)
        & (inv_spread < 1e12)
        & (alphas > 1)
    )
    fit = _select(alphas, ds, allowed, x)
    fallback = fit.index < 0
    if bool(fallback.any()):  # weightwatcher: whole filtered spectrum as the tail
        idx = first[:, None].clamp(max=n - 2)
        ok = fallback & (alphas.gather(-1, idx)[:, 0] > 1)
        fit.alpha = torch.where(ok, alphas.gather(-1, idx)[:, 0], fit.alpha)
        fit.xmin = torch.where(ok, x.gather(-1, idx)[:, 0], fit.xmin)
        fit.D = torch.where(ok, ds.gather(-1, idx)[:, 0], fit.D)
        fit.n_tail = torch.where(ok, n - idx[:, 0], fit.n_tail)
        fit.index = torch.where(ok, idx[:, 0], fit.index)
    return fit


def fit_at_xmin(x: Tensor, xmin: float) -> tuple[float, float, int]:
    """Hill alpha, KS D and tail size for a fixed xmin on one ascending spectrum ``(n,)``
    (the tail is every eigenvalue >= xmin). Returns NaNs and 0 for fewer than two tail values."""
    tail = x[x >= xmin].to(torch.float64)
    n = tail.numel()
    if n < 2 or xmin <= 0:
        return float("nan"), float("nan"), 0
    log_ratio = (tail / xmin).log()
    alpha = 1.0 + n / float(log_ratio.sum())
    emp = torch.arange(n, dtype=torch.float64, device=x.device) / n
    D = float((1.0 - torch.exp((1.0 - alpha) * log_ratio) - emp).abs().max())
    return alpha, D, n
