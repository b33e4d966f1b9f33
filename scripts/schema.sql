SET client_min_messages = warning;
-- The event store contract (see README.md, "The event store").
-- Idempotent: scripts/services applies it at every start.
--
-- global_position is handed out at insert, not at commit, so readers must
-- not rely on it alone: transaction_id (xid8, never reused) lets a reader
-- take events in commit-safe order below pg_snapshot_xmin().

CREATE TABLE IF NOT EXISTS public.events (
    global_position bigserial   PRIMARY KEY,
    stream_id       text        NOT NULL,
    event_type      text        NOT NULL,
    data            jsonb       NOT NULL,
    version         int         NOT NULL,
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (stream_id, version)
);

-- The bridge's reads: WHERE (transaction_id, global_position) > (...) ORDER BY both.
CREATE INDEX IF NOT EXISTS events_commit_order ON public.events (transaction_id, global_position);

-- Wake the bridge once per inserting statement; the payload is unused (the
-- bridge re-reads from its checkpoint, NOTIFY is only a wake-up).
CREATE OR REPLACE FUNCTION public.events_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('esbridge_events', '');
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS events_notify ON public.events;
CREATE TRIGGER events_notify AFTER INSERT ON public.events
    FOR EACH STATEMENT EXECUTE FUNCTION public.events_notify();
