"""embedrank: local text embeddings and reranking, computed by the embedrank Rust runtime.

    >>> from embedrank import Embedder, Reranker
    >>> emb = Embedder("sentence-transformers/all-MiniLM-L6-v2")
    >>> emb.encode(["hello world"]).shape
    (1, 384)

Adapters (importing their framework only when imported): ``embedrank.langchain`` and
``embedrank.llama_index``. See docs/python.md.
"""

from ._embedrank import Embedder, EmbedrankError, Reranker, __version__

__all__ = ["Embedder", "Reranker", "EmbedrankError", "__version__"]
