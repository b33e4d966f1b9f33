#!/usr/bin/env python3
"""BASELINE FOR COMPARISON ONLY - not part of esbridge.

A plain Python bridge, the kind one writes in an afternoon: psycopg reads
the events table in commit order and elasticsearch-py's streaming_bulk
writes one action per event (no coalescing).  `make bench` runs it on the
same events as esbridge, with the same batch size (2000 events per read) and
the same _bulk size (1000 actions), and compares events/s and CPU per
event.  It writes the same documents as esbridge:

  products: ProductCreated -> index; ProductUpdated, ProductPriceChanged ->
            update with doc_as_upsert; ProductDeleted -> delete (404 is fine);
  orders:   OrderCreated -> index of the fresh document with last_event;
            every other event -> update through esbridge's stored script
            esbridge-apply-v1 with params.events = [one entry], in exactly
            the shape esbridge renders (bulk.c, gen_script).

Like esbridge it reads only transactions below pg_snapshot_xmin, in
(transaction_id, global_position) order, stops at the head as it was at
start (like `run --once`), and saves its checkpoint (in
bench.pybridge_checkpoint) after each batch.  On the first item error it
stops with exit status 1.  Prints one JSON line of counters on stdout.

usage: python_bridge.py --pg CONNINFO --es URL --products-index NAME
                        --orders-index NAME [--mappings-dir mappings]
"""
import argparse
import json
import sys
import time
from decimal import Decimal

import psycopg
from elasticsearch import Elasticsearch
from elasticsearch.helpers import streaming_bulk

SCRIPT_ID = "esbridge-apply-v1"

READ_SQL = """
SELECT global_position, transaction_id::text, event_type, data::text,
       to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
FROM events
WHERE (transaction_id, global_position) > (%s::xid8, %s::bigint)
  AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
  AND transaction_id < %s::xid8
ORDER BY transaction_id, global_position
LIMIT %s
"""

CREATED_KEYS = ("name", "description", "category", "price", "tags", "created_at")
UPDATED_KEYS = ("name", "description", "category", "tags", "updated_at")


def cents(v):
    return int(Decimal(v) * 100)


def doc_id(v):
    return v if isinstance(v, str) else str(v)


def product_action(index, etype, d):
    pid = d["product_id"]
    _id = doc_id(pid)
    if etype == "ProductCreated":
        doc = {"product_id": pid}
        for k in CREATED_KEYS:
            if k in d:
                doc[k] = d[k]
        return {"_op_type": "index", "_index": index, "_id": _id, "_source": doc}
    if etype == "ProductUpdated":
        doc = {"product_id": pid}
        for k in UPDATED_KEYS:
            if k in d:
                doc[k] = d[k]
        return {"_op_type": "update", "_index": index, "_id": _id, "doc": doc,
                "doc_as_upsert": True}
    if etype == "ProductPriceChanged":
        doc = {"product_id": pid, "price": d["new_price"]}
        if "changed_at" in d:
            doc["price_updated_at"] = d["changed_at"]
        return {"_op_type": "update", "_index": index, "_id": _id, "doc": doc,
                "doc_as_upsert": True}
    if etype == "ProductDeleted":
        return {"_op_type": "delete", "_index": index, "_id": _id}
    raise ValueError("unknown event type %r" % etype)


def order_action(index, etype, d, txid, pos, created):
    oid = d["order_id"]
    _id = doc_id(oid)
    if etype == "OrderCreated":
        doc = {"order_id": oid, "customer_id": d["customer_id"], "status": "pending",
               "total_amount": Decimal("0.00"), "item_count": 0,
               "created_at": d.get("created_at"), "updated_at": created,
               "last_event": {"txid": txid, "position": pos}}
        return {"_op_type": "index", "_index": index, "_id": _id, "_source": doc}
    s, i, m = {}, {}, {}
    if etype in ("OrderItemAdded", "OrderItemRemoved"):
        sign = 1 if etype == "OrderItemAdded" else -1
        m["total_amount"] = sign * cents(d["price"]) * int(d["quantity"])
        i["item_count"] = sign
    elif etype == "OrderShipped":
        s["status"] = "shipped"
        s["shipped_at"] = d.get("shipped_at")
    elif etype == "OrderCompleted":
        s["status"] = "completed"
        s["completed_at"] = d.get("completed_at")
    elif etype == "OrderCancelled":
        s["status"] = "cancelled"
        s["cancelled_at"] = d.get("cancelled_at")
        s["cancellation_reason"] = d.get("reason")
    else:
        raise ValueError("unknown event type %r" % etype)
    s["updated_at"] = created
    return {"_op_type": "update", "_index": index, "_id": _id,
            "script": {"id": SCRIPT_ID,
                       "params": {"events": [{"t": txid, "p": pos, "s": s, "i": i, "m": m}]}}}


def create_index(es, name, mapping_file):
    with open(mapping_file) as f:
        body = json.load(f)
    body.setdefault("settings", {}).setdefault("index", {})["refresh_interval"] = "-1"
    es.indices.create(index=name, body=body)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pg", required=True)
    ap.add_argument("--es", required=True)
    ap.add_argument("--products-index", required=True)
    ap.add_argument("--orders-index", required=True)
    ap.add_argument("--mappings-dir", default="mappings")
    ap.add_argument("--batch-size", type=int, default=2000)
    ap.add_argument("--chunk-size", type=int, default=1000)
    a = ap.parse_args()

    es = Elasticsearch([a.es], timeout=120)
    create_index(es, a.products_index, a.mappings_dir + "/products.json")
    create_index(es, a.orders_index, a.mappings_dir + "/orders.json")

    conn = psycopg.connect(a.pg, autocommit=True)
    conn.execute("CREATE SCHEMA IF NOT EXISTS bench")
    conn.execute("CREATE TABLE IF NOT EXISTS bench.pybridge_checkpoint"
                 " (id int PRIMARY KEY, txid xid8 NOT NULL, pos bigint NOT NULL)")
    row = conn.execute("SELECT txid::text, pos FROM bench.pybridge_checkpoint WHERE id = 1").fetchone()
    txid, pos = (int(row[0]), row[1]) if row else (0, 0)
    bound = conn.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text").fetchone()[0]

    events = actions = requests = 0
    while True:
        rows = conn.execute(READ_SQL, (str(txid), pos, bound, a.batch_size)).fetchall()
        if not rows:
            break
        batch = []
        for gpos, tx, etype, data, created in rows:
            d = json.loads(data, parse_float=Decimal)
            t = int(tx)
            if etype.startswith("Product"):
                batch.append(product_action(a.products_index, etype, d))
            else:
                batch.append(order_action(a.orders_index, etype, d, t, gpos, created))
        for ok, item in streaming_bulk(es, batch, chunk_size=a.chunk_size,
                                       raise_on_error=False, raise_on_exception=True):
            if not ok:
                (op, res), = item.items()
                if op == "delete" and res.get("status") == 404:
                    continue
                print("python_bridge: item failed: %s" % json.dumps(item), file=sys.stderr)
                return 1
        events += len(rows)
        actions += len(batch)
        requests += (len(batch) + a.chunk_size - 1) // a.chunk_size
        txid, pos = int(rows[-1][1]), rows[-1][0]
        conn.execute("INSERT INTO bench.pybridge_checkpoint VALUES (1, %s::xid8, %s)"
                     " ON CONFLICT (id) DO UPDATE SET txid = excluded.txid, pos = excluded.pos",
                     (str(txid), pos))
        if len(rows) < a.batch_size:
            break

    # make the indices searchable, like esbridge does before its alias swap
    for index in (a.products_index, a.orders_index):
        es.indices.put_settings(index=index, body={"index": {"refresh_interval": None}})
        es.indices.refresh(index=index)
    print(json.dumps({"events": events, "actions": actions, "requests": requests,
                      "checkpoint": "%d/%d" % (txid, pos)}))
    return 0


if __name__ == "__main__":
    t0 = time.time()
    rc = main()
    print("python_bridge: done in %.1fs" % (time.time() - t0), file=sys.stderr)
    sys.exit(rc)
