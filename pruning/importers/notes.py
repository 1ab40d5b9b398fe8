"""Importer for the team's research notes (``seed/research-notes.txt`` and files in its format).

Every perplexity becomes one *reference result set* (kind ``reference``) with its model, method,
layer-group variant (the column header, mapped to a canonical preset where possible; the raw
header is kept), epsilon where written ("0.2 ww"), sparsity 0.7 recorded as *assumed*, and GT
cells marked as the baseline. ``nan`` stays NaN. Each cell keeps its raw text and source line.
The zero-shot block becomes per-task scores, the "(Avg)" lines attention statistics. See
DESIGN.md "Reading the notes" for the reading of every block.

The whole file is parsed before anything is written; any line that cannot be read raises
:class:`ImportFormatError` with its line number and the store is left unchanged.
"""

from __future__ import annotations

import ast
import hashlib
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pruning.config import ConfigError
from pruning.paths import REPO_ROOT
from pruning.presets import get_preset
from pruning.store.errors import ImportFormatError
from pruning.store.publish import PublishResult, publish_bundle

log = logging.getLogger(__name__)

IMPORTER_VERSION = 1
ASSUMED_SPARSITY = 0.7
METHOD_LETTERS: dict[str, str] = {"m": "magnitude", "w": "wanda", "s": "sparsegpt"}
METHOD_WORDS: dict[str, str] = {"magnitude": "magnitude", "magnitdue": "magnitude", "wanda": "wanda", "sparsegpt": "sparsegpt"}
ATTENTION_STATISTICS: dict[str, str] = {"v entropy": "v_entropy", "v rank": "v_rank_ratio", "qk entropy": "qk_entropy"}

_NUM = r"(?:nan|\d+(?:\.\d+)?|\.\d+)"
_EPS = r"(?:0?\.\d+|0)"
_ITEM_RE = re.compile(
    rf"GT\s*-?\s*(?P<gtv>{_NUM})"
    rf"|(?P<v>{_NUM})(?:\s+(?P<split>split))?(?:\s+(?P<eps>{_EPS})\s*(?P<ww>ww)?)?(?:\s+(?P<gt>GT)\b)?",
    re.I,
)
_WIDE_BODY_RE = re.compile(rf"^(?P<v>{_NUM})(?:\s+(?P<eps>{_EPS})\s*ww)?(?:\s+(?P<variant>[A-Za-z].*?))?$", re.I)
_LABELED_RE = re.compile(r"^(?P<letter>[A-Za-z])(?:\s+(?P<body>\S.*))?$")
_HEADER_VALUE_RE = re.compile(rf"^(?P<head>.*?\S)\s+(?P<value>[a-z]\s+{_NUM}.*)$")
_MODEL_RE = re.compile(r"^\s*llama\s*(?:(?P<ver>\d)\s+)?\(?(?P<size>\d+)\s*b\)?\s*$", re.I)
_ATTN_RE = re.compile(r"^(?P<model>llama.*?)\s+(?P<stat>v entropy|v rank|qk entropy)\s*\(avg\)\s*:\s*(?P<v>" + _NUM + r")\s*$", re.I)
_ROW_LABEL_RE = re.compile(r"^(?P<word>[A-Za-z]+)(?P<ww>_ww)?\s+(?P<rest>\S.*)$")
_MEAN_RE = re.compile(rf"^MEAN\s*:\s*(?P<v>{_NUM})\s*$", re.I)


def model_name(text: str) -> str | None:
    """Canonical model name of a notes heading: 'llama 2 7b' / 'LLaMA 2 (7B)' -> 'LLaMA-2-7B'."""
    m = _MODEL_RE.match(text.replace("(", " ").replace(")", " "))
    if not m:
        return None
    return "LLaMA-" + (f"{m.group('ver')}-" if m.group("ver") else "") + f"{m.group('size')}B"


def _num(text: str) -> float:
    return float("nan") if text.lower() == "nan" else float(text)


@dataclass
class Cell:
    """One perplexity read from the notes."""

    line: int
    raw_text: str
    model: str
    method: str | None
    ppl: float
    preset_raw: str | None = None
    epsilon: float | None = None
    is_baseline: bool = False
    notes: list[str] = field(default_factory=list)


@dataclass
class ZeroShotBlock:
    line: int
    label: str
    model: str
    results: dict[str, Any]
    task_lines: dict[str, int]
    mean: float | None = None
    mean_line: int | None = None


@dataclass
class _Column:
    start: int
    end: int
    header: str | None   # None: a trailing cell beyond the last header


class NotesParser:
    """Line-by-line reader of one notes file; ``parse()`` returns cells, zero-shot blocks and
    attention averages, or raises ImportFormatError naming file, line and the bad text."""

    def __init__(self, text: str, source: str):
        self.lines = text.splitlines()
        self.source = source
        self.cells: list[Cell] = []
        self.zeroshot: list[ZeroShotBlock] = []
        self.attention: list[dict[str, Any]] = []
        self.model: str | None = None

    def error(self, line: int, message: str) -> ImportFormatError:
        text = self.lines[line - 1].strip() if 0 < line <= len(self.lines) else ""
        return ImportFormatError(f"{self.source}:{line}: {message} (line: {text[:120]!r})")

    def need_model(self, line: int) -> str:
        if self.model is None:
            raise self.error(line, "a result before any model heading such as 'llama 7b'")
        return self.model

    # ---- driver ---------------------------------------------------------------------------------
    def parse(self) -> "NotesParser":
        i = 0
        n = len(self.lines)
        while i < n:
            lineno, line = i + 1, self.lines[i]
            stripped = line.strip()
            if not stripped or stripped.startswith("- "):
                i += 1
            elif (name := model_name(stripped)) is not None:
                self.model = name
                i += 1
            elif stripped.lower().startswith("zero_shot evaluation results"):
                i = self._zeroshot(i + 1)
            elif m := _MEAN_RE.match(stripped):
                if not self.zeroshot or self.zeroshot[-1].mean is not None:
                    raise self.error(lineno, "a MEAN line without a zero-shot block before it")
                self.zeroshot[-1].mean, self.zeroshot[-1].mean_line = _num(m.group("v")), lineno
                i += 1
            elif m := _ATTN_RE.match(stripped):
                model = model_name(m.group("model"))
                if model is None:
                    raise self.error(lineno, f"unknown model {m.group('model')!r}")
                self.attention.append({"line": lineno, "model": model, "raw_text": stripped,
                                       "statistic": ATTENTION_STATISTICS[m.group("stat").lower()],
                                       "value": _num(m.group("v"))})
                i += 1
            elif (m := _ROW_LABEL_RE.match(stripped)) and (m.group("ww") or m.group("word").lower() in METHOD_WORDS):
                word = m.group("word").lower()
                if word not in METHOD_WORDS:
                    raise self.error(lineno, f"unknown method {m.group('word')!r}; accepted: {', '.join(sorted(METHOD_WORDS))}")
                self._row_label(lineno, line, METHOD_WORDS[word], m.group("word") + (m.group("ww") or ""))
                i += 1
            elif "|" in line:
                i = self._wide_table(i)
            else:
                raise self.error(lineno, "unrecognised line")
        return self

    # ---- blocks 1 and 2: "wanda_ww 22.77 | 22.24 0.2 ww | 24 GT" -------------------------------------
    def _row_label(self, lineno: int, line: str, method: str, label: str) -> None:
        model = self.need_model(lineno)
        rest = line.split(label, 1)[1]
        first = True
        for cell in rest.split("|"):
            pos, items = 0, []
            for m in _ITEM_RE.finditer(cell):
                if cell[pos:m.start()].strip():
                    raise self.error(lineno, f"cannot read {cell[pos:m.start()].strip()!r} in cell {cell.strip()!r}")
                items.append(m)
                pos = m.end()
            if cell[pos:].strip():
                raise self.error(lineno, f"cannot read {cell[pos:].strip()!r} in cell {cell.strip()!r}")
            for m in items:
                baseline = m.group("gtv") is not None or m.group("gt") is not None
                value = m.group("gtv") if m.group("gtv") is not None else m.group("v")
                c = Cell(line=lineno, raw_text=m.group(0).strip(), model=model, method=method, ppl=_num(value),
                         is_baseline=baseline, notes=[f"row {label!r}"])
                if m.group("eps") is not None:
                    c.epsilon = float(m.group("eps"))
                    if not m.group("ww"):
                        c.notes.append("epsilon written without 'ww'")
                elif not baseline:
                    c.notes.append("default epsilon (not written)" if first else "epsilon not written")
                if baseline:
                    c.preset_raw = "GT"
                elif m.group("split"):
                    c.preset_raw = "split"
                    c.notes.append("all seven types, attention and MLP sub-blocks allocated separately")
                self.cells.append(c)
                first = False

    # ---- blocks 3-5: wide tables, columns by position --------------------------------------------
    @staticmethod
    def _split(line: str) -> list[tuple[int, int, str]]:
        cells, start = [], 0
        for piece in line.split("|"):
            cells.append((start, start + len(piece), piece))
            start += len(piece) + 1
        return cells

    def _wide_table(self, i: int) -> int:
        header_no = i + 1
        model = self.need_model(header_no)
        header = self._split(self.lines[i])
        columns: list[_Column] = []
        first_values: list[tuple[int, str, int]] = []  # (column index, cell text, start) on the header line
        for k, (start, end, text) in enumerate(header):
            head = text.strip()
            m = _HEADER_VALUE_RE.match(head)
            if m and k == 0:
                head = m.group("head")
                first_values.append((k, m.group("value"), start))
            if not head and k == len(header) - 1:
                continue  # trailing '|'
            if not head:
                raise self.error(header_no, f"empty column header in column {k + 1}")
            columns.append(_Column(start, end, head))
        rows = [(header_no, first_values)]
        j = i + 1
        while j < len(self.lines) and self.lines[j].strip():
            lineno = j + 1
            cells = self._split(self.lines[j])
            placed: list[tuple[int, str, int]] = []
            if len(cells) >= len(columns):
                placed = [(k, text, start) for k, (start, _, text) in enumerate(cells) if text.strip()]
            else:  # fewer cells than headers: place each by the position of its first character
                for start, _, text in cells:
                    if not text.strip():
                        continue
                    at = start + len(text) - len(text.lstrip())
                    k = next((k for k, col in enumerate(columns) if col.start <= at < col.end + 1), None)
                    placed.append((len(columns) if k is None else k, text, start))
            if len({k for k, _, _ in placed}) != len(placed):
                raise self.error(lineno, "two cells fall into one column")
            rows.append((lineno, placed))
            j += 1
        for lineno, placed in rows:
            self._wide_row(lineno, placed, columns, model)
        return j

    def _wide_row(self, lineno: int, placed: list[tuple[int, str, int]], columns: list[_Column], model: str) -> None:
        parsed = []
        for k, text, _ in placed:
            text = text.strip()
            m = _LABELED_RE.match(text)
            letter, body = (m.group("letter"), m.group("body")) if m else (None, text)
            if letter is not None and letter.lower() not in METHOD_LETTERS:
                raise self.error(lineno, f"unknown method letter {letter!r} in cell {text!r}; accepted: "
                                 + ", ".join(f"{k} ({v})" for k, v in METHOD_LETTERS.items()))
            parsed.append((k, text, letter.lower() if letter else None, body))
        letters = {p[2] for p in parsed if p[2] is not None}
        for k, text, letter, body in parsed:
            if body is None:
                continue  # "m" alone: the method was not run for this column
            b = _WIDE_BODY_RE.match(body)
            if not b:
                raise self.error(lineno, f"cannot read cell {text!r}")
            header = columns[k].header if k < len(columns) else None
            c = Cell(line=lineno, raw_text=text, model=model, method=None, ppl=_num(b.group("v")))
            if letter is not None:
                c.method = METHOD_LETTERS[letter]
            elif len(letters) == 1:
                c.method = METHOD_LETTERS[next(iter(letters))]
                c.notes.append("method not written; inferred from the other cells of the row")
            else:
                c.notes.append("method not written in the notes (unlabeled cell)")
            if b.group("eps") is not None:
                c.epsilon = float(b.group("eps"))
            variant = b.group("variant")
            if header is None:
                if not variant:
                    raise self.error(lineno, f"cell {text!r} lies beyond the last column and names no variant")
                c.preset_raw = variant
                c.notes.append("cell beyond the table's last column")
            else:
                c.preset_raw = header
                if variant:
                    raise self.error(lineno, f"unexpected text {variant!r} in cell {text!r} of column {header!r}")
            c.is_baseline = c.preset_raw.strip().upper() == "GT"
            self.cells.append(c)

    # ---- zero-shot block ---------------------------------------------------------------------------
    def _zeroshot(self, i: int) -> int:
        start_no = i
        while i < len(self.lines) and not self.lines[i].strip():
            i += 1
        label = ""
        if i < len(self.lines) and not self.lines[i].lstrip().startswith("{"):
            label = self.lines[i].strip()
            i += 1
        if i >= len(self.lines) or not self.lines[i].lstrip().startswith("{"):
            raise self.error(min(i + 1, len(self.lines)), "expected an lm-eval result dict after 'zero_shot evaluation results'")
        first, depth, buf = i, 0, []
        while i < len(self.lines):
            buf.append(self.lines[i])
            depth += self.lines[i].count("{") - self.lines[i].count("}")
            i += 1
            if depth <= 0:
                break
        if depth != 0:
            raise self.error(first + 1, "unbalanced braces in the zero-shot result dict")
        try:
            data = ast.literal_eval("\n".join(buf))
        except (ValueError, SyntaxError) as exc:
            raise self.error(first + 1, f"zero-shot result dict does not parse: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
            raise self.error(first + 1, "zero-shot result dict has no 'results' mapping")
        task_lines = {}
        for task in data["results"]:
            hit = next((first + k + 1 for k, text in enumerate(buf) if f"'{task}':" in text or f'"{task}":' in text), first + 1)
            task_lines[task] = hit
        model = self.need_model(start_no)
        args_model = re.search(r"llama-?(\d)?-?(\d+)b", str(data.get("config", {}).get("model_args", "")), re.I)
        if args_model:
            named = "LLaMA-" + (f"{args_model.group(1)}-" if args_model.group(1) else "") + f"{args_model.group(2)}B"
            if named != model:
                log.warning("%s:%d: zero-shot model_args name %s, heading says %s; using %s",
                            self.source, first + 1, named, model, named)
                model = named
        self.zeroshot.append(ZeroShotBlock(line=first + 1, label=label, model=model, results=data, task_lines=task_lines))
        return i


def _bundle_id(path: Path) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", path.stem).strip("-").lower() or "notes"
    return f"ref-notes-{slug}"


def _preset(raw: str | None, notes: list[str]) -> str | None:
    """Canonical preset of a notes header (GT and plain rows: 'all'); None if it is no preset."""
    if raw is None or raw.strip().upper() == "GT":
        return "all"
    try:
        return get_preset(raw).name
    except ConfigError:
        trimmed = re.sub(r"\s+\d+b$", "", raw.strip(), flags=re.I)
        if trimmed != raw.strip():
            try:
                name = get_preset(trimmed).name
                notes.append(f"header {raw!r}: preset {name!r} with settings tuned on another model size")
                return name
            except ConfigError:
                pass
    return None


def build_tables(parser: NotesParser, source_file: str, bundle: str) -> dict[str, pd.DataFrame]:
    """The store tables (runs, perplexity, zeroshot, attention, metrics) of a parsed notes file."""
    runs, ppl, zs, attn, metrics = [], [], [], [], []
    per_line: dict[int, int] = {}
    base = {"kind": "reference", "sparsity": ASSUMED_SPARSITY, "sparsity_assumed": True, "status": "succeeded",
            "source_file": source_file}
    for cell in parser.cells:
        per_line[cell.line] = per_line.get(cell.line, 0) + 1
        run_id = f"{bundle}-L{cell.line}-{per_line[cell.line]}"
        notes = list(cell.notes)
        preset = _preset(cell.preset_raw, notes)
        runs.append({**base, "run_id": run_id, "model": cell.model, "method": cell.method, "strategy": "linear",
                     "metric": "alpha", "preset": preset, "preset_raw": cell.preset_raw, "epsilon": cell.epsilon,
                     "is_baseline": cell.is_baseline, "source_line": cell.line, "note": "; ".join(notes) or None,
                     "label": f"notes L{cell.line}: {cell.raw_text}"})
        ppl.append({"run_id": run_id, "stage": "pruned", "dataset": "wikitext2", "ppl": cell.ppl, "raw_text": cell.raw_text,
                    "source_file": source_file, "source_line": cell.line})
    for block in parser.zeroshot:
        run_id = f"{bundle}-L{block.line}-zeroshot"
        label = block.label or "zero-shot"
        raw_variant = re.sub(r"^(sparse|dense)\s+", "", block.label, flags=re.I) or None
        notes = ["method not written in the notes"]
        preset = _preset(raw_variant, notes) if raw_variant else None
        config = block.results.get("config", {})
        versions = block.results.get("versions", {})
        acc = []
        for task, scores in block.results["results"].items():
            for metric in ("acc", "acc_norm"):
                if metric not in scores:
                    continue
                zs.append({"run_id": run_id, "stage": "pruned", "task": task, "metric": metric, "filter": "none",
                           "value": float(scores[metric]), "stderr": _float_or_nan(scores.get(f"{metric}_stderr")),
                           "task_version": str(versions.get(task)) if task in versions else None,
                           "num_fewshot": config.get("num_fewshot"), "limit": config.get("limit"),
                           "harness_version": "0.3", "raw_text": f"{task}.{metric}", "source_file": source_file,
                           "source_line": block.task_lines[task]})
            if "acc" in scores:
                acc.append(float(scores["acc"]))
        computed = sum(acc) / len(acc) if acc else float("nan")
        if block.mean is not None:
            if not math.isclose(round(computed, 4), block.mean, abs_tol=5e-5):
                raise parser.error(block.mean_line or block.line, f"MEAN {block.mean} differs from the mean of acc "
                                   f"over {len(acc)} tasks, {computed:.6f}")
            metrics.append({"run_id": run_id, "stage": "pruned", "name": "zeroshot_mean_reported", "value": block.mean,
                            "raw_text": f"MEAN: {block.mean}", "source_file": source_file, "source_line": block.mean_line})
        metrics.append({"run_id": run_id, "stage": "pruned", "name": "zeroshot_mean", "value": computed,
                        "raw_text": None, "source_file": source_file, "source_line": block.line})
        runs.append({**base, "run_id": run_id, "model": block.model, "method": None, "strategy": "linear",
                     "metric": "alpha", "preset": preset, "preset_raw": raw_variant, "epsilon": None, "is_baseline": False,
                     "source_line": block.line, "label": label,
                     "note": "; ".join(notes + [f"lm-eval {config.get('model')} {config.get('model_args')}"])})
    for model in dict.fromkeys(a["model"] for a in parser.attention):
        run_id = f"{bundle}-attention-{re.sub(r'[^A-Za-z0-9]+', '-', model).lower()}"
        rows = [a for a in parser.attention if a["model"] == model]
        runs.append({**base, "run_id": run_id, "model": model, "method": None, "strategy": None, "sparsity": None,
                     "sparsity_assumed": False, "preset": None, "is_baseline": False, "source_line": rows[0]["line"],
                     "label": f"attention averages {model}",
                     "note": "stage not written in the notes; recorded as dense (released weights)"})
        for a in rows:
            attn.append({"run_id": run_id, "stage": "dense", "block": None, "head": None, "statistic": a["statistic"],
                         "value": a["value"], "raw_text": a["raw_text"], "source_file": source_file,
                         "source_line": a["line"]})
    tables = {"runs": pd.DataFrame(runs), "perplexity": pd.DataFrame(ppl), "zeroshot": pd.DataFrame(zs),
              "attention": pd.DataFrame(attn), "metrics": pd.DataFrame(metrics)}
    return {k: v for k, v in tables.items() if not v.empty}


def _float_or_nan(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def source_name(path: Path) -> str:
    """How a source file is recorded: relative to the repository root when possible."""
    try:
        return os.path.relpath(path.resolve(), REPO_ROOT)
    except ValueError:
        return str(path)


def parse_notes(path: str | Path) -> NotesParser:
    """Parse a notes file (raises ImportFormatError with the line number on a malformed line)."""
    path = Path(path)
    if not path.is_file():
        raise ImportFormatError(f"notes file {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ImportFormatError(f"notes file {str(path)!r} is not UTF-8 text: {exc}") from None
    parser = NotesParser(text, source_name(path)).parse()
    if not parser.cells and not parser.zeroshot and not parser.attention:
        raise ImportFormatError(f"notes file {str(path)!r} holds no results")
    return parser


def tables_fingerprint(tables: dict[str, pd.DataFrame]) -> str:
    """SHA-256 of the tables' content (sorted by name; JSON of each frame, column order kept)."""
    h = hashlib.sha256()
    for name in sorted(tables):
        h.update(name.encode())
        h.update(tables[name].to_json(orient="split", index=False, date_format="iso").encode())
    return h.hexdigest()


def import_notes(path: str | Path, root: Path | str | None = None) -> PublishResult:
    """Parse a notes file completely, then publish it as one reference bundle (all or nothing).

    Re-importing an unchanged file is a no-op; a changed file supersedes the earlier import."""
    path = Path(path)
    parser = parse_notes(path)
    bundle = _bundle_id(path)
    tables = build_tables(parser, parser.source, bundle)
    # hash what would be stored, not only the input: a change in how cells are read (e.g. a new
    # preset that a header now maps to) must re-publish, not be skipped as "unchanged"
    digest = hashlib.sha256(path.read_bytes() + f"importer-v{IMPORTER_VERSION}".encode()
                            + tables_fingerprint(tables).encode()).hexdigest()
    info = {"kind": "reference", "importer": "notes", "source_file": parser.source, "cells": len(parser.cells)}
    result = publish_bundle(bundle, tables, info=info, root=root, content_hash=digest, if_exists="skip_same")
    log.info("imported %s: %d perplexity cells, %d zero-shot block(s), %d attention averages%s", parser.source,
             len(parser.cells), len(parser.zeroshot), len(parser.attention), " (unchanged, skipped)" if result.skipped else "")
    return result
