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
--   * events that fail validation are dead letters and change nothing:
--       Created:      name string (required), price number (required),
--                     description, category, created_at: string or null,
--                     tags: array of strings or null;
--       Updated:      name string (if present, not null), description,
--                     category, updated_at: string or null,
--                     tags: array of strings or null;
--       PriceChanged: new_price number (required), changed_at string or null;
--       Deleted:      product_id only;
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
                        BETWEEN -9223372036854775807 AND 9223372036854775807
                   THEN (e.data -> 'product_id')::text
           END AS id
      FROM public.events e
     WHERE e.event_type IN ('ProductCreated', 'ProductUpdated',
                            'ProductPriceChanged', 'ProductDeleted')
),
-- (key, type, required, nullable) rules of each event type
rule(type, key, kind, required, nullable) AS (
    VALUES ('ProductCreated',      'name',        'string', true,  false),
           ('ProductCreated',      'description', 'string', false, true),
           ('ProductCreated',      'category',    'string', false, true),
           ('ProductCreated',      'price',       'number', true,  false),
           ('ProductCreated',      'tags',        'strings', false, true),
           ('ProductCreated',      'created_at',  'string', false, true),
           ('ProductUpdated',      'name',        'string', false, false),
           ('ProductUpdated',      'description', 'string', false, true),
           ('ProductUpdated',      'category',    'string', false, true),
           ('ProductUpdated',      'tags',        'strings', false, true),
           ('ProductUpdated',      'updated_at',  'string', false, true),
           ('ProductPriceChanged', 'new_price',   'number', true,  false),
           ('ProductPriceChanged', 'changed_at',  'string', false, true)
),
valid AS (
    SELECT ev.*
      FROM ev
     WHERE ev.id IS NOT NULL
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
                      ELSE jsonb_typeof(ev.data -> r.key) <> r.kind
                  END)
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
