"""Writes the benchmark report: report.md, results.json, PNG plots (gnuplot)."""
import json
import os
import shutil
import subprocess
import sys

TARGET_CEILING = 0.95
TARGET_CPU_US = 1.5
TARGET_PY_CPU = 20.0
TARGET_RSS_MB = 64.0
FLAT_RATIO = 1.25


def _n(v, digits=0):
    if v is None or v != v:
        return "n/a"
    return "{:,.{d}f}".format(v, d=digits)


def _row(name, res, events):
    wall = res["wall"]
    return {
        "name": name, "events": events, "actions": res["actions"], "requests": res["requests"],
        "wall": wall, "events_s": events / wall, "docs_s": res["actions"] / wall,
        "cpu_us": res["cpu"] / events * 1e6, "rss_mb": res["rss_kb"] / 1024.0,
        "req_ev": res["requests"] / events, "act_ev": res["actions"] / events,
        "busy": res.get("machine_busy"),
    }


def _mark(ok, smoke):
    if smoke:
        return "(met)" if ok else "(missed; not judged at smoke size)"
    return "PASS" if ok else "**FAIL**"


def tables(r, smoke=False):
    """The markdown tables (printed and written), and the list of missed targets."""
    ceil, esb, py = r["ceiling"], r["esbridge"], r["python"]
    rows = [_row("ceiling (bench-poster, no PostgreSQL)", ceil, ceil["events"]),
            _row("esbridge `run --once`", esb, esb["events"]),
            _row("Python bridge (baseline)", py, py["events"])]
    out = []
    out.append("| run | events/s | docs/s | CPU µs/event | peak RSS MB | requests/event | actions/event | wall s | machine busy |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for x in rows:
        out.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            x["name"], _n(x["events_s"]), _n(x["docs_s"]), _n(x["cpu_us"], 2), _n(x["rss_mb"], 1),
            _n(x["req_ev"], 4), _n(x["act_ev"], 3), _n(x["wall"], 1),
            "%.0f%%" % (x["busy"] * 100) if x["busy"] is not None else "n/a"))
    c, e, p = rows
    r_ceiling = e["docs_s"] / c["docs_s"]
    r_py_speed = e["events_s"] / p["events_s"]
    r_py_cpu = p["cpu_us"] / e["cpu_us"] if e["cpu_us"] > 0 else float("inf")
    mem = r.get("memory", [])
    rss_all = [esb["rss_kb"] / 1024.0] + [m["rss_kb"] / 1024.0 for m in mem]
    rss_max = max(rss_all)
    flat = None
    if len(mem) >= 2:
        flat = (mem[-1]["rss_kb"] / mem[0]["rss_kb"])
    missed = []

    def check(name, ok):
        if not ok:
            missed.append(name)
        return _mark(ok, smoke)

    out.append("")
    out.append("| ratio | value | target | |")
    out.append("|---|---:|---:|---|")
    out.append("| esbridge ÷ ceiling (docs/s) | %.3f | ≥ %.2f | %s |" % (
        r_ceiling, TARGET_CEILING, check("esbridge/ceiling", r_ceiling >= TARGET_CEILING)))
    out.append("| esbridge CPU per event | %.2f µs | ≤ %.1f µs | %s |" % (
        e["cpu_us"], TARGET_CPU_US, check("CPU per event", e["cpu_us"] <= TARGET_CPU_US)))
    out.append("| Python ÷ esbridge (CPU per event) | %.1f× | ≥ %.0f× | %s |" % (
        r_py_cpu, TARGET_PY_CPU, check("Python/esbridge CPU", r_py_cpu >= TARGET_PY_CPU)))
    out.append("| esbridge ÷ Python (events/s) | %.2f× | | |" % r_py_speed)
    out.append("| esbridge peak RSS (every catch-up) | %.1f MB | ≤ %.0f MB | %s |" % (
        rss_max, TARGET_RSS_MB, check("peak RSS", rss_max <= TARGET_RSS_MB)))
    if flat is not None:
        out.append("| RSS at %s ÷ RSS at %s events (flat) | %.2f | ≤ %.2f | %s |" % (
            _n(mem[-1]["events"]), _n(mem[0]["events"]), flat, FLAT_RATIO,
            check("flat RSS", flat <= FLAT_RATIO)))
    main = "\n".join(out)

    lv = r.get("live")
    live = ""
    if lv:
        live = "\n".join([
            "| live | value |", "|---|---:|",
            "| events written | %s at %s events/s (asked %s/s) |" % (
                _n(lv["events"]), _n(lv["rate"]), _n(r["config"]["live_rate"])),
            "| commit → acknowledged p50 | %.1f ms |" % (lv["ack_p50"] * 1e3),
            "| commit → acknowledged p99 | %.1f ms |" % (lv["ack_p99"] * 1e3),
            "| commit → acknowledged max | %.1f ms |" % (lv["ack_max"] * 1e3),
            "| commit → searchable p50 | %.0f ms |" % (lv["search_p50"] * 1e3),
            "| commit → searchable p99 | %.0f ms (%d sampled new documents) |" % (
                lv["search_p99"] * 1e3, lv["samples"]),
            "| esbridge CPU while following | %.2f µs/event |" % (
                lv["esbridge_cpu"] / lv["events"] * 1e6),
        ])
    memt = ""
    large = r.get("memory_large")
    if mem or large:
        lines = ["| backlog (events) | peak RSS MB | catch-up s | events/s |", "|---:|---:|---:|---:|"]
        for m in mem:
            lines.append("| %s | %.1f | %.1f | %s |" % (_n(m["events"]), m["rss_kb"] / 1024.0,
                                                        m["wall"], _n(m["events"] / m["wall"])))
        if large:
            lines.append("| %s large (%.0f MB of data, %s bytes each) | %.1f | %.1f | %s |" % (
                _n(large["events"]), large["bytes"] / 2**20, _n(large["bytes"] // large["events"]),
                large["rss_kb"] / 1024.0, large["wall"], _n(large["events"] / large["wall"])))
        memt = "\n".join(lines)
    return main, live, memt, missed, rows


def _gnuplot(out, script):
    if not shutil.which("gnuplot"):
        return "gnuplot is not installed: no plots"
    p = subprocess.run(["gnuplot"], input=script, text=True, cwd=out, capture_output=True)
    if p.returncode != 0:
        return "gnuplot failed: %s" % p.stderr.strip()[-300:]
    return None


def plots(r, rows, out):
    data = os.path.join(out, "data")
    os.makedirs(data, exist_ok=True)
    with open(os.path.join(data, "throughput.dat"), "w") as f:
        for x, label in zip(rows, ("ceiling", "esbridge", "python")):
            f.write('"%s" %.1f %.1f\n' % (label, x["events_s"], x["docs_s"]))
    with open(os.path.join(data, "rss.dat"), "w") as f:
        for m in r.get("memory", []):
            f.write("%d %.2f\n" % (m["events"], m["rss_kb"] / 1024.0))
    lv = r.get("live") or {}
    for name in ("ack", "search"):
        vals = sorted(lv.get(name + "_all", []))
        with open(os.path.join(data, name + ".dat"), "w") as f:
            for i, v in enumerate(vals):
                f.write("%.3f %.5f\n" % (max(v * 1e3, 0.01), (i + 1) / len(vals)))
    script = """
set terminal pngcairo size 900,500 font ",11"
set datafile missing "NaN"
set output "throughput.png"
set title "Catch-up throughput (%(n)s events)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set ylabel "per second"
set yrange [0:*]
set xrange [-0.6:2.6]
set key top right
set grid ytics
plot "data/throughput.dat" using 2:xtic(1) title "events/s", "" using 3 title "docs/s (actions/s)"
unset style
set output "rss.png"
set title "esbridge peak RSS against backlog size (run --once)"
set xlabel "backlog (events)"
set ylabel "peak RSS (MB)"
set yrange [0:*]
set xrange [0:*]
set format x "%%.0s%%c"
set style data linespoints
set key bottom right
plot "data/rss.dat" using 1:2 with linespoints lw 2 pt 7 title "peak RSS", %(rss)s with lines dt 2 title "target %(rss)s MB"
set output "live.png"
set title "Live, %(rate)s events/s: latency from commit (cumulative)"
set logscale x
set format x "%%g"
set xlabel "milliseconds after COMMIT"
set ylabel "fraction of events / sampled documents"
set yrange [0:1]
set xrange [*:*]
set key bottom right
plot "data/ack.dat" using 1:2 with lines lw 2 title "acknowledged (checkpoint covers the event)", "data/search.dat" using 1:2 with lines lw 2 title "searchable (found through the alias)"
""" % {"n": _n(r["esbridge"]["events"]), "rss": int(TARGET_RSS_MB),
       "rate": _n(r["config"]["live_rate"])}
    if not lv:
        script = script.split('set output "live.png"')[0]
    return _gnuplot(out, script)


def write_report(r, out, smoke=False):
    main, live, memt, missed, rows = tables(r, smoke)
    err = plots(r, rows, out)
    if err:
        r["notes"].append(err)
    env = r["env"]
    cfg = r["config"]
    ld = r["load"]
    md = []
    md.append("# esbridge benchmark%s" % (" (smoke run: sizes too small to mean anything)" if smoke else ""))
    md.append("")
    md.append("%s, commit %s, %s; search engine: %s; PostgreSQL %s; %s × %s, %s GB; load average %.2f at start, %.2f at end; %.0f s in all." % (
        env["date"], env["commit"], env["esbridge"], env["search"], env["postgresql"], env["cpus"],
        env["cpu"], env["memory_gb"], env["loadavg_start"], env["loadavg_end"], r["elapsed"]))
    md.append("")
    md.append("Workload: %s events (seed %d, checksum %s), %s transactions, loaded with COPY at "
              "%s events/s. esbridge settings: %s." % (
                  _n(ld["events"]), cfg["seed"], ld["checksum"], _n(ld["transactions"]),
                  _n(ld["events_per_s"]),
                  ", ".join("%s %s" % kv for kv in env["settings"].items())))
    md.append("")
    md.append("## Catch-up")
    md.append("")
    md.append(main)
    md.append("")
    md.append("![throughput](throughput.png)")
    md.append("")
    md.append("- *ceiling*: the `_bulk` bodies esbridge sent in an untimed priming run "
              "(`--dump-bulk`), posted by `bench-poster` (libcurl) to fresh indices with esbridge's "
              "concurrency (one queue per esbridge lane: %s lanes per projection, both projections "
              "at once), timed from the first send to the last answer. Its RSS holds every body." %
              env["settings"]["inflight"])
    md.append("- *esbridge*: `esbridge run --once` with default settings from fresh state, timed "
              "from exec to exit (so it includes creating the indices, the final refresh and the "
              "alias swap); CPU is user + sys of the process, RSS its peak (GNU time).")
    md.append("- *Python bridge*: `tests/bench/python_bridge.py` (psycopg + elasticsearch-py "
              "`streaming_bulk`, one action per event, same read batch and `_bulk` size). Its "
              "documents equal esbridge's: %s." % ", ".join(
                  "%s %s docs, checksum %s" % (k, _n(v["esbridge_docs"]), v["checksum"])
                  for k, v in r["crosscheck"].items()))
    md.append("- *machine busy*: share of all CPUs in use during the run (search node, "
              "PostgreSQL and anything else on the machine included).")
    md.append("")
    if r.get("rebuild"):
        md.append("## Rebuild")
        md.append("")
        md.append("| projection | events | wall s | events/s | write pause at the swap |")
        md.append("|---|---:|---:|---:|---:|")
        for proj, rb in r["rebuild"].items():
            md.append("| %s | %s | %.2f | %s | %.0f ms |" % (
                proj, _n(rb["events"]), rb["wall"], _n(rb["events_per_s"]), rb["write_pause_ms"]))
        md.append("")
        md.append("`esbridge rebuild NAME` right after the catch-up, with no daemon running: the new "
                  "generation is built from the start of the store beside the active one, which "
                  "keeps following; *write pause* is from pausing the active pipeline to the alias "
                  "naming the new generation (what readers could notice). Wall time includes "
                  "creating the index, the final refresh and the swap.")
        md.append("")
    if live:
        md.append("## Live")
        md.append("")
        md.append(live)
        md.append("")
        md.append("![live](live.png)")
        md.append("")
        md.append("`esbridge run` follows (all projections) while a writer commits %s events/s in "
                  "transactions of %d every %d ms, for %gs. *Commit* is the writer's clock right "
                  "after COMMIT returns. *Acknowledged*: the checkpoint of the event's projection in "
                  "`esbridge.generations` covers the event, i.e. its `_bulk` item was answered and "
                  "the checkpoint committed; polled every 2 ms on a separate connection. "
                  "*Searchable*: every %dth new document (OrderCreated, first ProductCreated) is "
                  "looked up by id with `_search` through the aliases every 10 ms until found "
                  "(this includes the index's 1 s refresh interval)." % (
                      _n(cfg["live_rate"]), max(1, cfg["live_rate"] // 100), 10,
                      cfg["live_seconds"], 10))
        md.append("")
    if memt:
        md.append("## Memory")
        md.append("")
        md.append(memt)
        md.append("")
        md.append("![rss](rss.png)")
        md.append("")
        md.append("Each backlog is a `run --once` catch-up from fresh state (the first %s events "
                  "of the same workload)." % ("/".join(_n(m["events"]) for m in r.get("memory", []))))
        if r.get("memory_large"):
            md.append("The large backlog (BENCH_LARGE) replaces the workload with product events "
                      "whose descriptions are that large, read under the default "
                      "--max-unsettled-bytes.")
        md.append("")
    md.append("## Details")
    md.append("")
    ph = r["esbridge"].get("phases")
    if ph:
        md.append("- esbridge's wall time: %.2f s to start (connect, create the indices, install "
                  "the script), %.2f s from the pipelines' start to the last caught-up, %.2f s to "
                  "make the indices visible (refresh, alias) and exit." % (
                      ph["setup"], ph["load"], r["esbridge"]["wall"] - ph["setup"] - ph["load"]))
    rs = r["ceiling"].get("refresh_seconds")
    if rs is not None:
        md.append("- making the ceiling's indices searchable afterwards (refresh interval back, "
                  "`_refresh`) took %.2f s more; counted in, esbridge ÷ ceiling would be %.3f." % (
                      rs, (r["esbridge"]["actions"] / r["esbridge"]["wall"])
                      / (r["ceiling"]["actions"] / (r["ceiling"]["wall"] + rs))))
    pr = r["priming"]
    md.append("- priming run (with `--dump-bulk`, not used): %.1f s, %s actions, %s requests." % (
        pr["wall"], _n(pr["actions"]), _n(pr["requests"])))
    md.append("- event mix: " + ", ".join("%s %.1f%%" % (k, v * 100.0 / ld["events"])
                                          for k, v in ld["mix"].items()))
    for name, s in sorted(r.get("index_sizes", {}).items()):
        md.append("- index %s: %s docs, %.1f MB" % (name, _n(s["docs"]), s["bytes"] / 2**20))
    md.append("- free disk before the memory runs: %s GiB (about %s bytes per event in "
              "PostgreSQL and the index)." % (r.get("disk_free_gb"), _n(r.get("bytes_per_event"))))
    for note in r["notes"]:
        md.append("- note: " + note)
    md.append("")
    md.append("Reproduce: `make %s` (sizes: BENCH_EVENTS=%d BENCH_MEMORY_EVENTS=\"%s\" "
              "BENCH_LIVE_SECONDS=%g BENCH_LIVE_RATE=%d BENCH_SEED=%d)." % (
                  "bench-smoke" if smoke else "bench", cfg["events"], " ".join(str(m) for m in cfg["memory"]), cfg["live_seconds"],
                  cfg["live_rate"], cfg["seed"]))
    md.append("")
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write("\n".join(md))
    slim = json.loads(json.dumps(r, default=str))
    if slim.get("live"):
        slim["live"].pop("ack_all", None)
        slim["live"].pop("search_all", None)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(slim, f, indent=2, sort_keys=True)

    print()
    print(main)
    for proj, rb in r.get("rebuild", {}).items():
        print("rebuild %s: %.0f events/s, write pause %.0f ms" % (proj, rb["events_per_s"], rb["write_pause_ms"]))
    if live:
        print()
        print(live)
    if memt:
        print()
        print(memt)
    for note in r["notes"]:
        print("note: " + note)
    print()
    print("report: %s" % os.path.join(out, "report.md"))
    sys.stdout.flush()
    return missed
