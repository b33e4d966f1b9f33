-- The customers oracle (projection customer_activity, alias `customers`):
-- an independent fold of the events table, written from the projection
-- rules in README.md ("Event schemas" -> customer_activity), not from
-- esbridge's output.
--
-- Returns one row (id text, doc jsonb) per customer document that must
-- exist behind the alias `customers` once the bridge has caught up.
--
-- Rules:
--   * CustomerCreated, OrderCompleted, ReviewSubmitted and
--     CustomerTierChanged are read, in (transaction_id, global_position)
--     order; _id = customer_id (a non-empty string of at most 512 bytes, or
--     an integer: its text);
--   * valid events (the others are dead letters and change nothing);
--     "a date" is null, absent or a string the index's `date` mapping
--     accepts (modelled as ISO-8601 dates and date-times, which is what the
--     tests write; other strings are refused by the node, 400):
--       CustomerCreated:     email, name strings or null (or absent),
--                            created_at a date;
--       OrderCompleted:      order_id as customer_id; total_amount a JSON
--                            number, not negative, at most two decimals, below
--                            10^13; completed_at a date;
--       ReviewSubmitted:     product_id as customer_id; rating a whole number
--                            from 1 to 5; submitted_at a date;
--       CustomerTierChanged: new_tier a non-empty string; changed_at a string
--                            or null;
--   * a customer's document exists from its first valid event on, whatever
--     its type (an order or review before the CustomerCreated is kept):
--       customer_id    from that first event;
--       tier           "bronze", or the value set by the last CustomerCreated
--                      ("bronze") or CustomerTierChanged (new_tier);
--       email, name, created_at from the last CustomerCreated, present
--                      (possibly null) only once one came;
--       total_orders   number of OrderCompleted, total_spent the exact sum of
--                      their total_amount, total_reviews number of
--                      ReviewSubmitted;
--       last_order_at  completed_at of the last OrderCompleted,
--       last_review_at submitted_at of the last ReviewSubmitted, present only
--                      once such an event came;
--       updated_at     the created_at column of the last event, as
--                      to_char(... AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
--       last_event     {"txid", "position"} of the last event.
-- One statement, no helper objects: the harness wraps it in a temp view.
WITH ev AS (
    SELECT e.transaction_id AS txid,
           e.global_position AS pos,
           e.event_type AS type,
           e.data,
           e.created_at,
           CASE
               WHEN jsonb_typeof(e.data) <> 'object' THEN NULL
               WHEN jsonb_typeof(e.data -> 'customer_id') = 'string'
                    AND (e.data ->> 'customer_id') <> ''
                    AND octet_length(e.data ->> 'customer_id') <= 512
                   THEN e.data ->> 'customer_id'
               WHEN jsonb_typeof(e.data -> 'customer_id') = 'number'
                    AND (e.data -> 'customer_id')::text ~ '^-?[0-9]{1,18}$'
                   THEN (e.data -> 'customer_id')::text
           END AS id
      FROM public.events e
     WHERE e.event_type IN ('CustomerCreated', 'OrderCompleted', 'ReviewSubmitted',
                            'CustomerTierChanged')
),
valid AS (
    SELECT ev.*,
           CASE WHEN ev.type = 'OrderCompleted' THEN (ev.data ->> 'total_amount')::numeric
                ELSE 0 END AS amount
      FROM ev
     WHERE ev.id IS NOT NULL
       AND CASE ev.type
               WHEN 'CustomerCreated' THEN
                   coalesce(jsonb_typeof(ev.data -> 'email'), 'null') IN ('string', 'null')
                   AND coalesce(jsonb_typeof(ev.data -> 'name'), 'null') IN ('string', 'null')
                   AND (coalesce(jsonb_typeof(ev.data -> 'created_at'), 'null') = 'null'
                    OR (jsonb_typeof(ev.data -> 'created_at') = 'string'
                        AND (ev.data ->> 'created_at') ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?(Z|[+-][0-9]{2}:[0-9]{2})?)?$'))
               WHEN 'OrderCompleted' THEN
                   ((jsonb_typeof(ev.data -> 'order_id') = 'string'
                     AND (ev.data ->> 'order_id') <> ''
                     AND octet_length(ev.data ->> 'order_id') <= 512)
                    OR (jsonb_typeof(ev.data -> 'order_id') = 'number'
                        AND (ev.data -> 'order_id')::text ~ '^-?[0-9]{1,18}$'))
                   AND jsonb_typeof(ev.data -> 'total_amount') = 'number'
                   AND (ev.data ->> 'total_amount')::numeric >= 0
                   AND (ev.data ->> 'total_amount')::numeric < 1e13
                   AND (ev.data ->> 'total_amount')::numeric
                       = round((ev.data ->> 'total_amount')::numeric, 2)
                   AND (coalesce(jsonb_typeof(ev.data -> 'completed_at'), 'null') = 'null'
                    OR (jsonb_typeof(ev.data -> 'completed_at') = 'string'
                        AND (ev.data ->> 'completed_at') ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?(Z|[+-][0-9]{2}:[0-9]{2})?)?$'))
               WHEN 'ReviewSubmitted' THEN
                   ((jsonb_typeof(ev.data -> 'product_id') = 'string'
                     AND (ev.data ->> 'product_id') <> ''
                     AND octet_length(ev.data ->> 'product_id') <= 512)
                    OR (jsonb_typeof(ev.data -> 'product_id') = 'number'
                        AND (ev.data -> 'product_id')::text ~ '^-?[0-9]{1,18}$'))
                   AND jsonb_typeof(ev.data -> 'rating') = 'number'
                   AND (ev.data -> 'rating')::text IN ('1', '2', '3', '4', '5')
                   AND (coalesce(jsonb_typeof(ev.data -> 'submitted_at'), 'null') = 'null'
                    OR (jsonb_typeof(ev.data -> 'submitted_at') = 'string'
                        AND (ev.data ->> 'submitted_at') ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?(Z|[+-][0-9]{2}:[0-9]{2})?)?$'))
               ELSE -- CustomerTierChanged
                   jsonb_typeof(ev.data -> 'new_tier') = 'string'
                   AND (ev.data ->> 'new_tier') <> ''
                   AND coalesce(jsonb_typeof(ev.data -> 'changed_at'), 'null') IN ('string', 'null')
           END
),
first_ev AS (
    SELECT DISTINCT ON (id) id, data -> 'customer_id' AS customer_id
      FROM valid
     ORDER BY id, txid, pos
),
last_ev AS (
    SELECT DISTINCT ON (id) id, txid, pos, created_at
      FROM valid
     ORDER BY id, txid DESC, pos DESC
),
last_tier AS (
    SELECT DISTINCT ON (id) id,
           CASE type WHEN 'CustomerCreated' THEN 'bronze' ELSE data ->> 'new_tier' END AS tier
      FROM valid
     WHERE type IN ('CustomerCreated', 'CustomerTierChanged')
     ORDER BY id, txid DESC, pos DESC
),
-- the fields written by the last event of each kind
last_of_kind AS (
    SELECT DISTINCT ON (id, type) id, type,
           CASE type
               WHEN 'CustomerCreated' THEN jsonb_build_object('email', data -> 'email',
                                                               'name', data -> 'name',
                                                               'created_at', data -> 'created_at')
               WHEN 'OrderCompleted' THEN jsonb_build_object('last_order_at', data -> 'completed_at')
               ELSE jsonb_build_object('last_review_at', data -> 'submitted_at')
           END AS fields
      FROM valid
     WHERE type IN ('CustomerCreated', 'OrderCompleted', 'ReviewSubmitted')
     ORDER BY id, type, txid DESC, pos DESC
),
-- jsonb_build_object turns an absent member (SQL NULL) into JSON null, as the bridge writes it
extra AS (
    SELECT id, jsonb_object_agg(f.key, coalesce(f.value, 'null'::jsonb)) AS fields
      FROM last_of_kind
     CROSS JOIN LATERAL jsonb_each(fields) f
     GROUP BY id
),
sums AS (
    SELECT id,
           count(*) FILTER (WHERE type = 'OrderCompleted') AS orders,
           coalesce(sum(amount) FILTER (WHERE type = 'OrderCompleted'), 0) AS spent,
           count(*) FILTER (WHERE type = 'ReviewSubmitted') AS reviews
      FROM valid
     GROUP BY id
)
SELECT f.id,
       jsonb_build_object(
           'customer_id', f.customer_id,
           'tier', coalesce(t.tier, 'bronze'),
           'total_orders', s.orders,
           'total_spent', round(s.spent, 2),
           'total_reviews', s.reviews,
           'updated_at', to_char(l.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
           'last_event', jsonb_build_object('txid', (l.txid::text)::numeric, 'position', l.pos))
       || coalesce(x.fields, '{}'::jsonb) AS doc
  FROM first_ev f
  JOIN last_ev l ON l.id = f.id
  JOIN sums s ON s.id = f.id
  LEFT JOIN last_tier t ON t.id = f.id
  LEFT JOIN extra x ON x.id = f.id
