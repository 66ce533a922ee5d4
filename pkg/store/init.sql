-- The one schema of the callback service. docker-compose mounts this file into
-- PostgreSQL's init directory, and the service embeds it and runs it at every
-- start, so it must stay idempotent.
--
-- objects holds every object that was online when it was last looked up, with
-- the time the service received the newest callback that named it. Rows whose
-- last_seen is older than the TTL (30 s by default) are deleted by the sweeper.
--
-- There is deliberately no index on last_seen: every callback rewrites
-- last_seen, and an index on it would turn each of those updates into a
-- non-HOT update that writes two index entries and bloats both indexes. The
-- sweeper's sequential scan of a table this size costs less (see docs/design.md,
-- "Why no index on last_seen"). fillfactor 70 leaves room on each page so the
-- updates stay HOT.
CREATE TABLE IF NOT EXISTS objects (
    id        BIGINT      PRIMARY KEY,
    last_seen TIMESTAMPTZ NOT NULL
) WITH (fillfactor = 70);
