"""Importers of reference results with provenance (source file and line): the team's research
notes and lm-evaluation-harness JSON files. Each file is parsed completely and then published as
one atomic bundle, so a malformed file leaves the store unchanged."""

from pruning.importers.lmeval import import_lm_eval, normalize as normalize_lm_eval
from pruning.importers.notes import import_notes, parse_notes

__all__ = ["import_lm_eval", "import_notes", "normalize_lm_eval", "parse_notes"]
