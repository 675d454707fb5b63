"""Property tests over the data loaders and the command line (Hypothesis).

The property: every input ends either in data (or a finished run) or in a
specific error, a ValueError/OSError from the library and a one-line message
with exit 1 or 2 from the CLI; never another exception, a traceback, an
abort, a hang, or a run directory for a refused input. ``FUZZ_EXAMPLES``
sets how many examples each test draws (CI: the default below; by hand:
``FUZZ_EXAMPLES=2000 KERAS_BACKEND=jax pytest tests/test_fuzz.py``).
"""

import gzip
import io
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from keras_deepcluster import data
from keras_deepcluster_cli.main import main

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", 100))
fuzz = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
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


@fuzz
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


@fuzz
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
    if kind == "garbage":
        return os.urandom(size[0] * 3), ".png"
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


@fuzz
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


@fuzz
@given(
    chosen=st.dictionaries(
        st.sampled_from(sorted(OPTIONS)), st.integers(0, 9), min_size=1, max_size=5
    ).map(lambda picks: {k: OPTIONS[k][i % len(OPTIONS[k])] for k, i in picks.items()}),
    out_kind=st.sampled_from(["new", "file", "unicode", "nested"]),
)
def test_train_options(chosen, out_kind):
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


@pytest.mark.parametrize("command", ["space", "sweep", "select", "probe", "report"])
@fuzz
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
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
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
    st.text(max_size=8),
    st.lists(st.integers(0, 9), max_size=3),
)


@fuzz
@given(
    sections=st.dictionaries(
        st.sampled_from(["data", "model", "training", "clustering", "probe", "extra"]),
        st.dictionaries(recipe_keys, recipe_values, max_size=6),
        max_size=6,
    ),
    top=st.dictionaries(st.sampled_from(["name", "description", "seed"]), recipe_values),
    garbage=st.one_of(st.none(), st.binary(max_size=40)),
)
def test_recipe_files(sections, top, garbage):
    from keras_deepcluster.recipe import Recipe, RecipeError, load_recipe

    lines = [f"{key} = {toml_value(value)}" for key, value in top.items()]
    for section, keys in sections.items():
        lines += [f"[{section}]"] + [f"{key} = {toml_value(value)}" for key, value in keys.items()]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "recipe.toml"
        path.write_bytes(garbage if garbage is not None else "\n".join(lines).encode())
        try:
            recipe = load_recipe(path)
        except RecipeError as error:
            assert str(error).startswith(str(path)) or "recipe" in str(error).lower()
        else:  # what loads is a valid recipe that survives its own round trip
            assert isinstance(recipe, Recipe) and recipe.clusters >= 2
            path.write_text(recipe.to_toml())
            assert load_recipe(path).to_toml() == recipe.to_toml()
