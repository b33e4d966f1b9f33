-- The daily_sales oracle: an independent fold of the events table, written
-- from the projection rules in README.md ("Event schemas" -> daily_sales),
-- not from esbridge's output.
--
-- Returns one row (id text, doc jsonb) per day document that must exist
-- behind the alias `daily_sales` once the bridge has caught up.
--
-- Rules:
--   * only OrderCompleted and OrderRefunded are read;
--   * the day of an event: its completed_at (OrderCompleted) or
--     original_completed_at (OrderRefunded), a string
--     YYYY-MM-DDTHH:MM:SS[.fraction] followed by Z or +HH:MM/-HH:MM, taken
--     in UTC; _id = that day as YYYY-MM-DD;
--   * valid events (the others are dead letters and change nothing):
--       OrderCompleted: total_amount a JSON number, not negative, at most two
--                       decimals, below 10^13; item_count a whole number from
--                       0 to 10^9;
--       OrderRefunded:  refund_amount as total_amount;
--   * per day, exact numeric sums over its valid events:
--       total_orders  = completions - refunds,
--       total_revenue = sum(total_amount) - sum(refund_amount),
--       total_items   = sum(item_count),
--       total_refunds = sum(refund_amount);
--     date = the day; last_event = {"txid", "position"} of the day's last
--     valid event in (transaction_id, global_position) order.
-- One statement, no helper objects: the harness wraps it in a temp view.
WITH ev AS (
    SELECT e.transaction_id AS txid,
           e.global_position AS pos,
           e.event_type AS type,
           e.data,
           CASE e.event_type WHEN 'OrderCompleted' THEN e.data -> 'completed_at'
                             ELSE e.data -> 'original_completed_at' END AS ts,
           CASE e.event_type WHEN 'OrderCompleted' THEN e.data -> 'total_amount'
                             ELSE e.data -> 'refund_amount' END AS money
      FROM public.events e
     WHERE e.event_type IN ('OrderCompleted', 'OrderRefunded')
       AND jsonb_typeof(e.data) = 'object'
),
valid AS (
    SELECT ev.txid, ev.pos, ev.type,
           to_char(((ev.ts #>> '{}')::timestamptz) AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day,
           (ev.money #>> '{}')::numeric AS amount,
           CASE WHEN ev.type = 'OrderCompleted' THEN ((ev.data -> 'item_count')::text)::numeric
                ELSE 0 END AS items
      FROM ev
     WHERE jsonb_typeof(ev.ts) = 'string'
       AND (ev.ts #>> '{}') ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$'
       AND jsonb_typeof(ev.money) = 'number'
       AND (ev.money #>> '{}')::numeric >= 0
       AND (ev.money #>> '{}')::numeric < 1e13
       AND (ev.money #>> '{}')::numeric = round((ev.money #>> '{}')::numeric, 2)
       AND (ev.type = 'OrderRefunded'
            OR (jsonb_typeof(ev.data -> 'item_count') = 'number'
                AND (ev.data -> 'item_count')::text ~ '^[0-9]{1,10}$'
                AND ((ev.data -> 'item_count')::text)::numeric <= 1000000000))
),
last_ev AS (
    SELECT DISTINCT ON (day) day, txid, pos
      FROM valid
     ORDER BY day, txid DESC, pos DESC
),
sums AS (
    SELECT day,
           sum(CASE type WHEN 'OrderCompleted' THEN 1 ELSE -1 END) AS orders,
           sum(CASE type WHEN 'OrderCompleted' THEN amount ELSE -amount END) AS revenue,
           sum(items) AS items,
           sum(CASE type WHEN 'OrderRefunded' THEN amount ELSE 0 END) AS refunds
      FROM valid
     GROUP BY day
)
SELECT s.day AS id,
       jsonb_build_object(
           'date', s.day,
           'total_orders', s.orders,
           'total_revenue', round(s.revenue, 2),
           'total_items', s.items,
           'total_refunds', round(s.refunds, 2),
           'last_event', jsonb_build_object('txid', (l.txid::text)::numeric, 'position', l.pos)) AS doc
  FROM sums s
  JOIN last_ev l ON l.day = s.day
