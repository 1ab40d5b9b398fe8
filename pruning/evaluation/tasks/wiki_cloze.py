"""`wiki_cloze`: an offline 4-way multiple-choice task built from the Wikipedia test split.

Each item takes one sentence of the offline Wikipedia test text (``pruning.text.data.load_text("wiki",
"test")``): the context is the first half of the sentence's words (kept short: every choice
costs one forward pass on a 2-core CPU); the true continuation is the second half; three distractors are
second halves of other sentences (other paragraphs) with nearly the same number of words, so
that summed log-likelihood (``acc``) is not decided by length. Items and choice order are drawn
with ``random.Random(seed)``; the same text, seed and builder version give the same file.
Chance accuracy is 0.25. Built in the style of LAMBADA/HellaSwag-like cloze evaluation
(Paperno et al. 2016; Zellers et al. 2019), scored by lm-eval's ``multiple_choice`` output type.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from pathlib import Path
from typing import Any

import yaml

from pruning.atomic import write_text_atomic

log = logging.getLogger(__name__)

TASK_NAME = "wiki_cloze"
BUILDER_VERSION = 1
N_ITEMS = 500
SEED = 1234
N_CHOICES = 4
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")
_ARTIFACT = re.compile(r"\s[,.;:)]|\(\s|\s{2,}|[=|{}\[\]<>]")


def _sentences_by_paragraph(text: str) -> list[list[str]]:
    """Paragraphs (non-heading lines) split into sentences."""
    paragraphs = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("="):
            continue
        paragraphs.append([s.strip() for s in _SENTENCE_END.split(line) if s.strip()])
    return paragraphs


def _usable(sentence: str) -> bool:
    words = sentence.split()
    return 10 <= len(words) <= 40 and not _ARTIFACT.search(sentence) and sentence.isascii()


def build_items(text: str, n_items: int = N_ITEMS, seed: int = SEED) -> list[dict[str, Any]]:
    """The task's items: dicts with ``id, context, choices (4 strings), label (int), source``.

    Deterministic in (text, n_items, seed). Raises ValueError if the text has too few usable
    sentences."""
    candidates = []  # (paragraph index, context, continuation)
    for p_idx, sentences in enumerate(_sentences_by_paragraph(text)):
        for sentence in sentences:
            if not _usable(sentence):
                continue
            words = sentence.split()
            cut = len(words) // 2
            candidates.append((p_idx, " ".join(words[:cut]), " ".join(words[cut:])))
    if len(candidates) < n_items * 2:
        raise ValueError(f"{TASK_NAME}: only {len(candidates)} usable sentences for {n_items} items")
    rng = random.Random(seed)
    by_length: dict[int, list[int]] = {}
    for i, (_, _, cont) in enumerate(candidates):
        by_length.setdefault(len(cont.split()), []).append(i)
    labels = [k % N_CHOICES for k in range(n_items)]  # balanced positions of the true continuation
    rng.shuffle(labels)
    items = []
    for item_id, i in enumerate(rng.sample(range(len(candidates)), n_items)):
        p_idx, context, truth = candidates[i]
        n = len(truth.split())
        pool: list[int] = []
        for width in range(0, 40):  # widen the length band until enough distractors
            pool = [j for L in range(n - width, n + width + 1) for j in by_length.get(L, [])
                    if candidates[j][0] != p_idx and candidates[j][2] != truth]
            if len(pool) >= 50 or width >= 3 and len(pool) >= N_CHOICES - 1:
                break
        distractors = [candidates[j][2] for j in rng.sample(pool, N_CHOICES - 1)]
        label = labels[item_id]
        choices = distractors[:label] + [truth] + distractors[label:]
        items.append({"id": item_id, "context": context, "choices": choices, "label": label, "source": f"paragraph {p_idx}"})
    return items


def task_config(data_file: Path) -> dict[str, Any]:
    """The lm-eval task YAML (as a dict) reading ``data_file`` (JSONL) as its test split."""
    return {
        "task": TASK_NAME,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_file)}},
        "output_type": "multiple_choice",
        "test_split": "test",
        "doc_to_text": "context",
        "doc_to_choice": "choices",
        "doc_to_target": "label",
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
        "metadata": {"version": float(BUILDER_VERSION), "n_items": N_ITEMS, "seed": SEED,
                     "source": "pruning.text.data.load_text('wiki', 'test')"},
    }


def ensure_wiki_cloze(root: Path, text: str | None = None, force: bool = False) -> Path:
    """Generate ``root/wiki_cloze/{wiki_cloze.jsonl, wiki_cloze.yaml, build.json}`` unless an
    up-to-date build (same builder version, seed, size and source-text hash) exists.
    Returns the YAML path."""
    from pruning.text.data import load_text

    task_dir = root / TASK_NAME
    task_dir.mkdir(parents=True, exist_ok=True)
    text = load_text("wiki", "test") if text is None else text
    stamp = {"builder_version": BUILDER_VERSION, "n_items": N_ITEMS, "seed": SEED,
             "text_sha256": hashlib.sha256(text.encode()).hexdigest()}
    yaml_path, data_path, stamp_path = task_dir / f"{TASK_NAME}.yaml", task_dir / f"{TASK_NAME}.jsonl", task_dir / "build.json"
    if not force and yaml_path.is_file() and data_path.is_file() and stamp_path.is_file():
        if json.loads(stamp_path.read_text()) == stamp:
            return yaml_path
    items = build_items(text)
    write_text_atomic(data_path, "".join(json.dumps(item) + "\n" for item in items))
    write_text_atomic(yaml_path, yaml.safe_dump(task_config(data_path), sort_keys=False))
    write_text_atomic(stamp_path, json.dumps(stamp))
    log.info("built offline lm-eval task %s: %d items in %s", TASK_NAME, len(items), task_dir)
    return yaml_path
