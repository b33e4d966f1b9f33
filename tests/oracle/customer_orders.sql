-- The customer_orders oracle (projection customer_activity, alias
-- `customer_orders`): an independent fold of the events table, written from
-- the projection rules in README.md, not from esbridge's output.
--
-- Returns one row (id text, doc jsonb) per completed order: _id = order_id
-- (a non-empty string of at most 512 bytes, or an integer: its text), the
-- document {customer_id, order_id, amount = total_amount, completed_at} of
-- the order's last valid OrderCompleted in (transaction_id,
-- global_position) order. Valid: customer_id and order_id as _id,
-- total_amount a JSON number, not negative, at most two decimals, below
-- 10^13, completed_at null (or absent: null) or a string the index's `date`
-- mapping accepts (modelled as ISO-8601 dates and date-times, which is what
-- the tests write; other strings are refused by the node, 400, a dead letter).
-- One statement, no helper objects: the harness wraps it in a temp view.
WITH ev AS (
    SELECT e.transaction_id AS txid,
           e.global_position AS pos,
           e.data,
           CASE
               WHEN jsonb_typeof(e.data) <> 'object' THEN NULL
               WHEN jsonb_typeof(e.data -> 'order_id') = 'string'
                    AND (e.data ->> 'order_id') <> ''
                    AND octet_length(e.data ->> 'order_id') <= 512
                   THEN e.data ->> 'order_id'
               WHEN jsonb_typeof(e.data -> 'order_id') = 'number'
                    AND (e.data -> 'order_id')::text ~ '^-?[0-9]{1,18}$'
                   THEN (e.data -> 'order_id')::text
           END AS id
      FROM public.events e
     WHERE e.event_type = 'OrderCompleted'
),
valid AS (
    SELECT ev.*
      FROM ev
     WHERE ev.id IS NOT NULL
       AND ((jsonb_typeof(ev.data -> 'customer_id') = 'string'
             AND (ev.data ->> 'customer_id') <> ''
             AND octet_length(ev.data ->> 'customer_id') <= 512)
            OR (jsonb_typeof(ev.data -> 'customer_id') = 'number'
                AND (ev.data -> 'customer_id')::text ~ '^-?[0-9]{1,18}$'))
       AND jsonb_typeof(ev.data -> 'total_amount') = 'number'
       AND (ev.data ->> 'total_amount')::numeric >= 0
       AND (ev.data ->> 'total_amount')::numeric < 1e13
       AND (ev.data ->> 'total_amount')::numeric = round((ev.data ->> 'total_amount')::numeric, 2)
       AND (coalesce(jsonb_typeof(ev.data -> 'completed_at'), 'null') = 'null'
                    OR (jsonb_typeof(ev.data -> 'completed_at') = 'string'
                        AND (ev.data ->> 'completed_at') ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?(Z|[+-][0-9]{2}:[0-9]{2})?)?$'))
)
SELECT DISTINCT ON (id) id,
       jsonb_build_object('customer_id', data -> 'customer_id',
                          'order_id', data -> 'order_id',
                          'amount', round((data ->> 'total_amount')::numeric, 2),
                          'completed_at', coalesce(data -> 'completed_at', 'null'::jsonb)) AS doc
  FROM valid
 ORDER BY id, txid DESC, pos DESC
