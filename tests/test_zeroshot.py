"""Zero-shot evaluation through lm-eval with the offline `wiki_cloze` task (no hub)."""

from __future__ import annotations

import math

import pytest

from pruning.errors import ConfigError
from pruning.evaluation.tasks.wiki_cloze import N_CHOICES, build_items
from pruning.evaluation.zeroshot import COLUMNS, resolve_tasks, tidy_results, zeroshot_evaluate

TEXT = "\n".join(
    f"Paragraph {p} tells that the river number {p} flows quietly through the valley of town {p} every single spring. "
    f"Farmers near town {p} grow wheat and barley on the terraces above the water for the market."
    for p in range(60)
)


def byte_tokenizer():
    """A 257-token byte-level fast tokenizer (256 bytes + <eos>) for tiny random models."""
    from tokenizers import Tokenizer, decoders, models
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>")


def test_wiki_cloze_items_are_deterministic_and_well_formed() -> None:
    items = build_items(TEXT, n_items=40, seed=7)
    assert items == build_items(TEXT, n_items=40, seed=7)
    assert items != build_items(TEXT, n_items=40, seed=8)
    labels = [it["label"] for it in items]
    assert sorted(set(labels)) == list(range(N_CHOICES))
    assert all(labels.count(k) == 10 for k in range(N_CHOICES))  # balanced positions
    for it in items:
        assert len(it["choices"]) == N_CHOICES == len(set(it["choices"]))
        truth = it["choices"][it["label"]]
        paragraph = int(it["source"].split()[1])
        assert f"{it['context']} {truth}" in TEXT.splitlines()[paragraph]  # true continuation
        for j, choice in enumerate(it["choices"]):  # distractors: similar length
            if j != it["label"]:
                assert abs(len(choice.split()) - len(truth.split())) <= 3


def test_tidy_results_mean_of_acc_not_acc_norm() -> None:
    raw = {
        "results": {
            "a": {"alias": "a", "acc,none": 0.5, "acc_stderr,none": 0.1, "acc_norm,none": 0.9, "acc_norm_stderr,none": 0.2},
            "b": {"alias": "b", "acc,none": 0.3, "acc_stderr,none": "N/A", "acc_norm,none": 0.1, "acc_norm_stderr,none": 0.2},
        },
        "versions": {"a": 1.0, "b": 2.0},
        "n-shot": {"a": 0, "b": 0},
    }
    frame = tidy_results(raw, "pruned", 10, "0.4.13")
    assert list(frame.columns) == COLUMNS
    row = frame[(frame.task == "a") & (frame.metric == "acc")].iloc[0]
    assert (row.value, row.stderr, row["filter"], row.task_version, row.limit) == (0.5, 0.1, "none", "1.0", 10)
    assert frame[(frame.task == "b") & (frame.metric == "acc")].stderr.isna().all()  # "N/A" -> missing
    mean = frame[(frame.task == "mean") & (frame.metric == "acc")].value.item()
    assert mean == pytest.approx(0.4)
    assert frame[(frame.task == "mean") & (frame.metric == "acc_norm")].value.item() == pytest.approx(0.5)
    assert set(frame.stage) == {"pruned"} and set(frame.harness_version) == {"0.4.13"}


def test_unknown_task_lists_close_matches() -> None:
    with pytest.raises(ConfigError, match="close matches: arc_easy"):
        resolve_tasks(["arc_esay"])
    with pytest.raises(ConfigError, match="wiki_cloze"):
        resolve_tasks(["wiki_clozee"])
    with pytest.raises(ConfigError):
        resolve_tasks([])
    names, _ = resolve_tasks(["wiki_cloze"])
    assert names == ("wiki_cloze",)


def test_offline_task_runs_through_lm_eval_on_a_tiny_model() -> None:
    from pruning.model.synthetic import random_llama

    tok = byte_tokenizer()
    model = random_llama(hidden=64, layers=2, intermediate=128, heads=4, kv_heads=2, vocab=len(tok))
    result = zeroshot_evaluate(model, tok, ["wiki_cloze"], stage="dense", limit=8, batch_size=8)
    rows = result.rows
    assert list(rows.columns) == COLUMNS
    acc = rows[(rows.task == "wiki_cloze") & (rows.metric == "acc")].iloc[0]
    assert 0.0 <= acc.value <= 1.0 and acc.value * 8 == pytest.approx(round(acc.value * 8))  # 8 items scored
    assert (acc.limit, acc.num_fewshot, acc["filter"]) == (8, 0, "none")
    assert acc.harness_version.startswith("0.4")
    assert result.raw["n-samples"]["wiki_cloze"]["effective"] == 8
    assert result.mean_acc() == acc.value
    assert result.settings.batch_size == 8 and result.settings.tasks == ("wiki_cloze",)


@pytest.mark.slow
def test_real_offline_model_beats_chance(offline_model) -> None:
    """16 items x 4 choices: ~20 s on 2 idle cores (no wall-time assert: the CPU is shared)."""
    result = zeroshot_evaluate(offline_model.model, offline_model.tokenizer, ["wiki_cloze"], limit=16, batch_size=8)
    acc = result.mean_acc()
    stderr = result.rows[(result.rows.task == "wiki_cloze") & (result.rows.metric == "acc")].stderr.item()
    assert not math.isnan(acc)
    assert acc - 2 * stderr > 0.25, (acc, stderr)  # chance is 1/4
