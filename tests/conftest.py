import pytest
import torch

from drat.model import GPT, GPTConfig


def make_model(seed: int = 0, **kw) -> GPT:
    base = dict(vocab_size=97, block_size=32, n_layer=2, n_head=4, n_embd=32, loss_chunks=4)
    base.update(kw)
    torch.manual_seed(seed)
    return GPT(GPTConfig(**base))


def make_batch(vocab: int = 97, batch: int = 2, seq: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, vocab, (batch, seq), generator=g)
    tgt = torch.randint(0, vocab, (batch, seq), generator=g)
    return idx, tgt


@pytest.fixture(autouse=True)
def _deterministic_threads():
    # bitwise comparisons need the same reduction order in every run of a test
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
