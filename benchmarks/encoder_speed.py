"""ONNX Runtime against PyTorch: encode MovieLens titles, side by side, one run.

    .venv/bin/python benchmarks/encoder_speed.py [--data ../shared/data/ml-100k] [--repeats 3]

Both backends run the same mean-pooled all-MiniLM-L6-v2 on the same titles
and batch size, alternating, on whatever device they find (CPU here). Writes
benchmarks/results/encoder_speed.json and a bar chart next to it.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from models.encoder import OnnxEncoder, ensure_exported
from models.encoder.torch_encoder import TorchEncoder
from streams.workload import movielens_workload

from _results import RESULTS, save


def main() -> None:
    default_data = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=default_data)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto", help="ONNX Runtime device: auto, cpu, cuda")
    args = parser.parse_args()

    titles = [item["title"] for item in movielens_workload(args.data, max_users=1).items]
    onnx = OnnxEncoder(ensure_exported(), device=args.device, batch_size=args.batch_size)
    torch_enc = TorchEncoder(batch_size=args.batch_size)
    backends = {"onnxruntime": onnx, "pytorch": torch_enc}
    for enc in backends.values():  # warm-up: first calls allocate and compile
        enc.encode(titles[:128])

    seconds: dict[str, list[float]] = {name: [] for name in backends}
    outputs: dict[str, np.ndarray] = {}
    for _ in range(args.repeats):
        for name, enc in backends.items():
            t0 = time.perf_counter()
            outputs[name] = enc.encode(titles)
            seconds[name].append(time.perf_counter() - t0)

    cosine = np.sum(outputs["onnxruntime"] * outputs["pytorch"], axis=1)
    rate = {name: len(titles) / statistics.median(s) for name, s in seconds.items()}
    result = {
        "texts": len(titles),
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "machine": platform.processor() or platform.machine(),
        "onnx_providers": onnx.providers,
        "seconds": seconds,
        "texts_per_second_median": {k: round(v, 1) for k, v in rate.items()},
        "speedup_onnx_over_pytorch": round(rate["onnxruntime"] / rate["pytorch"], 2),
        "min_cosine_onnx_vs_pytorch": float(cosine.min()),
    }
    save(
        RESULTS / "encoder_speed.json",
        result,
        {"median": rate},
        ylabel="titles / second (median)",
        title="all-MiniLM-L6-v2 encode, same run",
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
