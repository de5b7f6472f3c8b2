"""The ICL score against an independent computation and known cases."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import LargestTensor, assert_close, build_induction_model, save_tiny_hf_gpt2

from induction.loading.models import load_model
from induction.loading.native import boot_native, native_config
from induction.measures import losses
from induction.measures.icl import ICLDataError, icl_positions, icl_score
from induction.measures.losses import losses_at, per_token_loss


def test_positions_follow_olsson_and_scale():
    assert icl_positions(512) == (50, 500)
    assert icl_positions(128) == (12, 125)
    early, late = icl_positions(8)
    assert 1 <= early < late <= 7


def test_icl_score_matches_direct_cross_entropy():
    model = build_induction_model()
    tokens = torch.randint(1, 24, (5, 48))
    tokens[:, 0] = 0
    res = icl_score(model, tokens=tokens, n_bootstrap=0)
    early, late = icl_positions(48)
    with torch.no_grad():
        logp = model(tokens).log_softmax(-1)
    expect = [(-logp[b, late - 1, tokens[b, late]] + logp[b, early - 1, tokens[b, early]]).item() for b in range(5)]
    assert_close(res.score, sum(expect) / 5, atol=1e-5)
    assert (res.early_pos, res.late_pos) == (early, late)


def test_handbuilt_learns_in_context_and_random_model_does_not():
    good = icl_score(build_induction_model(), n_sequences=32, n_bootstrap=200)
    assert good.score < -2.0 and good.ci[1] < 0  # the induction head predicts repeats
    flat = boot_native(native_config(n_layers=1, d_model=32, n_ctx=48, d_vocab=24, seed=0))
    for p in flat.parameters():
        p.data.zero_()  # uniform predictions: the same loss everywhere
    res = icl_score(flat, n_sequences=8, n_bootstrap=0)
    assert abs(res.score) < 1e-6 and abs(res.late_loss - math.log(24)) < 1e-5


def test_text_file_needs_a_tokenizer_and_is_windowed(tmp_path):
    with pytest.raises(ICLDataError, match="no tokenizer"):
        icl_score(build_induction_model(), text=tmp_path / "t.txt")
    save_tiny_hf_gpt2(tmp_path / "gpt2")
    model = load_model(tmp_path / "gpt2")
    (tmp_path / "t.txt").write_text(" ".join(f"w{i % 50}" for i in range(1000)))
    res = icl_score(model, text=tmp_path / "t.txt", n_sequences=4, seq_len=32, n_bootstrap=0)
    assert res.n_sequences == 4 and res.seq_len == 32 and "text file" in res.data
    with pytest.raises(ICLDataError, match="exceeds the model's context"):
        icl_score(model, text=tmp_path / "t.txt", seq_len=100)


@pytest.fixture(scope="module")
def big_vocab_model():
    """A random model whose vocabulary dwarfs everything else, so full logits stand out."""
    model = boot_native(native_config(n_layers=1, d_model=16, n_heads=2, n_ctx=64, d_vocab=4096, seed=0,
                                      normalization_type="LN"))
    return model.eval()


@pytest.mark.parametrize("batch_size", [None, 1, 3])
def test_losses_at_equals_the_full_loss_layout(batch_size, tmp_path):
    save_tiny_hf_gpt2(tmp_path / "gpt2", with_tokenizer=False)
    for model in (build_induction_model(), load_model(tmp_path / "gpt2")):
        tokens = torch.randint(1, 24, (5, 40))
        tokens[:, 0] = 0
        full = per_token_loss(model, tokens, batch_size=2)
        for positions in ([4, 39], [1], [30, 7, 12]):
            got = losses_at(model, tokens, positions, batch_size=batch_size)
            assert_close(got, full[:, positions], atol=1e-5, msg=str(positions))
    with pytest.raises(ValueError, match="position 0 has no loss"):
        losses_at(model, tokens, [0, 3])


def test_icl_score_forms_no_full_logits(big_vocab_model):
    """The ICL score unembeds two positions: no [batch, pos, d_vocab] tensor, same score as the full layout."""
    n, seq, vocab = 8, 64, 4096
    tokens = torch.randint(1, vocab, (n, seq))
    with LargestTensor() as probe:
        res = icl_score(big_vocab_model, tokens=tokens, n_bootstrap=0)
    assert probe.numel <= max(n * 2 * 2 * 64 * 64, 3 * n * 2 * vocab, 16 * vocab) < n * seq * vocab // 4, probe.shape
    early, late = icl_positions(seq)
    full = per_token_loss(big_vocab_model, tokens)
    assert_close(res.score, float((full[:, late] - full[:, early]).mean()), atol=1e-5)


def test_per_token_loss_batches_fit_the_memory_budget(big_vocab_model, monkeypatch):
    n, seq, vocab = 6, 64, 4096
    tokens = torch.randint(1, vocab, (n, seq))
    whole = per_token_loss(big_vocab_model, tokens, batch_size=n)
    per_sequence = 4 * (4 * 2 * seq * seq + 3 * seq * vocab)
    monkeypatch.setattr(losses, "FORWARD_BUDGET_BYTES", 2 * per_sequence)  # two sequences per forward
    with LargestTensor() as probe:
        split = per_token_loss(big_vocab_model, tokens)
    assert probe.numel <= 2 * seq * vocab < n * seq * vocab, probe.shape
    assert split[:, 0].isnan().all()
    assert_close(split[:, 1:], whole[:, 1:], atol=1e-5)
