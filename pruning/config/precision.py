"""The eigen-solver precisions, in one place and without torch (the config, the store and the pages
import it; :mod:`pruning.spectral.esd` maps the names to torch dtypes).

float64 is the default on every device: a spectrum, and every metric and allocation read from it,
must not depend on where it was computed (docs/spectra.md). float32 loses the small eigenvalues that
decide ``alpha_peak`` and is kept as an option, recorded in every row it makes.
"""

from __future__ import annotations

from typing import Literal

#: accepted ``eig_dtype`` names, the default first
EIG_DTYPE_NAMES: tuple[str, ...] = ("float64", "float32")
DEFAULT_EIG_DTYPE = "float64"
EigDtypeName = Literal["float64", "float32"]


def check_eig_dtype(name: object) -> str:
    """``name`` when it is an accepted precision, else ValueError naming it and the accepted ones."""
    if name not in EIG_DTYPE_NAMES:
        raise ValueError(f"eig_dtype: {name!r} is invalid; accepted: {', '.join(EIG_DTYPE_NAMES)}")
    return str(name)
