"""The package's structure, read from its source (ast, nothing imported): imports run one way
(no cycle), no private name is borrowed from another package, and the README's layout names
files that exist."""

import ast
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "fastgan")
COMPILED = {"fastgan._C"}  # the extension module: a leaf, it imports nothing of fastgan


def _modules():
    """{dotted name: path} of every fastgan module (a package under its own name)."""
    mods = {}
    for folder, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                mods[name.removesuffix(".__init__")] = path
    return mods


MODULES = _modules()


def _imports(name, path):
    """(target module, imported name or None, line) for each fastgan import in the module, at any
    depth (imports inside functions count: they run too)."""
    is_package = path.endswith("__init__.py")
    found = []
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
        if isinstance(node, ast.Import):
            found += [(a.name, None, node.lineno) for a in node.names if a.name.split(".")[0] == "fastgan"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[: len(name.split(".")) - node.level + is_package]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "fastgan":
                continue
            for a in node.names:
                sub = f"{source}.{a.name}"
                if sub in MODULES or sub in COMPILED:
                    found.append((sub, None, node.lineno))  # a module
                else:
                    found.append((source, a.name, node.lineno))  # a name from a module
    return found


def _resolve(target):
    while target not in MODULES and target not in COMPILED and "." in target:
        target = target.rpartition(".")[0]
    return target


def _graph():
    return {name: {_resolve(t) for t, _, _ in _imports(name, path)} - {name} for name, path in MODULES.items()}


def _cycles(graph):
    cycles, state, stack = [], {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_the_package_is_found():
    assert {"fastgan", "fastgan.train.trainer", "fastgan.ops.reference", "fastgan.metrics.evaluate"} <= set(MODULES)
    assert "fastgan.train.sampling" in _graph()["fastgan.metrics.evaluate"]


def test_no_import_cycle():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


@pytest.mark.parametrize(
    "lower, higher",
    [
        ("fastgan.metrics", "fastgan.train.trainer"),  # metrics use sampling, never the trainer
        ("fastgan.metrics", "fastgan.cli"),
        ("fastgan.train", "fastgan.metrics"),  # the trainer is handed an evaluator
        ("fastgan.train", "fastgan.bench"),
        ("fastgan.data", "fastgan.train"),
        ("fastgan.models", "fastgan.train"),
        ("fastgan.ops", "fastgan.nn"),
    ],
)
def test_lower_layers_do_not_import_higher_ones(lower, higher):
    graph = _graph()
    bad = [
        (m, t)
        for m, targets in graph.items()
        if m == lower or m.startswith(lower + ".")
        for t in targets
        if t == higher or t.startswith(higher + ".")
    ]
    assert not bad, bad


def _package(module):
    return module if MODULES.get(module, "").endswith("__init__.py") else module.rpartition(".")[0]


def test_no_private_name_is_imported_across_packages():
    """`from fastgan.x.y import _name` only inside package fastgan.x; the shared helpers at the
    bottom are public names of private modules (fastgan._files, fastgan._argtypes, ...)."""
    bad = []
    for name, path in MODULES.items():
        for source, imported, line in _imports(name, path):
            if (
                imported
                and imported.startswith("_")
                and not imported.startswith("__")
                and _package(name) != _package(_resolve(source))
            ):
                bad.append(f"{os.path.relpath(path, ROOT)}:{line} imports {imported} from {source}")
    assert not bad, bad


def test_the_readme_layout_names_files_that_exist():
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    paths = sorted({p.rstrip("/") for p in re.findall(r"`((?:csrc|fastgan|tests|benchmarks)/[^`\s]*)`", section)})
    assert len(paths) > 20
    missing = [p for p in paths if not os.path.exists(os.path.join(ROOT, p))]
    assert not missing, missing
    # and every module of fastgan's subpackages is named there
    named = set(paths)
    unnamed = [
        os.path.relpath(p, ROOT)
        for m, p in MODULES.items()
        if m.count(".") == 2
        and not p.endswith(("__init__.py", "__main__.py"))
        and os.path.relpath(p, ROOT) not in named
        and os.path.relpath(os.path.dirname(p), ROOT) not in named
    ]
    assert not unnamed, unnamed
