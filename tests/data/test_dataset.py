"""The built-in corpus, the cached BPE tokenizer and the deterministic split."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tokenizers import Tokenizer

from orchestrator.data.dataset import TokenDataset, prepare_dataset


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepare_dataset("python-docs", 300, tmp_path_factory.mktemp("cache"))


def test_tokenizer_is_trained_to_size_and_round_trips_text(prepared):
    tokenizer = Tokenizer.from_file(str(prepared.tokenizer_path))
    assert tokenizer.get_vocab_size() == 300
    text = 'The "if" statement is used for conditional execution.'
    assert tokenizer.decode(tokenizer.encode(text).ids) == text


def test_tokens_cover_the_whole_vocabulary_range(prepared):
    tokens = np.fromfile(prepared.tokens_path, dtype=np.uint16)
    assert len(tokens) == prepared.n_tokens > 100_000
    assert tokens.max() < 300


def test_preparing_again_reuses_the_cache(prepared, tmp_path_factory):
    before = prepared.tokens_path.stat().st_mtime_ns
    again = prepare_dataset("python-docs", 300, prepared.tokens_path.parent.parent)
    assert again == prepared
    assert again.tokens_path.stat().st_mtime_ns == before


def test_split_is_80_20_disjoint_and_deterministic(prepared):
    a = TokenDataset(prepared.tokens_path, 32, 0.2, seed=7)
    b = TokenDataset(prepared.tokens_path, 32, 0.2, seed=7)
    total = len(a.train_blocks) + len(a.val_blocks)
    assert abs(len(a.val_blocks) / total - 0.2) < 0.01
    assert not set(a.train_blocks) & set(a.val_blocks)
    np.testing.assert_array_equal(a.val_blocks, b.val_blocks)
    other = TokenDataset(prepared.tokens_path, 32, 0.2, seed=8)
    assert not np.array_equal(a.val_blocks, other.val_blocks)


def test_rank_shards_are_disjoint_equal_and_reshuffled_each_epoch(prepared):
    data = TokenDataset(prepared.tokens_path, 32, 0.2, seed=7)
    shards = [data.train_shard(epoch=0, rank=r, world=3, seed=1) for r in range(3)]
    assert len({len(s) for s in shards}) == 1
    assert not set(shards[0]) & set(shards[1])
    assert set(np.concatenate(shards)) <= set(data.train_blocks)
    assert not np.array_equal(shards[0], data.train_shard(epoch=1, rank=0, world=3, seed=1))


def test_blocks_hold_inputs_and_shifted_targets(prepared):
    data = TokenDataset(prepared.tokens_path, 32, 0.2, seed=7)
    block = data.block_tokens(int(data.train_blocks[0]))
    assert block.shape == (33,)


def test_plain_text_and_jsonl_files_become_a_cached_dataset(tmp_path):
    from orchestrator.plan import PlanError, build_plan
    from orchestrator.spec import parse_spec

    (tmp_path / "docs").mkdir()
    sentence = "The quick brown fox jumps over the lazy dog. "
    (tmp_path / "docs" / "a.txt").write_text(sentence * 400)
    records = [{"body": f"Record {i}: " + sentence * 20} for i in range(40)]
    (tmp_path / "docs" / "b.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    text_spec = (
        "name: x\nmodel: {vocab_size: 300, context_length: 16}\ndata: {corpus: files, files: [docs/*.txt]}\n"
    )
    jsonl_spec = text_spec.replace("docs/*.txt]", "docs/b.jsonl], format: jsonl, jsonl_field: body")
    text_plan = build_plan(parse_spec(text_spec), cwd=tmp_path)
    jsonl_plan = build_plan(parse_spec(jsonl_spec), cwd=tmp_path)
    assert text_plan.data.train_blocks > 0 and jsonl_plan.data.train_blocks > 0
    assert text_plan.data.tokens_path != jsonl_plan.data.tokens_path, "keyed by the content hash"
    again = build_plan(parse_spec(text_spec), cwd=tmp_path)
    assert again.data.tokens_path == text_plan.data.tokens_path
    wrong_field = jsonl_spec.replace("jsonl_field: body", "jsonl_field: text")
    with pytest.raises(PlanError, match=r"b.jsonl:1: no string field 'text'"):
        build_plan(parse_spec(wrong_field), cwd=tmp_path)
    missing = text_spec.replace("docs/*.txt", "nothing/*.txt")
    with pytest.raises(PlanError, match="matches no file"):
        build_plan(parse_spec(missing), cwd=tmp_path)


def _corrupt(folder, kind: str) -> None:
    tokens, tokenizer = folder / "tokens.u16.bin", folder / "tokenizer.json"
    if kind == "odd-size":
        tokens.write_bytes(tokens.read_bytes() + b"\x01")
    elif kind == "empty":
        tokens.write_bytes(b"")
    elif kind == "truncated":
        tokens.write_bytes(tokens.read_bytes()[:1000])
    elif kind == "ids-above-vocabulary":
        tokens.write_bytes(np.full(len(tokens.read_bytes()) // 2, 65000, dtype=np.uint16).tobytes())
    elif kind == "corrupt-tokenizer":
        tokenizer.write_text('{"version": "1.0", "model": ')
    elif kind == "no-tokens-file":
        tokens.unlink()
    else:
        (folder / "manifest.json").write_text('{"n_tokens": "many"}')


@pytest.mark.parametrize(
    "kind",
    [
        "odd-size",
        "empty",
        "truncated",
        "ids-above-vocabulary",
        "corrupt-tokenizer",
        "no-tokens-file",
        "manifest",
    ],
)
def test_a_damaged_cache_is_rebuilt_not_trained_on(tmp_path, caplog, kind):
    """A cache used to be trusted blindly: odd sizes, empty or truncated files, ids beyond the
    vocabulary and a corrupt tokenizer.json crashed or silently trained on garbage."""
    text = "The if statement is used for conditional execution.\n\n" * 200
    good = prepare_dataset("files", 300, tmp_path, text=text)
    reference = good.tokens_path.read_bytes()
    _corrupt(good.tokens_path.parent, kind)
    again = prepare_dataset("files", 300, tmp_path, text=text)
    assert again == good and again.tokens_path.read_bytes() == reference
    assert Tokenizer.from_file(str(again.tokenizer_path)).encode("The if").ids
    assert "cannot be used" in caplog.text and "preparing it again" in caplog.text


def test_a_vocabulary_beyond_the_token_file_is_a_plan_error(tmp_path):
    from orchestrator.errors import PlanError

    with pytest.raises(PlanError, match="at most 65536"):
        prepare_dataset("files", 70_000, tmp_path, text="x")
