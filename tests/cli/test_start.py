"""What starting the package and the command line imports, and what it prints.

Each check runs a fresh Python: what a process imported is only visible from inside it.
"""

import subprocess
import sys

import pytest

from keras_deepcluster.platform.tensorflow_import import _LOAD_NOISE

REPORT_IMPORTS = """
import atexit, sys
atexit.register(lambda: print("imported:", [m for m in ("keras", "tensorflow") if m in sys.modules],
                              file=sys.stderr))
"""


def run_python(code: str, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", REPORT_IMPORTS + code, *arguments],
        capture_output=True,
        text=True,
        timeout=300,
    )


CLI = (
    "from keras_deepcluster_cli.main import main\nsys.argv = ['deepcluster', *sys.argv[1:]]\nmain()"
)


@pytest.mark.parametrize(
    "arguments, exit_code, says",
    [
        ("--help", 0, "Commands:"),
        ("train --help", 0, "--min-steps"),
        ("show --help", 0, "Usage: deepcluster show"),
        ("train no_such_recipe", 2, "Unknown recipe 'no_such_recipe'"),
        ("train digits --clusters 0", 2, "must be >= 2"),
        ("train digits --no-such-option", 2, "No such option"),
        ("recipes", 0, "fashion_mnist"),
    ],
)
def test_help_and_option_errors_answer_without_keras(arguments, exit_code, says):
    done = run_python(CLI, *arguments.split())
    assert done.returncode == exit_code, done.stderr
    assert says in done.stdout + done.stderr
    assert "imported: []" in done.stderr


def test_the_package_and_its_image_helpers_import_no_keras(tmp_path):
    done = run_python(
        "import keras_deepcluster as kdc\n"
        f"kdc.data.write_image_folder({str(tmp_path)!r}, 6, classes=2, sizes=(8, 16))\n"
        "kdc.Recipe, kdc.load_recipe('digits')\n"
    )
    assert done.returncode == 0, done.stderr
    assert "imported: []" in done.stderr
    assert len([path for path in tmp_path.rglob("*") if path.is_file()]) == 6


def test_a_public_keras_name_registers_every_keras_class(tmp_path):
    """`keras.saving.load_model` reads the package's files once a Keras name of it is used."""
    code = (
        "import keras, keras_deepcluster as kdc\n"
        "kdc.Run\n"  # a name whose module needs Keras, not the model's own
        "for name in ('DeepCluster', 'SobelFilter', 'MaxPooling2D', 'FixedView', 'RandomView'):\n"
        "    assert keras.saving.get_registered_object('keras_deepcluster>' + name), name\n"
    )
    done = run_python(code)
    assert done.returncode == 0, done.stderr


def test_unknown_names_raise_attribute_error():
    import keras_deepcluster as kdc

    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        kdc.NoSuchThing
    assert set(kdc.__all__) <= set(dir(kdc))


def test_tensorflow_is_imported_without_its_load_time_log_lines():
    done = run_python(
        "from keras_deepcluster.platform.tensorflow_import import import_tensorflow_quietly\n"
        "import_tensorflow_quietly()\n"
        "print('kept', file=sys.stderr)\n"
    )
    assert done.returncode == 0, done.stderr
    assert "kept" in done.stderr
    assert not [line for line in done.stderr.splitlines() if any(n in line for n in _LOAD_NOISE)]


@pytest.mark.backend_independent
def test_a_wheel_carries_the_recipes_and_the_command_line(tmp_path):
    """recipes/ and cli/ sit at the top of the repository; the wheel maps them into packages."""
    import zipfile
    from pathlib import Path

    root = Path(__file__).parents[2]
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(root)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("keras_deepcluster-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    recipes = {path.name for path in (root / "recipes").glob("*.toml")}
    assert recipes and {f"keras_deepcluster/recipes/{name}" for name in recipes} <= names
    assert "keras_deepcluster_cli/main.py" in names
    # Every module of the library and of the command line, sub-packages included.
    modules = {str(path.relative_to(root)) for path in (root / "keras_deepcluster").rglob("*.py")}
    modules |= {f"keras_deepcluster_cli/{path.name}" for path in (root / "cli").glob("*.py")}
    modules -= {name for name in modules if name.startswith("keras_deepcluster/recipes/")}
    assert sorted(modules - names) == []
