"""RunConfig validation, YAML round trip and run-id hashing."""

from __future__ import annotations

import pytest

from pruning.config.run_config import RunConfig
from pruning.errors import ConfigError
from pruning.config.presets import get_preset


def test_yaml_round_trip_preserves_everything(tmp_path):
    cfg = RunConfig.from_dict(
        {"pruning": {"method": "sparsegpt", "sparsity": 0.7, "nm": "2:4"},
         "allocation": {"strategy": "linear", "preset": "QKV output", "epsilon": 0.162},
         "label": "x", "tags": ["a"]}
    )
    path = tmp_path / "run.yaml"
    path.write_text(cfg.to_yaml())
    back = RunConfig.from_yaml(path)
    assert back == cfg
    assert back.allocation.preset == "QKVout"
    assert back.allocation.score_groups == ("q", "k", "v", "o")
    assert back.pruning.nm_tuple == (2, 4)


def test_run_id_stable_and_sensitive_to_results_but_not_labels():
    a = RunConfig.from_dict({"pruning": {"sparsity": 0.7}})
    b = RunConfig.from_dict({"pruning": {"sparsity": 0.7}, "label": "mine", "tags": ["review"]})
    c = RunConfig.from_dict({"pruning": {"sparsity": 0.6}})
    assert a.run_id == b.run_id
    assert a.run_id != c.run_id
    assert a.run_id.startswith("wanda-") and len(a.run_id) == len("wanda-") + 12


def test_fields_added_later_keep_old_run_ids_at_their_default(tmp_path):
    """calibration.batch_size came after runs were published: at its default (1) the id is the one
    the config had before the field existed; any other value is a different run."""
    old = RunConfig.from_dict({"pruning": {"sparsity": 0.7}})
    assert old.calibration.batch_size == 1
    assert old.run_id == "wanda-084e39377b97"  # computed before the field was added
    explicit = RunConfig.from_dict({"pruning": {"sparsity": 0.7}, "calibration": {"batch_size": 1}})
    batched = RunConfig.from_dict({"pruning": {"sparsity": 0.7}, "calibration": {"batch_size": 16}})
    assert explicit.run_id == old.run_id and batched.run_id != old.run_id
    path = tmp_path / "b.yaml"
    path.write_text(batched.to_yaml())
    assert RunConfig.from_yaml(path).run_id == batched.run_id
    with pytest.raises(ConfigError, match="calibration.batch_size"):
        RunConfig.from_dict({"calibration": {"batch_size": 0}})


@pytest.mark.parametrize(
    ("data", "field", "needle"),
    [
        ({"pruning": {"sparsity": 1.3}}, "pruning.sparsity", "1.3"),
        ({"pruning": {"sparsity": -0.1}}, "pruning.sparsity", "-0.1"),
        ({"pruning": {"method": "random"}}, "pruning.method", "'sparsegpt'"),
        ({"pruning": {"nm": "4:2"}}, "pruning.nm", "N=4, M=2"),
        ({"pruning": {"nm": "2-4"}}, "pruning.nm", "N:M"),
        ({"allocation": {"epsilon": 1.0}}, "allocation.epsilon", "1.0"),
        ({"allocation": {"preset": "QKVX"}}, "allocation.preset", "QKVout + split"),
        ({"allocation": {"score_groups": "q,zz"}}, "allocation.score_groups", "gate"),
        ({"allocation": {"min_sparsity": 0.8, "max_sparsity": 0.5}}, "allocation", "exceeds"),
        ({"model": {"device": "gpu0"}}, "model.device", "cuda:N"),
        ({"calibration": {"nsamples": 0}}, "calibration.nsamples", "0"),
        ({"pruning": {"sparsty": 0.5}}, "pruning.sparsty", "unknown field"),
    ],
)
def test_bad_values_name_the_field_value_and_accepted(data, field, needle):
    with pytest.raises(ConfigError) as err:
        RunConfig.from_dict(data)
    msg = str(err.value)
    assert msg.startswith(field), msg
    assert needle in msg, msg


def test_preset_conflicting_with_explicit_groups_is_rejected():
    with pytest.raises(ConfigError, match="fixes score_groups"):
        RunConfig.from_dict({"allocation": {"preset": "QKV", "score_groups": ["q"]}})


def test_overrides_revalidate_and_preset_override_replaces_groups():
    cfg = RunConfig.from_dict({"allocation": {"preset": "QKVout + split"}})
    new = cfg.with_overrides({"allocation.preset": "Q out", "pruning.sparsity": 0.6})
    assert new.allocation.granularity == "block" and new.allocation.score_groups == ("q", "o")
    with pytest.raises(ConfigError, match="pruning.sparsity"):
        cfg.with_overrides({"pruning.sparsity": 2})


@pytest.mark.parametrize(
    ("header", "groups", "granularity"),
    [("QKV output", ("q", "k", "v", "o"), "block"), ("Q out gate", ("q", "o", "gate"), "block"),
     ("qk out split", ("q", "k", "o"), "split"), ("OUT V", ("v", "o"), "block"), ("Gate", ("gate",), "block")],
)
def test_notes_headers_map_to_presets(header, groups, granularity):
    preset = get_preset(header)
    assert preset.score_groups == groups and preset.granularity == granularity


def test_eig_dtype_names_have_one_source():
    """Issue 30: the accepted eigen-solver precisions were written four times and checked in three
    places; the config's type, the store's sets and queries, the pages and the solver now read
    pruning.config.precision (torch-free), and every check is check_eig_dtype's."""
    import subprocess
    import sys
    from typing import get_args

    from pruning.config.precision import DEFAULT_EIG_DTYPE, EIG_DTYPE_NAMES, EigDtypeName, check_eig_dtype
    from pruning.spectral.esd import EIG_DTYPES, default_eig_dtype, eig_dtype_from_name
    from pruning.store.spectra_sets import SpectraSetKey

    assert get_args(EigDtypeName) == EIG_DTYPE_NAMES == tuple(EIG_DTYPES)
    assert DEFAULT_EIG_DTYPE == EIG_DTYPE_NAMES[0] == RunConfig().allocation.eig_dtype
    assert default_eig_dtype() == eig_dtype_from_name(DEFAULT_EIG_DTYPE) == EIG_DTYPES[DEFAULT_EIG_DTYPE]
    accepted = set()
    for name in (*EIG_DTYPE_NAMES, "float16", "bfloat16", "half", "double", "auto"):
        try:
            RunConfig.from_dict({"allocation": {"eig_dtype": name}})
            accepted.add(name)
        except ConfigError:
            pass
    assert accepted == set(EIG_DTYPE_NAMES)  # the config accepts exactly the constant's names
    for name in EIG_DTYPE_NAMES:
        assert SpectraSetKey("0123456789abcdef", "weight", name, "1").eig_dtype == name
    with pytest.raises(ValueError, match="'float16' is invalid; accepted: float64, float32"):
        check_eig_dtype("float16")
    with pytest.raises(ValueError, match="'float16' is invalid; accepted: float64, float32"):
        SpectraSetKey("0123456789abcdef", "weight", "float16", "1")
    probe = "import sys, pruning.config.precision, pruning.config.run_config; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "False"
