"""sentence-transformers' indexing rate on the texts `zoark-bench search --peers` gives it.

Reads `{"texts": [...], "batch_size": N}` on stdin, loads the model directory named by the first
argument on the CPU, embeds one batch to warm up, then all texts in batches of N (mean pooling,
normalised: what Zoark's indexer computes), and prints `{"chunks_per_s": …, "version": …}`.
Installed and run by `cargo xtask bench search --peers`.
"""

import json
import sys
import time

import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer

request = json.load(sys.stdin)
texts = request["texts"]
batch_size = request["batch_size"]
model = SentenceTransformer(sys.argv[1], device="cpu")
model.encode(texts[:batch_size], batch_size=batch_size, normalize_embeddings=True)
started = time.perf_counter()
model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True)
seconds = time.perf_counter() - started
json.dump(
    {
        "chunks_per_s": len(texts) / seconds,
        "version": f"sentence-transformers {sentence_transformers.__version__}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)",
    },
    sys.stdout,
)
