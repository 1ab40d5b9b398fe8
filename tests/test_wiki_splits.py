"""The wiki validation split (held out of `calib` by the SHA-1-of-title rule) and dataset specs
(`wiki:validation`): disjoint titles, deterministic, non-empty, `calib`/`test` texts unchanged."""

from __future__ import annotations

import hashlib
import re

import pytest

from pruning.text.corpora import Article, split_articles, validation_split
from pruning.text.data import check_dataset_spec, load_text, parse_dataset
from pruning.errors import ConfigError
from pruning.run.validation import check_names

#: SHA-256 of the texts every stored run read (data/ runs' environments, tests/smoke_runs.py)
WIKI_TEST_SHA256 = "0cc60813547efec8eebc511ee9ff0136919f985c08329cd77fa76b51149e814f"
WIKI_CALIB_SHA256 = "a3e54969ce1ead490367565f314f6d9da92c07da0ac0853656af047944642a90"


def titles(text: str) -> list[str]:
    """Article titles of a WikiText-style text (`` = Title = `` lines)."""
    return re.findall(r"^ = ([^=].*?) = $", text, flags=re.M)


def synthetic(n: int = 40) -> list[Article]:
    return [Article(f"Title {i}", " ".join(["word"] * (100 + 37 * i))) for i in range(n)]


def test_split_rule_on_synthetic_articles() -> None:
    articles = synthetic()
    test, calib = split_articles(articles, test_words=5000)
    validation, train = validation_split(articles, test_words=5000, validation_words=3000)
    names = {part: {a.title for a in arts} for part, arts in
             {"test": test, "calib": calib, "validation": validation, "train": train}.items()}
    assert names["validation"] and names["train"] and names["test"]
    assert not names["validation"] & names["test"] and not names["train"] & names["test"]
    assert not names["validation"] & names["train"]
    assert names["validation"] | names["train"] == names["calib"]  # validation is carved out of calib
    # the same SHA-1 ranking, continued after test: validation takes the next titles until >= 3000 words
    ranked = sorted(articles, key=lambda a: hashlib.sha1(a.title.encode()).hexdigest())
    after_test = [a for a in ranked if a.title not in names["test"]]
    taken, words = [], 0
    for article in after_test:
        if words >= 3000:
            break
        taken.append(article.title)
        words += article.words
    assert set(taken) == names["validation"]
    assert [a.title for a in validation] == [a.title for a in articles if a.title in names["validation"]]  # dump order
    assert validation_split(articles, 5000, 3000) == (validation, train)  # deterministic


def test_wiki_splits_disjoint_nonempty_and_old_texts_unchanged() -> None:
    texts = {split: load_text("wiki", split) for split in ("test", "calib", "validation", "train")}
    assert hashlib.sha256(texts["test"].encode()).hexdigest() == WIKI_TEST_SHA256
    assert hashlib.sha256(texts["calib"].encode()).hexdigest() == WIKI_CALIB_SHA256
    named = {split: set(titles(text)) for split, text in texts.items()}
    assert all(len(named[s]) >= 5 for s in named)
    assert not named["validation"] & named["test"] and not named["validation"] & named["train"]
    assert not named["train"] & named["test"]
    assert named["validation"] | named["train"] == named["calib"]
    assert 40_000 <= len(texts["validation"].split()) <= 80_000
    assert load_text("wiki:validation") == texts["validation"]  # a spec's split wins over the use's
    assert load_text("wiki:train", "calib") == texts["train"]
    assert load_text("wiki", "calib") == texts["calib"]


def test_dataset_specs_parse_and_check() -> None:
    assert parse_dataset("wiki:validation") == ("wiki", "validation")
    assert parse_dataset("wiki") == ("wiki", None)
    assert parse_dataset("text:C:/data/a:b.txt") == ("text:C:/data/a:b.txt", None)
    assert check_dataset_spec("wikitext2:validation") == ("wikitext2", "validation")
    with pytest.raises(ConfigError, match=r"'lee:validation' names split 'validation'.*accepted: lee:test, lee:calib"):
        check_dataset_spec("lee:validation", "evaluation.perplexity")
    with pytest.raises(ConfigError, match=r"evaluation.perplexity: 'wiki:dev'.*wiki:validation"):
        check_dataset_spec("wiki:dev", "evaluation.perplexity")
    with pytest.raises(ConfigError, match="'bogus' is not a corpus"):
        check_dataset_spec("bogus")
    with pytest.raises(ConfigError, match="holds no 'validation' split"):
        load_text("lee", "validation")


def test_config_names_the_validation_split() -> None:
    from pruning.config.run_config import RunConfig

    ok = RunConfig.from_dict({"calibration": {"dataset": "wiki:train"},
                              "evaluation": {"perplexity": ["wiki:validation", "lee"]}})
    check_names(ok)
    bad = RunConfig.from_dict({"evaluation": {"perplexity": ["wiki:valid"]}})
    with pytest.raises(ConfigError, match="evaluation.perplexity: 'wiki:valid' names split 'valid'"):
        check_names(bad)
