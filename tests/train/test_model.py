"""The GPT decoder: shapes, causality, tied head, a sane initial loss, the KV cache of sampling."""

from __future__ import annotations

import itertools
import math

import torch
from torch.nn import functional as F

from orchestrator.train.model import GPT, KVCache, count_parameters
from orchestrator.train.schedule import WarmupCosine


def tiny(**overrides) -> GPT:
    torch.manual_seed(0)
    args = dict(vocab_size=300, context_length=16, d_model=32, n_layers=2, n_heads=4) | overrides
    return GPT(**args)


def test_logits_cover_the_vocabulary():
    assert tiny()(torch.randint(0, 300, (3, 16))).shape == (3, 16, 300)


def test_attention_is_causal():
    model = tiny().eval()
    x = torch.randint(0, 300, (1, 16))
    y = x.clone()
    y[0, 10:] = (y[0, 10:] + 1) % 300
    assert torch.allclose(model(x)[0, :10], model(y)[0, :10], atol=1e-6)
    assert not torch.allclose(model(x)[0, 10:], model(y)[0, 10:])


def test_output_head_is_tied_to_the_token_embedding():
    model = tiny()
    assert model.head.weight is model.tok_emb.weight
    untied = sum(p.numel() for p in model.parameters()) + 300 * 32
    assert count_parameters(model) == untied - 300 * 32


def test_initial_loss_is_close_to_log_vocab():
    model = tiny()
    x = torch.randint(0, 300, (8, 16))
    logits = model(x)
    loss = F.cross_entropy(logits.reshape(-1, 300), torch.randint(0, 300, (8 * 16,)))
    assert abs(loss.item() - math.log(300)) < 0.1


def test_too_long_sequence_is_refused():
    try:
        tiny()(torch.zeros(1, 17, dtype=torch.long))
    except ValueError as exc:
        assert "context_length" in str(exc)
    else:
        raise AssertionError("a 17-token input to a 16-token model was accepted")


def test_schedule_warms_up_linearly_then_anneals_to_the_floor():
    f = WarmupCosine(warmup_steps=4, total_steps=20, min_ratio=0.1)
    values = [f(s) for s in range(20)]
    assert values[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in itertools.pairwise(values[3:]))
    assert values[-1] == 0.1 and f(100) == 0.1


def test_schedule_without_warmup_starts_at_full_rate():
    assert WarmupCosine(0, 10, 0.0)(0) == 1.0


def peaky(**overrides) -> GPT:
    """A random model whose logits are far apart, so greedy choices are never near-ties."""
    model = tiny(**overrides).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(10)
    return model


def test_a_kv_cache_filled_in_pieces_gives_the_logits_of_one_full_pass():
    model = peaky()
    x = torch.randint(0, 300, (3, 16))
    with torch.no_grad():
        full = model(x)
        cache = KVCache(len(model.blocks))
        pieces = [model(x[:, :9], cache), model(x[:, 9:10], cache), model(x[:, 10:], cache)]
    assert cache.length == 16 and cache.keys[0].shape == (3, 4, 16, 8)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=0, atol=1e-4 * full.abs().max().item())


def test_a_left_padded_row_gives_the_logits_of_the_row_alone():
    model = peaky()
    short, long = torch.randint(0, 300, (1, 5)), torch.randint(0, 300, (1, 12))
    batch = torch.cat([torch.cat([torch.zeros(1, 7, dtype=torch.long), short], dim=1), long])
    valid = torch.ones(2, 12, dtype=torch.bool)
    valid[0, :7] = False
    with torch.no_grad():
        padded = model(batch, KVCache(2), valid)
        step = torch.randint(0, 300, (2, 1))
        cache = KVCache(2)
        model(batch, cache, valid)
        next_padded = model(step, cache)
        alone_cache = KVCache(2)
        alone = model(short, alone_cache)
        next_alone = model(step[:1], alone_cache)
    assert torch.isfinite(padded).all()
    torch.testing.assert_close(padded[0, 7:], alone[0], rtol=0, atol=1e-3)
    torch.testing.assert_close(padded[1], model(long)[0], rtol=0, atol=1e-3)
    torch.testing.assert_close(next_padded[0], next_alone[0], rtol=0, atol=1e-3)


def test_a_cached_position_beyond_the_context_is_refused():
    model = tiny()
    cache = KVCache(2)
    with torch.no_grad():
        model(torch.zeros(1, 16, dtype=torch.long), cache)
        try:
            model(torch.zeros(1, 1, dtype=torch.long), cache)
        except ValueError as exc:
            assert "context_length 16" in str(exc)
        else:
            raise AssertionError("position 16 of a 16-token model was accepted")
