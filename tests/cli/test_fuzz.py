"""Property tests over the data loaders and the command line (Hypothesis).

The property: every input ends either in data (or a finished run) or in a
specific error, a ValueError/OSError from the library and a one-line message
with exit 1 or 2 from the CLI; never another exception, a traceback, an
abort, a hang, or a run directory for a refused input. ``FUZZ_EXAMPLES``
sets how many examples each test draws (CI: the default below; by hand:
``FUZZ_EXAMPLES=2000 KERAS_BACKEND=jax pytest tests/cli/test_fuzz.py``).

The examples are derandomized (the profile "ci"): every run draws the same
ones, so a failure in CI fails again by hand. ``FUZZ_PROFILE=explore`` draws
new ones each run.
"""

import gzip
import io
import math
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import tomllib
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from keras_deepcluster import data
from keras_deepcluster_cli.main import main

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", 100))
settings.register_profile(
    "ci",
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
    derandomize=True,
)
settings.register_profile("explore", settings.get_profile("ci"), derandomize=False)
settings.load_profile(os.environ.get("FUZZ_PROFILE", "ci"))
# Loaders, caches and recipes are NumPy, Pillow and TOML: on one backend. The command
# line tests train what they accept, on every backend.
independent = pytest.mark.backend_independent
# A loader may take this long on the small inputs drawn here; longer is a hang.
SECONDS = 10


def loads_or_refuses(source, path):
    """`data.load(source, path)`: valid data, or a ValueError/OSError; quickly."""
    start = time.perf_counter()
    try:
        loaded = data.load(source, path=path)
    except (ValueError, OSError) as error:
        assert str(error).strip(), "an error without a message"
        loaded = None
    assert time.perf_counter() - start < SECONDS
    if loaded is not None:
        x = loaded.x_train
        assert x.dtype == np.uint8 and x.ndim == 4 and len(x) > 0
        assert loaded.y_train is None or loaded.y_train.shape == (len(x),)
    return loaded


dtypes = st.sampled_from(
    ["uint8", "int16", "int64", "float16", "float32", "float64", "bool", "complex64"]
)
arrays = dtypes.flatmap(
    lambda dtype: hnp.arrays(
        dtype,
        hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=6),
        elements={"allow_nan": True, "allow_infinity": True} if "float" in dtype else None,
    )
)


@independent
@given(
    contents=st.dictionaries(
        st.sampled_from(["x", "y", "x_train", "y_train", "x_test", "y_test", "images"]),
        arrays,
        max_size=4,
    ),
    cut=st.one_of(st.none(), st.integers(0, 400)),
)
def test_npz_files(contents, cut):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.npz"
        buffer = io.BytesIO()
        np.savez(buffer, **contents)
        raw = buffer.getvalue()
        path.write_bytes(raw if cut is None else raw[:cut])  # truncated, at times
        loads_or_refuses("npz", path)


@independent
@given(
    magic=st.one_of(st.just(b"\x00\x00\x08"), st.binary(min_size=0, max_size=3)),
    dims=st.lists(st.integers(0, 2**32 - 1) | st.integers(0, 9), min_size=0, max_size=5),
    declared_dims=st.one_of(st.none(), st.integers(0, 255)),
    payload=st.integers(0, 3000),
    zipped=st.booleans(),
    labels=st.booleans(),
)
def test_idx_files(magic, dims, declared_dims, payload, zipped, labels):
    ndim = len(dims) if declared_dims is None else declared_dims
    header = magic + bytes([ndim % 256]) + b"".join(d.to_bytes(4, "big") for d in dims)
    raw = header + bytes(payload)  # data of any length: as promised, or not
    with tempfile.TemporaryDirectory() as folder:
        name = "train-images-idx3-ubyte" + (".gz" if zipped else "")
        (Path(folder) / name).write_bytes(gzip.compress(raw) if zipped else raw)
        if labels:
            (Path(folder) / "train-labels-idx1-ubyte").write_bytes(
                b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + bytes(3)
            )
        loads_or_refuses("idx", folder)


def image_bytes(draw_mode, size, kind):
    if kind == "garbage":  # bytes fixed by the draw, so that a failure reproduces
        return np.random.default_rng(size).bytes(size[0] * 3), ".png"
    mode = draw_mode
    image = Image.new(mode, size, color=7 if mode in ("L", "P", "I;16", "1") else None)
    buffer = io.BytesIO()
    extension = {"png": ".png", "jpeg": ".jpg", "webp": ".webp", "bmp": ".bmp"}[kind]
    if kind == "jpeg" and mode not in ("L", "RGB", "CMYK"):
        image = image.convert("RGB")
    if kind == "bmp" and mode == "I;16":
        image = image.convert("L")
    image.save(buffer, format=kind.upper())
    raw = buffer.getvalue()
    return raw, extension


@independent
@given(
    files=st.lists(
        st.tuples(
            st.sampled_from(["L", "RGB", "RGBA", "P", "1", "I;16"]),
            st.tuples(st.integers(1, 40), st.integers(1, 40)),
            st.sampled_from(["png", "jpeg", "bmp", "garbage"]),
            st.sampled_from(["", "cat", "dog"]),
            st.one_of(st.none(), st.integers(0, 200)),
        ),
        min_size=0,
        max_size=6,
    )
)
def test_image_folders(files):
    with tempfile.TemporaryDirectory() as folder:
        for i, (mode, size, kind, sub, cut) in enumerate(files):
            raw, extension = image_bytes(mode, size, kind)
            target = Path(folder) / sub
            target.mkdir(exist_ok=True)
            (target / f"{i}{extension}").write_bytes(raw if cut is None else raw[:cut])
        loads_or_refuses("folder", folder)
        caches_or_refuses(folder, len(files))


def caches_or_refuses(folder, files):
    """The image cache of `folder`: every file decoded or listed as skipped, or a ValueError."""
    start = time.perf_counter()
    try:
        cache = data.prepare("folder", path=folder, size=8, out=Path(folder) / ".cache")
    except ValueError as error:
        assert str(error).strip(), "an error without a message"
        return
    assert time.perf_counter() - start < SECONDS
    cached = cache.data()
    assert cached.x_train.shape[1:] == (8, 8, 3) and len(cached.x_train) > 0
    assert len(cached.x_train) + len(cache.manifest["skipped"]) == files
    assert cached.y_train is None or cached.y_train.shape == (len(cached.x_train),)


# Options at and beyond their edges; valid draws stay small (few images, 1-2 epochs).
OPTIONS = {
    "--epochs": ["0", "1", "2", "-1", "two", "", "1.5"],
    "-k": ["-1", "0", "1", "2", "5", "1000000", "nan"],
    "--batch-size": ["0", "1", "16", "100000", "-5", "x"],
    "--lr": ["0", "-1", "0.01", "nan", "inf", "1e30", "1e-30"],
    "--pca": ["none", "0", "1", "8", "84", "85", "1000000", "-2", "wide"],
    "--limit": ["0", "1", "3", "40", "none", "-3"],
    "--halt-after": ["0", "1", "2", "5", "none", "never"],
    "--halt-when-stable": ["0", "0.5", "1", "1.5", "nan", "-0.1"],
    "--seed": ["0", "-1", "4294967296", "18446744073709551616", "é"],
    "--source": ["digits", "npz", "idx", "folder", "tfds", "", "ü"],
}


TRAIN_OPTIONS = dict(
    chosen=st.dictionaries(
        st.sampled_from(sorted(OPTIONS)), st.integers(0, 9), min_size=1, max_size=5
    ).map(lambda picks: {k: OPTIONS[k][i % len(OPTIONS[k])] for k, i in picks.items()}),
    out_kind=st.sampled_from(["new", "file", "unicode", "nested"]),
)
# What is accepted trains, so a share of the draws runs on every backend; most draws are
# refused while parsing, before Keras runs, and the rest of them run once.
EVERY_BACKEND = max(1, EXAMPLES // 4)


@settings(max_examples=EVERY_BACKEND)
@given(**TRAIN_OPTIONS)
def test_train_options(chosen, out_kind):
    train_ends_in_a_run_or_a_message(chosen, out_kind)


@independent
@settings(max_examples=max(1, EXAMPLES - EVERY_BACKEND))
@given(**TRAIN_OPTIONS)
def test_more_train_options(chosen, out_kind):
    train_ends_in_a_run_or_a_message(chosen, out_kind)


def train_ends_in_a_run_or_a_message(chosen, out_kind):
    chosen.setdefault("--limit", "40")
    chosen.setdefault("--epochs", "1")
    folder = Path(tempfile.mkdtemp())
    try:
        out = {
            "new": folder / "run",
            "file": folder / "a-file",
            "unicode": folder / "rün ✓",
            "nested": folder / "a" / "b" / "run",
        }[out_kind]
        if out_kind == "file":
            out.write_text("not a run")
        args = ["train", "digits", *[part for item in chosen.items() for part in item]]
        start = time.perf_counter()
        result = CliRunner().invoke(main, [*args, "--out", str(out)], prog_name="deepcluster")
        assert time.perf_counter() - start < 120
        assert result.exit_code in (0, 1, 2), (args, result.output, result.exception)
        if result.exit_code != 0:
            assert isinstance(result.exception, SystemExit), (args, repr(result.exception))
            assert "Traceback" not in result.output, (args, result.output)
            assert "Error" in result.output, (args, result.output)
            diverged = "the network diverged" in result.output  # a run that failed mid-way
            if out_kind != "file" and not diverged:  # a refused input writes no run directory
                assert not (out / "config.toml").exists(), (args, result.output)
        else:
            assert (out / "summary.json").is_file()
    finally:
        shutil.rmtree(folder)


# `space --seeds 0` trains a space; the other commands refuse every drawn value while
# parsing it or reading the (empty) folder, before Keras runs.
@pytest.mark.parametrize(
    "command",
    ["space"]
    + [pytest.param(c, marks=independent) for c in ("sweep", "select", "probe", "report")],
)
@given(value=st.sampled_from(["0", "-1", "x", "", "1-", "5-3", "nan", "1e9", "ü", "2,,3"]))
def test_analysis_options(command, value):
    folder = Path(tempfile.mkdtemp())
    try:
        if command in ("probe", "report"):
            args = [command, str(folder / value) if value else str(folder)]
        else:
            option = {"space": "--seeds", "sweep": "--clusters", "select": "--labelled"}[command]
            args = [command, "digits", option, value, "--out", str(folder / "out")]
        result = CliRunner().invoke(main, args, prog_name="deepcluster")
        assert result.exit_code in (0, 1, 2), (args, result.output, result.exception)
        if result.exit_code:  # refused: with a message, and nothing written
            assert isinstance(result.exception, SystemExit), (args, repr(result.exception))
            assert "Traceback" not in result.output and "Error" in result.output
            assert not any((folder / "out").rglob("config.toml")), (args, result.output)
    finally:
        shutil.rmtree(folder)


def toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(str(value), repr(value))
    if isinstance(value, str):  # control characters escaped: a TOML string of any text
        return (
            '"'
            + "".join(
                f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F or c in '"\\' else c
                for c in value
            )
            + '"'
        )
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)


recipe_keys = st.sampled_from(
    ["dataset", "source", "limit", "backbone", "batch_norm", "sobel", "clusters", "epochs"]
    + ["batch_size", "lr", "momentum", "weight_decay", "seed", "deterministic", "pca"]
    + ["steps_per_execution", "kmeans", "halt_after", "halt_when_stable", "layer", "flip", "zzz"]
)
recipe_values = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    # No control characters: `Recipe.to_toml` writes them unescaped, which TOML forbids
    # (test_control_characters_survive_the_round_trip, an expected failure until fixed).
    st.text(st.characters(exclude_categories=("Cs", "Cc")), max_size=8),
    st.lists(st.integers(0, 9), max_size=3),
    # Valid names, so that some drawn recipes load.
    st.sampled_from(["digits", "mnist", "folder", "lenet", "alexnet_micro", "faiss", "conv_2"]),
)
# Where each drawn key belongs, and what it must be (the recipe format of
# docs/recipes.md, written out here so that the test does not ask the library).
HOME = {
    "dataset": "data", "source": "data", "limit": "data", "backbone": "model",
    "batch_norm": "model", "sobel": "model", "clusters": "model", "epochs": "training",
    "batch_size": "training", "lr": "training", "momentum": "training",
    "weight_decay": "training", "seed": "training", "deterministic": "training",
    "pca": "clustering", "steps_per_execution": "training", "kmeans": "clustering",
    "halt_after": "clustering", "halt_when_stable": "clustering", "layer": "probe",
    "flip": "probe",
}  # fmt: skip
KIND = {
    "dataset": str, "source": str, "limit": int, "backbone": str, "batch_norm": bool,
    "sobel": bool, "clusters": int, "epochs": int, "batch_size": int, "lr": float,
    "momentum": float, "weight_decay": float, "seed": int, "deterministic": bool, "pca": int,
    "steps_per_execution": int, "kmeans": str, "halt_after": int, "halt_when_stable": float,
    "layer": str, "flip": bool, "name": str, "description": str,
}  # fmt: skip
RULE = {
    "limit": ">= 1", "clusters": ">= 2", "epochs": ">= 1", "batch_size": ">= 1", "lr": "> 0",
    "momentum": "in [0, 1)", "weight_decay": ">= 0", "seed": ">= 0", "pca": ">= 1",
    "steps_per_execution": ">= 1", "halt_after": ">= 1", "halt_when_stable": "in (0, 1]",
}  # fmt: skip
ARTICLE = {int: "an integer", float: "a finite number", str: "a string", bool: "true or false"}
HOLDS = {
    ">= 0": lambda v: v >= 0,
    ">= 1": lambda v: v >= 1,
    ">= 2": lambda v: v >= 2,
    "> 0": lambda v: v > 0,
    "in [0, 1)": lambda v: 0 <= v < 1,
    "in (0, 1]": lambda v: 0 < v <= 1,
}
CHOICES = {
    "source": ["tfds", "idx", "npz", "folder", "digits", "cache"],
    "kmeans": ["auto", "faiss", "sklearn", "keras"],
    "backbone": ["alexnet", "alexnet_micro", "lenet"],
}
VIEWS = ["cifar10", "fashion_mnist", "imagenet", "mnist", "svhn"]


def has_kind(value, kind) -> bool:
    if kind is float:
        return (
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        )
    return isinstance(value, kind) and (kind is bool or not isinstance(value, bool))


def homed(pairs: list) -> dict:
    """(key, value) pairs put in their keys' own sections (an unknown key in [extra])."""
    sections = {}
    for key, value in pairs:
        sections.setdefault(HOME.get(key, "extra"), {})[key] = value
    return sections


def plausible(key: str):
    """Values near what `key` accepts: at the edges of its rule, its choices and a few more."""
    kind = KIND.get(key)
    if key in CHOICES:
        return st.sampled_from(CHOICES[key] + ["gpu"])
    if key == "dataset":
        return st.sampled_from(VIEWS + ["digits", "svhn_cropped"])
    if key == "layer":
        return st.sampled_from(["conv_2", "relu_5", "sobel", "linear_2", "conv_9"])
    if kind is bool:
        return st.booleans()
    if kind is int:
        return st.integers(-1, 12)
    if kind is float:
        return st.one_of(st.floats(-0.5, 1.5), st.integers(0, 2))
    return recipe_values


# Recipes in the right shape with values near their edges: some load, the others break
# one rule or another (the drawn sections above mostly break the layout).
shaped_sections = st.tuples(
    plausible("dataset"),
    st.lists(recipe_keys.flatmap(lambda k: st.tuples(st.just(k), plausible(k))), max_size=8),
).map(lambda drawn: homed([("dataset", drawn[0]), *drawn[1]]))


def assert_names_the_problem(message: str, path: Path) -> None:
    """A RecipeError's message names the file and a key or rule that the file breaks."""
    assert message.startswith(f"{path}: "), message
    rest = message[len(f"{path}: ") :]
    try:
        document = tomllib.loads(path.read_bytes().decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        assert rest.startswith("not valid TOML ("), message
        return
    assert not rest.startswith("not valid TOML"), message  # it is TOML
    sections = {k: v for k, v in document.items() if isinstance(v, dict)}

    def value_of(section, key):
        held = document if section is None else sections.get(section, {})
        assert key in held, f"{message!r} names {key!r}, which the file does not set"
        return held[key]

    if m := re.fullmatch(r"unknown key (.+) in \[(\w+)\]; known keys: .*\.", rest, re.S):
        section = m[2]
        unknown = [k for k in sections.get(section, {}) if repr(k) == m[1]]
        assert unknown and HOME.get(unknown[0]) != section, message
    elif m := re.fullmatch(r"unknown key (.+); a recipe has name, description and .*", rest):
        top = [k for k in document if repr(k) == m[1]]
        assert top and top[0] not in ("name", "description"), message
        assert top[0] not in HOME.values() or not isinstance(document[top[0]], dict), message
    elif rest == "[data] dataset is required (the name of the data).":
        assert "dataset" not in sections.get("data", {}), message
    elif m := re.fullmatch(r"(?:\[(\w+)\] )?(\w+) must be (.+); got (.*)\.", rest, re.S):
        section, key, rule, got = m.groups()
        assert section == HOME.get(key) and key in KIND, message
        value = value_of(section, key)
        assert got == repr(value), message
        if rule == ARTICLE[KIND[key]]:
            assert not has_kind(value, KIND[key]), message
        else:  # the key's own rule, which its value breaks
            assert has_kind(value, KIND[key]) and rule == RULE[key], message
            assert not HOLDS[rule](value), message
    elif m := re.fullmatch(r"halt_after=(\d+) is larger than epochs=(\d+); .*", rest):
        halt_after = value_of("clustering", "halt_after")
        epochs = sections.get("training", {}).get("epochs", 10)
        assert (int(m[1]), int(m[2])) == (halt_after, epochs) and halt_after > epochs, message
    elif m := re.fullmatch(r"\[(\w+)\] (\w+) = (.+) is not one of (.+)\.", rest, re.S):
        section, key, shown, allowed = m.groups()
        value = value_of(section, key)
        assert section == HOME[key] and shown == repr(value), message
        assert value not in allowed.split(", "), message
        if key in CHOICES:
            assert value not in CHOICES[key] and allowed.split(", ") == CHOICES[key], message
    elif m := re.fullmatch(r"\[data\] dataset = (.+) has no image views of its own; .*", rest):
        data_section = sections["data"]
        assert m[1] == repr(data_section["dataset"]) and data_section["dataset"] not in VIEWS
        assert "views" not in data_section, message
    elif rest.startswith("[model] sobel is set, but backbone "):
        model = sections["model"]
        assert "sobel" in model and model.get("backbone", "lenet") == "lenet", message
    else:
        raise AssertionError(f"an unexpected recipe error: {message!r}")


def assert_holds_the_file(recipe, path: Path) -> None:
    """A recipe that loaded holds every setting of its file, each of its kind and rule."""
    document = tomllib.loads(path.read_text())
    assert recipe.name == document.get("name", path.stem)
    for section, keys in document.items():
        if not isinstance(keys, dict):
            continue
        for key, value in keys.items():
            assert HOME[key] == section and has_kind(value, KIND[key]), (section, key, value)
            assert key not in RULE or HOLDS[RULE[key]](value), (section, key, value)
            assert key not in CHOICES or value in CHOICES[key], (section, key, value)
            attribute = f"probe_{key}" if section == "probe" else key
            assert getattr(recipe, attribute) == value, (section, key, value)
    if recipe.views is None:
        assert recipe.dataset in VIEWS


@independent
@given(
    sections=st.one_of(
        st.dictionaries(
            st.sampled_from(["data", "model", "training", "clustering", "probe", "extra"]),
            st.dictionaries(recipe_keys, recipe_values, max_size=6),
            max_size=6,
        ),
        shaped_sections,
    ),
    top=st.dictionaries(st.sampled_from(["name", "description", "seed"]), recipe_values),
    garbage=st.one_of(st.none(), st.binary(max_size=40)),
)
def test_recipe_files(sections, top, garbage):
    from keras_deepcluster.runs.recipe import Recipe, RecipeError, load_recipe

    lines = [f"{key} = {toml_value(value)}" for key, value in top.items()]
    for section, keys in sections.items():
        lines += [f"[{section}]"] + [f"{key} = {toml_value(value)}" for key, value in keys.items()]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "recipe.toml"
        path.write_bytes(garbage if garbage is not None else "\n".join(lines).encode())
        try:
            recipe = load_recipe(path)
        except RecipeError as error:
            event(re.sub(r"'.*|\d.*|\(.*", "", str(error)[len(str(path)) + 2 :])[:40])
            assert_names_the_problem(str(error), path)
        else:  # what loads holds the file's settings and survives its own round trip
            event("loaded")
            assert isinstance(recipe, Recipe)
            assert_holds_the_file(recipe, path)
            path.write_text(recipe.to_toml())
            assert load_recipe(path).to_toml() == recipe.to_toml()


@independent
def test_control_characters_survive_the_round_trip(tmp_path):
    from keras_deepcluster.runs.recipe import load_recipe

    path = tmp_path / "recipe.toml"
    path.write_text('description = """two\nlines"""\n[data]\ndataset = "mnist"\n')
    recipe = load_recipe(path)
    assert recipe.description == "two\nlines"
    path.write_text(recipe.to_toml())
    assert load_recipe(path) == recipe


# What comes after training, on a copy of one finished run: options at and beyond their edges.
AFTER_TRAINING = {
    "export": {
        "--split": ["train", "test", "x"],
        "--format": ["parquet", "csv", "xml", "keras", "onnx"],
        "--layer": ["conv_2", "conv_9", "", "ü"],
        "--out": ["rows.csv", "a dir/", "rün ✓.parquet", "run-file"],
        "--link-clusters": ["links", "busy", "run-file"],
        "--embeddings": [None],
        "--copy": [None],
        "--source": ["npz", "digits", "folder", "x"],
        "--model": ["m.keras", "m.tflite", "m.bin", "busy", "run/m.keras", "run-file"],
        "--input-dtype": ["uint8", "float32", "int8"],
    },
    "show": {
        "--clusters": ["0", "-1", "99", "x", "1-", "0,1", "0-2"],
        "--map-images": ["5", "10", "60", "x"],
        "--data-dir": ["missing", "busy"],
    },
}


@independent  # refusals are Python-level; the commands' work is tested on every backend
@settings(max_examples=12)
@given(
    command=st.sampled_from(sorted(AFTER_TRAINING)),
    picks=st.lists(st.integers(0, 99), min_size=1, max_size=4),
)
def test_export_and_show_options(shared_digits_run, command, picks):
    options = AFTER_TRAINING[command]
    names = sorted(options)
    folder = Path(tempfile.mkdtemp())
    try:
        run = shutil.copytree(shared_digits_run, folder / "run")
        (folder / "busy").mkdir()
        (folder / "busy" / "mine.txt").write_text("keep")
        (folder / "run-file").write_text("not a folder")
        args = [command, str(run)]
        for pick in picks:
            name = names[pick % len(names)]
            value = options[name][pick // len(names) % len(options[name])]
            args += [name] if value is None else [name, str(folder / value) if "/" in value or
                                                  value in ("busy", "missing", "run-file", "links")
                                                  else value]  # fmt: skip
        before = sorted(p.relative_to(run) for p in run.rglob("*"))
        result = CliRunner().invoke(main, args, prog_name="deepcluster")
        assert result.exit_code in (0, 1, 2), (args, result.output, result.exception)
        if result.exit_code:
            assert isinstance(result.exception, SystemExit), (args, repr(result.exception))
            assert "Traceback" not in result.output and "Error" in result.output, result.output
            after = sorted(p.relative_to(run) for p in run.rglob("*") if p.name != ".lock")
            assert after == [p for p in before if p.name != ".lock"], (args, result.output)
            assert (folder / "busy" / "mine.txt").read_text() == "keep"
            assert not list(folder.rglob(".partial-*")), args
    finally:
        shutil.rmtree(folder)
