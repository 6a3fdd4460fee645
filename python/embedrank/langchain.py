"""LangChain adapter: :class:`EmbedrankEmbeddings`, a ``langchain_core.embeddings.Embeddings``.

Importing this module imports langchain-core (``import embedrank`` alone never does)::

    from embedrank.langchain import EmbedrankEmbeddings
    emb = EmbedrankEmbeddings("sentence-transformers/all-MiniLM-L6-v2")
    vectors = emb.embed_documents(["first text", "second text"])
    query = emb.embed_query("what is the first text about?")
"""

from __future__ import annotations

import asyncio
from typing import Any, List, Optional

try:
    from langchain_core.embeddings import Embeddings
except ImportError as e:  # pragma: no cover - exercised only without the framework
    raise ImportError("embedrank.langchain needs langchain-core: pip install 'embedrank[langchain]'") from e

from ._embedrank import Embedder

__all__ = ["EmbedrankEmbeddings"]


class EmbedrankEmbeddings(Embeddings):
    """LangChain embeddings computed in-process by embedrank.

    ``model``, ``device``, ``dtype``, ``cache_dir``, ``max_length``: as :class:`embedrank.Embedder`
    (or pass a loaded ``embedder``). ``query_prompt_name`` / ``query_instruction`` apply to
    :meth:`embed_query` only, ``document_prompt_name`` to :meth:`embed_documents` only (for models
    with query/document prompts, e.g. Qwen3-Embedding's instruction on queries).
    """

    def __init__(
        self,
        model: Optional[str] = None,
        *,
        device: str = "cpu",
        dtype: Optional[str] = None,
        cache_dir: Any = None,
        max_length: Optional[int] = None,
        batch_size: int = 32,
        normalize: Optional[bool] = True,
        dimensions: Optional[int] = None,
        query_prompt_name: Optional[str] = None,
        query_instruction: Optional[str] = None,
        document_prompt_name: Optional[str] = None,
        embedder: Optional[Embedder] = None,
    ) -> None:
        if embedder is None:
            if model is None:
                raise ValueError("give a model (or a loaded embedder)")
            embedder = Embedder(model, device=device, dtype=dtype, cache_dir=cache_dir, max_length=max_length)
        self.embedder = embedder
        self.batch_size = batch_size
        self.normalize = normalize
        self.dimensions = dimensions
        self.query_prompt_name = query_prompt_name
        self.query_instruction = query_instruction
        self.document_prompt_name = document_prompt_name

    def _encode(self, texts: List[str], **prompt: Any) -> List[List[float]]:
        out = self.embedder.encode(
            texts,
            batch_size=self.batch_size,
            normalize=self.normalize,
            dimensions=self.dimensions,
            convert_to_numpy=False,
            **{k: v for k, v in prompt.items() if v is not None},
        )
        return out

    def embed_documents(self, texts: List[str]) -> List[List[float]]:
        return self._encode(list(texts), prompt_name=self.document_prompt_name)

    def embed_query(self, text: str) -> List[float]:
        return self._encode([text], prompt_name=self.query_prompt_name, instruction=self.query_instruction)[0]

    # The compute releases the GIL, so a worker thread keeps the event loop free.
    async def aembed_documents(self, texts: List[str]) -> List[List[float]]:
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> List[float]:
        return await asyncio.to_thread(self.embed_query, text)
