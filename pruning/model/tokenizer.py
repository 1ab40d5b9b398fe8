"""What decides tokenization, as one hash: :func:`tokenizer_fingerprint`, and the files that carry it.

A model's fingerprint (:func:`pruning.model.load.model_fingerprint`) covers its config and weights only.
The same weights read through another tokenizer cut a text into other windows and give another
perplexity: gemma3-270m converted from its GGUF by transformers 5.17.0 on a GPU machine cut the
wiki:validation text into 155 windows of 2048 tokens (34 with the tokenizer converted here by 5.24.0),
and its dense perplexity came out 735.5 instead of ~17, with the model fingerprint unchanged. Every run
records both fingerprints in its ``env``; ``scripts/gpu.sh`` carries the tokenizer files made here and
checks the fingerprint on the GPU machine (docs/gpu.md).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

# Text whose ids take part in the fingerprint: leading and repeated spaces, newlines and a tab, digits,
# a WikiText heading, accents, CJK, an emoji and code, where tokenizers differ most often.
PROBE_TEXT = (
    " = Valkyria Chronicles III = \n\n Senjō no Valkyria 3 : Unrecorded Chronicles"
    " ( Japanese : 戦場のヴァルキュリア3 ,"
    " lit . Valkyria of the Battlefield 3 ) , commonly referred to as Valkyria Chronicles III outside Japan ,"
    " is a tactical role @-@ playing video game released in 2011 .\n\tCafé naïve façade — 1,234.56 % ; 🙂"
    "  def f(x):\n        return x ** 2  # über 12345678901234567890\n"
)

# The files `tokenizer.save_pretrained` may write (transformers 5: tokenizer.json, tokenizer_config.json and
# chat_template.jinja for a fast tokenizer; the others for older or slow ones). config.json is the model's.
TOKENIZER_FILES: tuple[str, ...] = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "chat_template.jinja", "chat_template.json", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model",
    "vocab.json", "merges.txt", "vocab.txt",
)
FINGERPRINT_FILE = "tokenizer_fingerprint.txt"  # the expected fingerprint beside packed tokenizer files


def _backend_state(backend: Any) -> str:
    """The fast (Rust) tokenizer's JSON without its truncation and padding settings, which calls such
    as ``tokenizer(text, truncation=True, max_length=n)`` change on the object and which never change
    how a text is cut into tokens."""
    if backend.truncation is None and backend.padding is None:
        return backend.to_str()
    from tokenizers import Tokenizer

    copy = Tokenizer.from_str(backend.to_str())
    copy.no_truncation()
    copy.no_padding()
    return copy.to_str()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Hash of what decides tokenization; 16 hex digits.

    Hashed: the backend tokenizer's JSON for a fast tokenizer (vocabulary, merges, added tokens,
    normalizer, pre-tokenizer, post-processor; truncation and padding left out), else the vocabulary
    (token -> id, sorted by id); the ids of :data:`PROBE_TEXT` with and without special tokens (so the
    transformers layer's BOS/EOS handling counts too); the BOS and EOS ids and the vocabulary size.
    """
    encode = getattr(tokenizer, "encode", None)
    if encode is None:
        raise TypeError(f"tokenizer_fingerprint: {type(tokenizer).__name__} has no encode(); "
                        "accepted: a transformers tokenizer (fast or slow)")
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(b"backend\0" + _backend_state(backend).encode())
    else:
        vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: (item[1], item[0]))
        h.update(b"vocab\0" + json.dumps(vocab, ensure_ascii=False).encode())
    ids = {"with_special": list(encode(PROBE_TEXT, add_special_tokens=True)),
           "without_special": list(encode(PROBE_TEXT, add_special_tokens=False)),
           "bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id, "size": len(tokenizer)}
    h.update(b"\0ids\0" + json.dumps(ids, sort_keys=True).encode())
    return h.hexdigest()[:16]


def tokenizer_files(directory: str | Path) -> list[Path]:
    """The tokenizer files (:data:`TOKENIZER_FILES`) present in ``directory`` (a saved model or a packed
    tokenizer); raises FileNotFoundError when it has no ``tokenizer_config.json``."""
    directory = Path(directory)
    found = [directory / name for name in TOKENIZER_FILES if (directory / name).is_file()]
    if not (directory / "tokenizer_config.json").is_file():
        names = [p.name for p in found] or "none"
        raise FileNotFoundError(f"{directory} holds no tokenizer_config.json (found: {names}); accepted: a directory "
                                f"written by tokenizer.save_pretrained ({', '.join(TOKENIZER_FILES)})")
    return found
