"""A GPT decoder small enough to read in one sitting.

Token and position embeddings, pre-norm blocks of causal self-attention (PyTorch SDPA) and a GELU
FFN, a final layer norm and an output head (tied to the token embedding unless told otherwise);
activation checkpointing recomputes each block in backward when asked.

Sampling passes a ``KVCache``: each block then appends the new tokens' keys and values to it and
attends to everything cached, so a new token costs one position instead of the whole context. Rows
of a batch may be left-padded (``valid`` False): positions and the attention mask come from
``valid``, so every row sees exactly its own tokens at positions 0, 1, ... Training never passes a
cache and runs the code it always ran.

>>> import torch
>>> model = GPT(vocab_size=300, context_length=16, d_model=32, n_layers=2, n_heads=4)
>>> model(torch.zeros(2, 16, dtype=torch.long)).shape
torch.Size([2, 16, 300])
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.dropout = dropout
        self.resid_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, kv: LayerCache | None = None) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_heads, c // self.n_heads).transpose(1, 2) for z in (q, k, v))
        if kv is None:
            # SDPA picks flash / memory-efficient kernels where the device has them.
            y = F.scaled_dot_product_attention(
                q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
            )
        else:  # sampling: the new queries also attend to every cached key
            k, v = kv.extend(k, v)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=kv.attend.mask, is_causal=kv.attend.causal)
        return self.resid_drop(self.proj(y.transpose(1, 2).reshape(b, t, c)))


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads, dropout)
        self.ln2 = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(
            nn.Linear(d_model, 4 * d_model),
            nn.GELU(),
            nn.Linear(4 * d_model, d_model),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor, kv: LayerCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), kv)
        return x + self.ffn(self.ln2(x))


class GPT(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        context_length: int,
        d_model: int,
        n_layers: int,
        n_heads: int,
        dropout: float = 0.0,
        tie_weights: bool = True,
        activation_checkpointing: bool = False,
    ):
        super().__init__()
        self.context_length = context_length
        self.activation_checkpointing = activation_checkpointing
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = nn.Embedding(context_length, d_model)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, dropout) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        if tie_weights:
            self.head.weight = self.tok_emb.weight
        self.apply(_init_weights)
        # GPT-2's scaled init of residual projections keeps the residual stream's variance flat.
        for name, param in self.named_parameters():
            if name.endswith(("attn.proj.weight", "ffn.2.weight")):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * n_layers))

    def forward(
        self, idx: torch.Tensor, cache: KVCache | None = None, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits of every position. With a ``cache`` (sampling only): ``idx`` holds the tokens
        after those already cached, ``valid`` (same shape, bool) is False where a row is padded."""
        if cache is not None:
            return self._forward_cached(idx, cache, valid)
        t = idx.shape[1]
        if t > self.context_length:
            raise ValueError(f"sequence of {t} tokens exceeds context_length {self.context_length}")
        pos = torch.arange(t, device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))
        for block in self.blocks:
            if self.activation_checkpointing and self.training:
                # Keep only block inputs; recompute the inside during backward.
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.head(self.ln_f(x))

    def _forward_cached(self, idx: torch.Tensor, cache: KVCache, valid: torch.Tensor | None) -> torch.Tensor:
        new_valid = torch.ones_like(idx, dtype=torch.bool) if valid is None else valid
        positions, attend = cache.advance(new_valid, self.context_length)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(positions))
        for index, block in enumerate(self.blocks):
            x = block(x, LayerCache(cache, index, attend))
        return self.head(self.ln_f(x))


class KVCache:
    """Keys and values of every token seen so far, per layer, and which of them are real tokens.

    Each layer's keys and values live in one buffer of ``context_length`` positions, allocated on
    first use and filled in place, so a step copies only its own token's keys and values."""

    def __init__(self, n_layers: int):
        self.keys: list[torch.Tensor | None] = [None] * n_layers  # (batch, heads, capacity, head dim)
        self.values: list[torch.Tensor | None] = [None] * n_layers
        self.valid: torch.Tensor | None = None  # (batch, tokens seen), False for padding
        self.padded = False  # some row has padding: every pass needs an explicit mask
        self.capacity = 0

    @property
    def length(self) -> int:
        return 0 if self.valid is None else self.valid.shape[1]

    def advance(self, new_valid: torch.Tensor, capacity: int) -> tuple[torch.Tensor, LayerMask]:
        """Record the next tokens: their positions (batch, new) and who may attend to whom."""
        past, new = self.length, new_valid.shape[1]
        if past + new > capacity:
            raise ValueError(f"{past + new} cached tokens exceed context_length {capacity}")
        self.capacity = capacity
        self.valid = new_valid if self.valid is None else torch.cat([self.valid, new_valid], dim=1)
        self.padded = self.padded or not bool(new_valid.all())
        if not self.padded and (past == 0 or new == 1):  # SDPA's own causal mask, or none needed
            positions = torch.arange(past, past + new, device=new_valid.device).expand(new_valid.shape[0], -1)
            return positions, LayerMask(past, None, causal=new > 1)
        # a token's position counts only the real tokens before it in its own row
        positions = (self.valid.cumsum(dim=1) - 1).clamp(min=0)[:, past:]
        keys = torch.arange(past + new, device=new_valid.device)
        queries = keys[past:, None]
        # a padding query still attends to itself: a row with nothing to attend would give NaN
        # outputs, and NaN values poison real rows' attention even where their weight is zero
        mask = ((keys <= queries) & self.valid[:, None, :]) | (keys == queries)
        return positions, LayerMask(past, mask[:, None], causal=False)


class LayerMask:
    """Where one pass's tokens start in the cache and what they attend to: an explicit boolean mask
    (batch, 1, new, all), plain causal attention (new tokens from position 0), or everything
    (one new token after unpadded ones)."""

    def __init__(self, start: int, mask: torch.Tensor | None, causal: bool):
        self.start, self.mask, self.causal = start, mask, causal


class LayerCache:
    """One layer's view of a ``KVCache`` for one forward pass."""

    def __init__(self, cache: KVCache, layer: int, attend: LayerMask):
        self.cache, self.layer, self.attend = cache, layer, attend

    def extend(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this pass's keys and values (batch, heads, new, head dim); return all so far."""
        cache, i = self.cache, self.layer
        if cache.keys[i] is None:
            batch, heads, _, head_dim = k.shape
            cache.keys[i] = k.new_empty(batch, heads, cache.capacity, head_dim)
            cache.values[i] = v.new_empty(batch, heads, cache.capacity, head_dim)
        end = self.attend.start + k.shape[2]
        cache.keys[i][:, :, self.attend.start : end] = k
        cache.values[i][:, :, self.attend.start : end] = v
        return cache.keys[i][:, :, :end], cache.values[i][:, :, :end]


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)


def trim_vocab(model: GPT, vocab_size: int) -> GPT:
    """The model with its embedding and head cut to the first ``vocab_size`` tokens (in place): the
    rows a padded vocabulary added are no token of the tokenizer, and were never a target, so a
    sampler or an exported model must not see them."""
    if model.tok_emb.num_embeddings == vocab_size:
        return model
    tied = model.head.weight is model.tok_emb.weight
    d_model = model.tok_emb.embedding_dim
    embedding = nn.Embedding(vocab_size, d_model)
    embedding.weight = nn.Parameter(model.tok_emb.weight.detach()[:vocab_size].clone())
    head = nn.Linear(d_model, vocab_size, bias=False)
    head.weight = embedding.weight if tied else nn.Parameter(model.head.weight.detach()[:vocab_size].clone())
    model.tok_emb, model.head = embedding, head
    return model


def count_parameters(model: nn.Module) -> int:
    """Parameters counted once, even where tied."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def build_model(model_spec) -> GPT:
    """The GPT a ``ModelSpec`` describes, its embedding and head at the padded vocabulary
    (``model.vocab_multiple``; ``trim_vocab`` gives the model at the tokenizer's size)."""
    from orchestrator.plan.flops import padded_vocab

    m = model_spec
    return GPT(
        padded_vocab(m),
        m.context_length,
        m.d_model,
        m.n_layers,
        m.n_heads,
        m.dropout,
        tie_weights=m.tie_weights,
        activation_checkpointing=m.activation_checkpointing,
    )
