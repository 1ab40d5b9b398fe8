"""Write a benchmark's figures into its own section of bench/RESULTS.md.

Each benchmark owns one section, delimited by HTML comments, and replaces it atomically under
a file lock, so several benchmarks can record results without clobbering each other.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import os
import platform
import re
import shlex
import sys
from pathlib import Path

from pruning.atomic import write_text_atomic

RESULTS = Path(os.environ.get("BENCH_RESULTS_PATH", Path(__file__).resolve().parent / "RESULTS.md"))
HEADER = "# Benchmark results\n\nEach section is written by its benchmark script; the command and machine are recorded with the figures.\n"


def machine_description() -> str:
    """CPU/GPU, core count and key versions, one line."""
    import torch

    parts = [platform.processor() or platform.machine(), f"{os.cpu_count()} cores"]
    if torch.cuda.is_available():
        parts.append(f"GPU {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}")
    else:
        parts.append("no GPU")
    parts.append(f"python {platform.python_version()}, torch {torch.__version__}")
    return ", ".join(parts)


def write_section(name: str, body_markdown: str, command: str | None = None, path: Path = RESULTS,
                  machine: str | None = None) -> None:
    """Replace (or append) section ``name`` of RESULTS.md with the body, command, machine and date
    (``machine``: where figures measured elsewhere were made, e.g. a GPU machine's files read here)."""
    command = command or "python " + " ".join(shlex.quote(a) for a in sys.argv)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"<!-- section:{name} -->\n## {name}\n\n"
        f"- command: `{command}`\n- machine: {machine or machine_description()}\n- date: {stamp}\n\n"
        f"{body_markdown.strip()}\n<!-- /section:{name} -->\n"
    )
    _replace_raw(name, section, path)


def merge_sections(source: Path, path: Path = RESULTS) -> list[str]:
    """Copy every section of another RESULTS file (e.g. one written on the GPU machine) into
    ``path``, replacing same-named sections. Returns the merged section names."""
    text = Path(source).read_text(encoding="utf-8")
    names = []
    for m in re.finditer(r"<!-- section:(.+?) -->\n## .+?\n\n(.*?)<!-- /section:\1 -->", text, re.S):
        name, body = m.group(1), m.group(2)
        _replace_raw(name, f"<!-- section:{name} -->\n## {name}\n\n{body}<!-- /section:{name} -->\n", path)
        names.append(name)
    return names


def _replace_raw(name: str, section: str, path: Path) -> None:
    path.touch(exist_ok=True)
    with open(path, "r+", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        text = fh.read() or HEADER
        pattern = re.compile(rf"<!-- section:{re.escape(name)} -->.*?<!-- /section:{re.escape(name)} -->\n?", re.S)
        text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
        write_text_atomic(path, text)
        fcntl.flock(fh, fcntl.LOCK_UN)


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A GitHub markdown table from a list of dicts."""
    if not rows:
        return "(no rows)"
    columns = columns or list(rows[0])
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def emit(body_markdown: str, payload: dict, section: str, json_path: str | None, write: bool = True) -> None:
    """The end of a benchmark script: print its figures, write ``payload`` (its rows and
    arguments) as JSON to ``json_path`` when given, and replace its section of RESULTS.md unless
    ``write`` is False."""
    import json

    print(body_markdown)
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(payload, indent=1, default=str))
    if write:
        write_section(section, body_markdown)
