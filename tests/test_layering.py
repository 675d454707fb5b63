"""The library does the work; the CLI only parses, locks and prints."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.backend_independent


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
    return modules


@pytest.mark.parametrize("folder", ["keras_deepcluster", "benchmarks"])
def test_library_and_benchmarks_never_import_the_cli(folder):
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files
    offenders = [
        str(path.relative_to(ROOT))
        for path in files
        if any(m.split(".")[0] == "keras_deepcluster_cli" for m in imported_modules(path))
    ]
    assert offenders == []


def test_the_cli_holds_no_training_logic():
    """No Keras model is fit, compiled or built in cli/: that is `keras_deepcluster.train`'s."""
    for path in sorted((ROOT / "cli").rglob("*.py")):
        text = path.read_text()
        for call in (".fit(", ".compile(", "DeepCluster(", "Reclustering(", "model.save("):
            assert call not in text, f"{path.name} calls {call}"


def test_every_public_name_resolves():
    import keras_deepcluster as kdc

    for name in kdc.__all__:
        assert getattr(kdc, name) is not None, name
