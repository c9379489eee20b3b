-- The README's walkthrough: register a tenant, insert events the way the old system did,
-- see the windows the trigger scheduled, compute them, and check every cent.
BEGIN;
INSERT INTO attribution_tenants (id, name)
VALUES ('a0000000-0000-4000-8000-000000000001', 'acme');

INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents, raw_payload) VALUES
    ('e0000000-0000-4000-8000-000000000001', 'a0000000-0000-4000-8000-000000000001',
     CAST('2026-03-01T09:30:00+00:00' AS timestamptz), 100, '{}'::jsonb),
    ('e0000000-0000-4000-8000-000000000002', 'a0000000-0000-4000-8000-000000000001',
     CAST('2026-03-01T23:59:59+00:00' AS timestamptz), 101, '{}'::jsonb),
    ('e0000000-0000-4000-8000-000000000003', 'a0000000-0000-4000-8000-000000000001',
     CAST('2026-03-02T00:00:00+00:00' AS timestamptz), -50, '{"refund": true}'::jsonb)
ON CONFLICT DO NOTHING;

-- One job per (tenant, UTC day, active model), not one per row.
SELECT window_start AT TIME ZONE 'UTC' AS window_start_utc,
       window_end AT TIME ZONE 'UTC' AS window_end_utc,
       model_version, status, run_count, attempts, rerun_requested
  FROM attribution_recompute_jobs ORDER BY window_start;

-- The INSERT allocated its events itself (attribution.allocate_on_insert), so
-- computing both days again synchronously finds nothing to write.
SELECT * FROM compute_allocations('a0000000-0000-4000-8000-000000000001',
                                  '2026-03-01T00:00:00Z', '2026-03-02T00:00:00Z');
SELECT * FROM compute_allocations('a0000000-0000-4000-8000-000000000001',
                                  '2026-03-02T00:00:00Z', '2026-03-03T00:00:00Z');

-- Largest remainder: 100 = 34 + 33 + 33, 101 = 34 + 34 + 33, -50 = -17 - 17 - 16.
SELECT e.revenue_cents, a.channel, a.allocation_ratio, a.allocated_revenue_cents
  FROM attribution_events e
  JOIN attribution_allocations a ON a.tenant_id = e.tenant_id AND a.event_id = e.id
 ORDER BY e.id, a.channel;

-- Running it again writes nothing.
SELECT * FROM compute_allocations('a0000000-0000-4000-8000-000000000001',
                                  '2026-03-01T00:00:00Z', '2026-03-02T00:00:00Z');

-- Scheduling the same window while its job is pending returns the same job.
SELECT schedule_recompute_window('a0000000-0000-4000-8000-000000000001',
                                 '2026-03-01T00:00:00Z', '2026-03-02T00:00:00Z', 'req-1')
     = schedule_recompute_window('a0000000-0000-4000-8000-000000000001',
                                 '2026-03-01T00:00:00Z', '2026-03-02T00:00:00Z', 'req-2')
       AS same_job;
SELECT count(*) AS jobs, max(last_correlation_id) AS last_correlation_id
  FROM attribution_recompute_jobs
 WHERE window_start = '2026-03-01T00:00:00Z';

-- The pure split, callable on its own.
SELECT attribution_split_cents(100, ARRAY[1, 1, 1]) AS thirds,
       attribution_split_cents(7, ARRAY[3, 1]) AS three_to_one,
       attribution_split_cents(-9223372036854775808, ARRAY[1, 1, 1]) AS bigint_min;
ROLLBACK;
