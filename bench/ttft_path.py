"""Where nbllm's TTFT overhead goes: each step of a first token's path, from the client's send to its first line.

python -m bench.ttft_path --store bench/.peers/store --model smollm2-nospec --rounds 12 --out bench/results/X.json

bench.pertoken measures the overhead (time to first token less the server's own prefill) against llama-server;
this says what it is made of. It serves the store with ``python -m bench.ttft_probe serve`` (timestamps at
each step, see there), and each round streams a short story (so the slots fill as in bench.pertoken) and then
sends a ~500-token prompt nobody sent before, noting when it sent it and when the first line came back, on
the same clock as the server's probes. Each step is a median over the rounds with its 95% confidence interval.

The steps, in order (``SPANS``), end to end from the client's send to its first line; those nbllm counts
in ``prompt_eval_duration`` are marked ``prefill``, the others are the overhead:

- ``request in``: the client writes, uvicorn reads and parses the request;
- ``FastAPI``: middleware, routing, the body's validation, the route;
- ``to the stream thread``: the response's ``Feed`` starts the use case on a worker thread;
- ``prepare``: the model, its options, its load spec (``service.inference._prepare``);
- ``tokenize``: the prompt rendered and tokenized (llama.cpp's tokenizer);
- ``submit``: the request queued for the decode thread, the stream handed to the event loop;
- ``decode thread wakes``: until the decode loop admits it;
- ``RAM-cache copy``: the state of the slot it takes copied to the RAM prompt cache (0 when it takes an empty slot);
- ``admission``, ``batch fill``, ``prefill``: the rest of the admission, the prompt's first batch filled,
  ``llama_decode`` over the prompt (every batch of it, and the Python between them) -- all three in
  ``prompt_eval_duration``;
- ``sample and post``: logits read, the token picked, detokenized and posted;
- ``event loop wakes``: until the loop runs the stream's wake-up (0 where the decode thread writes the first
  line itself: ``server.feed``);
- ``first line out``: the stream's layers (the response start too, on builds that start it with the first
  token), the first line written to the socket, by the event loop or the decode thread;
- ``to the client``: the kernel and the client until it has the line.

``--pause S`` waits S seconds between the story and the prompt, as a person reading the answer would: the
decode loop is then idle long enough to keep in RAM, beforehand, the slot the prompt will take
(``SlotStates.IDLE_AFTER``). Back to back (0, the default), it copies that slot at admission.

``--llama-bin DIR`` runs the rounds as ``bench.pertoken`` does instead: llama-server beside nbllm, one round of
each after the other, the order reversed every round, ``--tokens`` tokens of story (512 there). nbllm then
runs twice in a row every other round (its story right after its own last prompt) and after a pause (the
peer's turn) in the others; each round's row says which (``after``), and llama-server's TTFT overhead in
the same rounds is reported beside (``peer_overhead``).

One llama.cpp process at a time: run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench import prompts, servers
from bench.workloads import median_ci

SPANS: list[tuple[str, str, str, bool]] = [
    # (name, from mark, to mark, counted in prompt_eval_duration)
    ("request in", "client.send", "asgi", False),
    ("FastAPI", "asgi", "route>", False),
    ("to the stream thread", "route>", "produce>", False),
    ("prepare", "produce>", "prepare<", False),
    ("tokenize", "prepare<", "tokenize<", False),
    ("submit", "tokenize<", "submit<", False),
    ("decode thread wakes", "submit<", "admit>", False),
    ("RAM-cache copy", "stash>", "stash<", False),
    ("admission", "admit>", "admit<", True),
    ("batch fill", "admit<", "decode>", True),
    ("prefill", "decode>", "decode<", True),
    ("sample and post", "decode<", "post>", False),
    ("event loop wakes", "post>", "wake>", False),
    ("first line out", "wake>", "sent", False),
    ("to the client", "sent", "client.first", False),
]
_ORDER = [
    "client.send",
    "asgi",
    "route>",
    "produce>",
    "prepare<",
    "tokenize<",
    "submit<",
    "admit>",
    "admit<",
    "decode>",
    "decode<",
    "post>",
    "sent",
    "client.first",
]
"""The marks of one request in the order they happen: each is the first of its label after the one before."""


def marks_of(events: list[tuple[int, str, str]], sent: int, first: int) -> dict[str, int]:
    """One request's marks (ns) from the server's events between the client's send and its first line."""
    window = sorted(e for e in events if sent <= e[0] <= first)
    found = {"client.send": sent}
    at = sent
    for label in _ORDER[1:-1]:
        hit = next((t for t, name, _ in window if name == label and t >= at), None)
        if label == "sent":  # (the first line may also go out past ``send``: the event loop's wake-up writes it
            # itself once the response has started, or the decode thread does: ``server.feed``)
            hit = min(
                (t for t, name, _ in window if name in ("sent", "write<", "sink<") and t >= at),
                default=None,
            )
        if hit is None and label == "sent":  # the write returned only after the client had read the line
            hit = next((t for t, name, _ in window if name in ("send", "write>", "sink>") and t >= at), None)
        if hit is None:
            seen = [(name, (t - sent) // 1000) for t, name, _ in window if t >= at][:12]
            raise ValueError(
                f"no {label!r} after {at - sent} ns: was the request served by the probed path? (then, in µs: {seen})"
            )
        found[label] = at = hit
    found["client.first"] = first
    # the loop's wake-up for this token; none when the loop was awake already (a late hand-off wake-up took it)
    found["wake>"] = next(
        (t for t, name, _ in window if name == "wake>" and found["post>"] <= t <= found["sent"]), found["post>"]
    )
    # a prompt longer than the batch takes several llama_decode calls: the prefill ends at the last one's exit
    found["decode<"] = max(t for t, name, _ in window if name == "decode<" and t <= found["post>"])
    stash = [t for t, name, _ in window if found["admit>"] <= t <= found["admit<"] and name.startswith("stash")]
    if len(stash) == 2:
        found["stash>"], found["stash<"] = stash
    return found


def spans_of(marks: dict[str, int]) -> dict[str, float]:
    """Milliseconds of each step; the admission's own part leaves out the RAM-cache copy inside it."""
    out: dict[str, float] = {}
    for name, start, end, _ in SPANS:
        if start in marks and end in marks:
            out[name] = (marks[end] - marks[start]) / 1e6
        else:
            out[name] = 0.0  # (no copy: the request took an empty slot)
    out["admission"] -= out["RAM-cache copy"]
    return out


def _stream(http: httpx.Client, url: str, model: str, prompt: str, n: int) -> tuple[int, int, dict[str, Any]]:
    """(send ns, first line ns, the final line) of one streamed greedy completion."""
    body = {
        "model": model,
        "prompt": prompt,
        "raw": True,
        "stream": True,
        "options": {"temperature": 0, "num_predict": n, "num_ctx": 2048, "seed": 0},
    }
    sent = time.perf_counter_ns()
    first = 0
    final: dict[str, Any] = {}
    with http.stream("POST", url + "/api/generate", json=body) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if not line.strip():
                continue
            data = json.loads(line)
            if data.get("done"):
                final = data
            elif not first:
                first = time.perf_counter_ns()
    return sent, first, final


def run(
    url: str, model: str, rounds: int, *, pause: float = 0.0, tokens: int = 64
) -> list[tuple[int, int, dict[str, Any]]]:
    """The rounds' TTFT requests: (send ns, first ns, final line) each; ``pause`` seconds before each (a
    person reading the answer before the next prompt; 0: back to back, as a script or an agent)."""
    out = []
    with httpx.Client(timeout=600) as http:
        http.get(url + "/")
        _stream(http, url, model, prompts.STORY, 8)  # the load and the warm-up
        for i in range(rounds):
            http.get(url + "/")
            _stream(http, url, model, prompts.story(i), tokens)
            time.sleep(pause)
            http.get(url + "/")  # (as bench.pertoken: the prompt goes over a connection that just served)
            out.append(_stream(http, url, model, f"[ttft path {i} {time.time_ns()}] " + prompts.long_prompt(), 4))
    return out


def run_beside(
    nbllm: servers.Server, peer: servers.Server, rounds: int, *, tokens: int
) -> tuple[list[tuple[int, int, dict[str, Any]]], list[str], list[float]]:
    """``bench.pertoken``'s rounds, nbllm's prompts stamped: (nbllm's TTFT requests, what came before each in
    nbllm -- its own last prompt or a pause --, llama-server's TTFT overhead each round, ms)."""
    from bench.clients import stream
    from bench.pertoken import _open, _ttft_overhead

    sides = [nbllm, peer]
    clients = {s.name: httpx.Client(timeout=600) for s in sides}
    requests: list[tuple[int, int, dict[str, Any]]] = []
    after: list[str] = []
    peer_ms: list[float] = []
    try:
        for s in sides:  # the load and the warm-up
            _open(s, clients[s.name])
            stream(s, prompts.STORY, 8, ctx=2048, http=clients[s.name])
        last = peer
        for r in range(rounds):
            for s in sides if r % 2 == 0 else sides[::-1]:
                http = clients[s.name]
                _open(s, http)
                stream(s, prompts.STORY, tokens, ctx=2048, http=http)
                if s is nbllm:
                    after.append("its own last prompt" if last is nbllm else "a pause")
                    _open(s, http)
                    text = f"[ttft path {r} {time.time_ns()}] " + prompts.long_prompt()
                    requests.append(_stream(http, s.url, s.model, text, 4))
                else:
                    peer_ms.append(_ttft_overhead(s, str(r), ctx=2048, http=http))
                last = s
    finally:
        for client in clients.values():
            client.close()
    return requests, after, peer_ms


def summarize(requests: list[tuple[int, int, dict[str, Any]]], events: list[tuple[int, str, str]]) -> dict[str, Any]:
    """Per-round spans, and each span's median with its 95% CI; with the TTFT and the overhead as the bench
    counts it (TTFT less ``prompt_eval_duration``)."""
    rows = []
    for sent, first, final in requests:
        row = spans_of(marks_of(events, sent, first))
        row["TTFT"] = (first - sent) / 1e6
        row["overhead"] = row["TTFT"] - final.get("prompt_eval_duration", 0) / 1e6
        row["prompt_eval_count"] = final.get("prompt_eval_count", 0)
        rows.append(row)
    medians = {}
    for key in [*(s[0] for s in SPANS), "TTFT", "overhead"]:
        values = [r[key] for r in rows]
        ci = median_ci(values)
        medians[key] = {"median": statistics.median(values), "ci95": list(ci) if ci is not None else None}
    return {"rounds": rows, "medians": medians}


def table(summary: dict[str, Any]) -> str:
    """The medians as a markdown table."""
    lines = ["| step | ms (median) | 95% CI | in prefill |", "|---|---|---|---|"]
    prefill = {name: counted for name, _, _, counted in SPANS}
    for key, row in summary["medians"].items():
        ci = f"{row['ci95'][0]:.3f}–{row['ci95'][1]:.3f}" if row["ci95"] else "(too few rounds)"
        lines.append(f"| {key} | {row['median']:.3f} | {ci} | {'yes' if prefill.get(key) else ''} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Serve the store with the probes, run the rounds, write the JSON and print the table."""
    p = argparse.ArgumentParser(prog="python -m bench.ttft_path", description=__doc__)
    p.add_argument("--store", type=Path, default=Path(__file__).parent / ".peers" / "store")
    p.add_argument("--model", default="smollm2:135m")
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--pause", type=float, default=0.0, help="seconds between the story and the prompt")
    p.add_argument("--llama-bin", type=Path, help="llama-server's directory: rounds beside it")
    p.add_argument("--tokens", type=int, default=64, help="tokens of story before each prompt")
    p.add_argument("--label", default="")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    events_file = a.out.with_suffix(".events.json")
    os.environ["BENCH_TTFT_EVENTS"] = str(events_file.resolve())
    try:
        server = servers.nbllm(
            a.store.resolve(), parallel=4, threads=2, log=a.out.with_suffix(".log").resolve(), module="bench.ttft_probe"
        )
    finally:
        os.environ.pop("BENCH_TTFT_EVENTS", None)
    server.model = a.model
    peer: servers.Server | None = None
    after: list[str] = []
    peer_ms: list[float] = []
    try:
        if a.llama_bin is None:
            requests = run(server.url, a.model, a.rounds, pause=a.pause, tokens=a.tokens)
        else:
            from bench.env import Peer
            from bench.speculative import servers_model

            log = a.out.with_suffix(".log").resolve()
            llama = Peer("llama.cpp", Path(sys.executable), a.llama_bin)
            peer = servers.llama_server(llama, servers_model(a.store), n_ctx=2048, parallel=4, threads=2, log=log)
            requests, after, peer_ms = run_beside(server, peer, a.rounds, tokens=a.tokens)
    finally:
        server.stop()
        if peer is not None:
            peer.stop()
    events = [tuple(e) for e in json.loads(events_file.read_text())]
    events_file.unlink()
    summary = summarize(requests, events)
    for row, before in zip(summary["rounds"], after, strict=False):
        row["after"] = before
    result = {
        "label": a.label,
        "command": "python -m bench.ttft_path " + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": a.model,
        "pause": a.pause,
        "tokens": a.tokens,
        **summary,
    }
    if peer_ms:
        result["peer_overhead"] = peer_ms
    a.out.write_text(json.dumps(result, indent=1))
    print(table(summary))
    for before in sorted(set(after)):
        values = [row["overhead"] for row in summary["rounds"] if row.get("after") == before]
        print(f"after {before}: overhead median {statistics.median(values):.2f} ms over {len(values)} rounds")
    if peer_ms:
        print(f"llama-server, the same rounds: overhead median {statistics.median(peer_ms):.2f} ms")


if __name__ == "__main__":
    main()
