"""The package's modules import one another without a cycle.

Every `import` / `from ... import` in diffnb/**/*.py counts, at module level or inside a function, and so do module names
given as strings to `importlib.import_module` and the module lists that diffnb imports by name (`ARCHITECTURE_MODULES`,
the CLI's `SUBCOMMANDS`). One kind of edge is left out, and the test says which: a module-level `__getattr__` (PEP 562)
that forwards a name which moved to another module. It imports nothing while the module loads and exists only so
that `from old.place import name` keeps working."""
import ast
from pathlib import Path

from conftest import ROOT

PKG = ROOT / "diffnb"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__": parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(p): p for p in PKG.rglob("*.py") if "_modidx" not in p.name}


def resolve(name: str) -> str | None:
    "The diffnb module that `import name` (or an attribute path under it) loads, if any."
    while name:
        if name in MODULES: return name
        name = name.rpartition(".")[0]
    return None


def _strings(node):
    "Module-looking string constants in a list/tuple/dict literal (dict: values that are tuples holding a module name)."
    for n in ast.walk(node):
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value.startswith("diffnb."): yield n.value


def imports_of(mod: str) -> dict[str, str]:
    "target module -> how it is imported (for the failure message), from the source of `mod`."
    path = MODULES[mod]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    aliases = {id(n) for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == "__getattr__" for n in ast.walk(f)}
    out = {}
    def add(target, how):
        t = resolve(target)
        if t and t != mod: out.setdefault(t, how)
    for node in ast.walk(tree):
        if id(node) in aliases: continue
        if isinstance(node, ast.Import):
            for a in node.names: add(a.name, f"import {a.name} (line {node.lineno})")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = package.split(".")
                pkg = pkg[: len(pkg) - node.level + 1]
                base = ".".join(pkg + ([node.module] if node.module else []))
            for a in node.names:   # `from pkg import submodule` imports the submodule; `from pkg import name` the package
                full = f"{base}.{a.name}"
                add(full if full in MODULES else base, f"from {'.' * node.level}{node.module or ''} import {a.name} (line {node.lineno})")
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            for s in _strings(node): add(s, f"import_module({s!r}) (line {node.lineno})")
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id in ("ARCHITECTURE_MODULES", "SUBCOMMANDS") for t in targets):
                for s in _strings(node.value): add(s, f"{targets[0].id} names {s!r} (line {node.lineno})")
    return out


def find_cycle(graph: dict[str, dict[str, str]]):
    "One cycle as a list of modules (first == last), or None."
    state, stack = {}, []
    def visit(m):
        state[m] = 1; stack.append(m)
        for t in graph.get(m, {}):
            if state.get(t) == 1: return stack[stack.index(t):] + [t]
            if t not in state:
                c = visit(t)
                if c: return c
        state[m] = 2; stack.pop()
        return None
    for m in sorted(graph):
        if m not in state:
            c = visit(m)
            if c: return c
    return None


def test_walker_sees_every_kind_of_import():
    "The walker itself: it finds imports inside functions, by string, and from the lists imported by name."
    g = {m: imports_of(m) for m in MODULES}
    assert "diffnb.learn.predict" in g["diffnb.cli"]                  # SUBCOMMANDS string
    assert "diffnb.learn.models" in g["diffnb.learn"]                 # ARCHITECTURE_MODULES string
    assert "diffnb.learn.io" in g["diffnb.learn.gan"]
    assert "diffnb.learn.predict" not in g["diffnb.learn.io"]         # the PEP 562 alias is the one edge left out
    assert find_cycle({"a": {"b": ""}, "b": {"c": ""}, "c": {"a": ""}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": ""}, "b": {}}) is None


def test_no_import_cycle():
    graph = {m: imports_of(m) for m in MODULES}
    cycle = find_cycle(graph)
    if cycle:
        steps = "\n".join(f"  {a} -> {b}: {graph[a][b]}" for a, b in zip(cycle, cycle[1:]))
        raise AssertionError(f"import cycle between diffnb modules:\n{steps}")
