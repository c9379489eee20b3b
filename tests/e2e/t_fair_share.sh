# Fair share: one tenant's backlog does not queue another tenant's job behind it. The
# workers go round the tenants with runnable jobs, so tenant B's single new event is
# allocated while tenant A's 3,000-job backlog is still almost all pending.
# (The latency figures are in bench/run.sh; this only pins the order.)

sql -c "$(tenants_sql)" >/dev/null
# One transaction, so that no worker starts before both tenants' jobs are there; A's
# backlog is made older than B's job, as if it had waited an hour (the order the
# workers took before fair share: oldest first).
sql >/dev/null <<'SQL'
BEGIN;
INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents)
SELECT gen_random_uuid(), 'aaaaaaaa-0000-4000-8000-000000000001', timestamptz '2000-01-01 12:00Z' + g * interval '1 day', g
  FROM generate_series(1, 3000) g;
UPDATE attribution_recompute_jobs SET run_after = now() - interval '1 hour', enqueued_at = now() - interval '1 hour'
 WHERE tenant_id = 'aaaaaaaa-0000-4000-8000-000000000001';
INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents)
VALUES (gen_random_uuid(), 'bbbbbbbb-0000-4000-8000-000000000002', '2026-05-01 12:00Z', 100);
COMMIT;
SQL
wait_for 10 "SELECT status = 'succeeded' FROM attribution_recompute_jobs WHERE tenant_id = 'bbbbbbbb-0000-4000-8000-000000000002'"
done_before_b=$(sql -c "SELECT count(*) FROM attribution_recompute_jobs a, attribution_recompute_jobs b
                         WHERE a.tenant_id = 'aaaaaaaa-0000-4000-8000-000000000001'
                           AND b.tenant_id = 'bbbbbbbb-0000-4000-8000-000000000002'
                           AND a.started_at < b.started_at")
[ "$done_before_b" -le 4 ] || fail "tenant B's job waited behind $done_before_b of tenant A's jobs"
echo "  ok: tenant B's job started after only $done_before_b of tenant A's 3,000 jobs"
wait_for_drain 60
assert_eq "$(events_off_by_a_cent)" 0 "and A's backlog drains, every cent allocated"
