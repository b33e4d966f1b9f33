"""The benchmark's workload: a shop's event history, deterministic from a seed.

Products (~20 % of the events) and orders (~80 %) interleaved in time, valid
per the README's schemas:

  products: a catalogue import at the start, then ProductCreated for new
            products, ProductUpdated (a random subset of the fields),
            ProductPriceChanged (most of them), ProductDeleted, and
            ProductCreated again for some deleted products;
  orders:   OrderCreated, 1-5 OrderItemAdded minutes apart (the product's
            current price, two decimals), sometimes one OrderItemRemoved,
            then shipped hours later and completed days later, or cancelled,
            or left open.

Workload(seed).events() yields, in simulated time order,
(stream_id, event_type, data_json, version, created_at_epoch_seconds); the
same seed gives the same events, and the first n events of a longer run are
the events of a shorter one.  Money is written with two decimals
("12.50"), ids are strings ("p12", "o34") and customer ids integers.
"""
import heapq
import json
import random
import time

T0 = 1767225600.0          # 2026-01-01T00:00:00Z, start of the simulated history
ORDER_RATE = 0.78          # new orders per simulated second (~5.1 events each)
PRODUCT_RATE = 1.0         # product events per simulated second (~20 % of all)
CATALOGUE = 500            # products created at T0 (the catalogue import)

ADJ = ["Compact", "Classic", "Deluxe", "Eco", "Smart", "Vintage", "Crème", "Nordic",
       "Ultra", "Paper", "Señor", "Bamboo", "Steel", "Jalapeño", "Linen", "Solar"]
NOUN = ["lamp", "kettle", "chair", "desk", "mug", "backpack", "jacket", "speaker",
        "blender", "notebook", "pillow", "sneaker", "watch", "grinder", "rug", "shelf"]
WORDS = ("sturdy light hand made recycled warm soft quiet fast durable water resistant "
         "elegant modern simple refillable foldable washable compact premium").split()
CATEGORIES = ["Lighting", "Kitchen", "Furniture", "Office", "Outdoor", "Audio", "Apparel",
              "Home", "Garden", "Toys", "Sports", "Beauty", "Books", "Travel", "Tools"]
TAGS = ["eco", "Sale", "new", "gift", "bestseller", "LIMITED", "organic", "handmade",
        "b-stock", "premium", "kids", "Outdoor", "summer", "winter", "bundle", "clearance"]
REASONS = ["customer request", "out of stock", "payment failed", "address invalid",
           "duplicate order"]

# scheduled kinds
NEW_ORDER, PRODUCT, ORDER_STEP = 0, 1, 2


def money(cents):
    return "%d.%02d" % (cents // 100, cents % 100)


def jstr(s):
    return json.dumps(s, ensure_ascii=False)


_ts_cache = {}


def iso(t):
    s = int(t)
    r = _ts_cache.get(s)
    if r is None:
        if len(_ts_cache) > 100000:
            _ts_cache.clear()
        r = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(s))
        _ts_cache[s] = r
    return r


class Order:
    __slots__ = ("oid", "customer", "version", "items", "steps", "total", "count")


class Workload:
    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.heap = []
        self.seq = 0
        self.t = T0
        self.next_product = 1
        self.next_order = 1
        self.live = []            # product ids that exist
        self.deleted = []         # product ids deleted (may come back)
        self.products = {}        # id -> [price_cents, version]
        self.pending = []         # events ready to yield, oldest first

    def _at(self, t, kind, obj):
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, kind, obj))

    # ---- products --------------------------------------------------------

    def _product_doc(self, pid, t):
        r = self.rng
        price = r.choice([99, 199, 499, 999, 1250, 1999, 2500, 4999, 12900]) + r.randrange(0, 5000)
        name = "%s %s %s" % (r.choice(ADJ), r.choice(NOUN), pid[1:])
        desc = None if r.random() < 0.1 else " ".join(r.sample(WORDS, r.randint(3, 8)))
        cat = None if r.random() < 0.05 else r.choice(CATEGORIES)
        tags = r.sample(TAGS, r.randint(0, 4))
        data = ('{"product_id":%s,"name":%s,"description":%s,"category":%s,"price":%s,'
                '"tags":%s,"created_at":"%s"}' % (
                    jstr(pid), jstr(name), "null" if desc is None else jstr(desc),
                    "null" if cat is None else jstr(cat), money(price), jstr(tags), iso(t)))
        return price, data

    def _emit_product(self, etype, pid, data, t):
        st = self.products.setdefault(pid, [0, 0])
        st[1] += 1
        self.pending.append(("product-" + pid, etype, data, st[1], t))

    def _create_product(self, t, pid=None):
        if pid is None:
            pid = "p%d" % self.next_product
            self.next_product += 1
        price, data = self._product_doc(pid, t)
        self._emit_product("ProductCreated", pid, data, t)
        self.products[pid][0] = price
        self.live.append(pid)

    def _product_event(self, t):
        r = self.rng
        x = r.random()
        if x < 0.10 or len(self.live) < 50:
            self._create_product(t)
        elif x < 0.15 and self.deleted:
            pid = self.deleted.pop(r.randrange(len(self.deleted)))
            self._create_product(t, pid)
        elif x < 0.40:
            pid = r.choice(self.live)
            parts = ['"product_id":%s' % jstr(pid)]
            if r.random() < 0.5:
                parts.append('"name":%s' % jstr("%s %s %s" % (r.choice(ADJ), r.choice(NOUN), pid[1:])))
            if r.random() < 0.5:
                parts.append('"description":%s' % jstr(" ".join(r.sample(WORDS, r.randint(3, 8)))))
            if r.random() < 0.3:
                parts.append('"category":%s' % jstr(r.choice(CATEGORIES)))
            if r.random() < 0.5:
                parts.append('"tags":%s' % jstr(r.sample(TAGS, r.randint(0, 4))))
            parts.append('"updated_at":"%s"' % iso(t))
            self._emit_product("ProductUpdated", pid, "{" + ",".join(parts) + "}", t)
        elif x < 0.95:
            pid = r.choice(self.live)
            st = self.products[pid]
            price = max(50, st[0] + r.randint(-st[0] // 5, st[0] // 5))
            st[0] = price
            self._emit_product("ProductPriceChanged", pid,
                               '{"product_id":%s,"new_price":%s,"changed_at":"%s"}' % (
                                   jstr(pid), money(price), iso(t)), t)
        else:
            i = r.randrange(len(self.live))
            pid = self.live[i]
            self.live[i] = self.live[-1]
            self.live.pop()
            self.deleted.append(pid)
            self._emit_product("ProductDeleted", pid, '{"product_id":%s}' % jstr(pid), t)

    # ---- orders ----------------------------------------------------------

    def _new_order(self, t):
        r = self.rng
        o = Order()
        o.oid = "o%d" % self.next_order
        self.next_order += 1
        o.customer = r.randint(1, 200000)
        o.version = 0
        o.items = []
        o.total = 0
        o.count = 0
        # the plan: item additions, maybe a removal, then the fate
        steps = ["add"] * r.randint(1, 5)
        if r.random() < 0.25:
            steps.append("remove")
        fate = r.random()
        if fate < 0.55:
            steps += ["ship", "complete"]
        elif fate < 0.75:
            steps.append("cancel")
        elif fate < 0.85:
            steps.append("ship")
        o.steps = steps[::-1]  # popped from the end
        self._order_emit(o, "OrderCreated",
                         '{"order_id":%s,"customer_id":%d,"created_at":"%s"}' % (
                             jstr(o.oid), o.customer, iso(t)), t)
        self._schedule(o, t)

    def _order_emit(self, o, etype, data, t):
        o.version += 1
        self.pending.append(("order-" + o.oid, etype, data, o.version, t))

    def _schedule(self, o, t):
        if not o.steps:
            return
        r = self.rng
        step = o.steps[-1]
        if step in ("add", "remove"):
            dt = r.uniform(20, 300)
        elif step == "ship":
            dt = r.uniform(3600, 12 * 3600)
        elif step == "complete":
            dt = r.uniform(6 * 3600, 36 * 3600)
        else:
            dt = r.uniform(600, 6 * 3600)
        self._at(t + dt, ORDER_STEP, o)

    def _order_step(self, o, t):
        r = self.rng
        step = o.steps.pop()
        oid = jstr(o.oid)
        if step == "add":
            pid = self.live[int(len(self.live) * r.random() ** 2)]
            price = self.products[pid][0]
            qty = 1 if r.random() < 0.7 else r.randint(2, 6)
            o.items.append((pid, price, qty))
            o.total += price * qty
            o.count += 1
            self._order_emit(o, "OrderItemAdded",
                             '{"order_id":%s,"product_id":%s,"price":%s,"quantity":%d}' % (
                                 oid, jstr(pid), money(price), qty), t)
        elif step == "remove":
            pid, price, qty = o.items.pop(r.randrange(len(o.items)))
            o.total -= price * qty
            o.count -= 1
            self._order_emit(o, "OrderItemRemoved",
                             '{"order_id":%s,"product_id":%s,"price":%s,"quantity":%d}' % (
                                 oid, jstr(pid), money(price), qty), t)
        elif step == "ship":
            self._order_emit(o, "OrderShipped",
                             '{"order_id":%s,"shipped_at":"%s"}' % (oid, iso(t)), t)
        elif step == "complete":
            self._order_emit(o, "OrderCompleted",
                             '{"order_id":%s,"customer_id":%d,"total_amount":%s,"item_count":%d,'
                             '"completed_at":"%s"}' % (oid, o.customer, money(o.total), o.count,
                                                        iso(t)), t)
        else:
            self._order_emit(o, "OrderCancelled",
                             '{"order_id":%s,"cancelled_at":"%s","reason":%s}' % (
                                 oid, iso(t), jstr(r.choice(REASONS))), t)
        self._schedule(o, t)

    # ---- the stream ------------------------------------------------------

    def events(self):
        """Yields (stream_id, event_type, data, version, created_at) forever."""
        r = self.rng
        for i in range(CATALOGUE):
            self._create_product(T0 + i * 0.01)
        self._at(T0 + 10 + r.expovariate(ORDER_RATE), NEW_ORDER, None)
        self._at(T0 + 10 + r.expovariate(PRODUCT_RATE), PRODUCT, None)
        pending = self.pending
        heap = self.heap
        while True:
            if pending:
                yield from pending
                pending.clear()
            t, _, kind, obj = heapq.heappop(heap)
            self.t = t
            if kind == ORDER_STEP:
                self._order_step(obj, t)
            elif kind == NEW_ORDER:
                self._new_order(t)
                self._at(t + r.expovariate(ORDER_RATE), NEW_ORDER, None)
            else:
                self._product_event(t)
                self._at(t + r.expovariate(PRODUCT_RATE), PRODUCT, None)


def copy_rows(rows):
    """COPY text format lines for (stream_id, event_type, data, version, created_at)."""
    out = []
    for stream, etype, data, version, t in rows:
        us = int(round(t * 1e6))
        out.append("%s\t%s\t%s\t%d\t%s.%06d+00\n" % (
            stream, etype, data.replace("\\", "\\\\"), version,
            time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(us // 1000000)), us % 1000000))
    return "".join(out)


if __name__ == "__main__":
    import sys
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    it = Workload(int(sys.argv[2]) if len(sys.argv) > 2 else 42).events()
    for _ in range(n):
        print(next(it))
