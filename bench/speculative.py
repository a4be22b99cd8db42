"""Speculative decoding by prompt lookup: nbllm against llama-server, side by side, alternating rounds.

python -m bench.speculative --llama-bin DIR --rounds 7 --out bench/results/2026-12-03-speculative.json

1. Input-grounded single stream (a ~300-token code listing to repeat with one change, 256 tokens, greedy,
   raw ChatML prompt so that every server sees the same tokens): nbllm (automatic mode) against llama-server
   with its defaults and with its own n-gram speculation (``--spec-type ngram-simple``), decode tokens/s.
2. Open-ended text (story openings, 128 tokens each) on an nbllm server with 8 slots, automatic mode against
   ``draft_num_predict: 0``, with 1, 4 and 8 clients (aggregate tokens/s), greedy and sampled (temperature
   0.8, a seed per client and round): what the automatic mode costs where there is little to look up.
   Each round first sends its prompts once (one token each, not timed), so that both sides find them cached:
   before, the side that went first in a round evaluated them and the other did not, which made every
   round's ratio 0.86 or 1.16 by the order alone at 4 and 8 clients.

Every round records the 1-minute load average (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench import prompts, servers
from bench.env import Peer
from bench.workloads import median, median_ci

_CODE = "\n".join(
    f"def handler_{i}(request, store):\n"
    f'    """Answer request kind {i} from the store."""\n'
    f"    value = store.get(request.key_{i}, default=None)\n"
    f"    if value is None:\n"
    f"        raise KeyError(request.key_{i})\n"
    f"    return value * {i + 1}\n"
    for i in range(6)
)
GROUNDED = (
    "<|im_start|>user\nRepeat this code exactly, but rename `store` to `cache` everywhere:\n\n"
    + _CODE
    + "<|im_end|>\n<|im_start|>assistant\n"
)


def stream(
    url: str, kind: str, prompt: str, n: int, *, draft: int | None = None, ctx: int = 2048, seed: int | None = None
) -> tuple[float, int]:
    """(decode tokens/s after the first token, tokens) of one streamed completion: greedy, or sampled with a seed."""
    if kind == "ollama":
        options: dict[str, Any] = {"temperature": 0, "num_predict": n, "num_ctx": ctx}
        if seed is not None:
            options.update(temperature=0.8, seed=seed)
        if draft is not None:
            options["draft_num_predict"] = draft
        path, body = "/api/generate", {"model": "smollm2:135m", "prompt": prompt, "raw": True, "options": options}
    else:
        path, body = "/completion", {"prompt": prompt, "n_predict": n, "temperature": 0, "stream": True}
    first = last = 0.0
    count = 0
    with httpx.stream("POST", url + path, json=body, timeout=600) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if kind == "ollama":
                got = line.strip() and not json.loads(line).get("done")
            else:
                got = line.startswith("data: ") and bool(json.loads(line[6:]).get("content"))
            if got:
                now = time.perf_counter()
                first = first or now
                last = now
                count += 1
    return ((count - 1) / (last - first) if count > 1 and last > first else 0.0), count


def _ratio_summary(mine: list[float], theirs: list[float]) -> dict[str, Any]:
    ratios = [a / b for a, b in zip(mine, theirs, strict=True) if b]
    return {"ours": mine, "theirs": theirs, "ratios": ratios, "median": median(ratios), "ci95": median_ci(ratios)}


def grounded(ours: servers.Server, peers: dict[str, servers.Server], *, rounds: int, n: int) -> dict[str, Any]:
    """nbllm (automatic mode) against each llama-server, round by round, the order alternating."""
    for server in (ours, *peers.values()):
        stream(server.url, server.kind, GROUNDED, 8)  # loaded and warm (and the prompt cached)
    rates: dict[str, list[float]] = {"nbllm": [], "nbllm_off": [], **{name: [] for name in peers}}
    sides = [("nbllm", ours, None), ("nbllm_off", ours, 0), *((name, s, None) for name, s in peers.items())]
    load: list[float] = []
    for r in range(rounds):
        for name, server, draft in sides if r % 2 == 0 else list(reversed(sides)):
            rates[name].append(stream(server.url, server.kind, GROUNDED, n, draft=draft)[0])
        load.append(os.getloadavg()[0])
    out: dict[str, Any] = {name: _ratio_summary(rates["nbllm"], rates[name]) for name in rates if name != "nbllm"}
    out["rates"] = rates
    out["load"] = load
    return out


def _aggregate(url: str, texts: list[str], n: int, draft: int, seeds: list[int] | None) -> float:
    counts = [0] * len(texts)

    def run(i: int) -> None:
        counts[i] = stream(url, "ollama", texts[i], n, draft=draft, seed=seeds[i] if seeds else None)[1]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(texts))]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - start)


def open_ended(ours: servers.Server, *, clients: list[int], rounds: int, n: int, sampled: bool) -> dict[str, Any]:
    """Automatic mode against off on open-ended text, by number of clients, alternating."""
    out: dict[str, Any] = {}
    for k in clients:
        auto: list[float] = []
        off: list[float] = []
        load: list[float] = []
        for r in range(rounds):
            texts = [prompts.story(30_000 + 100 * r + i) for i in range(k)]
            seeds = [100 * r + i for i in range(k)] if sampled else None
            _aggregate(ours.url, texts, 1, 0, seeds)  # the prompts cached for both sides alike (else the first pays)
            for draft in (-1, 0) if r % 2 == 0 else (0, -1):
                (auto if draft else off).append(_aggregate(ours.url, texts, n, draft, seeds))
            load.append(os.getloadavg()[0])
        out[str(k)] = {**_ratio_summary(auto, off), "load": load}
    return out


def main(argv: list[str] | None = None) -> None:
    """Run both measurements and write a JSON file."""
    p = argparse.ArgumentParser(prog="python -m bench.speculative", description=__doc__)
    p.add_argument("--llama-bin", type=Path, help="a directory with llama.cpp's llama-server")
    p.add_argument("--store", type=Path, default=Path(__file__).parent / ".peers" / "store")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8], help="open-ended: concurrent clients")
    p.add_argument("--parts", nargs="+", choices=["grounded", "open"], default=["grounded", "open"])
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    model = servers_model(a.store)
    log = a.out.with_suffix(".log")
    result: dict[str, Any] = {"prompt_chars": len(GROUNDED), "tokens": a.tokens, "rounds": a.rounds}
    ours = servers.nbllm(a.store, parallel=4, threads=a.threads, log=log)
    ours.model = "smollm2:135m"
    result["load_before"] = os.getloadavg()
    with servers.running(ours):
        peers: dict[str, servers.Server] = {}
        if a.llama_bin is not None and "grounded" in a.parts:
            peer = Peer("llama.cpp", Path(sys.executable), a.llama_bin)
            peers["llama-server"] = servers.llama_server(
                peer, model, n_ctx=2048, parallel=1, threads=a.threads, log=log
            )
            peers["llama-server ngram"] = servers.llama_server(
                peer, model, n_ctx=2048, parallel=1, threads=a.threads, log=log, extra=("--spec-type", "ngram-simple")
            )
        try:
            if "grounded" in a.parts:
                result["grounded"] = grounded(ours, peers, rounds=a.rounds, n=a.tokens)
        finally:
            for server in peers.values():
                server.stop()
    if "open" not in a.parts:
        a.clients = []
    ours = servers.nbllm(a.store, parallel=8, threads=a.threads, log=log)
    ours.model = "smollm2:135m"
    with servers.running(ours):
        stream(ours.url, "ollama", prompts.story(1), 4)  # loaded and warm
        for sampled in (False, True):
            result["open_ended_sampled" if sampled else "open_ended"] = open_ended(
                ours, clients=a.clients, rounds=a.rounds, n=a.tokens // 2, sampled=sampled
            )
    result["load_after"] = os.getloadavg()
    a.out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items()}, indent=1, default=str)[:4000])


def servers_model(store: Path) -> Path:
    """SmolLM2's GGUF in the bench store."""
    from nbllm.store import ModelStore

    found = ModelStore(store).get("smollm2:135m").model_path
    assert found is not None
    return found


if __name__ == "__main__":
    main()
