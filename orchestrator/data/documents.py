"""The documents of one piece of a corpus, streamed: memory is bounded by the chunk size, not by the
size of a file or of a line.

A *piece* is the unit of work of preparation: a newline-aligned byte range of an uncompressed text
or JSONL file, a whole compressed file, a run of Parquet row groups, or a row range of a saved
Hugging Face dataset. A piece owns the lines that *start* inside its range, so neighbouring pieces
never share or lose a line.

Documents are blank-line separated paragraphs of text files (as before), JSONL records, Parquet
rows and dataset rows. ``documents`` yields ``(text, ends_document)`` chunks of at most
``chunk_chars`` characters: a 20 MB line becomes twenty 1 MB chunks of one document.
"""

from __future__ import annotations

import codecs
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

from orchestrator.data.sources import Source, SourceError

# A JSONL record is parsed whole: one longer than this is refused rather than read into memory.
MAX_RECORD_BYTES = 256 << 20
_BLANK = (b"\n", b"\r\n")
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Piece:
    index: int
    source: Source
    start: int = 0  # first byte (text, jsonl), row group (parquet) or row (hf-dataset)
    stop: int | None = None  # exclusive; None: to the end

    @property
    def key(self) -> str:
        """Stable across machines: the file's name and where the piece starts."""
        return f"{self.source.name}@{self.start}"


def plan_pieces(sources: list[Source], piece_bytes: int) -> list[Piece]:
    """Cut every source into pieces of about ``piece_bytes`` (compressed files stay whole)."""
    pieces: list[Piece] = []
    for source in sources:
        for start, stop in _ranges(source, piece_bytes):
            pieces.append(Piece(len(pieces), source, start, stop))
    return pieces


def _ranges(source: Source, piece_bytes: int) -> list[tuple[int, int | None]]:
    if source.kind in ("text", "jsonl") and source.compression is None and source.size > piece_bytes:
        starts = list(range(0, source.size, piece_bytes))
        return list(zip(starts, [*starts[1:], source.size], strict=True))
    if source.kind == "parquet":
        return _row_group_ranges(source, piece_bytes)
    if source.kind == "hf-dataset":
        return _dataset_ranges(source, piece_bytes)
    return [(0, None)]


def _row_group_ranges(source: Source, piece_bytes: int) -> list[tuple[int, int | None]]:
    metadata = _parquet(source).metadata
    ranges, start, size = [], 0, 0
    for group in range(metadata.num_row_groups):
        size += metadata.row_group(group).total_byte_size
        if size >= piece_bytes:
            ranges.append((start, group + 1))
            start, size = group + 1, 0
    if start < metadata.num_row_groups or not ranges:
        ranges.append((start, metadata.num_row_groups))
    return ranges


def _dataset_ranges(source: Source, piece_bytes: int) -> list[tuple[int, int | None]]:
    rows = len(_saved_dataset(source))
    if rows == 0:
        return [(0, 0)]
    per_piece = max(1, int(rows * piece_bytes / max(source.size, 1)))
    return [(a, min(a + per_piece, rows)) for a in range(0, rows, per_piece)]


def documents(piece: Piece, text_field: str, errors: str, chunk_chars: int) -> Iterator[tuple[str, bool]]:
    """``(text, ends_document)`` chunks of the piece's documents, in order."""
    kind = piece.source.kind
    if kind == "builtin":
        from orchestrator.data.corpus import load_corpus

        yield from _chunks(_paragraph_strings(load_corpus(piece.source.path)), chunk_chars)
    elif kind == "text":
        yield from _text_documents(piece, errors, chunk_chars)
    elif kind == "jsonl":
        yield from _chunks(_jsonl_texts(piece, text_field, errors), chunk_chars)
    elif kind == "parquet":
        yield from _chunks(_parquet_texts(piece, text_field, errors), chunk_chars)
    elif kind == "hf-dataset":
        yield from _chunks(_dataset_texts(piece, text_field, errors), chunk_chars)
    else:
        raise SourceError(f"{piece.source.path}: unknown kind {kind!r}")


def _paragraph_strings(text: str) -> Iterator[str]:
    for paragraph in text.split("\n\n"):
        if paragraph.strip():
            yield paragraph


def _chunks(texts: Iterator[str], chunk_chars: int) -> Iterator[tuple[str, bool]]:
    for text in texts:
        if not text.strip():
            continue
        for start in range(0, len(text), chunk_chars):
            yield text[start : start + chunk_chars], start + chunk_chars >= len(text)


# --- reading lines of bytes ----------------------------------------------------------------------


class _Lines:
    """The lines of a piece as bytes, each at most ``limit`` bytes (a longer line comes in parts),
    with the byte offset where each part starts (in the decompressed stream)."""

    def __init__(self, piece: Piece, limit: int):
        self.piece, self.limit = piece, limit
        self.offset = piece.start

    def __iter__(self) -> Iterator[tuple[bytes, int]]:
        source = self.piece.source
        try:
            yield from self._parts(source)
        except SourceError:
            raise
        except Exception as exc:  # a damaged or truncated .gz/.zst (zstd's errors are its own type)
            what = f"a {source.compression} file" if source.compression else "the file"
            raise SourceError(
                f"{source.path}: cannot be read as {what} ({type(exc).__name__}: {exc}); hint: check "
                "the file (a download cut short, a name whose suffix is not its compression)"
            ) from None

    def _parts(self, source: Source) -> Iterator[tuple[bytes, int]]:
        with _open_binary(source) as handle:
            if source.compression is None and self.piece.start > 0:
                handle.seek(self.piece.start - 1)
                if handle.read(1) != b"\n":  # the line under way belongs to the previous piece
                    self.offset = self.piece.start + len(_read_line(handle))
            stop = self.piece.stop
            continuing = False
            while True:
                if stop is not None and not continuing and self.offset >= stop:
                    return
                part = handle.readline(self.limit)
                if not part:
                    return
                yield part, self.offset
                self.offset += len(part)
                continuing = not part.endswith(b"\n")


def _read_line(handle) -> bytes:
    """The rest of the current line, read in bounded parts (returned whole only as its length)."""
    total = bytearray()
    while True:
        part = handle.readline(1 << 20)
        total += b"\0" * len(part)  # only the length matters
        if not part or part.endswith(b"\n"):
            return bytes(total)


def _open_binary(source: Source):
    if source.compression == "gz":
        import gzip

        return gzip.open(source.path, "rb")
    if source.compression == "zst":
        import zstandard

        raw = open(source.path, "rb")  # noqa: SIM115 - closed with the reader (closefd)
        reader = zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)
        return io.BufferedReader(reader, buffer_size=1 << 20)
    return open(source.path, "rb")


class _Decoder:
    """UTF-8 with the spec's error policy; an error names the file, the byte and (when the file is
    not compressed) the line."""

    def __init__(self, source: Source, errors: str):
        self.source = source
        self.errors = "replace" if errors == "replace" else "strict"
        self._incremental = codecs.getincrementaldecoder("utf-8")(self.errors)

    def decode(self, data: bytes, offset: int, final: bool) -> str:
        try:
            return self._incremental.decode(data, final)
        except UnicodeDecodeError as exc:
            self._incremental.reset()
            where = offset + exc.start
            raise SourceError(
                f"{self.where(where)}: not UTF-8 ({exc.reason}); hint: fix the file, or set "
                "data.encoding_errors: replace to read such bytes as U+FFFD"
            ) from None

    def where(self, byte: int) -> str:
        if self.source.compression is not None:
            return f"{self.source.path}: byte {byte} (decompressed)"
        return f"{self.source.path}:{line_number(self.source.path, byte)} (byte {byte})"


def line_number(path: str, byte: int) -> int:
    """The 1-based line of a byte offset (counted only when a message needs it)."""
    count, done = 1, 0
    with open(path, "rb") as handle:
        while done < byte:
            block = handle.read(min(8 << 20, byte - done))
            if not block:
                break
            count += block.count(b"\n")
            done += len(block)
    return count


def _text_documents(piece: Piece, errors: str, chunk_chars: int) -> Iterator[tuple[str, bool]]:
    """Blank-line separated paragraphs, emitted in chunks of about ``chunk_chars``."""
    decoder = _Decoder(piece.source, errors)
    buffer: list[str] = []
    size = 0
    for part, offset in _Lines(piece, chunk_chars):
        if part in _BLANK:
            if size:
                yield _flush(buffer), True
                size = 0
            continue
        text = decoder.decode(part, offset, final=part.endswith(b"\n"))
        buffer.append(text)
        size += len(text)
        if size >= chunk_chars:
            yield _flush(buffer), False
            size = 0
    if size:
        yield _flush(buffer), True


def _flush(buffer: list[str]) -> str:
    text = "".join(buffer).rstrip("\n") if buffer else ""
    buffer.clear()
    return text


def _jsonl_texts(piece: Piece, field: str, errors: str) -> Iterator[str]:
    decoder = _Decoder(piece.source, errors)
    record = bytearray()
    start = piece.start
    for part, offset in _Lines(piece, 8 << 20):
        if not record:
            start = offset
        record += part
        if len(record) > MAX_RECORD_BYTES:
            raise SourceError(
                f"{decoder.where(start)}: a JSONL record over {MAX_RECORD_BYTES >> 20} MiB; hint: split "
                "the document, or use a text file"
            )
        if not part.endswith(b"\n"):
            continue
        line, record = bytes(record), bytearray()
        if line.strip():
            yield _record_text(decoder.decode(line, start, final=True), field, decoder, start, errors)
    if record.strip():
        yield _record_text(decoder.decode(bytes(record), start, final=True), field, decoder, start, errors)


def _record_text(line: str, field: str, decoder: _Decoder, offset: int, errors: str) -> str:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise SourceError(f"{decoder.where(offset)}: not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise SourceError(f"{decoder.where(offset)}: JSON nested too deeply to read") from None
    if not isinstance(record, dict):
        raise SourceError(
            f"{decoder.where(offset)}: a JSONL line must be an object with a {field!r} field, "
            f"not {type(record).__name__}"
        )
    value = record.get(field)
    if not isinstance(value, str):
        fields = ", ".join(map(repr, list(record)[:8])) or "none"
        raise SourceError(
            f"{decoder.where(offset)}: no string field {field!r} (its fields: {fields}); hint: "
            "data.text_field names the text field"
        )
    return _without_surrogates(value, errors, lambda: decoder.where(offset))


def _without_surrogates(text: str, errors: str, where) -> str:
    """JSON can spell lone surrogates (\\ud800), which are no characters: refused, or replaced."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        if errors == "replace":
            return _SURROGATE.sub("\ufffd", text)
        raise SourceError(
            f"{where()}: the text holds a lone surrogate (like \\ud800), which is not a character; "
            "hint: fix the record, or set data.encoding_errors: replace"
        ) from None


def _parquet(source: Source):
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(source.path)
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        raise SourceError(f"{source.path}: not a readable Parquet file ({exc})") from None


def _parquet_texts(piece: Piece, field: str, errors: str) -> Iterator[str]:
    import pyarrow as pa

    handle = _parquet(piece.source)
    schema = handle.schema_arrow
    if field not in schema.names:
        raise SourceError(
            f"{piece.source.path}: no column {field!r} (its columns: {', '.join(schema.names[:12])}); "
            "hint: data.text_field names the text column"
        )
    if not (
        pa.types.is_string(schema.field(field).type) or pa.types.is_large_string(schema.field(field).type)
    ):
        raise SourceError(f"{piece.source.path}: column {field!r} holds {schema.field(field).type}, not text")
    groups = list(range(piece.start, piece.stop if piece.stop is not None else handle.num_row_groups))
    row = 0
    for batch in handle.iter_batches(batch_size=1024, row_groups=groups, columns=[field]):
        for value in batch.column(0).to_pylist():
            row += 1
            if value:
                yield _without_surrogates(value, errors, lambda r=row: f"{piece.source.path}: row {r}")


def _saved_dataset(source: Source):
    try:
        import datasets
    except ImportError:
        raise SourceError(
            f"{source.path}: a saved Hugging Face dataset needs the `datasets` package; hint: pip "
            "install 'gpt-orchestrator[datasets]'"
        ) from None
    loaded = datasets.load_from_disk(source.path)
    if isinstance(loaded, datasets.DatasetDict):
        splits = ", ".join(loaded)
        raise SourceError(
            f"{source.path}: holds the splits {splits}; hint: name one split's directory in data.files "
            f"({source.path}/{next(iter(loaded), 'train')})"
        )
    return loaded


def _dataset_texts(piece: Piece, field: str, errors: str) -> Iterator[str]:
    dataset = _saved_dataset(piece.source)
    if field not in dataset.column_names:
        raise SourceError(
            f"{piece.source.path}: no column {field!r} (its columns: "
            f"{', '.join(dataset.column_names[:12])}); "
            "hint: data.text_field names the text column"
        )
    stop = piece.stop if piece.stop is not None else len(dataset)
    part = dataset.select_columns([field]).select(range(piece.start, stop))
    for batch in part.iter(batch_size=1024):
        for offset, value in enumerate(batch[field]):
            if isinstance(value, str) and value:
                yield _without_surrogates(value, errors, lambda o=offset: f"{piece.source.path}: row {o}")
