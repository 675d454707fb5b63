"""`report`'s statistics on small synthetic run folders (no training): intervals over
seeds, the filter-quality × k interaction, halting equivalence and select's regret."""

import csv
import itertools
import json
import math

import numpy as np
import pytest
import scipy.stats
from click.testing import CliRunner

from keras_deepcluster.analysis import statistics
from keras_deepcluster.runs.recipe import load_recipe
from keras_deepcluster.runs.run_directory import RunDirectory
from keras_deepcluster_cli.main import main

# Statistics on numbers and `report` on made-up run folders: nothing runs Keras.
pytestmark = pytest.mark.backend_independent

BASE = load_recipe("fashion_mnist").replace(epochs=3)


def fake_run(
    folder,
    seed,
    k=5,
    probe=None,
    probe_random=None,
    halt_after=None,
    wall=100.0,
    nmi0=0.3,
    backend="jax",
):
    """A finished run directory as `sweep` leaves it, with made-up numbers."""
    recipe = BASE.replace(seed=seed, clusters=k, halt_after=halt_after)
    run = RunDirectory(folder / f"k{k}-seed{seed}-halt{halt_after}")
    run.create(recipe.to_toml())
    clustered = halt_after or recipe.epochs
    run.write_history(
        [
            {
                "epoch": epoch,
                "nmi_labels": nmi0 + 0.01 * epoch,
                "nmi_previous": 0.5,
                "seconds_features": 2.0 if epoch < clustered else 0.0,
                "seconds_pca": 0.0,
                "seconds_kmeans": 0.5 if epoch < clustered else 0.0,
                "seconds_train": 8.0,
            }
            for epoch in range(recipe.epochs)
        ]
    )
    for name, value in (("probe", probe), ("probe_random", probe_random)):
        if value is not None:
            run.write_json(f"{name}.json", {"accuracy": value})
    run.write_json(
        "summary.json",
        {
            "backend": backend,
            "images": 600,
            "wall_seconds": wall,
            "clustering_stopped": {"epoch": halt_after} if halt_after else None,
        },
    )
    return run


def fake_space(folder, quality):
    folder.mkdir(parents=True)
    with open(folder / "space.csv", "w") as f:
        writer = csv.writer(f)
        writer.writerow(["seed", "nmi", "label_entropy", "label_noise", "seconds"])
        writer.writerows([[s, q, 1.0, 0.5, 2.0] for s, q in quality.items()])


def report(*folders, out, extra=()):
    result = CliRunner().invoke(
        main, ["report", *map(str, folders), "--out", str(out), *extra], prog_name="deepcluster"
    )
    assert result.exit_code == 0, result.output
    return result.output


def read(path):
    with open(path) as f:
        return list(csv.DictReader(f))


# ---- statistics -------------------------------------------------------------


# Probe accuracies of eight seeds, in percent, one far above the rest: skewed, so BCa's bias
# and skew corrections move the interval well away from the plain percentile interval.
# Integers, so that every resample's mean is exact and ties with the mean are real ties.
SKEWED = [70, 71, 72, 72, 73, 75, 79, 90]


def test_interval_is_scipys_bca_bootstrap_with_the_given_seed_and_confidence():
    values = np.array(SKEWED, float)

    def scipy_interval(method, confidence=0.95, seed=0):
        return scipy.stats.bootstrap(
            (values,),
            np.mean,
            confidence_level=confidence,
            n_resamples=9999,
            method=method,
            random_state=np.random.default_rng(seed),
        ).confidence_interval

    for confidence, seed in ((0.95, 0), (0.9, 0), (0.95, 3)):
        got = statistics.interval(SKEWED, confidence=confidence, seed=seed)
        assert (got.low, got.high) == tuple(scipy_interval("BCa", confidence, seed))
    got = statistics.interval(SKEWED)
    assert got == statistics.interval(SKEWED) and got.n == 8
    assert got.mean == pytest.approx(np.mean(values))
    assert got.sd == pytest.approx(np.std(values, ddof=1))
    # On these values another method would give another interval (the check above can fail).
    for method in ("percentile", "basic"):
        other = scipy_interval(method)
        assert abs(other.low - got.low) + abs(other.high - got.high) > 1.0, method


def exact_bca(values, confidence=0.95):
    """BCa (Efron & Tibshirani 1993, 14.3) on the exact bootstrap distribution of the mean.

    Every resample of n values is a count vector c (c_i >= 0, sum n) of probability
    n! / prod(c_i!) / n^n; there are C(2n-1, n) of them. The bias correction z0 is the
    normal quantile of P(mean* < mean) + P(mean* = mean) / 2 (scipy's convention for
    ties), the acceleration a = sum(d^3) / (6 sum(d^2)^1.5) with d the jackknife means'
    deviations from their mean, and the interval the exact quantiles of the resampled
    means at Phi(z0 + (z0 + z) / (1 - a (z0 + z))) for z = -+1.96. Also returns the
    percentile interval of the same distribution.
    """
    from scipy.special import ndtr, ndtri

    x = np.asarray(values, float)
    n = len(x)
    means, probabilities = [], []
    for bars in itertools.combinations(range(2 * n - 1), n - 1):  # stars and bars
        counts = np.diff((-1, *bars, 2 * n - 1)) - 1
        ways = math.factorial(n) // math.prod(math.factorial(int(c)) for c in counts)
        means.append(float(counts @ x) / n)
        probabilities.append(ways / n**n)
    order = np.argsort(means)
    means, probabilities = np.array(means)[order], np.array(probabilities)[order]
    assert probabilities.sum() == pytest.approx(1.0)
    cdf = np.cumsum(probabilities)

    def quantile(p):
        return float(means[np.searchsorted(cdf, p - 1e-12)])

    mean = x.mean()
    z0 = ndtri(probabilities[means < mean].sum() + probabilities[means == mean].sum() / 2)
    jackknife = (x.sum() - x) / (n - 1)
    d = jackknife.mean() - jackknife
    a = np.sum(d**3) / (6 * np.sum(d**2) ** 1.5)
    z = ndtri((1 - confidence) / 2)
    levels = [ndtr(z0 + (z0 + t) / (1 - a * (z0 + t))) for t in (z, -z)]
    alpha = (1 - confidence) / 2
    return tuple(map(quantile, levels)), (quantile(alpha), quantile(1 - alpha))


def test_interval_matches_a_bca_interval_computed_by_hand():
    (low, high), percentile = exact_bca(SKEWED)
    # Hand-computed: the exact BCa interval is (72.25, 82.0), the percentile one (71.75, 80.0).
    assert (low, high) == (72.25, 82.0) and percentile == (71.75, 80.0)
    got = statistics.interval(SKEWED)
    # 9,999 resamples estimate the quantiles: within two steps (1/8) of the exact lower end,
    # and the far upper tail (about 0.4 %) within 0.75; the percentile interval is outside.
    assert got.low == pytest.approx(low, abs=0.25) and got.high == pytest.approx(high, abs=0.75)
    assert abs(percentile[0] - low) > 0.25 and abs(percentile[1] - high) > 0.75
    # Two values: z0 = 0 (a quarter below the mean, half on it) and a = 0 (symmetric), so the
    # interval is the 2.5 and 97.5 % quantiles of {0: 1/4, 0.5: 1/2, 1: 1/4}: 0 and 1.
    assert exact_bca([0, 1])[0] == (0.0, 1.0)
    two = statistics.interval([0.0, 1.0])
    assert (two.low, two.high) == (0.0, 1.0)


@pytest.mark.parametrize(
    "values, expected",
    [
        ([], None),
        ([0.8], (1, 0.8, math.nan, math.nan, math.nan)),
        ([0.8, 0.8, 0.8], (3, 0.8, 0.0, 0.8, 0.8)),
        ([0.8, None, float("nan")], (1, 0.8, math.nan, math.nan, math.nan)),
    ],
)
def test_interval_degenerate_groups(values, expected):
    result = statistics.interval(values)
    if expected is None:
        assert result is None
    else:
        got = (result.n, result.mean, result.sd, result.low, result.high)
        np.testing.assert_equal(got, expected)


def test_equivalence_within_and_outside_the_margin():
    inside = statistics.equivalence_test([0.004, -0.002, 0.006, 0.001, -0.003], margin=0.01)
    assert inside.equivalent and inside.p < 0.05 and -0.01 < inside.low < inside.high < 0.01
    outside = statistics.equivalence_test([0.02, 0.015, 0.03], margin=0.01)
    assert not outside.equivalent and outside.p > 0.05 and outside.low > 0
    # Near the margin with a large spread: the interval crosses it, so not shown.
    wide = statistics.equivalence_test([0.03, -0.02, 0.01, -0.015], margin=0.01)
    assert not wide.equivalent and wide.low < -0.01 < 0.01 < wide.high


def test_equivalence_degenerate_cases():
    same = statistics.equivalence_test([0.003, 0.003, 0.003], margin=0.01)
    assert same.equivalent and same.p == 0 and same.low == same.high == pytest.approx(0.003)
    assert not statistics.equivalence_test([0.02, 0.02], margin=0.01).equivalent
    with pytest.raises(statistics.NotTestable, match="1 paired seed"):
        statistics.equivalence_test([0.01], margin=0.01)


def _grid(effect, noise, seed=0):
    """9 seeds × 4 k: probe = seed offset + k effect + effect × quality at k=200 + noise."""
    rng = np.random.default_rng(seed)
    quality = {s: 0.25 + 0.02 * s for s in range(9)}
    probes = {
        s: {
            k: 0.80
            + 0.005 * s
            + 0.01 * (k == 10)
            + effect * quality[s] * (k == 200)
            + noise * rng.standard_normal()
            for k in (5, 10, 50, 200)
        }
        for s in quality
    }
    return probes, quality


def test_interaction_is_found_when_planted_and_not_otherwise():
    planted = statistics.interaction_test(*_grid(effect=0.2, noise=0.002))
    assert planted.p_permutation < 0.01 and planted.p_normal < 0.01
    # Exact: every regrouping of 9 seeds into three groups of three.
    assert planted.permutations == math.factorial(9) // math.factorial(3) ** 3
    assert planted.groups == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    rho, p = planted.correlations[200]
    assert rho > 0.9 and p < 0.01
    additive = statistics.interaction_test(*_grid(effect=0.0, noise=0.0))
    assert additive.statistic == 0 and additive.p_permutation == 1.0
    # The seed offsets (0.005 × seed) are removed before testing: no false signal from them.
    assert additive.cells[2][0] - additive.cells[0][0] == pytest.approx(0.03)


def test_interaction_degenerate_cases():
    probes, quality = _grid(effect=0.1, noise=0.001)
    with pytest.raises(statistics.NotTestable, match="one k only"):
        statistics.interaction_test({s: {5: row[5]} for s, row in probes.items()}, quality)
    few = {s: probes[s] for s in range(5)}
    with pytest.raises(statistics.NotTestable, match="5 seeds .* need at least 6"):
        statistics.interaction_test(few, quality)
    flat = {s: {k: 0.8 for k in row} for s, row in probes.items()}
    with pytest.raises(statistics.NotTestable, match="same probe"):
        statistics.interaction_test(flat, quality)
    missing = {s: dict(row) for s, row in probes.items()}
    del missing[0][50], missing[1][50], missing[2][50]  # no longer a full row: dropped
    with pytest.raises(statistics.NotTestable, match="5 seeds have a probe at every k"):
        statistics.interaction_test(missing, {s: q for s, q in quality.items() if s != 3})


# ---- report on run folders --------------------------------------------------


def test_report_groups_seeds_with_intervals_and_tests_halting(tmp_path):
    grid, halt = tmp_path / "grid", tmp_path / "halt"
    never = {1: 0.810, 2: 0.820, 3: 0.815, 4: 0.805}
    for seed, probe in never.items():
        fake_run(grid, seed, probe=probe, probe_random=probe - 0.02, wall=100)
        fake_run(grid, seed, k=10, probe=probe + 0.01)  # untrained probe taken from k=5
        fake_run(grid, seed, k=50, probe=probe, probe_random=0.5, backend="torch")  # not pooled
        fake_run(halt, seed, halt_after=1, probe=probe + 0.002 * (-1) ** seed, wall=90)
        fake_run(halt, seed, halt_after=2, probe=probe - 0.03 + 0.004 * seed, wall=95)
    fake_run(halt, 9, halt_after=2, probe=0.7)  # no never-halted twin: not paired
    out = tmp_path / "report"
    printed = report(grid, halt, out=out)
    k10 = next(g for g in read(out / "groups.csv") if g["clusters"] == "10")
    assert float(k10["gain_mean"]) == pytest.approx(0.03)
    k5, k50 = (next(g for g in read(out / "groups.csv") if g["clusters"] == k) for k in ("5", "50"))
    assert float(k50["probe_random_mean"]) == 0.5 and k50["backend"] == "torch"
    assert float(k5["probe_random_mean"]) < 0.81  # its own, not the other backend's
    groups = {g["halt"]: g for g in read(out / "groups.csv") if g["clusters"] == "5"}
    assert set(groups) == {"never", "after 1", "after 2"} and groups["never"]["seeds"] == "4"
    g = groups["never"]
    assert float(g["probe_mean"]) == pytest.approx(np.mean(list(never.values())))
    expected = statistics.interval(list(never.values()))  # the seeds' BCa interval
    assert float(g["probe_low"]) == pytest.approx(expected.low)
    assert float(g["probe_high"]) == pytest.approx(expected.high)
    assert float(g["probe_sd"]) == pytest.approx(expected.sd)
    assert float(g["gain_mean"]) == pytest.approx(0.02) and float(g["gain_sd"]) == pytest.approx(0)
    assert groups["after 2"]["seeds"] == "5"
    halting = {h["halt"]: h for h in read(out / "halting.csv")}
    assert (
        halting["after 1"]["verdict"] == "equivalent" and float(halting["after 1"]["p_tost"]) < 0.05
    )
    assert halting["after 2"]["verdict"] == "not shown" and halting["after 2"]["seeds"] == "4"
    assert float(halting["after 1"]["wall_seconds_saved"]) == pytest.approx(10)
    assert float(halting["after 1"]["recluster_seconds_saved"]) == pytest.approx(2 * 2.5)
    assert "±1" in (out / "halting.md").read_text() and "[" in (out / "groups.md").read_text()
    for name in ("probe_vs_initial_nmi.png", "halting.png", "nmi_curves.png"):
        assert (out / name).stat().st_size > 0
    assert "halting against never halting" in printed and "bootstrap" in printed
    # A wider margin in points changes the verdict of the 3-point drop.
    report(grid, halt, out=tmp_path / "wide", extra=["--margin", "5"])
    wide = {h["halt"]: h for h in read(tmp_path / "wide" / "halting.csv")}
    assert wide["after 2"]["verdict"] == "equivalent"


def test_report_degenerate_folders(tmp_path):
    """One seed, identical values, missing probes: tables still written, tests skipped."""
    one, same, unprobed = tmp_path / "one", tmp_path / "same", tmp_path / "unprobed"
    fake_run(one, 1, probe=0.8)
    fake_run(one, 1, halt_after=1, probe=0.81)
    for seed in (1, 2, 3):
        fake_run(same, seed, k=10, probe=0.8)
        fake_run(unprobed, seed, k=50)
    out = tmp_path / "report"
    printed = report(one, same, unprobed, out=out)
    groups = {(g["clusters"], g["halt"]): g for g in read(out / "groups.csv")}
    assert groups[("5", "never")]["probe_sd"] == "" and groups[("5", "never")]["probe_low"] == ""
    assert groups[("10", "never")]["probe_low"] == groups[("10", "never")]["probe_high"] == "0.8"
    assert groups[("50", "never")]["probe_mean"] == "" and groups[("50", "never")]["seeds"] == "3"
    halting = read(out / "halting.csv")
    assert halting[0]["verdict"].startswith("not testable: 1 paired seed")
    assert "not tested" in printed  # the k grid has too few complete seeds
    assert "not tested" in (out / "interaction.md").read_text()
    assert "–" in (out / "groups.md").read_text()


def test_report_tests_quality_by_k_on_a_grid_with_space(tmp_path):
    probes, quality = _grid(effect=0.2, noise=0.002)
    for seed, row in probes.items():
        for k, probe in row.items():
            fake_run(tmp_path / "grid", seed, k=k, probe=probe)
    fake_space(tmp_path / "space", {s: 0.6 - q for s, q in quality.items()})  # reversed ranking
    out = tmp_path / "report"
    printed = report(tmp_path / "grid", tmp_path / "space", out=out)
    (record,) = json.loads((out / "interaction.json").read_text())
    assert record["backend"] == "jax"
    result = record["result"]
    # The space NMI (not the runs' own epoch-0 NMI) ranks the seeds.
    assert result["groups"] == [[8, 7, 6], [5, 4, 3], [2, 1, 0]]
    assert result["p_permutation"] < 0.01 and result["permutations"] == 1680
    assert (
        "permutation p" in printed and "| worst (8, 7, 6) |" in (out / "interaction.md").read_text()
    )
    for name in ("interaction.png", "probe_vs_k.png", "space_space.png"):
        assert (out / name).stat().st_size > 0
    assert [int(g["clusters"]) for g in read(out / "groups.csv")] == [
        5,
        10,
        50,
        200,
    ]  # numbers sort as numbers


def test_report_scores_select_choices_on_the_grid(tmp_path):
    grid = tmp_path / "grid"
    probes = {(1, 5): 0.80, (1, 10): 0.83, (2, 5): 0.78, (2, 10): 0.81}
    for (seed, k), probe in probes.items():
        fake_run(grid, seed, k=k, probe=probe)
    chosen = tmp_path / "select"
    fake_run(chosen, 1, k=5, probe=0.80).path.rename(chosen / "final")
    (chosen / "selection.json").write_text(
        json.dumps(
            {
                "final": {
                    "recipe": "fashion_mnist",
                    "backend": "jax",
                    "images": 600,
                    "epochs": 3,
                    "pca": None,
                },
                "draw": 3,
                "criterion": "probe",
                "recipe_clusters": 5,
                "choices": {"probe": 5, "knn": 10, "linear": 10, "nmi": 5},
                "chosen": {"seed": 1, "clusters": 5, "halt_after": None},
            }
        )
    )
    out = tmp_path / "report"
    report(chosen, grid, out=out)
    (row,) = read(out / "selection.csv")
    assert row["draw"] == "3" and float(row["grid_best"]) == pytest.approx(0.83)
    assert float(row["final_regret"]) == pytest.approx(0.03)
    assert float(row["regret_probe"]) == pytest.approx(0.03) and float(row["regret_knn"]) == 0
    assert float(row["grid_mean"]) == pytest.approx(np.mean(list(probes.values())))
    assert float(row["default_mean"]) == pytest.approx(0.79)
    criteria = {row["criterion"]: row for row in read(out / "criteria.csv")}
    assert set(criteria) == {"probe", "knn", "linear", "nmi"} and criteria["knn"]["draws"] == "1"
    assert float(criteria["knn"]["probe_mean"]) == pytest.approx(0.83)
    assert float(criteria["knn"]["over_default"]) == pytest.approx(0.04)
    assert criteria["knn"]["regret_low"] == ""  # one draw: no interval
    # Without a final run (--choose-only) the grid still scores the choices.
    (chosen / "final").rename(tmp_path / "final")
    report(chosen, grid, out=tmp_path / "choose-only")
    (row,) = read(tmp_path / "choose-only" / "selection.csv")
    assert row["final_probe"] == "" and float(row["regret_linear"]) == 0
    # select's final run is listed with the runs but not pooled with the grid's seeds.
    groups = {g["clusters"]: g for g in read(out / "groups.csv")}
    assert groups["5"]["seeds"] == "2" and len(read(out / "runs.csv")) == 5
