"""Built-in corpora that need no download."""

from __future__ import annotations


def python_docs_text() -> str:
    """The reference text Python ships for `help()`: real English prose and code, about 460 KB."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[name] for name in sorted(topics))


CORPORA = {"python-docs": python_docs_text}


def load_corpus(name: str) -> str:
    try:
        return CORPORA[name]()
    except KeyError:
        raise ValueError(f"unknown corpus {name!r}; known: {', '.join(CORPORA)}") from None
