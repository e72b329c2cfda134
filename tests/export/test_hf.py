"""The Hugging Face export: transformers loads it with no custom code and computes the same logits
and greedy tokens as the project's model; the tokenizer encodes exactly as training did; options
GPT-2 cannot express are refused; a planted pickle payload never runs."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from orchestrator.data.corpus import load_corpus
from orchestrator.data.dataset import TokenDataset
from orchestrator.data.tokenizer import END_OF_TEXT
from orchestrator.errors import UsageError
from orchestrator.export import export_run
from orchestrator.export.hf import check_gpt2_compatible, to_gpt2_state_dict, write_hf_directory
from orchestrator.export.weights import STAGE0_MODEL_FILE, pick_checkpoint
from orchestrator.generate import Sampling, generate_ids, load_from_directory, load_from_run
from orchestrator.spec.models import ModelSpec
from orchestrator.text import printable
from orchestrator.train.model import build_model
from tests.export.helpers import small_tokenizer

transformers = pytest.importorskip("transformers")


def hf_model(directory):
    return transformers.AutoModelForCausalLM.from_pretrained(directory).eval()


def validation_batch(plan, rows: int = 8) -> torch.Tensor:
    data = TokenDataset.open(plan.data.dataset_uri, plan.data.manifest_digest, plan.spec.model.context_length)
    return torch.from_numpy(data.rows("val", range(rows))[:, :-1])


def random_model(tie: bool):
    torch.manual_seed(0)
    spec = ModelSpec(n_layers=2, n_heads=2, d_model=32, context_length=32, vocab_size=300, tie_weights=tie)
    model = build_model(spec).eval()
    with torch.no_grad():  # spread the logits so that greedy choices are never near-ties
        for param in model.parameters():
            param.mul_(5)
    return spec, model


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    return small_tokenizer(tmp_path_factory.mktemp("tok"))


# -- the mapping, on random weights (fast) ---------------------------------------------------------


@pytest.mark.parametrize("tie", [True, False])
def test_a_padded_vocabulary_is_cut_to_the_tokenizer_s_size_on_export(tmp_path, tokenizer_path, tie):
    """model.vocab_multiple: the training model has 320 rows for a 300-token tokenizer; every export
    (and sampling, through the same loader) has the tokenizer's 300, with the same logits there."""
    from orchestrator.export.tensors import load_safetensors_directory, write_safetensors_directory
    from orchestrator.export.weights import load_gpt

    torch.manual_seed(0)
    spec = ModelSpec(
        n_layers=2, n_heads=2, d_model=32, context_length=32, vocab_size=300, tie_weights=tie,
        vocab_multiple=64,
    )  # fmt: skip
    padded = build_model(spec).eval()
    assert padded.head.out_features == 320
    model = load_gpt(spec, padded.state_dict())  # what export and generate load from a checkpoint
    assert model.tok_emb.num_embeddings == model.head.out_features == 300
    assert (model.head.weight is model.tok_emb.weight) == tie
    ids = torch.randint(0, 300, (2, 16))
    with torch.no_grad():
        expected = padded(ids)[..., :300]
        torch.testing.assert_close(model(ids), expected)
    write_hf_directory(model, spec, tokenizer_path, tmp_path / "hf")
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["vocab_size"] == 300
    with torch.no_grad():
        torch.testing.assert_close(hf_model(tmp_path / "hf")(ids).logits, expected, atol=1e-5, rtol=1e-5)
    write_safetensors_directory(model, spec, tokenizer_path, tmp_path / "st", "fp32", {})
    loaded, _ = load_safetensors_directory(tmp_path / "st")
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), expected)


@pytest.mark.parametrize("tie", [True, False])
def test_transformers_computes_the_same_logits_tied_or_untied(tmp_path, tokenizer_path, tie):
    spec, model = random_model(tie)
    write_hf_directory(model, spec, tokenizer_path, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["activation_function"] == "gelu"  # torch's exact-erf nn.GELU(), not gelu_new
    assert (config["model_type"], config["n_positions"], config["tie_word_embeddings"]) == ("gpt2", 32, tie)
    theirs = hf_model(tmp_path)
    assert type(theirs).__name__ == "GPT2LMHeadModel"
    tied = theirs.lm_head.weight.data_ptr() == theirs.transformer.wte.weight.data_ptr()
    assert tied == tie
    x = torch.randint(0, 300, (4, 32))
    with torch.no_grad():
        torch.testing.assert_close(theirs(x).logits, model(x), rtol=0, atol=1e-5)


def test_the_directory_loads_back_into_the_project_model(tmp_path, tokenizer_path):
    spec, model = random_model(False)
    write_hf_directory(model, spec, tokenizer_path, tmp_path)
    loaded = load_from_directory(tmp_path)
    x = torch.randint(0, 300, (2, 32))
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))
    assert loaded.tokenizer_path.read_bytes() == tokenizer_path.read_bytes()


def test_bf16_export_writes_bf16_weights(tmp_path, tokenizer_path):
    from safetensors.torch import load_file

    spec, model = random_model(True)
    write_hf_directory(model, spec, tokenizer_path, tmp_path, dtype="bf16")
    weights = load_file(tmp_path / "model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.bfloat16}
    assert json.loads((tmp_path / "config.json").read_text())["torch_dtype"] == "bfloat16"
    with torch.no_grad():
        x = torch.randint(0, 300, (2, 32))
        assert (hf_model(tmp_path)(x).logits.float() - model(x)).abs().max() < 0.5


def test_a_spec_option_gpt2_cannot_express_is_refused_by_name():
    class FutureModelSpec(ModelSpec):
        position_encoding: str = "rotary"

    with pytest.raises(UsageError, match=r"model\.position_encoding = 'rotary': no equivalent"):
        check_gpt2_compatible(FutureModelSpec())
    check_gpt2_compatible(ModelSpec(tie_weights=False, dropout=0.1))  # everything of today maps


def test_a_weight_with_no_gpt2_place_is_refused_by_name():
    _, model = random_model(True)
    model.register_buffer("rotary_inv_freq", torch.ones(4))
    with pytest.raises(UsageError, match="rotary_inv_freq"):
        to_gpt2_state_dict(model)


def test_a_gpt2_directory_with_another_activation_is_refused(tmp_path, tokenizer_path):
    spec, model = random_model(True)
    write_hf_directory(model, spec, tokenizer_path, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config | {"activation_function": "gelu_new"}))
    with pytest.raises(UsageError, match="activation_function is 'gelu_new', this model computes 'gelu'"):
        load_from_directory(tmp_path)


# -- real runs at ZeRO 0, 2 and 3 (slow) -----------------------------------------------------------


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    """stage -> (plan, hf directory) of the best checkpoint of that stage's run."""
    out = tmp_path_factory.mktemp("hf-exports")
    results = {}
    for stage in (0, 2, 3):
        plan = trained_run(stage)
        result = export_run(
            plan.spec, plan.checkpoint_dir, plan.data.tokenizer_path, "hf", out / f"stage{stage}"
        )
        assert result.step == pick_checkpoint(plan.checkpoint_dir, "best").step
        results[stage] = (plan, result.out_dir)
    return results


@pytest.mark.slow
@pytest.mark.parametrize("stage", [0, 2, 3])
def test_transformers_matches_the_trained_model_at_every_zero_stage(exported, stage):
    plan, directory = exported[stage]
    ours = load_from_run(plan.spec, plan.checkpoint_dir, plan.data.tokenizer_path, "best").model
    theirs = hf_model(directory)
    batch = validation_batch(plan)
    with torch.no_grad():
        torch.testing.assert_close(theirs(batch).logits, ours(batch), rtol=0, atol=1e-5)
    prompts = batch[:3, :6]
    greedy = Sampling(max_new_tokens=20, temperature=0)
    with torch.no_grad():
        hf_tokens = theirs.generate(prompts, max_new_tokens=20, min_new_tokens=20, do_sample=False)
    assert generate_ids(ours, prompts.tolist(), greedy) == hf_tokens[:, 6:].tolist()


@pytest.mark.slow
def test_the_hf_tokenizer_encodes_the_corpus_exactly_as_training_did(exported):
    plan, directory = exported[2]
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    assert tokenizer.eos_token == tokenizer.bos_token == tokenizer.pad_token == END_OF_TEXT
    assert tokenizer.model_max_length == plan.spec.model.context_length
    paragraphs = [p for p in load_corpus("python-docs").split("\n\n") if p.strip()]
    encoded = tokenizer(paragraphs)["input_ids"]
    data = TokenDataset.open(plan.data.dataset_uri, plan.data.manifest_digest, plan.spec.model.context_length)
    trained = [_documents(data.manifest, split, data, tokenizer.eos_token_id) for split in ("train", "val")]
    assert sum(map(len, trained)) == len(encoded) > 2000
    # every document of either split is the exported tokenizer's encoding of the next paragraph it holds
    assert _in_order(trained[0], encoded) and _in_order(trained[1], encoded)
    ids = [i for paragraph in encoded for i in (*paragraph, tokenizer.eos_token_id)]
    assert tokenizer.decode(ids[:500], skip_special_tokens=True) == tokenizer.backend_tokenizer.decode(
        ids[:500]
    )


@pytest.mark.slow
def test_safetensors_export_holds_the_weights_and_the_spec(trained_run, tmp_path):
    plan = trained_run(2)
    result = export_run(
        plan.spec,
        plan.checkpoint_dir,
        plan.data.tokenizer_path,
        "safetensors",
        tmp_path / "st",
        which="latest",
    )
    spec = json.loads((tmp_path / "st" / "model_spec.json").read_text())
    assert spec["model"] == plan.spec.model.model_dump(mode="json") and spec["source"]["step"] == 20
    assert result.step == 20 and sorted(p.name for p in result.files) == [
        "model.safetensors", "model_spec.json", "tokenizer.json",
    ]  # fmt: skip
    ours = load_from_run(plan.spec, plan.checkpoint_dir, plan.data.tokenizer_path, "latest").model
    back = load_from_directory(tmp_path / "st").model
    batch = validation_batch(plan, 2)
    with torch.no_grad():
        assert torch.equal(back(batch), ours(batch))


class Payload:
    """Unpickling this object creates a directory: proof that the file's code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.slow
@pytest.mark.parametrize("stage", [0, 2])
def test_a_pickle_payload_planted_in_the_model_states_never_runs(trained_run, tmp_path, stage):
    plan = trained_run(stage)
    run_dir = tmp_path / "run"
    shutil.copytree(plan.checkpoint_dir, run_dir)
    target = pick_checkpoint(run_dir, "best").path / STAGE0_MODEL_FILE
    marker = tmp_path / "payload-ran"
    states = torch.load(target, weights_only=False)  # our own test file: trusted
    torch.save({**states, "payload": Payload(marker)}, target)
    torch.load(target, weights_only=False)  # the old way of loading: the payload runs
    assert marker.is_dir()
    marker.rmdir()

    for fmt, out in (("safetensors", tmp_path / "st"), ("hf", tmp_path / "hf")):
        with pytest.raises(UsageError, match=r"refusing to load a checkpoint.*posix\.mkdir.*SECURITY\.md"):
            export_run(plan.spec, run_dir, plan.data.tokenizer_path, fmt, out)
    with pytest.raises(UsageError, match="refusing to load"):
        load_from_run(plan.spec, run_dir, plan.data.tokenizer_path)
    assert not marker.exists(), "the planted payload ran"


def _documents(manifest, split: str, data, eot: int) -> list[list[int]]:
    """The documents of a split's shards (each ends with the end-of-text id)."""
    from orchestrator.data.shards import open_tokens

    documents: list[list[int]] = []
    for path in [p for p in data.opened_files if f"/{split}-" in p]:
        tokens = open_tokens(path).tolist()
        start = 0
        for index, token in enumerate(tokens):
            if token == eot:
                documents.append(tokens[start:index])
                start = index + 1
    return documents


def _in_order(documents: list[list[int]], encoded: list[list[int]]) -> bool:
    """``documents`` is a subsequence of ``encoded`` (the split keeps the corpus's order)."""
    position = 0
    for document in documents:
        while position < len(encoded) and encoded[position] != document:
            position += 1
        if position == len(encoded):
            return False
        position += 1
    return True


@pytest.mark.slow
def test_a_pretrained_tokenizer_is_trained_on_and_exported_as_it_is(tmp_path):
    """A tokenizer.json made elsewhere (its end of text is `</s>`, not `<|endoftext|>`): the data is
    tokenized with it, and the exported model's tokenizer is that file, byte for byte."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from tests.train.harness import engine_spec, make_plan, output, run_engine

    elsewhere = Tokenizer(models.BPE())
    elsewhere.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    elsewhere.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=290, special_tokens=["<pad>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    elsewhere.train_from_iterator(load_corpus("python-docs").split("\n\n")[:400], trainer=trainer)
    (tmp_path / "theirs").mkdir()
    elsewhere.save(str(tmp_path / "theirs" / "tokenizer.json"))
    spec_text = engine_spec(steps=10, interval=10, eval_interval=10) + "data: {tokenizer: {path: theirs}}\n"
    plan = make_plan(tmp_path, spec_text, "pretrained")
    assert plan.data.eot_id == elsewhere.token_to_id("</s>")
    result = run_engine(plan)
    assert result.returncode == 0, output(result)
    out = export_run(plan.spec, plan.checkpoint_uri, plan.data.tokenizer_path, "hf", tmp_path / "hf").out_dir
    assert (out / "tokenizer.json").read_bytes() == (tmp_path / "theirs" / "tokenizer.json").read_bytes()
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    assert tokenizer.eos_token == "</s>" and tokenizer.eos_token_id == elsewhere.token_to_id("</s>")
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == tokenizer.eos_token_id


GREEDY_PROMPTS = ("The for statement", "A class", "import", "Return the", "If the", "See also")


def greedy_texts(directory, prompts, new_tokens: int) -> tuple[list[str], list[str]]:
    """What transformers generates greedily from the exported directory: (each prompt's text, the
    prompts whose continuation reached <|endoftext|>)."""
    tokenizer, model = transformers.AutoTokenizer.from_pretrained(directory), hf_model(directory)
    texts, stopped = [], []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(
                **ids, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id
            )
        texts.append(tokenizer.decode(out[0], skip_special_tokens=True))
        if tokenizer.eos_token_id in out[0, ids.input_ids.shape[1] :].tolist():
            stopped.append(prompt)
    return texts, stopped


def orchestrator_generate(source: list[str], prompts, new_tokens: int, capsys) -> str:
    from orchestrator.cli import main

    argv = ["generate", *source, "--temperature", "0", "--max-new-tokens", str(new_tokens)]
    assert main([*argv, *(part for prompt in prompts for part in ("--prompt", prompt))]) == 0
    return capsys.readouterr().out


@pytest.mark.slow
def test_generate_of_a_run_and_its_exported_model_give_the_same_greedy_text(exported, capsys, monkeypatch):
    from pathlib import Path

    plan, directory = exported[2]
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    new_tokens = plan.spec.model.context_length - max(len(tokenizer(p).input_ids) for p in GREEDY_PROMPTS)
    texts, _ = greedy_texts(directory, GREEDY_PROMPTS, new_tokens)  # within the context, as GPT-2 must
    monkeypatch.chdir(Path(plan.tracking_uri.removeprefix("sqlite:///")).parent)  # where the run lives
    ours = orchestrator_generate(
        [plan.run_name, "--tracking-uri", plan.tracking_uri], GREEDY_PROMPTS, new_tokens, capsys
    )
    assert ours == printable("".join(f"[{i}] {text}\n" for i, text in enumerate(texts)))


def test_generate_stops_at_end_of_text_where_transformers_does(tmp_path, tokenizer_path, capsys):
    """A model whose greedy continuations reach <|endoftext|> (spread random weights; every token
    of the vocabulary is a prompt, and some lead there within the context): `orchestrator generate
    --from-hf` ends each text exactly where `transformers` ends it, and the others at the same length."""
    spec, model = random_model(tie=True)
    directory = tmp_path / "hf"
    write_hf_directory(model, spec, tokenizer_path, directory)
    tokenizer, theirs = transformers.AutoTokenizer.from_pretrained(directory), hf_model(directory)
    eos = tokenizer.eos_token_id
    ids = [
        i for i in range(spec.vocab_size) if i != eos and tokenizer(tokenizer.decode([i])).input_ids == [i]
    ]
    prompts = [tokenizer.decode([i]) for i in ids]
    new_tokens = spec.context_length - 1
    with torch.no_grad():  # one batch: every prompt is one token long, so no padding
        out = theirs.generate(
            torch.tensor([[i] for i in ids]), max_new_tokens=new_tokens, do_sample=False, pad_token_id=eos
        )
    texts = {p: tokenizer.decode(row, skip_special_tokens=True) for p, row in zip(prompts, out, strict=True)}
    stopped = [p for p, row in zip(prompts, out, strict=True) if eos in row[1:].tolist()]
    assert stopped, "no greedy continuation reached <|endoftext|>: nothing to compare"
    chosen = [*stopped[:8], *[p for p in prompts if p not in stopped][:4]]
    ours = orchestrator_generate(["--from-hf", str(directory)], chosen, new_tokens, capsys)
    shown = "".join(f"[{i}] {texts[prompt]}\n" for i, prompt in enumerate(chosen))
    assert ours == printable(shown)  # as the terminal gets it: control characters escaped
