-- Row-level security as a DBA would check it: an application role sees and writes only
-- the tenant named by attribution.tenant_id, and nothing without it.
BEGIN;
INSERT INTO attribution_tenants (id, name) VALUES
    ('a0000000-0000-4000-8000-000000000001', 'acme'),
    ('b0000000-0000-4000-8000-000000000002', 'globex');
INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents) VALUES
    ('e0000000-0000-4000-8000-00000000000a', 'a0000000-0000-4000-8000-000000000001', '2026-03-01T10:00Z', 300),
    ('e0000000-0000-4000-8000-00000000000b', 'b0000000-0000-4000-8000-000000000002', '2026-03-01T10:00Z', 900);
-- (Already allocated by the INSERT: the computations find nothing to write.)
SELECT event_count, allocation_count FROM compute_allocations('a0000000-0000-4000-8000-000000000001', '2026-03-01Z', '2026-03-02Z');
SELECT event_count, allocation_count FROM compute_allocations('b0000000-0000-4000-8000-000000000002', '2026-03-01Z', '2026-03-02Z');

CREATE ROLE regress_app NOLOGIN;
GRANT attribution_app TO regress_app;
SET LOCAL ROLE regress_app;

-- No tenant context: nothing is visible.
SELECT count(*) AS events_without_context FROM attribution_events;

SELECT set_config('attribution.tenant_id', 'a0000000-0000-4000-8000-000000000001', true);
SELECT name FROM attribution_tenants;
SELECT revenue_cents FROM attribution_events;
SELECT count(*) AS allocations, sum(allocated_revenue_cents) AS cents FROM attribution_allocations;
SELECT count(*) AS jobs FROM attribution_recompute_jobs WHERE tenant_id <> 'a0000000-0000-4000-8000-000000000001';

-- Writing as the other tenant is refused; updating its rows touches nothing.
SELECT regress.try($$INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents) VALUES ('e0000000-0000-4000-8000-00000000000c', 'b0000000-0000-4000-8000-000000000002', now(), 1)$$);
UPDATE attribution_events SET revenue_cents = 0 WHERE id = 'e0000000-0000-4000-8000-00000000000b';
SELECT regress.try($$SELECT schedule_recompute_window('b0000000-0000-4000-8000-000000000002', '2026-03-01', '2026-03-02')$$);

-- The queue, the dead letters and the allocations are the extension's: an application
-- role reads them and changes them only through the functions.
SELECT regress.try($$UPDATE attribution_recompute_jobs SET run_count = 2147483647$$);
SELECT regress.try($$INSERT INTO attribution_recompute_jobs (tenant_id, window_start, window_end, model_version, last_correlation_id) VALUES ('a0000000-0000-4000-8000-000000000001', '-infinity', 'infinity', '1.0.0', 'x')$$);
SELECT regress.try($$DELETE FROM attribution_allocations$$);
SELECT regress.try($$UPDATE worker_failed_jobs SET redriven_at = now()$$);
SELECT regress.try($$LOCK TABLE attribution_recompute_jobs IN ACCESS EXCLUSIVE MODE$$);
SELECT regress.try($$SELECT id FROM attribution_recompute_jobs FOR UPDATE$$);
-- Event ids are per tenant: acme may use an id globex already has.
INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents, raw_payload)
VALUES ('e0000000-0000-4000-8000-00000000000b', 'a0000000-0000-4000-8000-000000000001', '2026-03-01T11:00Z', 5, '{}')
ON CONFLICT DO NOTHING;
SELECT revenue_cents FROM attribution_events ORDER BY revenue_cents;

RESET ROLE;
SELECT revenue_cents AS globex_revenue_untouched FROM attribution_events
 WHERE id = 'e0000000-0000-4000-8000-00000000000b' AND tenant_id = 'b0000000-0000-4000-8000-000000000002';

-- FORCE ROW LEVEL SECURITY is on for every tenant table.
SELECT relname, relrowsecurity, relforcerowsecurity
  FROM pg_class
 WHERE relname IN ('attribution_tenants', 'attribution_events', 'attribution_allocations',
                   'attribution_recompute_jobs', 'worker_failed_jobs')
 ORDER BY relname;
ROLLBACK;
