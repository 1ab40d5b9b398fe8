"""Pure helpers behind the Streamlit app (no Streamlit import here, so they are unit-testable).

- :mod:`.formatting` — perplexity and delta text ("22.01", "219k", "nan", "+1.51").
- :mod:`.grid` — the notes' perplexity tables as a method x preset grid (baseline pinned first).
- :mod:`.launch` — the launch form's values -> validated :class:`pruning.config.run_config.RunConfig`,
  allowed model roots, sweep sizes.
- :mod:`.compare` — config diffs between runs (changed keys only).
- :mod:`.plots` — plotly figure builders (heatmap, per-block metrics, ESD, attention).
- :mod:`.store_access` — tolerant adapters over ``pruning.store`` and ``pruning.jobs``.
"""
