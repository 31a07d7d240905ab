#!/usr/bin/env python3
"""Turn benchmark-matrix results (JSON lines) into BENCHMARKS.md and an SVG chart.

    report.py meta --command CMD [--quick 0|1] [...]   print the run's meta line
    report.py render RESULTS.jsonl [--out BENCHMARKS.md] [--svg benches/ratios.svg]
    report.py medians RESULTS.jsonl [--baseline bench_fastws]   median ratios over rounds, every metric

The first line of a results file is the meta record (machine, date, command);
every other line is one loadgen RESULT object carrying "server" and "scenario".
Standard library only.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys

BASELINE = "bench_tt_echo"
SERVER_ORDER = ["bench_echo", "bench_axum_echo", "bench_tt_echo", "bench_tt_combined", "bench_fastws"]
SERVER_LABEL = {
    "bench_echo": "squall",
    "bench_axum_echo": "squall in axum",
    "bench_echo_metrics": "squall + metrics",
    "bench_tt_echo": "tokio-tungstenite (send)",
    "bench_tt_combined": "tokio-tungstenite (feed+flush)",
    "bench_fastws": "fastwebsockets",
}
COLORS = ["#d95f02", "#7570b3", "#1b9e77", "#e7298a", "#66a61e", "#e6ab02"]
ECHO_SCENARIOS = [
    ("echo_c64_w1_s32_text", "C=64 W=1, 32 B text"),
    ("echo_c64_w16_s32_text", "C=64 W=16, 32 B text"),
    ("echo_c16_w4_s65536_bin", "C=16 W=4, 64 KiB binary"),
]


# --------------------------------------------------------------------------
# meta
# --------------------------------------------------------------------------

def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cmd_output(args):
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def emit_meta(a):
    meta = {
        "type": "meta",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": a.command,
        "quick": a.quick == "1",
        "duration_s": a.duration,
        "warmup_s": a.warmup,
        "idle_n": a.idle_n,
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "kernel": platform.release(),
        "rustc": cmd_output(["rustc", "--version"]),
        "git_commit": cmd_output(["git", "rev-parse", "--short", "HEAD"]),
        "notes": [n for n in (a.notes or "").splitlines() if n.strip()],
    }
    print(json.dumps(meta))


# --------------------------------------------------------------------------
# render
# --------------------------------------------------------------------------

def load(path):
    meta, runs = {}, {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if rec.get("type") == "meta":
                meta = rec
            elif "server" in rec and "scenario" in rec:
                runs[(rec["server"], rec["scenario"])] = rec  # last one wins
    return meta, runs


def fmt(x, digits=0):
    if x is None:
        return "–"
    if isinstance(x, float) and x != x:
        return "–"
    if digits == 0:
        return f"{x:,.0f}"
    return f"{x:,.{digits}f}"


def ratio(x, base):
    if x is None or base in (None, 0):
        return None
    return x / base


def servers_in(runs):
    present = {s for s, _ in runs}
    ordered = [s for s in SERVER_ORDER if s in present]
    return ordered + sorted(present - set(ordered))


def color(server, servers):
    """Stable colour per known server, so charts of different runs match."""
    if server in SERVER_ORDER:
        return COLORS[SERVER_ORDER.index(server)]
    return COLORS[(len(SERVER_ORDER) + servers.index(server)) % len(COLORS)]


def label(server):
    return SERVER_LABEL.get(server, server)


def ratio_metrics():
    """(group, key-in-record, scenario, caption, higher_is_better)"""
    rows = []
    for sc, cap in ECHO_SCENARIOS:
        rows.append(("throughput", "msgs_per_s", sc, f"msg/s, {cap}", True))
    rows.append(("throughput", "handshakes_per_s", "connect_w16", "handshakes/s, 16 workers", True))
    for sc, cap in ECHO_SCENARIOS:
        rows.append(("cost", "server_cpu_us_per_msg", sc, f"server CPU/msg, {cap}", False))
    rows.append(("cost", "server_cpu_us_per_handshake", "connect_w16", "server CPU/handshake", False))
    rows.append(("cost", "rss_kib_per_conn", "idle", "server RSS, per idle conn", False))
    return rows


def render(a):
    meta, runs = load(a.results)
    if not runs:
        sys.exit(f"no results in {a.results}")
    servers = servers_in(runs)
    out = []
    w = out.append
    w("# squall benchmarks\n")
    if meta.get("quick"):
        w("> **Quick smoke run** (short durations): numbers are indicative only.\n")
    w("Echo servers pinned to core 0, the load generator (`benches/loadgen.rs`) pinned to core 1; "
      "one fresh server process per scenario; loopback only. See `benches/README.md` for what each "
      "figure means.\n")
    w("## Machine and run\n")
    w(f"- date: {meta.get('date', '?')}")
    w(f"- CPU: {meta.get('cpu_model', '?')}, nproc = {meta.get('nproc', '?')}")
    w(f"- kernel: {meta.get('kernel', '?')}")
    if meta.get("rustc"):
        w(f"- compiler: {meta['rustc']}")
    if meta.get("git_commit"):
        w(f"- commit: {meta['git_commit']}")
    w(f"- measured window {meta.get('duration_s', '?')} s after {meta.get('warmup_s', '?')} s warm-up; "
      f"idle scenario N = {meta.get('idle_n', '?')}")
    w(f"- command: `{meta.get('command', '?')}`")
    for n in meta.get("notes", []):
        w(f"- note: {n}")
    failed = [k for k, r in runs.items() if r.get("failed")]
    for s, sc in sorted(failed):
        w(f"- note: {label(s)} / {sc}: no result (server or loadgen failed; see the run logs)")
    w("")

    w("## Echo throughput and latency\n")
    w("| scenario | server | msg/s | MB/s | RTT p50 µs | RTT p99 µs | server CPU µs/msg | server CPU % "
      "| loadgen CPU µs/msg | loadgen CPU % | errors |")
    w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for sc, cap in ECHO_SCENARIOS:
        for s in servers:
            r = runs.get((s, sc))
            if not r or r.get("failed"):
                continue
            util = r.get("server_cpu_util")
            lutil = r.get("loadgen_cpu_util")
            w(f"| {cap} | {label(s)} | {fmt(r.get('msgs_per_s'))} | {fmt(r.get('mb_per_s'), 2)} "
              f"| {fmt(r.get('rtt_p50_us'), 0)} | {fmt(r.get('rtt_p99_us'), 0)} "
              f"| {fmt(r.get('server_cpu_us_per_msg'), 3)} | {fmt(util * 100 if util is not None else None)} "
              f"| {fmt(r.get('loadgen_cpu_us_per_msg'), 3)} | {fmt(lutil * 100 if lutil is not None else None)} "
              f"| {fmt(r.get('errors'))} |")
    w("")
    w("MB/s counts payload bytes in one direction. RTT is from the moment a message is queued by the "
      "load generator to the moment its echo is read. A CPU column near 100 % marks the process that "
      "limits throughput; when the load generator is that process, compare servers by CPU µs/msg.\n")

    w("## Handshakes\n")
    w("| server | handshakes/s | cycle p50 µs | cycle p99 µs | server CPU µs/handshake | server CPU % "
      "| loadgen CPU µs/handshake | errors |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|")
    for s in servers:
        r = runs.get((s, "connect_w16"))
        if not r or r.get("failed"):
            continue
        util = r.get("server_cpu_util")
        w(f"| {label(s)} | {fmt(r.get('handshakes_per_s'))} | {fmt(r.get('cycle_p50_us'))} "
          f"| {fmt(r.get('cycle_p99_us'))} | {fmt(r.get('server_cpu_us_per_handshake'), 1)} "
          f"| {fmt(util * 100 if util is not None else None)} "
          f"| {fmt(r.get('loadgen_cpu_us_per_handshake'), 1)} | {fmt(r.get('errors'))} |")
    w("")
    w("One cycle = TCP connect, HTTP upgrade, close handshake, server closes TCP; 16 workers in parallel.\n")

    w("## Idle connections\n")
    w("| server | established | server RSS before KiB | after KiB | KiB per connection "
      "| server CPU µs/connection | errors |")
    w("|---|---:|---:|---:|---:|---:|---:|")
    for s in servers:
        r = runs.get((s, "idle"))
        if not r or r.get("failed"):
            continue
        w(f"| {label(s)} | {fmt(r.get('established'))} / {fmt(r.get('requested'))} "
          f"| {fmt(r.get('server_rss_before_kib'))} | {fmt(r.get('server_rss_after_kib'))} "
          f"| {fmt(r.get('rss_kib_per_conn'), 1)} | {fmt(r.get('server_cpu_us_per_conn'), 1)} "
          f"| {fmt(r.get('errors'))} |")
    w("")
    w("Each connection completed the handshake and one verified echo before the second RSS sample.\n")

    metrics = ratio_metrics()
    w(f"## Ratios to {label(BASELINE)} (same run)\n")
    if not any(s == BASELINE for s, _ in runs):
        w(f"No {BASELINE} results in this run, so no ratios.\n")
    else:
        w("Throughput rows: higher is better. Cost rows (CPU, memory): lower is better.\n")
        w("| metric | " + " | ".join(label(s) for s in servers) + " |")
        w("|---|" + "---:|" * len(servers))
        for group, key, sc, cap, _hib in metrics:
            base = runs.get((BASELINE, sc), {}).get(key)
            cells = [fmt(ratio(runs.get((s, sc), {}).get(key), base), 2) for s in servers]
            w(f"| {cap} | " + " | ".join(cells) + " |")
        w("")
        svg_rel = os.path.relpath(a.svg, os.path.dirname(os.path.abspath(a.out)) or ".")
        w(f"![ratios to {label(BASELINE)}]({svg_rel})\n")
        write_svg(a.svg, runs, servers, metrics)

    # Figures measured by other programs (fan-out, soak, allocations, micro
    # benchmarks, conformance) live in benches/sections/*.md, each written
    # by hand from its own run; they are appended so BENCHMARKS.md has all.
    sections = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sections")
    if os.path.isdir(sections):
        for name in sorted(os.listdir(sections)):
            if name.endswith(".md"):
                with open(os.path.join(sections, name)) as f:
                    w(f.read().rstrip() + "\n")

    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        f.write("\n".join(out))
    print(f"wrote {a.out} and {a.svg}")


# --------------------------------------------------------------------------
# SVG
# --------------------------------------------------------------------------

def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def write_svg(path, runs, servers, metrics):
    bar_w, gap, group_gap = 16, 2, 26
    left, top, panel_h, panel_gap = 60, 70, 220, 150
    groups = {"throughput": [], "cost": []}
    for m in metrics:
        groups[m[0]].append(m)
    n_bars = len(servers)
    group_w = n_bars * (bar_w + gap) + group_gap
    legend_w = sum(24 + 7 * len(label(s)) for s in servers)
    width = max(left + max(len(v) for v in groups.values()) * group_w + 30, left + legend_w + 20)
    height = top + 2 * panel_h + panel_gap + 60
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="22" font-size="15" font-weight="bold">'
           f'Ratio to {esc(label(BASELINE))} (same run)</text>']
    # legend
    lx = left
    for i, s in enumerate(servers):
        svg.append(f'<rect x="{lx}" y="34" width="12" height="12" fill="{color(s, servers)}"/>')
        svg.append(f'<text x="{lx + 16}" y="44">{esc(label(s))}</text>')
        lx += 24 + 7 * len(label(s))
    titles = {"throughput": "Throughput (higher is better)",
              "cost": "Server cost per operation (lower is better)"}
    for p, group in enumerate(["throughput", "cost"]):
        y0 = top + p * (panel_h + panel_gap)
        vals = []
        for _, key, sc, _, _ in groups[group]:
            base = runs.get((BASELINE, sc), {}).get(key)
            vals.append([ratio(runs.get((s, sc), {}).get(key), base) for s in servers])
        vmax = max([v for row in vals for v in row if v is not None] + [1.0])
        # round the axis up to a "nice" number
        for step in (0.5, 1, 2, 5, 10, 20, 50, 100):
            if vmax / step <= 6:
                break
        axis_max = step * (int(vmax / step) + 1)
        sy = lambda v: y0 + 20 + panel_h - v / axis_max * panel_h
        svg.append(f'<text x="{left}" y="{y0 + 8}" font-size="13" font-weight="bold">{titles[group]}</text>')
        t = 0.0
        while t <= axis_max + 1e-9:
            y = sy(t)
            svg.append(f'<line x1="{left}" x2="{width - 20}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e5e5"/>')
            svg.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{t:g}×</text>')
            t += step
        y1 = sy(1.0)
        svg.append(f'<line x1="{left}" x2="{width - 20}" y1="{y1:.1f}" y2="{y1:.1f}" '
                   f'stroke="#333" stroke-dasharray="4 3"/>')
        for g, ((_, _, _, cap, _), row) in enumerate(zip(groups[group], vals)):
            gx = left + 12 + g * group_w
            for i, v in enumerate(row):
                x = gx + i * (bar_w + gap)
                if v is None:
                    svg.append(f'<text x="{x + bar_w / 2}" y="{sy(0) - 3:.1f}" text-anchor="middle" '
                               f'fill="#999">–</text>')
                    continue
                y = sy(v)
                svg.append(f'<rect x="{x}" y="{y:.1f}" width="{bar_w}" height="{sy(0) - y:.1f}" '
                           f'fill="{color(servers[i], servers)}"><title>{esc(label(servers[i]))}: '
                           f'{v:.2f}×</title></rect>')
                svg.append(f'<text x="{x + bar_w / 2}" y="{y - 3:.1f}" text-anchor="middle" '
                           f'font-size="9">{v:.2f}</text>')
            # caption under the group, wrapped on ", "
            cx = gx + (n_bars * (bar_w + gap)) / 2
            for k, part in enumerate(cap.split(", ")):
                svg.append(f'<text x="{cx:.1f}" y="{sy(0) + 16 + 13 * k:.1f}" text-anchor="middle">'
                           f'{esc(part)}</text>')
    svg.append("</svg>")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(svg) + "\n")


def by_round(path):
    """The results file's records as {(scenario, round): {server: record}}
    (failed runs left out)."""
    by = {}
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "server" in rec and "scenario" in rec and not rec.get("failed"):
                by.setdefault((rec["scenario"], rec.get("round", "1")), {})[rec["server"]] = rec
    return by


def rounds(a):
    """Per-round ratios of each server against --baseline, and their median,
    for runs made with `run_matrix.sh --rounds N` (records tagged round=N)."""
    by = by_round(a.results)
    scenarios = sorted({sc for sc, _ in by})
    for sc in scenarios:
        metric = "msgs_per_s" if sc.startswith("echo") else (
            "handshakes_per_s" if sc.startswith("connect") else None)
        if metric is None:
            continue
        servers = sorted({s for (scn, _), recs in by.items() if scn == sc for s in recs} - {a.baseline})
        for server in servers:
            print(f"\n{sc}: {label(server)} vs {label(a.baseline)} ({metric}, server CPU µs per unit)\n")
            print("| round | " + f"{label(server)} | {label(a.baseline)} | ratio | CPU {label(server)} | CPU {label(a.baseline)} |")
            print("|---:|---:|---:|---:|---:|---:|")
            ratios = []
            cpu_key = "server_cpu_us_per_msg" if metric == "msgs_per_s" else "server_cpu_us_per_handshake"
            for (scn, rnd), recs in sorted(by.items(), key=lambda kv: int(kv[0][1])):
                if scn != sc or server not in recs or a.baseline not in recs:
                    continue
                x, b = recs[server].get(metric), recs[a.baseline].get(metric)
                q = ratio(x, b)
                if q is not None:
                    ratios.append(q)
                print(f"| {rnd} | {fmt(x)} | {fmt(b)} | {fmt(q, 3)} | {fmt(recs[server].get(cpu_key), 3)} "
                      f"| {fmt(recs[a.baseline].get(cpu_key), 3)} |")
            if ratios:
                ratios.sort()
                mid = len(ratios) // 2
                median = ratios[mid] if len(ratios) % 2 else (ratios[mid - 1] + ratios[mid]) / 2
                print(f"\nmedian ratio over {len(ratios)} rounds: {median:.3f} "
                      f"(min {ratios[0]:.3f}, max {ratios[-1]:.3f})")


# --------------------------------------------------------------------------
# medians over alternating rounds (run_matrix.sh --rounds N)
# --------------------------------------------------------------------------


def median(xs):
    xs = sorted(xs)
    if not xs:
        return None
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


MEDIAN_ROWS = [
    ("echo_c64_w1_s32_text", "msgs_per_s", "msg/s, C=64 W=1, 32 B text", True),
    ("echo_c64_w16_s32_text", "msgs_per_s", "msg/s, C=64 W=16, 32 B text", True),
    ("echo_c16_w4_s65536_bin", "msgs_per_s", "msg/s, C=16 W=4, 64 KiB binary", True),
    ("echo_c64_w1_s32_text", "server_cpu_us_per_msg", "server CPU/msg, W=1", False),
    ("echo_c64_w16_s32_text", "server_cpu_us_per_msg", "server CPU/msg, W=16", False),
    ("echo_c16_w4_s65536_bin", "server_cpu_us_per_msg", "server CPU/msg, 64 KiB", False),
    ("connect_w16", "handshakes_per_s", "handshakes/s", True),
    ("connect_w16", "server_cpu_us_per_handshake", "server CPU/handshake", False),
    ("idle", "rss_kib_per_conn", "server RSS KiB per idle conn", False),
]


def medians(a):
    """Each server's value per round, its ratio to the baseline of the same
    round, and the median of those ratios."""
    by = by_round(a.results)
    rounds = sorted({r for _, r in by}, key=lambda r: int(r))
    servers = sorted({s for v in by.values() for s in v}, key=lambda s: (s not in SERVER_ORDER, SERVER_ORDER.index(s) if s in SERVER_ORDER else 0, s))
    print(f"Median over {len(rounds)} alternating rounds; ratio = server / {label(a.baseline)} "
          "in the same round (throughput: higher is better; CPU and memory: lower is better).\n")
    print("| metric | server | median value | per-round ratios | median ratio |")
    print("|---|---|---:|---|---:|")
    for scenario, key, caption, _higher in MEDIAN_ROWS:
        for server in servers:
            values, ratios = [], []
            for r in rounds:
                recs = by.get((scenario, r), {})
                x = recs.get(server, {}).get(key)
                base = recs.get(a.baseline, {}).get(key)
                if x is None:
                    continue
                values.append(x)
                if base:
                    ratios.append(x / base)
            if not values:
                continue
            m = median(ratios)
            print(f"| {caption} | {label(server)} | {median(values):,.3f} | "
                  f"{' '.join(f'{q:.2f}' for q in ratios)} | {'–' if m is None else f'{m:.2f}'} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("meta")
    m.add_argument("--command", default="")
    m.add_argument("--quick", default="0")
    m.add_argument("--duration", type=float)
    m.add_argument("--warmup", type=float)
    m.add_argument("--idle-n", type=int)
    m.add_argument("--notes", default="")
    r = sub.add_parser("render")
    r.add_argument("results")
    r.add_argument("--out", default="BENCHMARKS.md")
    r.add_argument("--svg", default="benches/ratios.svg")
    rr = sub.add_parser("rounds", help="per-round ratios of --rounds runs")
    rr.add_argument("results")
    rr.add_argument("--baseline", default="bench_echo")
    md = sub.add_parser("medians", help="median ratios over --rounds runs, every metric")
    md.add_argument("results")
    md.add_argument("--baseline", default="bench_fastws")
    a = ap.parse_args()
    if a.cmd == "meta":
        emit_meta(a)
    elif a.cmd == "rounds":
        rounds(a)
    elif a.cmd == "medians":
        medians(a)
    else:
        render(a)


if __name__ == "__main__":
    main()
