"""AnomalyMetrics against scikit-learn and a re-implementation of SegmentMeIfYouCan's evaluator."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from dense_ood_ros.metrics import AnomalyMetrics, SemanticMetrics, anomaly_target


def sklearn_metrics(anomaly, scores):
    """Exact AP, FPR at the first threshold with TPR >= 0.95, AUROC on raw pixels."""
    fpr, tpr, _ = roc_curve(anomaly, scores, drop_intermediate=False)
    return {"ap": average_precision_score(anomaly, scores),
            "fpr95": fpr[np.searchsorted(tpr, 0.95)], "auroc": roc_auc_score(anomaly, scores)}


def smiyc_reference(frames):
    """Compute SegmentMeIfYouCan's PixBinaryClass-uniThr, re-implemented from its description.

    Per frame ``np.histogram(bins=4096, range=(0, 1))`` of anomaly / inlier scores, cumulated
    from the top bin, cmats summed over frames, then ``curves_from_cmats``.
    """
    tp = fp = 0
    num_pos = num_neg = 0
    for scores, anomaly in frames:
        pos_hist, _ = np.histogram(scores[anomaly], bins=4096, range=(0, 1))
        neg_hist, _ = np.histogram(scores[~anomaly], bins=4096, range=(0, 1))
        tp = tp + np.cumsum(pos_hist[::-1])
        fp = fp + np.cumsum(neg_hist[::-1])
        num_pos += int(anomaly.sum())
        num_neg += int((~anomaly).sum())
    if tp[0] != 0 or fp[0] != 0:
        tp, fp = np.concatenate([[0], tp]), np.concatenate([[0], fp])
    if tp[-1] != num_pos or fp[-1] != num_neg:
        tp, fp = np.concatenate([tp, [num_pos]]), np.concatenate([fp, [num_neg]])
    tpr, fpr = tp / num_pos, fp / num_neg
    predicted = tp + fp
    precision = np.ones(len(tp))
    precision[predicted > 0] = tp[predicted > 0] / predicted[predicted > 0]
    index = np.searchsorted(tpr, 0.95)
    return {"ap": np.sum(np.diff(tpr) * precision[1:]),
            "fpr95": fpr[index] if index < len(tpr) else 1.0,
            "auroc": np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)}  # np.trapz


def random_frames(kind, rng, count=6, shape=(48, 64)):
    """(scores float32, anomaly bool, valid bool) per frame, from several score distributions."""
    frames = []
    for index in range(count):
        anomaly = rng.random(shape) < rng.uniform(0.02, 0.3)
        valid = rng.random(shape) > 0.1
        if kind == "unit":  # jsd-like, in [0, 1], anomalies higher
            scores = np.clip(rng.beta(2, 6, shape) + 0.35 * anomaly * rng.random(shape), 0, 1)
        elif kind == "maxlogit":  # unbounded, range varies by frame (forces re-binning)
            scores = rng.normal(-8.0 + index, 1.5 + index, shape) + 3.0 * anomaly
        elif kind == "heavy_tail":
            scores = (rng.exponential(1.0, shape) * (1.0 + anomaly)
                      + 20.0 * (rng.random(shape) < 0.001))
        elif kind == "ties":  # values on a 1/64 grid: many exact ties
            scores = np.round((rng.random(shape) + 0.4 * anomaly) * 64) / 64
        elif kind == "separated":
            scores = 0.5 * anomaly + 0.1 * rng.random(shape)
        frames.append((scores.astype(np.float32), anomaly, valid))
    return frames


def accumulate(frames, names=("s",)):
    metrics = AnomalyMetrics(names)
    for scores, anomaly, valid in frames:
        metrics.update({name: scores for name in names}, anomaly, valid)
    return metrics


def pooled(frames):
    scores = np.concatenate([s[v] for s, _, v in frames])
    anomaly = np.concatenate([a[v] for _, a, v in frames])
    return anomaly, scores


@pytest.mark.parametrize("kind", ["unit", "maxlogit", "heavy_tail", "ties", "separated"])
def test_sklearn_mode_matches_scikit_learn_within_its_bound(kind):
    frames = random_frames(kind, np.random.default_rng(7))
    result = accumulate(frames).summary("sklearn")
    assert result["mode"] == "sklearn"
    ours, exact = result["scores"]["s"], sklearn_metrics(*pooled(frames))
    assert ours["positives"] + ours["negatives"] == sum(v.sum() for _, _, v in frames)
    for key in ("ap", "fpr95", "auroc"):
        assert abs(ours[key] - exact[key]) <= ours[f"{key}_max_error"] + 1e-12, key
        # Bins only merge values closer than the bin width; on dyadic grids ties are exact.
        tolerance = 1e-12 if kind in ("ties", "separated") else 1e-3
        assert abs(ours[key] - exact[key]) <= tolerance, (key, ours[key], exact[key])


def test_unit_scores_have_fine_bins_and_tight_bounds():
    result = accumulate(random_frames("unit", np.random.default_rng(1))).summary()["scores"]["s"]
    assert result["bin_width"] <= 2.0 ** -16
    assert max(result["ap_max_error"], result["fpr95_max_error"], result["auroc_max_error"]) < 1e-3


@pytest.mark.parametrize("kind", ["unit", "ties", "separated"])
def test_smiyc_mode_reproduces_the_segmentmeifyoucan_evaluator(kind):
    frames = random_frames(kind, np.random.default_rng(3))
    if kind == "ties":
        frames = [(np.clip(s, 0, 1), a, v) for s, a, v in frames]
    result = accumulate(frames).summary("smiyc")
    assert result["mode"] == "smiyc"
    ours = result["scores"]["s"]
    reference = smiyc_reference([(s[v], a[v]) for s, a, v in frames])
    assert ours["smiyc_range"] == [0.0, 1.0]
    for key in ("ap", "fpr95", "auroc"):
        assert ours[key] == pytest.approx(reference[key], abs=1e-12), key


def test_smiyc_mode_maps_unbounded_scores_to_unit_range():
    frames = random_frames("maxlogit", np.random.default_rng(5))
    ours = accumulate(frames).summary("smiyc")["scores"]["s"]
    anomaly, scores = pooled(frames)
    assert ours["smiyc_range"] == [float(scores.min()), float(scores.max())]
    exact = sklearn_metrics(anomaly, scores)
    for key in ("ap", "fpr95", "auroc"):  # 4096 thresholds over a wide range: close, not exact
        assert ours[key] == pytest.approx(exact[key], abs=0.01), key


def test_curves_start_at_origin_and_end_at_full_recall():
    metrics = accumulate(random_frames("unit", np.random.default_rng(2)))
    for mode in ("sklearn", "smiyc"):
        curve = metrics.curves("s", mode)
        assert curve["tpr"][0] == 0 and curve["fpr"][0] == 0 and curve["precision"][0] == 1
        assert curve["tpr"][-1] == 1 and curve["fpr"][-1] == 1
        assert np.all(np.diff(curve["thresholds"]) < 0)


def test_order_merge_and_save_load_give_identical_counts(tmp_path):
    frames = random_frames("maxlogit", np.random.default_rng(11), count=8)
    names = ("maxlogit", "other")
    sequential = accumulate(frames, names)
    assert np.array_equal(accumulate(frames[::-1], names).histograms["maxlogit"].bins()[1],
                          sequential.histograms["maxlogit"].bins()[1])
    # The second half has the wider range, so merging must re-bin the first accumulator.
    merged, second = accumulate(frames[:4], names), accumulate(frames[4:], names)
    merged.merge(second)
    merged.save(tmp_path / "anomaly.npz")
    loaded = AnomalyMetrics.load(tmp_path / "anomaly.npz")
    for metrics in (merged, loaded):
        for name in names:
            for ours, expected in zip(metrics.histograms[name].bins(),
                                      sequential.histograms[name].bins()):
                assert np.array_equal(ours, expected)
        assert metrics.summary("smiyc") == sequential.summary("smiyc")
        assert metrics.summary("sklearn") == sequential.summary("sklearn")


def test_merge_into_empty_and_mismatched_scores():
    frames = random_frames("unit", np.random.default_rng(4))
    empty = AnomalyMetrics(["s"])
    empty.merge(accumulate(frames))
    assert empty.summary() == accumulate(frames).summary()
    with pytest.raises(ValueError, match="cannot merge"):
        empty.merge(AnomalyMetrics(["t"]))


def test_degenerate_and_invalid_inputs():
    metrics = AnomalyMetrics(["s"])
    scores = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    metrics.update({"s": scores}, np.zeros((3, 4), bool))
    summary = metrics.summary()["scores"]["s"]
    assert summary["positives"] == 0 and np.isnan(summary["ap"]) and np.isnan(summary["auroc"])
    with pytest.raises(ValueError, match="non-finite"):
        metrics.update({"s": np.full((3, 4), np.nan, np.float32)}, np.zeros((3, 4), bool))
    with pytest.raises(ValueError, match="shape"):
        metrics.update({"s": scores}, np.zeros((4, 3), bool))
    with pytest.raises(ValueError, match="missing"):
        metrics.update({"t": scores}, np.zeros((3, 4), bool))
    with pytest.raises(ValueError, match="unknown metric mode"):
        metrics.summary("trapezoid")
    assert metrics.summary()["scores"]["s"]["negatives"] == 12  # the failed updates added nothing


def test_anomaly_target_maps_label_values():
    label = np.array([[0, 1, 2, 255], [3, 1, 255, 0]], np.uint8)
    anomaly, valid = anomaly_target(label, anomaly_values=(1, 2), ignore_values=(255,))
    assert anomaly.tolist() == [[False, True, True, False], [False, True, False, False]]
    assert valid.tolist() == [[True, True, True, False], [True, True, False, True]]


def test_semantic_metrics_merge_and_round_trip(tmp_path):
    first, second = SemanticMetrics(["a", "b"], 2), SemanticMetrics(["a", "b"], 2)
    first.update(np.array([0, 1, 1]), np.array([0, 1, 2]))
    second.update(np.array([0, 0]), np.array([1, 0]))
    first.merge(second)
    first.save(tmp_path / "semantic.json")
    assert SemanticMetrics.load(tmp_path / "semantic.json").confusion.tolist() == [[2, 0], [1, 1]]
    with pytest.raises(ValueError, match="cannot merge"):
        first.merge(SemanticMetrics(["a", "c"], 2))


def test_threshold_at_95_percent_tpr_keeps_95_percent_of_the_anomalies():
    rng = np.random.default_rng(3)
    anomalies, inliers = rng.uniform(0.2, 1.0, 20_000), rng.uniform(0.0, 0.6, 20_000)
    metrics = AnomalyMetrics(["jsd"])
    metrics.update({"jsd": np.concatenate([anomalies, inliers])},
                   np.concatenate([np.ones(20_000, bool), np.zeros(20_000, bool)]))
    result = metrics.summary()["scores"]["jsd"]
    threshold = result["threshold_tpr95"]
    assert (anomalies >= threshold).mean() >= 0.95
    assert abs(threshold - np.quantile(anomalies, 0.05)) < 1e-3
    assert abs((inliers >= threshold).mean() - result["fpr95"]) < 1e-3
