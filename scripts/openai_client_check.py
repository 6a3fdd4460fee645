#!/usr/bin/env python3
"""Drive a running `embedrank serve` with the official `openai` Python client.

Embeds the same texts in float and base64 mode (base64 is what the SDK sends when the caller gives no
encoding_format) and compares both with the vectors `embedrank embed` printed for those texts.

Usage:
  python scripts/openai_client_check.py --base-url http://127.0.0.1:PORT/v1 --model MODEL \
      --expected expected.json --texts texts.json [--api-key KEY]

expected.json is the output of `embedrank embed --format json`; texts.json is a JSON list of strings.
Exit status 0 when every vector matches within 1e-5 (max abs difference), 1 otherwise.
"""

import argparse
import base64
import json
import sys

import numpy as np
import openai


def as_vector(embedding) -> np.ndarray:
    # With an explicit encoding_format="base64" the SDK hands back the server's string untouched;
    # it decodes only when it chose base64 itself (the default).
    if isinstance(embedding, str):
        return np.frombuffer(base64.b64decode(embedding), dtype="<f4")
    return np.asarray(embedding, dtype=np.float32)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--expected", required=True)
    ap.add_argument("--texts", required=True)
    ap.add_argument("--api-key", default="unused")
    ap.add_argument("--tol", type=float, default=1e-5)
    a = ap.parse_args()

    texts = json.load(open(a.texts))
    expected = np.array([row["embedding"] for row in json.load(open(a.expected))["data"]], dtype=np.float32)
    client = openai.OpenAI(base_url=a.base_url, api_key=a.api_key, max_retries=0, timeout=120)

    ok = True
    for mode in ["float", "base64", None]:
        kwargs = {} if mode is None else {"encoding_format": mode}
        resp = client.embeddings.create(model=a.model, input=texts, **kwargs)
        rows = sorted(resp.data, key=lambda d: d.index)
        if mode == "base64" and not all(isinstance(d.embedding, str) for d in rows):
            print("base64: server did not send base64 strings")
            ok = False
        got = np.stack([as_vector(d.embedding) for d in rows])
        diff = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("inf")
        label = mode or "default (SDK sends base64)"
        print(f"{label}: shape {got.shape}, max abs diff {diff:.2e}, usage {resp.usage.prompt_tokens} tokens")
        ok &= diff <= a.tol and resp.model == a.model and resp.usage.prompt_tokens > 0

    # A single string and Matryoshka dimensions through the SDK.
    one = client.embeddings.create(model=a.model, input=texts[0], dimensions=64, encoding_format="float")
    v = np.array(one.data[0].embedding, dtype=np.float32)
    print(f"dimensions=64: length {len(v)}, norm {np.linalg.norm(v):.6f}")
    ok &= len(v) == 64 and abs(float(np.linalg.norm(v)) - 1.0) < 1e-4

    # Errors surface as the SDK's typed exceptions.
    try:
        client.embeddings.create(model="no-such-model", input="x")
        print("unknown model: no error raised")
        ok = False
    except openai.NotFoundError as e:
        print(f"unknown model: NotFoundError ({e.status_code})")

    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
