#!/usr/bin/env python3
"""faultproxy: an HTTP proxy that forwards to the real search node and
injects faults into the answers to `_bulk` requests (the fault tests).

    faultproxy.py --upstream http://127.0.0.1:9250 --port-file FILE
                  [--seed N] [--reject P] [--items P] [--item-share Q] [--cut P]

It listens on 127.0.0.1 on a free port, written to FILE (atomically, once it
listens). It is not an imitation of Elasticsearch: every request goes to the
upstream node, except those it answers 429 before forwarding. For each
POST .../_bulk, one fault at most, drawn with these probabilities:

  --reject P   the whole request is answered 429: half of these before the
               request reaches the node (nothing written), half after the
               node has applied it (the writes happened, the client is told
               they did not)
  --items P    the node's real response is parsed and a share Q
               (--item-share, default 0.3, at least one item) of its items is
               rewritten to status 429 or 503 (alternately) with an error
               object; the top-level "errors" becomes true
  --cut P      the node's real response is cut short: the headers announce
               the whole body, half of it is sent, the connection is closed
  --hold-file PATH
               while PATH exists, the node's answer to a _bulk request that
               reports item errors ("errors":true) is held back, not sent
               (logged once per request as `faultproxy: holding ...`), so
               that a test can act between the node's answer and the
               client's reading of it

Other requests (index creation, aliases, scripts, searches) are forwarded
untouched. The request's Accept-Encoding is dropped so that the node answers
plain JSON the proxy can read; request bodies (gzip or not) pass as they are.

Each fault is logged on stdout as one line `faultproxy: fault=KIND ...`;
SIGTERM or SIGINT ends it.
"""

import argparse
import http.client
import http.server
import json
import os
import random
import signal
import socket
import sys
import threading
import urllib.parse

HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-connection", "te", "trailer",
    "transfer-encoding", "upgrade", "host", "accept-encoding", "content-length",
}


class State:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.lock = threading.Lock()
        self.item_flip = 0
        self.counts = {"bulk": 0, "reject-before": 0, "reject-after": 0, "items": 0,
                       "items-rewritten": 0, "cut": 0}

    def draw(self):
        """The fault for one _bulk request: None, 'reject', 'items' or 'cut'."""
        a = self.args
        with self.lock:
            self.counts["bulk"] += 1
            x = self.rng.random()
            if x < a.reject:
                return "reject-before" if self.rng.random() < 0.5 else "reject-after"
            x -= a.reject
            if x < a.items:
                return "items"
            x -= a.items
            if x < a.cut:
                return "cut"
            return None

    def log(self, kind, detail):
        with self.lock:
            self.counts[kind] += 1
            line = "faultproxy: fault=%s %s counts=%s\n" % (
                kind, detail, json.dumps(self.counts, sort_keys=True, separators=(",", ":")))
        sys.stdout.write(line)
        sys.stdout.flush()


def rewrite_items(body, state):
    """The _bulk response `body` with a share of its items turned into 429 or
    503 item failures; None when it is not a readable bulk response."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None, 0
    items = doc.get("items") if isinstance(doc, dict) else None
    if not isinstance(items, list) or not items:
        return None, 0
    with state.lock:
        picked = [i for i in range(len(items)) if state.rng.random() < state.args.item_share]
        if not picked:
            picked = [state.rng.randrange(len(items))]
    n = 0
    for i in picked:
        item = items[i]
        if not isinstance(item, dict) or len(item) != 1:
            continue
        action = next(iter(item))
        res = item[action]
        if not isinstance(res, dict):
            continue
        with state.lock:
            state.item_flip ^= 1
            flip = state.item_flip
        if flip:
            status, etype = 429, "es_rejected_execution_exception"
            reason = "rejected execution (injected by faultproxy)"
        else:
            status, etype = 503, "unavailable_shards_exception"
            reason = "primary shard is not active (injected by faultproxy)"
        new = {k: res[k] for k in ("_index", "_id") if k in res}
        new["status"] = status
        new["error"] = {"type": etype, "reason": reason}
        items[i] = {action: new}
        n += 1
    if n == 0:
        return None, 0
    doc["errors"] = True
    return json.dumps(doc, separators=(",", ":")).encode("utf-8"), n


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "faultproxy"
    upstream = None  # (host, port)
    state = None

    def log_message(self, fmt, *args):  # quiet: only faults are logged
        pass

    def _upstream_conn(self):
        conn = getattr(self, "_up", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.upstream[0], self.upstream[1], timeout=300)
            self._up = conn
        return conn

    def _forward(self, body):
        # One upstream connection per client connection, reused. A request
        # that fails on it is sent once more on a new one (the node may have
        # closed an idle connection); a request can thus reach the node
        # twice, which the bridge must survive anyway (writes are replay-proof).
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["Host"] = "%s:%d" % self.upstream
        if body is not None:
            headers["Content-Length"] = str(len(body))
        for attempt in (0, 1):
            conn = self._upstream_conn()
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                return resp.status, resp.reason, resp.getheaders(), data
            except (http.client.HTTPException, OSError):
                conn.close()
                self._up = None
                if attempt:
                    raise
        raise RuntimeError("unreachable")

    def _reply(self, status, reason, headers, data, cut=False):
        self.send_response(status, reason)
        for k, v in headers:
            if k.lower() not in HOP_BY_HOP and k.lower() != "content-encoding":
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        if cut:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            return
        if cut:
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self.wfile.write(data)

    def _reject(self, path):
        data = json.dumps({
            "error": {"type": "es_rejected_execution_exception",
                      "reason": "rejected execution of bulk (injected by faultproxy)"},
            "status": 429,
        }, separators=(",", ":")).encode("utf-8")
        self._reply(429, "Too Many Requests", [("Content-Type", "application/json")], data)

    def _handle(self):
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.send_error(411, "chunked request bodies are not supported")
            self.close_connection = True
            return
        body = self.rfile.read(int(length)) if length else None
        path = urllib.parse.urlsplit(self.path).path
        fault = None
        if self.command == "POST" and path.rstrip("/").endswith("/_bulk"):
            fault = self.state.draw()
        if fault == "reject-before":
            self.state.log(fault, "path=%s" % path)
            self._reject(path)
            return
        try:
            status, reason, headers, data = self._forward(body)
        except (http.client.HTTPException, OSError) as e:
            # the node is down: the client sees what it would see without us
            sys.stdout.write("faultproxy: upstream unreachable: %s\n" % e)
            sys.stdout.flush()
            self.close_connection = True
            return
        if fault == "reject-after":
            self.state.log(fault, "path=%s upstream_status=%d" % (path, status))
            self._reject(path)
            return
        if fault == "items" and status == 200:
            new, n = rewrite_items(data, self.state)
            if new is not None:
                with self.state.lock:
                    self.state.counts["items-rewritten"] += n
                self.state.log("items", "path=%s rewritten=%d" % (path, n))
                data = new
        if (self.state.args.hold_file and status == 200 and path.rstrip("/").endswith("/_bulk")
                and b'"errors":true' in data[:200]):
            logged = False
            while os.path.exists(self.state.args.hold_file):
                if not logged:
                    sys.stdout.write("faultproxy: holding path=%s\n" % path)
                    sys.stdout.flush()
                    logged = True
                threading.Event().wait(0.05)
        if fault == "cut" and len(data) >= 2:
            self.state.log("cut", "path=%s bytes=%d of %d" % (path, len(data) // 2, len(data)))
            self._reply(status, reason, headers, data, cut=True)
            return
        self._reply(status, reason, headers, data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def probability(text):
    v = float(text)
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError("a probability from 0 to 1")
    return v


def main():
    ap = argparse.ArgumentParser(description="fault-injecting proxy for the search node")
    ap.add_argument("--upstream", required=True, help="http://HOST:PORT of the real node")
    ap.add_argument("--port-file", required=True, help="where to write the port it listens on")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--reject", type=probability, default=0.0)
    ap.add_argument("--items", type=probability, default=0.0)
    ap.add_argument("--item-share", type=probability, default=0.3)
    ap.add_argument("--cut", type=probability, default=0.0)
    ap.add_argument("--hold-file", default=None)
    args = ap.parse_args()
    if args.reject + args.items + args.cut > 1.0:
        ap.error("--reject + --items + --cut must not exceed 1")
    up = urllib.parse.urlsplit(args.upstream)
    if up.scheme != "http" or not up.hostname:
        ap.error("--upstream must be http://HOST:PORT")

    Handler.upstream = (up.hostname, up.port or 80)
    Handler.state = State(args)
    srv = Server(("127.0.0.1", 0), Handler)
    port = srv.server_address[1]
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % port)
    os.replace(tmp, args.port_file)

    def stop(signum, frame):
        threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sys.stdout.write("faultproxy: listening on 127.0.0.1:%d, upstream %s\n" % (port, args.upstream))
    sys.stdout.flush()
    srv.serve_forever()
    srv.server_close()
    sys.stdout.write("faultproxy: stopped, counts=%s\n" % json.dumps(
        Handler.state.counts, sort_keys=True, separators=(",", ":")))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
