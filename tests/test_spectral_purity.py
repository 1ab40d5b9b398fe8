"""``pruning.spectral`` is pure maths (issue 30, "a house whose tree is its architecture"): tensors and
models in, tables out. None of its modules may import the results store, duckdb, the run config or the
stage that caches spectra (pruning.run.spectra_cache); the kernels (power-law fits, eigenvalues, metrics)
import not even pandas, so a fit does not pull in pyarrow. Checked in a fresh interpreter, since this
test process has long imported all of them."""

from __future__ import annotations

import subprocess
import sys

from pruning.paths import REPO_ROOT

#: modules that come later on the run path than the spectra (or that only a later stage needs)
LATER = ("pruning.store", "duckdb", "pruning.config.run_config", "pruning.config.allocation", "pruning.config.sections",
         "pruning.run.spectra_cache", "pruning.run.spectra_backfill",
         "pruning.run.stages", "pruning.run.pipeline", "pruning.jobs", "pruning.app_support", "streamlit")
#: kernels that take tensors only: not even pandas (which imports pyarrow)
KERNELS = ("powerlaw", "esd", "metrics")

PROBE = """
import importlib, sys
import pruning.spectral as spectral

def loaded(prefixes):
    return sorted(m for m in sys.modules if m.startswith(prefixes))

for name in {kernels!r}:
    importlib.import_module("pruning.spectral." + name)
bad = loaded({later!r} + ("pandas", "pyarrow"))
if bad:
    sys.exit("kernels " + repr({kernels!r}) + " import " + ", ".join(bad[:8]))
for name in spectral._SUBMODULES:
    importlib.import_module("pruning.spectral." + name)
for name in spectral.__all__:
    getattr(spectral, name)
bad = loaded({later!r})
if bad:
    sys.exit("pruning.spectral imports " + ", ".join(bad[:8]))
print("pure")
"""


def test_spectral_imports_no_store_no_config():
    probe = PROBE.format(kernels=KERNELS, later=LATER)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "pure"


def test_a_submit_checks_names_without_torch():
    """A job submit checks a config's names (pruning.run.validation.check_names: corpora, the allocation
    metric against the spectra table's columns and ``depth``) from plain data: no torch, pandas, pyarrow
    or duckdb is loaded for it (before, the metric names came from pruning.spectral.summary, and the
    corpus names from a module that imported torch)."""
    probe = ("import sys; from pruning.config.run_config import RunConfig; import pruning.run.validation as v; "
             "v.check_names(RunConfig()); names = v.allocation_metrics(); "
             "print('alpha_peak' in names, 'hessian_alpha' in names, 'depth' in names, "
             "sorted(m for m in ('torch', 'pandas', 'pyarrow', 'duckdb') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "True True True []"
