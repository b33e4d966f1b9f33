-- Deterministic order history: psql -v orders=N -v seed=0.42 -f gen_orders.sql
-- Each order: created, 1-5 items added a few minutes apart, sometimes one
-- removed, then shipped a day later and completed three days later, or
-- cancelled within hours, or left open. Events of different orders are
-- interleaved in time, the way a shop writes them.
SELECT setseed(:seed);
CREATE TEMP TABLE gen_orders AS
SELECT o,
       (random() * 86400 * 30)::int AS start_s,
       1 + (random() * 4.999)::int AS n_items,
       random() < 0.3 AS removes,
       CASE WHEN random() < 0.6 THEN 'completed' WHEN random() < 0.5 THEN 'cancelled' ELSE 'open' END AS fate
FROM generate_series(1, :orders) AS o;

CREATE TEMP TABLE gen_events AS
SELECT o, start_s, step, kind, n_items,
       start_s + CASE kind WHEN 'OrderShipped' THEN 86400 WHEN 'OrderCompleted' THEN 3 * 86400
                           WHEN 'OrderCancelled' THEN 7200 ELSE step * 120 END AS at_s
FROM (
  SELECT o, start_s, 0 AS step, 'OrderCreated' AS kind, n_items FROM gen_orders
  UNION ALL
  SELECT o, start_s, i, 'OrderItemAdded', n_items FROM gen_orders, generate_series(1, n_items) AS i
  UNION ALL
  SELECT o, start_s, n_items + 1, 'OrderItemRemoved', n_items FROM gen_orders WHERE removes
  UNION ALL
  SELECT o, start_s, n_items + 2, 'OrderShipped', n_items FROM gen_orders WHERE fate = 'completed'
  UNION ALL
  SELECT o, start_s, n_items + 3, 'OrderCompleted', n_items FROM gen_orders WHERE fate = 'completed'
  UNION ALL
  SELECT o, start_s, n_items + 2, 'OrderCancelled', n_items FROM gen_orders WHERE fate = 'cancelled'
) e;

INSERT INTO events (stream_id, event_type, data, version, created_at)
SELECT 'order-' || o,
       kind,
       CASE kind
         WHEN 'OrderCreated' THEN jsonb_build_object('order_id', 'o' || o, 'customer_id', 'c' || (o % 997),
              'created_at', to_char(to_timestamp(1767225600 + start_s) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))
         WHEN 'OrderItemAdded' THEN jsonb_build_object('order_id', 'o' || o, 'product_id', 'p' || ((o * 7 + step) % 5000),
              'price', ((o * 31 + step * 17) % 20000) / 100.0, 'quantity', 1 + (o + step) % 3)
         WHEN 'OrderItemRemoved' THEN jsonb_build_object('order_id', 'o' || o, 'product_id', 'p' || ((o * 7 + 1) % 5000),
              'price', ((o * 31 + 17) % 20000) / 100.0, 'quantity', 1)
         WHEN 'OrderShipped' THEN jsonb_build_object('order_id', 'o' || o,
              'shipped_at', to_char(to_timestamp(1767225600 + at_s) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))
         WHEN 'OrderCompleted' THEN jsonb_build_object('order_id', 'o' || o, 'customer_id', 'c' || (o % 997),
              'total_amount', 0, 'item_count', n_items,
              'completed_at', to_char(to_timestamp(1767225600 + at_s) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))
         ELSE jsonb_build_object('order_id', 'o' || o, 'reason', 'customer request',
              'cancelled_at', to_char(to_timestamp(1767225600 + at_s) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))
       END,
       step + 1,
       to_timestamp(1767225600 + at_s)
FROM gen_events
ORDER BY at_s, o, step;
