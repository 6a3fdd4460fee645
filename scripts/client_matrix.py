#!/usr/bin/env python3
"""Every popular client library, unchanged, against `embedrank serve`.

Starts `embedrank serve` with all-MiniLM-L6-v2 (embedder) and a cross-encoder (reranker, served as
`ce`) on a free port in 19300-19349, runs each real client (openai, cohere v1/v2, huggingface_hub's
InferenceClient, langchain-openai, langchain-cohere, llama-index) and prints a pass/fail table.
Vectors are compared with what `embedrank embed` prints for the same texts (cosine per text, the
worst one shown); rerank scores with what `embedrank rerank` prints (max abs difference).

Usage:
  python scripts/client_matrix.py --bin target/debug/embedrank --cache-dir .cache/hub \
      --cross-encoder .cache/tiny/tiny-bert-cross-encoder [--tiktoken-cache DIR] \
      [--only langchain_openai] [--serve-arg=--token-ids --serve-arg=model]

langchain-openai's default mode tokenizes with tiktoken (cl100k_base), which downloads its BPE file
unless TIKTOKEN_CACHE_DIR holds it: tests/serve_clients.rs writes that file from the copy compiled
into embedrank (tiktoken-rs) and passes --tiktoken-cache. Exit status 0 when every row passes.
"""

import argparse
import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
import warnings

import numpy as np

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
RERANKER = "ce"
KEY = "sk-matrix"
TEXTS = [
    "hello world",
    "The quick brown fox jumps over the lazy dog.",
    "Embeddings map sentences to vectors; similar meanings end up close together.",
    "café, naïve, Zürich — and 日本語 and emoji 🙂 survive the round trip",
    "A longer passage about retrieval: " + " ".join(f"document {i} talks about topic {i % 7}." for i in range(60)),
]
QUERY = "what is the capital of france"
DOCS = ["Paris is the capital of France.", "Berlin is in Germany.", "The fox is quick.", "France's capital city is Paris."]
COS_MIN = 0.9999
SCORE_TOL = 1e-4


def free_port() -> int:
    for port in range(19300, 19350):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port in 19300-19349")


def cosines(got, want) -> np.ndarray:
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        raise AssertionError(f"shape {got.shape}, expected {want.shape}")
    return (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))


def vec_check(got, want):
    c = cosines(got, want)
    worst = float(c.min())
    return worst >= COS_MIN, f"min cosine {worst:.6f}"


def cli_json(args):
    out = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])} failed: {out.stderr.strip()}")
    return json.loads(out.stdout)


class Matrix:
    def __init__(self, url, expected, scores):
        self.url = url
        self.expected = expected  # MiniLM vectors from the CLI, normalized
        self.scores = scores  # reranker scores by document index from the CLI
        self.rows = []

    def run(self, client, case, fn):
        try:
            ok, detail = fn()
        except Exception as e:  # a client failing is a row of the table, not the end of the run
            ok, detail = False, f"{type(e).__name__}: {str(e)[:160]}"
            if os.environ.get("MATRIX_TRACEBACK"):
                traceback.print_exc()
        self.rows.append((client, case, ok, detail))

    def rank_check(self, pairs):
        """pairs: (index, score) from a client."""
        got = dict(pairs)
        if sorted(got) != list(range(len(DOCS))):
            return False, f"indexes {sorted(got)}"
        diff = max(abs(got[i] - self.scores[i]) for i in got)
        order = [i for i, _ in sorted(pairs, key=lambda p: -p[1])]
        best_first = [p[0] for p in pairs] == order
        return diff <= SCORE_TOL and best_first, f"max score diff {diff:.1e}"


def openai_cases(m: Matrix):
    import openai

    v1 = m.url + "/v1"
    c = openai.OpenAI(base_url=v1, api_key=KEY, max_retries=0, timeout=300)

    def emb(**kw):
        r = c.embeddings.create(model=MINILM, input=TEXTS, **kw)
        return [d.embedding for d in sorted(r.data, key=lambda d: d.index)]

    m.run("openai", "float", lambda: vec_check(emb(encoding_format="float"), m.expected))
    m.run("openai", "base64 (SDK default)", lambda: vec_check(emb(), m.expected))

    def b64():
        rows = emb(encoding_format="base64")
        return vec_check([np.frombuffer(base64.b64decode(x), dtype="<f4") for x in rows], m.expected)

    m.run("openai", "base64 (explicit)", b64)

    def dims():
        got = np.asarray(emb(encoding_format="float", dimensions=64))
        return vec_check(got, m.expected[:, :64])

    m.run("openai", "dimensions=64", dims)

    def token_ids():
        import tiktoken

        enc = tiktoken.get_encoding("cl100k_base")
        r = c.embeddings.create(model=MINILM, input=[enc.encode(t) for t in TEXTS], encoding_format="float")
        return vec_check([d.embedding for d in r.data], m.expected)

    m.run("openai", "cl100k token ids", token_ids)

    def run_async():
        async def go():
            a = openai.AsyncOpenAI(base_url=v1, api_key=KEY, max_retries=0, timeout=300)
            rs = await asyncio.gather(*[a.embeddings.create(model=MINILM, input=[t]) for t in TEXTS])
            await a.close()
            return [r.data[0].embedding for r in rs]

        return vec_check(asyncio.run(go()), m.expected)

    m.run("openai", "async, concurrent", run_async)


def cohere_cases(m: Matrix):
    import cohere

    v1 = cohere.Client(api_key=KEY, base_url=m.url, timeout=300)
    v2 = cohere.ClientV2(api_key=KEY, base_url=m.url, timeout=300)

    def embed_v1():
        r = v1.embed(texts=TEXTS, model=MINILM, input_type="search_document")
        return vec_check(r.embeddings, m.expected)

    m.run("cohere", "v1 embed", embed_v1)

    def embed_v1_types():
        r = v1.embed(texts=TEXTS, model=MINILM, input_type="search_query", embedding_types=["float", "int8"])
        ok, d = vec_check(r.embeddings.float_, m.expected)
        ok8, d8 = vec_check(np.asarray(r.embeddings.int8, dtype=np.float64), m.expected)
        return ok and cosines(r.embeddings.int8, m.expected).min() > 0.99, f"{d}; int8 {d8.split()[-1]}"

    m.run("cohere", "v1 embed float+int8", embed_v1_types)

    def embed_v2():
        types = ["float", "int8", "uint8", "binary", "ubinary", "base64"]
        r = v2.embed(texts=TEXTS, model=MINILM, input_type="search_document", embedding_types=types)
        e = r.embeddings
        ok, detail = vec_check(e.float_, m.expected)
        exp = m.expected
        q = np.round(exp * (127 / np.abs(exp).max(1, keepdims=True))).astype(int)
        bits = np.packbits(exp > 0, axis=1)
        checks = {
            "int8": np.array_equal(np.asarray(e.int8), q),
            "uint8": np.array_equal(np.asarray(e.uint8), q + 128),
            "ubinary": np.array_equal(np.asarray(e.ubinary), bits),
            "binary": np.array_equal(np.asarray(e.binary), bits.astype(int) - 128),
            "base64": vec_check([np.frombuffer(base64.b64decode(x), dtype="<f4") for x in e.base64], exp)[0],
        }
        bad = [k for k, v in checks.items() if not v]
        return ok and not bad and r.texts == TEXTS, detail + (f"; wrong: {bad}" if bad else "; 6 types")

    m.run("cohere", "v2 embed (all types)", embed_v2)

    def embed_v2_dims():
        r = v2.embed(texts=TEXTS, model=MINILM, input_type="clustering", embedding_types=["float"], output_dimension=128)
        return vec_check(r.embeddings.float_, m.expected[:, :128])

    m.run("cohere", "v2 embed output_dimension", embed_v2_dims)

    def rerank_v1():
        r = v1.rerank(query=QUERY, documents=DOCS, model=RERANKER)
        return m.rank_check([(x.index, x.relevance_score) for x in r.results])

    m.run("cohere", "v1 rerank", rerank_v1)

    def rerank_v2():
        r = v2.rerank(query=QUERY, documents=DOCS, model=RERANKER)
        return m.rank_check([(x.index, x.relevance_score) for x in r.results])

    m.run("cohere", "v2 rerank", rerank_v2)


def hf_cases(m: Matrix):
    from huggingface_hub import InferenceClient

    c = InferenceClient(base_url=m.url, api_key=KEY, timeout=300)

    def fe():
        return vec_check(c.feature_extraction(TEXTS), m.expected)

    m.run("huggingface_hub", "feature_extraction", fe)

    def fe_one():
        return vec_check(c.feature_extraction(TEXTS[1]), m.expected[1:2])

    m.run("huggingface_hub", "feature_extraction (one)", fe_one)


def langchain_openai_cases(m: Matrix):
    from langchain_openai import OpenAIEmbeddings

    for label, kw in [("default (tiktoken ids)", {}), ("check_embedding_ctx_length=False", {"check_embedding_ctx_length": False})]:

        def go(kw=kw):
            e = OpenAIEmbeddings(model=MINILM, base_url=m.url + "/v1", api_key=KEY, max_retries=0, **kw)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                docs = e.embed_documents(TEXTS)
                q = e.embed_query(TEXTS[0])
            ok, d = vec_check(docs, m.expected)
            okq, _ = vec_check([q], m.expected[:1])
            return ok and okq, d

        m.run("langchain-openai", label, go)


def langchain_cohere_cases(m: Matrix):
    from langchain_cohere import CohereEmbeddings, CohereRerank

    def emb():
        e = CohereEmbeddings(model=MINILM, base_url=m.url, cohere_api_key=KEY)
        ok, d = vec_check(e.embed_documents(TEXTS), m.expected)
        okq, _ = vec_check([e.embed_query(TEXTS[0])], m.expected[:1])
        return ok and okq, d

    m.run("langchain-cohere", "CohereEmbeddings", emb)

    def rr():
        r = CohereRerank(model=RERANKER, base_url=m.url, cohere_api_key=KEY, top_n=len(DOCS))
        res = r.rerank(documents=DOCS, query=QUERY)
        return m.rank_check([(x["index"], x["relevance_score"]) for x in res])

    m.run("langchain-cohere", "CohereRerank", rr)


def llama_index_cases(m: Matrix):
    from llama_index.core.schema import NodeWithScore, TextNode
    from llama_index.embeddings.openai import OpenAIEmbedding
    from llama_index.postprocessor.cohere_rerank import CohereRerank

    def emb():
        e = OpenAIEmbedding(model_name=MINILM, api_base=m.url + "/v1", api_key=KEY, max_retries=0)
        ok, d = vec_check(e.get_text_embedding_batch(TEXTS), m.expected)
        okq, _ = vec_check([e.get_query_embedding(TEXTS[0])], m.expected[:1])
        return ok and okq, d

    m.run("llama-index", "OpenAIEmbedding", emb)

    def rr():
        r = CohereRerank(model=RERANKER, api_key=KEY, base_url=m.url, top_n=len(DOCS), max_retries=0)
        nodes = [NodeWithScore(node=TextNode(text=d, id_=str(i)), score=0.0) for i, d in enumerate(DOCS)]
        out = r.postprocess_nodes(nodes, query_str=QUERY)
        return m.rank_check([(int(n.node.node_id), n.score) for n in out])

    m.run("llama-index", "CohereRerank", rr)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="the embedrank binary")
    ap.add_argument("--cache-dir", required=True, help="hub cache holding the embedder")
    ap.add_argument("--model", help="the embedder (default sentence-transformers/all-MiniLM-L6-v2)")
    ap.add_argument("--cross-encoder", required=True, help="a cross-encoder folder (served as `ce`)")
    ap.add_argument("--tiktoken-cache", help="TIKTOKEN_CACHE_DIR holding cl100k_base (else tiktoken downloads it)")
    ap.add_argument("--serve-arg", action="append", default=[], help="extra `embedrank serve` argument (repeatable)")
    ap.add_argument("--only", action="append", default=[], help="run only these client groups (e.g. langchain_openai)")
    a = ap.parse_args()
    global MINILM
    MINILM = a.model or MINILM
    if a.tiktoken_cache:
        os.environ["TIKTOKEN_CACHE_DIR"] = a.tiktoken_cache
    # The clients must not reach the real services, whatever the environment says.
    for k in ["OPENAI_API_KEY", "OPENAI_BASE_URL", "CO_API_KEY", "CO_API_URL", "HF_TOKEN"]:
        os.environ.pop(k, None)

    tmp = tempfile.mkdtemp(prefix="client-matrix-")
    expected = cli_json([a.bin, "embed", "-m", MINILM, "--cache-dir", a.cache_dir, "--format", "json", "-q", *TEXTS])
    expected = np.array([d["embedding"] for d in expected["data"]], dtype=np.float64)
    ranked = cli_json([a.bin, "rerank", "-m", a.cross_encoder, "-q", "-Q", QUERY, *DOCS])
    scores = {r["index"]: r["relevance_score"] for r in ranked["results"]}

    port = free_port()
    log = open(os.path.join(tmp, "serve.log"), "w")
    srv = subprocess.Popen(
        [a.bin, "serve", "--port", str(port), "--cache-dir", a.cache_dir, "--api-key", KEY,
         "--request-timeout", "600s", "-m", MINILM, "-m", f"{RERANKER}={a.cross_encoder}", *a.serve_arg],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            if srv.poll() is not None:
                raise RuntimeError(f"server exited with {srv.returncode}: see {log.name}")
            try:
                urllib.request.urlopen(url + "/health", timeout=2)
                break
            except OSError:
                time.sleep(0.2)
        m = Matrix(url, expected, scores)
        groups = [openai_cases, cohere_cases, hf_cases, langchain_openai_cases, langchain_cohere_cases, llama_index_cases]
        for group in groups:
            if a.only and group.__name__.removesuffix("_cases") not in a.only:
                continue
            try:
                group(m)
            except ImportError as e:
                m.rows.append((group.__name__.replace("_cases", ""), "import", False, str(e)))
    finally:
        srv.terminate()
        try:
            srv.wait(timeout=60)
        except subprocess.TimeoutExpired:
            srv.kill()

    w1 = max(len(r[0]) for r in m.rows)
    w2 = max(len(r[1]) for r in m.rows)
    print(f"| {'client':<{w1}} | {'case':<{w2}} | result | agreement with the CLI |")
    print(f"|{'-' * (w1 + 2)}|{'-' * (w2 + 2)}|--------|------------------------|")
    for client, case, ok, detail in m.rows:
        print(f"| {client:<{w1}} | {case:<{w2}} | {'pass' if ok else 'FAIL'}   | {detail} |")
    failed = sum(1 for r in m.rows if not r[2])
    print(f"\n{len(m.rows) - failed} of {len(m.rows)} pass (server on port {port}, log {log.name})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
