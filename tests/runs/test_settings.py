"""Each setting has one rule and one default, shared by the recipe and the library objects."""

import dataclasses
import inspect

import pytest

from keras_deepcluster.method.model import DeepCluster
from keras_deepcluster.method.reclustering import Reclustering, ReclusteringSettings
from keras_deepcluster.runs.recipe import Recipe, RecipeError, load_recipe
from keras_deepcluster.settings import RECIPE_KEYS, SETTINGS, check_setting

pytestmark = pytest.mark.backend_independent


@pytest.mark.parametrize(
    "keyword, value",
    [
        ("num_clusters", 1),
        ("num_clusters", 2.5),
        ("weight_decay", -1.0),
        ("pca_dim", 0),
        ("kmeans_backend", "cuda"),
        ("kmeans_iterations", 0),
        ("halt_after", True),
        ("halt_when_stable", 1.5),
        ("halt_patience", 0),
        ("seed", -1),
    ],
)
def test_the_recipe_and_the_library_refuse_a_value_in_the_same_words(keyword, value):
    key = RECIPE_KEYS.get(keyword, keyword)
    with pytest.raises(ValueError) as library:
        check_setting(keyword, value)
    with pytest.raises(RecipeError) as recipe:
        load_recipe("digits").replace(**{key: value})
    said = str(library.value).removeprefix(f"{keyword} ").replace(" or None", "")
    assert str(recipe.value).endswith(f"] {key} {said}"), (str(library.value), str(recipe.value))


def test_the_library_defaults_are_the_recipes():
    recipe = {field.name: field.default for field in dataclasses.fields(Recipe)}
    callback = inspect.signature(Reclustering).parameters
    shared = 0
    for field in dataclasses.fields(ReclusteringSettings):
        assert callback[field.name].default == field.default, field.name
        key = RECIPE_KEYS.get(field.name, field.name)
        if key in recipe:
            assert field.default == recipe[key], field.name
            shared += 1
    assert shared == 7
    model = inspect.signature(DeepCluster).parameters
    assert model["weight_decay"].default == recipe["weight_decay"]


def test_every_recipe_key_named_otherwise_is_a_library_keyword():
    fields = {field.name for field in dataclasses.fields(Recipe)}
    assert set(RECIPE_KEYS) <= set(SETTINGS) and set(RECIPE_KEYS.values()) <= fields


def test_a_library_message_names_none_where_it_is_allowed():
    with pytest.raises(ValueError, match=r"^pca_dim must be an integer or None; got 'x'\.$"):
        check_setting("pca_dim", "x")
    with pytest.raises(ValueError, match=r"^kmeans_iterations must be an integer; got None\.$"):
        check_setting("kmeans_iterations", None)
    check_setting("pca_dim", None)


def test_the_names_pretraining_held_before_its_split_still_import():
    from keras_deepcluster.runs import build, pretraining, probes

    with pytest.warns(DeprecationWarning, match="runs.pretraining.probe is now .*runs.probes"):
        assert pretraining.probe is probes.probe
    with pytest.warns(DeprecationWarning, match="is now keras_deepcluster.runs.build"):
        assert pretraining.steps_per_execution is build.steps_per_execution
    assert pretraining.Pretraining is build.Pretraining  # which it uses itself
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        pretraining.nothing
