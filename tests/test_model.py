import pytest
import torch

from drat.model import GPT, NOMINAL_PARAMS, SIZES, GPTConfig, config_for

from .conftest import make_batch, make_model


@pytest.mark.parametrize("size", list(SIZES))
def test_named_sizes_match_nominal_parameter_count(size):
    with torch.device("meta"):
        model = GPT(config_for(size))
    n = model.num_params()
    assert abs(n - NOMINAL_PARAMS[size]) / NOMINAL_PARAMS[size] <= 0.15, (size, n)


def test_unknown_size_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model size 'huge'"):
        config_for("huge")


def test_config_validation():
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="mlp"):
        GPTConfig(mlp="relu")


@pytest.mark.parametrize("mlp", ["gelu", "swiglu"])
@pytest.mark.parametrize("tie", [True, False])
def test_forward_loss_is_near_log_vocab_at_init(mlp, tie):
    model = make_model(mlp=mlp, tie_weights=tie)
    assert (model.lm_head.weight is model.wte.weight) == tie
    idx, tgt = make_batch()
    loss = model(idx, tgt)
    assert loss.shape == ()
    assert abs(loss.item() - torch.log(torch.tensor(97.0)).item()) < 0.5


def test_chunked_loss_equals_unchunked_cross_entropy():
    model = make_model(loss_chunks=3)
    idx, tgt = make_batch(seq=10)
    loss = model(idx, tgt)
    x = model.embed(idx)
    for b in model.blocks:
        x = b(x)
    logits = model.lm_head(model.ln_f(x))
    ref = torch.nn.functional.cross_entropy(logits.view(-1, 97), tgt.view(-1))
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-6)


def test_ignore_index_and_generate():
    model = make_model()
    idx, tgt = make_batch()
    tgt[:, :8] = -1
    assert torch.isfinite(model(idx, tgt))
    out = model.generate(idx[:1, :4], 5, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 9)


def test_sequence_longer_than_block_size_is_rejected():
    model = make_model()
    idx = torch.zeros(1, 33, dtype=torch.long)
    with pytest.raises(ValueError, match="block_size"):
        model(idx, idx)
