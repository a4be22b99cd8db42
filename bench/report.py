"""The benchmark report: a Markdown table of medians (min–max) with ratios to the ceiling and peers, plus plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.workloads import median, median_ci

NBLLM = "nbllm (np=4)"


def _span(values: list[float], fmt: str = "{:.1f}") -> str:
    if not values:
        return "–"
    med = fmt.format(median(values))
    return med if len(values) == 1 else f"{med} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×" if a and b else "–"


def _decode_section(name: str, m: dict[str, Any]) -> list[str]:
    raw = median(m.get("raw", {}).get("decode_rates", []))
    lines = [
        f"### {name}: single-stream decode (tokens/s, {m['config']['tokens']} tokens, greedy)",
        "",
        "| engine | tokens/s | vs raw ceiling | nbllm ÷ this |",
        "|---|---|---|---|",
    ]
    ours = median(m.get("decode", {}).get(NBLLM, {}).get("rates", []))
    lines.append(
        f"| llama-cpp-python in-process (ceiling) | {_span(m.get('raw', {}).get('decode_rates', []))} | 1.00× | "
        f"{_ratio(ours, raw)} |"
    )
    for server, data in m.get("decode", {}).items():
        rate = median(data["rates"])
        lines.append(f"| {server} | {_span(data['rates'])} | {_ratio(rate, raw)} | {_ratio(ours, rate)} |")
    bench = m.get("llama_bench", {})
    if bench:
        tg = bench.get("decode_128", 0)
        lines.append(f"| llama-bench tg128 (engine ceiling) | {tg:.1f} | {_ratio(tg, raw)} | {_ratio(ours, tg)} |")
    return [*lines, ""]


def _ttft_section(name: str, m: dict[str, Any]) -> list[str]:
    raw = m.get("raw", {})
    prefill = [1000 * v for v in raw.get("prefill_s", [])]
    lines = [
        f"### {name}: time to first token, {raw.get('long_prompt_tokens', '~500')}-token prompt (ms)",
        "",
        "| engine | ms | overhead over raw prefill | overhead over its own prefill, same request |",
        "|---|---|---|---|",
        f"| llama-cpp-python in-process prefill | {_span(prefill)} | – | – |",
    ]
    for server, data in m.get("ttft", {}).items():
        values = [1000 * v for v in data["ttft"]]
        over = median(values) - median(prefill) if prefill else 0
        path = _path_overhead(data)
        own = f"{path:+.1f} ms" if path is not None else "–"
        lines.append(f"| {server} | {_span(values)} | {over:+.1f} ms | {own} |")
    lines += [
        "",
        "The raw prefill runs in another process minutes apart, so its column carries this machine's drift "
        "(±5–10%, i.e. ±100 ms here); the last column subtracts the prefill time each server reports for the "
        "same request from the client's time to first token: HTTP, templating, tokenizing, scheduling and "
        "delivery of the first token.",
    ]
    return [*lines, ""]


def _path_overhead(data: dict[str, Any]) -> float | None:
    """Median over requests of (client TTFT − server-reported prefill), in ms; None if not reported."""
    pairs = list(zip(data.get("ttft", []), data.get("server_prefill", []), strict=False))
    if not pairs or len(pairs) != len(data.get("ttft", [])):
        return None
    return 1000 * median([t - p for t, p in pairs])


def _concurrency_section(name: str, m: dict[str, Any]) -> list[str]:
    conc = {server: data for server, data in m.get("concurrency", {}).items() if data}  # None: step failed
    clients = sorted({int(k) for data in conc.values() for k in data}, key=int)
    lines = [
        f"### {name}: concurrent streaming clients, aggregate tokens/s (p50 / p95 latency, s)",
        "",
        "| server | " + " | ".join(f"{k} client{'s' if k > 1 else ''}" for k in clients) + " |",
        "|---|" + "---|" * len(clients),
    ]
    for server, data in conc.items():
        cells = []
        for k in clients:
            d = data.get(str(k))
            cells.append(f"{_span(d['aggregate'])} ({d['p50']:.1f} / {d['p95']:.1f})" if d else "–")
        lines.append(f"| {server} | " + " | ".join(cells) + " |")
    for server, data in conc.items():
        if any(data.get(str(k), {}).get("decode") for k in clients):
            cells = [_span(data[str(k)]["decode"]) if data.get(str(k), {}).get("decode") else "–" for k in clients]
            lines.append(f"| {server}, decode only | " + " | ".join(cells) + " |")
    engine = m.get("engine", {})
    for key, label in (("aggregate", "prefill included"), ("decode", "decode only")):
        values = engine.get(key, {})
        if values:
            cells = [_span(values[str(k)]) if str(k) in values else "–" for k in clients]
            lines.append(f"| nbllm engine in-process, parallel = B, {label} | " + " | ".join(cells) + " |")
    bench = m.get("llama_bench", {})
    if any(k.startswith("batched_B") for k in bench):
        cells = [f"{bench.get(f'batched_B{k}', 0):.1f}" if f"batched_B{k}" in bench else "–" for k in clients]
        lines.append("| llama-batched-bench S_TG (engine ceiling), decode only | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Servers are measured through HTTP with the streaming client on the same two cores, wall time from the "
        "requests to the last token (prompt evaluation included). 'decode only' counts the tokens that arrive "
        "once every stream has its first one, over the time they took, which is what llama-batched-bench's S_TG "
        "reports (it is meaningful where the server decodes all the clients at once: parallel ≥ clients). The "
        "in-process rows have no server and no client on the cores.",
    ]
    best = _best(conc, "nbllm")
    peers = [server for server in conc if not server.startswith("nbllm")]
    if best and peers:
        lines += ["", "nbllm (its best parallel setting at each count) ÷ each peer:", ""]
        header = " | ".join(f"{k} client{'s' if k > 1 else ''}" for k in clients)
        lines += [f"| peer | {header} |", "|---|" + "---|" * len(clients)]
        for server in peers:
            cells = [
                _ratio(best.get(k, 0.0), median(conc[server][str(k)]["aggregate"])) if str(k) in conc[server] else "–"
                for k in clients
            ]
            lines.append(f"| {server} | " + " | ".join(cells) + " |")
        lines.append("")
    return [*lines, ""]


def _paired_section(name: str, m: dict[str, Any]) -> list[str]:
    paired = m.get("paired", {})
    if not paired:
        return []
    lines = [
        f"### {name}: nbllm and llama-server side by side, alternating rounds",
        "",
        "Both servers up at once (the idle one takes no CPU), each round measuring one then the other, the order "
        "alternating: the ratio of a round is taken seconds apart, so this machine's drift (±15% over minutes) "
        "mostly cancels. One client: decode tokens/s of one stream; more: aggregate tokens/s, prefill included. "
        "Serving CPU: what each process spent outside its two busiest threads (llama.cpp's compute threads) per "
        "token streamed, over all rounds: the HTTP and streaming layer, which here takes its CPU from the decode.",
        "",
        "| clients | peer | nbllm | peer | nbllm ÷ peer, median of rounds (min–max) | 95% CI of that median "
        "| rounds | serving CPU µs/token, nbllm / peer |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k in sorted(paired, key=int):
        d = paired[k]
        cpu = d.get("serving_us_per_token")
        ci = median_ci(d["ratios"])
        cells = [k, d["peer"], _span(d["ours"]), _span(d["theirs"]), _span(d["ratios"], "{:.3f}")]
        cells += [f"{ci[0]:.3f}–{ci[1]:.3f}" if ci else "(too few rounds)", len(d["ratios"])]
        cells.append(f"{cpu['ours']:.0f} / {cpu['theirs']:.0f}" if cpu else "")
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return [*lines, ""]


def _ceiling_section(name: str, m: dict[str, Any]) -> list[str]:
    side = m.get("ceiling_paired") or {}
    if not side:
        return []
    lines = [
        f"### {name}: nbllm and llama-batched-bench side by side, alternating rounds",
        "",
        "Each round runs nbllm's engine in-process and its server over HTTP with B clients (decode only), and "
        "llama-batched-bench (S_TG), the order alternating, so each ratio is taken within seconds.",
        "",
        "| B | llama-batched-bench | nbllm engine in-process | engine ÷ batched-bench (95% CI) | nbllm server, "
        "decode only | server ÷ batched-bench (95% CI) | rounds |",
        "|---|---|---|---|---|---|---|",
    ]
    for b in sorted(side, key=int):
        d = side[b]
        cells = [b, _span(d["ceiling"]), _span(d["engine"]), _median_and_ci(d["engine_ratios"])]
        cells += [_span(d["http"]), _median_and_ci(d["http_ratios"]), len(d["ceiling"])]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return [*lines, ""]


def _median_and_ci(ratios: list[float]) -> str:
    ci = median_ci(ratios)
    return f"{median(ratios):.3f}" + (f" ({ci[0]:.3f}–{ci[1]:.3f})" if ci else "")


def _targets(name: str, m: dict[str, Any]) -> list[str]:
    rows = []
    raw = median(m.get("raw", {}).get("decode_rates", []))
    ours = median(m.get("decode", {}).get(NBLLM, {}).get("rates", []))
    rows.append(
        ("single-stream decode ≥ 0.98× in-process ceiling", _ratio(ours, raw), ours >= 0.98 * raw if raw else None)
    )
    prefill = median(m.get("raw", {}).get("prefill_s", []))
    ttft = median(m.get("ttft", {}).get(NBLLM, {}).get("ttft", []))
    if prefill and ttft:
        over = 1000 * (ttft - prefill)
        rows.append(("TTFT overhead ≤ 5 ms over raw prefill", f"{over:+.1f} ms", over <= 5))
    path = _path_overhead(m.get("ttft", {}).get(NBLLM, {}))
    if path is not None:
        rows.append(("TTFT overhead ≤ 5 ms over the engine's own prefill (same request)", f"{path:+.1f} ms", path <= 5))
    conc = m.get("concurrency", {})
    best = _best(conc, "nbllm")
    paired = m.get("paired", {})
    peer4 = median(conc.get("llama-server (np=4)", {}).get("4", {}).get("aggregate", []))
    if paired.get("4", {}).get("ratios"):
        rows.append(_side_by_side("4 clients ≥ 1.0× llama-server -np 4 (side by side)", paired["4"]["ratios"]))
    elif best.get(4) and peer4:
        rows.append(("4 clients ≥ 1.0× llama-server -np 4", _ratio(best[4], peer4), best[4] >= peer4))
    bench = m.get("llama_bench", {})
    engine = {int(k): median(v) for k, v in m.get("engine", {}).get("decode", {}).items()}
    best_decode = _best(conc, "nbllm", "decode")
    side = m.get("ceiling_paired") or {}
    for k, share in ((8, 0.85), (1, 0.9)):
        ceiling = bench.get(f"batched_B{k}")
        who = f"{k} client{'s' if k > 1 else ''}"
        if str(k) in side:  # measured side by side: these replace the ones taken minutes apart
            d = side[str(k)]
            rows.append(
                _side_by_side(
                    f"engine in-process B={k}, decode only ≥ {share}× batched-bench B={k} (side by side)",
                    d["engine_ratios"],
                    share,
                )
            )
            rows.append(
                _side_by_side(
                    f"server, {who} over HTTP, decode only ≥ {share}× batched-bench B={k} (side by side)",
                    d["http_ratios"],
                    share,
                )
            )
        if not ceiling:
            continue
        if engine.get(k) and str(k) not in side:
            label = f"engine in-process B={k}, decode only ≥ {share}× batched-bench B={k}"
            rows.append((label, _ratio(engine[k], ceiling), engine[k] >= share * ceiling))
        http = best_decode.get(k)
        if http and str(k) not in side:
            label = f"server, {who} over HTTP, decode only ≥ {share}× batched-bench B={k}"
            rows.append((label, _ratio(http, ceiling), http >= share * ceiling))
        if best.get(k):
            label = f"server, {who} over HTTP, prefill included ≥ {share}× batched-bench B={k}"
            rows.append((label, _ratio(best[k], ceiling), best[k] >= share * ceiling))
    peer1 = median(m.get("decode", {}).get("llama-server (np=4)", {}).get("rates", []))
    if paired.get("1", {}).get("ratios"):
        rows.append(_side_by_side("1 client decode ≥ 1.0× llama-server (side by side)", paired["1"]["ratios"]))
    elif ours and peer1:
        rows.append(("1 client decode ≥ 1.0× llama-server", _ratio(ours, peer1), ours >= peer1))
    turn = m.get("multiturn")
    if turn:
        speedups = turn.get("speedups") or ([turn["cold_s"] / turn["cached_s"]] if turn["cached_s"] else [0.0])
        speedup = median(speedups)
        rows.append(
            (
                "turn-5 prompt eval ≥ 5× faster with the prefix cache",
                f"{_span(speedups)}× ({turn['cached_tokens']} vs {turn['cold_tokens']} tokens)",
                speedup >= 5,
            )
        )
    lines = [f"### {name}: targets", "", "| target | measured | met |", "|---|---|---|"]
    for label, value, met in rows:
        verdict = met if isinstance(met, str) else {True: "yes", False: "no"}.get(met, "–")
        lines.append(f"| {label} | {value} | {verdict} |")
    return [*lines, ""]


def _side_by_side(label: str, ratios: list[float], at_least: float = 1.0) -> tuple[str, str, bool | str]:
    """A "≥ x× the peer" target on side-by-side rounds: met where the median's 95% CI lies at or above x; a
    median above x whose interval reaches below it is not shown to be there ("level" at x = 1: parity)."""
    r, ci = median(ratios), median_ci(ratios)
    if ci is None:
        return label, f"{r:.3f}× ({len(ratios)} rounds: too few for an interval)", "not judged"
    value = f"{r:.3f}× (95% CI {ci[0]:.3f}–{ci[1]:.3f})"
    if ci[0] >= at_least:
        return label, value, True
    if ci[1] < at_least:
        return label, value, False
    return label, value, f"{'level' if at_least == 1.0 else 'not shown'} (the CI spans {at_least})"


def _best(conc: dict[str, Any], prefix: str, key: str = "aggregate") -> dict[int, float]:
    best: dict[int, float] = {}
    for server, data in conc.items():
        if server.startswith(prefix):
            for k, d in data.items():
                if d.get(key):
                    best[int(k)] = max(best.get(int(k), 0.0), median(d[key]))
    return best


def write(results: dict[str, Any], out_dir: Path, stamp: str) -> Path:
    """Write ``<stamp>.md``, ``<stamp>.json`` and plots; return the Markdown path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stamp}.json").write_text(json.dumps(results, indent=2))
    lines = [
        f"# nbllm benchmark — {stamp}",
        "",
        f"Machine: {results['machine']}",
        "",
        f"Settings: {json.dumps(results['config'])}",
        "",
        "Medians of the runs, min–max in parentheses. Every engine runs the same GGUF with the same context, "
        "threads and greedy sampling, one server at a time.",
        "",
    ]
    for name, m in results["models"].items():
        lines += [f"## {name}", ""]
        lines += _targets(name, m) + _decode_section(name, m) + _ttft_section(name, m) + _concurrency_section(name, m)
        lines += _paired_section(name, m)
        lines += _ceiling_section(name, m)
        if m.get("memory"):
            lines += [f"### {name}: peak RSS with the model loaded (MB)", "", "| server | MB |", "|---|---|"]
            lines += [f"| {s} | {v / 1e6:.0f} |" for s, v in m["memory"].items()] + [""]
    if results.get("cold_start"):
        lines += ["## Cold start (s)", "", "| step | seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in results["cold_start"].items()] + [""]
    plots = _plots(results, out_dir, stamp)
    lines += [f"![{p.stem}]({p.name})" for p in plots]
    path = out_dir / f"{stamp}.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _plots(results: dict[str, Any], out_dir: Path, stamp: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for name, m in results["models"].items():
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
        labels = ["raw in-process", *m.get("decode", {}).keys()]
        values = [m.get("raw", {}).get("decode_rates", [])] + [d["rates"] for d in m.get("decode", {}).values()]
        ax1.bar(
            range(len(labels)),
            [median(v) for v in values],
            yerr=[[median(v) - min(v, default=0) for v in values], [max(v, default=0) - median(v) for v in values]],
        )
        ax1.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
        ax1.set_ylabel("tokens/s")
        ax1.set_title(f"{name}: single-stream decode")
        for server, data in m.get("concurrency", {}).items():
            if not data:  # the step failed
                continue
            ks = sorted(data, key=int)
            ax2.plot([int(k) for k in ks], [median(data[k]["aggregate"]) for k in ks], marker="o", label=server)
        ax2.set_xlabel("concurrent clients")
        ax2.set_ylabel("aggregate tokens/s")
        ax2.set_title(f"{name}: concurrency")
        ax2.legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / f"{stamp}-{name.replace(':', '_')}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths
