"""Corpus, tokenizer and token dataset: prepared once, cached by content hash, shared by all ranks.

May import: the base helpers only.
"""

from orchestrator.data.dataset import TokenDataset, prepare_dataset

__all__ = ["TokenDataset", "prepare_dataset"]
