"""Sample text from a trained run's checkpoint or from an exported directory.

The model comes from a run's best or latest complete checkpoint (ZeRO shards consolidated with
DeepSpeed's own utilities, see ``orchestrator.export.weights``), or from a directory that
``orchestrator export`` wrote (``--format hf`` or ``safetensors``). Sampling keeps a KV cache, so
each new token costs one position, takes several prompts at once (left-padded; each row sees only
its own tokens), and can hand every piece of text to a callback as soon as it is decoded.

    orchestrator generate quickstart-20250101-120000 --prompt "The for statement" --seed 0

>>> loaded = load_from_directory("exported/quickstart-hf")  # doctest: +SKIP
>>> greedy = Sampling(max_new_tokens=20, temperature=0)
>>> generate_texts(loaded, ["The for", "A class"], greedy)  # doctest: +SKIP
['The for statement ...', 'A class ...']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from orchestrator.errors import NotFoundError

END_OF_TEXT = "<|endoftext|>"
# a piece of text held back this many tokens at most while it ends inside a UTF-8 character
_MAX_PENDING_TOKENS = 8


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 100
    temperature: float = 0.8  # 0: greedy
    top_k: int | None = 50
    seed: int | None = None
    stop_at_end_of_text: bool = False  # a row ends when it samples <|endoftext|>


@dataclass(frozen=True)
class LoadedModel:
    """A GPT in eval mode and the path of its tokenizer.json: everything sampling needs."""

    model: object  # orchestrator.train.model.GPT
    tokenizer_path: Path
    source: str  # what it was loaded from, for messages


TextCallback = Callable[[int, str], None]  # (prompt index, newly decoded text)


def load_from_run(
    spec,
    checkpoint_dir: str | Path,
    tokenizer_path: str | Path,
    which: str = "best",
    trust_checkpoint: bool = False,
) -> LoadedModel:
    """The run's model from its `which` (best|latest) complete checkpoint, as a ``LoadedModel``
    (``trust_checkpoint``: see ``orchestrator.export.weights.consolidated_state_dict``)."""
    from orchestrator.export.weights import consolidated_state_dict, load_gpt, pick_checkpoint

    info = pick_checkpoint(checkpoint_dir, which)  # inside the run's own location, on this machine
    model = load_gpt(spec.model, consolidated_state_dict(info, trust_checkpoint))
    return LoadedModel(model, Path(tokenizer_path), f"{info.path} ({which})")


def load_from_directory(directory: str | Path) -> LoadedModel:
    """A model exported by ``orchestrator export`` (hf: config.json; safetensors: model_spec.json)."""
    from orchestrator.export.hf import load_hf_directory
    from orchestrator.export.tensors import SPEC_FILE, load_safetensors_directory

    root = Path(directory)
    if (root / "config.json").is_file():
        model, tokenizer_path = load_hf_directory(root)
    elif (root / SPEC_FILE).is_file():
        model, tokenizer_path = load_safetensors_directory(root)
    else:
        raise NotFoundError(
            f"{root} holds neither config.json (a Hugging Face export) nor {SPEC_FILE} (a safetensors "
            "export); hint: point at the --out directory of `orchestrator export`"
        )
    return LoadedModel(model, tokenizer_path, str(root))


def generate_texts(
    loaded: LoadedModel,
    prompts: Sequence[str],
    sampling: Sampling,
    on_text: TextCallback | None = None,
    use_cache: bool = True,
) -> list[str]:
    """Each prompt plus its continuation. ``on_text(i, piece)`` receives prompt i's new text as it is
    produced (pieces never split a character); the returned texts are the whole decodes."""
    from tokenizers import Tokenizer

    from orchestrator.data.tokenizer import end_of_text_token

    tokenizer = Tokenizer.from_file(str(loaded.tokenizer_path))
    end_of_text = tokenizer.token_to_id(end_of_text_token(tokenizer))  # the one preparation used
    ids = [tokenizer.encode(prompt).ids or [end_of_text] for prompt in prompts]
    streams = [TextStream(tokenizer, i, on_text) for i in range(len(ids))] if on_text else []
    on_token = (lambda row, token: streams[row].push(token)) if on_text else None
    stop = end_of_text if sampling.stop_at_end_of_text else None
    new = generate_ids(loaded.model, ids, sampling, on_token, stop_token=stop, use_cache=use_cache)
    for stream in streams:
        stream.flush()
    return [tokenizer.decode(prompt + more) for prompt, more in zip(ids, new, strict=True)]


def write_generation(
    out: TextIO, loaded: LoadedModel, prompts: Sequence[str], sampling: Sampling, use_cache: bool = True
) -> list[str]:
    """What ``orchestrator generate`` shows: one prompt is written as it is produced (the prompt,
    then each new piece, flushed); several are sampled as one batch and written one after another,
    each under a ``[i]`` header. Returns the texts."""
    if len(prompts) == 1:
        out.write(prompts[0])
        out.flush()

        def show(_row: int, piece: str) -> None:
            out.write(piece)
            out.flush()

        texts = generate_texts(loaded, prompts, sampling, show, use_cache)
        out.write("\n")
        return texts
    texts = generate_texts(loaded, prompts, sampling, use_cache=use_cache)
    for index, text in enumerate(texts):
        out.write(f"[{index}] {text}\n")
    return texts


def generate_ids(
    model,
    prompts: Sequence[Sequence[int]],
    sampling: Sampling,
    on_token: Callable[[int, int], None] | None = None,
    stop_token: int | None = None,
    use_cache: bool = True,
) -> list[list[int]]:
    """The new token ids of each prompt (a batch, left-padded). Without ``use_cache`` every token
    recomputes the whole context, as a model without a cache must; both give the same tokens."""
    import torch

    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    tokens, valid = _left_pad(prompts)
    generator = torch.Generator().manual_seed(sampling.seed if sampling.seed is not None else torch.seed())
    done = torch.zeros(len(prompts), dtype=torch.bool)
    new: list[list[int]] = [[] for _ in prompts]
    cache = None
    with torch.no_grad():
        for _ in range(sampling.max_new_tokens):
            logits, cache = _next_logits(model, tokens, valid, cache, use_cache)
            chosen = _next_token(logits.float(), sampling, generator)
            tokens = torch.cat([tokens, chosen[:, None]], dim=1)
            valid = torch.cat([valid, torch.ones_like(chosen, dtype=torch.bool)[:, None]], dim=1)
            _record(chosen, done, new, on_token)
            if stop_token is not None:
                done |= chosen == stop_token
                if bool(done.all()):
                    break
    return new


def _left_pad(prompts: Sequence[Sequence[int]]):
    """(tokens, valid): prompts right-aligned in one tensor, ``valid`` False on the padding."""
    import torch

    width = max(len(p) for p in prompts)
    tokens = torch.zeros(len(prompts), width, dtype=torch.long)
    valid = torch.zeros(len(prompts), width, dtype=torch.bool)
    for row, prompt in enumerate(prompts):
        tokens[row, width - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long)
        valid[row, width - len(prompt) :] = True
    return tokens, valid


def _next_logits(model, tokens, valid, cache, use_cache: bool):
    """Logits of every row's next token, and the cache for the step after (None: none).

    The model has learned absolute positions, so once a sequence outgrows the context the window
    of the last ``context_length`` tokens moves by one each step and every position in it shifts:
    from then on the whole window is recomputed, exactly as without a cache."""
    from orchestrator.train.model import KVCache

    context = model.context_length
    if use_cache and tokens.shape[1] <= context:
        if cache is None:  # the prompts: one pass fills the cache
            cache = KVCache(len(model.blocks))
            return model(tokens, cache, valid)[:, -1], cache
        return model(tokens[:, -1:], cache, valid[:, -1:])[:, -1], cache
    window, window_valid = tokens[:, -context:], valid[:, -context:]
    if bool(window_valid.all()):  # nothing padded: the plain forward pass
        return model(window)[:, -1], None
    return model(window, KVCache(len(model.blocks)), window_valid)[:, -1], None


def _next_token(logits, sampling: Sampling, generator):
    """One token per row: the argmax at temperature 0, else a draw from the top-k softmax."""
    import torch

    if sampling.temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / sampling.temperature
    if sampling.top_k:
        kth = torch.topk(logits, min(sampling.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)[:, 0]


def _record(chosen, done, new: list[list[int]], on_token) -> None:
    for row, token in enumerate(chosen.tolist()):
        if not bool(done[row]):
            new[row].append(token)
            if on_token is not None:
                on_token(row, token)


class TextStream:
    """Turns one prompt's new tokens into text pieces as they come.

    Byte-level BPE tokens may end inside a UTF-8 character; such a token is held back (a few at
    most) until the character is complete, so a piece never shows a replacement character that the
    final text does not have."""

    def __init__(self, tokenizer, row: int, on_text: TextCallback):
        self.tokenizer, self.row, self.on_text = tokenizer, row, on_text
        self.pending: list[int] = []

    def push(self, token: int) -> None:
        self.pending.append(token)
        text = self.tokenizer.decode(self.pending)
        if text.endswith("\ufffd") and len(self.pending) < _MAX_PENDING_TOKENS:
            return
        self._emit(text)

    def flush(self) -> None:
        if self.pending:
            self._emit(self.tokenizer.decode(self.pending))

    def _emit(self, text: str) -> None:
        self.pending = []
        if text:
            self.on_text(self.row, text)
