"""ONNX Runtime variants against PyTorch eager: items/s by batch size and text length, one run.

    .venv/bin/python benchmarks/encoder_speed.py [--quick] [--data ../shared/data/ml-100k]
        [--repeats 3] [--threads N] [--device auto|cpu|cuda] [--out PATH]

Every variant encodes the same texts at the same batch size, alternating
(the order rotates each repeat), on the device found (CPU here; on a GPU,
PyTorch eager and ONNX Runtime fp32 and fp16 with I/O binding run on CUDA):

- ``pytorch-eager``: transformers + torch, the reference (`TorchEncoder`);
- ``ort-fp32``: the exported graph as is (ONNX Runtime's own optimisations;
  the default);
- ``ort-fp32-optimised``: the transformer-fused graph;
- ``ort-int8``: the fused graph with uint8 weights (CPU only);
- ``ort-fp16``: the fused graph in half precision with I/O binding (CUDA only).

Texts, all from MovieLens-100K and deterministic: the titles as they are
(~10 tokens), and texts of exactly 32 and 128 tokens (titles and genre words
of consecutive items, joined, then cut at that many tokens by both
tokenizers). Each variant's cosine agreement with PyTorch eager is measured
on the texts it encoded. Writes benchmarks/results/encoder_speed.json and a
plot of items/s against batch size beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from models.encoder import OnnxEncoder, ensure_exported
from models.encoder.torch_encoder import TorchEncoder
from streams.workload import movielens_workload

from _results import RESULTS

EAGER = "pytorch-eager"
FP32_PLAIN, FP32, INT8, FP16 = "ort-fp32", "ort-fp32-optimised", "ort-int8", "ort-fp16"
#: (label, tokens per text: None keeps the titles as they are, max_length)
TEXTS = {"titles": (None, 256), "32 tokens": (32, 32), "128 tokens": (128, 128)}
TARGETS = {
    "fp32": {"variant": FP32_PLAIN, "speedup": 1.5, "min_cosine": 0.9999},
    "int8": {"variant": INT8, "speedup": 3.0, "mean_cosine": 0.99},
}


def build_texts(items: Sequence[dict], tokens: int | None, n: int) -> list[str]:
    """``n`` texts: titles, or runs of "title (genres)." long enough to be cut at ``tokens``.

    Text ``i`` starts at item ``7 i`` and takes the items after it, so the
    texts differ from one another and from the titles.
    """
    if tokens is None:
        return [items[i % len(items)]["title"] for i in range(n)]
    # About 1.3 tokens a word; 2x that leaves every text longer than `tokens`.
    words = 2 * tokens
    texts = []
    for i in range(n):
        parts: list[str] = []
        j = 7 * i
        while sum(len(p.split()) for p in parts) < words:
            item = items[j % len(items)]
            parts.append(f"{item['title']} ({', '.join(item['tags'])}).")
            j += 1
        texts.append(" ".join(parts))
    return texts


def timed(encode: Callable[[list[str]], np.ndarray], texts: list[str]) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    out = encode(texts)
    return time.perf_counter() - start, out


def run(args: argparse.Namespace) -> dict:
    threads = args.threads or os.cpu_count() or 1
    import torch

    torch.set_num_threads(threads)
    cuda = "CUDAExecutionProvider" in ort.get_available_providers() and args.device != "cpu"
    torch_device = "cuda" if cuda and torch.cuda.is_available() else "cpu"
    items = movielens_workload(args.data, max_users=1).items
    artifact = ensure_exported(args.encoder_cache)
    device = "cuda" if cuda else "cpu"

    def ort_variant(**kwargs) -> OnnxEncoder:
        return OnnxEncoder(artifact, device=device, intra_op_threads=threads, **kwargs)

    backends: dict[str, TorchEncoder | OnnxEncoder] = {
        EAGER: TorchEncoder(device=torch_device),
        FP32_PLAIN: ort_variant(),
        FP32: ort_variant(optimise=True),
    }
    if cuda:
        backends[FP16] = ort_variant(precision="fp16")  # I/O binding: on with CUDA
    else:
        backends[INT8] = ort_variant(precision="int8")
    names = list(backends)

    cells = []
    for label, (tokens, max_length) in TEXTS.items():
        if label not in args.texts:
            continue
        for enc in backends.values():
            enc.max_length = max_length
        per_token = tokens or 10
        for batch in args.batch_sizes:
            n = batch * max(1, math.ceil(args.token_budget / per_token / batch))
            texts = build_texts(items, tokens, n)
            for enc in backends.values():
                enc.batch_size = batch
                enc.encode(texts[:batch])  # warm-up: allocations, kernel choice
            seconds: dict[str, list[float]] = {name: [] for name in names}
            outputs: dict[str, np.ndarray] = {}
            for r in range(args.repeats):
                for name in names[r % len(names) :] + names[: r % len(names)]:
                    elapsed, outputs[name] = timed(backends[name].encode, texts)
                    seconds[name].append(elapsed)
            rate = {name: n / statistics.median(s) for name, s in seconds.items()}
            cosine = {name: np.sum(outputs[name] * outputs[EAGER], axis=1) for name in names}
            cells.append(
                {
                    "texts": label,
                    "batch_size": batch,
                    "n_texts": n,
                    "mean_tokens": round(mean_tokens(backends[FP32], texts), 1),
                    "items_per_s": {k: round(v, 1) for k, v in rate.items()},
                    "speedup_vs_eager": {k: round(v / rate[EAGER], 3) for k, v in rate.items()},
                    "cosine_vs_eager": {
                        k: {"mean": float(c.mean()), "min": float(c.min())}
                        for k, c in cosine.items()
                    },
                    "seconds": seconds,
                }
            )
            print(f"{label:>10} batch {batch:>3}: "
                  + ", ".join(f"{k} {v:,.0f}/s" for k, v in rate.items()), flush=True)  # fmt: skip

    backends[FP32_PLAIN].max_length, backends[FP32_PLAIN].batch_size = 256, 64
    agent = (
        None
        if args.no_agent
        else items_agent(backends[FP32_PLAIN], items[: args.agent_items], args.agent_batches)
    )
    return {
        "items_agent": agent,
        "device": device,
        "providers": {n: getattr(b, "providers", [torch_device]) for n, b in backends.items()},
        "precision_run": {n: getattr(b, "precision", "fp32") for n, b in backends.items()},
        "threads": threads,
        "repeats": args.repeats,
        "quick": args.quick,
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "load_1m_at_end": os.getloadavg()[0],
            "onnxruntime": ort.__version__,
            "torch": torch.__version__,
        },
        "cells": cells,
        "summary": summarise(cells, names),
    }


def items_agent(encoder: OnnxEncoder, items: Sequence[dict], sizes: Sequence[int]) -> dict:
    """The items agent's work (decode, encode, store, topics, wakeups) by micro-batch size.

    What `encoder_batch_max` trades: each batch also pays a store write, a
    catalogue refresh and a topic update, so items/s climbs with the batch
    until encoding dominates. Fresh in-memory store per size, the whole
    catalogue, the worker's default settings; no broker.
    """
    from streams.app import build_runtime
    from streams.processor import RawRecord
    from streams.settings import Settings
    from streams.stores.sqlite import SqliteStore
    from streams.workload import to_json_bytes

    settings = Settings()
    records = [
        RawRecord(settings.topics.items, 0, n, i["item_id"].encode(), to_json_bytes(i))
        for n, i in enumerate(items)
    ]
    warm = SqliteStore(":memory:")
    build_runtime(settings, warm, encoder).items.process(records[:8])  # lazy imports, caches
    warm.close()
    rates = {}
    for size in sizes:
        store = SqliteStore(":memory:")
        process = build_runtime(settings, store, encoder).items.process
        start = time.perf_counter()
        for first in range(0, len(records), size):
            process(records[first : first + size])
        rates[size] = round(len(records) / (time.perf_counter() - start), 1)
        store.close()
        print(f"items agent, batches of {size:>3}: {rates[size]:,.0f} items/s", flush=True)
    return {"items": len(records), "encoder_batch_size": encoder.batch_size, "items_per_s": rates}


def mean_tokens(encoder: OnnxEncoder, texts: list[str]) -> float:
    return float(np.mean([len(e.ids) for e in encoder._tokenizer.encode_batch(texts)]))


def summarise(cells: list[dict], names: list[str]) -> dict:
    """Per variant over the grid: geometric mean, min and max speed-up; worst agreement."""
    summary = {}
    for name in names:
        ratios = [c["speedup_vs_eager"][name] for c in cells]
        summary[name] = {
            "speedup_geomean": round(math.exp(statistics.fmean(map(math.log, ratios))), 3),
            "speedup_min": min(ratios),
            "speedup_max": max(ratios),
            "cosine_mean": float(np.mean([c["cosine_vs_eager"][name]["mean"] for c in cells])),
            "cosine_min": min(c["cosine_vs_eager"][name]["min"] for c in cells),
        }
    if FP32 in summary and FP32_PLAIN in summary:
        gains = [c["items_per_s"][FP32] / c["items_per_s"][FP32_PLAIN] for c in cells]
        summary["optimiser_gain_geomean"] = round(
            math.exp(statistics.fmean(map(math.log, gains))), 3
        )
    return summary


def targets(result: dict) -> dict:
    """The issue's CPU targets, read off the summary (geometric mean over the grid)."""
    out = {}
    for key, target in TARGETS.items():
        got = result["summary"].get(target["variant"])
        if got is None or result["device"] != "cpu":
            continue
        ok = got["speedup_geomean"] >= target["speedup"]
        if "min_cosine" in target:
            ok = ok and got["cosine_min"] >= target["min_cosine"]
        if "mean_cosine" in target:
            ok = ok and got["cosine_mean"] >= target["mean_cosine"]
        out[key] = {**target, **got, "met": ok}
    return out


def plot(path: Path, result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(c["texts"] for c in result["cells"]))
    fig, axes = plt.subplots(1, len(labels), figsize=(4.2 * len(labels), 3.4), squeeze=False)
    for ax, label in zip(axes[0], labels, strict=True):
        cells = [c for c in result["cells"] if c["texts"] == label]
        for name in cells[0]["items_per_s"]:
            ax.plot([c["batch_size"] for c in cells], [c["items_per_s"][name] for c in cells],
                    marker="o", label=name)  # fmt: skip
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_title(f"{label} (mean {cells[0]['mean_tokens']:.0f} tokens)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("items / second (median)")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(f"all-MiniLM-L6-v2 encode on {result['device']}, {result['threads']} threads, "
                 "same run", fontsize=9)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    default_data = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=default_data)
    parser.add_argument("--quick", action="store_true", help="tiny grid (CI: < 30 s)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="0: one per CPU")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present) or cpu")
    parser.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 8, 32, 128])  # fmt: skip
    parser.add_argument("--token-budget", type=int, default=2560,
                        help="tokens per variant per cell (texts: budget / length)")  # fmt: skip
    parser.add_argument("--agent-batches", type=lambda s: [int(x) for x in s.split(",")],
                        default=[64, 256, 500, 1000])  # fmt: skip
    parser.add_argument("--agent-items", type=int, default=1682)
    parser.add_argument("--no-agent", action="store_true",
                        help="skip the items agent's micro-batch sweep (it needs the worker's "
                             "packages; an encoder-only machine may lack them)")  # fmt: skip
    parser.add_argument("--encoder-cache", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS / "encoder_speed.json")
    args = parser.parse_args()
    args.texts = list(TEXTS)
    if args.quick:
        args.batch_sizes, args.token_budget, args.repeats = [1, 16], 256, 1
        args.texts = ["titles", "128 tokens"]
        args.agent_batches, args.agent_items = [16, 64], 128

    result = run(args)
    result["targets"] = targets(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    plot(args.out.with_suffix(".png"), result)
    print(json.dumps({"summary": result["summary"], "targets": result["targets"]}, indent=2))


if __name__ == "__main__":
    main()
