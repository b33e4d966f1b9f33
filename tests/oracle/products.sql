-- The products oracle: an independent fold of the events table, written
-- from the projection rules (not from esbridge's output).
--
-- Returns one row (id text, doc jsonb) per product document that must exist
-- behind the alias `products` once the bridge has caught up.
--
-- Rules:
--   * only ProductCreated, ProductUpdated, ProductPriceChanged and
--     ProductDeleted are read, in (transaction_id, global_position) order;
--   * _id = product_id: a non-empty string of at most 512 bytes, or an
--     integer (its text); anything else is a dead letter;
--   * events of other types, even in a product- stream, change nothing
--     (the bridge dead-letters those of product- streams, naming no
--     document, which holds nothing back);
--   * events that fail validation are dead letters and change nothing:
--       Created:      name string (required), price money (required),
--                     description, category, created_at: string or null,
--                     tags: array of strings or null;
--       Updated:      name string (if present, not null), description,
--                     category, updated_at: string or null,
--                     tags: array of strings or null;
--       PriceChanged: new_price money (required), changed_at string or null;
--       Deleted:      product_id only;
--     money: a JSON number with at most two decimals (trailing zeros
--     allowed), below 10^13 in absolute value (a negative price is
--     accepted, as it always was); an event whose data (as text) is above
--     1 MiB (the default max-event-bytes) is a dead letter too; (strings the
--     index refuses as dates are not modelled: the tests stay away from them);
--   * hold-back: the first dead letter of a product (an event whose
--     product_id could be read and that is invalid, in (transaction_id,
--     global_position) order) holds the product back: none of its later
--     events counts, valid or not (they are 'held' letters until the
--     letter is retried or discarded; a discarded letter is modelled by
--     leaving its event out of the table read here);
--   * the last Created or Deleted of a product is its boundary: a Created
--     boundary gives the base document {product_id, and the present fields
--     among name, description, category, price, tags, created_at}; a Deleted
--     boundary (or none) gives no base;
--   * every valid Updated / PriceChanged after the boundary is a patch
--     {product_id, present fields} (PriceChanged: price = new_price,
--     price_updated_at = changed_at), merged in order (top-level keys, the
--     later value wins), as an upsert: patches without a base make a partial
--     document;
--   * a product whose boundary is a Deleted and that has no later patch has
--     no document.
--
-- The merge of flat patches with `||` in order is "for each key, the value
-- of the last patch holding it", which is what the DISTINCT ON below takes.
-- One statement, no helper objects: the harness wraps it in a temp view.
WITH ev AS (
    SELECT e.transaction_id AS txid,
           e.global_position AS pos,
           e.event_type AS type,
           e.data,
           CASE
               WHEN jsonb_typeof(e.data) <> 'object' THEN NULL
               WHEN jsonb_typeof(e.data -> 'product_id') = 'string'
                    AND (e.data ->> 'product_id') <> ''
                    AND octet_length(e.data ->> 'product_id') <= 512
                   THEN e.data ->> 'product_id'
               WHEN jsonb_typeof(e.data -> 'product_id') = 'number'
                    AND (e.data -> 'product_id')::text ~ '^-?[0-9]{1,19}$'
                    AND ((e.data -> 'product_id')::text)::numeric
                        BETWEEN -9223372036854775808 AND 9223372036854775807
                   THEN (e.data -> 'product_id')::text
           END AS id,
           octet_length(e.data::text) AS bytes
      FROM public.events e
     WHERE e.event_type IN ('ProductCreated', 'ProductUpdated',
                            'ProductPriceChanged', 'ProductDeleted')
),
-- (key, type, required, nullable) rules of each event type
rule(type, key, kind, required, nullable) AS (
    VALUES ('ProductCreated',      'name',        'string', true,  false),
           ('ProductCreated',      'description', 'string', false, true),
           ('ProductCreated',      'category',    'string', false, true),
           ('ProductCreated',      'price',       'money',  true,  false),
           ('ProductCreated',      'tags',        'strings', false, true),
           ('ProductCreated',      'created_at',  'string', false, true),
           ('ProductUpdated',      'name',        'string', false, false),
           ('ProductUpdated',      'description', 'string', false, true),
           ('ProductUpdated',      'category',    'string', false, true),
           ('ProductUpdated',      'tags',        'strings', false, true),
           ('ProductUpdated',      'updated_at',  'string', false, true),
           ('ProductPriceChanged', 'new_price',   'money',  true,  false),
           ('ProductPriceChanged', 'changed_at',  'string', false, true)
),
-- per event with a readable id: does it pass the rules?
checked AS (
    SELECT ev.*,
           ev.bytes <= 1048576
           AND NOT EXISTS (
           SELECT 1
             FROM rule r
            WHERE r.type = ev.type
              AND CASE
                      WHEN NOT (ev.data ? r.key) THEN r.required
                      WHEN jsonb_typeof(ev.data -> r.key) = 'null' THEN NOT r.nullable
                      WHEN r.kind = 'strings' THEN
                          jsonb_typeof(ev.data -> r.key) <> 'array'
                          OR EXISTS (SELECT 1
                                       FROM jsonb_array_elements(ev.data -> r.key) x
                                      WHERE jsonb_typeof(x) <> 'string')
                      WHEN r.kind = 'money' THEN
                          -- nested: the cast only sees numbers
                          CASE WHEN jsonb_typeof(ev.data -> r.key) <> 'number' THEN true
                               ELSE (ev.data ->> r.key)::numeric
                                       <> round((ev.data ->> r.key)::numeric, 2)
                                    OR abs((ev.data ->> r.key)::numeric) >= 1e13
                          END
                      ELSE jsonb_typeof(ev.data -> r.key) <> r.kind
                  END) AS ok
      FROM ev
     WHERE ev.id IS NOT NULL
),
-- the first dead letter of each product: it holds the product back
first_bad AS (
    SELECT DISTINCT ON (id) id, txid, pos
      FROM checked
     WHERE NOT ok
     ORDER BY id, txid, pos
),
-- the events that count: valid, and before the product's first dead letter
valid AS (
    SELECT c.txid, c.pos, c.type, c.data, c.id
      FROM checked c
      LEFT JOIN first_bad f ON f.id = c.id
     WHERE c.ok
       AND (f.id IS NULL OR (c.txid, c.pos) < (f.txid, f.pos))
),
boundary AS (
    SELECT DISTINCT ON (id) id, txid, pos, type, data
      FROM valid
     WHERE type IN ('ProductCreated', 'ProductDeleted')
     ORDER BY id, txid DESC, pos DESC
),
-- the fields each event writes, as (doc key, value)
writes AS (
    -- the base document of a Created boundary
    SELECT b.id, b.txid, b.pos, kv.key, kv.value
      FROM boundary b
     CROSS JOIN LATERAL jsonb_each(b.data) kv
     WHERE b.type = 'ProductCreated'
       AND kv.key IN ('product_id', 'name', 'description', 'category', 'price',
                      'tags', 'created_at')
    UNION ALL
    -- the patches after the boundary
    SELECT v.id, v.txid, v.pos, w.key, w.value
      FROM valid v
      LEFT JOIN boundary b ON b.id = v.id
     CROSS JOIN LATERAL (
           SELECT kv.key, kv.value
             FROM jsonb_each(v.data) kv
            WHERE v.type = 'ProductUpdated'
              AND kv.key IN ('product_id', 'name', 'description', 'category',
                             'tags', 'updated_at')
           UNION ALL
           SELECT m.doc_key, v.data -> m.event_key
             FROM (VALUES ('product_id', 'product_id'),
                          ('new_price', 'price'),
                          ('changed_at', 'price_updated_at')) m(event_key, doc_key)
            WHERE v.type = 'ProductPriceChanged'
              AND v.data ? m.event_key
     ) w
     WHERE v.type IN ('ProductUpdated', 'ProductPriceChanged')
       AND (b.id IS NULL OR (v.txid, v.pos) > (b.txid, b.pos))
),
last_write AS (
    SELECT DISTINCT ON (id, key) id, key, value
      FROM writes
     ORDER BY id, key, txid DESC, pos DESC
)
SELECT id, jsonb_object_agg(key, value) AS doc
  FROM last_write
 GROUP BY id
