# Multi-touch models end to end: the registry refuses bad models, a tenant turns models
# on, its touchpoints and conversions go through the triggers and the workers, and the
# allocations equal an independent SQL computation of the same rules; a late touchpoint
# re-allocates exactly the conversions it changes; other tenants are untouched.

A=$TENANT_A
B=$TENANT_B
sql -c "$(tenants_sql)" >/dev/null
sql >/dev/null <<'SQL'
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'e2e_mt_app') THEN CREATE ROLE e2e_mt_app LOGIN; END IF;
END $$;
GRANT attribution_app TO e2e_mt_app;
SQL
as_app() { local tenant=$1; shift; PGOPTIONS="-c attribution.tenant_id=$tenant" cluster_psql "$E2E_DATA" "$E2E_PORT" -d "$E2E_DB" -U e2e_mt_app -tA "$@"; }
sqlstate_of() { "$@" -v VERBOSITY=verbose 2>&1 | sed -n 's/^ERROR:  \([0-9A-Z]\{5\}\):.*/\1/p' | head -1; }

# The registry: every mistake is a 22023 that names it, and nothing is written.
for bad in "('bad1', 'markow', NULL, NULL, '{}')" \
           "('bad2', 'linear', NULL, NULL, '{\"lookback_dyas\": 3}')" \
           "('bad3', 'linear', NULL, NULL, '{\"lookback_days\": 0}')" \
           "('bad4', 'linear', ARRAY['email'], ARRAY[1], '{}')" \
           "('bad5', 'weighted', ARRAY['email'], ARRAY[1], '{\"lookback_days\": 3}')" \
           "('bad6', 'position_based', NULL, NULL, '{\"first\": 0, \"middle\": 0, \"last\": 0}')" \
           "('bad7', 'time_decay', NULL, NULL, '[]')"; do
    assert_eq "$(sqlstate_of sql -c "INSERT INTO attribution_models (model_version, kind, channels, weights, params) VALUES $bad")" 22023 \
        "the registry refuses $bad (22023)"
done
assert_eq "$(sql -c "SELECT count(*) FROM attribution_models WHERE model_version LIKE 'bad%'")" 0 "no refused model was written"

sql >/dev/null <<'SQL'
INSERT INTO attribution_models (model_version, kind, params) VALUES
    ('mt-linear', 'linear', '{}'),
    ('mt-u', 'position_based', '{}'),
    ('mt-last-nd', 'last_non_direct', '{"lookback_days": 7}'),
    ('mt-decay', 'time_decay', '{"half_life_days": 1, "collapse_repeats": true}');
SQL

# Tenant A turns three of them on, as its application role; B turns none on.
as_app "$A" -c "INSERT INTO attribution_tenant_models (tenant_id, model_version)
                VALUES ('$A', 'mt-linear'), ('$A', 'mt-u'), ('$A', 'mt-last-nd')" >/dev/null
assert_eq "$(sqlstate_of as_app "$A" -c "INSERT INTO attribution_tenant_models (tenant_id, model_version) VALUES ('$B', 'mt-linear')")" 42501 \
    "tenant A cannot turn a model on for tenant B (42501)"
assert_eq "$(sqlstate_of as_app "$A" -c "INSERT INTO attribution_touchpoints (tenant_id, customer_key, occurred_at, channel) VALUES ('$B', 'c1', now(), 'email')")" 42501 \
    "tenant A cannot write tenant B's touchpoints (42501)"

# Touchpoints: 300 customers of each tenant, 0 to 6 touchpoints each over March 1-20,
# then one conversion per customer between March 10 and 25 (half linked through the
# customer_key column, half through raw_payload, as a 0.1 INSERT can).
touchpoints_sql() {
    cat <<SQL
INSERT INTO attribution_touchpoints (tenant_id, customer_key, occurred_at, channel, campaign, cost_cents)
SELECT '$1', 'c' || c, timestamptz '2026-03-01Z' + ((c * 7919 + k * 104729) % (19 * 24)) * interval '1 hour',
       (ARRAY['search', 'social', 'email', 'direct', 'display'])[1 + (c * 31 + k * 17) % 5], 'spring', (c + k) % 50
  FROM generate_series(1, 300) c, generate_series(1, 6) k
 WHERE k <= c % 7;
SQL
}
as_app "$A" -c "$(touchpoints_sql "$A")" >/dev/null
as_app "$B" -c "$(touchpoints_sql "$B")" >/dev/null
conversions_sql() {
    cat <<SQL
INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents, customer_key, raw_payload)
SELECT gen_random_uuid(), '$1', timestamptz '2026-03-10Z' + ((c::bigint * 15485863) % (15 * 24)) * interval '1 hour',
       1000 + (c * 97) % 9000,
       CASE WHEN c % 2 = 0 THEN 'c' || c END,
       CASE WHEN c % 2 = 1 THEN jsonb_build_object('customer_key', 'c' || c) ELSE '{}' END
  FROM generate_series(1, 300) c;
SQL
}
as_app "$A" -c "$(conversions_sql "$A")" >/dev/null
as_app "$B" -c "$(conversions_sql "$B")" >/dev/null
wait_for_drain 120
assert_eq "$(sql -c "SELECT count(*) FROM attribution_recompute_jobs WHERE status <> 'succeeded'")" 0 "every job succeeded"
# Which (tenant, multi-touch model) pairs have allocations: a first computation of a pair
# not listed skips looking for allocations to clear.
assert_eq "$(sql -c "SELECT string_agg(DISTINCT model_version, ',' ORDER BY model_version) FROM attribution_touch_allocated WHERE tenant_id = '$A'")" \
    "$(sql -c "SELECT string_agg(DISTINCT model_version, ',' ORDER BY model_version) FROM attribution_allocations WHERE tenant_id = '$A' AND model_version LIKE 'mt-%'")" \
    "attribution_touch_allocated lists the multi-touch models that have allocations for the tenant"
assert_eq "$(sql -c "SELECT count(*) FROM attribution_touch_allocated WHERE tenant_id = '$B'")" 0 "... and none for a tenant that turned none on"
for stmt in "SELECT * FROM attribution_touch_allocated" "INSERT INTO attribution_touch_allocated VALUES ('$A', 'mt-linear')" \
            "DELETE FROM attribution_touch_allocated"; do
    assert_eq "$(sqlstate_of as_app "$A" -c "$stmt")" 42501 "applications cannot touch attribution_touch_allocated: $stmt (42501)"
done

# The expected allocations, computed here in SQL from the definitions (README): the
# conversion's counting touchpoints, credit per channel, cents by largest remainder with
# ties to the channel whose name sorts first; 'direct' takes it all when nothing counts.
expected_sql() {
    local model=$1 credit=$2 lookback=$3
    cat <<SQL
WITH conv AS (
    SELECT e.id, e.revenue_cents AS rev, e.occurred_at,
           coalesce(e.customer_key, e.raw_payload ->> 'customer_key') AS cust
      FROM attribution_events e WHERE e.tenant_id = '$A'
), touches AS (
    SELECT c.id, c.rev, t.channel, t.occurred_at,
           row_number() OVER (PARTITION BY c.id ORDER BY t.occurred_at DESC, t.channel DESC) AS from_last
      FROM conv c JOIN attribution_touchpoints t
        ON t.tenant_id = '$A' AND t.customer_key = c.cust
       AND t.occurred_at <= c.occurred_at AND t.occurred_at >= c.occurred_at - interval '$lookback'
), credit AS (
    SELECT id, rev, channel, sum(w)::numeric AS w FROM ($credit) x GROUP BY id, rev, channel HAVING sum(w) > 0
), base AS (
    SELECT c.id, c.channel, c.rev,
           floor(c.rev * c.w / sum(c.w) OVER (PARTITION BY c.id)) AS fl,
           c.rev * c.w - floor(c.rev * c.w / sum(c.w) OVER (PARTITION BY c.id)) * sum(c.w) OVER (PARTITION BY c.id) AS rem
      FROM credit c
), ranked AS (
    SELECT *, row_number() OVER (PARTITION BY id ORDER BY rem DESC, channel) AS rk,
           rev - sum(fl) OVER (PARTITION BY id) AS leftover
      FROM base
)
SELECT id, '$model', channel, (fl + CASE WHEN rk <= leftover THEN 1 ELSE 0 END)::bigint FROM ranked
UNION ALL
SELECT id, '$model', 'direct', rev FROM conv WHERE id NOT IN (SELECT id FROM credit)
SQL
}
actual_sql() {
    echo "SELECT event_id, model_version, channel, allocated_revenue_cents FROM attribution_allocations
           WHERE tenant_id = '$A' AND model_version = '$1'"
}
# diff MODEL CREDIT LOOKBACK: missing/extra rows of the workers' allocations against the expected ones.
diff_of() {
    sql -c "SELECT (SELECT count(*) FROM (SELECT * FROM ($(expected_sql "$@")) e EXCEPT $(actual_sql "$1")) m) || '/' ||
                   (SELECT count(*) FROM ($(actual_sql "$1") EXCEPT SELECT * FROM ($(expected_sql "$@")) e) x)"
}
LINEAR="SELECT id, rev, channel, 1 AS w FROM touches"
# Last non-direct: the latest touchpoint that is not direct, or the latest one if all are.
LAST_ND="SELECT id, rev, channel, 1 AS w FROM (
             SELECT *, row_number() OVER (PARTITION BY id ORDER BY (channel = 'direct'), occurred_at DESC, channel DESC) AS pick
               FROM touches) t WHERE pick = 1"
assert_eq "$(diff_of mt-linear "$LINEAR" '30 days')" 0/0 "linear: every allocation as computed from the definition (missing/extra)"
assert_eq "$(diff_of mt-last-nd "$LAST_ND" '7 days')" 0/0 "last non-direct with a 7-day lookback: likewise"
for m in mt-linear mt-u mt-last-nd; do
    assert_eq "$(sql -c "$(cents_off_sql "'$m'" "e.tenant_id = '$A'")")" 0 "$m: every conversion's cents add up to its revenue"
done
assert_eq "$(sql -c "SELECT count(DISTINCT event_id) FROM attribution_allocations WHERE tenant_id = '$A' AND model_version = 'mt-u'")" 300 \
    "position-based: every conversion allocated"
assert_eq "$(sql -c "SELECT count(*) FROM attribution_allocations WHERE tenant_id = '$B' AND model_version LIKE 'mt-%'")" 0 \
    "tenant B, which turned no multi-touch model on, has no multi-touch allocations"
assert_eq "$(sql -c "SELECT count(*) FROM attribution_recompute_jobs WHERE tenant_id = '$B' AND model_version LIKE 'mt-%'")" 0 \
    "... and no multi-touch jobs"
assert_eq "$(sql -c "SELECT count(*) FROM attribution_allocations WHERE tenant_id = '$B' AND model_version = '1.0.0'")" 900 \
    "the weighted model still runs for both tenants"

# Late data: a touchpoint for customer c10, two days before its conversion. Only c10's
# conversion is re-allocated (for each of A's models); every other allocation is untouched.
before=$(sql -c "SELECT max(updated_at) FROM attribution_allocations WHERE tenant_id = '$A'")
c10=$(sql -c "SELECT id FROM attribution_events WHERE tenant_id = '$A' AND customer_key = 'c10'")
as_app "$A" -c "SET attribution.correlation_id = 'late-touch'" \
    -c "INSERT INTO attribution_touchpoints (tenant_id, customer_key, occurred_at, channel)
        SELECT '$A', 'c10', occurred_at - interval '2 days', 'podcast' FROM attribution_events WHERE id = '$c10'" >/dev/null
wait_for_drain 60
assert_eq "$(sql -c "SELECT count(*) FROM attribution_allocations WHERE tenant_id = '$A' AND event_id = '$c10' AND channel = 'podcast' AND model_version IN ('mt-linear', 'mt-u')")" 2 \
    "the late touchpoint's channel is credited on c10's conversion (linear, position-based)"
assert_eq "$(sql -c "SELECT count(DISTINCT event_id) FROM attribution_allocations WHERE tenant_id = '$A' AND updated_at > '$before'")" 1 \
    "only that conversion's allocations changed"
assert_eq "$(diff_of mt-linear "$LINEAR" '30 days')" 0/0 "linear: still as computed from the definition"
assert_eq "$(diff_of mt-last-nd "$LAST_ND" '7 days')" 0/0 "last non-direct: likewise"
# Deleted again, and a touchpoint moved to another customer: the same rules hold.
as_app "$A" -c "DELETE FROM attribution_touchpoints WHERE tenant_id = '$A' AND channel = 'podcast'" \
    -c "UPDATE attribution_touchpoints SET customer_key = 'c12' WHERE tenant_id = '$A' AND customer_key = 'c13'" >/dev/null
wait_for_drain 60
assert_eq "$(sql -c "SELECT count(*) FROM attribution_allocations WHERE tenant_id = '$A' AND channel = 'podcast'")" 0 \
    "a deleted touchpoint's credit goes away"
assert_eq "$(diff_of mt-linear "$LINEAR" '30 days')" 0/0 "linear after the delete and the move: as computed from the definition"
assert_eq "$(diff_of mt-last-nd "$LAST_ND" '7 days')" 0/0 "last non-direct: likewise"
assert_eq "$(sql -c "SELECT count(*) FROM attribution_event_changes")" 0 "every recorded change was consumed"

# A model turned on later gets a full pass of the tenant's windows.
as_app "$A" -c "INSERT INTO attribution_tenant_models (tenant_id, model_version) VALUES ('$A', 'mt-decay')" >/dev/null
wait_for_drain 60
assert_eq "$(sql -c "SELECT count(DISTINCT event_id) FROM attribution_allocations WHERE tenant_id = '$A' AND model_version = 'mt-decay'")" 300 \
    "a model turned on later allocates every conversion of the tenant"
assert_eq "$(sql -c "$(cents_off_sql "'mt-decay'" "e.tenant_id = '$A'")")" 0 "time decay: every conversion's cents add up to its revenue"
# Changing a model's parameters recomputes its windows for the tenants using it.
sql -c "UPDATE attribution_models SET params = '{\"lookback_days\": 2}' WHERE model_version = 'mt-last-nd'" >/dev/null
wait_for_drain 60
assert_eq "$(diff_of mt-last-nd "$LAST_ND" '2 days')" 0/0 "last non-direct after its lookback changed to 2 days: as computed from the definition"

# Data-driven models: fitted per tenant on its journeys, then allocated with the fit.
sql -c "INSERT INTO attribution_models (model_version, kind) VALUES ('mt-markov', 'markov'), ('mt-shapley', 'shapley')" >/dev/null
assert_eq "$(sqlstate_of as_app "$A" -c "SELECT * FROM compute_allocations('$A', '2026-03-10Z', '2026-03-11Z', 'mt-markov')")" 55000 \
    "a data-driven model without a fit does not compute (55000)"
assert_eq "$(sqlstate_of as_app "$A" -c "SELECT * FROM attribution_fit_model('$A', 'mt-linear', '2026-03-01Z', '2026-04-01Z')")" 22023 \
    "only data-driven models are fitted (22023)"
assert_eq "$(sqlstate_of as_app "$A" -c "SELECT * FROM attribution_fit_model('$B', 'mt-markov', '2026-03-01Z', '2026-04-01Z')")" 42501 \
    "tenant A cannot fit tenant B's model (42501)"
assert_eq "$(sqlstate_of as_app "$A" -c "SELECT * FROM attribution_fit_model('$A', 'mt-markov', '2026-04-01Z', '2026-03-01Z')")" 22023 \
    "an empty period is refused (22023)"
assert_eq "$(sqlstate_of as_app "$A" -c "SELECT * FROM attribution_fit_model('$A', 'mt-markov', '2027-01-01Z', '2027-02-01Z')")" 22000 \
    "a period without a conversion cannot be fitted (22000)"
assert_eq "$(sql -c "SELECT count(*) FROM attribution_model_fits")" 0 "no refused fit was written"
for m in mt-markov mt-shapley; do
    fitted=$(as_app "$A" -c "SELECT count(*) || ' ' || round(sum(share)::numeric, 9) FROM attribution_fit_model('$A', '$m', '2026-03-01Z', '2026-04-01Z')")
    assert_eq "$fitted" "5 1.000000000" "$m: fitted on tenant A's journeys, five channels whose shares sum to 1"
    as_app "$A" -c "INSERT INTO attribution_tenant_models (tenant_id, model_version) VALUES ('$A', '$m')" >/dev/null
done
wait_for_drain 60
assert_eq "$(sql -c "SELECT count(*) FROM attribution_recompute_jobs WHERE status <> 'succeeded'")" 0 "every job succeeded"
for m in mt-markov mt-shapley; do
    assert_eq "$(sql -c "SELECT count(DISTINCT event_id) FROM attribution_allocations WHERE tenant_id = '$A' AND model_version = '$m'")" 300 \
        "$m: every conversion of tenant A allocated"
    assert_eq "$(sql -c "$(cents_off_sql "'$m'" "e.tenant_id = '$A'")")" 0 "$m: every conversion's cents add up to its revenue"
done
# Markov: each conversion's channels share its revenue in proportion to their removal
# effects in the fit (the weights are rounded to 2^40 parts, hence the tolerance).
off=$(sql <<SQL
WITH fit AS (
    SELECT u.channel, u.re FROM attribution_model_fits f, unnest(f.channels, f.channel_values) AS u(channel, re)
     WHERE f.tenant_id = '$A' AND f.model_version = 'mt-markov'
), conv AS (
    SELECT e.id, e.occurred_at, coalesce(e.customer_key, e.raw_payload ->> 'customer_key') AS cust
      FROM attribution_events e WHERE e.tenant_id = '$A'
), path AS (
    SELECT DISTINCT c.id, t.channel FROM conv c JOIN attribution_touchpoints t
        ON t.tenant_id = '$A' AND t.customer_key = c.cust
       AND t.occurred_at <= c.occurred_at AND t.occurred_at >= c.occurred_at - interval '30 days'
), expected AS (
    SELECT p.id, p.channel, f.re / sum(f.re) OVER (PARTITION BY p.id) AS ratio
      FROM path p JOIN fit f USING (channel)
)
SELECT count(*) FROM expected x
  LEFT JOIN attribution_allocations a
    ON a.tenant_id = '$A' AND a.model_version = 'mt-markov' AND a.event_id = x.id AND a.channel = x.channel
 WHERE a.allocation_ratio IS NULL OR abs(a.allocation_ratio - x.ratio) > 1e-9
SQL
)
assert_eq "$off" 0 "markov: every channel's share of a conversion is its removal effect over the path's"
# A session that computed tenant A's Markov allocations cannot use A's fit once it acts
# for tenant B (a pooled connection changing tenants).
fit_id=$(sql -c "SELECT max(id) FROM attribution_model_fits WHERE tenant_id = '$A' AND model_version = 'mt-markov'")
leak=$(as_app "$A" -v VERBOSITY=verbose \
    -c "SELECT count(*) FROM compute_allocations('$A', '2026-03-10Z', '2026-03-11Z', 'mt-markov')" \
    -c "SELECT set_config('attribution.tenant_id', '$B', false)" \
    -c "SELECT * FROM attribution_touch_split(100, '2026-03-10Z', ARRAY['2026-03-09Z']::timestamptz[], ARRAY['email'], 'markov', '{}', $fit_id)" 2>&1 || true)
[[ $leak == *"55000"*"not loaded in this session for the current tenant"* ]] || fail "another tenant's fit was usable: $leak"
echo "  ok: ... it is refused (55000)"

# Hardening of the multi-touch surface.
assert_eq "$(sqlstate_of as_app "" -c "SELECT * FROM attribution_fit_model('$B', 'mt-markov', '2026-03-01Z', '2026-04-01Z')")" 42501 \
    "a session without a tenant context cannot fit any tenant's model (42501)"
assert_eq "$(sqlstate_of as_app "$A" -c "DELETE FROM attribution_tenant_models")" 42501 \
    "applications cannot DELETE from attribution_tenant_models (42501)..."
assert_eq "$(sqlstate_of as_app "$A" -c "BEGIN" -c "LOCK TABLE attribution_tenant_models IN ACCESS EXCLUSIVE MODE")" 42501 \
    "... so they cannot lock it against every tenant's event inserts (42501)"
assert_eq "$(as_app "$A" -c "SELECT attribution_disable_model('$A', 'mt-decay')")" t "attribution_disable_model() turns a model off"
assert_eq "$(as_app "$A" -c "SELECT attribution_disable_model('$A', 'mt-decay')")" f "... and says when it was not on"
assert_eq "$(sqlstate_of as_app "$A" -c "SELECT attribution_disable_model('$B', 'mt-linear')")" 42501 "... only for the caller's tenant (42501)"
assert_eq "$(sqlstate_of sql -c "UPDATE attribution_models SET kind = 'linear' WHERE model_version = 'mt-u'")" 22023 \
    "a model's kind cannot change (22023)"
# A conversion moved into a day never computed (and out of reach of its touchpoints):
# its allocations are replaced, not added to.
decay_c20="SELECT string_agg(a.channel || ':' || a.allocated_revenue_cents, ',' ORDER BY a.channel) FROM attribution_allocations a JOIN attribution_events e ON e.tenant_id = a.tenant_id AND e.id = a.event_id WHERE e.customer_key = 'c20' AND a.model_version = 'mt-decay'"
decay_before=$(sql -c "$decay_c20")
as_app "$A" -c "UPDATE attribution_events SET occurred_at = '2026-05-01 12:00Z' WHERE tenant_id = '$A' AND customer_key = 'c20'" >/dev/null
wait_for_drain 60
for m in mt-linear mt-u mt-last-nd mt-markov mt-shapley; do
    assert_eq "$(sql -c "$(cents_off_sql "'$m'" "e.tenant_id = '$A'")")" 0 "$m: after the move, every conversion's cents still add up to its revenue"
done
assert_eq "$(sql -c "SELECT string_agg(DISTINCT a.channel, ',') FROM attribution_allocations a JOIN attribution_events e ON e.tenant_id = a.tenant_id AND e.id = a.event_id WHERE e.customer_key = 'c20' AND e.tenant_id = '$A' AND a.model_version LIKE 'mt-%' AND a.model_version <> 'mt-decay'")" direct \
    "... and credits only 'direct', its touchpoints being older than the lookback"
assert_eq "$(sql -c "$decay_c20")" "$decay_before" \
    "a model turned off keeps its allocations but does not recompute them (mt-decay still has c20's old ones)"
# A large touchpoint statement asks for full passes instead of recording each conversion.
sql -c "SET attribution.incremental_max_rows = 10" \
    -c "UPDATE attribution_touchpoints SET campaign = 'summer' WHERE tenant_id = '$A' AND customer_key IN ('c1', 'c2', 'c3', 'c4', 'c5', 'c6')" >/dev/null
assert_eq "$(sql -c "SELECT count(*) FROM attribution_event_changes")" 0 "a touchpoint statement over attribution.incremental_max_rows records no change..."
assert_eq "$(sql -c "SELECT bool_and(full_requested) AND count(*) > 0 FROM attribution_recompute_jobs WHERE tenant_id = '$A' AND model_version LIKE 'mt-%' AND status = 'pending'")" t \
    "... and asks for full passes of the tenant's windows"
wait_for_drain 60
assert_eq "$(diff_of mt-linear "$LINEAR" '30 days')" 0/0 "linear after those full passes: as computed from the definition"
# A payload's customer key of any length is accepted (longer ones than a touchpoint's can match none).
as_app "$A" -c "INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents, raw_payload)
                VALUES (gen_random_uuid(), '$A', '2026-03-12Z', 500, jsonb_build_object('customer_key', repeat('k', 5000)))" >/dev/null
wait_for_drain 60
assert_eq "$(sql -c "$(cents_off_sql "'mt-linear'" "e.tenant_id = '$A'")")" 0 "a conversion with a 5,000-character payload key is allocated"
