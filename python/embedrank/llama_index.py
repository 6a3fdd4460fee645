"""LlamaIndex adapter: :class:`EmbedrankEmbedding`, a ``llama_index.core`` ``BaseEmbedding``.

Importing this module imports llama-index-core (``import embedrank`` alone never does)::

    from llama_index.core import Settings
    from embedrank.llama_index import EmbedrankEmbedding
    Settings.embed_model = EmbedrankEmbedding("sentence-transformers/all-MiniLM-L6-v2")
"""

from __future__ import annotations

import asyncio
from typing import Any, List, Optional

try:
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.bridge.pydantic import Field, PrivateAttr
except ImportError as e:  # pragma: no cover - exercised only without the framework
    raise ImportError("embedrank.llama_index needs llama-index-core: pip install 'embedrank[llama-index]'") from e

from ._embedrank import Embedder

__all__ = ["EmbedrankEmbedding"]


class EmbedrankEmbedding(BaseEmbedding):
    """LlamaIndex embeddings computed in-process by embedrank.

    ``model_name``, ``device``, ``dtype``, ``cache_dir``, ``max_length``: as
    :class:`embedrank.Embedder`. ``query_prompt_name`` / ``query_instruction`` apply to queries,
    ``text_prompt_name`` to documents (nodes).
    """

    device: str = Field(default="cpu", description="cpu, cuda[:N], metal[:N] or auto")
    dtype: Optional[str] = Field(default=None, description="f32, f16, bf16 or int8")
    max_length: Optional[int] = Field(default=None, description="tokens per input")
    normalize: Optional[bool] = Field(default=True, description="L2-normalize the vectors")
    dimensions: Optional[int] = Field(default=None, description="Matryoshka truncation")
    query_prompt_name: Optional[str] = Field(default=None)
    query_instruction: Optional[str] = Field(default=None)
    text_prompt_name: Optional[str] = Field(default=None)

    _embedder: Any = PrivateAttr()

    def __init__(
        self,
        model_name: str,
        *,
        cache_dir: Any = None,
        embed_batch_size: int = 32,
        **kwargs: Any,
    ) -> None:
        super().__init__(model_name=model_name, embed_batch_size=embed_batch_size, **kwargs)
        self._embedder = Embedder(
            model_name, device=self.device, dtype=self.dtype, cache_dir=cache_dir, max_length=self.max_length
        )

    @classmethod
    def class_name(cls) -> str:
        return "EmbedrankEmbedding"

    def _encode(self, texts: List[str], **prompt: Any) -> List[List[float]]:
        return self._embedder.encode(
            texts,
            batch_size=self.embed_batch_size,
            normalize=self.normalize,
            dimensions=self.dimensions,
            convert_to_numpy=False,
            **{k: v for k, v in prompt.items() if v is not None},
        )

    def _get_query_embedding(self, query: str) -> List[float]:
        return self._encode([query], prompt_name=self.query_prompt_name, instruction=self.query_instruction)[0]

    def _get_text_embedding(self, text: str) -> List[float]:
        return self._encode([text], prompt_name=self.text_prompt_name)[0]

    def _get_text_embeddings(self, texts: List[str]) -> List[List[float]]:
        return self._encode(list(texts), prompt_name=self.text_prompt_name)

    # The compute releases the GIL, so a worker thread keeps the event loop free.
    async def _aget_query_embedding(self, query: str) -> List[float]:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> List[float]:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: List[str]) -> List[List[float]]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)
