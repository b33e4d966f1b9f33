-- The customers oracle (projection customer_activity, alias `customers`):
-- an independent fold of the events table, written from the projection
-- rules in README.md ("Event schemas" -> customer_activity, "Dead
-- letters"), not from esbridge's output.
--
-- Returns one row (id text, doc jsonb) per customer document that must
-- exist behind the alias `customers` once the bridge has caught up.
--
-- Rules:
--   * CustomerCreated, OrderCompleted, ReviewSubmitted and
--     CustomerTierChanged are read, in (transaction_id, global_position)
--     order (the xid8 values, never their text); _id = customer_id (a
--     non-empty string of at most 512 bytes, or an integer: its text);
--     an event whose customer_id cannot be read is a dead letter naming no
--     document: it changes nothing here and holds nothing back;
--   * events of a readable customer that fail validation are dead letters
--     naming the document "customers/<customer_id>" and change nothing;
--     "an id" is a non-empty string of at most 512 bytes or an integer;
--     "a date" is null, absent or a string the index's `date` mapping
--     accepts, as the projection checks it: YYYY-MM-DD, optionally followed
--     by THH:MM, then optionally :SS and .fraction (1 to 9 digits), and a
--     zone Z or +HH:MM/-HH:MM (at most 18:00), every part in range (year
--     from 1, a day of that month, hour 0-23, minute and second 0-59), the
--     instant in UTC within years 1 to 9999:
--       CustomerCreated:     email a string of at most 32766 bytes or null
--                            (or absent), name a string or null (or
--                            absent), created_at a date;
--       OrderCompleted:      order_id an id; total_amount a JSON number, not
--                            negative, at most two decimals (trailing zeros
--                            allowed), below 10^13; completed_at a date;
--       ReviewSubmitted:     product_id an id; rating a whole number from 1
--                            to 5; submitted_at a date;
--       CustomerTierChanged: new_tier a non-empty string of at most 32766
--                            bytes; changed_at a string or null (or absent);
--     an event whose data (as text) is above 1 MiB (the default
--     max-event-bytes) is one too;
--   * hold-back: the first dead letter naming a customer holds the customer
--     back: none of its later events counts, valid or not (they are 'held'
--     letters until the letter is retried or discarded; a discarded letter
--     is modelled by leaving its event out of the table read here);
--   * a customer's document exists from its first event that counts on,
--     whatever its type (an order or review before the CustomerCreated is
--     kept); over the events that count:
--       customer_id    from the first of them;
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
--       updated_at     the created_at column of the last of them, as
--                      to_char(... AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
--       last_event     {"txid", "position"} of the last of them.
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
                    AND (e.data -> 'customer_id')::text ~ '^-?[0-9]{1,19}$'
                    AND ((e.data -> 'customer_id')::text)::numeric
                        BETWEEN -9223372036854775808 AND 9223372036854775807
                   THEN (e.data -> 'customer_id')::text
           END AS id,
           -- the date field of the event, if it has one
           e.data -> CASE e.event_type WHEN 'CustomerCreated' THEN 'created_at'
                                       WHEN 'OrderCompleted' THEN 'completed_at'
                                       WHEN 'ReviewSubmitted' THEN 'submitted_at' END AS dt,
           -- the id field the event must carry besides customer_id, if any
           e.data -> CASE e.event_type WHEN 'OrderCompleted' THEN 'order_id'
                                       WHEN 'ReviewSubmitted' THEN 'product_id' END AS other_id,
           octet_length(e.data::text) AS bytes
      FROM public.events e
     WHERE e.event_type IN ('CustomerCreated', 'OrderCompleted', 'ReviewSubmitted',
                            'CustomerTierChanged')
),
-- the parts of the date field (m: NULL when it is not date-shaped)
parts AS (
    SELECT ev.*, r.m
      FROM ev
      LEFT JOIN LATERAL (
           SELECT regexp_match(ev.dt #>> '{}',
                  '^([0-9]{4})-([0-9]{2})-([0-9]{2})(T([0-9]{2}):([0-9]{2})(:([0-9]{2})(\.[0-9]{1,9})?)?(Z|([+-])([0-9]{2}):([0-9]{2}))?)?$') AS m
            WHERE jsonb_typeof(ev.dt) = 'string') r ON true
     WHERE ev.id IS NOT NULL
),
-- per event with a readable customer: does it pass the rules (never NULL)
checked AS (
    SELECT p.txid, p.pos, p.type, p.data, p.created_at, p.id,
           CASE WHEN p.type = 'OrderCompleted' AND jsonb_typeof(p.data -> 'total_amount') = 'number'
                THEN (p.data ->> 'total_amount')::numeric END AS amount,
           coalesce(
               p.bytes <= 1048576
               -- the date field
               AND (p.type = 'CustomerTierChanged'
                    OR coalesce(jsonb_typeof(p.dt), 'null') = 'null'
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
                                     >= 1440)))
               -- the other id
               AND (p.type IN ('CustomerCreated', 'CustomerTierChanged')
                    OR (jsonb_typeof(p.other_id) = 'string'
                        AND (p.other_id #>> '{}') <> ''
                        AND octet_length(p.other_id #>> '{}') <= 512)
                    OR (jsonb_typeof(p.other_id) = 'number'
                        AND p.other_id::text ~ '^-?[0-9]{1,19}$'
                        AND (p.other_id::text)::numeric
                            BETWEEN -9223372036854775808 AND 9223372036854775807))
               -- the rest, by type
               AND CASE p.type
                       WHEN 'CustomerCreated' THEN
                           coalesce(jsonb_typeof(p.data -> 'email'), 'null') = 'null'
                           OR (jsonb_typeof(p.data -> 'email') = 'string'
                               AND octet_length(p.data ->> 'email') <= 32766)
                       WHEN 'OrderCompleted' THEN
                           jsonb_typeof(p.data -> 'total_amount') = 'number'
                       WHEN 'ReviewSubmitted' THEN
                           jsonb_typeof(p.data -> 'rating') = 'number'
                           AND (p.data -> 'rating')::text IN ('1', '2', '3', '4', '5')
                       ELSE -- CustomerTierChanged
                           jsonb_typeof(p.data -> 'new_tier') = 'string'
                           AND (p.data ->> 'new_tier') <> ''
                           AND octet_length(p.data ->> 'new_tier') <= 32766
                           AND coalesce(jsonb_typeof(p.data -> 'changed_at'), 'null') IN ('string', 'null')
                   END
               AND (p.type <> 'CustomerCreated'
                    OR coalesce(jsonb_typeof(p.data -> 'name'), 'null') IN ('string', 'null')),
               false) AS shape_ok
      FROM parts p
),
judged AS (
    SELECT c.*,
           c.shape_ok AND (c.type <> 'OrderCompleted'
                           OR coalesce(c.amount >= 0
                                       AND c.amount < 1e13
                                       AND c.amount = round(c.amount, 2), false)) AS ok
      FROM checked c
),
-- the first dead letter of each customer: it holds the customer back
first_bad AS (
    SELECT DISTINCT ON (id) id, txid, pos
      FROM judged
     WHERE NOT ok
     ORDER BY id, txid, pos
),
-- the events that count: valid, and before the customer's first dead letter
valid AS (
    SELECT j.*
      FROM judged j
      LEFT JOIN first_bad f ON f.id = j.id
     WHERE j.ok
       AND (f.id IS NULL OR (j.txid, j.pos) < (f.txid, f.pos))
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
