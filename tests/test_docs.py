"""The docs name only what exists: repository files, `deepcluster` options, Python names, tests.

Reads README.md and docs/**/*.md and checks, without running anything:

- every relative Markdown link, and every repository path in a code span or code block
  (``benchmarks/...``, ``docs/...``, ``tests/...``, ``keras_deepcluster/...``, ``cli/...``),
  names a file or folder of the repository;
- every ``--option`` after ``deepcluster COMMAND`` is an option of that command, and every code
  span that is an option alone (```--halt-after 3```) is an option of some command;
- every ``kdc.X`` / ``keras_deepcluster.X`` name resolves (attributes, then submodules);
- every test named (``test_file.py::test_name``, or a bare ``test_name``) is defined in tests/.

`problems` does the checking; the last test shows that it finds each kind of mistake.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.backend_independent

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])

# Options of other programs that the docs name in code spans of their own.
OTHER_OPTIONS = {"--deterministic", "--durations", "--dist", "--profile", "--jit-compile"}
REPOSITORY_PATH = re.compile(
    r"(?<![\w./~-])((?:benchmarks|docs|tests|keras_deepcluster|cli|\.ci)/[\w./-]*)"
)
PYTHON_NAME = re.compile(r"(?<![\w.])(kdc|keras_deepcluster)((?:\.[A-Za-z_]\w*)+)")
TEST_NAME = re.compile(r"^(?:tests/)?(?:(test_\w+\.py)(?:::)?)?(test_\w+)?(?:\[[^\]]*\])?$")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
CODE_BLOCK = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
CODE_SPAN = re.compile(r"(``?)(.+?)\1")


@functools.cache
def cli_options() -> dict[str, set[str]]:
    """Each `deepcluster` command's options (long and short), from the click command tree."""
    from keras_deepcluster_cli.main import main

    def options(command) -> set[str]:
        names = {"--help", "-h"}
        for parameter in command.params:
            names.update(getattr(parameter, "opts", ()))
            names.update(getattr(parameter, "secondary_opts", ()))
        return names

    commands = {name: options(command) for name, command in main.commands.items()}
    commands[""] = options(main)
    return commands


@functools.cache
def defined_tests() -> set[str]:
    """'file.py::name' and 'name' of every test function defined in tests/."""
    names = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        for name in re.findall(r"^(?:async )?def (test_\w+)", path.read_text(), re.M):
            names.update({name, f"{path.name}::{name}"})
        names.add(path.name)
    return names


def python_name_exists(dotted: str) -> bool:
    """Whether ``keras_deepcluster.<dotted>`` is an attribute chain or an importable module."""
    obj = importlib.import_module("keras_deepcluster")
    path = "keras_deepcluster"
    for part in dotted.split("."):
        path = f"{path}.{part}"
        if hasattr(obj, part):
            obj = getattr(obj, part)
            continue
        try:
            obj = importlib.import_module(path)
        except ImportError:
            return False
    return True


def _commands(code: str) -> list[str]:
    """Shell commands in `code`: continuation lines joined, split at ; && || | and ``$(``."""
    code = re.sub(r"\\\n\s*", " ", code)
    return [part for line in code.splitlines() for part in re.split(r"&&|\|\||[;|]|\$\(", line)]


def _code(text: str) -> tuple[list[str], list[str]]:
    """The code blocks of `text`, and the code spans of the prose around them."""
    blocks = CODE_BLOCK.findall(text)
    prose = CODE_BLOCK.sub("", text)
    return blocks, [match.group(2).strip() for match in CODE_SPAN.finditer(prose)]


def problems(text: str, doc: Path) -> list[str]:
    """What `text` (the Markdown of `doc`) names that does not exist, one line each."""
    found = []
    blocks, spans = _code(text)
    # Relative links, resolved from the doc's folder (anchors and web addresses left alone).
    for target in LINK.findall(CODE_BLOCK.sub("", text)):
        path = target.split("#")[0]
        if not path or re.match(r"^[a-z]+:", path):
            continue
        if not (doc.parent / path).exists():
            found.append(f"link to a missing file: {target}")
    # Repository paths inside code, resolved from the repository root.
    for code in blocks + spans:
        for path in REPOSITORY_PATH.findall(code):
            path = path.rstrip(".")
            if re.search(r"[<>{}*$]", path) or path.endswith("_"):
                continue
            if not (ROOT / path.split("::")[0]).exists():
                found.append(f"missing repository path: {path}")
    # Options of `deepcluster COMMAND`.
    options = cli_options()
    known = set().union(*options.values())
    for code in blocks + spans:
        for command in _commands(code):
            match = re.search(r"(?<![\w/-])deepcluster(?:\s+(\w+))?", command)
            if not match:
                continue
            name = match.group(1) if match.group(1) in options else ""
            for option in re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", command[match.end() :]):
                if option not in options[name] and not (name == "" and option == "--version"):
                    found.append(f"deepcluster {name or '(group)'} has no option {option}")
    for span in spans:
        option = re.match(r"^(--[a-z][a-z0-9-]*)(?:[ =].*)?$", span)
        if option and option.group(1) not in known | OTHER_OPTIONS:
            found.append(f"no deepcluster command has the option {option.group(1)}")
    # kdc.X / keras_deepcluster.X names.
    for _, dotted in PYTHON_NAME.findall(text):
        if not python_name_exists(dotted[1:]):
            found.append(f"no Python name keras_deepcluster{dotted}")
    # Tests named in code spans.
    for span in spans:
        match = TEST_NAME.match(span)
        if match and (match.group(1) or match.group(2)):
            name = "::".join(part for part in match.groups() if part)
            if name not in defined_tests():
                found.append(f"no test {span}")
    return sorted(set(found))


def test_docs_name_only_what_exists():
    found = [
        f"{doc.relative_to(ROOT)}: {problem}"
        for doc in DOCS
        for problem in problems(doc.read_text(), doc)
    ]
    assert found == []


def test_problems_finds_each_kind_of_mistake(tmp_path):
    doc = tmp_path / "broken.md"
    text = "\n".join(
        [
            "See [the design](no_such_page.md) and [a section](#fine-anchor).",
            "Run `python benchmarks/no_such_script.py`",
            "and `KERAS_BACKEND=jax python benchmarks/cycle.py`.",
            "```bash",
            "deepcluster train digits --epochs 3 \\",
            "    --no-such-option 4 && deepcluster export runs/x --link-clusters d",
            "```",
            "Pass `--halt-after 3` or `--halt-never`; `kdc.Run.open` and `kdc.no_such_name`;",
            "`keras_deepcluster.data.synthetic.write_image_folder`, `kdc.data.nothing_here()`.",
            "Tested by `test_cli.py::test_no_such_test` and `test_refuses_to_overwrite_a_run`.",
        ]
    )
    doc.write_text(text)
    assert problems(doc.read_text(), doc) == [
        "deepcluster train has no option --no-such-option",
        "link to a missing file: no_such_page.md",
        "missing repository path: benchmarks/no_such_script.py",
        "no Python name keras_deepcluster.data.nothing_here",
        "no Python name keras_deepcluster.no_such_name",
        "no deepcluster command has the option --halt-never",
        "no test test_cli.py::test_no_such_test",
    ]


def misplaced_examples(docstring: str) -> list[str]:
    """The ``>>>`` lines of a docstring that the API pages would not show as code.

    mkdocstrings renders Google-style sections: a doctest shows as code inside an
    ``Examples:`` section, indented under its header; one at the header's own indent (or
    with no section) is run into the text as a one-line blockquote.
    """
    lines = inspect.cleandoc(docstring).splitlines()
    misplaced = []
    for number, line in enumerate(lines):
        if not line.lstrip().startswith(">>>"):
            continue
        header = next((h for h in reversed(lines[:number]) if SECTION.match(h)), None)
        indent = len(line) - len(line.lstrip())
        if (
            header is None
            or not header.strip().startswith("Examples")
            or indent <= len(header) - len(header.lstrip())
        ):
            misplaced.append(line.strip())
    return misplaced


SECTION = re.compile(r"^\s*[A-Z][\w ]*:\s*$")


def test_docstring_examples_render_as_code():
    found = []
    for path in sorted([*(ROOT / "keras_deepcluster").rglob("*.py"), *(ROOT / "cli").glob("*.py")]):
        tree = ast.parse(path.read_text())
        nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, DOCUMENTED))]
        for node in nodes:
            docstring = ast.get_docstring(node, clean=False)
            if docstring:
                found += [
                    f"{path.relative_to(ROOT)}: {line}" for line in misplaced_examples(docstring)
                ]
    assert found == []
    bad = """Loads it.\n\nExample:\n>>> load("digits")\n"""
    good = """Loads it.\n\nExamples:\n    >>> load("digits")\n"""
    assert misplaced_examples(bad) == ['>>> load("digits")'] and misplaced_examples(good) == []


DOCUMENTED = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def uncited_benchmark_files(root: Path) -> list[str]:
    """Files under docs/benchmarks/ that no page names: by path (from docs/), by a folder above
    them, or by the path with the backend written ``<b>`` or ``<backend>``."""
    docs = root / "docs"
    text = "\n".join(p.read_text() for p in [*docs.rglob("*.md"), root / "README.md"])
    uncited = []
    for path in sorted((docs / "benchmarks").rglob("*")):
        if not path.is_file():
            continue
        relative = path.relative_to(docs).as_posix()
        names = {relative}
        for backend in ("tensorflow", "jax", "torch"):
            if backend in path.name:
                names |= {relative.replace(backend, mark) for mark in ("<b>", "<backend>")}
        folders = {
            folder.relative_to(docs).as_posix() + "/"
            for folder in path.parents
            if folder.is_relative_to(docs / "benchmarks") and folder != docs / "benchmarks"
        }
        if not any(name in text for name in names | folders):
            uncited.append(relative)
    return uncited


def test_every_benchmark_file_is_cited_by_a_page():
    assert uncited_benchmark_files(ROOT) == []


def test_uncited_benchmark_files_are_found(tmp_path):
    (tmp_path / "docs" / "benchmarks" / "kept").mkdir(parents=True)
    for name in ("a_jax.json", "b.json", "kept/c.json", "d.json"):
        (tmp_path / "docs" / "benchmarks" / name).write_text("{}")
    (tmp_path / "docs" / "page.md").write_text("[a](benchmarks/a_<b>.json), benchmarks/kept/")
    (tmp_path / "README.md").write_text("see docs/benchmarks/d.json? no: benchmarks/d.json")
    assert uncited_benchmark_files(tmp_path) == ["benchmarks/b.json"]
