"""Sample text from a trained run's best or latest complete checkpoint.

The ZeRO shards of every rank are consolidated with DeepSpeed's own ``zero_to_fp32`` utilities into
one fp32 state dict, loaded into the plain GPT, and sampled on the CPU (or a GPU if there is one).

    orchestrator generate quickstart-20250101-120000 --prompt "The for statement" --seed 0
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import NotFoundError


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 100
    temperature: float = 0.8  # 0: greedy
    top_k: int | None = 50
    seed: int | None = None


def generate_from_plan(plan, prompt: str, sampling: Sampling, which: str = "best") -> str:
    """Prompt plus continuation, from the best or latest complete checkpoint of a run's plan."""
    from orchestrator.train.checkpoint import best_checkpoint, latest_complete_checkpoint
    from orchestrator.train.safe_load import require_inside

    pick = best_checkpoint if which == "best" else latest_complete_checkpoint
    info = pick(plan.checkpoint_dir)
    if info is None:
        raise NotFoundError(f"run {plan.run_name} has no complete checkpoint in {plan.checkpoint_dir}")
    require_inside(info.path, plan.checkpoint_dir)  # a step-<N> link out of the run's directory
    model = load_model(plan.spec, Path(plan.checkpoint_dir), info.tag, info.zero_stage)
    return sample(model, plan.data.tokenizer_path, prompt, sampling)


def load_model(spec, run_dir: Path, tag: str, zero_stage: int):
    """The plain GPT with the checkpoint's weights, consolidated from the ZeRO shards."""
    import torch

    from orchestrator.train.model import build_model
    from orchestrator.train.safe_load import load_model_states, weights_only_loading

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # before deepspeed is imported
    if zero_stage == 0:  # no ZeRO shards: the whole module is in the model-states file
        state_dict = load_model_states(run_dir / tag / "mp_rank_00_model_states.pt")["module"]
    else:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        # stdout: its progress notes would mix with the text; weights only: no code from the files
        with contextlib.redirect_stdout(sys.stderr), weights_only_loading():
            state_dict = get_fp32_state_dict_from_zero_checkpoint(str(run_dir), tag=tag)
    model = build_model(spec.model)
    model.load_state_dict({k: v.float() for k, v in state_dict.items()}, strict=True)
    return model.eval()


def sample(model, tokenizer_path: str, prompt: str, sampling: Sampling) -> str:
    import torch
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    ids = tokenizer.encode(prompt).ids or [tokenizer.token_to_id("<|endoftext|>")]
    generator = torch.Generator().manual_seed(sampling.seed if sampling.seed is not None else torch.seed())
    tokens = torch.tensor([ids], dtype=torch.long)
    with torch.no_grad():
        for _ in range(sampling.max_new_tokens):
            logits = model(tokens[:, -model.context_length :])[0, -1].float()
            tokens = torch.cat([tokens, _next_token(logits, sampling, generator).view(1, 1)], dim=1)
    return tokenizer.decode(tokens[0].tolist())


def _next_token(logits, sampling: Sampling, generator):
    import torch

    if sampling.temperature == 0:
        return logits.argmax()
    logits = logits / sampling.temperature
    if sampling.top_k:
        kth = torch.topk(logits, min(sampling.top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)[0]
