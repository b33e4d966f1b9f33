#!/usr/bin/env python3
"""The benchmark behind `make bench` (run it through scripts/bench).

One run, on the same services:

 1. workload  BENCH_EVENTS events (tests/bench/workload.py, deterministic from
              BENCH_SEED), loaded with COPY in transactions of 5,000 events;
 2. ceiling   a priming `esbridge run --once --dump-bulk` (not timed) keeps
              every _bulk body; bench-poster then posts those bodies to fresh
              indices with esbridge's concurrency (one queue per esbridge
              lane, --inflight lanes per projection, projections together),
              without PostgreSQL: the most this search node takes;
 3. esbridge  `esbridge run --once` from fresh state into fresh indices;
 4. python    tests/bench/python_bridge.py, the plain baseline, into its own
              indices; its documents must equal esbridge's (else: failure);
 5. rebuild   `esbridge rebuild NAME` of each projection, no daemon running:
              the catch-up's events/s and the writes' pause at the swap;
 6. memory    peak RSS of `run --once` catch-ups of BENCH_MEMORY_EVENTS
              backlogs (capped to what the free disk allows);
 7. live      `esbridge run` follows while BENCH_LIVE_RATE events/s are
              written for BENCH_LIVE_SECONDS: commit -> acknowledged (the
              checkpoint in esbridge.generations covers the event) and
              commit -> searchable (a search through the alias finds a new
              document).
 8. large     peak RSS of a `run --once` catch-up of a backlog of large
              events, BENCH_LARGE="COUNTxBYTES" (default 360x450000: 162 MB
              of product descriptions), which replaces the workload: the
              memory bound is in bytes (--max-unsettled-bytes), not events.

Writes BENCH_OUT/report.md, PNG plots, results.json and logs/, prints the
tables.  Exits 1 on any error (a process failing, a dead letter, documents
that differ between esbridge and the Python bridge, a live event never
acknowledged); a missed target only marks the report, unless BENCH_STRICT=1.
"""
import calendar
import fnmatch
import hashlib
import http.client
import json
import math
import multiprocessing
import os
import platform
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

import psycopg

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from workload import Workload, copy_rows  # noqa: E402

TXN_EVENTS = 5000            # events per COPY transaction
SAMPLE_EVERY = 10            # live: every 10th new document is searched for
ACK_POLL = 0.002             # live: checkpoint poll interval (s)
SEARCH_POLL = 0.010          # live: search poll interval (s)


class Fail(Exception):
    pass


def env_int(name, default):
    v = os.environ.get(name, "").strip()
    try:
        return int(float(v)) if v else default
    except ValueError:
        raise Fail("%s must be a number, not %r" % (name, v))


class Cfg:
    def __init__(self):
        self.events = env_int("BENCH_EVENTS", 1000000)
        mem = os.environ.get("BENCH_MEMORY_EVENTS")
        mem = "1000000 5000000" if mem is None else mem
        self.memory = sorted({int(float(x)) for x in mem.replace(",", " ").split()})
        self.live_seconds = float(os.environ.get("BENCH_LIVE_SECONDS", "") or 30)
        self.live_rate = env_int("BENCH_LIVE_RATE", 1000)
        self.seed = env_int("BENCH_SEED", 42)
        large = (os.environ.get("BENCH_LARGE") or "360x450000").strip().lower()
        try:
            self.large = tuple(int(x) for x in large.split("x")) if large not in ("0", "none") else None
        except ValueError:
            raise Fail("BENCH_LARGE must be COUNTxBYTES, not %r" % large)
        if self.large is not None and (len(self.large) != 2 or min(self.large) < 1):
            raise Fail("BENCH_LARGE must be COUNTxBYTES, not %r" % large)
        self.out = os.path.abspath(os.path.join(REPO, os.environ.get("BENCH_OUT", "build/bench")))
        self.bin = os.path.abspath(os.path.join(REPO, os.environ.get("BENCH_ESBRIDGE", "build/esbridge")))
        self.poster = os.path.abspath(os.path.join(REPO, os.environ.get("BENCH_POSTER", "build/bench-poster")))
        self.smoke = os.environ.get("BENCH_SMOKE") == "1"
        self.strict = os.environ.get("BENCH_STRICT") == "1"
        self.pg = os.environ.get("ESBRIDGE_PG", "")
        self.es = os.environ.get("ESBRIDGE_ES", "").rstrip("/")
        if not self.es:
            raise Fail("ESBRIDGE_ES is not set (run through scripts/bench)")
        if self.events < 1000:
            raise Fail("BENCH_EVENTS must be at least 1000")


T0 = time.monotonic()


def say(msg):
    print("bench: [%6.1fs] %s" % (time.monotonic() - T0, msg), file=sys.stderr, flush=True)


# ---- the search node ------------------------------------------------------

class ES:
    def __init__(self, base):
        u = urllib.parse.urlsplit(base)
        self.https = u.scheme == "https"
        self.host = u.hostname
        self.port = u.port or (443 if self.https else 80)
        self.prefix = u.path.rstrip("/")
        self.auth = None
        if u.username:
            import base64
            cred = "%s:%s" % (urllib.parse.unquote(u.username), urllib.parse.unquote(u.password or ""))
            self.auth = "Basic " + base64.b64encode(cred.encode()).decode()
        self.conn = None

    def _connect(self):
        if self.https:
            import ssl
            return http.client.HTTPSConnection(self.host, self.port, timeout=300,
                                               context=ssl.create_default_context())
        return http.client.HTTPConnection(self.host, self.port, timeout=300)

    def req(self, method, path, body=None, ok=(200, 201)):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.auth:
            headers["Authorization"] = self.auth
        for attempt in (1, 2):
            try:
                if self.conn is None:
                    self.conn = self._connect()
                self.conn.request(method, self.prefix + path, body=body, headers=headers)
                r = self.conn.getresponse()
                raw = r.read()
                break
            except (http.client.HTTPException, OSError):
                if self.conn:
                    self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        data = json.loads(raw) if raw else None
        if ok and r.status not in ok:
            raise Fail("%s %s: HTTP %d: %.300s" % (method, path, r.status, raw.decode("utf-8", "replace")))
        return r.status, data

    def indices(self):
        _, rows = self.req("GET", "/_cat/indices?format=json&bytes=b&h=index,docs.count,store.size")
        return rows or []

    def delete_indices(self, patterns):
        names = [r["index"] for r in self.indices()
                 if any(fnmatch.fnmatchcase(r["index"], p) for p in patterns)]
        for i in range(0, len(names), 50):
            self.req("DELETE", "/" + ",".join(names[i:i + 50]), ok=(200, 404))

    def create_index(self, name, mapping_file, refresh_off=True):
        with open(mapping_file) as f:
            body = json.load(f)
        if refresh_off:
            body.setdefault("settings", {}).setdefault("index", {})["refresh_interval"] = "-1"
        self.req("PUT", "/" + name, body)

    def digests(self, index):
        """{_id: sha1 of the canonical _source} of every document."""
        out = {}
        _, r = self.req("POST", "/%s/_search?scroll=2m" % index, {"size": 5000, "sort": ["_doc"]})
        sid = r.get("_scroll_id")
        try:
            while r["hits"]["hits"]:
                for h in r["hits"]["hits"]:
                    canon = json.dumps(numbers_as_floats(h["_source"]), sort_keys=True,
                                       separators=(",", ":"), ensure_ascii=False)
                    out[h["_id"]] = hashlib.sha1(canon.encode()).hexdigest()
                _, r = self.req("POST", "/_search/scroll", {"scroll": "2m", "scroll_id": sid})
                sid = r.get("_scroll_id", sid)
        finally:
            if sid:
                self.req("DELETE", "/_search/scroll", {"scroll_id": sid}, ok=None)
        return out


def numbers_as_floats(v):
    """12.50 and 12.5, 0 and 0.00 are the same amount: compare numbers as floats."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, dict):
        return {k: numbers_as_floats(x) for k, x in v.items()}
    return [numbers_as_floats(x) for x in v]


# ---- processes ------------------------------------------------------------

CHILDREN = set()


def spawn(argv, log_path, env, stdout_path=None):
    fa = [(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
          (os.POSIX_SPAWN_OPEN, 2, log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)]
    if stdout_path:
        fa.append((os.POSIX_SPAWN_OPEN, 1, stdout_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
    else:
        fa.append((os.POSIX_SPAWN_DUP2, 2, 1))
    # a process group of its own: GNU time and what it runs end together
    pid = os.posix_spawn(argv[0], argv, env, file_actions=fa, setpgroup=0)
    CHILDREN.add(pid)
    return pid


def _kill_group(pid):
    if pid in CHILDREN:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass


def reap(pid, timeout):
    """Waits for pid; returns (exit code, rusage). Kills it after timeout seconds."""
    timer = threading.Timer(timeout, _kill_group, (pid,))
    timer.daemon = True
    timer.start()
    try:
        _, status, ru = os.wait4(pid, 0)
    finally:
        CHILDREN.discard(pid)
        timer.cancel()
    return os.waitstatus_to_exitcode(status), ru


def kill_children():
    for pid in list(CHILDREN):
        _kill_group(pid)
        try:
            os.waitpid(pid, 0)
        except OSError:
            pass
        CHILDREN.discard(pid)


TIME = "/usr/bin/time"


def run_measured(argv, log_path, env, timeout, stdout_path=None):
    """Runs argv under GNU time: wall, CPU (user + sys) and peak RSS.

    Peak RSS comes from GNU time, not from our own wait4(): Linux carries the
    RSS high-water mark of the process that exec()s into the new program, so
    a child spawned straight from this (large) Python process would report
    at least our RSS.  GNU time forks from a small process.  CPU is wait4()'s
    (time's own share is negligible), in microseconds rather than time's
    hundredths."""
    tfile = log_path + ".time"
    busy0 = machine_busy()
    started = time.time()
    t = time.monotonic()
    pid = spawn([TIME, "-o", tfile, "-f", "%e %U %S %M"] + argv, log_path, env, stdout_path)
    rc, ru = reap(pid, timeout)
    wall = time.monotonic() - t
    rss_kb = 0
    try:
        with open(tfile) as f:
            rss_kb = int(f.read().split()[-1])
    except (OSError, ValueError, IndexError):
        if rc == 0:
            raise Fail("no peak RSS from %s (%s)" % (TIME, tfile))
    return {"rc": rc, "wall": wall, "started": started, "user": ru.ru_utime, "sys": ru.ru_stime,
            "cpu": ru.ru_utime + ru.ru_stime, "rss_kb": rss_kb,
            "machine_busy": machine_busy(busy0)}


def iso_seconds(ts):
    """2026-11-26T04:31:20.293Z -> seconds since the epoch."""
    return calendar.timegm(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")) + float("0" + ts[19:-1])


def machine_busy(since=None):
    """Busy fraction of all CPUs since `since` (or a sample to start from)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    sample = (sum(v), v[3] + v[4])
    if since is None:
        return sample
    total, idle = sample[0] - since[0], sample[1] - since[1]
    return (total - idle) / total if total > 0 else 0.0


# ---- the workload -------------------------------------------------------

def _feeder_main(conn, seed):
    it = Workload(seed).events()
    while True:
        msg = conn.recv()
        if msg is None:
            return
        kind, n, chunk = msg
        if kind == "copy":
            while n > 0:
                k = min(chunk, n)
                conn.send_bytes(copy_rows([next(it) for _ in range(k)]).encode())
                n -= k
        else:
            conn.send([next(it) for _ in range(n)])


class Loader:
    """The events table holds the first `loaded` events of Workload(seed)."""

    COPY = "COPY events (stream_id, event_type, data, version, created_at) FROM STDIN"

    def __init__(self, cfg):
        self.cfg = cfg
        self.proc = None
        self.conn = None
        self.loaded = 0

    def _restart(self):
        self.close()
        ctx = multiprocessing.get_context("fork")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_feeder_main, args=(child, self.cfg.seed), daemon=True)
        self.proc.start()
        with psycopg.connect(self.cfg.pg, autocommit=True) as c:
            c.execute("TRUNCATE events RESTART IDENTITY")
        self.loaded = 0

    def ensure(self, n):
        if self.proc is None or n < self.loaded:
            self._restart()
        if n == self.loaded:
            return 0.0
        t = time.monotonic()
        self.conn.send(("copy", n - self.loaded, TXN_EVENTS))
        left = n - self.loaded
        with psycopg.connect(self.cfg.pg, autocommit=True) as c:
            while left > 0:
                data = self.conn.recv_bytes()
                with c.transaction():
                    with c.cursor().copy(self.COPY) as cp:
                        cp.write(data)
                left -= min(TXN_EVENTS, left)
            # statistics and hint bits now, not during a measured run
            c.execute("VACUUM ANALYZE events")
        self.loaded = n
        return time.monotonic() - t

    def take(self, n):
        """The next n events, for the live writer (which inserts them)."""
        self.conn.send(("tuples", n, 0))
        rows = self.conn.recv()
        self.loaded += n
        return rows

    def close(self):
        if self.proc:
            try:
                self.conn.send(None)
            except OSError:
                pass
            self.proc.join(5)
            if self.proc.is_alive():
                self.proc.kill()
        self.proc = None


# ---- the bench ------------------------------------------------------------

LINE_RE = re.compile(r'proj=(\w+) gen=\d+ msg="stopped at checkpoint (\d+)/(\d+): (\d+) events, '
                     r'(\d+) actions, (\d+) requests, (\d+) no-ops, (\d+) retries, (\d+) dead letters"')


def fnv1a(data):
    h = 0xcbf29ce484222325
    for c in data:
        h = ((h ^ c) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def pct(values, p):
    if not values:
        return float("nan")
    s = sorted(values)
    return s[max(0, min(len(s) - 1, math.ceil(p / 100.0 * len(s)) - 1))]


class Bench:
    def __init__(self, cfg):
        self.cfg = cfg
        self.es = ES(cfg.es)
        self.loader = Loader(cfg)
        self.r = {"config": {k: v for k, v in vars(cfg).items() if k not in ("pg",)}, "notes": []}
        self.logs = os.path.join(cfg.out, "logs")
        self.esb_state_at = None   # events loaded when the esbridge state was last caught up
        env = {k: v for k, v in os.environ.items() if not k.startswith("ESBRIDGE_")}
        # the benchmark measures the products and orders projections only
        env.update(ESBRIDGE_PG=cfg.pg, ESBRIDGE_ES=cfg.es,
                   ESBRIDGE_MAPPINGS_DIR=os.path.join(REPO, "mappings"),
                   ESBRIDGE_PROJECTION="products,orders")
        self.env = env
        self.settings = {}

    def note(self, msg):
        say("note: " + msg)
        self.r["notes"].append(msg)

    def pg(self):
        return psycopg.connect(self.cfg.pg, autocommit=True)

    # -- setup --

    def setup(self):
        os.makedirs(self.logs, exist_ok=True)
        for f in os.listdir(self.logs):
            os.unlink(os.path.join(self.logs, f))
        out = subprocess.run([self.cfg.bin, "check-config"], env=self.env, check=True,
                             capture_output=True, text=True).stdout
        for line in out.splitlines():
            k, _, v = line.partition(" = ")
            self.settings[k.strip()] = v.strip()
        with self.pg() as c:
            pgv = c.execute("SHOW server_version").fetchone()[0]
        _, info = self.es.req("GET", "/")
        ver = subprocess.run([self.cfg.bin, "--version"], capture_output=True, text=True).stdout
        try:
            commit = subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty"],
                                    capture_output=True, text=True).stdout.strip()
        except OSError:
            commit = "?"
        cpu = "?"
        try:
            with open("/proc/cpuinfo") as f:
                cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
        self.r["env"] = {
            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "commit": commit, "esbridge": ver.splitlines()[0] if ver else "?",
            # OpenSearch names itself; Elasticsearch 7.10 has no "distribution"
            "search": "%s %s" % ({"opensearch": "OpenSearch"}.get(
                info["version"].get("distribution", ""), "Elasticsearch"), info["version"]["number"]),
            "postgresql": pgv, "cpus": os.cpu_count(), "cpu": cpu,
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "loadavg_start": os.getloadavg()[0], "python": platform.python_version(),
            "settings": {k: self.settings.get(k) for k in
                         ("batch-size", "bulk-actions", "bulk-bytes", "inflight", "coalesce")},
        }
        say("%s, %s, PostgreSQL %s, %s CPUs, load %.2f" % (
            self.r["env"]["esbridge"], self.r["env"]["search"], pgv, os.cpu_count(),
            os.getloadavg()[0]))

    def reset(self):
        """Fresh bridge state: no esbridge schema, no bench schema, no indices of ours."""
        with self.pg() as c:
            c.execute("SET client_min_messages = warning")
            c.execute("DROP SCHEMA IF EXISTS esbridge CASCADE")
            c.execute("DROP SCHEMA IF EXISTS bench CASCADE")
        self.es.delete_indices(["products", "orders", "products-*", "orders-*", "bench-*"])
        self.esb_state_at = None

    def disk_check(self):
        free = shutil.disk_usage(self.cfg.out).free
        self.r["disk_free_gb"] = round(free / 2**30, 1)
        with self.pg() as c:
            pg_bytes = c.execute("SELECT pg_total_relation_size('events')").fetchone()[0]
        es_bytes = sum(int(r["store.size"] or 0) for r in self.es.indices()
                       if fnmatch.fnmatchcase(r["index"], "products-*")
                       or fnmatch.fnmatchcase(r["index"], "orders-*"))
        per_event = (pg_bytes + es_bytes) / max(1, self.loader.loaded)
        # what is on disk now stays or is replaced; keep 2 GiB and half again spare
        fits = int((free - 2 * 2**30 + pg_bytes + es_bytes) / (per_event * 1.5))
        self.r["bytes_per_event"] = round(per_event)
        return fits

    # -- esbridge --

    def esbridge_once(self, name, extra=()):
        log = os.path.join(self.logs, name + ".log")
        n = self.loader.loaded
        res = run_measured([self.cfg.bin, "run", "--once"] + list(extra), log, self.env,
                           timeout=600 + n / 500)
        with open(log, errors="replace") as f:
            text = f.read()
        res["projections"] = {}
        # where the wall time went, from the log's timestamps
        ts = {}
        for m in re.finditer(r'^ts=(\S+) .*msg="(starting on|caught up)', text, re.M):
            ts.setdefault(m.group(2), []).append(m.group(1))
        if len(ts.get("starting on", [])) >= 2 and len(ts.get("caught up", [])) >= 2:
            first, last = iso_seconds(min(ts["starting on"])), iso_seconds(max(ts["caught up"]))
            res["phases"] = {"setup": first - (res["started"]), "load": last - first}
        for m in LINE_RE.finditer(text):
            res["projections"][m.group(1)] = dict(zip(
                ("txid", "pos", "events", "actions", "requests", "noops", "retries", "dead_letters"),
                map(int, m.groups()[1:])))
        if res["rc"] != 0:
            raise Fail("%s: esbridge exited %d (log: %s): %s" % (
                name, res["rc"], log, text.strip().splitlines()[-1:] if text.strip() else ""))
        if set(res["projections"]) != {"products", "orders"}:
            raise Fail("%s: no final log line for every projection (log: %s)" % (name, log))
        tot = {k: sum(p[k] for p in res["projections"].values())
               for k in ("events", "actions", "requests", "retries", "dead_letters")}
        res.update(tot)
        if tot["dead_letters"]:
            raise Fail("%s: %d dead letters on a valid workload (log: %s)" % (name, tot["dead_letters"], log))
        if tot["events"] != n:
            raise Fail("%s: esbridge read %d events, the store holds %d" % (name, tot["events"], n))
        if tot["retries"]:
            self.note("%s: %d _bulk requests were retried" % (name, tot["retries"]))
        self.esb_state_at = n
        return res

    # -- phases --

    def phase_load(self):
        n = self.cfg.events
        # PostgreSQL ~300 bytes an event, the indices, the dumped bodies: 1 KiB is ample
        free = shutil.disk_usage(self.cfg.out).free
        if free < n * 1024 + 2 * 2**30:
            raise Fail("%.1f GiB free: not enough for BENCH_EVENTS=%d (about %.1f GiB)" % (
                free / 2**30, n, (n * 1024 + 2 * 2**30) / 2**30))
        say("loading %d events (seed %d)" % (n, self.cfg.seed))
        secs = self.loader.ensure(n)
        with self.pg() as c:
            mix = dict(c.execute("SELECT event_type, count(*) FROM events GROUP BY 1 ORDER BY 2 DESC").fetchall())
            ntx = c.execute("SELECT count(DISTINCT transaction_id) FROM events").fetchone()[0]
            # the same seed gives the same events: this checksum says so
            digest = c.execute(
                "SELECT md5(string_agg(md5(concat_ws('|', stream_id, event_type, data::text,"
                " version, extract(epoch FROM created_at))), '' ORDER BY global_position)) FROM events").fetchone()[0]
        self.r["load"] = {"events": n, "seconds": secs, "events_per_s": n / secs if secs else 0,
                          "transactions": ntx, "mix": mix, "checksum": digest[:16]}
        say("loaded in %.1fs (%.0f events/s, %d transactions)" % (secs, n / secs, ntx))

    def phase_ceiling(self):
        dump = os.path.join(self.cfg.out, "dump")
        shutil.rmtree(dump, ignore_errors=True)
        os.makedirs(dump)
        say("priming: esbridge run --once --dump-bulk (untimed; captures the _bulk bodies)")
        self.reset()
        prim = self.esbridge_once("priming", ["--dump-bulk", dump])
        self.r["priming"] = prim
        if prim["retries"]:
            self.note("the priming run retried requests: the ceiling posts those bodies twice")
        lanes = int(self.settings.get("inflight", "2"))
        manifest = os.path.join(self.cfg.out, "ceiling.manifest")
        actions = 0
        with open(manifest, "w") as mf:
            for name in sorted(os.listdir(dump)):
                proj = name.split("-", 1)[0]
                path = os.path.join(dump, name)
                with open(path, "rb") as f:
                    lines = f.read().split(b"\n")
                n, i, first = 0, 0, None
                while i < len(lines) and lines[i]:
                    if first is None:
                        first = next(iter(json.loads(lines[i]).values()))["_id"]
                    n += 1
                    i += 1 if lines[i].startswith(b'{"delete"') else 2
                actions += n
                lane = fnv1a(first.encode()) % lanes
                mf.write("bench-ceiling-%s %s:%d %d %s\n" % (proj, proj, lane, n, path))
        if actions != prim["actions"]:
            raise Fail("the dump holds %d actions, the priming run sent %d" % (actions, prim["actions"]))
        for proj in ("products", "orders"):
            self.es.create_index("bench-ceiling-" + proj, os.path.join(REPO, "mappings", proj + ".json"))
        say("ceiling: posting %d actions in %d bodies (%d lanes per projection)" % (
            actions, prim["requests"] + prim["retries"], lanes))
        out = os.path.join(self.logs, "ceiling.json")
        res = run_measured([self.cfg.poster, self.cfg.es, manifest],
                           os.path.join(self.logs, "ceiling.log"), self.env,
                           timeout=600 + actions / 200, stdout_path=out)
        with open(out) as f:
            posted = json.loads(f.read() or "{}")
        if res["rc"] != 0 or posted.get("failed"):
            raise Fail("bench-poster failed (rc %d, %s; log: %s)" % (
                res["rc"], posted, os.path.join(self.logs, "ceiling.log")))
        res.update(posted)
        res["events"] = prim["events"]
        res["wall"] = posted["seconds"]   # first send to last answer
        self.r["ceiling"] = res
        say("ceiling: %d actions in %.2fs = %.0f docs/s" % (actions, res["wall"], actions / res["wall"]))
        # not in the ceiling's time, for comparison only: what esbridge does at the end
        t = time.monotonic()
        for proj in ("products", "orders"):
            self.es.req("PUT", "/bench-ceiling-%s/_settings" % proj, {"index": {"refresh_interval": None}})
            self.es.req("POST", "/bench-ceiling-%s/_refresh" % proj)
        res["refresh_seconds"] = time.monotonic() - t
        self.es.delete_indices(["bench-ceiling-*"])
        shutil.rmtree(dump, ignore_errors=True)

    def phase_esbridge(self):
        say("esbridge: run --once from fresh state")
        self.reset()
        res = self.esbridge_once("esbridge")
        self.r["esbridge"] = res
        say("esbridge: %d events in %.2fs = %.0f events/s, %.0f docs/s, %.2f us CPU/event, %.1f MB peak" % (
            res["events"], res["wall"], res["events"] / res["wall"], res["actions"] / res["wall"],
            res["cpu"] / res["events"] * 1e6, res["rss_kb"] / 1024))
        self.r["index_sizes"] = {r["index"]: {"docs": int(r["docs.count"] or 0),
                                              "bytes": int(r["store.size"] or 0)}
                                 for r in self.es.indices()
                                 if r["index"].startswith(("products-", "orders-"))}

    def phase_python(self):
        say("python baseline: tests/bench/python_bridge.py")
        with self.pg() as c:
            c.execute("SET client_min_messages = warning")
            c.execute("DROP SCHEMA IF EXISTS bench CASCADE")
        self.es.delete_indices(["bench-py-*"])
        out = os.path.join(self.logs, "python.json")
        argv = [sys.executable, os.path.join(HERE, "python_bridge.py"), "--pg", self.cfg.pg,
                "--es", self.cfg.es, "--products-index", "bench-py-products",
                "--orders-index", "bench-py-orders", "--mappings-dir", os.path.join(REPO, "mappings"),
                "--batch-size", self.settings.get("batch-size", "2000"),
                "--chunk-size", self.settings.get("bulk-actions", "1000")]
        res = run_measured(argv, os.path.join(self.logs, "python.log"), self.env,
                           timeout=600 + self.loader.loaded / 100, stdout_path=out)
        if res["rc"] != 0:
            raise Fail("the Python bridge exited %d (log: %s)" % (res["rc"], os.path.join(self.logs, "python.log")))
        with open(out) as f:
            res.update(json.loads(f.read()))
        if res["events"] != self.loader.loaded:
            raise Fail("the Python bridge read %d events, the store holds %d" % (res["events"], self.loader.loaded))
        self.r["python"] = res
        say("python: %d events in %.2fs = %.0f events/s, %.2f us CPU/event" % (
            res["events"], res["wall"], res["events"] / res["wall"], res["cpu"] / res["events"] * 1e6))

    def phase_crosscheck(self):
        say("cross-check: esbridge's documents against the Python bridge's")
        cc = {}
        for alias in ("products", "orders"):
            a = self.es.digests(alias)
            b = self.es.digests("bench-py-" + alias)
            diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            h = hashlib.sha256("".join("%s=%s\n" % kv for kv in sorted(a.items())).encode()).hexdigest()
            cc[alias] = {"esbridge_docs": len(a), "python_docs": len(b), "differ": len(diff),
                         "checksum": h[:16], "examples": diff[:5]}
            say("  %s: %d docs (esbridge) vs %d (python), %d differ, checksum %s" % (
                alias, len(a), len(b), len(diff), h[:16]))
        self.r["crosscheck"] = cc
        bad = {k: v for k, v in cc.items() if v["differ"]}
        if bad:
            raise Fail("esbridge and the Python bridge wrote different documents: %s" % json.dumps(bad))
        self.es.delete_indices(["bench-py-*"])

    def phase_rebuild(self):
        """Zero-downtime rebuild of each projection (esbridge rebuild, no daemon running)."""
        self.r["rebuild"] = {}
        for proj in ("products", "orders"):
            say("rebuild: esbridge rebuild %s" % proj)
            log = os.path.join(self.logs, "rebuild-%s.log" % proj)
            out = os.path.join(self.logs, "rebuild-%s.out" % proj)
            res = run_measured([self.cfg.bin, "rebuild", proj], log, self.env,
                               timeout=600 + self.loader.loaded / 500, stdout_path=out)
            with open(out, errors="replace") as f:
                done = [l.split() for l in f if l.startswith("done ")]
            if res["rc"] != 0 or not done:
                raise Fail("esbridge rebuild %s exited %d (log: %s)" % (proj, res["rc"], log))
            pause_ms = float(done[-1][-1])
            events = self.r["esbridge"]["projections"][proj]["events"]
            self.r["rebuild"][proj] = {"wall": res["wall"], "events": events,
                                       "events_per_s": events / res["wall"], "write_pause_ms": pause_ms,
                                       "cpu": res["cpu"], "rss_kb": res["rss_kb"]}
            say("  %s: %d events rebuilt in %.2fs = %.0f events/s; write pause at the swap %.0f ms" % (
                proj, events, res["wall"], events / res["wall"], pause_ms))

    def phase_memory(self):
        sizes = list(self.cfg.memory)
        fits = self.disk_check()
        capped = sizes
        if sizes and sizes[-1] > fits:
            cap = fits // 100000 * 100000 if fits >= 200000 else fits
            if cap < 1000:
                raise Fail("not enough free disk for the memory runs (%.1f GiB)" % self.r["disk_free_gb"])
            capped = sorted({min(s, cap) for s in sizes})
            self.note("memory backlogs capped to %s: %.1f GiB free, about %d bytes per event" % (
                capped, self.r["disk_free_gb"], self.r["bytes_per_event"]))
        self.r["memory"] = []
        for m in capped:
            if m == self.r["esbridge"]["events"] and self.loader.loaded == m and self.esb_state_at == m:
                res = self.r["esbridge"]
                say("memory: %d events: the esbridge run above" % m)
            else:
                say("memory: %d events: loading" % m)
                self.loader.ensure(m)
                self.reset()
                say("memory: %d events: esbridge run --once" % m)
                res = self.esbridge_once("memory-%d" % m)
            self.r["memory"].append({"events": m, "rss_kb": res["rss_kb"], "wall": res["wall"],
                                     "cpu": res["cpu"], "actions": res["actions"]})
            say("memory: %d events: peak RSS %.1f MB, %.1fs" % (m, res["rss_kb"] / 1024, res["wall"]))

    def phase_large(self):
        """A backlog of large events in place of the workload (the last phase)."""
        count, size = self.cfg.large
        say("large: %d events of %d bytes: loading" % (count, size))
        self.loader.close()
        with self.pg() as c:
            c.execute("TRUNCATE events RESTART IDENTITY")
            for first in range(1, count + 1, 20):
                with c.transaction():
                    c.execute(
                        "INSERT INTO events (stream_id, event_type, data, version)"
                        " SELECT 'product-large' || g, 'ProductCreated', jsonb_build_object("
                        "  'product_id', 'large' || g, 'name', 'Large ' || g, 'price', g %% 1000,"
                        "  'description', repeat(chr(97 + g %% 26), %s::int)), 1"
                        " FROM generate_series(%s::int, %s::int) g", (size, first, min(count, first + 19)))
            c.execute("VACUUM ANALYZE events")
            total = c.execute("SELECT sum(octet_length(data::text)) FROM events").fetchone()[0]
        self.loader.loaded = count
        self.reset()
        say("large: esbridge run --once")
        res = self.esbridge_once("memory-large")
        self.r["memory_large"] = {"events": count, "bytes": int(total), "rss_kb": res["rss_kb"],
                                  "wall": res["wall"], "cpu": res["cpu"]}
        say("large: %d events, %.0f MB of data: peak RSS %.1f MB, %.1fs" % (
            count, total / 2**20, res["rss_kb"] / 1024, res["wall"]))

    def phase_live(self):
        cfg = self.cfg
        if self.esb_state_at != self.loader.loaded:
            say("live: catching up first (untimed)")
            self.esbridge_once("live-catchup")
        n = int(cfg.live_rate * cfg.live_seconds)
        per_tick = max(1, cfg.live_rate // 100)
        interval = per_tick / cfg.live_rate
        rows = self.loader.take(n)
        say("live: esbridge run follows; writing %d events/s for %gs (%d every %.0f ms)" % (
            cfg.live_rate, cfg.live_seconds, per_tick, interval * 1000))
        log = os.path.join(self.logs, "live.log")
        busy0 = machine_busy()
        pid = spawn([cfg.bin, "run"], log, self.env)
        t_start = time.monotonic()
        try:
            deadline = time.monotonic() + 60
            while True:
                with open(log, errors="replace") as f:
                    text = f.read()
                if text.count("msg=\"starting on") >= 2:
                    break
                if time.monotonic() > deadline:
                    raise Fail("live: esbridge did not start (log: %s)" % log)
                pid_done, _ = os.waitpid(pid, os.WNOHANG)
                if pid_done:
                    CHILDREN.discard(pid)
                    raise Fail("live: esbridge exited at start (log: %s)" % log)
                time.sleep(0.05)
            time.sleep(0.5)
            lat = self._live_run(rows, per_tick, interval)
        except BaseException:
            kill_children()
            raise
        os.kill(pid, signal.SIGTERM)
        rc, ru = reap(pid, 120)
        wall = time.monotonic() - t_start
        if rc != 0:
            raise Fail("live: esbridge exited %d after SIGTERM (log: %s)" % (rc, log))
        lat.update({"esbridge_cpu": ru.ru_utime + ru.ru_stime,
                    "esbridge_wall": wall, "machine_busy": machine_busy(busy0)})
        self.r["live"] = lat
        self.esb_state_at = self.loader.loaded
        say("live: %d events at %.0f/s: ack p50 %.1f ms, p99 %.1f ms; searchable p99 %.0f ms (%d samples)" % (
            lat["events"], lat["rate"], lat["ack_p50"] * 1e3, lat["ack_p99"] * 1e3,
            lat["search_p99"] * 1e3, lat["samples"]))

    def _live_run(self, rows, per_tick, interval):
        cfg = self.cfg
        stop = threading.Event()
        hist = {"products": [], "orders": []}
        errors = []
        samples = queue.Queue()
        found = []
        pending = {}

        def poller():
            try:
                with self.pg() as c:
                    last = {}
                    while not stop.is_set():
                        rs = c.execute("SELECT projection, checkpoint_txid::text, checkpoint_pos"
                                       " FROM esbridge.generations WHERE state = 'active'").fetchall()
                        t = time.monotonic()
                        for proj, tx, pos in rs:
                            cp = (int(tx), pos)
                            if proj in hist and last.get(proj) != cp:
                                last[proj] = cp
                                hist[proj].append((t, cp))
                        time.sleep(ACK_POLL)
            except Exception as e:  # noqa: BLE001
                errors.append("checkpoint poller: %r" % e)

        def searcher():
            try:
                es = ES(cfg.es)
                while not stop.is_set():
                    while True:
                        try:
                            doc, tc = samples.get_nowait()
                        except queue.Empty:
                            break
                        if tc is None:   # deleted before it was found: not a sample
                            pending.pop(doc, None)
                        else:
                            pending[doc] = tc
                    if pending:
                        ids = list(pending)[:500]
                        _, r = es.req("POST", "/products,orders/_search", {
                            "size": len(ids), "_source": False, "track_total_hits": False,
                            "query": {"ids": {"values": ids}}})
                        t = time.monotonic()
                        for h in r["hits"]["hits"]:
                            tc = pending.pop(h["_id"], None)
                            if tc is not None:
                                found.append(t - tc)
                    time.sleep(SEARCH_POLL)
            except Exception as e:  # noqa: BLE001
                errors.append("searcher: %r" % e)

        threads = [threading.Thread(target=poller, daemon=True),
                   threading.Thread(target=searcher, daemon=True)]
        for th in threads:
            th.start()
        committed = {"products": [], "orders": []}   # (txid, pos, commit time)
        n_new = 0
        sampled = set()
        sql = ("INSERT INTO events (stream_id, event_type, data, version)"
               " SELECT s, t, d, v FROM unnest(%s::text[], %s::text[], %s::jsonb[], %s::int[])"
               " WITH ORDINALITY AS u(s, t, d, v, o) ORDER BY o"
               " RETURNING global_position, stream_id, version, transaction_id::text")
        t_begin = time.monotonic()
        with psycopg.connect(cfg.pg) as c:
            cur = c.cursor()
            for k in range(0, len(rows), per_tick):
                chunk = rows[k:k + per_tick]
                cur.execute(sql, ([r[0] for r in chunk], [r[1] for r in chunk],
                                  [r[2] for r in chunk], [r[3] for r in chunk]))
                back = {(s, v): (pos, int(tx)) for pos, s, v, tx in cur.fetchall()}
                c.commit()
                tc = time.monotonic()
                for r in chunk:
                    pos, tx = back[(r[0], r[3])]
                    proj = "products" if r[1].startswith("Product") else "orders"
                    committed[proj].append((tx, pos, tc))
                    if r[1] == "OrderCreated" or (r[1] == "ProductCreated" and r[3] == 1):
                        n_new += 1
                        if n_new % SAMPLE_EVERY == 0:
                            sampled.add(r[0])
                            samples.put((r[0].split("-", 1)[1], tc))
                    elif r[1] == "ProductDeleted" and r[0] in sampled:
                        samples.put((r[0].split("-", 1)[1], None))
                next_t = t_begin + (k // per_tick + 1) * interval
                delay = next_t - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        t_written = time.monotonic() - t_begin

        # wait for everything to be acknowledged and found
        deadline = time.monotonic() + 60
        want = {p: (v[-1][0], v[-1][1]) for p, v in committed.items() if v}
        while time.monotonic() < deadline and not errors:
            done = all(hist[p] and hist[p][-1][1] >= want[p] for p in want)
            if done and samples.empty() and not pending:
                break
            time.sleep(0.05)
        stop.set()
        for th in threads:
            th.join(10)
        if errors:
            raise Fail("live: " + "; ".join(errors))
        acks = []
        for proj, evs in committed.items():
            h = hist[proj]
            j = 0
            for tx, pos, tc in evs:   # commit order = (txid, pos) order: one writer
                while j < len(h) and h[j][1] < (tx, pos):
                    j += 1
                if j == len(h):
                    raise Fail("live: %s event %d/%d never acknowledged within 60s" % (proj, tx, pos))
                acks.append(h[j][0] - tc)
        if pending or not samples.empty():
            raise Fail("live: %d sampled documents never searchable within 60s: %s" % (
                len(pending) + samples.qsize(), sorted(pending)[:10]))
        return {"events": len(rows), "seconds": t_written, "rate": len(rows) / t_written,
                "ack_p50": pct(acks, 50), "ack_p99": pct(acks, 99), "ack_max": max(acks),
                "search_p50": pct(found, 50), "search_p99": pct(found, 99),
                "search_max": max(found) if found else float("nan"), "samples": len(found),
                "ack_all": acks, "search_all": found}

    # -- report --

    def report(self):
        from report import write_report
        self.r["elapsed"] = time.monotonic() - T0
        self.r["env"]["loadavg_end"] = os.getloadavg()[0]
        return write_report(self.r, self.cfg.out, smoke=self.cfg.smoke)

    def run(self):
        self.setup()
        self.phase_load()
        self.phase_ceiling()
        self.phase_esbridge()
        self.phase_python()
        self.phase_crosscheck()
        self.phase_rebuild()
        if self.cfg.memory:
            self.phase_memory()
        if self.cfg.live_seconds > 0 and self.cfg.live_rate > 0:
            self.phase_live()
        if self.cfg.large:
            self.phase_large()
        return self.report()


def main():
    # SIGTERM unwinds like Ctrl-C, so that the processes we started end too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        cfg = Cfg()
        os.makedirs(cfg.out, exist_ok=True)
        b = Bench(cfg)
        try:
            missed = b.run()
        finally:
            kill_children()
            b.loader.close()
    except Fail as e:
        say("FAILED: %s" % e)
        return 1
    if missed and cfg.strict:
        say("targets missed (BENCH_STRICT=1): %s" % ", ".join(missed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
