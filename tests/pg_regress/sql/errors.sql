-- Bad input: each case fails with a precise SQLSTATE and leaves nothing behind.
BEGIN;
INSERT INTO attribution_tenants (id, name) VALUES ('a0000000-0000-4000-8000-000000000001', 'acme');

SELECT regress.try($$SELECT schedule_recompute_window(NULL, '2026-03-01', '2026-03-02')$$);
SELECT regress.try($$SELECT schedule_recompute_window('a0000000-0000-4000-8000-000000000001', '2026-03-02', '2026-03-01')$$);
SELECT regress.try($$SELECT schedule_recompute_window('a0000000-0000-4000-8000-000000000001', '2026-03-01', '2026-05-01')$$);
SELECT regress.try($$SELECT schedule_recompute_window('a0000000-0000-4000-8000-000000000001', '-infinity', '2026-03-01')$$);
SELECT regress.try($$SELECT schedule_recompute_window('b0000000-0000-4000-8000-000000000009', '2026-03-01', '2026-03-02')$$);
SELECT regress.try($$SELECT schedule_recompute_window('a0000000-0000-4000-8000-000000000001', '2026-03-01', '2026-03-02', NULL, '9.9.9')$$);
SELECT regress.try($$SELECT schedule_recompute_window('a0000000-0000-4000-8000-000000000001', '2026-03-01', '2026-03-02', repeat('x', 200))$$);
SELECT regress.try($$SELECT schedule_recompute_window('a0000000-0000-4000-8000-000000000001', '2026-03-01', '2026-03-02', E'line\nbreak')$$);
SELECT regress.try($$SELECT * FROM compute_allocations('a0000000-0000-4000-8000-000000000001', '2026-03-01', '2026-03-02', NULL)$$);
SELECT regress.try($$SELECT attribution_split_cents(1, ARRAY[2, -1])$$);

-- Events the table refuses.
SELECT regress.try($$INSERT INTO attribution_events VALUES ('e0000000-0000-4000-8000-000000000001', 'a0000000-0000-4000-8000-000000000001', now(), 1000000000000001, '{}')$$);
SELECT regress.try($$INSERT INTO attribution_events VALUES ('e0000000-0000-4000-8000-000000000001', 'a0000000-0000-4000-8000-000000000001', now(), 1, '"just a string"')$$);
SELECT regress.try($$INSERT INTO attribution_events VALUES ('e0000000-0000-4000-8000-000000000001', 'a0000000-0000-4000-8000-000000000001', now(), 1, '{not json')$$);
SELECT regress.try($$INSERT INTO attribution_events VALUES ('e0000000-0000-4000-8000-000000000001', 'b0000000-0000-4000-8000-000000000009', now(), 1, '{}')$$);

-- Valid timestamps whose window would end past the last one Postgres can store.
SELECT regress.try($$INSERT INTO attribution_events VALUES ('e0000000-0000-4000-8000-000000000001', 'a0000000-0000-4000-8000-000000000001', '294247-01-11', 1, '{}')$$);
SELECT regress.try($$INSERT INTO attribution_events VALUES ('e0000000-0000-4000-8000-000000000001', 'a0000000-0000-4000-8000-000000000001', '294276-12-31 12:00Z', 1, '{}')$$);

-- A malformed tenant context.
SELECT set_config('attribution.tenant_id', 'not-a-uuid', true);
SELECT regress.try($$SELECT schedule_recompute_window('a0000000-0000-4000-8000-000000000001', '2026-03-01', '2026-03-02')$$);
SELECT set_config('attribution.tenant_id', '', true);

-- Acting for another tenant than the transaction's context.
SELECT set_config('attribution.tenant_id', 'b0000000-0000-4000-8000-000000000009', true);
SELECT regress.try($$SELECT * FROM compute_allocations('a0000000-0000-4000-8000-000000000001', '2026-03-01', '2026-03-02')$$);
SELECT set_config('attribution.tenant_id', '', true);

-- Nothing half-written.
SELECT (SELECT count(*) FROM attribution_recompute_jobs) AS jobs,
       (SELECT count(*) FROM attribution_events) AS events;
ROLLBACK;
