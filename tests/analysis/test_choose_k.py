"""Choosing k without labels: the label-free criteria, `choose`, and a finished run's scores."""

import math

import numpy as np
import pytest

import keras_deepcluster as kdc
from keras_deepcluster.analysis.choose_k import (
    CRITERIA,
    NULL_CORRECTED,
    check_candidates,
    choose,
    label_free_k_scores,
    label_free_run_scores,
    null_corrected_scores,
    null_references,
)
from keras_deepcluster.evaluation.label_free import seed_agreement
from keras_deepcluster.method import clustering

# The documented range of each criterion.
RANGES = {
    "silhouette": (-1, 1),
    "generalization": (0, 1),
    "generalization_kappa": (-1, 1),
    "seed_agreement_nmi": (0, 1),
    "seed_agreement_ari": (-0.5, 1),
    "silhouette_gap": (-2, 2),
}
# Every key of a clustering's scores: the criteria and the null-corrected ones' standard errors.
SCORE_KEYS = set(CRITERIA) | {f"{name}_se" for name in NULL_CORRECTED}


def four_blobs(n=400, dim=16, seed=1):
    """Four well-separated directions on the unit sphere (orthogonal centres plus noise)."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(4, size=n)
    points = np.eye(dim)[truth] + rng.normal(0, 0.15, (n, dim))
    return clustering.l2_normalize(points.astype(np.float32))


@pytest.fixture(scope="module")
def scores_by_k():
    points = four_blobs()
    scores = {}
    for k in (2, 4, 8):
        labels, _ = clustering.kmeans(points, k, seed=1, backend="sklearn")
        scores[k] = label_free_k_scores(points, labels, k, seed=1)
    return scores


@pytest.mark.backend_independent
def test_criteria_on_four_blobs_prefer_four_where_they_can_tell(scores_by_k):
    assert set(scores_by_k[4]) == SCORE_KEYS
    assert choose(scores_by_k, "silhouette") == 4
    # Corrected against structureless references, both null-corrected criteria choose 4,
    # clear of the next candidate by several standard errors.
    for name in NULL_CORRECTED:
        assert choose(scores_by_k, name) == 4
        nearest = max(scores_by_k[k][name] for k in (2, 8))
        assert scores_by_k[4][name] - nearest > 3 * scores_by_k[4][f"{name}_se"], name
    # Two clusters of two blobs each are as learnable as four (a tie, the first of equals
    # wins); eight, splitting blobs, are not.
    assert scores_by_k[4]["generalization"] == pytest.approx(1.0)
    assert scores_by_k[2]["generalization"] == pytest.approx(1.0)
    assert scores_by_k[8]["generalization"] < 0.95
    assert scores_by_k[8]["generalization_kappa"] < scores_by_k[4]["generalization_kappa"]
    # Which pairs of blobs two clusters take is up to the seed; four are found again.
    assert scores_by_k[4]["seed_agreement_ari"] > scores_by_k[2]["seed_agreement_ari"] + 0.3
    for scores in scores_by_k.values():
        for criterion, (low, high) in RANGES.items():
            assert low <= scores[criterion] <= high, criterion


@pytest.mark.backend_independent
def test_choose_takes_the_highest_and_skips_nan():
    scores = {5: {"silhouette": 0.1}, 10: {"silhouette": 0.3}, 20: {"silhouette": math.nan}}
    assert choose(scores, "silhouette") == 10
    assert choose({(10, 0): {"silhouette": 0.2}, (10, 1): {"silhouette": 0.4}}, "silhouette") == (
        10,
        1,
    )
    with pytest.raises(ValueError, match="Unknown label-free criterion 'nmi'; use one of"):
        choose(scores, "nmi")
    with pytest.raises(ValueError, match="No candidate has a finite 'silhouette'"):
        choose({20: {"silhouette": math.nan}}, "silhouette")


@pytest.mark.backend_independent
def test_k_larger_than_the_data_is_refused_with_the_candidates_named():
    check_candidates([2, 5, 50], 100)
    with pytest.raises(ValueError, match=r"k = 60, 200 cannot be scored on 100 images"):
        check_candidates([5, 60, 200], 100)
    points = four_blobs(n=20)
    with pytest.raises(ValueError, match="between 2 and half the images"):
        label_free_k_scores(points, np.arange(20) % 16, 16)
    with pytest.raises(ValueError, match="Unknown agreement 'ami'; use one of"):
        seed_agreement(points, 4, metric="ami")


@pytest.mark.backend_independent
def test_null_references_keep_each_column_and_lose_the_structure():
    points = four_blobs()
    reference = next(null_references(points, 1, seed=3))
    assert reference.shape == points.shape
    np.testing.assert_allclose(np.linalg.norm(reference, axis=1), 1, atol=1e-5)
    # Each column of the reference is a permutation of the points' column, up to the norm.
    unnormalised = np.random.default_rng(3).permuted(points, axis=0)
    np.testing.assert_allclose(np.sort(unnormalised, axis=0), np.sort(points, axis=0))
    # Points without structure (Gaussian directions) score about 0 at every k; the blobs do not.
    noise = clustering.l2_normalize(np.random.default_rng(4).normal(size=(400, 16)))
    for k in (2, 4, 8):
        scores = null_corrected_scores(noise, clustering.kmeans(noise, k, seed=0)[0], k, seed=5)
        for name in NULL_CORRECTED:
            assert abs(scores[name]) < 3 * scores[f"{name}_se"] + 0.01, (k, name)
    blobs = null_corrected_scores(points, clustering.kmeans(points, 4, seed=0)[0], 4, seed=5)
    assert blobs["gap"] > 0.5 and blobs["silhouette_gap"] > 0.3
    with pytest.raises(ValueError, match="1 null references give no standard error"):
        null_corrected_scores(points, clustering.kmeans(points, 4, seed=0)[0], 4, references=1)


def test_label_free_run_scores_of_a_tiny_run_are_finite_and_in_range(trained):
    run = kdc.Run.open(trained[0].path)
    scores = label_free_run_scores(run, seed=0)
    assert set(scores) == SCORE_KEYS
    for criterion, (low, high) in RANGES.items():
        assert math.isfinite(scores[criterion]) and low <= scores[criterion] <= high, criterion
    # A sample smaller than twice the run's k cannot score it.
    with pytest.raises(ValueError, match="k = 4 cannot be scored on 6 images"):
        label_free_run_scores(run, sample=6)
