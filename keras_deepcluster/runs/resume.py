"""Which recipe a resumed run continues with: its own, checked against what was asked.

Keras-free, so that the command line checks ``--resume`` before it imports Keras.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from keras_deepcluster.runs.recipe import Recipe, load_recipe
from keras_deepcluster.runs.run_directory import RunDirectory, RunDirectoryError


def recipe_to_resume(
    run: RunDirectory, recipe: Recipe | None = None, settings: Iterable[str] | None = None
) -> Recipe:
    """The saved recipe of the unfinished run in `run`; `recipe`, if given, must agree with it.

    Args:
        run: The run directory to resume.
        recipe: The recipe asked for, or None to take the run's own.
        settings: The settings of `recipe` that must equal the run's (e.g. the
            options given on a command line); None: every setting.

    Raises:
        RunDirectoryError: `run` holds no run, a finished one, or a run of
            another recipe or of other settings.

    Examples:
        >>> recipe_to_resume(RunDirectory("runs/digits")).epochs
    """
    if not run.is_run:
        raise RunDirectoryError(
            f"{run.path} holds no run ({RunDirectory.CONFIG}); nothing to resume."
        )
    if run.is_finished:
        raise RunDirectoryError(f"{run.path} holds a run that already finished; nothing to resume.")
    saved = load_recipe(run.path / RunDirectory.CONFIG)
    if recipe is None:
        return saved
    if saved.name != recipe.name:
        raise RunDirectoryError(
            f"{run.path} is a run of recipe {saved.name!r}, not {recipe.name!r}."
        )
    if settings is None:
        settings = [f.name for f in dataclasses.fields(Recipe) if f.metadata["section"]]
    for key in settings:
        if getattr(recipe, key) != getattr(saved, key):
            raise RunDirectoryError(
                f"{run.path} is a run of other settings than recipe {recipe.name!r}: "
                f"{key}={getattr(recipe, key)!r} differs from the run's {key}="
                f"{getattr(saved, key)!r}; a resumed run keeps its settings (leave it out)."
            )
    return saved
