#!/usr/bin/env python3
"""A synthetic corpus of short texts for the corpus-job memory test (docs/corpus.md): N JSON lines
`{"id": "s<i>", "text": "<4 to 12 words>"}` (about 10 MiniLM tokens each), deterministic for a seed.
Write it outside the repository (/tmp or .cache), never commit it.

    .venv/bin/python scripts/gen_synthetic_corpus.py -n 2000000 -o /tmp/synth-2m.jsonl
"""

import argparse
import json
import random

WORDS = (
    "the of and a in to is was for on with as by at from that this which protein cell gene study "
    "patients cancer expression levels human model data analysis results effect treatment increased "
    "risk clinical mice response function disease associated activity role tissue brain blood "
    "vector index corpus retrieval embedding shard search query document neural network training "
    "river mountain city market music history science language garden winter summer ocean light"
).split()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, required=True, help="documents")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--seed", type=int, default=20)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    with open(a.output, "w", encoding="utf-8") as f:
        buf = []
        for i in range(a.n):
            text = " ".join(rng.choices(WORDS, k=rng.randint(4, 12)))
            buf.append(json.dumps({"id": f"s{i}", "text": text}))
            if len(buf) == 10000:
                f.write("\n".join(buf) + "\n")
                buf.clear()
        if buf:
            f.write("\n".join(buf) + "\n")


if __name__ == "__main__":
    main()
