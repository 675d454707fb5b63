"""The Deep Dive analyses, callable from Python: random-filter quality (`space`), grids of
runs (`sweep`), choosing seed, k and halt epoch with a few labels (`select`), and the
statistics and comparisons over seeds that `deepcluster report` prints.

Importing it does not import Keras; the functions that build networks import it.
"""

from keras_deepcluster.analysis.choose_k import (
    check_candidates,
    choose,
    label_free_k_scores,
    label_free_run_scores,
)
from keras_deepcluster.analysis.comparisons import (
    filter_quality_correlation,
    group_summary,
    halting_equivalence,
    quality_by_k,
    regret_summary,
    selection_regret,
)
from keras_deepcluster.analysis.random_filters import (
    random_filter_qualities,
    read_space_results,
    score_random_filters,
)
from keras_deepcluster.analysis.runs import collect_runs, halt_rule
from keras_deepcluster.analysis.selection import (
    ClustersChoice,
    HaltChoice,
    LabelledImages,
    SeedChoice,
    choose_clusters,
    choose_halt,
    choose_seed,
    draw_labelled,
    trial_scores,
)
from keras_deepcluster.analysis.statistics import (
    Equivalence,
    Interaction,
    Interval,
    NotTestable,
    equivalence_test,
    interaction_test,
    interval,
)
from keras_deepcluster.analysis.sweep import grid_recipes, run_name

__all__ = [
    "check_candidates",
    "choose",
    "label_free_k_scores",
    "label_free_run_scores",
    "ClustersChoice",
    "Equivalence",
    "HaltChoice",
    "Interaction",
    "Interval",
    "LabelledImages",
    "NotTestable",
    "SeedChoice",
    "choose_clusters",
    "choose_halt",
    "choose_seed",
    "collect_runs",
    "draw_labelled",
    "equivalence_test",
    "filter_quality_correlation",
    "grid_recipes",
    "group_summary",
    "halt_rule",
    "halting_equivalence",
    "interaction_test",
    "interval",
    "quality_by_k",
    "random_filter_qualities",
    "read_space_results",
    "regret_summary",
    "run_name",
    "score_random_filters",
    "selection_regret",
    "trial_scores",
]
