-- The valid order history the poison corpus is mixed into: orders
-- og:first .. og:last, each created, with 1-4 items, some with one removed,
-- then shipped and completed, or cancelled, or left open. Events of
-- different orders are interleaved (ordered by step, then order).
-- Variables (tests/integration/harness.h, h_sql_file): :first, :last.
INSERT INTO public.events (stream_id, event_type, data, version, created_at)
SELECT 'order-og' || o, kind,
       CASE kind
         WHEN 'OrderCreated' THEN jsonb_build_object('order_id', 'og' || o,
              'customer_id', 'c' || (o % 37), 'created_at', '2026-10-01T00:00:00Z')
         WHEN 'OrderItemAdded' THEN jsonb_build_object('order_id', 'og' || o,
              'product_id', 'g' || (o * 7 + step) % 3000,
              'price', ((o * 37 + step * 11) % 10000) / 100.0, 'quantity', 1 + (o + step) % 3)
         WHEN 'OrderItemRemoved' THEN jsonb_build_object('order_id', 'og' || o,
              'product_id', 'g' || (o * 7 + 2) % 3000,
              'price', ((o * 37 + 22) % 10000) / 100.0, 'quantity', 1 + (o + 2) % 3)
         WHEN 'OrderShipped' THEN jsonb_build_object('order_id', 'og' || o,
              'shipped_at', '2026-10-02T00:00:00Z')
         WHEN 'OrderCompleted' THEN jsonb_build_object('order_id', 'og' || o,
              'customer_id', 'c' || (o % 37), 'total_amount', 0, 'item_count', 0,
              'completed_at', '2026-10-05T00:00:00Z')
         ELSE jsonb_build_object('order_id', 'og' || o, 'reason', 'changed my mind',
              'cancelled_at', '2026-10-01T02:00:00Z')
       END,
       step,
       timestamptz '2026-10-01 00:00:00+00' + (o * 60 + step) * interval '1 second'
  FROM (SELECT o, 1 AS step, 'OrderCreated' AS kind FROM generate_series(:first, :last) o
        UNION ALL
        SELECT o, 1 + i, 'OrderItemAdded'
          FROM generate_series(:first, :last) o, generate_series(1, 1 + o % 4) i
        UNION ALL
        SELECT o, 6, 'OrderItemRemoved' FROM generate_series(:first, :last) o WHERE o % 5 = 0
        UNION ALL
        SELECT o, 7, 'OrderShipped' FROM generate_series(:first, :last) o WHERE o % 3 = 0
        UNION ALL
        SELECT o, 8, 'OrderCompleted' FROM generate_series(:first, :last) o WHERE o % 3 = 0
        UNION ALL
        SELECT o, 7, 'OrderCancelled' FROM generate_series(:first, :last) o WHERE o % 3 = 1) e
 ORDER BY step, o;
