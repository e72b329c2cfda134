"""Preparing a corpus (tokenizer, pieces, shards, manifest) and reading it back as samples."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from orchestrator.data.dataset import TokenDataset
from orchestrator.data.manifest import MANIFEST, ManifestError
from orchestrator.data.prepare import InProcess, dataset_uri, find_prepared, prepare, read_manifest
from orchestrator.data.shards import open_tokens, read_header
from orchestrator.errors import UsageError
from orchestrator.spec import parse_spec
from orchestrator.storage.store import open_store

SENTENCE = "The quick brown fox jumps over the lazy dog while the cat watches. "


def _spec(data: str = "{}", vocab: int = 300, context: int = 16):
    return parse_spec(f"name: x\nmodel: {{vocab_size: {vocab}, context_length: {context}}}\ndata: {data}\n")


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
    """python-docs prepared once into a module cache: (spec, cwd, manifest)."""
    cwd = tmp_path_factory.mktemp("docs")
    spec = _spec(f"{{prepared: {cwd / 'prepared'}}}")
    return spec, cwd, prepare(spec, cwd, say=lambda _: None)


def test_the_builtin_corpus_becomes_shards_a_tokenizer_and_a_manifest(docs):
    spec, cwd, manifest = docs
    store = open_store(dataset_uri(spec, cwd))
    tokenizer = Tokenizer.from_str(store.read_text(manifest.tokenizer["name"]))
    assert tokenizer.get_vocab_size() == 300 and manifest.tokenizer["eot_id"] == 0
    text = 'The "if" statement is used for conditional execution.'
    assert tokenizer.decode(tokenizer.encode(text).ids) == text
    assert manifest.dtype == "uint16" and manifest.split["by"] == "document"
    totals = manifest.totals
    assert totals["tokens"] == totals["train_tokens"] + totals["val_tokens"] > 100_000
    assert 0.12 < totals["val_documents"] / totals["documents"] < 0.28  # 20% of documents, by draw
    for shard in manifest.shards:
        path = store.local_path(shard.name)
        header = read_header(path)
        assert (header.n_tokens, header.n_documents, header.itemsize) == (shard.tokens, shard.documents, 2)
        ids = open_tokens(path)
        assert ids.max() < 300 and (ids == 0).sum() == shard.documents  # one end-of-text per document


def test_preparing_again_reuses_the_dataset(docs):
    spec, cwd, manifest = docs
    store = open_store(dataset_uri(spec, cwd))
    before = store.local_path(MANIFEST).stat().st_mtime_ns
    lines: list[str] = []
    assert prepare(spec, cwd, say=lines.append).digest == manifest.digest
    assert lines == [] and store.local_path(MANIFEST).stat().st_mtime_ns == before
    assert find_prepared(spec, cwd).digest == manifest.digest


def test_samples_are_whole_blocks_of_one_shard(docs):
    spec, cwd, manifest = docs
    data = TokenDataset.open(dataset_uri(spec, cwd), manifest.digest, context_length=16)
    assert data.train_samples == sum(s.tokens // 17 for s in manifest.shards_of("train"))
    rows = data.rows("train", [0, 1, data.train_samples - 1])
    assert rows.shape == (3, 17) and rows.dtype == np.int64
    first = open_tokens(Path(data.opened_files[0]))
    np.testing.assert_array_equal(rows[1], first[17:34])
    with pytest.raises(ManifestError, match="prepared again since this run was planned"):
        TokenDataset.open(dataset_uri(spec, cwd), "0" * 64, context_length=16)


def _files_corpus(root: Path) -> None:
    (root / "docs" / "more").mkdir(parents=True)
    (root / "docs" / "a.txt").write_text("\n\n".join(f"Paragraph {i}. " + SENTENCE * 6 for i in range(60)))
    records = [{"body": f"Record {i}: " + SENTENCE * 8, "id": i} for i in range(80)]
    jsonl = "\n".join(json.dumps(r) for r in records) + "\n"
    (root / "docs" / "b.jsonl").write_text(jsonl)
    with gzip.open(root / "docs" / "more" / "c.jsonl.gz", "wt") as handle:
        handle.write(jsonl)
    import zstandard

    (root / "docs" / "more" / "d.txt.zst").write_bytes(
        zstandard.ZstdCompressor().compress(("\n\n".join(SENTENCE * 5 for _ in range(40))).encode())
    )
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"body": [r["body"] for r in records], "id": [r["id"] for r in records]})
    pq.write_table(table, root / "docs" / "e.parquet", row_group_size=20)


def test_text_jsonl_parquet_and_compressed_files_are_one_corpus(tmp_path):
    _files_corpus(tmp_path)
    spec = _spec(f"{{corpus: files, files: ['docs/**/*'], text_field: body, prepared: {tmp_path / 'p'}}}")
    manifest = prepare(spec, tmp_path, say=lambda _: None)
    kinds = {Path(s["path"]).name: (s["kind"], s["compression"]) for s in manifest.sources}
    assert kinds == {
        "a.txt": ("text", None),
        "b.jsonl": ("jsonl", None),
        "c.jsonl.gz": ("jsonl", "gz"),
        "d.txt.zst": ("text", "zst"),
        "e.parquet": ("parquet", None),
    }
    # 60 paragraphs + 3 x 80 records + 40 paragraphs
    assert manifest.totals["documents"] == 60 + 240 + 40
    assert all(len(s["sha256"]) == 64 for s in manifest.sources)


def test_a_saved_hugging_face_dataset_is_a_source(tmp_path):
    import datasets

    rows = {"text": [f"Row {i}: " + SENTENCE * 4 for i in range(50)]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "saved"))
    spec = _spec(f"{{corpus: files, files: [saved], prepared: {tmp_path / 'p'}}}")
    manifest = prepare(spec, tmp_path, say=lambda _: None)
    assert [s["kind"] for s in manifest.sources] == ["hf-dataset"]
    assert manifest.totals["documents"] == 50


def test_a_changed_source_makes_the_dataset_stale_and_a_new_build(tmp_path):
    (tmp_path / "a.txt").write_text(SENTENCE * 200)
    spec = _spec(f"{{corpus: files, files: [a.txt], prepared: {tmp_path / 'p'}}}")
    first = prepare(spec, tmp_path, say=lambda _: None)
    (tmp_path / "a.txt").write_text(SENTENCE * 300)
    assert find_prepared(spec, tmp_path) is None
    said: list[str] = []
    second = prepare(spec, tmp_path, say=said.append)
    assert "a.txt changed since it was prepared" in said[0]
    assert second.build != first.build and second.totals["tokens"] > first.totals["tokens"]
    store = open_store(dataset_uri(spec, tmp_path))
    assert {e.path.split("/")[1] for e in store.list("builds")} == {second.build}  # the old build is gone


class _DiesAfter:
    """A runner that runs ``n`` pieces, then stops as a killed prepare would."""

    def __init__(self, n: int):
        self.n, self.ran = n, []

    def map(self, function, jobs):
        for job in jobs:
            if getattr(job, "piece", None) is not None:
                if len(self.ran) == self.n:
                    raise KeyboardInterrupt
                self.ran.append(job.piece.index)
            yield function(job)


def test_a_killed_prepare_resumes_from_its_finished_pieces(tmp_path):
    (tmp_path / "big.txt").write_text("\n\n".join(f"Part {i}. " + SENTENCE * 10 for i in range(400)))
    spec = _spec(f"{{corpus: files, files: [big.txt], shard_mb: 0.05, prepared: {tmp_path / 'p'}}}")
    dying = _DiesAfter(2)
    with pytest.raises(KeyboardInterrupt):
        prepare(spec, tmp_path, runner=dying, say=lambda _: None)
    assert read_manifest(open_store(dataset_uri(spec, tmp_path))) is None  # never finished: no manifest
    counting = _DiesAfter(10**6)
    manifest = prepare(spec, tmp_path, runner=counting, say=lambda _: None)
    n_pieces = len(manifest.shards) // 2
    assert n_pieces > 3
    assert manifest.totals["documents"] == 400
    # the finished pieces were not tokenized again (their records were found)
    reference = prepare(
        _spec(f"{{corpus: files, files: [big.txt], shard_mb: 0.05, prepared: {tmp_path / 'q'}}}"),
        tmp_path,
        runner=InProcess(),
        say=lambda _: None,
    )
    assert [s.sha256 for s in manifest.shards] == [s.sha256 for s in reference.shards]


def test_a_damaged_manifest_or_shard_is_never_read(tmp_path, docs):
    spec, cwd, manifest = docs
    store = open_store(dataset_uri(spec, cwd))
    text = store.read_text(MANIFEST)
    store.write_bytes(MANIFEST, text.replace('"tokens": ', '"tokens": 1', 1).encode())
    try:
        with pytest.raises(ManifestError, match="changed after it was written"):
            read_manifest(store)
        said: list[str] = []
        again = prepare(spec, cwd, say=said.append)
        assert "preparing it again" in said[0] and again.totals == manifest.totals
    finally:
        store.write_bytes(MANIFEST, text.encode())


@pytest.mark.parametrize(
    ("files", "data", "expected"),
    [
        ({"a.txt": b"good text\n\nthen \xff\xfe bad bytes\n"}, "{}", r"a\.txt:3 \(byte 16\): not UTF-8"),
        ({"a.jsonl": b'{"text": "fine"}\n[1, 2]\n'}, "{}", r"a\.jsonl:2 .*must be an object"),
        (
            {"a.jsonl": b'{"text": "fine"}\n{"body": "x"}\n'},
            "{}",
            r"a\.jsonl:2 .*no string field 'text'.*'body'",
        ),
        ({"a.jsonl": b'{"text": "fine"}\n{"text": "x\\ud800"}\n'}, "{}", r"a\.jsonl:2 .*lone surrogate"),
        ({"a.jsonl": b'{"text": "fine"}\n{"text": \n'}, "{}", r"a\.jsonl:2 .*not valid JSON"),
        ({"a.txt": b"   \n\n\n  \n"}, "{}", r"holds no text"),
        ({"a.txt": b"text"}, "{files: ['none/*.txt']}", r"data\.files\.0: 'none/\*\.txt' matches no file"),
        ({"a.txt": b"text " * 50}, "{tokenizer: {path: tok.json}}", r"tok\.json is not a tokenizer\.json"),
    ],
)
def test_bad_input_names_the_file_and_where(tmp_path, files, data, expected):
    for name, payload in files.items():
        (tmp_path / name).write_bytes(payload)
    merged = {"corpus": "files", "files": [next(iter(files))], "prepared": str(tmp_path / "p")}
    merged.update(parse_yaml_flow(data))
    spec = _spec(json.dumps(merged))
    with pytest.raises(UsageError, match=expected):
        prepare(spec, tmp_path, say=lambda _: None)
    assert read_manifest(open_store(dataset_uri(spec, tmp_path))) is None  # nothing half-made is used


def parse_yaml_flow(text: str) -> dict:
    import yaml

    return yaml.safe_load(text)


def test_replace_reads_bad_bytes_and_surrogates_as_replacement_characters(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"good text " * 20 + b"\n\n" + b"then \xff\xfe bad bytes " * 20 + b"\n")
    (tmp_path / "b.jsonl").write_bytes(b'{"text": "' + b"x\\ud800y " * 30 + b'"}\n')
    spec = _spec(
        f"{{corpus: files, files: [a.txt, b.jsonl], encoding_errors: replace, prepared: {tmp_path / 'p'}}}"
    )
    assert prepare(spec, tmp_path, say=lambda _: None).totals["documents"] == 3


def test_a_pretrained_tokenizer_is_used_as_is_and_checked_against_the_model(tmp_path, docs):
    spec, cwd, manifest = docs
    source = open_store(dataset_uri(spec, cwd)).local_path(manifest.tokenizer["name"])
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "tokenizer.json").write_text(source.read_text())
    (tmp_path / "a.txt").write_text(SENTENCE * 100)
    data = f"{{corpus: files, files: [a.txt], tokenizer: {{path: tok}}, prepared: {tmp_path / 'p'}}}"
    pretrained = prepare(_spec(data, vocab=320), tmp_path, say=lambda _: None)
    assert pretrained.tokenizer["pretrained"] and pretrained.tokenizer["eot_token"] == "<|endoftext|>"
    stored = open_store(dataset_uri(_spec(data, vocab=320), tmp_path)).read_text(pretrained.tokenizer["name"])
    assert stored == source.read_text()  # byte for byte the tokenizer that was given
    with pytest.raises(UsageError, match=r"has 300 tokens, more than model.vocab_size 290.*vocab_size: 320"):
        prepare(_spec(data.replace("'p'", "'q'"), vocab=290), tmp_path, say=lambda _: None)


def test_vocabularies_above_65536_store_uint32_ids(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"t{i}": i for i in range(70_000)}
    vocab.update({"<|endoftext|>": 70_000, "[UNK]": 70_001})
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(tmp_path / "big.json"))
    (tmp_path / "a.txt").write_text(
        "\n\n".join(" ".join(f"t{(i * 7919) % 70_000}" for i in range(j, j + 50)) for j in range(300))
    )
    data = f"{{corpus: files, files: [a.txt], tokenizer: {{path: big.json}}, prepared: {tmp_path / 'p'}}}"
    manifest = prepare(_spec(data, vocab=70_016), tmp_path, say=lambda _: None)
    assert manifest.dtype == "uint32"
    store = open_store(dataset_uri(_spec(data, vocab=70_016), tmp_path))
    ids = open_tokens(store.local_path(manifest.shards[0].name))
    assert ids.dtype == np.uint32 and ids.max() >= 65536
