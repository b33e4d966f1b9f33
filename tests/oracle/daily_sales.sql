-- The daily_sales oracle: an independent fold of the events table, written
-- from the projection rules in README.md ("Event schemas" -> daily_sales,
-- "Dead letters"), not from esbridge's output.
--
-- Returns one row (id text, doc jsonb) per day document that must exist
-- behind the alias `daily_sales` once the bridge has caught up.
--
-- Rules:
--   * only OrderCompleted and OrderRefunded are read, in (transaction_id,
--     global_position) order (the xid8 values, never their text);
--   * the day of an event: its completed_at (OrderCompleted) or
--     original_completed_at (OrderRefunded), a string YYYY-MM-DD optionally
--     followed by THH:MM, :SS, .fraction (1 to 9 digits) and a zone Z or
--     +HH:MM/-HH:MM, every part in range (month 1-12, a day of that month,
--     hour 0-23, minute 0-59, second 0-59, offset minutes 0-59 and at most
--     18:00 in all), taken in UTC from the date, hours, minutes and offset
--     (no zone: UTC; the seconds never move the day); _id = that day as
--     YYYY-MM-DD, between years 1 and 9999 (the rule customers and
--     customer_orders apply to completed_at);
--   * an event whose day cannot be read is a dead letter naming no
--     document: it changes nothing and holds nothing back;
--   * events of a readable day that fail validation are dead letters naming
--     the day:
--       OrderCompleted: total_amount a JSON number, not negative, at most two
--                       decimals (trailing zeros allowed), below 10^13;
--                       item_count a whole number from 0 to 10^9;
--       OrderRefunded:  refund_amount as total_amount;
--     an event whose data (as text) is above 1 MiB (the default
--     max-event-bytes) is one too;
--   * hold-back: the first dead letter naming a day holds the day back: none
--     of its later events counts, valid or not (they are 'held' letters
--     until the letter is retried or discarded; a discarded letter is
--     modelled by leaving its event out of the table read here);
--   * per day, exact numeric sums over the valid events before its hold-back:
--       total_orders  = completions - refunds,
--       total_revenue = sum(total_amount) - sum(refund_amount),
--       total_items   = sum(item_count),
--       total_refunds = sum(refund_amount);
--     date = the day; last_event = {"txid", "position"} of the last of them.
--     A day without such an event has no document.
-- One statement, no helper objects: the harness wraps it in a temp view.
WITH ev AS (
    SELECT e.transaction_id AS txid,
           e.global_position AS pos,
           e.event_type AS type,
           e.data,
           CASE e.event_type WHEN 'OrderCompleted' THEN e.data -> 'completed_at'
                             ELSE e.data -> 'original_completed_at' END AS ts,
           CASE e.event_type WHEN 'OrderCompleted' THEN e.data -> 'total_amount'
                             ELSE e.data -> 'refund_amount' END AS money,
           octet_length(e.data::text) AS bytes
      FROM public.events e
     WHERE e.event_type IN ('OrderCompleted', 'OrderRefunded')
),
-- the parts of the timestamp, as integers (NULL: not a timestamp)
parts AS (
    SELECT ev.*, m[1]::int AS y, m[2]::int AS mo, m[3]::int AS d, coalesce(m[5]::int, 0) AS h,
           coalesce(m[6]::int, 0) AS mi, coalesce(m[8]::int, 0) AS s,
           CASE m[11] WHEN '-' THEN -1 ELSE 1 END * (coalesce(m[12]::int, 0) * 60
                                                    + coalesce(m[13]::int, 0)) AS off,
           m[12]::int AS oh, m[13]::int AS om, m IS NOT NULL AS shaped
      FROM ev
      LEFT JOIN LATERAL (
           SELECT regexp_match(ev.ts #>> '{}',
                  '^([0-9]{4})-([0-9]{2})-([0-9]{2})(T([0-9]{2}):([0-9]{2})(:([0-9]{2})(\.[0-9]{1,9})?)?(Z|([+-])([0-9]{2}):([0-9]{2}))?)?$') AS m
            WHERE jsonb_typeof(ev.data) = 'object'
              AND jsonb_typeof(ev.ts) = 'string') r ON true
),
-- the local date when every part is in range
dated AS (
    SELECT p.*,
           CASE WHEN p.shaped AND p.y >= 1 AND p.mo BETWEEN 1 AND 12 AND p.d >= 1
                     AND p.d <= CASE WHEN p.mo = 2 THEN
                                         CASE WHEN (p.y % 4 = 0 AND p.y % 100 <> 0) OR p.y % 400 = 0
                                              THEN 29 ELSE 28 END
                                     WHEN p.mo IN (4, 6, 9, 11) THEN 30 ELSE 31 END
                     AND p.h <= 23 AND p.mi <= 59 AND p.s <= 59
                     AND coalesce(p.om, 0) <= 59 AND coalesce(p.oh, 0) * 60 + coalesce(p.om, 0) <= 1080
                THEN make_date(p.y, p.mo, p.d)
                     + floor((p.h * 60 + p.mi - p.off) / 1440.0)::int END AS utc
      FROM parts p
),
-- per event: its day (NULL: a letter naming no document) and its validity
judged AS (
    SELECT d.txid, d.pos, d.type,
           CASE WHEN extract(year FROM d.utc) BETWEEN 1 AND 9999
                THEN to_char(d.utc, 'YYYY-MM-DD') END AS day,
           CASE WHEN jsonb_typeof(d.money) = 'number' THEN (d.money #>> '{}')::numeric END AS amount,
           CASE WHEN d.type = 'OrderCompleted'
                     AND jsonb_typeof(d.data -> 'item_count') = 'number'
                     AND (d.data -> 'item_count')::text ~ '^[0-9]{1,10}$'
                THEN ((d.data -> 'item_count')::text)::numeric END AS items,
           d.bytes
      FROM dated d
),
checked AS (
    SELECT j.*,
           coalesce(j.bytes <= 1048576
                    AND j.amount >= 0
                    AND j.amount < 1e13
                    AND j.amount = round(j.amount, 2)
                    AND (j.type = 'OrderRefunded' OR j.items <= 1000000000), false) AS ok
      FROM judged j
     WHERE j.day IS NOT NULL
),
-- the first dead letter of each day: it holds the day back
first_bad AS (
    SELECT DISTINCT ON (day) day, txid, pos
      FROM checked
     WHERE NOT ok
     ORDER BY day, txid, pos
),
-- the events that count: valid, and before the day's first dead letter
valid AS (
    SELECT c.*
      FROM checked c
      LEFT JOIN first_bad f ON f.day = c.day
     WHERE c.ok
       AND (f.day IS NULL OR (c.txid, c.pos) < (f.txid, f.pos))
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
           coalesce(sum(items) FILTER (WHERE type = 'OrderCompleted'), 0) AS items,
           coalesce(sum(amount) FILTER (WHERE type = 'OrderRefunded'), 0) AS refunds
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
