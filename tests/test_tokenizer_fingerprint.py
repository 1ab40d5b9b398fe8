"""The tokenizer's fingerprint (pruning.model.tokenizer), carrying a tokenizer to another machine and
checking it there (pruning.model.fetch.pack_tokenizer / install_tokenizer, scripts/gpu.sh), and the
store's guard against runs of one model made with different tokenizers (``verify``).

The tokenizers are tiny BPE ones built here: a vocabulary of letters, a space marker and a few merges."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from pruning.cli import main as cli
from pruning.config.run_config import RunConfig
from pruning.errors import ModelNotFoundError, TokenizerMismatchError
from pruning.model import fetch
from pruning.model.fetch import install_tokenizer, pack_tokenizer
from pruning.model.tokenizer import FINGERPRINT_FILE, PROBE_TEXT, tokenizer_fingerprint
from pruning.store import publish_run
from pruning.store.queries import mixed_tokenizers

ALIAS = "smollm2-135m"
LETTERS = list("abcdefghijklmnopqrstuvwxyz")


def _tokenizer(merges: list[tuple[str, str]] = (("t", "h"), ("th", "e")),
               extra: tuple[str, ...] = ()) -> PreTrainedTokenizerFast:
    """A BPE tokenizer: <unk> <s> </s>, the letters, every merge's result, then ``extra`` tokens."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for token in LETTERS + ["".join(m) for m in merges] + list(extra):
        vocab.setdefault(token, len(vocab))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=list(merges), unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def test_the_same_tokenizer_saved_and_reloaded_keeps_its_fingerprint(tmp_path: Path) -> None:
    tok = _tokenizer()
    fp = tokenizer_fingerprint(tok)
    assert len(fp) == 16 and int(fp, 16) >= 0
    tok.save_pretrained(tmp_path / "saved")
    assert tokenizer_fingerprint(AutoTokenizer.from_pretrained(tmp_path / "saved")) == fp
    assert tokenizer_fingerprint(_tokenizer()) == fp  # built again from the same parts
    # truncation set on the object by a call never changes how a text is cut: the fingerprint stays
    tok("the theme", truncation=True, max_length=2)
    assert tok.backend_tokenizer.truncation is not None
    assert tokenizer_fingerprint(tok) == fp


def test_one_token_or_one_merge_changes_the_fingerprint() -> None:
    # "qz" and "zq" occur nowhere in the probe text, and the three have vocabularies of one size: only the
    # tokenizer's own state (its vocabulary, its merges) tells them apart
    assert "qz" not in PROBE_TEXT.lower() and "zq" not in PROBE_TEXT.lower()
    token_qz = _tokenizer(extra=("qz",))
    token_zq = _tokenizer(extra=("zq",))
    merge_qz = _tokenizer(merges=[("t", "h"), ("th", "e"), ("q", "z")])
    assert len(token_qz) == len(token_zq) == len(merge_qz)
    assert token_qz("the quiz")["input_ids"] == token_zq("the quiz")["input_ids"] == merge_qz("the quiz")["input_ids"]
    fps = {tokenizer_fingerprint(t) for t in (token_qz, token_zq, merge_qz)}
    assert len(fps) == 3
    # a merge that the probe text uses changes its ids as well
    assert tokenizer_fingerprint(_tokenizer(merges=[("t", "h")])) != tokenizer_fingerprint(_tokenizer())


def test_a_slow_tokenizer_gets_one_from_its_vocabulary_and_the_probe_ids() -> None:
    class Slow:  # what a tokenizer without a Rust backend offers
        bos_token_id, eos_token_id = 1, 2

        def __init__(self, vocab: dict[str, int]) -> None:
            self.vocab = vocab

        def get_vocab(self) -> dict[str, int]:
            return dict(self.vocab)

        def __len__(self) -> int:
            return len(self.vocab)

        def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
            ids = [self.vocab.get(c, 0) for c in text]
            return [1, *ids] if add_special_tokens else ids

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{c: i + 3 for i, c in enumerate(LETTERS)}}
    fp = tokenizer_fingerprint(Slow(vocab))
    assert tokenizer_fingerprint(Slow(dict(vocab))) == fp
    assert tokenizer_fingerprint(Slow({**vocab, "qz": 99})) != fp
    with pytest.raises(TypeError, match="has no encode"):
        tokenizer_fingerprint(object())


def _prepared(cache: Path, tokenizer: PreTrainedTokenizerFast, *stale: str) -> Path:
    """``cache/models/<ALIAS>``: a prepared alias (config.json) with ``tokenizer`` saved, plus ``stale`` files."""
    directory = cache / "models" / ALIAS
    tokenizer.save_pretrained(directory)
    (directory / "config.json").write_text("{}")
    for name in stale:
        (directory / name).write_text("{}")
    return directory


def test_install_tokenizer_puts_the_packed_one_over_the_converted_one(tmp_path: Path, monkeypatch) -> None:
    here, there = tmp_path / "here", tmp_path / "there"
    packed_tok, converted_tok = _tokenizer(), _tokenizer(merges=[("t", "h")])  # "converted there" differs
    _prepared(here, packed_tok)
    monkeypatch.setenv("PRUNING_LAB_CACHE", str(here))
    expected = pack_tokenizer(ALIAS, tmp_path / "pack" / "tok" / ALIAS)
    assert expected == tokenizer_fingerprint(packed_tok)
    assert (tmp_path / "pack" / "tok" / ALIAS / FINGERPRINT_FILE).read_text().strip() == expected
    assert not (tmp_path / "pack" / "tok" / ALIAS / "config.json").exists()  # the tokenizer's files only

    target = _prepared(there, converted_tok, "special_tokens_map.json")
    assert tokenizer_fingerprint(AutoTokenizer.from_pretrained(target)) != expected
    monkeypatch.setenv("PRUNING_LAB_CACHE", str(there))
    assert install_tokenizer(ALIAS, tmp_path / "pack" / "tok" / ALIAS) == target
    assert tokenizer_fingerprint(AutoTokenizer.from_pretrained(target)) == expected
    assert not (target / "special_tokens_map.json").exists()  # a converted file the pack lacks is gone
    assert (target / "config.json").read_text() == "{}"  # the model's files are untouched


def test_install_tokenizer_fails_naming_the_alias_both_fingerprints_and_the_versions(tmp_path: Path,
                                                                                    monkeypatch) -> None:
    monkeypatch.setenv("PRUNING_LAB_CACHE", str(tmp_path / "cache"))
    _prepared(tmp_path / "cache", _tokenizer())
    source = tmp_path / "tok"
    expected = pack_tokenizer(ALIAS, source)
    # a library that builds another tokenizer from the same files (what transformers 5.17.0 did to Gemma's)
    other = _tokenizer(merges=[("t", "h")])
    monkeypatch.setattr(fetch, "_load_tokenizer", lambda directory: other)
    with pytest.raises(TokenizerMismatchError) as err:
        install_tokenizer(ALIAS, source)
    message = str(err.value)
    assert ALIAS in message and expected in message and tokenizer_fingerprint(other) in message
    assert "transformers " in message and "tokenizers " in message
    with pytest.raises(TokenizerMismatchError, match="0123456789abcdef"):
        install_tokenizer(ALIAS, source, expected="0123456789abcdef")
    (source / FINGERPRINT_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=FINGERPRINT_FILE):
        install_tokenizer(ALIAS, source)
    with pytest.raises(ModelNotFoundError, match="not an offline alias"):
        install_tokenizer("llama-7b", source, expected="0" * 16)


def _run(model: str, seed: int, tokenizer: str | None) -> None:
    config = RunConfig().with_overrides({"model.name": model, "calibration.seed": seed})
    env = {"model_fingerprint": "0123456789abcdef"} | ({"tokenizer_fingerprint": tokenizer} if tokenizer else {})
    publish_run(config, env=env)


def test_verify_names_a_model_whose_runs_used_different_tokenizers(data_dir: Path, capsys) -> None:
    _run("gemma3-270m", 0, "aaaaaaaaaaaaaaaa")
    _run("gemma3-270m", 1, "aaaaaaaaaaaaaaaa")
    _run("gemma3-270m", 2, None)  # published before the fingerprint was recorded: left out
    _run("smollm2-135m", 0, "cccccccccccccccc")
    assert mixed_tokenizers().empty
    assert cli(["verify", "--quick"]) == 0
    assert "mixed tokenizers" not in capsys.readouterr().out

    _run("gemma3-270m", 3, "bbbbbbbbbbbbbbbb")  # the GPU machine's tokenizer
    mixed = mixed_tokenizers()
    assert mixed["model"].tolist() == ["gemma3-270m"] * 2
    assert dict(zip(mixed["tokenizer_fingerprint"], mixed["runs"])) == {"aaaaaaaaaaaaaaaa": 2, "bbbbbbbbbbbbbbbb": 1}
    assert cli(["verify", "--quick"]) == 1
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("mixed tokenizers"))
    assert "gemma3-270m" in line and "aaaaaaaaaaaaaaaa (2 runs" in line and "bbbbbbbbbbbbbbbb (1 run," in line
    assert "smollm2-135m" not in line and "1 model(s) with runs of different tokenizers" in out
