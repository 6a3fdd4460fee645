"""API behaviour: shapes, options, errors as Python exceptions, the GIL released during compute."""

import subprocess
import sys
import threading

import numpy as np
import pytest

import embedrank
from conftest import MINILM, TEXTS


def test_properties_and_repr(minilm):
    assert minilm.dim == 384
    assert minilm.max_length == 256
    assert "all-MiniLM-L6-v2" in minilm.model_name
    assert "Embedder(" in repr(minilm) and "dim=384" in repr(minilm)
    assert embedrank.__version__


def test_encode_shapes_and_list_output(minilm):
    assert minilm.encode([]).shape == (0, 384)
    rows = minilm.encode(["a", "b"], convert_to_numpy=False)
    assert isinstance(rows, list) and len(rows) == 2 and len(rows[0]) == 384 and isinstance(rows[0][0], float)
    assert np.array_equal(np.asarray(rows, dtype=np.float32), minilm.encode(["a", "b"]))
    one = minilm.encode("a", convert_to_numpy=False)
    assert isinstance(one, list) and len(one) == 384
    arr = minilm.encode(["a"])
    arr[0, 0] = 5.0  # writable, like sentence-transformers' arrays
    assert minilm.encode(("a", "b")).shape == (2, 384)


def test_max_length_truncates(hub):
    short = embedrank.Embedder(MINILM, cache_dir=[str(hub)], max_length=8)
    assert short.max_length == 8
    long_text = TEXTS[4]
    # Cut at 8 tokens, the long text and its first few words embed the same.
    assert np.allclose(short.encode(long_text), short.encode(long_text[:60]), atol=1e-6)


def test_bad_input_raises_value_error(minilm):
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        minilm.encode(["a"], batch_size=0)
    with pytest.raises(ValueError, match="dimensions must be between"):
        minilm.encode(["a"], dimensions=4)
    with pytest.raises(ValueError, match="not both"):
        minilm.encode(["a"], prompt="x", prompt_name="query")
    with pytest.raises(ValueError, match="no prompt named `nope`"):
        minilm.encode(["a"], prompt_name="nope")
    with pytest.raises(ValueError, match="takes no instruction"):
        minilm.encode(["a"], instruction="find things")
    with pytest.raises(TypeError, match="texts must be a str or a list of str"):
        minilm.encode(42)
    with pytest.raises(TypeError):
        minilm.encode([1, 2])


def test_bad_model_arguments(hub, tiny):
    with pytest.raises(embedrank.EmbedrankError, match="no/such-model") as e:
        embedrank.Embedder("no/such-model", cache_dir=str(hub))
    assert isinstance(e.value, RuntimeError)
    with pytest.raises(ValueError, match="unknown dtype `f64`"):
        embedrank.Embedder(MINILM, cache_dir=str(hub), dtype="f64")
    with pytest.raises(ValueError, match="bad device `tpu`"):
        embedrank.Embedder(MINILM, cache_dir=str(hub), device="tpu")
    with pytest.raises(ValueError, match="max_length must be at least 1"):
        embedrank.Embedder(MINILM, cache_dir=str(hub), max_length=0)
    with pytest.raises(ValueError, match="exceeds the model's max_position_embeddings"):
        embedrank.Embedder(MINILM, cache_dir=str(hub), max_length=100_000)
    with pytest.raises(ValueError, match="is a reranker"):
        embedrank.Embedder(str(tiny / "tiny-bert-cross-encoder"))
    with pytest.raises(ValueError, match="is an embedding model"):
        embedrank.Reranker(MINILM, cache_dir=str(hub))
    with pytest.raises(TypeError, match="cache_dir"):
        embedrank.Embedder(MINILM, cache_dir=3)


def test_reranker_errors_and_edges(tiny):
    rr = embedrank.Reranker(str(tiny / "tiny-bert-cross-encoder"))
    assert rr.rank("q", []) == []
    with pytest.raises(ValueError, match="top_k must be at least 1"):
        rr.rank("q", ["d"], top_k=0)
    with pytest.raises(ValueError, match="batch_size"):
        rr.predict([("q", "d")], batch_size=0)
    with pytest.raises(TypeError, match="pairs"):
        rr.predict(["just one string"])
    assert len(rr.rank("q", ["a", "b", "c"], top_k=10)) == 3


def test_import_does_not_load_frameworks():
    code = "import sys, embedrank; print([m for m in ('langchain_core', 'llama_index') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_gil_released_during_encode(minilm):
    """A thread doing Python work runs while encode computes.

    With a switch interval of 100 s the interpreter never takes the GIL from a running thread, so
    the worker can only run while the main thread gives the GIL up itself: inside encode, if encode
    releases it. The worker notes the main thread's phase when it runs; if encode held the GIL, the
    worker would first run at `join` and see "after".
    """
    texts = TEXTS * 4
    old = sys.getswitchinterval()
    seen = []
    for _attempt in range(5):  # the OS might not schedule the worker within one encode; retry
        phase = ["before"]
        go = threading.Event()

        def worker():
            go.wait()
            start = phase[0]
            total = sum(i * i for i in range(20000))  # Python work, holding the GIL
            seen.append((start, phase[0], total))

        t = threading.Thread(target=worker)
        t.start()
        sys.setswitchinterval(100.0)
        try:
            go.set()
            phase[0] = "encoding"
            minilm.encode(texts)
            phase[0] = "after"
        finally:
            sys.setswitchinterval(old)
        t.join()
        if seen[-1][:2] == ("encoding", "encoding"):
            break
    assert seen[-1][:2] == ("encoding", "encoding"), f"worker never ran during encode: {seen}"


def test_concurrent_encodes_agree(minilm):
    want = minilm.encode(TEXTS)
    out = [None] * 3

    def run(i):
        out[i] = minilm.encode(TEXTS)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(o, want) for o in out)
