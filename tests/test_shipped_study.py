"""The allocation study's shipped runs (issue 16): docs/FINDINGS.md leads with the table that the
store gives, and every knob choice in docs/study is re-made from the validation runs in the store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pruning.study

pytestmark = pytest.mark.shipped

REPO = Path(__file__).resolve().parents[1]
STORE = REPO / "data" / "store"


def _study():
    return pruning.study


def test_findings_lead_with_the_study_table_of_the_store() -> None:
    study = _study()
    report = study.study_report(str(STORE), per_run=False)
    findings = (REPO / "docs" / "FINDINGS.md").read_text()
    table = report[report.index("| model | method | sparsity | allocation |"):report.index("GPU time (each run")]
    assert table.strip() in findings
    assert findings.index("## The allocation study") < findings.index("## Protocol")
    # the numbers the prose quotes: ATP leads Wanda 70 %, ours (v2) behind it beyond the spread
    assert "| smollm2-135m | wanda | 70% | wiki | 374.54 ± 21.72 (n=3) | ATP depth | 316.24 ± 6.28 (n=3) | -58.30 | 21.72 | no | no |" in table


def test_every_choice_is_re_made_from_the_validation_runs_in_the_store(tmp_path: Path) -> None:
    """Traceability: choosing again from the stored validation runs gives the shipped choices file,
    every chosen candidate is a stored, succeeded run tagged study-validation, and the shipped final
    sweep is the one those choices give."""
    study = _study()
    for path in sorted((REPO / "docs" / "study").glob("choices-*.json")):
        shipped = json.loads(path.read_text())
        model = shipped["model"]
        out = tmp_path / path.name
        study.choose(model, str(STORE), out, shipped["layers"], True)  # the candidates added last may wait for the GPU
        again = json.loads(out.read_text())
        shipped.pop("written_at"), again.pop("written_at")
        assert again == shipped, model
        chosen = {c["chosen"]["run_id"] for c in shipped["cells"]}
        runs = study.study_runs(str(STORE))
        validation = runs[(runs["phase"] == "validation") & (runs["status"] == "succeeded")]
        assert chosen <= set(validation["run_id"]), model
        final = REPO / "sweeps" / f"study-final-{model}.yaml"
        configs = study.write_final(model, path, tmp_path / final.name)
        assert (tmp_path / final.name).read_text().split("name:", 1)[1] == final.read_text().split("name:", 1)[1]
        assert len(configs) == 71


def test_findings_show_the_proxy_runs_of_the_store() -> None:
    """The CPU runs on wiki:validation with a small budget (SmolLM2's that motivated ours' third
    variant, Gemma3-270m's first look) are printed in FINDINGS from the store, and the Gemma numbers
    the prose quotes are the stored ones."""
    report = _study().proxy_report(str(STORE))
    findings = (REPO / "docs" / "FINDINGS.md").read_text()
    assert report.strip() in findings
    assert ("| gemma3-270m | wanda | 70% | all · Hessian α | preset=all, metric=hessian_alpha, epsilon=0.3 | 855.08 | "
            "+244.0% | 24/34 |") in report
    assert "| gemma3-270m | wanda | 70% | uniform | — | 248.54 |  | 24/34 |" in report
    assert "| smollm2-135m | wanda | 70% | uniform | — | 1259.01 |  | 24/35 |" in report
