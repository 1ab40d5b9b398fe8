"""The method registry (pruning.methods.registry): a method added through the registry alone runs
from the CLI and passes the config and the launch form; unknown names are refused with the
registry's names; the built-in entries say what each method needs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor

from pruning.config.run_config import RunConfig
from pruning.errors import ConfigError
from pruning.model.families import prunable_matrices
from pruning.methods.magnitude import magnitude_mask
from pruning.methods.registry import (
    KernelOptions, LayerStatistics, MethodSpec, get_method, method_names, method_registered, needs_calibration,
    prunes, register_method, statistics_needed,
)
from pruning.methods.select import prune_count


def largest_magnitude_mask(W: Tensor, sparsity: float, nm: tuple[int, int] | None) -> Tensor:
    """The opposite of magnitude pruning: the k = round(sparsity * numel) LARGEST |W_ij| of the
    matrix (or the N largest of every M inputs per row): masks disjoint from magnitude's."""
    scores = W.detach().float().abs()  # (out, in)
    if nm is not None:
        n, m = nm
        groups = scores.reshape(scores.shape[0], -1, m)  # (out, in/M, M)
        idx = torch.topk(groups, n, dim=-1).indices
        return torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, idx, True).reshape(scores.shape)
    mask = torch.zeros(scores.numel(), dtype=torch.bool, device=W.device)
    mask[torch.topk(scores.reshape(-1), prune_count(scores.numel(), sparsity)).indices] = True
    return mask.reshape(scores.shape)


def negmagnitude_kernel(W: Tensor, stats: LayerStatistics, sparsity: float, nm: tuple[int, int] | None,
                        options: KernelOptions) -> Tensor:
    return largest_magnitude_mask(W, sparsity, nm)


@pytest.fixture()
def negmagnitude():
    """A method registered through the registry alone, removed again afterwards."""
    spec = MethodSpec("negmagnitude", "prunes the largest |W| (a test method)", "none", kernel=negmagnitude_kernel)
    with method_registered(spec):
        yield spec
    assert "negmagnitude" not in method_names()


@pytest.fixture()
def largest_wanda():
    """A test method needing the input activations: per row, prune the LARGEST |W_ij| * ||X_j||_2.
    Every call is recorded: (W before, act_sq_sum, returned mask)."""
    calls: list[tuple[Tensor, Tensor, Tensor]] = []

    def kernel(W: Tensor, stats: LayerStatistics, sparsity: float, nm: tuple[int, int] | None,
               options: KernelOptions) -> Tensor:
        scores = W.abs() * stats.act_sq_sum.sqrt().reshape(1, -1)  # (out, in)
        k = prune_count(W.shape[1], sparsity)
        mask = torch.zeros_like(W, dtype=torch.bool).scatter_(1, torch.topk(scores, k, dim=1).indices, True)
        calls.append((W.clone(), stats.act_sq_sum.clone(), mask))
        return mask

    with method_registered(MethodSpec("largest_wanda", "test", "activations", kernel=kernel)):
        yield calls


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pruning.model.load import alias_dir
    from pruning.model.synthetic import save_tiny_model_dir

    if not (alias_dir("smollm2-135m") / "config.json").is_file():
        pytest.skip("offline model not prepared (python -m pruning fetch)")
    return save_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model")


def _weights(model_dir: Path) -> list[tuple[str, Tensor]]:
    from pruning.model.load import load_model

    loaded = load_model(str(model_dir))
    return [(ref.name, ref.module.weight.data.clone()) for ref in prunable_matrices(loaded.model, loaded.family)]


def test_builtin_entries_say_what_each_method_needs() -> None:
    assert method_names()[:4] == ("dense", "magnitude", "wanda", "sparsegpt")
    assert [statistics_needed(m) for m in ("dense", "magnitude", "wanda", "sparsegpt")] == [
        "none", "none", "activations", "hessian"]
    assert [needs_calibration(m) for m in ("dense", "magnitude", "wanda", "sparsegpt")] == [False, False, True, True]
    assert not prunes("dense") and prunes("magnitude")
    assert "dense" not in method_names(pruning_only=True)
    assert get_method("sparsegpt").resolved_group_kernel() is not None
    assert get_method("wanda").resolved_group_kernel() is None
    with pytest.raises(ValueError, match=r"'pruney' is unknown; accepted: dense, magnitude, wanda, sparsegpt"):
        get_method("pruney")


def test_register_validates_names_statistics_and_duplicates() -> None:
    with pytest.raises(ValueError, match=r"'Bad-Name' is invalid; accepted: 1-32 characters"):
        register_method(MethodSpec("Bad-Name", "x", kernel=negmagnitude_kernel))
    with pytest.raises(ValueError, match=r"statistics 'gradients' is invalid; accepted: none, activations, hessian"):
        register_method(MethodSpec("grads", "x", "gradients", kernel=negmagnitude_kernel))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="statistics='hessian' with a group kernel"):
        register_method(MethodSpec("grouped", "x", "activations", kernel=negmagnitude_kernel,
                                   group_kernel=negmagnitude_kernel))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'wanda' is already registered"):
        register_method(MethodSpec("wanda", "x", kernel=negmagnitude_kernel))
    assert "grads" not in method_names() and get_method("wanda").statistics == "activations"


def test_negmagnitude_from_the_prune_cli_gives_the_kernels_masks(negmagnitude, tiny_dir, tmp_path, capsys) -> None:
    from pruning.cli import main

    before = _weights(tiny_dir)
    code = main(["prune", "--model", str(tiny_dir), "--method", "negmagnitude", "--sparsity", "0.5",
                 "--eval", "none", "--save", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "overall sparsity 0.5000" in out
    after = dict(_weights(tmp_path / "out"))
    assert len(before) == 14
    for name, W in before:
        expected = largest_magnitude_mask(W, 0.5, None)
        assert torch.equal(after[name] == 0, expected), name
        assert not (expected & magnitude_mask(W, 0.5)).any()  # magnitude would have pruned the other half
        assert torch.equal(after[name][~expected], W[~expected])  # the kept weights are untouched


def test_activation_method_from_the_prune_cli_gets_calibration_statistics(largest_wanda, tiny_dir, tmp_path,
                                                                          capsys) -> None:
    from pruning.cli import main

    code = main(["prune", "--model", str(tiny_dir), "--method", "largest_wanda", "--sparsity", "0.25",
                 "--nsamples", "2", "--seqlen", "32", "--eval", "none", "--save", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().out
    after = _weights(tmp_path / "out")
    assert len(largest_wanda) == len(after) == 14  # one kernel call per matrix, in block order
    for (name, W_after), (W_before, act_sq_sum, mask) in zip(after, largest_wanda):
        assert act_sq_sum.shape == (W_before.shape[1],) and bool((act_sq_sum > 0).all()), name
        assert torch.equal(W_after == 0, mask), name
        assert mask.sum(1).eq(prune_count(W_before.shape[1], 0.25)).all(), name  # per-row count, as Wanda
    q, k, v, o = (largest_wanda[i][1] for i in range(4))  # block 0: q/k/v read one input, o another
    assert torch.equal(q, k) and torch.equal(k, v) and not torch.equal(q[: o.numel()], o[: q.numel()])


def test_run_cli_accepts_a_registered_method(negmagnitude, tiny_dir, data_dir, capsys) -> None:
    from pruning.cli import main

    code = main(["run", "--model", str(tiny_dir), "--method", "negmagnitude", "--sparsity", "0.5",
                 "--strategy", "uniform", "--limit-windows", "1", "--set", "evaluation.seqlen=32", "--no-publish"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "run negmagnitude-" in out and "achieved sparsity (parameter-weighted): 0.5000" in out


def test_run_cli_calibrates_for_a_registered_activation_method(largest_wanda, tiny_dir, data_dir, capsys) -> None:
    """`run` samples calibration text because the registry says the method needs activations
    (pipeline: registry.needs_calibration), and the kernel gets act_sq_sum for every matrix."""
    from pruning.cli import main

    code = main(["run", "--model", str(tiny_dir), "--method", "largest_wanda", "--sparsity", "0.25",
                 "--strategy", "uniform", "--nsamples", "2", "--set", "calibration.seqlen=32", "--limit-windows", "1",
                 "--set", "evaluation.seqlen=32", "--no-publish"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "run largest_wanda-" in out and "achieved sparsity (parameter-weighted): 0.2500" in out
    assert len(largest_wanda) == 14 and all(acts.shape == (W.shape[1],) for W, acts, _mask in largest_wanda)


def test_unknown_method_from_the_cli_names_the_registered_ones(negmagnitude, capsys) -> None:
    from pruning.cli import main

    assert main(["prune", "--method", "nonesuch", "--eval", "none"]) == 2
    err = capsys.readouterr().err
    assert "'nonesuch' is not a registered pruning method; accepted: magnitude, wanda, sparsegpt, negmagnitude" in err


def test_launch_form_accepts_the_new_name_and_lists_it(negmagnitude, tmp_path) -> None:
    from pruning.app_support.launch import form_field, validate_form

    values = {"model.name": "smollm2-135m", "pruning.sparsity": 0.5, "pruning.nm": ""}
    config, errors = validate_form({**values, "pruning.method": "negmagnitude"})
    assert errors == {} and config is not None and config.pruning.method == "negmagnitude"
    assert config.run_id.startswith("negmagnitude-")
    _kind, _label, options = form_field("pruning.method")
    assert "negmagnitude" in options["options"] and options["options"][options["index"]] == "wanda"
    config, errors = validate_form({**values, "pruning.method": "nonesuch"})
    assert config is None and set(errors) == {"pruning.method"}
    assert "'nonesuch'" in errors["pruning.method"]
    for name in ("dense", "magnitude", "wanda", "sparsegpt", "negmagnitude"):
        assert repr(name) in errors["pruning.method"]


def test_config_accepts_registered_names_only_while_registered() -> None:
    spec = MethodSpec("negmagnitude", "test", kernel=negmagnitude_kernel, supports_nm=False)
    with method_registered(spec):
        assert RunConfig.from_dict({"pruning": {"method": "negmagnitude"}}).pruning.method == "negmagnitude"
        no_nm = r"^pruning.nm: '2:4' is invalid: method 'negmagnitude' has no N:M variant"
        with pytest.raises(ConfigError, match=no_nm):
            RunConfig.from_dict({"pruning": {"method": "negmagnitude", "nm": "2:4"}})
        with pytest.raises(ConfigError) as err:
            RunConfig.from_dict({"pruning": {"method": "nonesuch"}})
        assert str(err.value).startswith("pruning.method: 'nonesuch' is invalid")
        assert "accepted: 'dense', 'magnitude', 'wanda', 'sparsegpt', 'negmagnitude'" in str(err.value)
    with pytest.raises(ConfigError, match="accepted: 'dense', 'magnitude', 'wanda', 'sparsegpt'$"):
        RunConfig.from_dict({"pruning": {"method": "negmagnitude"}})


@pytest.mark.parametrize(("data", "run_id"), [
    ({}, "wanda-b63a46b33958"),
    ({"pruning": {"method": "magnitude", "nm": " 2 : 4 "}}, "magnitude-2c9f451616f0"),
    ({"pruning": {"method": "dense"}}, "dense-005bd3b026a2"),
    ({"pruning": {"method": "sparsegpt", "sparsity": 0.7},
      "allocation": {"strategy": "linear", "preset": "QKVout + split"}}, "sparsegpt-23c5a1d5f492"),
])
def test_builtin_run_ids_do_not_move(data, run_id) -> None:
    """The ids the config gave before the registry (the method a Literal, N:M parsed in the config):
    a run id is a hash of the canonical JSON, and shipped runs are stored under it."""
    assert RunConfig.from_dict(data).run_id == run_id


def test_kernel_result_and_statistics_are_checked() -> None:
    from pruning.methods.apply import prune_linear

    def bad_kernel(W: Tensor, stats: LayerStatistics, sparsity: float, nm: tuple[int, int] | None,
                   options: KernelOptions) -> Tensor:
        return torch.zeros(1, dtype=torch.bool)

    layer = torch.nn.Linear(4, 3, bias=False)
    with method_registered(MethodSpec("badshape", "test", kernel=bad_kernel)):
        with pytest.raises(ValueError, match=r"returned shape \(1,\); accepted: the weight's shape \(3, 4\)"):
            prune_linear(layer, "badshape", 0.5)
    with method_registered(MethodSpec("needs_acts", "test", "activations", kernel=bad_kernel)):
        with pytest.raises(ValueError, match="needs_acts needs the input activation statistics"):
            prune_linear(layer, "needs_acts", 0.5)
    with pytest.raises(ValueError, match="'dense' prunes nothing; accepted: magnitude, wanda, sparsegpt"):
        prune_linear(layer, "dense", 0.5)
