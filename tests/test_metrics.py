"""Metrics as pure functions: against scikit-learn / SciPy where they exist, hand-computed cases where they
don't (CCC, SAGR, Krippendorff's alpha), and the edge cases (absent class, one class, constant targets, no
samples) giving defined values without warnings."""

import warnings

import numpy as np
import pytest
import scipy.stats
import sklearn.metrics as S

from ferkit.evaluation import metrics as M


@pytest.fixture(autouse=True)
def _no_warnings():
    """Every metric here must be silent: any warning raised inside a test fails it."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def _random_case(rng, k, n, drop_class=None):
    t = rng.integers(0, k, n)
    if drop_class is not None:
        t[t == drop_class] = (drop_class + 1) % k
    logits = rng.normal(size=(n, k)) * 2 + np.eye(k)[t] * rng.uniform(0, 3)
    P = np.exp(logits - logits.max(1, keepdims=True))
    return t, P / P.sum(1, keepdims=True)


def _sk(fn, *a, **kw):
    with warnings.catch_warnings():  # scikit-learn's own warnings are not ours to judge
        warnings.simplefilter("ignore")
        return fn(*a, **kw)


@pytest.mark.parametrize("seed", range(6))
def test_classification_metrics_equal_sklearn(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(3, 8))
    t, P = _random_case(rng, k, int(rng.integers(20, 400)), drop_class=1 if seed % 2 else None)
    p = P.argmax(1)
    assert M.accuracy(t, p) == pytest.approx(S.accuracy_score(t, p))
    assert M.balanced_accuracy(t, p, k) == pytest.approx(_sk(S.balanced_accuracy_score, t, p))
    assert M.f1_score(t, p, k, "macro") == pytest.approx(S.f1_score(t, p, average="macro", zero_division=0))
    assert M.f1_score(t, p, k, "weighted") == pytest.approx(S.f1_score(t, p, average="weighted", zero_division=0))
    prf = M.precision_recall_f1(t, p, k)
    sp, sr, sf, ss = S.precision_recall_fscore_support(t, p, labels=range(k), zero_division=0)
    np.testing.assert_allclose(prf["precision"], sp)
    np.testing.assert_allclose(prf["recall"], sr)
    np.testing.assert_allclose(prf["f1"], sf)
    np.testing.assert_array_equal(prf["support"], ss)
    assert M.cohen_kappa(t, p, k) == pytest.approx(S.cohen_kappa_score(t, p))
    assert M.top_k_accuracy(t, P, 2) == pytest.approx(S.top_k_accuracy_score(t, P, k=2, labels=range(k)))
    assert M.log_loss(t, P) == pytest.approx(S.log_loss(t, P, labels=range(k)))
    np.testing.assert_array_equal(M.confusion_matrix(t, p, k), S.confusion_matrix(t, p, labels=range(k)))
    for c in range(k):
        if (t == c).any():
            assert M.roc_auc(t == c, P[:, c]) == pytest.approx(S.roc_auc_score(t == c, P[:, c]))
            assert M.average_precision(t == c, P[:, c]) == pytest.approx(S.average_precision_score(t == c, P[:, c]))
            fpr, tpr, _ = M.roc_curve(t == c, P[:, c])
            sfpr, stpr, _ = S.roc_curve(t == c, P[:, c], drop_intermediate=False)
            np.testing.assert_allclose(fpr, sfpr)
            np.testing.assert_allclose(tpr, stpr)
        else:
            assert np.isnan(M.roc_auc(t == c, P[:, c])) and np.isnan(M.average_precision(t == c, P[:, c]))
    if seed % 2 == 0:  # every class present: the macro one-vs-rest AUC is scikit-learn's
        rep = M.classification_metrics(t, P, [f"c{i}" for i in range(k)])
        assert rep["roc_auc_macro"] == pytest.approx(S.roc_auc_score(t, P, multi_class="ovr", average="macro"))


def test_ranking_metrics_with_tied_scores_equal_sklearn():
    y = np.array([1, 0, 1, 0, 1, 1, 0, 0])
    s = np.array([0.5, 0.5, 0.2, 0.2, 0.9, 0.5, 0.1, 0.9])
    assert M.roc_auc(y, s) == pytest.approx(S.roc_auc_score(y, s))
    assert M.average_precision(y, s) == pytest.approx(S.average_precision_score(y, s))


def test_regression_metrics_equal_sklearn_and_scipy():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, 500)
    y = np.clip(0.7 * x + rng.normal(0, 0.3, 500), -1, 1)
    r = M.regression_metrics(x, y)
    assert r["rmse"] == pytest.approx(np.sqrt(S.mean_squared_error(x, y)))
    assert r["mae"] == pytest.approx(S.mean_absolute_error(x, y))
    assert r["r2"] == pytest.approx(S.r2_score(x, y))
    assert r["pearson_r"] == pytest.approx(scipy.stats.pearsonr(x, y)[0])
    # CCC from its definition, with population (1/n) moments
    ccc = 2 * np.cov(x, y, bias=True)[0, 1] / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)
    assert r["ccc"] == pytest.approx(ccc)


def test_ccc_hand_computed():
    assert M.ccc([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    # shifted by one: mx 2, my 3, var 2/3 each, cov 2/3 -> 2(2/3) / (2/3 + 2/3 + 1) = 4/7
    assert M.ccc([1, 2, 3], [2, 3, 4]) == pytest.approx(4 / 7)
    assert M.ccc([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # scaled: y = 2x, x = (0, 1): mx .5 my 1, vx .25 vy 1, cov .5 -> 1 / (1.25 + .25) = 2/3
    assert M.ccc([0, 1], [0, 2]) == pytest.approx(2 / 3)


def test_sagr_hand_computed():
    # signs (+,+) (-,+) (+,-) (-,-) -> 2 of 4 agree
    assert M.sagr([0.5, -0.2, 0.1, -0.7], [0.3, 0.1, -0.2, -0.1]) == pytest.approx(0.5)
    assert M.sagr([0.5, -0.5], [0.1, -0.9]) == 1.0
    assert M.sagr([0.0, 0.2], [0.0, -0.2]) == 0.5  # 0 is its own sign: (0, 0) agrees


def test_krippendorff_alpha_hand_computed():
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability", binary data, two observers, 10 units:
    # alpha = 1 - (n - 1) * o_01 / (n_0 * n_1) = 1 - 19 * 4 / (14 * 6) = 0.095
    a = [0, 1, 0, 0, 0, 0, 0, 0, 1, 0]
    b = [1, 1, 1, 0, 0, 1, 0, 0, 0, 0]
    assert M.krippendorff_alpha_nominal(a, b) == pytest.approx(1 - 19 * 4 / (14 * 6))
    assert round(M.krippendorff_alpha_nominal(a, b), 3) == 0.095
    assert M.krippendorff_alpha_nominal([0, 1, 2, 2], [0, 1, 2, 2]) == 1.0
    # 3 classes, n = 8 values: o = C + C^T, one disagreement pair -> (n-1)*2 / (64 - (9+9+4)) = 14/42
    assert M.krippendorff_alpha_nominal([0, 1, 2, 0], [0, 1, 2, 1]) == pytest.approx(1 - 7 * 2 / (64 - 9 - 9 - 4))


def test_ece_hand_computed():
    # 15 bins; confidences .95 (correct), .95 (wrong) -> bin (14/15, 1]: acc .5, conf .95 -> |.5-.95| * 2/4
    # .55 (correct) and .55 (correct) -> bin (8/15, 9/15]: acc 1, conf .55 -> |1 - .55| * 2/4
    P = np.array([[0.95, 0.05], [0.95, 0.05], [0.45, 0.55], [0.55, 0.45]])
    t = np.array([0, 1, 1, 0])
    assert M.expected_calibration_error(t, P, 15) == pytest.approx(0.5 * 0.45 + 0.5 * 0.45)
    b = M.calibration_bins(t, P, 15)
    assert b["count"].sum() == 4 and b["count"][14] == 2 and b["count"][8] == 2
    # perfectly calibrated in each bin -> 0
    P2 = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert M.expected_calibration_error([0, 1], P2) == 0.0


def test_class_absent_from_predictions():
    t = np.array([0, 0, 1, 1, 2, 2])
    p = np.array([0, 0, 0, 1, 1, 1])  # class 2 never predicted
    prf = M.precision_recall_f1(t, p, 3)
    assert prf["precision"][2] == 0 and prf["recall"][2] == 0 and prf["f1"][2] == 0
    assert M.f1_score(t, p, 3, "macro") == pytest.approx(S.f1_score(t, p, average="macro", zero_division=0))
    assert M.cohen_kappa(t, p, 3) == pytest.approx(S.cohen_kappa_score(t, p))
    # a class absent from both truth and prediction does not enter the macro average
    assert M.f1_score(t, p, 5, "macro") == M.f1_score(t, p, 3, "macro")
    assert M.balanced_accuracy(t, p, 5) == pytest.approx(S.balanced_accuracy_score(t, p))


def test_single_class_and_empty_input_are_defined_and_silent():
    t = np.zeros(5, dtype=int)
    P = np.tile([0.8, 0.2], (5, 1))
    rep = M.classification_metrics(t, P, ["a", "b"])
    assert rep["accuracy"] == 1.0 and rep["balanced_accuracy"] == 1.0 and rep["macro_f1"] == 1.0
    assert np.isnan(rep["cohen_kappa"]) and np.isnan(rep["krippendorff_alpha"])  # undefined, as scikit-learn
    assert np.isnan(rep["per_class"]["a"]["roc_auc"])  # no negatives
    assert rep["top2_accuracy"] == 1.0 and rep["log_loss"] == pytest.approx(-np.log(0.8))
    assert rep["confused_pairs"] == []
    empty = M.classification_metrics(np.zeros(0, int), np.zeros((0, 3)), ["a", "b", "c"])
    assert empty["n"] == 0 and np.isnan(empty["accuracy"]) and np.isnan(empty["ece"])
    assert np.isnan(M.rmse([], [])) and np.isnan(M.ccc([], [])) and np.isnan(M.sagr([], []))


def test_constant_regression_targets():
    c = np.full(10, 0.3)
    y = np.linspace(-1, 1, 10)
    r = M.regression_metrics(c, y)
    assert r["r2"] == 0.0  # scikit-learn's force_finite convention ...
    quarter = np.full(10, 0.25)  # ... which scikit-learn itself only reaches when the mean is exact in floats
    assert M.r2(quarter, y) == _sk(S.r2_score, quarter, y) == 0.0
    assert np.isnan(r["pearson_r"])  # undefined; no ConstantInputWarning
    assert r["ccc"] == pytest.approx(0.0)  # no covariance with a constant
    assert np.isfinite(r["rmse"]) and np.isfinite(r["mae"])
    same = M.regression_metrics(c, c)
    assert same["r2"] == 1.0 and same["ccc"] == 1.0 and same["rmse"] == 0.0 and same["sagr"] == 1.0
    assert M.ccc(c, np.full(10, -0.3)) == pytest.approx(0.0, abs=1e-12)  # two different constants: no agreement


def test_confused_pairs_from_confusion_matrix():
    cm = np.array([[5, 3, 0], [1, 4, 0], [0, 6, 2]])
    pairs = M.confused_pairs(cm, ["a", "b", "c"])
    assert [(p["true"], p["pred"], p["count"]) for p in pairs] == [("c", "b", 6), ("a", "b", 3), ("b", "a", 1)]
    assert pairs[0]["rate"] == pytest.approx(6 / 8)


def test_streaming_sums_match_array_forms():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=100), rng.normal(size=100)
    parts = [M.regression_sums(x[i : i + 30], y[i : i + 30]) for i in range(0, 100, 30)]
    total = np.sum(parts, axis=0)
    assert M.ccc_from_sums(*total[:6]) == pytest.approx(M.ccc(x, y))
    assert M.rmse_from_sums(total[0], total[6]) == pytest.approx(M.rmse(x, y))
