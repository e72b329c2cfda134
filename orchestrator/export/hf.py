"""The model as a Hugging Face GPT-2 directory, and back.

This project's GPT is GPT-2's architecture (pre-norm blocks, learned positions, fused QKV with
bias, a 4x GELU MLP, a final layer norm, a head tied to the token embedding), so the export is a
mapping: a GPT-2 ``config.json``, the weights renamed (and the four linear layers of each block
transposed: ``nn.Linear`` stores (out, in), GPT-2's ``Conv1D`` (in, out)) into ``model.safetensors``,
and the BPE tokenizer as a fast tokenizer (``tokenizer.json`` byte for byte, with its special
token). ``transformers`` loads the directory with no custom code::

    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained("exported/run-hf")
    tokenizer = AutoTokenizer.from_pretrained("exported/run-hf")

Writing needs only ``safetensors``; ``transformers`` is needed to load the result.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from orchestrator.errors import UsageError

END_OF_TEXT = "<|endoftext|>"
WEIGHTS_FILE = "model.safetensors"
# ModelSpec field -> where it goes in a GPT-2 config (None: training only, nothing to export).
# A field missing here has no known GPT-2 equivalent, and the export refuses it.
GPT2_FIELDS: dict[str, str | None] = {
    "n_layers": "n_layer",
    "n_heads": "n_head",
    "d_model": "n_embd",
    "context_length": "n_positions",
    "vocab_size": "vocab_size",
    "vocab_multiple": None,  # training only: exports are at vocab_size (see weights.load_gpt)
    "dropout": "embd_pdrop, attn_pdrop, resid_pdrop",
    "tie_weights": "tie_word_embeddings",
    "activation_checkpointing": None,
    "compile": None,
}
# torch's GELU (by its `approximate` argument) -> GPT-2's activation_function
GPT2_ACTIVATIONS = {"none": "gelu", "tanh": "gelu_new"}
# (our name, GPT-2's name); {i}: the block index, {p}: weight or bias
NAME_PAIRS = [
    ("tok_emb.weight", "transformer.wte.weight"),
    ("pos_emb.weight", "transformer.wpe.weight"),
    ("blocks.{i}.ln1.{p}", "transformer.h.{i}.ln_1.{p}"),
    ("blocks.{i}.attn.qkv.{p}", "transformer.h.{i}.attn.c_attn.{p}"),
    ("blocks.{i}.attn.proj.{p}", "transformer.h.{i}.attn.c_proj.{p}"),
    ("blocks.{i}.ln2.{p}", "transformer.h.{i}.ln_2.{p}"),
    ("blocks.{i}.ffn.0.{p}", "transformer.h.{i}.mlp.c_fc.{p}"),
    ("blocks.{i}.ffn.2.{p}", "transformer.h.{i}.mlp.c_proj.{p}"),
    ("ln_f.{p}", "transformer.ln_f.{p}"),
    ("head.weight", "lm_head.weight"),
]
# GPT-2's Conv1D weights: stored transposed relative to nn.Linear
_CONV1D = re.compile(r"transformer\.h\.\d+\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight")
# GPT-2 checkpoints from elsewhere may carry the causal-mask buffers; they hold no weights
_GPT2_BUFFERS = re.compile(r"transformer\.h\.\d+\.attn\.(bias|masked_bias)")


def check_gpt2_compatible(model_spec) -> None:
    """Refuse (``UsageError``) a model spec with options GPT-2's config cannot express."""
    unknown = [name for name in type(model_spec).model_fields if name not in GPT2_FIELDS]
    if unknown:
        values = ", ".join(f"model.{name} = {getattr(model_spec, name)!r}" for name in unknown)
        raise UsageError(
            f"{values}: no equivalent in Hugging Face's GPT-2 config, so transformers could not "
            "run this model without custom code; hint: export --format safetensors keeps the "
            "weights and the spec in this project's own layout"
        )


def gpt2_config(model, model_spec, end_of_text_id: int, dtype: str = "fp32") -> dict:
    """GPT-2's ``config.json`` for this model, read from the built module where it matters (the
    activation, the MLP width, the layer-norm epsilon) so it says what the model computes."""
    check_gpt2_compatible(model_spec)
    block = model.blocks[0]
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": model.tok_emb.num_embeddings,
        "n_positions": model.context_length,
        "n_embd": model.tok_emb.embedding_dim,
        "n_layer": len(model.blocks),
        "n_head": block.attn.n_heads,
        "n_inner": block.ffn[0].out_features,
        "activation_function": _activation_name(block.ffn[1]),
        "resid_pdrop": model_spec.dropout,
        "embd_pdrop": model_spec.dropout,
        "attn_pdrop": model_spec.dropout,
        "layer_norm_epsilon": block.ln1.eps,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": model.head.weight is model.tok_emb.weight,
        "bos_token_id": end_of_text_id,
        "eos_token_id": end_of_text_id,
        "use_cache": True,
        "torch_dtype": {"fp32": "float32", "bf16": "bfloat16"}[dtype],
    }


def _activation_name(module) -> str:
    from torch import nn

    if isinstance(module, nn.GELU) and module.approximate in GPT2_ACTIVATIONS:
        return GPT2_ACTIVATIONS[module.approximate]
    raise UsageError(f"the MLP activation {module!r} has no GPT-2 activation_function equivalent")


def to_gpt2_state_dict(model) -> dict:
    """The model's weights under GPT-2's names and layouts (a tied head is stored once, as wte)."""
    tied = model.head.weight is model.tok_emb.weight
    weights = {k: v for k, v in model.state_dict().items() if not (tied and k == "head.weight")}
    mapped = _renamed(weights, [(_pattern(ours), theirs) for ours, theirs in NAME_PAIRS], "GPT-2")
    return {k: v.t().contiguous() if _CONV1D.fullmatch(k) else v.contiguous() for k, v in mapped.items()}


def from_gpt2_state_dict(weights: dict, tied: bool) -> dict:
    """GPT-2 weights under this project's names and layouts (the inverse of ``to_gpt2_state_dict``)."""
    weights = {k: v.t() if _CONV1D.fullmatch(k) else v for k, v in weights.items()}
    weights = {k: v for k, v in weights.items() if not _GPT2_BUFFERS.fullmatch(k)}
    ours = _renamed(weights, [(_pattern(theirs), ours) for ours, theirs in NAME_PAIRS], "this model")
    if tied:
        ours["head.weight"] = ours["tok_emb.weight"]
    return ours


def _pattern(template: str) -> re.Pattern:
    escaped = re.escape(template)
    escaped = escaped.replace(re.escape("{i}"), r"(?P<i>\d+)").replace(re.escape("{p}"), "(?P<p>weight|bias)")
    return re.compile(escaped)


def _renamed(weights: dict, table, target: str) -> dict:
    renamed, unmapped = {}, []
    for name, tensor in weights.items():
        for pattern, replacement in table:
            match = pattern.fullmatch(name)
            if match:
                renamed[replacement.format(**match.groupdict())] = tensor
                break
        else:
            unmapped.append(name)
    if unmapped:
        raise UsageError(f"weights with no place in {target}: {', '.join(unmapped)}")
    return renamed


def write_hf_directory(
    model, model_spec, tokenizer_path: str | Path, out_dir: str | Path, dtype: str = "fp32"
) -> list[Path]:
    """Write ``config.json``, ``generation_config.json``, ``model.safetensors`` and the tokenizer
    files into ``out_dir``; returns the paths written."""
    from orchestrator.export.tensors import cast_weights, save_weights

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    end_of_text, end_of_text_id = _end_of_text(tokenizer_path)
    config = gpt2_config(model, model_spec, end_of_text_id, dtype)
    weights = cast_weights(to_gpt2_state_dict(model), dtype)
    written = [
        _write_json(out / "config.json", config),
        _write_json(
            out / "generation_config.json",
            {"bos_token_id": end_of_text_id, "eos_token_id": end_of_text_id, "pad_token_id": end_of_text_id},
        ),
        save_weights(weights, out / WEIGHTS_FILE),
    ]
    return written + write_tokenizer_files(tokenizer_path, out, model.context_length, end_of_text)


def write_tokenizer_files(
    tokenizer_path: str | Path, out_dir: Path, context_length: int, end_of_text: str = END_OF_TEXT
) -> list[Path]:
    """The run's tokenizer as a fast tokenizer: ``tokenizer.json`` byte for byte the one training used
    (trained here, or the pretrained one the spec named), ``tokenizer_config.json`` and
    ``special_tokens_map.json`` naming its end-of-text token, which GPT-2 uses as beginning, end,
    padding and unknown token alike."""
    special = {name: end_of_text for name in ("bos_token", "eos_token", "unk_token", "pad_token")}
    tokenizer_json = out_dir / "tokenizer.json"
    shutil.copyfile(tokenizer_path, tokenizer_json)
    config = {
        # the generic fast tokenizer loads tokenizer.json as it is, in transformers 4 and 5 alike
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special,
        "model_max_length": context_length,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
    }
    return [
        tokenizer_json,
        _write_json(out_dir / "tokenizer_config.json", config),
        _write_json(out_dir / "special_tokens_map.json", special),
    ]


def load_hf_directory(directory: str | Path):
    """(GPT in eval mode, tokenizer.json path) from a GPT-2 directory this project's model can run:
    an ``export --format hf`` output, or any GPT-2 checkpoint with the same activation."""
    from orchestrator.export.tensors import load_weights
    from orchestrator.train.model import GPT

    root = Path(directory)
    config = json.loads((root / "config.json").read_text())
    _check_runnable(config, root)
    tied = bool(config.get("tie_word_embeddings", True))
    model = GPT(
        config["vocab_size"],
        config["n_positions"],
        config["n_embd"],
        config["n_layer"],
        config["n_head"],
        tie_weights=tied,
    )
    weights = from_gpt2_state_dict(load_weights(root / WEIGHTS_FILE), tied)
    try:
        model.load_state_dict({k: v.float() for k, v in weights.items()}, strict=True)
    except RuntimeError as exc:
        raise UsageError(f"{root / WEIGHTS_FILE} does not fit its config.json: {exc}") from None
    tokenizer = root / "tokenizer.json"
    if not tokenizer.is_file():
        raise UsageError(f"{root} has no tokenizer.json (a fast tokenizer); hint: export it again")
    return model.eval(), tokenizer


def _check_runnable(config: dict, root: Path) -> None:
    """What this project's GPT computes: refuse a GPT-2 config that asks for anything else."""
    n_embd = config.get("n_embd")
    expected = {
        "model_type": "gpt2",
        "activation_function": "gelu",
        "layer_norm_epsilon": 1e-5,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "n_inner": None if n_embd is None else 4 * n_embd,
    }
    differ = []
    for key, want in expected.items():
        got = config.get(key, want if key != "model_type" else None)
        if key == "n_inner" and got is None:
            continue  # GPT-2's default: 4 x n_embd
        if got != want:
            differ.append(f"{key} is {got!r}, this model computes {want!r}")
    if differ:
        raise UsageError(f"{root / 'config.json'}: {'; '.join(differ)}")


def _end_of_text(tokenizer_path: str | Path) -> tuple[str, int]:
    """The token (and id) that ends a document, as preparation chose it."""
    from tokenizers import Tokenizer

    from orchestrator.data.tokenizer import TokenizerError, end_of_text_token

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    try:
        token = end_of_text_token(tokenizer)
    except TokenizerError:
        raise UsageError(f"{tokenizer_path} has no end-of-text token") from None
    return token, tokenizer.token_to_id(token)


def _write_json(path: Path, content: dict) -> Path:
    path.write_text(json.dumps(content, indent=2) + "\n")
    return path
