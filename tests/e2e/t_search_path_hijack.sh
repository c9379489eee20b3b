# Search-path hijacking: an application role with CREATE on the extension's schema
# (public) and a schema of its own plants look-alikes of the functions and operators the
# extension's SQL uses, both with the built-ins' own signatures (they win wherever
# pg_catalog comes later in the search_path) and with signatures that match some call
# better than the built-in does (they win even though pg_catalog is searched first:
# unnest(integer[]) over unnest(anyarray), jsonb_build_object(text, uuid, ...) over
# jsonb_build_object(VARIADIC "any"), /(numeric, bigint), ...). Each look-alike behaves
# like the built-in, so a hijacked statement would still succeed and commit, but it
# records who ran it and, when that is not the hostile role itself, raises a WARNING and
# tries to make the hostile role a superuser.
#
# Then every code path runs: a superuser session whose search_path puts the hostile
# schema first, the hostile role itself, the trigger (row and bulk paths, insert, update,
# delete), compute_allocations, schedule_recompute_window, redrive_failed_job, the
# workers' claim, run, retry, dead-lettering and housekeeping. No look-alike may run as
# anyone but the hostile role, and the pipeline must still produce every allocation.
# Last, CREATE EXTENSION and ALTER EXTENSION UPDATE run as a superuser in databases where
# the look-alikes were planted first.
#
# Not covered on purpose: a caller that puts a hostile schema first and then calls the
# extension's functions by unqualified name can be handed a look-alike of
# compute_allocations() itself; that is the caller's search_path, not the extension's SQL.

A=$TENANT_A
B=$TENANT_B
log_start=$(wc -l < "$E2E_DATA/server.log")

admin >/dev/null <<'SQL'
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'e2e_hijacker') THEN
        CREATE ROLE e2e_hijacker LOGIN;
    END IF;
END $$;
ALTER ROLE e2e_hijacker NOSUPERUSER NOBYPASSRLS;
GRANT attribution_app TO e2e_hijacker;
SQL

# plant_traps DB: the hostile role gets CREATE on public and a schema of its own in DB,
# and creates its look-alikes in both.
plant_traps() {
    cluster_psql "$E2E_DATA" "$E2E_PORT" -d "$1" -tA >/dev/null <<'SQL'
GRANT CREATE ON SCHEMA public TO e2e_hijacker;
CREATE SCHEMA hijack AUTHORIZATION e2e_hijacker;
SQL
    "$PG_BIN/psql" -X -q -tA -v ON_ERROR_STOP=1 -h "$E2E_DATA" -p "$E2E_PORT" -U e2e_hijacker -d "$1" >/dev/null <<'SQL'
-- Everyone may record a catch: the workers and superusers are the ones we hope to catch.
CREATE TABLE hijack.caught (what text, run_as name, session_as name, query text);
CREATE TABLE hijack.lookalikes (what text PRIMARY KEY);
GRANT USAGE ON SCHEMA hijack TO PUBLIC;
GRANT INSERT, SELECT ON hijack.caught TO PUBLIC;

CREATE FUNCTION hijack.caught(what text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO hijack.caught VALUES (what, current_user, session_user, current_query());
    IF current_user <> 'e2e_hijacker' THEN
        RAISE WARNING 'e2e look-alike % ran as %', what, current_user;
        BEGIN
            EXECUTE 'ALTER ROLE e2e_hijacker SUPERUSER';
        EXCEPTION WHEN insufficient_privilege THEN NULL;
        END;
    END IF;
END $$;

DO $plant$
DECLARE
    f record;
    s text;
BEGIN
    FOR f IN SELECT * FROM (VALUES
        -- name, arguments, result, body after the catch; same signature as the built-in
        -- unless marked "beats"
        ('unnest', 'a integer[]', 'SETOF integer', 'RETURN QUERY SELECT * FROM pg_catalog.unnest(a)'),      -- beats anyarray
        ('unnest', 'a text[]', 'SETOF text', 'RETURN QUERY SELECT * FROM pg_catalog.unnest(a)'),            -- beats
        ('unnest', 'a uuid[]', 'SETOF uuid', 'RETURN QUERY SELECT * FROM pg_catalog.unnest(a)'),            -- beats
        ('unnest', 'a timestamptz[]', 'SETOF timestamptz', 'RETURN QUERY SELECT * FROM pg_catalog.unnest(a)'), -- beats
        ('unnest', 'a numeric[]', 'SETOF numeric', 'RETURN QUERY SELECT * FROM pg_catalog.unnest(a)'),      -- beats
        ('unnest', 'a bigint[]', 'SETOF bigint', 'RETURN QUERY SELECT * FROM pg_catalog.unnest(a)'),        -- beats
        ('make_interval', 'years int DEFAULT 0, months int DEFAULT 0, weeks int DEFAULT 0, days int DEFAULT 0, hours int DEFAULT 0, mins int DEFAULT 0, secs double precision DEFAULT 0.0',
         'interval', 'RETURN pg_catalog.make_interval(years, months, weeks, days, hours, mins, secs)'),
        ('make_interval', 'years int DEFAULT 0, months int DEFAULT 0, weeks int DEFAULT 0, days int DEFAULT 0, hours int DEFAULT 0, mins int DEFAULT 0, secs bigint DEFAULT 0',
         'interval', 'RETURN pg_catalog.make_interval(years, months, weeks, days, hours, mins, secs::float8)'), -- beats for a bigint
        ('date_bin', 's interval, t timestamptz, o timestamptz', 'timestamptz', 'RETURN pg_catalog.date_bin(s, t, o)'),
        ('date_bin', 's interval, t timestamptz, o text', 'timestamptz', 'RETURN pg_catalog.date_bin(s, t, o::timestamptz)'), -- beats for a literal origin
        ('jsonb_build_object', 'k1 text, v1 uuid, k2 text, v2 timestamptz, k3 text, v3 timestamptz, k4 text, v4 text, k5 text, v5 text',
         'jsonb', 'RETURN pg_catalog.jsonb_build_object(k1, v1, k2, v2, k3, v3, k4, v4, k5, v5)'),       -- beats VARIADIC "any"
        ('jsonb_typeof', 'j jsonb', 'text', 'RETURN pg_catalog.jsonb_typeof(j)'),
        ('current_setting', 'n text', 'text', 'RETURN pg_catalog.current_setting(n)'),
        ('current_setting', 'n text, missing_ok boolean', 'text', 'RETURN pg_catalog.current_setting(n, missing_ok)'),
        ('set_config', 'n text, v text, is_local boolean', 'text', 'RETURN pg_catalog.set_config(n, v, is_local)'),
        ('gen_random_uuid', '', 'uuid', 'RETURN pg_catalog.gen_random_uuid()'),
        ('now', '', 'timestamptz', 'RETURN pg_catalog.now()'),
        ('clock_timestamp', '', 'timestamptz', 'RETURN pg_catalog.clock_timestamp()'),
        ('pg_backend_pid', '', 'integer', 'RETURN pg_catalog.pg_backend_pid()'),
        ('pg_postmaster_start_time', '', 'timestamptz', 'RETURN pg_catalog.pg_postmaster_start_time()'),
        ('isfinite', 't timestamptz', 'boolean', 'RETURN pg_catalog.isfinite(t)'),
        ('round', 'v numeric, s integer', 'numeric', 'RETURN pg_catalog.round(v, s)'),
        ('length', 't text', 'integer', 'RETURN pg_catalog.length(t)'),
        ('quote_ident', 't text', 'text', 'RETURN pg_catalog.quote_ident(t)'),
        ('cardinality', 'a text[]', 'integer', 'RETURN pg_catalog.cardinality(a)'),                          -- beats anyarray
        ('cardinality', 'a integer[]', 'integer', 'RETURN pg_catalog.cardinality(a)'),                       -- beats
        ('array_position', 'a text[], e text', 'integer', 'RETURN pg_catalog.array_position(a, e)'),         -- beats anycompatible
        ('array_position', 'a integer[], e integer', 'integer', 'RETURN pg_catalog.array_position(a, e)'),   -- beats
        -- what 0.1.0 locked windows with
        ('hashtextextended', 't text, seed bigint', 'bigint', 'RETURN pg_catalog.hashtextextended(t, seed)'),
        ('pg_advisory_xact_lock', 'k bigint', 'void', 'PERFORM pg_catalog.pg_advisory_xact_lock(k)'),
        ('pg_advisory_xact_lock_shared', 'k bigint', 'void', 'PERFORM pg_catalog.pg_advisory_xact_lock_shared(k)')
    ) v(name, args, result, body) LOOP
        INSERT INTO hijack.lookalikes VALUES (f.name || '(' || f.args || ')');
        FOREACH s IN ARRAY ARRAY['hijack', 'public'] LOOP
            EXECUTE format('CREATE FUNCTION %I.%I(%s) RETURNS %s LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS %L',
                           s, f.name, f.args, f.result,
                           format('BEGIN PERFORM hijack.caught(%L); %s; END', f.name || '(' || f.args || ')', f.body));
        END LOOP;
    END LOOP;

    FOR f IN SELECT row_number() OVER () AS n, * FROM (VALUES
        ('||', 'text', 'text', 'text', 'a OPERATOR(pg_catalog.||) b'),
        ('||', 'text', 'bigint', 'text', 'a OPERATOR(pg_catalog.||) b::text'),          -- beats anynonarray
        ('=', 'text', 'text', 'boolean', 'a OPERATOR(pg_catalog.=) b'),
        ('<>', 'text', 'text', 'boolean', 'a OPERATOR(pg_catalog.<>) b'),
        ('~', 'text', 'text', 'boolean', 'a OPERATOR(pg_catalog.~) b'),
        ('!~', 'text', 'text', 'boolean', 'a OPERATOR(pg_catalog.!~) b'),
        ('<', 'timestamptz', 'timestamptz', 'boolean', 'a OPERATOR(pg_catalog.<) b'),
        ('<=', 'timestamptz', 'timestamptz', 'boolean', 'a OPERATOR(pg_catalog.<=) b'),
        ('>=', 'timestamptz', 'timestamptz', 'boolean', 'a OPERATOR(pg_catalog.>=) b'),
        ('>', 'uuid', 'uuid', 'boolean', 'a OPERATOR(pg_catalog.>) b'),
        ('=', 'uuid', 'uuid', 'boolean', 'a OPERATOR(pg_catalog.=) b'),
        ('/', 'numeric', 'bigint', 'numeric', 'a OPERATOR(pg_catalog./) b::numeric'),   -- beats numeric / numeric
        ('->>', 'jsonb', 'text', 'text', 'a OPERATOR(pg_catalog.->>) b')
    ) v(op, l, r, result, body) LOOP
        INSERT INTO hijack.lookalikes VALUES (f.op || '(' || f.l || ', ' || f.r || ')');
        EXECUTE format('CREATE FUNCTION hijack.%I(a %s, b %s) RETURNS %s LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS %L',
                       'op_' || f.n, f.l, f.r, f.result,
                       format('BEGIN PERFORM hijack.caught(%L); RETURN %s; END', f.op || '(' || f.l || ', ' || f.r || ')', f.body));
        FOREACH s IN ARRAY ARRAY['hijack', 'public'] LOOP
            EXECUTE format('CREATE OPERATOR %I.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = hijack.%I)',
                           s, f.op, f.l, f.r, 'op_' || f.n);
        END LOOP;
    END LOOP;
END $plant$;
SQL
}

# The hostile role, search_path with its schema first and pg_catalog last (so that even
# the same-signature look-alikes win in its own statements), acting for tenant A.
as_hijacker() {
    PGOPTIONS="-c search_path=hijack,public,pg_catalog" "$PG_BIN/psql" -X -q -tA -v ON_ERROR_STOP=1 \
        -h "$E2E_DATA" -p "$E2E_PORT" -U e2e_hijacker -d "$E2E_DB" -c "SET attribution.tenant_id = '$A'" "$@"
}
# A superuser whose search_path puts the hostile schema first (pg_catalog is searched
# before it implicitly, so only the better-matching look-alikes can win here).
as_victim() { PGOPTIONS="-c search_path=hijack,public" sql "$@"; }
# Look-alikes that ran as someone other than the hostile role.
escalations() {
    sql -c "SELECT count(*) FROM hijack.caught WHERE run_as <> 'e2e_hijacker'"
}
show_escalations() {
    sql -c "SELECT what || ' ran as ' || run_as || ' in: ' || left(regexp_replace(query, '\s+', ' ', 'g'), 200)
              FROM hijack.caught WHERE run_as <> 'e2e_hijacker'" >&2
}
is_superuser() { admin -c "SELECT rolsuper FROM pg_roles WHERE rolname = 'e2e_hijacker'"; }

# From here on the test's own superuser queries (search_path "\$user", public) see the
# look-alikes in public too: they stay clear of the better-matching ones (no text || bigint,
# no unnest of a typed array, ...), or the test would catch itself.
sql >/dev/null -c "$(tenants_sql)"
plant_traps "$E2E_DB"
lookalikes=$(sql -c "SELECT count(*) FROM hijack.lookalikes")

# The traps work: in the hostile role's own session every look-alike is the one called.
as_hijacker >/dev/null -c "SELECT (SELECT count(*) FROM unnest(ARRAY[1])), (SELECT count(*) FROM unnest(ARRAY['a'])),
       (SELECT count(*) FROM unnest(ARRAY['$A'::uuid])), (SELECT count(*) FROM unnest(ARRAY['2026-01-01Z'::timestamptz])),
       (SELECT count(*) FROM unnest(ARRAY[1.5])), (SELECT count(*) FROM unnest(ARRAY[1::bigint])),
       make_interval(secs => 1.5::float8), make_interval(secs => 1::bigint),
       date_bin('1 day'::interval, '2026-01-01 10:00Z'::timestamptz, '2000-01-01Z'::timestamptz),
       date_bin('1 day'::interval, '2026-01-01 10:00Z'::timestamptz, '2000-01-01Z'),
       jsonb_build_object('a', '$A'::uuid, 'b', '2026-01-01Z'::timestamptz, 'c', '2026-01-01Z'::timestamptz, 'd', 'x'::text, 'e', 'y'::text),
       jsonb_typeof('{}'::jsonb), current_setting('search_path'), current_setting('x.y', true), set_config('x.y', 'z', false),
       gen_random_uuid(), now(), clock_timestamp(), pg_backend_pid(), pg_postmaster_start_time(),
       isfinite('2026-01-01Z'::timestamptz), round(1.55, 1), length('abc'::text), quote_ident('a'),
       cardinality(ARRAY['a']), cardinality(ARRAY[1]), array_position(ARRAY['a'], 'a'::text), array_position(ARRAY[1], 1),
       hashtextextended('a', 0::bigint), pg_advisory_xact_lock(1::bigint), pg_advisory_xact_lock_shared(2::bigint),
       'a'::text || 'b'::text, 'a'::text || 1::bigint, 'a'::text = 'b'::text, 'a'::text <> 'b'::text, 'a'::text ~ 'b'::text,
       'a'::text !~ 'b'::text, now() < now(), now() <= now(), now() >= now(), '$A'::uuid > '$B'::uuid, '$A'::uuid = '$B'::uuid,
       1.5 / 2::bigint, '{}'::jsonb ->> 'a'::text"
assert_eq "$(sql -c "SELECT count(DISTINCT what) FROM hijack.caught WHERE what IN (SELECT what FROM hijack.lookalikes)")" "$lookalikes" \
    "all $lookalikes look-alikes are live: the hostile role's own session calls each of them"
as_hijacker -c "DELETE FROM hijack.caught" >/dev/null

# 1. A superuser session with the hostile schema first: the trigger (insert, update,
#    delete, the bulk path), compute_allocations, schedule_recompute_window.
as_victim >/dev/null <<SQL
SET attribution.correlation_id = 'req-victim';
INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents) VALUES
    ('cccccccc-0000-4000-8000-000000000001', '$A', '2026-02-01 10:00Z', 1000),
    ('cccccccc-0000-4000-8000-000000000002', '$B', '2026-02-01 11:00Z', 2000),
    ('cccccccc-0000-4000-8000-000000000003', '$B', '2026-02-02 11:00Z', 3000);
UPDATE attribution_events SET occurred_at = '2026-02-03 11:00Z', revenue_cents = revenue_cents + 1
 WHERE tenant_id = '$B' AND id = 'cccccccc-0000-4000-8000-000000000002';
DELETE FROM attribution_events WHERE tenant_id = '$B' AND id = 'cccccccc-0000-4000-8000-000000000003';
CREATE TEMP TABLE staged (LIKE attribution_events INCLUDING DEFAULTS);
INSERT INTO staged (id, tenant_id, occurred_at, revenue_cents) VALUES
    ('cccccccc-0000-4000-8000-000000000004', '$B', '2026-02-04 12:00Z', 4001),
    ('cccccccc-0000-4000-8000-000000000005', '$A', '2026-02-04 13:00Z', 5002);
INSERT INTO attribution_events SELECT * FROM staged;
SELECT * FROM compute_allocations('$B', '2026-02-03Z', '2026-02-04Z');
SELECT schedule_recompute_window('$A', '2026-02-01Z', '2026-02-02Z');
SELECT * FROM attribution_queue_health;
SQL

# 2. The hostile role itself, with decoy temporary tables named like the trigger's
#    transition tables and the model registry in its session.
as_hijacker >/dev/null -f - <<SQL
CREATE TEMP TABLE attribution_new_events (LIKE attribution_events);
CREATE TEMP TABLE attribution_old_events (LIKE attribution_events);
INSERT INTO attribution_new_events VALUES ('dddddddd-0000-4000-8000-000000000001', '$B', '2026-05-05 12:00Z', 1, '{}');
INSERT INTO attribution_old_events VALUES ('dddddddd-0000-4000-8000-000000000002', '$B', '2026-05-06 12:00Z', 1, '{}');
CREATE TEMP TABLE attribution_models (LIKE public.attribution_models INCLUDING DEFAULTS);
INSERT INTO attribution_models (model_version, channels, weights) VALUES ('evil', ARRAY['x'], ARRAY[1]);
INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents) VALUES
    ('cccccccc-0000-4000-8000-000000000011', '$A', '2026-02-06 12:00Z', 600),
    ('cccccccc-0000-4000-8000-000000000012', '$A', '2026-02-06 13:00Z', 700);
UPDATE attribution_events SET occurred_at = '2026-02-07 12:00Z' WHERE id = 'cccccccc-0000-4000-8000-000000000011';
DELETE FROM attribution_events WHERE id = 'cccccccc-0000-4000-8000-000000000012';
CREATE TEMP TABLE staged (LIKE public.attribution_events INCLUDING DEFAULTS);
INSERT INTO staged (id, tenant_id, occurred_at, revenue_cents) VALUES
    ('cccccccc-0000-4000-8000-000000000013', '$A', '2026-02-08 12:00Z', 800);
INSERT INTO attribution_events SELECT * FROM staged;
SELECT * FROM compute_allocations('$A', '2026-02-06Z', '2026-02-08Z');
SELECT schedule_recompute_window('$A', '2026-02-08Z', '2026-02-09Z');
SELECT * FROM attribution_queue_health;
SQL

# 3. The workers' failure paths: a retry, then a dead letter (attribution.max_attempts = 2),
#    for each tenant; the hostile role re-drives tenant A's, the superuser session tenant B's.
reload_with "attribution.failure_injection = on" "attribution.max_attempts = 2"
sql >/dev/null <<SQL
BEGIN;
INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents) VALUES
    ('cccccccc-0000-4000-8000-000000000021', '$A', '2026-02-20 12:00Z', 2100),
    ('cccccccc-0000-4000-8000-000000000022', '$B', '2026-02-21 12:00Z', 2200);
UPDATE attribution_recompute_jobs SET inject_failure = 'error' WHERE window_start IN ('2026-02-20Z', '2026-02-21Z');
COMMIT;
SQL
wait_for 30 "SELECT count(*) = 2 FROM worker_failed_jobs"
reload_with "attribution.failure_injection = off"
as_hijacker >/dev/null -c "SELECT redrive_failed_job(id) FROM worker_failed_jobs"
as_victim >/dev/null -c "SELECT set_config('attribution.tenant_id', '$B', false)" \
    -c "SELECT redrive_failed_job(id) FROM worker_failed_jobs WHERE tenant_id = '$B'"

# 4. Housekeeping: restarted workers recover orphans and prune first thing.
admin -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'pg_attribution worker'" >/dev/null
sleep 0.5   # let the terminated workers go before counting the restarted ones
wait_for_workers 2
wait_for_drain 30

# The pipeline did its work...
assert_eq "$(sql -c "SELECT format('%s/%s', count(*), sum(revenue_cents)) FROM attribution_events")" 8/17704 \
    "the events inserted, updated, deleted and bulk-loaded by both sessions are there"
assert_eq "$(sql -c "SELECT count(*) FROM attribution_allocations")" 24 "every event has its 3 allocations"
assert_eq "$(events_off_by_a_cent)" 0 "allocations sum to revenue for every event"
assert_eq "$(sql -c "SELECT format('%s/%s', count(*) FILTER (WHERE redriven_at IS NOT NULL), count(*)) FROM worker_failed_jobs")" 2/2 \
    "both dead letters were written by the workers and re-driven"
assert_eq "$(sql -c "SELECT count(*) FROM attribution_recompute_jobs WHERE status <> 'succeeded'")" 0 "every job succeeded"
assert_eq "$(sql -c "SELECT count(*) FROM attribution_recompute_jobs WHERE window_start >= '2026-05-01Z' OR model_version <> '1.0.0'")" 0 \
    "the trigger read its transition tables, not the hostile session's decoys"
# ...and no look-alike ran for it.
if [ "$(escalations)" != 0 ]; then show_escalations; fail "look-alikes ran as another role (above)"; fi
echo "  ok: no look-alike ran as a superuser or as the worker"
if tail -n +"$((log_start + 1))" "$E2E_DATA/server.log" | grep "e2e look-alike"; then
    fail "look-alikes ran in another role's session (server log above)"
fi
echo "  ok: the server log shows no look-alike call"
assert_eq "$(is_superuser)" f "the hostile role is still not a superuser"

# The trap was armed: a superuser statement that does reach a better-matching look-alike
# makes the hostile role a superuser (rolled back here).
out=$(as_victim -c "BEGIN" -c "SELECT count(*) FROM unnest(ARRAY[1, 2])" \
                -c "SELECT 'escalated=' || rolsuper FROM pg_roles WHERE rolname = 'e2e_hijacker'" -c "ROLLBACK" 2>&1)
grep -q "escalated=t" <<< "$out" || fail "a look-alike reached by a superuser did not escalate: $out"
grep -q "WARNING:  e2e look-alike unnest(a integer\[\]) ran as postgres" <<< "$out" || fail "the look-alike did not report: $out"
assert_eq "$(is_superuser)" f "the armed trap works when reached, and was rolled back"

# 5. Installing and upgrading the extension as a superuser where the look-alikes were
#    planted first. Both are checked before either failure is reported.
problems=()
install_db="${E2E_DB}_install"
admin -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $install_db WITH (FORCE)" -c "CREATE DATABASE $install_db" >/dev/null
plant_traps "$install_db"
admin -d "$install_db" -c "CREATE EXTENSION pg_attribution" -c "INSERT INTO attribution_models (model_version, channels, weights) VALUES ('2.0.0', ARRAY['a', 'b'], ARRAY[1, 2])" >/dev/null 2>&1 \
    || problems+=("CREATE EXTENSION failed")
caught=$(admin -d "$install_db" -c "SELECT string_agg(DISTINCT what || ' as ' || run_as, ', ') FROM hijack.caught WHERE run_as <> 'e2e_hijacker'")
[ -z "$caught" ] || problems+=("CREATE EXTENSION pg_attribution (and adding a model) ran look-alikes: $caught; the hostile role is superuser: $(is_superuser)")
admin -c "ALTER ROLE e2e_hijacker NOSUPERUSER" >/dev/null
admin -c "DROP DATABASE $install_db WITH (FORCE)" >/dev/null

if [ "$(admin -c "SELECT count(*) FROM pg_available_extension_versions WHERE name = 'pg_attribution' AND version = '0.1.0'")" = 1 ]; then
    upgrade_db="${E2E_DB}_upgrade"
    admin -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $upgrade_db WITH (FORCE)" -c "CREATE DATABASE $upgrade_db" >/dev/null
    admin -d "$upgrade_db" -c "CREATE EXTENSION pg_attribution VERSION '0.1.0'" \
        -c "INSERT INTO attribution_tenants (id, name) VALUES ('$A', 'acme')" >/dev/null 2>&1
    plant_traps "$upgrade_db"
    # 0.1.0 let application roles write job rows; the upgrade dead-letters unrunnable ones.
    "$PG_BIN/psql" -X -q -tA -v ON_ERROR_STOP=1 -h "$E2E_DATA" -p "$E2E_PORT" -U e2e_hijacker -d "$upgrade_db" \
        -c "SET attribution.tenant_id = '$A'" \
        -c "INSERT INTO attribution_recompute_jobs (tenant_id, window_start, window_end, model_version, last_correlation_id)
            VALUES ('$A', '-infinity', 'infinity', '1.0.0', 'req-forged')" >/dev/null
    admin -d "$upgrade_db" -c "ALTER EXTENSION pg_attribution UPDATE TO '0.2.0'" >/dev/null 2>&1 \
        || problems+=("ALTER EXTENSION pg_attribution UPDATE failed")
    caught=$(admin -d "$upgrade_db" -c "SELECT string_agg(DISTINCT what || ' as ' || run_as, ', ') FROM hijack.caught WHERE run_as <> 'e2e_hijacker'")
    [ -z "$caught" ] || problems+=("ALTER EXTENSION pg_attribution UPDATE TO '0.2.0' ran look-alikes: $caught; the hostile role is superuser: $(is_superuser)")
    admin -c "ALTER ROLE e2e_hijacker NOSUPERUSER" >/dev/null
    admin -c "DROP DATABASE $upgrade_db WITH (FORCE)" >/dev/null
else
    echo "  skip: pg_attribution 0.1.0 is not installed, so the upgrade is not checked"
fi
for p in "${problems[@]}"; do echo "FAIL: $p" >&2; done
[ ${#problems[@]} -eq 0 ] || fail "installing or upgrading the extension runs the hostile role's look-alikes as a superuser"
echo "  ok: CREATE EXTENSION and ALTER EXTENSION UPDATE call no look-alike"
