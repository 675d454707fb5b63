"""The library does the work; the CLI only parses, locks and prints.

Checked on the import graph that `ast` reads from the source (every import, those inside
functions too), not on text: no import cycle between library modules, nothing in the library
importing its own face (`keras_deepcluster/__init__.py`) or the CLI.
"""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = "keras_deepcluster"
CLI = "keras_deepcluster_cli"
pytestmark = pytest.mark.backend_independent


def module_files(folder: Path, package: str) -> dict[str, Path]:
    """``{dotted module name: file}`` of every module under `folder`, the package `package`."""
    modules = {}
    for path in sorted(folder.rglob("*.py")):
        parts = [package, *path.relative_to(folder).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The modules `module` (at `path`) imports, with relative imports resolved.

    ``from package import name`` imports the module ``package.name`` when that is one of
    `known`, else it reads a name from ``package`` (its ``__init__``).
    """
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    imported = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                imported.add(submodule if submodule in known else base)
    return imported


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """``{module: the modules of `modules` it imports}``."""
    known = set(modules)
    return {name: imports_of(name, path, known) & known for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), and self-imports."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def without(graph: dict[str, set[str]], face: str) -> dict[str, set[str]]:
    """`graph` without the package face `face`, which re-exports and is imported by nobody."""
    return {name: imported - {face} for name, imported in graph.items() if name != face}


def test_the_library_has_no_import_cycle():
    graph = without(import_graph(module_files(ROOT / LIBRARY, LIBRARY)), LIBRARY)
    assert len(graph) > 50  # every module was read
    assert cycles(graph) == []


def test_no_library_module_imports_the_package_face():
    """`import keras_deepcluster as kdc` inside the library ties every module to all others."""
    graph = import_graph(module_files(ROOT / LIBRARY, LIBRARY))
    offenders = sorted(name for name, imported in graph.items() if LIBRARY in imported)
    assert offenders == []


@pytest.mark.parametrize("folder, package", [(LIBRARY, LIBRARY), ("benchmarks", "benchmarks")])
def test_library_and_benchmarks_never_import_the_cli(folder, package):
    modules = module_files(ROOT / folder, package)
    assert modules
    offenders = [
        name
        for name, path in modules.items()
        if any(m.split(".")[0] == CLI for m in imports_of(name, path, set(modules)))
    ]
    assert offenders == []


def test_the_cli_holds_no_method_or_analysis_logic():
    """cli/ builds, compiles and fits no model, and computes no statistics or clustering:
    it reaches those through the library (`keras_deepcluster.analysis`, `pretraining`)."""
    modules = module_files(ROOT / "cli", CLI)
    for name, path in modules.items():
        third_party = {m.split(".")[0] for m in imports_of(name, path, set(modules))}
        assert not third_party & {"scipy", "sklearn", "faiss"}, name
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                called = node.func.attr if isinstance(node.func, ast.Attribute) else None
                called = called or (node.func.id if isinstance(node.func, ast.Name) else None)
                assert called not in {"fit", "compile", "save", "DeepCluster", "Reclustering"}, (
                    f"{name} calls {called}"
                )


def test_the_graph_sees_a_planted_cycle(tmp_path):
    """The helpers on a made-up package: a cycle through an import inside a function and a
    relative import is found; a package face re-exporting its modules is not a cycle."""
    package = tmp_path / "planted"
    (package / "inner").mkdir(parents=True)
    (package / "__init__.py").write_text("from planted.a import A\nfrom planted import b\n")
    (package / "a.py").write_text("from planted.inner import c\nA = 1\n")
    (package / "b.py").write_text("import planted.a\n")
    (package / "inner" / "__init__.py").write_text("")
    (package / "inner" / "c.py").write_text("def late():\n    from ..b import x\n")
    graph = import_graph(module_files(package, "planted"))
    assert graph["planted.inner.c"] == {"planted.b"}
    assert graph["planted.a"] == {"planted.inner.c"}
    assert cycles(without(graph, "planted")) == [["planted.a", "planted.b", "planted.inner.c"]]
    (package / "inner" / "c.py").write_text("import planted\n")  # the face, not a cycle here
    graph = import_graph(module_files(package, "planted"))
    assert "planted" in graph["planted.inner.c"]
    assert cycles(without(graph, "planted")) == []


def test_every_public_name_resolves():
    import keras_deepcluster as kdc

    for name in kdc.__all__:
        assert getattr(kdc, name) is not None, name


def module_map(design: str) -> tuple[dict[str, str], dict[str, set[str]]]:
    """design.md's module map: ``({module pattern: group}, {group: groups it may import})``.

    A pattern is a module under the package (``views``), a package with its modules
    (``data.*``) or the package itself (``keras_deepcluster``).
    """
    section = design.split("## Module map", 1)[1].split("\n## ", 1)[0]
    patterns, allowed = {}, {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 4 or cells[0] in ("group", "---"):
            continue
        group, modules, _, imports = cells
        for pattern in re.findall(r"`([\w.*]+)`", modules):
            patterns[pattern] = group
        allowed[group] = {name.strip() for name in imports.split(",")} - {"–"}
    return patterns, allowed


def group_of(module: str, patterns: dict[str, str]) -> str | None:
    """The group of a dotted module name: an exact pattern first, else the longest package."""
    short = module.removeprefix(f"{LIBRARY}.") if module != LIBRARY else LIBRARY
    if short in patterns:
        return patterns[short]
    packages = [p for p in patterns if p.endswith(".*") and (short + ".").startswith(p[:-1])]
    return patterns[max(packages, key=len)] if packages else None


def map_problems(graph: dict[str, set[str]], patterns, allowed) -> list[str]:
    problems = [f"{m}: in no group of the module map" for m in graph if not group_of(m, patterns)]
    for module, imported in sorted(graph.items()):
        source = group_of(module, patterns)
        for other in sorted(imported):
            target = group_of(other, patterns)
            if source and target and target != source and target not in allowed[source]:
                problems.append(f"{module} ({source}) imports {other} ({target})")
    return problems


def test_the_module_map_is_the_import_graph():
    patterns, allowed = module_map((ROOT / "docs" / "design.md").read_text())
    assert set(allowed) >= {"platform", "method", "runs", "analysis", "face"}
    assert {g for groups in allowed.values() for g in groups} <= set(allowed)
    graph = import_graph(module_files(ROOT / LIBRARY, LIBRARY))
    assert map_problems(graph, patterns, allowed) == []


def test_the_module_map_check_finds_a_forbidden_import_and_a_missing_module():
    patterns = {"views": "method", "devices": "platform", "data.*": "data"}
    allowed = {"method": {"platform"}, "platform": set(), "data": {"platform"}}
    graph = {
        f"{LIBRARY}.views": {f"{LIBRARY}.devices", f"{LIBRARY}.data.arrays"},
        f"{LIBRARY}.devices": set(),
        f"{LIBRARY}.data.arrays": {f"{LIBRARY}.devices"},
        f"{LIBRARY}.stray": set(),
    }
    assert map_problems(graph, patterns, allowed) == [
        f"{LIBRARY}.stray: in no group of the module map",
        f"{LIBRARY}.views (method) imports {LIBRARY}.data.arrays (data)",
    ]


def test_a_moved_module_still_imports_by_its_old_name_with_a_warning():
    import importlib
    import sys

    import keras_deepcluster as kdc

    sys.modules.pop("keras_deepcluster.recipe", None)
    with pytest.warns(DeprecationWarning, match=r"keras_deepcluster\.runs\.recipe"):
        old = importlib.import_module("keras_deepcluster.recipe")
    assert old is kdc.runs.recipe
    assert old.__spec__.name == "keras_deepcluster.runs.recipe"  # the module keeps its own name
    with pytest.warns(DeprecationWarning, match=r"keras_deepcluster\.platform\.processes"):
        assert kdc.processes is kdc.platform.processes
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        kdc.runs.nothing  # noqa: B018


def test_the_tests_mirror_the_layout():
    """A folder of tests per sub-package of the library (and one for the CLI); only the
    project-wide checks (docs, layering) sit at the top of tests/."""
    packages = {p.parent.name for p in (ROOT / LIBRARY).glob("*/__init__.py")} - {"recipes"}
    folders = {p.parent.name for p in (ROOT / "tests").glob("*/test_*.py")}
    assert folders == packages | {"cli"}
    top = {p.name for p in (ROOT / "tests").glob("test_*.py")}
    assert top == {"test_docs.py", "test_layering.py"}
