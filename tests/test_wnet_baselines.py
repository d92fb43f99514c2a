"""Table 1 baselines against scikit-learn directly, annotator averaging, and the oracle vs fixed selection."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import write_image
from sklearn.cluster import KMeans, SpectralClustering
from sklearn.metrics import adjusted_rand_score, homogeneity_completeness_v_measure

from zarrseg import ome
from zarrseg.errors import ConfigError
from zarrseg.evaluation.score import EvaluateParams, evaluate_images
from zarrseg.evaluation.selection import SelectionParams, selection_table
from zarrseg.ssl.cluster import ClusterParams, cluster
from zarrseg.ssl.superpixel_cluster import dense_spectral_embedding, dense_spectral_labels, rag_affinity
from zarrseg.ssl.superpixels import SuperpixelParams, region_means, superpixels


@pytest.fixture
def patchwork(tmp_path, rng):
    """(3, 36, 40) uint8: four colour quadrants with noise, as an OME-Zarr image and as [0, 1] floats."""
    colours = np.array([[220, 30, 30], [30, 200, 40], [40, 40, 210], [230, 220, 60]])
    quadrant = (np.arange(36)[:, None] >= 18) * 2 + (np.arange(40)[None] >= 20)
    rgb = np.clip(colours[quadrant].transpose(2, 0, 1) + rng.normal(0, 6, (3, 36, 40)), 0, 255).astype(np.uint8)
    return write_image(tmp_path / "img.ome.zarr", rgb, "cyx"), rgb, quadrant


def _labels(path) -> np.ndarray:
    return ome.open_image(path).data[...]


def test_kmeans_on_pixels_matches_scikit_learn(tmp_path, patchwork):
    path, rgb, _ = patchwork
    params = ClusterParams(n_clusters=4, n_init=3, colour_patch=1, standardize=False, max_fit_samples=10**6)
    params.preprocess.percentiles = (0.0, 100.0)
    cluster(path, tmp_path / "km.ome.zarr", params)
    x = rgb.reshape(3, -1).T.astype(np.float64)
    x = (x - x.min(0)) / (x.max(0) - x.min(0))  # per channel to [0, 1], as preprocess.percentiles 0..100
    reference = KMeans(4, n_init=3, random_state=0).fit_predict(x)
    assert adjusted_rand_score(reference, _labels(tmp_path / "km.ome.zarr").ravel()) == pytest.approx(1.0)


@pytest.mark.parametrize("method", ["kmeans", "spectral"])
def test_superpixel_baselines_match_scikit_learn(tmp_path, patchwork, method):
    """K-means, and spectral clustering with the dense RBF affinity, as scikit-learn computes them."""
    path, rgb, _ = patchwork
    sp = SuperpixelParams(n_segments=40)
    params = ClusterParams(
        method=method, n_clusters=4, n_init=3, standardize=False, superpixels=sp, spectral_affinity="rbf"
    )
    params.preprocess.percentiles = (0.0, 100.0)
    cluster(path, tmp_path / "sp.ome.zarr", params)
    x = rgb.astype(np.float64)
    lo, hi = x.min(axis=(1, 2), keepdims=True), x.max(axis=(1, 2), keepdims=True)
    x = (x - lo) / (hi - lo)
    segments = superpixels(x, sp)
    _, colour = region_means(segments, x)
    if method == "kmeans":
        per_node = KMeans(4, n_init=3, random_state=0).fit_predict(colour.astype(np.float32))
    else:
        per_node = SpectralClustering(4, affinity="rbf", random_state=0).fit_predict(colour.astype(np.float32))
    ours = _labels(tmp_path / "sp.ome.zarr")
    assert adjusted_rand_score(per_node[segments].ravel(), ours.ravel()) == pytest.approx(1.0)
    assert len(np.unique(ours)) == 4


def test_dense_spectral_solver_spans_scikit_learns_embedding(rng):
    """The rbf reading's dense eigensolver: the same embedding subspace and partition as scikit-learn's ARPACK."""
    from sklearn.manifold import spectral_embedding
    from sklearn.metrics.pairwise import rbf_kernel

    centres = rng.random((3, 3)) * 4
    colour = np.concatenate([c + rng.normal(0, 0.3, (30, 3)) for c in centres])  # three colour blobs
    affinity = rbf_kernel(colour, gamma=1.0)
    reference = spectral_embedding(affinity, n_components=3, eigen_solver="arpack", random_state=0, drop_first=False)
    ours = dense_spectral_embedding(affinity, 3)
    project = lambda e: e @ np.linalg.pinv(e)  # noqa: E731  (projector onto the column space)
    assert np.abs(project(ours) - project(reference)).max() < 1e-6
    labels = dense_spectral_labels(affinity, 3, seed=0)
    sk = SpectralClustering(3, affinity="precomputed", random_state=0).fit_predict(affinity)
    assert adjusted_rand_score(sk, labels) == pytest.approx(1.0)
    assert adjusted_rand_score(np.repeat(np.arange(3), 30), labels) == pytest.approx(1.0)
    assert sorted(np.unique(labels)) == [0, 1, 2]


def test_rag_affinity_is_the_rbf_kernel_on_adjacent_superpixels_only(rng):
    labels = np.array([[0, 0, 1, 1], [0, 2, 2, 1], [3, 3, 2, 1]])
    colour = rng.random((4, 3)).astype(np.float32)
    a = rag_affinity(labels, colour, gamma=2.0).toarray()
    pairs = set()  # 4-connected neighbours with different ids, found here directly
    for y, x in np.ndindex(labels.shape):
        for ny, nx in ((y + 1, x), (y, x + 1)):
            if ny < labels.shape[0] and nx < labels.shape[1] and labels[y, x] != labels[ny, nx]:
                pairs.add(tuple(sorted((int(labels[y, x]), int(labels[ny, nx])))))
    assert pairs == {(0, 1), (0, 2), (0, 3), (1, 2), (2, 3)}  # 1 and 3 do not touch
    for i, j in np.ndindex(4, 4):
        u, v = min(i, j), max(i, j)
        expected = np.exp(-2.0 * ((colour[i] - colour[j]) ** 2).sum()) if (u, v) in pairs else 0.0
        assert a[i, j] == pytest.approx(expected, rel=1e-6)


def test_spectral_on_the_adjacency_graph_finds_the_quadrants(tmp_path, patchwork):
    """The default (RAG) affinity: scikit-learn on the precomputed sparse graph, one label per quadrant."""
    path, rgb, quadrant = patchwork
    sp = SuperpixelParams(n_segments=40)
    params = ClusterParams(method="spectral", n_clusters=4, standardize=False, superpixels=sp)
    params.preprocess.percentiles = (0.0, 100.0)
    assert params.spectral_affinity == "rag"
    cluster(path, tmp_path / "sp.ome.zarr", params)
    x = rgb.astype(np.float64)
    lo, hi = x.min(axis=(1, 2), keepdims=True), x.max(axis=(1, 2), keepdims=True)
    segments = superpixels((x - lo) / (hi - lo), sp)
    _, colour = region_means(segments, (x - lo) / (hi - lo))
    graph = rag_affinity(segments, colour.astype(np.float32), 1.0)
    reference = SpectralClustering(4, affinity="precomputed", random_state=0, eigen_solver="arpack")
    ours = _labels(tmp_path / "sp.ome.zarr")
    assert adjusted_rand_score(reference.fit_predict(graph)[segments].ravel(), ours.ravel()) == pytest.approx(1.0)
    assert adjusted_rand_score(quadrant.ravel(), ours.ravel()) > 0.9


def test_dense_spectral_refuses_more_superpixels_than_it_can_hold(tmp_path, patchwork, monkeypatch):
    import zarrseg.ssl.superpixel_cluster as sc
    from zarrseg.errors import InputError

    path, _, _ = patchwork
    params = ClusterParams(method="spectral", n_clusters=4, superpixels=SuperpixelParams(n_segments=40),
                           spectral_affinity="rbf")
    monkeypatch.setattr(sc, "MAX_DENSE_SPECTRAL", 10)
    with pytest.raises(InputError, match="dense .* affinity .*cluster.spectral_affinity: rag") as err:
        cluster(path, tmp_path / "sp.ome.zarr", params)
    assert str(path) in str(err.value)
    assert not (tmp_path / "sp.ome.zarr").exists()


def test_spectral_needs_superpixels():
    with pytest.raises(ConfigError, match="spectral needs cluster.superpixels"):
        ClusterParams(method="spectral").validate()


def test_scores_per_annotator_their_mean_and_the_best(tmp_path, patchwork):
    """Two human segmentations: every metric per annotator as scikit-learn computes it, their mean, the best."""
    path, _, quadrant = patchwork
    halves = (np.arange(40)[None] >= 20).repeat(36, 0).astype(np.uint16) + 1
    gt = np.stack([quadrant.astype(np.uint16) + 1, halves])
    gt_path = write_image(tmp_path / "gt.ome.zarr", gt, "cyx", is_label=True)
    seg = (quadrant % 2 + 1).astype(np.uint16)  # left / right: right for annotator 1, merged for annotator 0
    seg_path = write_image(tmp_path / "seg.ome.zarr", seg, "yx", is_label=True)
    params = EvaluateParams(kind="clustering", metrics=["homogeneity", "completeness", "v_measure"])
    scores = evaluate_images(seg_path, [gt_path], params)
    expected = [homogeneity_completeness_v_measure(g.ravel(), seg.ravel()) for g in gt]
    for k, (h, c, v) in enumerate(expected):
        assert scores[str(k)]["v_measure"] == pytest.approx(v)
        assert scores[str(k)]["homogeneity"] == pytest.approx(h)
        assert scores[str(k)]["completeness"] == pytest.approx(c)
    assert scores["mean"]["v_measure"] == pytest.approx(np.mean([e[2] for e in expected]))
    assert scores["best"]["v_measure"] == pytest.approx(max(e[2] for e in expected)) == pytest.approx(1.0)


def _rows(method: str, sample: str, params: dict, v: float) -> list[dict]:
    return [
        {"experiment": "x", "sample": sample, "method": method, "cell": json.dumps(params), "annotator": "mean",
         "params": json.dumps(params), "metric": m, "value": v * f}
        for m, f in (("v_measure", 1.0), ("rand_index", 0.5))
    ]


def test_oracle_takes_each_samples_best_and_fixed_one_setting_chosen_on_the_selection_samples():
    rows = []
    table = {  # (beta, seed) -> V-measure per sample
        (1.0, 0): {"s1": 0.9, "s2": 0.1, "s3": 0.2},
        (1.0, 1): {"s1": 0.7, "s2": 0.3, "s3": 0.4},
        (0.1, 0): {"s1": 0.2, "s2": 0.6, "s3": 0.8},
        (0.1, 1): {"s1": 0.2, "s2": 0.4, "s3": 0.6},
    }
    for (beta, seed), per_sample in table.items():
        for sample, v in per_sample.items():
            rows += _rows("W", sample, {"wnet.beta": beta, "wnet.loop.seed": seed}, v)
    frame = pd.DataFrame(rows)
    params = SelectionParams(metric="v_measure", average=["wnet.loop.seed"], samples=["s1"])
    out = selection_table(frame, params, ["rand_index", "v_measure"]).iloc[0]
    assert out["oracle_n"] == 3 and out["oracle_v_measure"] == pytest.approx((0.9 + 0.6 + 0.8) / 3)
    assert out["oracle_rand_index"] == pytest.approx(0.5 * (0.9 + 0.6 + 0.8) / 3)  # of the same cells
    # s1 prefers beta 1 (mean over seeds 0.8 > 0.2); reported on s2, s3 averaged over the seeds
    assert json.loads(out["fixed_setting"]) == {"wnet.beta": 1.0}
    assert out["fixed_n"] == 2 and out["fixed_v_measure"] == pytest.approx((0.1 + 0.3 + 0.2 + 0.4) / 4)
