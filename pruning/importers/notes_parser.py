"""Line-by-line parser of the research notes: method rows ("wanda_ww 22.77 | 22.24 0.2 ww"), wide
tables whose columns are found by position, zero-shot result dicts and "(Avg)" attention lines.
Any line it cannot read raises :class:`ImportFormatError` with file, line number and text."""

from __future__ import annotations

import ast
import logging
import re
from dataclasses import dataclass
from typing import Any

from pruning.importers.notes_records import (
    ATTENTION_STATISTICS, METHOD_LETTERS, METHOD_WORDS, Cell, ZeroShotBlock, model_name, parse_number,
)
from pruning.store.errors import ImportFormatError

log = logging.getLogger(__name__)

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
_ATTN_RE = re.compile(r"^(?P<model>llama.*?)\s+(?P<stat>v entropy|v rank|qk entropy)\s*\(avg\)\s*:\s*(?P<v>" + _NUM + r")\s*$", re.I)
_ROW_LABEL_RE = re.compile(r"^(?P<word>[A-Za-z]+)(?P<ww>_ww)?\s+(?P<rest>\S.*)$")
_MEAN_RE = re.compile(rf"^MEAN\s*:\s*(?P<v>{_NUM})\s*$", re.I)


@dataclass
class _Column:
    """A column of a wide table: its character span on the header line and its header."""

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
        """The error naming file, line and the line's text."""
        text = self.lines[line - 1].strip() if 0 < line <= len(self.lines) else ""
        return ImportFormatError(f"{self.source}:{line}: {message} (line: {text[:120]!r})")

    def need_model(self, line: int) -> str:
        """The model of the latest heading; an error when no heading came yet."""
        if self.model is None:
            raise self.error(line, "a result before any model heading such as 'llama 7b'")
        return self.model

    # ---- driver ---------------------------------------------------------------------------------
    def parse(self) -> NotesParser:
        """Read every line (blocks described in DESIGN.md "Reading the notes"); returns self."""
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
                self.zeroshot[-1].mean, self.zeroshot[-1].mean_line = parse_number(m.group("v")), lineno
                i += 1
            elif m := _ATTN_RE.match(stripped):
                model = model_name(m.group("model"))
                if model is None:
                    raise self.error(lineno, f"unknown model {m.group('model')!r}")
                self.attention.append({"line": lineno, "model": model, "raw_text": stripped,
                                       "statistic": ATTENTION_STATISTICS[m.group("stat").lower()],
                                       "value": parse_number(m.group("v"))})
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
                c = Cell(line=lineno, raw_text=m.group(0).strip(), model=model, method=method, ppl=parse_number(value),
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
            c = Cell(line=lineno, raw_text=text, model=model, method=None, ppl=parse_number(b.group("v")))
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
