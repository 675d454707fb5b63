"""A grid of training runs over k, seeds, halt epochs and PCA dimensions (`deepcluster sweep`)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

from keras_deepcluster.runs.recipe import Recipe


def grid_recipes(base: Recipe, grid: Mapping[str, Sequence[object]]) -> list[Recipe]:
    """`base` with every combination of the values of `grid`, the last setting varying fastest.

    Args:
        base: The recipe the runs share.
        grid: Values per recipe setting, e.g. ``{"clusters": [5, 10], "seed": [0, 1]}``.

    Raises:
        RecipeError: A combination is not a valid recipe (e.g. a halt epoch
            beyond the epochs).

    Examples:
        >>> [r.clusters for r in grid_recipes(load_recipe("digits"), {"clusters": [5, 10]})]
        [5, 10]
    """
    return [base.replace(**dict(zip(grid, values))) for values in itertools.product(*grid.values())]


def run_name(recipe: Recipe) -> str:
    """The folder name of a grid run: the settings a grid varies.

    Examples:
        >>> run_name(load_recipe("digits").replace(clusters=5, seed=0))
        'k5-seed0-haltnone-pcanone'
    """
    return f"k{recipe.clusters}-seed{recipe.seed}-halt{recipe.halt_after}-pca{recipe.pca}".replace(
        "None", "none"
    )
