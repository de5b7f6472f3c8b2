"""Composition scores: a slow FactoredMatrix loop, TL's own scores, a hand-built circuit, chance."""

import math

import pytest
import torch
from test_circuits_models import native_model, single_thread  # noqa: F401 (autouse fixture)
from transformer_lens import FactoredMatrix

import circuits


def slow_scores(model):
    """Elhage et al.'s ratio for every pair, one FactoredMatrix product at a time."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    W_Q, W_K, W_V, W_O = (w.detach().double() for w in (model.W_Q, model.W_K, model.W_V, model.W_O))
    out = {m: torch.full((n_layers, n_heads, n_layers, n_heads), float("nan")) for m in "qkv"}
    for ld in range(n_layers):
        for hd in range(n_heads):
            QK = FactoredMatrix(W_Q[ld, hd], W_K[ld, hd].T)
            OV_dst = FactoredMatrix(W_V[ld, hd], W_O[ld, hd])
            for ls in range(ld):
                for hs in range(n_heads):
                    OV = FactoredMatrix(W_V[ls, hs], W_O[ls, hs])
                    for mode, right in (("q", QK), ("k", QK.T), ("v", OV_dst)):
                        ratio = (OV @ right).norm() / (OV.norm() * right.norm())
                        out[mode][ld, hd, ls, hs] = float(ratio)
    return out


def test_scores_equal_a_slow_factored_matrix_loop():
    model = native_model(n_layers=3)
    expected = slow_scores(model)
    actual = circuits.composition_scores(model, subtract_baseline=False)
    for mode in "qkv":
        torch.testing.assert_close(
            actual[mode], expected[mode].float(), atol=1e-6, rtol=1e-5, equal_nan=True
        )
        # Earlier-to-later pairs only: 3 layers of 4 heads give (0+1+2) * 16 pairs.
        assert int((~torch.isnan(actual[mode])).sum()) == 48


def test_scores_equal_transformer_lens_all_composition_scores():
    """TL orders [layer_src, head_src, layer_dst, head_dst] and puts 0 where we put NaN."""
    model = native_model(n_layers=3)
    actual = circuits.composition_scores(model, subtract_baseline=False)
    for mode in "qkv":
        tl = model.all_composition_scores(mode.upper()).scores.permute(2, 3, 0, 1)
        valid = ~torch.isnan(actual[mode])
        torch.testing.assert_close(actual[mode][valid], tl[valid].float(), atol=1e-5, rtol=1e-4)


def test_a_hand_built_q_composition():
    """Head (0, 0) copies dims 0:16 to 16:32; head (1, 0) queries with 16:32, keys with 32:48,
    values from 48:64. Its queries read what (0, 0) writes, nothing else does: raw Q-score
    1/sqrt(d_head) (the maximum for rank-d_head isometries), K- and V-scores exactly 0."""
    model = native_model()
    eye = torch.eye(16)
    with torch.no_grad():
        src, dst = model.blocks[0].attn, model.blocks[1].attn
        src.v.weight[0:16] = 0
        src.v.weight[0:16, 0:16] = eye  # W_V[0, 0]: reads dims 0:16
        src.o.weight[:, 0:16] = 0
        src.o.weight[16:32, 0:16] = eye  # W_O[0, 0]: writes dims 16:32
        for proj, dims in ((dst.q, slice(16, 32)), (dst.k, slice(32, 48)), (dst.v, slice(48, 64))):
            proj.weight[0:16] = 0
            proj.weight[0:16, dims] = eye
    raw = circuits.composition_scores(model, subtract_baseline=False)
    assert raw["q"][1, 0, 0, 0].item() == pytest.approx(1 / math.sqrt(16), abs=1e-6)
    assert raw["k"][1, 0, 0, 0].item() == pytest.approx(0, abs=1e-6)
    assert raw["v"][1, 0, 0, 0].item() == pytest.approx(0, abs=1e-6)
    # That is far above chance, and the other source heads are at chance.
    scores = circuits.composition_scores(model)
    assert scores["q"][1, 0, 0, 0] > 10 * scores["q"][1, 0, 0, 1:].abs().max()


def test_baseline_makes_random_heads_score_about_zero():
    """Native init draws i.i.d. Gaussian weights: exactly the baseline's model of chance."""
    model = native_model(n_layers=4, n_heads=8, d_model=128, seed=3)
    scores = circuits.composition_scores(model)
    raw = circuits.composition_scores(model, subtract_baseline=False)
    baseline = circuits.composition_baseline(128, 16)
    for mode in "qkv":
        valid = scores[mode][~torch.isnan(scores[mode])]
        raw_valid = raw[mode][~torch.isnan(raw[mode])]
        assert abs(float(valid.mean())) < 0.1 * float(raw_valid.mean())
        torch.testing.assert_close(valid, raw_valid - baseline[mode], atol=1e-6, rtol=0)
    # Chance is not zero: ||A B|| ~ ||A|| ||B|| / sqrt(d_model) for random A, B, so about
    # 1 / sqrt(d_model) for Q, K and V alike.
    for mode in "qkv":
        assert baseline[mode] == pytest.approx(1 / math.sqrt(128), rel=0.05)
    assert circuits.composition_baseline(128, 16, seed=1)["q"] == pytest.approx(baseline["q"], rel=0.05)
