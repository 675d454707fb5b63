import dataclasses
import sys

import pytest

from keras_deepcluster.runs.recipe import CHOICES, Recipe, RecipeError, load_recipe, recipe_names
from keras_deepcluster.settings import BACKBONE_LAYERS, backbone_layers

pytestmark = pytest.mark.backend_independent


def test_bundled_recipes_hold_the_authors_settings():
    assert recipe_names() == ["cifar10", "digits", "fashion_mnist", "imagenet", "mnist", "svhn"]
    # Reference digest, section 2.4: (k, epochs, batch, momentum, pca, probe layer).
    expected = {
        "mnist": (5, 29, 64, 0.1, None, "conv_2"),
        "fashion_mnist": (5, 49, 128, 0.1, None, "conv_2"),
        "svhn": (200, 99, 64, 0.5, 256, "relu_5"),
        "cifar10": (1000, 99, 64, 0.9, 256, "relu_5"),
    }
    for name, (k, epochs, batch, momentum, pca, layer) in expected.items():
        r = load_recipe(name)
        assert (r.clusters, r.epochs, r.batch_size, r.momentum, r.pca, r.probe_layer) == (
            k,
            epochs,
            batch,
            momentum,
            pca,
            layer,
        ), name
        assert (r.lr, r.weight_decay, r.batch_norm, r.source) == (0.1, 1e-3, True, "tfds")
    assert load_recipe("svhn").dataset == "svhn_cropped" and load_recipe("svhn").sobel is True
    assert load_recipe("fashion_mnist").probe_flip and load_recipe("fashion_mnist").seed == 61
    assert load_recipe("digits").source == "digits"
    # FB's main.py for ImageNet (reference digest, section 4).
    imagenet = load_recipe("imagenet")
    assert (imagenet.backbone, imagenet.sobel, imagenet.batch_norm) == ("alexnet", True, True)
    assert (imagenet.clusters, imagenet.pca, imagenet.batch_size, imagenet.epochs) == (
        10000,
        256,
        256,
        200,
    )
    assert (imagenet.lr, imagenet.momentum, imagenet.weight_decay) == (0.05, 0.9, 1e-5)
    assert (imagenet.source, imagenet.image_size, imagenet.views) == ("folder", 256, "imagenet")


@pytest.mark.parametrize("name", ["digits", "svhn"])
def test_toml_round_trip(tmp_path, name):
    recipe = load_recipe(name).replace(halt_after=3, limit=100, lr=1)
    assert isinstance(recipe.lr, float)
    path = tmp_path / "config.toml"
    path.write_text(recipe.to_toml())
    again = load_recipe(path)
    assert again.name == name  # the name is kept, not the file's stem
    assert dataclasses.replace(again, origin=recipe.origin) == recipe


def write(tmp_path, text):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, message",
    [
        (
            '[data]\ndataset = "x"\n[training]\nlrr = 0.1\n',
            r"bad.toml: unknown key 'lrr' in \[training\]; known keys: epochs, .*lr",
        ),
        (
            '[data]\ndataset = "x"\n[training]\nlr = "fast"\n',
            r"bad.toml: \[training\] lr must be a finite number; got 'fast'",
        ),
        (
            '[data]\ndataset = "x"\n[model]\nclusters = 2.5\n',
            r"bad.toml: \[model\] clusters must be an integer; got 2.5",
        ),
        (
            '[data]\ndataset = "x"\n[model]\nclusters = true\n',
            r"\[model\] clusters must be an integer; got True",
        ),
        (
            '[data]\ndataset = "x"\n[model]\nclusters = 1\n',
            r"\[model\] clusters must be >= 2; got 1",
        ),
        ('[data]\ndataset = "x"\n[training]\nmomentum = 1.0\n', r"momentum must be in \[0, 1\)"),
        (
            '[data]\ndataset = "x"\n[training]\nepochs = 2\n[clustering]\nhalt_after = 3\n',
            r"halt_after=3 is larger than epochs=2",
        ),
        ('[data]\nsource = "idx"\n', r"bad.toml: \[data\] dataset is required"),
        ('[model]\nbackbone = "lenet"\nclusters = 5\n[[data]]\n', r"unknown key 'data'"),
        (
            "seed = 3\n",
            r"bad.toml: unknown key 'seed'; a recipe has name, description and the sections",
        ),
        ("[data\n", r"bad.toml: not valid TOML"),
        # The keys with a fixed set of values, named with the file before any data is read.
        (
            '[data]\ndataset = "mnist"\nsource = "tfsd"\n',
            r"bad.toml: \[data\] source = 'tfsd' is not one of tfds, idx, npz, folder, digits, "
            "cache",
        ),
        (
            '[data]\ndataset = "mnist"\n[clustering]\nkmeans = "fiass"\n',
            r"bad.toml: \[clustering\] kmeans = 'fiass' is not one of auto, faiss, sklearn",
        ),
        (
            '[data]\ndataset = "mnist"\n[model]\nbackbone = "resnet"\n',
            r"bad.toml: \[model\] backbone = 'resnet' is not one of alexnet, alexnet_micro, lenet",
        ),
        (
            '[data]\ndataset = "mnist"\nviews = "celeba"\n',
            r"bad.toml: \[data\] views = 'celeba' is not one of cifar10, fashion_mnist",
        ),
        (
            '[data]\ndataset = "my_photos"\n',
            r"bad.toml: \[data\] dataset = 'my_photos' has no image views of its own; set "
            r"\[data\] views",
        ),
        (
            '[data]\ndataset = "mnist"\n[model]\nbackbone = "lenet"\nsobel = true\n',
            r"bad.toml: \[model\] sobel is set, but backbone 'lenet' has no Sobel layer",
        ),
        (
            '[data]\ndataset = "mnist"\n[probe]\nlayer = "relu_5"\n',
            r"bad.toml: \[probe\] layer = 'relu_5' is not one of conv_1, ",
        ),
        (
            '[data]\ndataset = "mnist"\n[model]\nbatch_norm = false\n[probe]\n'
            'layer = "batch_norm_2"\n',
            r"\[probe\] layer = 'batch_norm_2' is not one of conv_1, relu_1, ",
        ),
    ],
)
def test_bad_recipes_name_the_file_and_key(tmp_path, text, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(write(tmp_path, text))


def test_unknown_recipe_lists_the_known_ones(tmp_path):
    with pytest.raises(
        RecipeError, match="Unknown recipe 'fmnist'; known recipes: cifar10, digits"
    ):
        load_recipe("fmnist")
    with pytest.raises(RecipeError, match="No recipe file"):
        load_recipe(tmp_path / "missing.toml")


def test_replace_validates_and_says_what_changed():
    recipe = load_recipe("digits")
    with pytest.raises(RecipeError, match=r"digits.toml with lr=0: \[training\] lr must be > 0"):
        recipe.replace(lr=0)
    with pytest.raises(RecipeError, match=f"halt_after=11 is larger than epochs={recipe.epochs}"):
        recipe.replace(halt_after=11)
    assert recipe.replace(pca=None).pca is None
    with pytest.raises(TypeError):
        Recipe(name="x", origin="x")  # dataset is required


def test_a_bad_choice_stops_the_cli_before_any_data_is_read(tmp_path):
    from click.testing import CliRunner

    from keras_deepcluster_cli.main import main

    missing = tmp_path / "nothing-here.npz"  # a data source that would fail if it were read
    recipe = write(
        tmp_path,
        f'[data]\ndataset = "mnist"\nsource = "npz"\ndata_dir = "{missing}"\n'
        '[clustering]\nkmeans = "fiass"\n',
    )
    result = CliRunner().invoke(main, ["train", str(recipe), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert "[clustering] kmeans = 'fiass' is not one of" in result.output
    assert "nothing-here" not in result.output and not (tmp_path / "run").exists()
    result = CliRunner().invoke(main, ["train", "digits", "--source", "fodler"])
    assert result.exit_code == 2 and "[data] source = 'fodler' is not one of" in result.output


def test_the_backbones_build_the_layers_the_settings_name():
    """The Keras-free description of the backbones (the probe layers a recipe may name)."""
    import keras_deepcluster as kdc

    assert list(CHOICES["backbone"]) == kdc.backbones.names()
    for backbone in BACKBONE_LAYERS:
        for batch_norm in (True, False):
            for sobel in (None,) if backbone == "lenet" else (True, False):
                kwargs = {"batch_norm": batch_norm} | ({} if sobel is None else {"sobel": sobel})
                model = kdc.backbones.get(backbone, **kwargs)
                built = [layer.name for layer in model.layers[1:]]  # after the input
                assert backbone_layers(backbone, batch_norm, sobel) == built, (backbone, kwargs)


def test_the_command_line_backend_is_set_before_keras_is_imported():
    """`deepcluster ... --backend jax` runs on JAX whatever KERAS_BACKEND says."""
    import os
    import subprocess

    code = (
        "import sys; sys.argv = ['deepcluster', 'train', 'digits', '--backend', 'jax', '-k', '3'];"
        "import keras_deepcluster_cli.main, keras; print(keras.backend.backend())"
    )
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.stdout.strip().splitlines()[-1] == "jax", result.stderr[-2000:]


def test_replace_says_in_the_description_which_settings_changed(tmp_path):
    recipe = load_recipe("imagenet")
    changed = recipe.replace(clusters=4, pca=None, epochs=recipe.epochs)
    assert changed.description.startswith(recipe.description)
    assert changed.description.endswith("Changed from imagenet: clusters = 4, pca = none.")
    assert recipe.replace(seed=recipe.seed).description == recipe.description
    (tmp_path / "config.toml").write_text(changed.to_toml())
    again = load_recipe(tmp_path / "config.toml")
    assert dataclasses.replace(again, origin=changed.origin) == changed
