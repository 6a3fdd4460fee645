"""LangChain and LlamaIndex adapters, driven through the real libraries."""

import numpy as np
import pytest

from conftest import MINILM


@pytest.fixture(scope="module")
def documents():
    return [
        "Paris is the capital of France.",
        "The mitochondria is the powerhouse of the cell.",
        "Rust is a systems programming language focused on safety.",
        "Bananas are rich in potassium.",
    ]


def test_langchain_embeddings(minilm, hub, documents):
    from langchain_core.embeddings import Embeddings
    from langchain_core.vectorstores import InMemoryVectorStore

    from embedrank.langchain import EmbedrankEmbeddings

    emb = EmbedrankEmbeddings(MINILM, cache_dir=str(hub))
    assert isinstance(emb, Embeddings)
    vecs = emb.embed_documents(documents)
    assert isinstance(vecs, list) and isinstance(vecs[0], list) and isinstance(vecs[0][0], float)
    assert np.array_equal(np.asarray(vecs, dtype=np.float32), minilm.encode(documents))
    q = emb.embed_query("What is the capital of France?")
    assert np.array_equal(np.asarray(q, dtype=np.float32), minilm.encode("What is the capital of France?"))

    store = InMemoryVectorStore.from_texts(documents, embedding=emb)
    hits = store.similarity_search("Which language is memory safe?", k=1)
    assert hits[0].page_content == documents[2]

    shared = EmbedrankEmbeddings(embedder=minilm, dimensions=64)
    assert len(shared.embed_query("x")) == 64


def test_langchain_async(minilm, documents):
    import asyncio

    from embedrank.langchain import EmbedrankEmbeddings

    emb = EmbedrankEmbeddings(embedder=minilm)
    vecs = asyncio.run(emb.aembed_documents(documents))
    assert np.array_equal(np.asarray(vecs, dtype=np.float32), minilm.encode(documents))


def test_llama_index_embedding(minilm, hub, documents):
    from llama_index.core import VectorStoreIndex
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.schema import TextNode

    from embedrank.llama_index import EmbedrankEmbedding

    emb = EmbedrankEmbedding(MINILM, cache_dir=str(hub), embed_batch_size=2)
    assert isinstance(emb, BaseEmbedding)
    assert emb.model_name == MINILM and emb.class_name() == "EmbedrankEmbedding"
    batch = emb.get_text_embedding_batch(documents)
    assert np.array_equal(np.asarray(batch, dtype=np.float32), minilm.encode(documents))
    q = emb.get_query_embedding("What is the capital of France?")
    assert np.array_equal(np.asarray(q, dtype=np.float32), minilm.encode("What is the capital of France?"))

    nodes = [TextNode(text=d, id_=str(i)) for i, d in enumerate(documents)]
    index = VectorStoreIndex(nodes, embed_model=emb)
    hits = index.as_retriever(similarity_top_k=1).retrieve("Which fruit has potassium?")
    assert hits[0].node.get_content() == documents[3]


def test_llama_index_async(hub, documents, minilm):
    import asyncio

    from embedrank.llama_index import EmbedrankEmbedding

    emb = EmbedrankEmbedding(MINILM, cache_dir=str(hub), dimensions=128)
    q = asyncio.run(emb.aget_query_embedding("bananas"))
    assert np.array_equal(np.asarray(q, dtype=np.float32), minilm.encode("bananas", dimensions=128))
