-- Sample product events for `make demo`: a small catalogue with updates,
-- price changes, a deletion and a re-creation.
INSERT INTO events (stream_id, event_type, data, version) VALUES
('product-p1', 'ProductCreated', '{"product_id":"p1","name":"Walnut desk lamp","description":"Warm light, brass switch","category":"Lighting","price":49.90,"tags":["lamp","walnut"],"created_at":"2026-11-01T09:00:00Z"}', 1),
('product-p2', 'ProductCreated', '{"product_id":"p2","name":"Linen armchair","description":"Oak frame, linen cover","category":"Furniture","price":349.00,"tags":["chair","linen"],"created_at":"2026-11-01T09:05:00Z"}', 1),
('product-p3', 'ProductCreated', '{"product_id":"p3","name":"Ceramic mug","description":"Stoneware, 350 ml","category":"Kitchen","price":12.50,"tags":["mug"],"created_at":"2026-11-01T09:10:00Z"}', 1),
('product-p1', 'ProductPriceChanged', '{"product_id":"p1","new_price":44.90,"changed_at":"2026-11-10T12:00:00Z"}', 2),
('product-p2', 'ProductUpdated', '{"product_id":"p2","name":"Linen armchair, natural","description":"Oak frame, washed linen cover","category":"Furniture","tags":["chair","linen","natural"],"updated_at":"2026-11-12T08:30:00Z"}', 2),
('product-p3', 'ProductDeleted', '{"product_id":"p3"}', 2),
('product-p3', 'ProductCreated', '{"product_id":"p3","name":"Ceramic mug, large","description":"Stoneware, 500 ml","category":"Kitchen","price":14.00,"tags":["mug","large"],"created_at":"2026-11-20T10:00:00Z"}', 3),
('product-p4', 'ProductCreated', '{"product_id":"p4","name":"Brass floor lamp","description":"Adjustable arm","category":"Lighting","price":189.00,"tags":["lamp","brass"],"created_at":"2026-11-21T10:00:00Z"}', 1);
