"""The store's modules form layers (issue 30): no module imports another store module inside a function
or through a module ``__getattr__`` to dodge an import cycle, and the graph of their imports has no
cycle (catalog imported maybe_compact back from compaction, and views' Snapshot only for type checking,
before). Read from the source with ``ast``, so a cycle that Python happens to resolve still fails."""

from __future__ import annotations

import ast
from pathlib import Path

import pruning.store

STORE = Path(pruning.store.__file__).parent
PREFIX = "pruning.store."


def _imports(tree: ast.Module) -> tuple[set[str], list[str]]:
    """(store modules imported at module level, store imports made anywhere else: 'line: module')."""
    top: set[str] = set()
    nested: list[str] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom | ast.Import):
            continue
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
        for name in names:
            if not name.startswith(PREFIX):
                continue
            module = name[len(PREFIX):].split(".")[0]
            if node in tree.body:
                top.add(module)
            else:
                nested.append(f"{node.lineno}: {name}")
    return top, nested


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(STORE.glob("*.py")):
        if path.stem == "__init__":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top, nested = _imports(tree)
        assert not nested, f"pruning/store/{path.name} imports store modules late: {nested}"
        assert not any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__" for n in tree.body), \
            f"pruning/store/{path.name} has a module __getattr__"
        graph[path.stem] = top - {path.stem}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (as a path that ends where it starts), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_store_modules_import_in_layers():
    graph = _graph()
    assert {"catalog", "compaction", "views", "publish", "sql"} <= set(graph)
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])
    assert "catalog" in graph["views"] and "views" not in graph["catalog"]  # a snapshot, then its views
    assert "compaction" in graph["publish"] and "compaction" not in graph["catalog"]


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"catalog": {"views"}, "views": {"catalog"}}) == ["catalog", "views", "catalog"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_public_names_stay_where_callers_import_them():
    from pruning.store import bulk_append, compact, snapshot
    from pruning.store.catalog import read_manifest, snapshot as catalog_snapshot
    from pruning.store.compaction import maybe_compact
    from pruning.store.views import connect

    assert catalog_snapshot is snapshot
    assert all(callable(f) for f in (bulk_append, compact, read_manifest, maybe_compact, connect))
