"""The two llama.cpp runtimes side by side: prompt and decode tokens/s, native build vs prebuilt wheel.

The native runtime is llama-server built on this machine (`seedbed setup --native`, GGML_NATIVE);
the prebuilt one is the xllamacpp wheel (engine/runtime/prebuilt.py), what a fresh machine runs
until a native build exists. Both serve the same model through `LocalServer` with the same
settings (one slot, all CPUs) and get the same prompts: real news-mix passages (corpora/) in a
SynthesizRR-style rewrite request of about `--prompt-words` words, `cache_prompt: false` so the
server evaluates every prompt token. Tokens/s come from the server's own `timings` (prompt_n /
prompt_ms, predicted_n / predicted_ms), summed over the prompts. The runtimes alternate
`--repeats` times (order swapped each repeat); the medians and prebuilt / native ratios are
printed, with each server's time from start to its first 200 on /health.

Usage: python benchmarks/bench_runtime.py [--model qwen2.5-coder-1.5b] [--prompts 6]
       [--prompt-words 380] [--max-tokens 96] [--repeats 2] [--record]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CORPUS = ROOT / "corpora" / "news-mix" / "news_mix.jsonl"
RESULTS = Path(__file__).parent / "results"


def prompts(count: int, words: int) -> list[list[dict[str, str]]]:
    """`count` chat requests, each a rewrite of real passages cut to about `words` words."""
    texts = [" ".join(json.loads(line)["text"].split()) for line in CORPUS.open(encoding="utf-8")]
    texts = [t for t in texts if len(t.split()) >= 60]
    out = []
    for i in range(count):
        passage, j = [], i * 7
        while len(passage) < words:
            passage += texts[j % len(texts)].split()
            j += 1
        out.append([{"role": "system", "content": "You rewrite news passages into short news stories."},
                    {"role": "user", "content": "Passage:\n" + " ".join(passage[:words]) +
                     "\n\nRewrite the passage as a two-sentence news story about its main event."}])
    return out


def measure(command: list[str], model: str, requests: list, max_tokens: int, threads: int) -> dict:
    import openai

    from engine.runtime.local import ensure_model
    from engine.runtime.server import LocalServer, ServerConfig

    path = ensure_model(model, install=False, progress=False)
    server = LocalServer(path, model, ServerConfig(parallel=1, ctx_per_slot=4096, threads=threads), binary=command)
    started = time.monotonic()
    with server:
        ready_s = time.monotonic() - started
        client = openai.OpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0, timeout=600)
        totals = {"prompt_n": 0, "prompt_ms": 0.0, "predicted_n": 0, "predicted_ms": 0.0}
        for messages in requests:
            resp = client.chat.completions.create(
                model=model, messages=messages, max_tokens=max_tokens, temperature=0.0,
                extra_body={"cache_prompt": False})
            timings = resp.model_dump().get("timings") or {}
            for key in totals:
                totals[key] += timings.get(key, 0)
    return {"ready_s": round(ready_s, 2), **totals,
            "prompt_tok_s": round(totals["prompt_n"] / totals["prompt_ms"] * 1000, 2),
            "decode_tok_s": round(totals["predicted_n"] / totals["predicted_ms"] * 1000, 2)}


def main() -> None:
    from engine.runtime import prebuilt
    from engine.runtime.build import find_llama_server
    from engine.runtime.catalog import DEFAULT_MODEL

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--prompt-words", type=int, default=380, help="passage words per prompt (~515 tokens)")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--record", action="store_true", help="write benchmarks/results/runtime-<date>.json")
    args = parser.parse_args()

    runtimes = {}
    native = find_llama_server()
    if native is not None:
        runtimes["native"] = [str(native)]
    else:
        print("no native llama-server (`seedbed setup --native` builds one): measuring the prebuilt runtime alone")
    if prebuilt.available():
        runtimes["prebuilt"] = prebuilt.command()
    if not runtimes:
        sys.exit("neither runtime is available: install xllamacpp or run `seedbed setup --native`")
    requests = prompts(args.prompts, args.prompt_words)
    runs: dict[str, list[dict]] = {name: [] for name in runtimes}
    for repeat in range(args.repeats):
        order = list(runtimes) if repeat % 2 == 0 else list(runtimes)[::-1]
        for name in order:
            result = measure(runtimes[name], args.model, requests, args.max_tokens, args.threads)
            runs[name].append(result)
            print(f"repeat {repeat + 1} {name:<8} ready {result['ready_s']:6.2f} s  prompt "
                  f"{result['prompt_tok_s']:7.2f} tok/s ({result['prompt_n']} tokens)  decode "
                  f"{result['decode_tok_s']:6.2f} tok/s ({result['predicted_n']} tokens)", flush=True)
    medians = {name: {key: statistics.median(r[key] for r in results)
                      for key in ("ready_s", "prompt_tok_s", "decode_tok_s")} for name, results in runs.items()}
    record = {"date": date.today().isoformat(),
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
              "model": args.model, "prompts": args.prompts, "prompt_words": args.prompt_words,
              "max_tokens": args.max_tokens, "threads": args.threads, "repeats": args.repeats,
              "xllamacpp": prebuilt.version(), "native_binary": str(native) if native else None,
              "runs": runs, "medians": medians}
    for name, m in medians.items():
        print(f"{name:<8} median: prompt {m['prompt_tok_s']:.1f} tok/s, decode {m['decode_tok_s']:.1f} tok/s, "
              f"ready in {m['ready_s']:.1f} s")
    if len(medians) == 2:
        record["ratio_prebuilt_over_native"] = ratios = {
            key: round(medians["prebuilt"][key] / medians["native"][key], 3) for key in ("prompt_tok_s", "decode_tok_s")}
        print(f"prebuilt / native: prompt {ratios['prompt_tok_s']:.2f}x, decode {ratios['decode_tok_s']:.2f}x")
    if args.record:
        path = RESULTS / f"runtime-{record['date']}.json"
        path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        print(f"recorded {path}")


if __name__ == "__main__":
    main()
