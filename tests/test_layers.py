"""pruning/ is a house whose tree is its architecture (issue 30): every package is a floor, and a module
imports only its own package and the floors below it. Read from the source with ``ast``: imports at the
top of a module, inside a function and under ``TYPE_CHECKING`` alike, since a late import is still a
dependency (only hidden from Python's import order). The floors, from the ground up, follow the imports
the code has (docs/ARCHITECTURE.md draws them); the few that point up are declared below, each with its
reason, and a declared exception that the code no longer needs fails too."""

from __future__ import annotations

import ast
from pathlib import Path

import pruning

PACKAGE = Path(pruning.__file__).parent

#: the ground floor: the modules at the package root (besides ``__init__`` and ``__main__``), which
#: every floor may import and which import nothing above themselves
GROUND = ("errors", "paths", "roots", "atomic", "procs", "registries")

#: the floors, lowest first; a module may import its own floor and any floor before it in this list
FLOORS = (
    "ground",       # errors, paths, roots, atomic, procs, registries
    "methods",      # pruning kernels and their registry: tensors in, masks out; import nothing else
    "config",       # RunConfig and its sections, presets, precisions (reads the method registry)
    "text",         # offline corpora, the calibration sampler
    "model",        # loading, family layouts, placement, prefetch
    "calibration",  # block-sequential passes and their statistics
    "spectral",     # ESDs and their metrics (Hessian spectra run a calibration pass)
    "allocation",   # a sparsity per matrix from metrics and statistics
    "attention",    # attention statistics of a loaded model
    "evaluation",   # perplexity, zero-shot, the evaluation protocols
    "store",        # bundles, DuckDB views, catalog, health
    "run",          # one run end to end: pipeline, stages, prune, caches of spectra, warm state
    "jobs",         # the queue, workers, warm runners, Ray, sweeps
    "study",        # the allocation study: protocol, sweeps, results
    "importers",    # the team's notes and lm-eval JSON into the store
    "app_support",  # the pages' pure helpers
    "cli",          # python -m pruning COMMAND
    "__main__",     # the entry point
)

#: (importing module, imported module) -> why this import may point up the floors
EXCEPTIONS = {
    ("pruning.config.allocation", "pruning.allocation.registry"):
        "the allocation strategies' registry is a table of plain data that imports nothing of pruning "
        "(test_declared_registries_stay_leaves); the config validates a strategy's name and knobs against "
        "it, so a new strategy is one registry entry, not an edit of the config",
    ("pruning.config.presets", "pruning.allocation.registry"):
        "the same registry: a preset's grid column is named by the strategy that fills it",
    ("pruning.jobs.runner", "pruning.cli"):
        "the warm runner replays `python -m pruning run` in its own process (cli.main, imported when a "
        "job starts) so that a job's exit status, log and events are exactly the command's",
}

#: modules that a lower floor may read (the exceptions above): they must stay leaves
LEAVES = ("pruning.allocation.registry",)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _floor(module: str) -> str:
    """The floor of ``pruning.X...``: its package, or ``ground`` for a module at the root."""
    parts = module.split(".")
    if len(parts) == 1:
        return "ground"
    top = parts[1]
    if top == "__main__":
        return "__main__"
    return "ground" if top in GROUND else top


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every ``pruning`` module ``path`` imports, wherever the import is."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "pruning":  # from pruning import X: X is a module of the root or a package
                found += [(node.lineno, f"pruning.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, target))
    return [(line, name) for line, name in found if name == "pruning" or name.startswith("pruning.")]


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _upward() -> dict[tuple[str, str], list[str]]:
    """(importer, imported) -> ['path:line', ...] for every import of a floor above the importer's."""
    rank = {floor: i for i, floor in enumerate(FLOORS)}
    found: dict[tuple[str, str], list[str]] = {}
    for path in _modules():
        module = _module_name(path)
        here = rank[_floor(module)]
        for line, imported in _imports(path):
            if rank[_floor(imported)] > here:
                where = f"{path.relative_to(PACKAGE.parent)}:{line}"
                found.setdefault((module, imported), []).append(where)
    return found


def test_every_package_has_a_floor():
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert packages <= set(FLOORS), f"packages on no floor (add them to FLOORS): {sorted(packages - set(FLOORS))}"
    assert set(FLOORS) - {"ground", "__main__"} <= packages, "FLOORS names a package that no longer exists"


def test_the_root_holds_only_the_ground_floor():
    root = {p.stem for p in PACKAGE.glob("*.py")}
    assert root == set(GROUND) | {"__init__", "__main__"}, \
        f"modules at pruning/'s root beyond the ground floor (give them a package): {sorted(root - set(GROUND))}"


def test_no_module_imports_a_floor_above_its_own():
    upward = _upward()
    undeclared = {pair: where for pair, where in upward.items() if pair not in EXCEPTIONS}
    lines = [f"{a} imports {b} ({_floor(b)} is above {_floor(a)}): {', '.join(w)}"
             for (a, b), w in sorted(undeclared.items())]
    assert not undeclared, "upward imports:\n" + "\n".join(lines)


def test_every_declared_exception_is_still_needed():
    stale = set(EXCEPTIONS) - set(_upward())
    assert not stale, f"declared exceptions the code no longer makes (remove them): {sorted(stale)}"


def test_declared_registries_stay_leaves():
    """A module a lower floor may read imports nothing of pruning beyond the ground floor: else the
    exception would carry a real upward dependency (and an import cycle) with it."""
    for leaf in LEAVES:
        path = PACKAGE.parent / (leaf.replace(".", "/") + ".py")
        beyond = [f"{line}: {name}" for line, name in _imports(path) if _floor(name) != "ground"]
        assert not beyond, f"{leaf} imports {beyond}"


#: the longest a module may be (issue 30): a room one reader can hold
MAX_MODULE_LINES = 350


def test_no_module_is_longer_than_a_reader_holds():
    repo = PACKAGE.parent
    long = {str(path.relative_to(repo)): n for folder in ("pruning", "pages", "scripts")
            for path in sorted((repo / folder).rglob("*.py"))
            if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by responsibility): {long}"
