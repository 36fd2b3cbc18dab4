"""Statistics of the visual Turing test against hand-computed and textbook values."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.stats import binom, mannwhitneyu

from synthex.vtt import VTTError
from synthex.vtt.report import compute_report, render_markdown
from synthex.vtt.stats import binomial_test, clopper_pearson, fleiss_kappa, rating_score, roc_curve
from synthex.vtt.store import Answer


def cp_by_definition(k, n, alpha=0.05):
    """Clopper-Pearson from its definition (tail probabilities = alpha/2), solved by root finding.

    Independent of the beta-quantile formula used by the code under test.
    """
    lo = 0.0 if k == 0 else brentq(lambda p: binom.sf(k - 1, n, p) - alpha / 2, 1e-12, 1 - 1e-12, xtol=1e-14)
    hi = 1.0 if k == n else brentq(lambda p: binom.cdf(k, n, p) - alpha / 2, 1e-12, 1 - 1e-12, xtol=1e-14)
    return lo, hi


def test_clopper_pearson_textbook_values():
    # 5/10: the standard textbook example, (0.1871, 0.8129).
    lo, hi = clopper_pearson(5, 10)
    assert lo == pytest.approx(0.1871, abs=1e-4) and hi == pytest.approx(0.8129, abs=1e-4)
    # k = 0 and k = n have closed forms: upper = 1 - (alpha/2)^(1/n), lower = (alpha/2)^(1/n).
    assert clopper_pearson(0, 10) == (0.0, pytest.approx(1 - 0.025 ** (1 / 10), rel=1e-12))
    assert clopper_pearson(20, 20) == (pytest.approx(0.025 ** (1 / 20), rel=1e-12), 1.0)
    assert clopper_pearson(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize("k,n", [(1, 3), (4, 6), (7, 12), (37, 50), (1, 100), (99, 100)])
def test_clopper_pearson_matches_its_definition(k, n):
    assert clopper_pearson(k, n) == pytest.approx(cp_by_definition(k, n), abs=1e-9)
    # a 90% interval is nested inside the 95% one
    lo90, hi90 = clopper_pearson(k, n, 0.90)
    lo95, hi95 = clopper_pearson(k, n)
    assert lo95 < lo90 and hi90 < hi95


def test_clopper_pearson_rejects_impossible_counts():
    with pytest.raises(VTTError, match="0 <= k <= n"):
        clopper_pearson(11, 10)
    with pytest.raises(VTTError, match="confidence"):
        clopper_pearson(1, 10, 1.5)


def test_binomial_test_against_hand_computed_tails():
    # 9 of 10: P(X >= 9) = (10 + 1) / 2^10, doubled by symmetry.
    assert binomial_test(9, 10) == pytest.approx(2 * 11 / 1024, rel=1e-12)
    # 7 of 12: P(X >= 7) = (C(12,7) + ... + C(12,12)) / 4096 = 1586 / 4096, doubled.
    assert binomial_test(7, 12) == pytest.approx(2 * 1586 / 4096, rel=1e-12)
    assert binomial_test(3, 6) == pytest.approx(1.0)
    assert binomial_test(0, 0) is None


def test_fleiss_kappa_textbook_example():
    # The worked example of Fleiss' kappa (10 subjects, 14 raters, 5 categories) as published
    # (e.g. Wikipedia "Fleiss' kappa"): P-bar = 0.378, P-e = 0.213, kappa = 0.210.
    counts = [
        [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
    ]
    assert fleiss_kappa(counts) == pytest.approx(0.210, abs=5e-4)


def test_fleiss_kappa_small_cases_by_hand():
    # Two raters, two categories: items (syn, syn), (syn, real), (real, real), (real, real), (real, syn), (syn, real)
    # P_i = 1, 0, 1, 1, 0, 0 -> P-bar = 1/2; 5 of 12 ratings synthetic -> P-e = (25 + 49) / 144;
    # kappa = (1/2 - 74/144) / (1 - 74/144) = -2/70.
    counts = [[0, 2], [1, 1], [2, 0], [2, 0], [1, 1], [1, 1]]
    assert fleiss_kappa(counts) == pytest.approx(float(Fraction(-2, 70)), rel=1e-12)
    assert fleiss_kappa([[3, 0], [0, 3], [3, 0]]) == pytest.approx(1.0)  # perfect agreement
    assert fleiss_kappa([[3, 0], [3, 0]]) is None  # every rating the same: undefined
    with pytest.raises(VTTError, match="same number"):
        fleiss_kappa([[2, 0], [1, 0]])


def test_roc_auc_by_hand_and_against_mann_whitney():
    # synthetic scores 5, 3, -2 vs real -4, -5, 1: pairs with synthetic above real: 3 + 3 + 2 = 8 of 9.
    scores = [5, 3, -2, -4, -5, 1]
    positive = [True, True, True, False, False, False]
    roc = roc_curve(scores, positive)
    assert roc.auc == pytest.approx(8 / 9, rel=1e-12)
    assert (roc.fpr[0], roc.tpr[0], roc.fpr[-1], roc.tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert all(np.diff(roc.fpr) >= 0) and all(np.diff(roc.tpr) >= 0)
    rng = np.random.default_rng(3)
    for _ in range(5):  # with many ties, the trapezoid equals the Mann-Whitney U / (n1 n0)
        s = rng.integers(-5, 6, size=40)
        y = rng.random(40) < 0.5
        u = mannwhitneyu(s[y], s[~y]).statistic
        assert roc_curve(s, y).auc == pytest.approx(u / (y.sum() * (~y).sum()), rel=1e-12)
    assert roc_curve([1, 2], [True, True]).auc is None


def test_rating_score_orders_answers():
    scores = [rating_score("real", c) for c in (5, 1)] + [rating_score("synthetic", c) for c in (1, 5)]
    assert scores == sorted(scores) and scores == [-5, -1, 1, 5]


def test_report_numbers_by_hand():
    labels = {"s1": "synthetic", "s2": "synthetic", "s3": "synthetic", "r1": "real", "r2": "real", "r3": "real"}
    a = [("s1", "synthetic", 5), ("s2", "synthetic", 3), ("s3", "real", 2),
         ("r1", "real", 4), ("r2", "real", 5), ("r3", "synthetic", 1)]
    b = [("s1", "synthetic", 4), ("s2", "real", 3), ("s3", "real", 1),
         ("r1", "real", 2), ("r2", "synthetic", 2)]  # rater b did not answer r3
    answers = [Answer("a", *x) for x in a] + [Answer("b", *x) for x in b]
    report = compute_report(labels, answers)
    ra, rb, pooled = report["raters"]["a"], report["raters"]["b"], report["pooled"]
    assert (ra["accuracy"]["k"], ra["accuracy"]["n"]) == (4, 6)
    assert (ra["sensitivity"]["k"], ra["sensitivity"]["n"], ra["specificity"]["k"]) == (2, 3, 2)
    assert ra["chance_test_p"] == pytest.approx(44 / 64)  # P(X>=4) + P(X<=2) = 22/64 * 2
    assert ra["roc"]["auc"] == pytest.approx(8 / 9)
    assert (rb["accuracy"]["k"], rb["accuracy"]["n"], rb["specificity"]["n"]) == (2, 5, 2)
    assert (pooled["accuracy"]["k"], pooled["accuracy"]["n"]) == (6, 11)
    assert pooled["accuracy"]["ci_low"] == pytest.approx(cp_by_definition(6, 11)[0], abs=1e-9)
    # kappa over the 5 images both answered: (syn,syn), (syn,real), (real,real), (real,real), (real,syn)
    # P-bar = 3/5; 4 of 10 ratings synthetic -> P-e = 0.16 + 0.36 = 0.52; kappa = 0.08 / 0.48 = 1/6.
    assert report["agreement"]["n_images_rated_by_all"] == 5
    assert report["agreement"]["fleiss_kappa"] == pytest.approx(1 / 6, rel=1e-12)
    text = render_markdown(report)
    assert "| a | 6/6 | 0.667" in text and "Fleiss' kappa = 0.167" in text
    with pytest.raises(VTTError, match="not in the key"):
        compute_report(labels, answers + [Answer("a", "zz", "real", 1)])
    assert math.isclose(report["confidence_level"], 0.95)
