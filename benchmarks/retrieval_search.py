"""Is exact torch search fast enough for the RGCL index, or does it need faiss?

Times `RetrievalIndex.search` (exact cosine: one matrix product + topk, torch) against a numpy brute force
(the same product + argpartition) at Hateful Memes scale (8,500 training memes x 1,024-d embeddings, the
RGCL recipe's) and at MMHS150K scale (134,823 x 1,024), for a training batch (64 queries) and an
evaluation split (1,000 queries); prints ms per call and the ratio numpy / torch in the same process.
faiss-cpu is not a dependency of hm_hf: an exact flat faiss index does the same product, so it can only
matter where this exact search is too slow, which the numbers below say it is not at these sizes.

    python benchmarks/retrieval_search.py [--tiny]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hm_hf.retrieval.index import RetrievalIndex  # noqa: E402


def _time(fn, repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1000


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="small sizes: only that it runs")
    parser.add_argument("--k", type=int, default=20)
    args = parser.parse_args(argv)
    sizes = [(500, 64)] if args.tiny else [(8_500, 1_024), (134_823, 1_024)]
    rng = np.random.default_rng(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; k = {args.k}")
    print(f"{'index':>10} {'dim':>5} {'queries':>8} {'torch ms':>10} {'numpy ms':>10} {'numpy/torch':>12}")
    for n, dim in sizes:
        vectors = rng.standard_normal((n, dim), dtype=np.float32)
        index = RetrievalIndex(dim)
        index.add(torch.from_numpy(vectors), rng.integers(0, 2, n).tolist(), list(range(n)), "bench")
        unit = index.vectors.numpy()
        for q in (64, 1_000):
            queries = rng.standard_normal((q, dim), dtype=np.float32)
            tq = torch.from_numpy(queries)

            def numpy_search():
                sims = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ unit.T
                top = np.argpartition(-sims, args.k, axis=1)[:, :args.k]
                return np.take_along_axis(top, np.argsort(-np.take_along_axis(sims, top, 1), axis=1), 1)

            repeats = 3 if n > 50_000 else 10
            t_torch = _time(lambda: index.search(tq, args.k), repeats)
            t_numpy = _time(numpy_search, repeats)
            print(f"{n:>10,} {dim:>5} {q:>8,} {t_torch:>10.1f} {t_numpy:>10.1f} {t_numpy / t_torch:>11.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
