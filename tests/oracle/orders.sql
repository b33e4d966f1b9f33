-- The orders oracle: an independent fold of the events table, written from
-- the projection rules in README.md ("Event schemas" -> orders), not from
-- esbridge's output.
--
-- Returns one row (id text, doc jsonb) per order document that must exist
-- behind the alias `orders` once the bridge has caught up.
--
-- Rules:
--   * only OrderCreated, OrderItemAdded, OrderItemRemoved, OrderShipped,
--     OrderCompleted and OrderCancelled are read, in (transaction_id,
--     global_position) order (the xid8 values, never their text);
--   * _id = order_id: a non-empty string of at most 512 bytes, or an integer
--     (its text); anything else is a dead letter;
--   * events that fail validation are dead letters and change nothing:
--       Created:        customer_id a non-empty string or an integer,
--                       created_at a string or null (or absent);
--       ItemAdded/Removed: product_id as customer_id; price a JSON number,
--                       not negative, at most two decimals (trailing zeros
--                       allowed), below 10^13; quantity a whole number from
--                       1 to 1,000,000; price x quantity at most 10^13;
--       Shipped / Completed: shipped_at / completed_at a string or null;
--       Cancelled:      cancelled_at and reason strings or null;
--     an event whose data (as text) is above 1 MiB (the default
--     max-event-bytes) is a dead letter too;
--     (the overflow of a total is not modelled: the tests stay far from it);
--   * events of other types, even in an order- stream, change nothing (the
--     bridge dead-letters those of order- streams, naming no document,
--     which holds nothing back);
--   * an order's document exists from its first valid OrderCreated on;
--     valid events of the order before it are dead letters (404: the
--     update of a missing document);
--   * hold-back: the first dead letter of an order (invalid with a readable
--     order_id, or a 404, in (transaction_id, global_position) order) holds
--     the order back: none of its later events counts, valid or not, its
--     creation included (they are 'held' letters until the letter is
--     retried or discarded; a discarded letter is modelled by leaving its
--     event out of the table read here);
--   * the last valid OrderCreated before the hold-back is the boundary: it
--     resets the document to
--     {order_id, customer_id, status "pending", total_amount 0,
--      item_count 0, created_at}, and only the valid events after it (and
--      before the hold-back) count:
--       - total_amount = sum(+-price x quantity), exact numeric arithmetic;
--       - item_count   = number of items added - number removed;
--       - status       = that of the last Shipped/Completed/Cancelled
--                        ("shipped", "completed", "cancelled"), else pending;
--       - shipped_at   from the last Shipped, completed_at from the last
--         Completed, cancelled_at and cancellation_reason (= reason) from the
--         last Cancelled; a field is present (possibly null) only once such
--         an event came;
--       - updated_at = the created_at column of the last event applied, as
--         to_char(... AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
--       - last_event = {"txid": transaction_id, "position": global_position}
--         of that event.
-- jsonb compares numbers by value: 0.3 = 0.30 = 0.300.
-- One statement, no helper objects: the harness wraps it in a temp view.
WITH ev AS (
    SELECT e.transaction_id AS txid,
           e.global_position AS pos,
           e.event_type AS type,
           e.data,
           e.created_at,
           CASE
               WHEN jsonb_typeof(e.data) <> 'object' THEN NULL
               WHEN jsonb_typeof(e.data -> 'order_id') = 'string'
                    AND (e.data ->> 'order_id') <> ''
                    AND octet_length(e.data ->> 'order_id') <= 512
                   THEN e.data ->> 'order_id'
               WHEN jsonb_typeof(e.data -> 'order_id') = 'number'
                    AND (e.data -> 'order_id')::text ~ '^-?[0-9]{1,19}$'
                    AND ((e.data -> 'order_id')::text)::numeric
                        BETWEEN -9223372036854775808 AND 9223372036854775807
                   THEN (e.data -> 'order_id')::text
           END AS id,
           octet_length(e.data::text) AS bytes
      FROM public.events e
     WHERE e.event_type IN ('OrderCreated', 'OrderItemAdded', 'OrderItemRemoved',
                            'OrderShipped', 'OrderCompleted', 'OrderCancelled')
),
-- per event: is it valid, and for items the signed amount
checked AS (
    SELECT ev.*,
           CASE WHEN ev.type IN ('OrderItemAdded', 'OrderItemRemoved')
                     AND jsonb_typeof(ev.data -> 'price') = 'number'
                THEN (ev.data ->> 'price')::numeric END AS price,
           CASE WHEN ev.type IN ('OrderItemAdded', 'OrderItemRemoved')
                     AND jsonb_typeof(ev.data -> 'quantity') = 'number'
                     AND (ev.data -> 'quantity')::text ~ '^-?[0-9]{1,18}$'
                THEN ((ev.data -> 'quantity')::text)::numeric END AS qty
      FROM ev
     WHERE ev.id IS NOT NULL
),
-- per event: does it pass the rules (never NULL)
judged AS (
    SELECT c.*,
           CASE c.type WHEN 'OrderItemAdded' THEN c.price * c.qty
                       WHEN 'OrderItemRemoved' THEN -(c.price * c.qty)
                       ELSE 0 END AS amount,
           CASE c.type WHEN 'OrderItemAdded' THEN 1
                       WHEN 'OrderItemRemoved' THEN -1
                       ELSE 0 END AS count,
           c.bytes <= 1048576 AND coalesce(CASE c.type
               WHEN 'OrderCreated' THEN
                   ((jsonb_typeof(c.data -> 'customer_id') = 'string'
                     AND (c.data ->> 'customer_id') <> ''
                     AND octet_length(c.data ->> 'customer_id') <= 512)
                    OR (jsonb_typeof(c.data -> 'customer_id') = 'number'
                        AND (c.data -> 'customer_id')::text ~ '^-?[0-9]{1,19}$'
                        AND ((c.data -> 'customer_id')::text)::numeric
                            BETWEEN -9223372036854775808 AND 9223372036854775807))
                   AND coalesce(jsonb_typeof(c.data -> 'created_at'), 'null') IN ('string', 'null')
               WHEN 'OrderShipped' THEN
                   coalesce(jsonb_typeof(c.data -> 'shipped_at'), 'null') IN ('string', 'null')
               WHEN 'OrderCompleted' THEN
                   coalesce(jsonb_typeof(c.data -> 'completed_at'), 'null') IN ('string', 'null')
               WHEN 'OrderCancelled' THEN
                   coalesce(jsonb_typeof(c.data -> 'cancelled_at'), 'null') IN ('string', 'null')
                   AND coalesce(jsonb_typeof(c.data -> 'reason'), 'null') IN ('string', 'null')
               ELSE -- items
                   ((jsonb_typeof(c.data -> 'product_id') = 'string'
                     AND (c.data ->> 'product_id') <> ''
                     AND octet_length(c.data ->> 'product_id') <= 512)
                    OR (jsonb_typeof(c.data -> 'product_id') = 'number'
                        AND (c.data -> 'product_id')::text ~ '^-?[0-9]{1,19}$'
                        AND ((c.data -> 'product_id')::text)::numeric
                            BETWEEN -9223372036854775808 AND 9223372036854775807))
                   AND c.price IS NOT NULL
                   AND c.price >= 0
                   AND c.price < 1e13
                   AND c.price = round(c.price, 2)
                   AND c.qty IS NOT NULL
                   AND c.qty BETWEEN 1 AND 1000000
                   AND c.price * c.qty <= 1e13
           END, false) AS ok
      FROM checked c
),
-- the first valid creation of each order: its document exists from there on
first_created AS (
    SELECT DISTINCT ON (id) id, txid, pos
      FROM judged
     WHERE ok AND type = 'OrderCreated'
     ORDER BY id, txid, pos
),
-- the first dead letter of each order (invalid, or a 404 before the
-- document exists): it holds the order back
first_bad AS (
    SELECT DISTINCT ON (j.id) j.id, j.txid, j.pos
      FROM judged j
      LEFT JOIN first_created fc ON fc.id = j.id
     WHERE NOT j.ok
        OR (j.type <> 'OrderCreated'
            AND (fc.id IS NULL OR (j.txid, j.pos) < (fc.txid, fc.pos)))
     ORDER BY j.id, j.txid, j.pos
),
-- the events that count: valid, and before the order's first dead letter
valid AS (
    SELECT j.*
      FROM judged j
      LEFT JOIN first_bad f ON f.id = j.id
     WHERE j.ok
       AND (f.id IS NULL OR (j.txid, j.pos) < (f.txid, f.pos))
),
-- the last valid creation of each order: its document starts there
boundary AS (
    SELECT DISTINCT ON (id) id, txid, pos, data
      FROM valid
     WHERE type = 'OrderCreated'
     ORDER BY id, txid DESC, pos DESC
),
-- the valid events from the boundary on (the boundary included)
applied AS (
    SELECT v.*
      FROM valid v
      JOIN boundary b ON b.id = v.id
     WHERE (v.txid, v.pos) >= (b.txid, b.pos)
),
sums AS (
    SELECT id, sum(amount) AS total, sum(count) AS items
      FROM applied
     GROUP BY id
),
last_applied AS (
    SELECT DISTINCT ON (id) id, txid, pos, created_at
      FROM applied
     ORDER BY id, txid DESC, pos DESC
),
last_status AS (
    SELECT DISTINCT ON (id) id,
           CASE type WHEN 'OrderShipped' THEN 'shipped'
                     WHEN 'OrderCompleted' THEN 'completed'
                     ELSE 'cancelled' END AS status
      FROM applied
     WHERE type IN ('OrderShipped', 'OrderCompleted', 'OrderCancelled')
     ORDER BY id, txid DESC, pos DESC
),
-- the fields written by the last event of each of the three kinds
last_of_kind AS (
    SELECT DISTINCT ON (id, type) id, type,
           CASE type
               WHEN 'OrderShipped' THEN jsonb_build_object('shipped_at', data -> 'shipped_at')
               WHEN 'OrderCompleted' THEN jsonb_build_object('completed_at', data -> 'completed_at')
               ELSE jsonb_build_object('cancelled_at', data -> 'cancelled_at',
                                       'cancellation_reason', data -> 'reason')
           END AS fields
      FROM applied
     WHERE type IN ('OrderShipped', 'OrderCompleted', 'OrderCancelled')
     ORDER BY id, type, txid DESC, pos DESC
),
extra AS (
    SELECT id, jsonb_object_agg(f.key, f.value) AS fields
      FROM last_of_kind
     CROSS JOIN LATERAL jsonb_each(fields) f
     GROUP BY id
)
SELECT b.id,
       jsonb_build_object(
           'order_id', b.data -> 'order_id',
           'customer_id', b.data -> 'customer_id',
           'status', coalesce(ls.status, 'pending'),
           'total_amount', round(s.total, 2),
           'item_count', s.items,
           'created_at', b.data -> 'created_at',
           'updated_at', to_char(la.created_at AT TIME ZONE 'UTC',
                                 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
           'last_event', jsonb_build_object('txid', (la.txid::text)::numeric,
                                            'position', la.pos))
       || coalesce(x.fields, '{}'::jsonb) AS doc
  FROM boundary b
  JOIN sums s ON s.id = b.id
  JOIN last_applied la ON la.id = b.id
  LEFT JOIN last_status ls ON ls.id = b.id
  LEFT JOIN extra x ON x.id = b.id
