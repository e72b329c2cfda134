"""Sampling: the KV cache changes nothing but speed, batched prompts equal one-by-one generation,
text streams out as it is produced, and the window slides past the context."""

from __future__ import annotations

import pytest
import torch

from orchestrator.generate import LoadedModel, Sampling, generate_ids, generate_texts, write_generation
from orchestrator.train.model import GPT
from tests.export.helpers import prepared_tokenizer

GREEDY = Sampling(max_new_tokens=30, temperature=0)


@pytest.fixture(scope="module")
def model() -> GPT:
    """A random model whose logits are far apart, so greedy choices are never near-ties."""
    torch.manual_seed(0)
    gpt = GPT(vocab_size=300, context_length=24, d_model=32, n_layers=2, n_heads=4).eval()
    with torch.no_grad():
        for param in gpt.parameters():
            param.mul_(10)
    return gpt


@pytest.fixture(scope="module")
def loaded(model, tmp_path_factory) -> LoadedModel:
    corpus = tmp_path_factory.mktemp("corpus")
    text = "\n\n".join(
        f"The for statement {i} loops; a while loop {i * 7} waits. Ünïcode ✓." for i in range(200)
    )
    return LoadedModel(model, prepared_tokenizer(corpus, text), "test")


PROMPTS = [[5, 17, 260, 99], [42], list(range(100, 118)), list(range(150, 180))]  # the last: over the context


def test_the_cache_gives_the_greedy_tokens_of_recomputing_everything(model):
    for prompt in PROMPTS:
        cached = generate_ids(model, [prompt], GREEDY)
        recomputed = generate_ids(model, [prompt], GREEDY, use_cache=False)
        assert cached == recomputed and len(cached[0]) == 30
        assert len(set(cached[0])) > 5  # a real continuation, not one repeated token


def test_batched_prompts_of_different_lengths_equal_one_by_one(model):
    one_by_one = [generate_ids(model, [prompt], GREEDY)[0] for prompt in PROMPTS]
    assert generate_ids(model, PROMPTS, GREEDY) == one_by_one
    assert generate_ids(model, PROMPTS, GREEDY, use_cache=False) == one_by_one


def test_sampling_is_repeatable_with_a_seed_and_differs_with_another(model):
    sampling = Sampling(max_new_tokens=20, temperature=1.0, top_k=50, seed=3)
    first, again = generate_ids(model, PROMPTS, sampling), generate_ids(model, PROMPTS, sampling)
    other = generate_ids(model, PROMPTS, Sampling(max_new_tokens=20, temperature=1.0, top_k=50, seed=4))
    assert first == again and first != other
    assert first == generate_ids(model, PROMPTS, sampling, use_cache=False)


def test_top_k_one_is_greedy(model):
    assert generate_ids(model, PROMPTS, Sampling(30, temperature=0.7, top_k=1, seed=0)) == generate_ids(
        model, PROMPTS, GREEDY
    )


def test_a_row_that_samples_the_stop_token_ends_while_others_go_on(model):
    free = generate_ids(model, PROMPTS, GREEDY)
    stop = free[0][3]  # a token the first row produces early
    stopped = generate_ids(model, PROMPTS, GREEDY, stop_token=stop)
    for full, cut in zip(free, stopped, strict=True):
        end = full.index(stop) + 1 if stop in full else len(full)
        assert cut == full[:end]  # every row stops at its own first stop token
    assert stopped[0] == free[0][:4]


def test_text_streams_out_piece_by_piece_and_adds_up_to_the_result(loaded):
    pieces: dict[int, list[str]] = {0: [], 1: []}
    prompts = ["The for statement", "Ünï"]
    texts = generate_texts(loaded, prompts, GREEDY, on_text=lambda row, piece: pieces[row].append(piece))
    for row, prompt in enumerate(prompts):
        assert texts[row].startswith(prompt)
        assert len(pieces[row]) > 3, "pieces arrive while tokens are produced, not all at once"
        assert prompt + "".join(pieces[row]) == texts[row]
        assert all("\ufffd" not in piece for piece in pieces[row]) or "\ufffd" in texts[row]


def test_pieces_arrive_before_generation_ends(loaded, monkeypatch):
    import orchestrator.generate as generate

    steps_done, seen_at = [0], []
    original = generate._next_token

    def counting(*args):
        steps_done[0] += 1
        return original(*args)

    monkeypatch.setattr(generate, "_next_token", counting)
    generate_texts(loaded, ["The for"], GREEDY, on_text=lambda row, piece: seen_at.append(steps_done[0]))
    assert seen_at[0] < 5 and seen_at[-1] >= 25


def test_an_empty_prompt_starts_from_end_of_text(loaded):
    (text,) = generate_texts(loaded, [""], Sampling(max_new_tokens=10, temperature=0))
    assert len(text) > 0


def test_one_prompt_is_written_as_it_is_produced_several_one_after_another(loaded):
    import io

    class Recorder(io.StringIO):
        flushes = 0

        def flush(self):
            Recorder.flushes += 1

    one = Recorder()
    (text,) = write_generation(one, loaded, ["The for"], GREEDY)
    assert one.getvalue() == text + "\n" and Recorder.flushes > 5
    several = io.StringIO()
    texts = write_generation(several, loaded, ["The for", "A"], GREEDY)
    assert several.getvalue() == f"[0] {texts[0]}\n[1] {texts[1]}\n"
    assert texts[0] == text  # the same greedy text alone and in a batch
