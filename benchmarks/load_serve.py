"""Bounded load test of ``seeinpairs serve`` on loopback: N diagnose requests with concurrency C
against a tiny offline model; prints requests/s, p50/p95 latency and the failed count.

    python benchmarks/load_serve.py --requests 40 --concurrency 4
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--selector", default="random")
    args = parser.parse_args()

    import httpx
    import numpy as np

    from seeinpairs.backends.tiny import build_tiny_vlm
    from seeinpairs.datasets.synthetic import SyntheticConfig, generate_synthetic
    from seeinpairs.serve.app import create_app
    from seeinpairs.serve.background import serve_in_thread
    from seeinpairs.serve.schemas import ServeConfig

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        table, task = generate_synthetic(root / "data", SyntheticConfig(n_patients=40, seed=3))
        model = build_tiny_vlm("qwen2_vl", root / "model", texts=list(task.classes) + [task.question], seed=0)
        config = ServeConfig.from_dict({"task": task.model_dump(), "data": {"manifest": str(root / "data" / "manifest.csv")},
                                        "selector": {"name": args.selector, "k": args.k},
                                        "model": {"name": str(model), "label": "tiny"}, "auth_token": "bench"})
        app = create_app(config)
        with serve_in_thread(app) as url:
            queries = [c for c in table if c.split == "test"]
            payloads = [Path(queries[i % len(queries)].image).read_bytes() for i in range(args.requests)]
            client = httpx.Client(base_url=url, headers={"Authorization": "Bearer bench"}, timeout=120)
            client.post("/v1/diagnose", files={"image": ("q.png", payloads[0], "image/png")})  # warm-up

            def one(data: bytes) -> tuple[float, bool]:
                start = time.perf_counter()
                try:
                    ok = client.post("/v1/diagnose", files={"image": ("q.png", data, "image/png")}).status_code == 200
                except httpx.HTTPError:
                    ok = False
                return time.perf_counter() - start, ok

            start = time.perf_counter()
            with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
                results = list(pool.map(one, payloads))
            elapsed = time.perf_counter() - start
    latencies = np.array([t for t, _ in results]) * 1000
    failed = sum(1 for _, ok in results if not ok)
    print(f"requests={args.requests} concurrency={args.concurrency} selector={args.selector} k={args.k}")
    print(f"throughput: {args.requests / elapsed:.2f} requests/s over {elapsed:.1f} s")
    print(f"latency: p50 {np.percentile(latencies, 50):.0f} ms, p95 {np.percentile(latencies, 95):.0f} ms")
    print(f"failed: {failed}")


if __name__ == "__main__":
    main()
