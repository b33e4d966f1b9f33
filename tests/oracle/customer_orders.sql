-- The customer_orders oracle (projection customer_activity, alias
-- `customer_orders`): an independent fold of the events table, written from
-- the projection rules in README.md ("Event schemas" -> customer_activity,
-- "Dead letters"), not from esbridge's output.
--
-- Returns one row (id text, doc jsonb) per completed order.
--
-- Rules:
--   * only OrderCompleted is read, in (transaction_id, global_position)
--     order (the xid8 values, never their text); _id = order_id (a
--     non-empty string of at most 512 bytes, or an integer: its text); an
--     event whose order_id cannot be read is a dead letter naming no
--     document: it changes nothing and holds nothing back;
--   * valid: customer_id a non-empty string of at most 512 bytes or an
--     integer; total_amount a JSON number, not negative, at most two
--     decimals (trailing zeros allowed), below 10^13; completed_at null (or
--     absent: null) or a date as the projection checks it against the
--     index's `date` mapping: YYYY-MM-DD, optionally followed by THH:MM,
--     then optionally :SS and .fraction (1 to 9 digits), and a zone Z or
--     +HH:MM/-HH:MM (at most 18:00), every part in range (year from 1, a day
--     of that month, hour 0-23, minute and second 0-59), the instant in UTC
--     within years 1 to 9999; data (as text) at
--     most 1 MiB (the default max-event-bytes). Others are dead letters
--     naming "customer_orders/<order_id>";
--   * hold-back: the first dead letter naming an order holds it back: none
--     of its later completions counts, valid or not (they are 'held'
--     letters until the letter is retried or discarded);
--   * the document is {customer_id, order_id, amount = total_amount,
--     completed_at} of the order's last valid completion before its
--     hold-back (each completion replaces the whole document).
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
                    AND (e.data -> 'order_id')::text ~ '^-?[0-9]{1,19}$'
                    AND ((e.data -> 'order_id')::text)::numeric
                        BETWEEN -9223372036854775808 AND 9223372036854775807
                   THEN (e.data -> 'order_id')::text
           END AS id,
           CASE WHEN jsonb_typeof(e.data -> 'total_amount') = 'number'
                THEN (e.data ->> 'total_amount')::numeric END AS amount,
           octet_length(e.data::text) AS bytes
      FROM public.events e
     WHERE e.event_type = 'OrderCompleted'
),
-- the parts of completed_at (m: NULL when it is not date-shaped)
parts AS (
    SELECT ev.*, r.m
      FROM ev
      LEFT JOIN LATERAL (
           SELECT regexp_match(ev.data ->> 'completed_at',
                  '^([0-9]{4})-([0-9]{2})-([0-9]{2})(T([0-9]{2}):([0-9]{2})(:([0-9]{2})(\.[0-9]{1,9})?)?(Z|([+-])([0-9]{2}):([0-9]{2}))?)?$') AS m
            WHERE jsonb_typeof(ev.data -> 'completed_at') = 'string') r ON true
     WHERE ev.id IS NOT NULL
),
judged AS (
    SELECT p.txid, p.pos, p.data, p.id, p.amount,
           coalesce(
               p.bytes <= 1048576
               AND ((jsonb_typeof(p.data -> 'customer_id') = 'string'
                     AND (p.data ->> 'customer_id') <> ''
                     AND octet_length(p.data ->> 'customer_id') <= 512)
                    OR (jsonb_typeof(p.data -> 'customer_id') = 'number'
                        AND (p.data -> 'customer_id')::text ~ '^-?[0-9]{1,19}$'
                        AND ((p.data -> 'customer_id')::text)::numeric
                            BETWEEN -9223372036854775808 AND 9223372036854775807))
               AND p.amount >= 0
               AND p.amount < 1e13
               AND p.amount = round(p.amount, 2)
               AND (coalesce(jsonb_typeof(p.data -> 'completed_at'), 'null') = 'null'
                    OR (p.m IS NOT NULL
                        AND p.m[1]::int >= 1
                        AND p.m[2]::int BETWEEN 1 AND 12
                        AND p.m[3]::int >= 1
                        AND p.m[3]::int <= CASE
                                WHEN p.m[2]::int = 2 THEN
                                    CASE WHEN (p.m[1]::int % 4 = 0 AND p.m[1]::int % 100 <> 0)
                                              OR p.m[1]::int % 400 = 0 THEN 29 ELSE 28 END
                                WHEN p.m[2]::int IN (4, 6, 9, 11) THEN 30
                                ELSE 31 END
                        AND coalesce(p.m[5]::int, 0) <= 23
                        AND coalesce(p.m[6]::int, 0) <= 59
                        AND coalesce(p.m[8]::int, 0) <= 59
                        AND (p.m[11] IS NULL
                             OR (p.m[13]::int <= 59 AND p.m[12]::int * 60 + p.m[13]::int <= 1080))
                        -- the instant in UTC within years 1 to 9999
                        AND NOT (p.m[1] || p.m[2] || p.m[3] = '00010101'
                                 AND coalesce(p.m[5]::int, 0) * 60 + coalesce(p.m[6]::int, 0)
                                     < CASE p.m[11] WHEN '+' THEN p.m[12]::int * 60 + p.m[13]::int ELSE 0 END)
                        AND NOT (p.m[1] || p.m[2] || p.m[3] = '99991231'
                                 AND coalesce(p.m[5]::int, 0) * 60 + coalesce(p.m[6]::int, 0)
                                     + CASE p.m[11] WHEN '-' THEN p.m[12]::int * 60 + p.m[13]::int ELSE 0 END
                                     >= 1440))),
               false) AS ok
      FROM parts p
),
-- the first dead letter of each order: it holds the order back
first_bad AS (
    SELECT DISTINCT ON (id) id, txid, pos
      FROM judged
     WHERE NOT ok
     ORDER BY id, txid, pos
),
valid AS (
    SELECT j.*
      FROM judged j
      LEFT JOIN first_bad f ON f.id = j.id
     WHERE j.ok
       AND (f.id IS NULL OR (j.txid, j.pos) < (f.txid, f.pos))
)
SELECT DISTINCT ON (id) id,
       jsonb_build_object('customer_id', data -> 'customer_id',
                          'order_id', data -> 'order_id',
                          'amount', round(amount, 2),
                          'completed_at', coalesce(data -> 'completed_at', 'null'::jsonb)) AS doc
  FROM valid
 ORDER BY id, txid DESC, pos DESC
