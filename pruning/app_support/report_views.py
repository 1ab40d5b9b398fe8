"""What a meeting report can hold, importable without plotly (the CLI registers `report` on
machines without the app's libraries; :mod:`.report` builds it)."""

from __future__ import annotations

VIEWS: tuple[str, ...] = ("study", "grid", "spectra", "compare", "zeroshot")
VIEW_TITLES: dict[str, str] = {"study": "Allocation study", "grid": "Perplexity grid", "spectra": "Spectra",
                               "compare": "Compare", "zeroshot": "Zero-shot accuracy"}
DEFAULT_TITLE = "Pruning Lab — meeting report"
