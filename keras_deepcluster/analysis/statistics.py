"""Statistics over seeds: bootstrap intervals, the interaction of filter quality with k,
and the equivalence of halting with never halting (what `deepcluster report` prints).

Every test and interval comes from `scipy.stats` (already installed with
scikit-learn); this module only arranges the values for it. Seeds are the
replicates: runs that differ only in their seed form a group.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import warnings
from collections.abc import Iterable

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 9999


class NotTestable(ValueError):
    """The runs cannot support the test; the message says why."""


@dataclasses.dataclass
class Interval:
    """Mean, sample sd and bootstrap confidence interval of one group's values.

    With one value, sd and the interval are NaN; with identical values the
    interval is that value (the bootstrap distribution is a point).
    """

    n: int
    mean: float
    sd: float
    low: float
    high: float


def interval(
    values: Iterable[object], confidence: float = CONFIDENCE, seed: int = 0
) -> Interval | None:
    """95 % BCa bootstrap interval of the mean of `values` (None if there are none).

    BCa corrects the percentile interval for bias and skew, but no bootstrap
    interval of a few values is wider than their range: with 3-5 seeds read it
    as a lower bound on the uncertainty.

    Args:
        values: The group's values; missing ones (None, NaN, ±inf) are left out.
        confidence: Confidence level of the interval.
        seed: Seed of the bootstrap resamples.

    Returns:
        The interval, or None when no value is finite.

    Examples:
        >>> interval([0.81, 0.83, 0.80, 0.82]).n
        4
    """
    import scipy.stats  # here, not at the top: slow to import, and `--help` needs none of it

    values = np.array([v for v in values if finite(v)], float)
    if not len(values):
        return None
    mean = float(values.mean())
    if len(values) == 1:
        return Interval(1, mean, math.nan, math.nan, math.nan)
    sd = float(values.std(ddof=1))
    if np.ptp(values) == 0:  # the mean is the value itself, not a rounded sum
        return Interval(len(values), float(values[0]), 0.0, float(values[0]), float(values[0]))
    result = scipy.stats.bootstrap(
        (values,),
        np.mean,
        confidence_level=confidence,
        n_resamples=RESAMPLES,
        method="BCa",
        random_state=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
    return Interval(len(values), mean, sd, float(low), float(high))


@dataclasses.dataclass
class Interaction:
    """Permutation test of filter quality × k on the probe accuracy.

    Attributes:
        ks: The k values (columns).
        groups: Seeds of each filter-quality group, worst first.
        cells: Mean probe per (group, k), rows in the order of `groups`.
        intervals: 95 % bootstrap interval (low, high) of each cell's mean.
        statistic: F ratio of the group × k interaction, computed on each
            seed's probes minus that seed's mean.
        p_permutation: Share of regroupings of the seeds with an F at least as large.
        permutations: How many regroupings were drawn (all of them when exact).
        p_normal: The same F against the F distribution (split-plot ANOVA,
            normal errors): for comparison only.
        correlations: Per k, Spearman's rho between filter quality and probe,
            and its p-value.
    """

    ks: list[int]
    groups: list[list[int]]
    cells: list[list[float]]
    intervals: list[list[tuple[float, float]]]
    statistic: float
    p_permutation: float
    permutations: int
    p_normal: float
    correlations: dict[int, tuple[float, float]]


def interaction_test(
    probes: dict[int, dict[int, float]],
    quality: dict[int, float],
    num_groups: int = 3,
    seed: int = 0,
) -> Interaction:
    """Does the effect of k on the probe depend on the seed's filter quality?

    The seeds are ranked by `quality` (the `space` NMI of their random
    filters) and split into `num_groups` equal groups (terciles). Every seed is
    trained at every k, so seeds are blocks: subtracting each seed's mean
    removes the seed and group effects, and under "no interaction" the
    centred rows of the seeds are exchangeable between groups. The p-value
    counts regroupings of the seeds (exact when there are at most 9,999). A
    permutation test rather than a two-way ANOVA because there are three seeds
    per cell and nothing makes the probe normal; the ANOVA's p is reported
    beside it.

    Args:
        probes: `{seed: {k: probe accuracy}}`.
        quality: `{seed: filter quality}`.
        num_groups: How many quality groups.
        seed: Seed of the drawn regroupings.

    Raises:
        NotTestable: Fewer than two k, fewer than two seeds per group with a
            probe at every k and a quality, or no variation at all.
    """
    import scipy.stats  # here, not at the top: slow to import, and `--help` needs none of it

    ks = sorted({k for row in probes.values() for k in row})
    seeds = [s for s in probes if s in quality and all(finite(probes[s].get(k)) for k in ks)]
    if len(ks) < 2:
        raise NotTestable(f"probes at one k only ({ks}); the interaction needs two or more.")
    if len(seeds) < 2 * num_groups:
        raise NotTestable(
            f"{len(seeds)} seeds have a probe at every k ({', '.join(map(str, ks))}) and a "
            f"filter quality; {num_groups} groups need at least {2 * num_groups}."
        )
    seeds.sort(key=lambda s: (quality[s], s))
    y = np.array([[probes[s][k] for k in ks] for s in seeds], float)
    centred = y - y.mean(axis=1, keepdims=True)
    if not np.ptp(centred):
        raise NotTestable("every seed has the same probe at every k; nothing to test.")
    split = np.array_split(np.arange(len(seeds)), num_groups)
    df_between = (num_groups - 1) * (len(ks) - 1)
    df_within = (len(seeds) - num_groups) * (len(ks) - 1)

    rounding = 1e-12 * np.sum(centred**2)

    def f_ratio(*groups):
        groups = [np.asarray(g, int) for g in groups]
        means = [centred[g].mean(axis=0) for g in groups]
        between = sum(
            len(g) * np.sum((m - centred.mean(axis=0)) ** 2) for g, m in zip(groups, means)
        )
        within = sum(np.sum((centred[g] - m) ** 2) for g, m in zip(groups, means))
        if within <= rounding:  # every seed of a group alike: no interaction, or a perfect one
            return 0.0 if between <= rounding else np.inf
        return (between / df_between) / (within / df_within)

    statistic = f_ratio(*split)
    result = scipy.stats.permutation_test(
        tuple(split),
        f_ratio,
        permutation_type="independent",
        vectorized=False,
        n_resamples=RESAMPLES,
        alternative="greater",
        random_state=np.random.default_rng(seed),
    )
    correlations = {}
    for j, k in enumerate(ks):
        with warnings.catch_warnings():  # a constant column gives NaN, which is the answer
            warnings.simplefilter("ignore")
            rho, p = scipy.stats.spearmanr([quality[s] for s in seeds], y[:, j])
        correlations[k] = (float(rho), float(p))
    return Interaction(
        ks=ks,
        groups=[[seeds[i] for i in g] for g in split],
        cells=[y[g].mean(axis=0).tolist() for g in split],
        intervals=[[(cell.low, cell.high) for cell in map(interval, y[g].T)] for g in split],
        statistic=float(statistic),
        p_permutation=float(result.pvalue),
        permutations=len(result.null_distribution),
        p_normal=float(scipy.stats.f.sf(statistic, df_between, df_within)),
        correlations=correlations,
    )


@dataclasses.dataclass
class Equivalence:
    """Two one-sided paired t-tests (TOST) of a mean difference against ±margin.

    Attributes:
        n: Paired seeds.
        difference: Mean difference (treatment minus reference).
        low, high: Its 90 % t interval (the interval TOST checks against the margin).
        p: The larger one-sided p-value; equivalent when below alpha.
        equivalent: Whether the interval lies within ±margin (same as p < alpha).
    """

    n: int
    difference: float
    low: float
    high: float
    p: float
    equivalent: bool


def equivalence_test(
    differences: Iterable[object], margin: float, alpha: float = 0.05
) -> Equivalence:
    """Is the mean of paired `differences` within ±`margin`? (TOST, Schuirmann 1987).

    Args:
        differences: Paired differences (treatment minus reference); missing
            ones are left out.
        margin: The equivalence margin, in the differences' unit.
        alpha: Level of each one-sided test.

    Examples:
        >>> equivalence_test([0.004, -0.002, 0.006, 0.001, -0.003], margin=0.01).equivalent
        True

    Raises:
        NotTestable: Fewer than two differences.
    """
    import scipy.stats  # here, not at the top: slow to import, and `--help` needs none of it

    d = np.array([v for v in differences if finite(v)], float)
    if len(d) < 2:
        raise NotTestable(f"{len(d)} paired seed(s); equivalence needs two or more.")
    mean = float(d.mean())
    if not np.ptp(d):  # t is infinite: the difference is known exactly
        inside = abs(mean) < margin
        return Equivalence(len(d), mean, mean, mean, 0.0 if inside else 1.0, inside)
    upper = scipy.stats.ttest_1samp(d, margin, alternative="less").pvalue
    lower = scipy.stats.ttest_1samp(d, -margin, alternative="greater").pvalue
    low, high = scipy.stats.ttest_1samp(d, 0.0).confidence_interval(1 - 2 * alpha)
    p = float(max(upper, lower))
    return Equivalence(len(d), mean, float(low), float(high), p, p < alpha)


def finite(value: object) -> bool:
    """Whether `value` is a number to compute with or show: not None, NaN or ±inf.

    Infinity is as unusable as NaN here (in a mean, an error bar or a table
    cell), so both count as missing; NumPy numbers count as numbers.

    Examples:
        >>> [finite(v) for v in (0.5, 3, None, float("nan"), float("inf"), "0.5")]
        [True, True, False, False, False, False]
    """
    return isinstance(value, numbers.Real) and math.isfinite(value)
