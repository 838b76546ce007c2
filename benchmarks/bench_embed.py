"""Faster CPU paths for the MiniLM embedder against today's fp32 torch path, on the same passages.

Paths, each embedding the same `--passages` real news-mix passages (corpora/, cut to about 80
words as the index's chunker does) with the same batch size, in this process:
- `fp32-torch`: today's path, sentence-transformers on torch (the baseline);
- `int8-torch`: the same model after `torch.ao.quantization.quantize_dynamic` (Linear layers to int8);
- `fp32-onnx` / `int8-onnx` / `int8-onnx-pc`: the encoder exported with `torch.onnx.export`, run
  by ONNX Runtime, then int8 dynamic quantization (`onnxruntime.quantization`; per tensor, and per
  channel), mean pooling and normalisation in numpy; skipped, with the reason, when `onnxruntime`/`onnx` are not installed.
The paths alternate `--repeats` times; medians of passages/s are printed with the speed-up over
fp32-torch, the cosine agreement (mean and minimum over passages) with the fp32-torch vectors,
and what retrieval sees: for 200 queries (the first 12 words of every tenth passage), the overlap
of each path's top-10 passages with fp32-torch's (exact inner-product search over all passages).
Adoption rule (issue 14): a path becomes the default only at >= 1.5x with mean cosine >= 0.99,
and only if it installs offline from the package registry.

Usage: python benchmarks/bench_embed.py [--passages 2000] [--batch-size 64] [--repeats 3] [--record]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CORPUS = ROOT / "corpora" / "news-mix" / "news_mix.jsonl"
RESULTS = Path(__file__).parent / "results"


def passages(count: int, words: int = 80) -> list[str]:
    out = []
    for line in CORPUS.open(encoding="utf-8"):
        tokens = json.loads(line)["text"].split()
        out += [" ".join(tokens[i:i + words]) for i in range(0, len(tokens), words) if len(tokens[i:i + words]) >= 20]
        if len(out) >= count:
            break
    return out[:count]


def onnx_files(folder: Path, tmp: Path) -> dict[str, Path]:
    """The model exported to ONNX (engine.embed.export_onnx), then int8 per tensor and per channel."""
    from engine.embed import export_onnx, quantize_int8

    files = {"fp32-onnx": tmp / "minilm.onnx", "int8-onnx": tmp / "minilm-int8.onnx",
             "int8-onnx-pc": tmp / "minilm-int8-pc.onnx"}
    export_onnx(folder, files["fp32-onnx"])
    quantize_int8(files["fp32-onnx"], files["int8-onnx"], per_channel=False)
    quantize_int8(files["fp32-onnx"], files["int8-onnx-pc"], per_channel=True)
    return files


def main() -> None:
    import torch

    from engine.embed import _model_dir, load_sentence_transformer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--record", action="store_true", help="write benchmarks/results/embed-<date>.json")
    args = parser.parse_args()

    texts = passages(args.passages)
    threads = torch.get_num_threads()
    folder = _model_dir("all-MiniLM-L6-v2")
    model = load_sentence_transformer(folder)
    quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)

    def st(m):
        return lambda: m.encode(texts, batch_size=args.batch_size, normalize_embeddings=True,
                                convert_to_numpy=True, show_progress_bar=False)

    paths = {"fp32-torch": st(model), "int8-torch": st(quantized)}
    queries = [" ".join(t.split()[:12]) for t in texts[::10]][:200]

    def st_encode(m):
        return lambda q: m.encode(q, batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True,
                                  show_progress_bar=False)

    encoders = {"fp32-torch": st_encode(model), "int8-torch": st_encode(quantized)}
    skipped = {}
    with tempfile.TemporaryDirectory(prefix="bench-embed-") as tmp:
        try:
            from engine.embed import OnnxEmbedder

            for name, file in onnx_files(folder, Path(tmp)).items():
                encoder = OnnxEmbedder(name, file, folder, threads)
                paths[name] = (lambda e: lambda: e.encode(texts, args.batch_size))(encoder)
                encoders[name] = (lambda e: lambda q: e.encode(q, args.batch_size))(encoder)
        except ImportError as exc:
            skipped["onnx"] = f"not installed ({exc.name}): pip install onnxruntime onnx"
            print(f"ONNX paths skipped: {skipped['onnx']}")

        vectors, rates = {}, {name: [] for name in paths}
        for name, run in paths.items():  # warm-up (first-call allocations), and the vectors compared
            vectors[name] = np.asarray(run(), dtype=np.float32)
        top10 = {}
        for name, encode in encoders.items():
            top10[name] = np.argsort(-(encode(queries) @ vectors[name].T), axis=1)[:, :10]
        for repeat in range(args.repeats):
            for name in (list(paths) if repeat % 2 == 0 else list(paths)[::-1]):
                started = time.perf_counter()
                paths[name]()
                rates[name].append(len(texts) / (time.perf_counter() - started))
    base = statistics.median(rates["fp32-torch"])
    results = {}
    for name in paths:
        cos = np.sum(vectors[name] * vectors["fp32-torch"], axis=1)
        rate = statistics.median(rates[name])
        overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top10[name], top10["fp32-torch"])])
        results[name] = {"passages_s": round(rate, 1), "speedup": round(rate / base, 3),
                         "cosine_mean": round(float(cos.mean()), 5), "cosine_min": round(float(cos.min()), 5),
                         "top10_overlap": round(float(overlap), 4),
                         "adoptable": bool(rate / base >= 1.5 and cos.mean() >= 0.99)}
        r = results[name]
        print(f"{name:<12} {r['passages_s']:8.1f} passages/s  {r['speedup']:5.2f}x  cosine mean "
              f"{r['cosine_mean']:.4f} min {r['cosine_min']:.4f}  top-10 {r['top10_overlap']:.3f}  {'meets' if r['adoptable'] else 'misses'} "
              "the rule (>= 1.5x, cosine >= 0.99)", flush=True)
    if args.record:
        record = {"date": date.today().isoformat(),
                  "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
                  "torch": torch.__version__, "threads": threads, "passages": len(texts),
                  "batch_size": args.batch_size, "repeats": args.repeats, "results": results, "skipped": skipped}
        path = RESULTS / f"embed-{record['date']}.json"
        path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        print(f"recorded {path}")


if __name__ == "__main__":
    main()
