"""The package's vectors and scores are the CLI's, bit for bit (same engine, same batching)."""

import numpy as np

from conftest import MINILM, TEXTS, same_bits

QUERY = "which document is about topic 3?"
DOCS = [
    "document number 3 about topic 3",
    "the weather today is sunny",
    "topic three: a long discussion of the third topic",
    "hello world",
    "Rust embeddings, computed locally",
]


def test_minilm_matches_cli_exactly(minilm, cli, tmp_path):
    ours = minilm.encode(TEXTS)
    theirs = cli.embed(MINILM, TEXTS, tmp_path)
    assert ours.dtype == np.float32 and ours.shape == (len(TEXTS), 384)
    assert same_bits(ours, theirs)


def test_minilm_options_match_cli_exactly(minilm, cli, tmp_path):
    ours = minilm.encode(TEXTS, batch_size=8, prompt="query: ", dimensions=128)
    theirs = cli.embed(MINILM, TEXTS, tmp_path, "--batch-size", "8", "--prompt", "query: ", "--dimensions", "128")
    assert ours.shape == (len(TEXTS), 128)
    assert same_bits(ours, theirs)
    raw = minilm.encode(TEXTS[:3], normalize=False)
    assert same_bits(raw, cli.embed(MINILM, TEXTS[:3], tmp_path, "--no-normalize"))
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)


def test_single_text_is_1d_and_matches_batch(minilm):
    one = minilm.encode("hello world")
    assert one.shape == (384,)
    assert same_bits(one, minilm.encode(["hello world"])[0])
    assert abs(float(np.linalg.norm(one)) - 1.0) < 1e-5


def test_qwen3_prompts_and_instruction_match_cli(tiny, cli, tmp_path):
    from embedrank import Embedder

    model = str(tiny / "tiny-qwen3-embedding")
    emb = Embedder(model)
    assert emb.prompts == ["document", "query"]
    texts = TEXTS[:6]
    assert same_bits(emb.encode(texts, prompt_name="query"), cli.embed(model, texts, tmp_path, "--prompt-name", "query"))
    assert same_bits(
        emb.encode(texts, instruction="Find the fox"), cli.embed(model, texts, tmp_path, "--instruction", "Find the fox")
    )
    assert not same_bits(emb.encode(texts, prompt_name="query"), emb.encode(texts))


def test_cross_encoder_rank_matches_cli(tiny, cli):
    from embedrank import Reranker

    model = str(tiny / "tiny-bert-cross-encoder")
    rr = Reranker(model)
    ours = rr.rank(QUERY, DOCS)
    theirs = cli.rerank(model, QUERY, DOCS, "--batch-size", "32")
    assert [r["corpus_id"] for r in ours] == [r["index"] for r in theirs]
    for a, b in zip(ours, theirs):
        # The CLI prints the shortest decimal that round-trips an f32.
        assert np.float32(a["score"]) == np.float32(b["relevance_score"])
    scores = [r["score"] for r in ours]
    assert scores == sorted(scores, reverse=True)


def test_qwen3_reranker_matches_cli(tiny, cli):
    from embedrank import Reranker

    model = str(tiny / "tiny-Qwen3-Reranker")
    rr = Reranker(model)
    ours = rr.rank(QUERY, DOCS, top_k=3, return_documents=True, instruction="Find topic 3")
    theirs = cli.rerank(model, QUERY, DOCS, "--batch-size", "32", "--top-n", "3", "--instruction", "Find topic 3")
    assert len(ours) == 3
    assert [r["corpus_id"] for r in ours] == [r["index"] for r in theirs]
    assert [np.float32(r["score"]) for r in ours] == [np.float32(r["relevance_score"]) for r in theirs]
    assert [r["text"] for r in ours] == [DOCS[r["corpus_id"]] for r in ours]


def test_predict_agrees_with_rank(tiny):
    from embedrank import Reranker

    rr = Reranker(str(tiny / "tiny-bert-cross-encoder"))
    scores = rr.predict([(QUERY, d) for d in DOCS])
    assert scores.dtype == np.float32 and scores.shape == (len(DOCS),)
    by_id = {r["corpus_id"]: r["score"] for r in rr.rank(QUERY, DOCS)}
    # Pairs of one query batch the same way in both calls here, but predict pads per pair list.
    assert np.allclose(scores, [by_id[i] for i in range(len(DOCS))], atol=1e-5)
    single = rr.predict((QUERY, DOCS[0]))
    assert isinstance(single, float) and abs(single - by_id[0]) < 1e-5
    assert rr.predict([]).shape == (0,)
