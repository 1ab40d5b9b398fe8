"""Merge the sections of a RESULTS file written elsewhere (the GPU machine) into bench/RESULTS.md."""

from __future__ import annotations

import sys
from pathlib import Path

from bench._results import merge_sections

if __name__ == "__main__":
    for src in sys.argv[1:]:
        print(f"{src}: merged {', '.join(merge_sections(Path(src))) or 'nothing'}")
