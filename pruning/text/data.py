"""Corpus registry and the deterministic calibration sampler.

Corpus names (``CORPORA``):

* ``wiki`` — offline Wikipedia (gensim wheel): split ``test`` for evaluation, ``calib`` for
  calibration, and the held-out ``validation`` split with ``train`` = ``calib`` without it
  (``pruning.text.corpora``; ``python -m pruning fetch`` prepares all four);
* ``lee`` — offline Lee news text (evaluation and calibration);
* ``wikitext2`` — WikiText-2 raw (``test``/``train``) through ``datasets`` (needs the hub);
* ``c4`` — C4 English shards as in the SparseGPT/Wanda code (needs the hub);
* ``text:PATH`` — any local UTF-8 text file (every split = the whole file); a relative PATH is
  read from the repository root (``pruning.roots.resolve_local_path``, as the app checks it).

A dataset *spec* may name its split: ``wiki:validation``, ``wiki:train``, ``wikitext2:validation``.
Without one, a use takes its own split: evaluation reads ``test``, calibration ``calib``. So
``evaluation.perplexity: [wiki:validation]`` scores the validation text, and
``calibration.dataset: wiki:train`` calibrates on text disjoint from both ``validation`` and ``test``
(:func:`parse_dataset`, :func:`check_dataset_spec`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pruning.text.corpora import prepare_offline_corpora
from pruning.errors import ConfigError, CorpusUnavailableError
from pruning.paths import corpora_dir
from pruning.roots import resolve_local_path

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

CORPORA: dict[str, str] = {
    "wiki": "offline Wikipedia (106 articles; test ~250k words, calib the rest = validation ~50k + train)",
    "lee": "offline Lee background news corpus (~60k words)",
    "wikitext2": "WikiText-2 raw via the Hugging Face Hub",
    "c4": "C4 English (allenai/c4) via the Hugging Face Hub",
    "text:PATH": "a local UTF-8 text file",
}
SPLITS = ("test", "calib", "validation", "train")
#: the splits each named corpus holds (``text:PATH`` is one text for every split)
CORPUS_SPLITS: dict[str, tuple[str, ...]] = {
    "wiki": SPLITS,
    "lee": ("test", "calib"),
    "wikitext2": SPLITS,
    "c4": ("test", "calib"),
}


def parse_dataset(spec: str) -> tuple[str, str | None]:
    """``"wiki:validation"`` -> ``("wiki", "validation")``; ``"wiki"`` -> ``("wiki", None)``;
    ``"text:PATH"`` -> ``("text:PATH", None)`` (a path may hold colons: never split)."""
    if spec.startswith("text:"):
        return spec, None
    name, sep, split = spec.partition(":")
    return (name, split) if sep else (spec, None)


def check_dataset_spec(spec: str, field: str = "dataset") -> tuple[str, str | None]:
    """Parse ``spec`` and check its corpus name and split; raises ConfigError naming ``field``, the
    value and what is accepted. Reads no file (``text:PATH`` files are checked where they are read)."""
    name, split = parse_dataset(spec)
    if name.startswith("text:"):
        return name, None
    if name not in CORPUS_SPLITS:
        raise ConfigError(f"{field}: {spec!r} is not a corpus; accepted: {', '.join(CORPORA)} "
                          "(optionally with ':SPLIT', e.g. wiki:validation)")
    if split is not None and split not in CORPUS_SPLITS[name]:
        raise ConfigError(f"{field}: {spec!r} names split {split!r}, which {name!r} does not hold; accepted: "
                          f"{', '.join(f'{name}:{s}' for s in CORPUS_SPLITS[name])}")
    return name, split


def load_text(name: str, split: str = "test") -> str:
    """The raw text of dataset spec ``name`` (``wiki``, ``wiki:validation``, ``text:PATH``, ...).
    ``split`` (one of :data:`SPLITS`) is the use's own split, taken when the spec names none."""
    if split not in SPLITS:
        raise ConfigError(f"split {split!r} is invalid; accepted: {', '.join(SPLITS)}")
    if not name.startswith("text:") and ":" in name:
        name, split = check_dataset_spec(name)
    if name.startswith("text:"):
        path = resolve_local_path(name[5:])
        if not path.is_file():
            raise ConfigError(f"dataset {name!r}: file {str(path)!r} does not exist")
        return path.read_text(encoding="utf-8", errors="replace")
    if name in CORPUS_SPLITS and split not in CORPUS_SPLITS[name]:
        raise ConfigError(f"dataset {name!r} holds no {split!r} split; accepted: {', '.join(CORPUS_SPLITS[name])}")
    if name in ("wiki", "lee"):
        key = f"wiki.{split}" if name == "wiki" else "lee"
        path = corpora_dir() / f"{key}.txt"
        if not path.is_file():
            log.info("offline corpus %s missing; preparing it now", key)
            path = prepare_offline_corpora()[key]
        return path.read_text(encoding="utf-8")
    if name == "wikitext2":
        hub_split = {"calib": "train"}.get(split, split)
        ds = _hub_dataset(name, "wikitext", "wikitext-2-raw-v1", split=hub_split)
        return "\n\n".join(ds["text"])
    if name == "c4":
        if split == "test":
            ds = _hub_dataset(name, "allenai/c4", data_files={"validation": "en/c4-validation.00000-of-00008.json.gz"}, split="validation")
            return "\n\n".join(ds["text"][:1100])
        ds = _hub_dataset(name, "allenai/c4", data_files={"train": "en/c4-train.00000-of-01024.json.gz"}, split="train")
        return "\n\n".join(ds["text"][:20000])
    raise ConfigError(f"dataset {name!r} is unknown; accepted: {', '.join(CORPORA)}")


def _hub_dataset(name: str, *args: Any, **kwargs: Any) -> Any:
    try:
        import datasets

        return datasets.load_dataset(*args, **kwargs)
    except Exception as exc:  # datasets raises many types for an unreachable hub
        raise CorpusUnavailableError(
            f"dataset {name!r} needs the Hugging Face Hub, which is not reachable here "
            f"({exc.__class__.__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}); "
            "offline, use 'wiki', 'lee' or 'text:PATH' with a local text file"
        ) from exc


def tokenize_text(tokenizer: Any, text: str) -> torch.Tensor:
    """Token ids of ``text`` as one long 1-D LongTensor (no special tokens added)."""
    import torch  # here, not at the top: a job submit checks corpus names without loading torch

    ids = tokenizer(text, add_special_tokens=False, return_attention_mask=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


def calibration_batch(
    tokenizer: Any, dataset: str, nsamples: int, seqlen: int, seed: int, bos_token_id: int | None = None
) -> torch.Tensor:
    """``nsamples`` windows of ``seqlen`` tokens from the calibration split, at start offsets
    drawn uniformly with ``torch.Generator().manual_seed(seed)`` (Frantar & Alistarh 2023;
    Sun et al. 2023 sample random C4 windows the same way). With ``bos_token_id`` each window
    starts with BOS. Returns LongTensor ``(nsamples, seqlen)``; same inputs -> same batch."""
    import torch

    ids = tokenize_text(tokenizer, load_text(dataset, "calib"))
    body = seqlen - (1 if bos_token_id is not None else 0)
    if ids.numel() <= body:
        raise ConfigError(
            f"calibration.seqlen: {seqlen} is too long for dataset {dataset!r} ({ids.numel()} tokens); "
            f"accepted: at most {ids.numel() - 1}"
        )
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, ids.numel() - body, (nsamples,), generator=gen)
    rows = [ids[s : s + body] for s in starts.tolist()]
    batch = torch.stack(rows)
    if bos_token_id is not None:
        batch = torch.cat([torch.full((nsamples, 1), bos_token_id, dtype=torch.long), batch], dim=1)
    return batch
