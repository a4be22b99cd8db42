"""The per-token path: serving CPU per token and TTFT overhead, nbllm against llama-server, side by side.

python -m bench.pertoken --llama-bin DIR --rounds 8 --out bench/results/2026-12-03-per-token.json

Every server is up at once (an idle one takes no CPU) and each round measures them one after the other,
the order alternating, so this machine's drift mostly cancels. Reversed every round, the order puts a server at
either end twice in a row every other round (its story right after its own last prompt, with no pause between),
and one in the middle never: nbllm keeps in RAM while idle the slots new prompts may take
(``docs/kv-snapshots.md``), so its TTFT differs between those rounds. To compare two builds of nbllm, give
``--baseline`` and no ``--llama-bin``: two servers, each at an end. Each round, for each server:

1. One streamed greedy completion of ``--tokens`` tokens; the server's *serving CPU* over it: what its
   process spent outside its two busiest threads (llama.cpp's compute threads, one of them the decode
   loop), per token streamed -- the HTTP and streaming layer's cost.
2. Time to first token for a ~500-token prompt nobody has sent before, minus the prefill time the server
   reports for that very request: HTTP, templating, tokenizing, scheduling and delivering the first token.

Each is a median over the rounds with a 95% confidence interval (binomial order statistics). With
``--thread-handoff`` a second nbllm server runs the streaming hand-off without ``NoWait`` (a thread per
stream takes every token from the decode thread and hands it to the event loop): the simpler design
the NoWait protocol is judged against (docs/streaming.md).

Connections (``--connection``). Clients that stream from a server (the OpenAI SDK, ollama-python, LiteLLM)
keep one HTTP connection open and send request after request over it; so does this harness by default
(``keep-alive``): one ``httpx.Client`` per server for all its requests, the warm-up included, and every
request on it preceded by a plain GET of the server's health page (``/`` for nbllm, ``/health`` for
llama-server), which reopens the connection if the server closed it. llama-server (0.5.0-dev) closes the
connection after every streamed response although its headers offer keep-alive, so without that GET its
next request would pay a new connection (or, sent at once, meet the closing socket). Every server is
measured the same way: the TTFT prompt goes over a connection that is open and has just served a request,
so TTFT overhead measures the server, not the opening of a TCP connection and a client. The client port of
every response is recorded (``client_ports``) and ``ttft_reused`` says how often the TTFT prompt went over
the connection of the GET before it. ``new`` is the harness as it was before 2026-12-04: every request on a
client and connection of its own, no GET. ``both`` measures the keep-alive way and, in the same round, a
second fresh prompt on a new connection (``ttft_new_ms``), so one run shows both.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench import post_cost, prompts, servers
from bench.clients import Timing, stream
from bench.env import Peer
from bench.speculative import servers_model
from bench.workloads import _serving_cpu, median, median_ci

_THREAD_HANDOFF = "bench.pertoken_thread"
"""A module that serves nbllm with the NoWait hand-off switched off (the simpler design, for comparison)."""


def _nbllm(
    store: Path, model: str, *, threads: int, log: Path, module: str = "nbllm", tree: Path | None = None
) -> servers.Server:
    """An nbllm server; ``tree``: another checkout's code (``PYTHONPATH``), e.g. the commit before a change."""
    with servers.checkout(tree):
        server = servers.nbllm(store.resolve(), parallel=4, threads=threads, log=log.resolve(), module=module)
    server.model = model
    if module == _THREAD_HANDOFF:
        server.name += " thread hand-off"
    if tree is not None:
        server.name += f" baseline {tree}"
    return server


def _summary(values: list[float]) -> dict[str, Any]:
    return {"values": values, "median": median(values), "ci95": median_ci(values)}


def thread_ns(pid: int) -> dict[str, int]:
    """Nanoseconds on the CPU of each live thread of a process (``/proc/…/schedstat``: no tick rounding)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError):  # a thread that ended meanwhile
            out[task.name] = int((task / "schedstat").read_text().split()[0])
    return out


def _serving_ns(before: dict[str, int], after: dict[str, int]) -> int:
    """Nanoseconds between two ``thread_ns`` readings outside the two busiest threads (threads that ended
    in between are missed: ``_serving_cpu``, rounded to clock ticks, counts them)."""
    deltas = sorted((ns - before.get(tid, 0) for tid, ns in after.items()), reverse=True)
    return sum(deltas[2:])


CONNECTIONS = ("keep-alive", "new", "both")
"""``--connection``: one kept-alive connection per server, a new one per request, or both (see above)."""


class ClientPorts:
    """The client port of every response a kept-alive client gets: the same port, the same connection."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def __call__(self, response: httpx.Response) -> None:
        """httpx's response hook (called once the headers are in, before the body)."""
        network = response.extensions.get("network_stream")
        address = network.get_extra_info("client_addr") if network is not None else None
        self.seen.append(int(address[1]) if address else -1)

    def reused(self) -> float:
        """1.0 if the last response came over the connection of the one before it (``_open``'s GET), else 0.0."""
        return float(len(self.seen) >= 2 and self.seen[-1] == self.seen[-2] != -1)


_HEALTH = {"ollama": "/", "openai": "/", "llama": "/health"}
"""A cheap GET on each kind of server, to open (or check) the kept-alive connection before a request."""


def _open(server: servers.Server, http: httpx.Client | None) -> None:
    """Make sure the kept-alive client has an open connection to the server (nothing without one).

    A server may close the connection after a streamed response (llama-server does, unannounced): the GET
    then meets the closed socket and is sent again on a new connection, outside any timing."""
    if http is None:
        return
    for attempt in range(3):
        try:
            http.get(server.url + _HEALTH[server.kind]).raise_for_status()
            return
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
            if attempt == 2:
                raise


def _stream(server: servers.Server, prompt: str, n: int, *, ctx: int, http: httpx.Client | None) -> Timing:
    """``clients.stream`` over an open connection (``_open``) when a kept-alive client is given."""
    _open(server, http)
    return stream(server, prompt, n, ctx=ctx, http=http)


def _ttft_overhead(server: servers.Server, tag: str, *, ctx: int, http: httpx.Client | None) -> float:
    """Milliseconds from sending a prompt nobody sent before to its first token, less the server's prefill."""
    text = f"[{server.name} {tag} {time.time_ns()}] " + prompts.long_prompt()
    first = _stream(server, text, 4, ctx=ctx, http=http)
    prefill = first.server.get("prompt_eval_duration", 0.0) / 1e9
    return 1e3 * (first.ttft - prefill)


def _round(
    server: servers.Server,
    *,
    n: int,
    ctx: int,
    tag: str,
    http: httpx.Client | None = None,
    ports: ClientPorts | None = None,
    fresh: bool = False,
) -> dict[str, float]:
    """Serving CPU µs/token (ticks and schedstat), decode tokens/s and TTFT overhead (ms) of one round.

    ``http``: the server's kept-alive client (None: a new client and connection per request), ``ports`` its
    response hook; ``fresh``: also the TTFT overhead of a prompt sent on a new connection (``ttft_new_ms``)."""
    _open(server, http)  # (before the CPU readings: the GET is not the stream's)
    costs = server.extra.get("post_cost")
    assert costs is None or isinstance(costs, Path)
    posted = post_cost.read(costs) if costs is not None else (0, 0)
    before, before_ns = server.cpu(), thread_ns(server.proc.pid)
    timing = stream(server, prompts.STORY, n, ctx=ctx, http=http)
    after_ns, after = thread_ns(server.proc.pid), server.cpu()
    tokens = max(timing.tokens, 1)
    row = {
        "cpu_us": 1e6 * _serving_cpu(before, after) / tokens,
        "cpu_us_ns": _serving_ns(before_ns, after_ns) / 1e3 / tokens,
        "rate": timing.rate,
    }
    if costs is not None:  # (``--decode-side``: the decode thread's hand-off, which serving CPU leaves out)
        row["post_us"] = (post_cost.read(costs)[0] - posted[0]) / 1e3 / tokens
        row["cpu_plus_post_us"] = row["cpu_us_ns"] + row["post_us"]
    elif server.kind == "llama":
        row["cpu_plus_post_us"] = row["cpu_us_ns"]  # (its decode thread's hand-off is not measured: counted 0)
    row["ttft_ms"] = _ttft_overhead(server, tag, ctx=ctx, http=http)
    if ports is not None:
        row["ttft_reused"] = ports.reused()
    if fresh:
        row["ttft_new_ms"] = _ttft_overhead(server, tag + " new", ctx=ctx, http=None)
    return row


def measure(
    sides: list[servers.Server], *, rounds: int, n: int, ctx: int, connection: str = "keep-alive"
) -> dict[str, Any]:
    """Alternating rounds over every server; per server its series and their medians (and, kept alive, the
    client port of each of its requests under ``client_ports``)."""
    if connection not in CONNECTIONS:
        raise ValueError(f"connection must be one of {CONNECTIONS}, not {connection!r}")
    ports = {s.name: ClientPorts() for s in sides} if connection != "new" else {}
    clients = {name: httpx.Client(timeout=600, event_hooks={"response": [hook]}) for name, hook in ports.items()}
    series: dict[str, dict[str, list[float]]] = {s.name: {} for s in sides}
    try:
        for server in sides:
            _stream(server, prompts.STORY, 8, ctx=ctx, http=clients.get(server.name))  # loaded and warm
        for r in range(rounds):
            for server in sides if r % 2 == 0 else list(reversed(sides)):
                name = server.name
                row = _round(
                    server,
                    n=n,
                    ctx=ctx,
                    tag=str(r),
                    http=clients.get(name),
                    ports=ports.get(name),
                    fresh=connection == "both",
                )
                for key, value in row.items():
                    series[server.name].setdefault(key, []).append(value)
            shown = (
                f"{k}: {v['cpu_us_ns'][-1]:.0f} µs, {v['ttft_ms'][-1]:.1f} ms"
                + (f" (new connection {v['ttft_new_ms'][-1]:.1f} ms)" if "ttft_new_ms" in v else "")
                for k, v in series.items()
            )
            print(f"round {r}: " + "; ".join(shown), flush=True)
    finally:
        for client in clients.values():
            client.close()
    out: dict[str, Any] = {name: {key: _summary(values) for key, values in row.items()} for name, row in series.items()}
    for name, hook in ports.items():
        out[name]["client_ports"] = hook.seen
    return out


def ratios(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per-round ratios of the first server's serving CPU and TTFT overhead to each other server's."""
    names = list(result)
    first = result[names[0]]
    out: dict[str, dict[str, Any]] = {}
    for name in names[1:]:
        other = result[name]
        out[f"{names[0]} / {name}"] = {
            key: _summary([a / b for a, b in zip(first[key]["values"], other[key]["values"], strict=True) if b > 0])
            for key in ("cpu_us", "cpu_us_ns", "cpu_plus_post_us", "ttft_ms", "ttft_new_ms")
            if key in first and key in other
        }
    return out


def main(argv: list[str] | None = None) -> None:
    """Start the servers, measure, write a JSON file."""
    p = argparse.ArgumentParser(prog="python -m bench.pertoken", description=__doc__)
    p.add_argument(
        "--llama-bin",
        type=Path,
        help="a directory with llama.cpp's llama-server (without it: nbllm against --baseline or --thread-handoff)",
    )
    p.add_argument("--store", type=Path, default=Path(__file__).parent / ".peers" / "store")
    p.add_argument("--model", default="smollm2:135m", help="nbllm model (SmolLM2, perhaps other PARAMETERs)")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--tokens", type=int, default=512)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--thread-handoff", action="store_true", help="also measure the hand-off without NoWait")
    p.add_argument("--baseline", type=Path, help="also measure nbllm from this checkout (before/after, same rounds)")
    p.add_argument(
        "--openai",
        action="store_true",
        help="stream nbllm's /v1/completions (the store needs a model named 'm'); TTFT then includes the prefill",
    )
    p.add_argument(
        "--connection",
        choices=CONNECTIONS,
        default="keep-alive",
        help="one kept-alive connection per server (default), a new one per request (the harness before "
        "2026-12-04), or both: each round's TTFT also on a new connection",
    )
    p.add_argument(
        "--decode-side",
        action="store_true",
        help="run nbllm under bench/post_cost.py (a --baseline checkout needs that file) and add the decode "
        "thread's hand-off of each token to its serving CPU (cpu_plus_post_us; llama-server's counted as 0)",
    )
    p.add_argument("--label", default="", help="what this run measures (e.g. the commit)")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    if a.llama_bin is None and a.baseline is None and not a.thread_handoff:
        p.error("nothing to compare nbllm with: give --llama-bin, --baseline or --thread-handoff")
    log = a.out.with_suffix(".log")
    model = servers_model(a.store)
    started: list[servers.Server] = []
    module = "bench.post_cost" if a.decode_side else "nbllm"

    def costed(tree: Path | None, name: str) -> servers.Server:
        costs = a.out.with_suffix(f".{name}.post").resolve()
        costs.unlink(missing_ok=True)
        os.environ["BENCH_POST_COST"] = str(costs)  # (read by the server at its start)
        server = _nbllm(a.store, a.model, threads=a.threads, log=log, module=module, tree=tree)
        if a.decode_side:
            server.extra["post_cost"] = costs
        return server

    try:
        started.append(costed(None, "this"))
        if a.baseline is not None:
            started.append(costed(a.baseline.resolve(), "baseline"))
        if a.thread_handoff:
            started.append(_nbllm(a.store, a.model, threads=a.threads, log=log, module=_THREAD_HANDOFF))
        if a.llama_bin is not None:
            peer = Peer("llama.cpp", Path(sys.executable), a.llama_bin)
            started.append(servers.llama_server(peer, model, n_ctx=2048, parallel=4, threads=a.threads, log=log))
        result: dict[str, Any] = {
            "label": a.label,
            "command": "python -m bench.pertoken " + " ".join(argv if argv is not None else sys.argv[1:]),
            "rounds": a.rounds,
            "tokens": a.tokens,
            "connection": a.connection,
            "load_before": os.getloadavg(),
        }
        if a.openai:
            for server in started[:-1] if a.llama_bin is not None else started:
                server.kind, server.model = "openai", "m"
        result["servers"] = measure(started, rounds=a.rounds, n=a.tokens, ctx=2048, connection=a.connection)
        result["load_after"] = os.getloadavg()
        result["ratios"] = ratios(result["servers"])
    finally:
        for server in started:
            server.stop()
    a.out.write_text(json.dumps(result, indent=1))
    for name, row in [*result["servers"].items(), *result["ratios"].items()]:
        print(name, {k: (round(v["median"], 2), v["ci95"]) for k, v in row.items() if k != "client_ports"})


if __name__ == "__main__":
    main()
