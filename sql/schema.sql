-- pg_attribution schema: tenant and model registries, events, allocations, the recompute
-- job queue and its dead-letter table, with row-level security on every tenant table.
--
-- The tenant context is the setting attribution.tenant_id, set per transaction with
--   SELECT set_config('attribution.tenant_id', '<tenant uuid>', true);
-- Every policy compares tenant_id with it, and FORCE ROW LEVEL SECURITY applies the
-- policies to the tables' owner too. Only superusers and BYPASSRLS roles see across tenants.

-- Application roles: DBAs grant attribution_app to the roles their application logs in
-- as. Roles are cluster-wide, so they are created only when missing and outlive the
-- extension (DROP EXTENSION leaves them).
-- The background workers run as attribution_worker (attribution.worker_role): a login role
-- (Postgres 15 requires it for a worker's connection) that is neither superuser nor
-- BYPASSRLS, so every job is subject to the tenant policies.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'attribution_app') THEN
        CREATE ROLE attribution_app NOLOGIN NOSUPERUSER NOBYPASSRLS;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'attribution_worker') THEN
        CREATE ROLE attribution_worker LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    END IF;
END
$roles$;

-- The tenant the current transaction acts for, or NULL when none is set.
-- A malformed setting raises invalid_text_representation rather than matching nothing.
-- Every name in the body is qualified (operator included) rather than pinned with SET
-- search_path, which would stop the planner from inlining it into the policies.
CREATE FUNCTION attribution_current_tenant() RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
SELECT CASE WHEN pg_catalog.current_setting('attribution.tenant_id', true) OPERATOR(pg_catalog.=) ''
            THEN NULL
            ELSE pg_catalog.current_setting('attribution.tenant_id', true)::pg_catalog.uuid END
$$;

CREATE TABLE attribution_tenants (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (pg_catalog.length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Expressions stored in this file (constraints, defaults, policies, the view) bind their
-- functions when CREATE EXTENSION runs, through a search_path that includes the
-- extension's schema: a call that matches a built-in only through a polymorphic or
-- coerced argument (cardinality(anyarray), say) names pg_catalog, so that a look-alike
-- some role created in that schema can never be bound in.

-- Attribution models. Not tenant data: one registry for the whole database (a reference
-- table under Citus). Each channel's share is weight / sum(weights); ties in the
-- largest-remainder step go to the channel listed first.
CREATE TABLE attribution_models (
    model_version text PRIMARY KEY CHECK (model_version ~ '^[A-Za-z0-9._-]{1,64}$'),
    kind          text NOT NULL DEFAULT 'weighted' CHECK (kind IN ('weighted', 'first_touch',
                      'last_touch', 'last_non_direct', 'linear', 'position_based', 'time_decay', 'markov',
                      'shapley')),
    -- A weighted model's channels and weights; NULL for the multi-touch kinds, whose
    -- channels come from each conversion's touchpoints.
    channels      text[],
    weights       integer[],
    active        boolean NOT NULL DEFAULT true,
    description   text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- Set when the channel list changes: from then on, computing a window also removes
    -- allocations for channels the model no longer gives.
    channels_changed_at timestamptz,
    -- Set when the kind, channels, weights or parameters change: a window last computed
    -- before then gets a full pass instead of an incremental one.
    changed_at    timestamptz,
    -- A multi-touch model's parameters (README, "Multi-touch models"), checked by
    -- attribution_check_model() on every insert and update.
    params        jsonb NOT NULL DEFAULT '{}'::jsonb,
    CONSTRAINT attribution_models_channels_shape CHECK (
        CASE WHEN kind OPERATOR(pg_catalog.=) 'weighted' THEN
            pg_catalog.cardinality(channels) BETWEEN 1 AND 64
            AND pg_catalog.cardinality(weights) = pg_catalog.cardinality(channels)
            AND pg_catalog.array_position(channels, NULL) IS NULL
            AND pg_catalog.array_position(weights, NULL) IS NULL
            AND 0 < ALL (weights)
        ELSE channels IS NULL AND weights IS NULL END
    )
);

CREATE FUNCTION attribution_models_track_channels() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.channels IS DISTINCT FROM OLD.channels THEN
        NEW.channels_changed_at := now();
    END IF;
    IF (NEW.kind, NEW.channels, NEW.weights, NEW.params)
       IS DISTINCT FROM (OLD.kind, OLD.channels, OLD.weights, OLD.params) THEN
        NEW.changed_at := now();
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER attribution_models_track_channels
    BEFORE UPDATE ON attribution_models
    FOR EACH ROW EXECUTE FUNCTION attribution_models_track_channels();

INSERT INTO attribution_models (model_version, channels, weights, description) VALUES
    ('1.0.0', ARRAY['google_search', 'direct', 'email'], ARRAY[1, 1, 1],
     'Baseline: equal thirds over google_search, direct and email, cents by largest remainder');

-- Keyed by (tenant_id, id): event ids are the tenant's own, so one tenant's ids can
-- neither shadow nor reveal another's.
CREATE TABLE attribution_events (
    id             uuid NOT NULL,
    tenant_id      uuid NOT NULL REFERENCES attribution_tenants (id),
    occurred_at    timestamptz NOT NULL,
    revenue_cents  bigint NOT NULL,
    raw_payload    jsonb NOT NULL DEFAULT '{}'::jsonb,
    CONSTRAINT attribution_events_pkey PRIMARY KEY (tenant_id, id),
    -- Refunds are negative. Beyond 10^15 cents (ten trillion in the currency unit) a
    -- value is a unit mix-up, not revenue.
    CONSTRAINT attribution_events_revenue_cents_range
        CHECK (revenue_cents BETWEEN -1000000000000000 AND 1000000000000000),
    CONSTRAINT attribution_events_raw_payload_object CHECK (jsonb_typeof(raw_payload) = 'object'),
    CONSTRAINT attribution_events_occurred_at_finite CHECK (isfinite(occurred_at))
);
CREATE INDEX attribution_events_tenant_occurred_at_idx
    ON attribution_events (tenant_id, occurred_at);

CREATE TABLE attribution_allocations (
    id                       bigint GENERATED BY DEFAULT AS IDENTITY,
    tenant_id                uuid NOT NULL,
    event_id                 uuid NOT NULL,
    model_version            text NOT NULL,
    channel                  text NOT NULL,
    allocation_ratio         numeric NOT NULL,
    allocated_revenue_cents  bigint NOT NULL,
    correlation_id           text,
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT attribution_allocations_identity
        UNIQUE (tenant_id, event_id, model_version, channel),
    CONSTRAINT attribution_allocations_event_fkey FOREIGN KEY (tenant_id, event_id)
        REFERENCES attribution_events (tenant_id, id) ON DELETE CASCADE
);

-- The foreign key's per-row check on insert is switched off: only the extension writes
-- allocations (application roles may only read them; the worker role is the extension's
-- own and trusted), and every computation locks the events it allocates FOR KEY
-- SHARE in the same set-based read, which is what the check would do one row and one
-- query at a time (it cost more than half of a large window's computation); an INSERT
-- that allocates its own events needs no lock (no other transaction can delete its
-- uncommitted rows). The key
-- stays declared, so deleting an event still cascades to its allocations, an event's key
-- cannot change while allocations reference it, and an UPDATE that changes an
-- allocation's event is still checked. FOR KEY SHARE needs UPDATE on some column of the
-- events: the worker role gets it on tenant_id, which its policy keeps unchangeable.
DO $disable_fk_check$
DECLARE t name;
BEGIN
    FOR t IN SELECT tg.tgname FROM pg_catalog.pg_trigger tg
               JOIN pg_catalog.pg_constraint c ON c.oid = tg.tgconstraint
              WHERE c.conname = 'attribution_allocations_event_fkey'
                AND c.conrelid = 'attribution_allocations'::pg_catalog.regclass
                AND tg.tgrelid = 'attribution_allocations'::pg_catalog.regclass
                AND tg.tgfoid = 'pg_catalog."RI_FKey_check_ins"'::pg_catalog.regproc
    LOOP
        EXECUTE pg_catalog.format('ALTER TABLE attribution_allocations DISABLE TRIGGER %I', t);
    END LOOP;
END
$disable_fk_check$;

-- One row per job identity (tenant, window, model). Re-requesting a finished job makes
-- it pending again; re-requesting a running one sets rerun_requested so it runs once
-- more and sees rows committed during the run.
CREATE TABLE attribution_recompute_jobs (
    id                   uuid NOT NULL DEFAULT gen_random_uuid(),
    tenant_id            uuid NOT NULL REFERENCES attribution_tenants (id),
    window_start         timestamptz NOT NULL,
    window_end           timestamptz NOT NULL,
    model_version        text NOT NULL REFERENCES attribution_models (model_version),
    status               text NOT NULL DEFAULT 'pending'
                         CHECK (status IN ('pending', 'running', 'succeeded', 'failed')),
    run_count            integer NOT NULL DEFAULT 0,
    attempts             integer NOT NULL DEFAULT 0,
    rerun_requested      boolean NOT NULL DEFAULT false,
    last_correlation_id  text NOT NULL,
    run_after            timestamptz NOT NULL DEFAULT now(),
    enqueued_at          timestamptz NOT NULL DEFAULT now(),
    started_at           timestamptz,
    finished_at          timestamptz,
    worker_pid           integer,
    last_error           text,
    last_sqlstate        text,
    -- For tests only: 'error' or 'crash' makes the run fail, but only while the server
    -- has attribution.failure_injection = on.
    inject_failure       text CHECK (inject_failure IN ('error', 'crash')),
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    -- A full pass over the window was asked for (schedule_full_recompute, or a statement
    -- too large to record event by event); the claim consumes it.
    full_requested       boolean NOT NULL DEFAULT false,
    -- When the window was last computed successfully (the start of that transaction);
    -- NULL: never, so the next run is a full pass.
    computed_at          timestamptz,
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT attribution_recompute_jobs_identity
        UNIQUE (tenant_id, window_start, window_end, model_version),
    CONSTRAINT attribution_recompute_jobs_window_order CHECK (window_start < window_end),
    CONSTRAINT attribution_recompute_jobs_window_finite
        CHECK (isfinite(window_start) AND isfinite(window_end)),
    CONSTRAINT attribution_recompute_jobs_counters CHECK (run_count >= 0 AND attempts >= 0),
    -- The rule engine/correlation.rs enforces: 1 to 128 visible ASCII characters.
    CONSTRAINT attribution_recompute_jobs_correlation_id
        CHECK (last_correlation_id ~ '^[!-~]{1,128}$')
);
-- The claim: round the tenants with runnable jobs, each one's oldest runnable job
-- first (and when the next retry is due).
CREATE INDEX attribution_recompute_jobs_tenant_runnable_idx
    ON attribution_recompute_jobs (tenant_id, run_after) WHERE status = 'pending';
-- Running jobs: what a worker with nothing to claim looks at to help a hot window, and
-- what crash recovery looks for.
CREATE INDEX attribution_recompute_jobs_running_idx
    ON attribution_recompute_jobs (started_at) WHERE status = 'running';

-- Events changed since their window was last computed, per model: what an incremental
-- run computes. The insert/update trigger writes a row per event and active model for
-- statements of up to attribution.incremental_max_rows rows (larger ones ask for a
-- full pass instead); the run that computes the window deletes the rows it saw, in the
-- same statement, so nothing accumulates and nothing committed meanwhile is lost.
-- Deleted events need no row: their allocations go with them.
CREATE TABLE attribution_event_changes (
    tenant_id      uuid NOT NULL,
    model_version  text NOT NULL,
    occurred_at    timestamptz NOT NULL,
    event_id       uuid NOT NULL,
    -- Recorded by an INSERT: the event is new, so it has no allocations yet and its run
    -- can insert them without the upsert's conflict check.
    inserted       boolean NOT NULL DEFAULT false
);
CREATE INDEX attribution_event_changes_window_idx
    ON attribution_event_changes (tenant_id, model_version, occurred_at);
-- A queue: every row is deleted soon after it is written. Vacuum it after a fixed
-- number of dead rows, not a fraction of the table, so that a bulk load's dead rows do
-- not linger in the window index, which every run of the window scans.
ALTER TABLE attribution_event_changes SET (
    autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000,
    autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 50000,
    autovacuum_vacuum_cost_delay = 0);

-- Dead letters: a job that failed its last attempt, with what is needed to understand
-- and re-drive it.
CREATE TABLE worker_failed_jobs (
    id              bigint GENERATED BY DEFAULT AS IDENTITY,
    job_id          uuid NOT NULL,
    tenant_id       uuid NOT NULL REFERENCES attribution_tenants (id),
    payload         jsonb NOT NULL,
    correlation_id  text NOT NULL,
    sqlstate        text,
    error_message   text NOT NULL,
    attempts        integer NOT NULL,
    failed_at       timestamptz NOT NULL DEFAULT now(),
    redriven_at     timestamptz,
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT worker_failed_jobs_attempts CHECK (attempts >= 0),
    CONSTRAINT worker_failed_jobs_correlation_id CHECK (correlation_id ~ '^[!-~]{1,128}$')
);
CREATE INDEX worker_failed_jobs_job_idx ON worker_failed_jobs (tenant_id, job_id);

-- Row-level security: every tenant table, forced, keyed on attribution.tenant_id.
ALTER TABLE attribution_tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE attribution_tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON attribution_tenants
    USING (id = attribution_current_tenant());

ALTER TABLE attribution_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE attribution_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON attribution_events
    USING (tenant_id = attribution_current_tenant());

ALTER TABLE attribution_allocations ENABLE ROW LEVEL SECURITY;
ALTER TABLE attribution_allocations FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON attribution_allocations
    USING (tenant_id = attribution_current_tenant());

ALTER TABLE attribution_recompute_jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE attribution_recompute_jobs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON attribution_recompute_jobs
    USING (tenant_id = attribution_current_tenant());

ALTER TABLE attribution_event_changes ENABLE ROW LEVEL SECURITY;
ALTER TABLE attribution_event_changes FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON attribution_event_changes
    USING (tenant_id = attribution_current_tenant());

ALTER TABLE worker_failed_jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE worker_failed_jobs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON worker_failed_jobs
    USING (tenant_id = attribution_current_tenant());

-- The workers claim jobs of every tenant, so they see the whole queue and dead-letter
-- table; events and allocations they reach only through the tenant context of the job.
CREATE POLICY worker_queue_access ON attribution_recompute_jobs TO attribution_worker
    USING (true);
CREATE POLICY worker_dead_letter_access ON worker_failed_jobs TO attribution_worker
    USING (true);

-- Background workers connected to this database. SECURITY DEFINER because
-- pg_stat_activity hides other roles' backend_type from application roles.
CREATE FUNCTION attribution_worker_count() RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
SELECT count(*) FROM pg_catalog.pg_stat_activity
 WHERE backend_type = 'pg_attribution worker' AND datname = pg_catalog.current_database()
$$;
REVOKE EXECUTE ON FUNCTION attribution_worker_count() FROM PUBLIC;

-- Queue health at a glance. security_invoker: a tenant role sees its own tenant's
-- numbers, a DBA (superuser) sees the whole queue.
CREATE VIEW attribution_queue_health WITH (security_invoker = true) AS
SELECT j.pending, j.runnable, j.retrying, j.running, j.succeeded, j.failed,
       j.oldest_pending_age, j.finished_last_minute, d.dead_letters,
       attribution_worker_count() AS workers
  FROM (SELECT count(*) FILTER (WHERE status = 'pending') AS pending,
               count(*) FILTER (WHERE status = 'pending' AND run_after <= now()) AS runnable,
               count(*) FILTER (WHERE status = 'pending' AND attempts > 0) AS retrying,
               count(*) FILTER (WHERE status = 'running') AS running,
               count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
               count(*) FILTER (WHERE status = 'failed') AS failed,
               now() - min(enqueued_at) FILTER (WHERE status = 'pending') AS oldest_pending_age,
               count(*) FILTER (WHERE status = 'succeeded'
                                  AND finished_at > now() - interval '1 minute') AS finished_last_minute
          FROM attribution_recompute_jobs) j
  -- A join, not a subquery in the select list: Citus plans this on distributed tables.
 CROSS JOIN (SELECT count(*) AS dead_letters FROM worker_failed_jobs WHERE redriven_at IS NULL) d;

-- Queue metrics per tenant, for monitoring (postgres_exporter: docs/postgres_exporter.yaml).
-- One row per tenant with jobs or dead letters. SECURITY DEFINER so that a monitoring
-- role sees every tenant's counts without reading any tenant's data; EXECUTE goes to
-- pg_monitor, not to application roles (per-tenant backlog is other tenants' business).
CREATE FUNCTION attribution_metrics()
RETURNS TABLE (tenant_id uuid, pending bigint, runnable bigint, retrying bigint, running bigint,
               succeeded bigint, failed bigint, oldest_pending_age_seconds double precision,
               finished_last_minute bigint, dead_letters bigint, workers bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
WITH jobs AS (
    SELECT j.tenant_id,
           count(*) FILTER (WHERE j.status = 'pending') AS pending,
           count(*) FILTER (WHERE j.status = 'pending' AND j.run_after <= now()) AS runnable,
           count(*) FILTER (WHERE j.status = 'pending' AND j.attempts > 0) AS retrying,
           count(*) FILTER (WHERE j.status = 'running') AS running,
           count(*) FILTER (WHERE j.status = 'succeeded') AS succeeded,
           count(*) FILTER (WHERE j.status = 'failed') AS failed,
           extract(epoch FROM now() - min(j.enqueued_at) FILTER (WHERE j.status = 'pending'))::float8
               AS oldest_pending_age_seconds,
           count(*) FILTER (WHERE j.status = 'succeeded'
                              AND j.finished_at > now() - interval '1 minute') AS finished_last_minute
      FROM @extschema@.attribution_recompute_jobs j
     GROUP BY j.tenant_id
), dead AS (
    SELECT d.tenant_id, count(*) AS dead_letters
      FROM @extschema@.worker_failed_jobs d
     WHERE d.redriven_at IS NULL
     GROUP BY d.tenant_id
)
SELECT coalesce(jobs.tenant_id, dead.tenant_id),
       coalesce(jobs.pending, 0), coalesce(jobs.runnable, 0), coalesce(jobs.retrying, 0),
       coalesce(jobs.running, 0), coalesce(jobs.succeeded, 0), coalesce(jobs.failed, 0),
       coalesce(jobs.oldest_pending_age_seconds, 0), coalesce(jobs.finished_last_minute, 0),
       coalesce(dead.dead_letters, 0), @extschema@.attribution_worker_count()
  FROM jobs FULL JOIN dead ON dead.tenant_id = jobs.tenant_id
 ORDER BY 1
$$;
REVOKE EXECUTE ON FUNCTION attribution_metrics() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION attribution_metrics(), attribution_worker_count() TO pg_monitor;

-- What an application role may do; RLS narrows every one of these to its tenant.
-- Events are the application's. The queue, the dead letters and the allocations are the
-- extension's: application roles read them, and change them only through
-- schedule_recompute_window(), compute_allocations() and redrive_failed_job(), which
-- act only for the caller's tenant. (Without UPDATE they cannot lock those tables'
-- rows or take more than ACCESS SHARE on them either.)
GRANT SELECT ON attribution_tenants, attribution_models TO attribution_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON attribution_events TO attribution_app;
GRANT SELECT ON attribution_allocations, attribution_recompute_jobs, worker_failed_jobs
    TO attribution_app;
GRANT SELECT ON attribution_queue_health TO attribution_app;
GRANT EXECUTE ON FUNCTION attribution_current_tenant(), attribution_worker_count() TO attribution_app;

-- The worker acts as an application role for the tenant of each job, writes that
-- tenant's allocations, and owns the queue.
GRANT attribution_app TO attribution_worker;
GRANT INSERT, UPDATE, DELETE ON attribution_allocations TO attribution_worker;
GRANT UPDATE (tenant_id) ON attribution_events TO attribution_worker;
GRANT SELECT, UPDATE, DELETE ON attribution_recompute_jobs TO attribution_worker;
GRANT SELECT, INSERT ON worker_failed_jobs TO attribution_worker;
GRANT SELECT, DELETE ON attribution_event_changes TO attribution_worker;

-- pg_dump keeps the rows of every table (and the identity sequences' positions); the
-- built-in model comes with CREATE EXTENSION, so only models users added are dumped.
SELECT pg_catalog.pg_extension_config_dump('attribution_tenants', '');
SELECT pg_catalog.pg_extension_config_dump('attribution_models', $$WHERE model_version <> '1.0.0'$$);
SELECT pg_catalog.pg_extension_config_dump('attribution_events', '');
SELECT pg_catalog.pg_extension_config_dump('attribution_allocations', '');
SELECT pg_catalog.pg_extension_config_dump('attribution_recompute_jobs', '');
SELECT pg_catalog.pg_extension_config_dump('worker_failed_jobs', '');
SELECT pg_catalog.pg_extension_config_dump('attribution_event_changes', '');
SELECT pg_catalog.pg_extension_config_dump('attribution_allocations_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('worker_failed_jobs_id_seq', '');

-- Multi-touch attribution (README, "Multi-touch models").
--
-- A conversion (an event) belongs to a customer: its customer_key, or, for writers that
-- still send the 0.1 INSERT, the "customer_key" member of its raw_payload.
ALTER TABLE attribution_events ADD COLUMN customer_key text
    CONSTRAINT attribution_events_customer_key_length
    CHECK (pg_catalog.length(customer_key) BETWEEN 1 AND 200);

-- A customer's touchpoints: the marketing contacts a multi-touch model credits.
CREATE TABLE attribution_touchpoints (
    id            uuid NOT NULL DEFAULT gen_random_uuid(),
    tenant_id     uuid NOT NULL REFERENCES attribution_tenants (id),
    customer_key  text NOT NULL CHECK (pg_catalog.length(customer_key) BETWEEN 1 AND 200),
    occurred_at   timestamptz NOT NULL CHECK (isfinite(occurred_at)),
    channel       text NOT NULL CHECK (pg_catalog.length(channel) BETWEEN 1 AND 200),
    campaign      text,
    cost_cents    bigint CHECK (cost_cents BETWEEN 0 AND 1000000000000000),
    raw_payload   jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(raw_payload) = 'object'),
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT attribution_touchpoints_pkey PRIMARY KEY (tenant_id, id)
);
-- A conversion's path: its customer's touchpoints before it (with their channels, so
-- that a path can be read from the index alone once the pages are all-visible).
CREATE INDEX attribution_touchpoints_path_idx
    ON attribution_touchpoints (tenant_id, customer_key, occurred_at) INCLUDE (channel);
-- A conversion's customer, to find the conversions a late touchpoint changes.
-- Partial: events without a customer (all of them, for tenants without multi-touch
-- models) cost nothing here. A payload key longer than a touchpoint's can match none, and
-- is left out (so no key is too long for an index entry).
CREATE INDEX attribution_events_customer_idx
    ON attribution_events (tenant_id, (coalesce(customer_key, raw_payload OPERATOR(pg_catalog.->>) 'customer_key')), occurred_at)
    WHERE pg_catalog.length(coalesce(customer_key, raw_payload OPERATOR(pg_catalog.->>) 'customer_key')) <= 200;

-- Which multi-touch models a tenant uses. Weighted models apply to every tenant, as
-- before; a multi-touch model runs (and its windows are scheduled) only for tenants that
-- list it here. Each tenant manages its own rows.
CREATE TABLE attribution_tenant_models (
    tenant_id      uuid NOT NULL REFERENCES attribution_tenants (id),
    model_version  text NOT NULL REFERENCES attribution_models (model_version),
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT attribution_tenant_models_pkey PRIMARY KEY (tenant_id, model_version)
);

ALTER TABLE attribution_touchpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE attribution_touchpoints FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON attribution_touchpoints
    USING (tenant_id = attribution_current_tenant());
ALTER TABLE attribution_tenant_models ENABLE ROW LEVEL SECURITY;
ALTER TABLE attribution_tenant_models FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON attribution_tenant_models
    USING (tenant_id = attribution_current_tenant());

GRANT SELECT, INSERT, UPDATE, DELETE ON attribution_touchpoints TO attribution_app;
-- Not DELETE: with it a role could LOCK the table, which every insert into the events
-- reads (attribution_disable_model() turns a model off instead).
GRANT SELECT, INSERT ON attribution_tenant_models TO attribution_app;
SELECT pg_catalog.pg_extension_config_dump('attribution_touchpoints', '');
SELECT pg_catalog.pg_extension_config_dump('attribution_tenant_models', '');

-- The (tenant, multi-touch model) pairs that have ever had allocations, written by every
-- multi-touch computation. A window's first computation of a pair not listed here
-- cannot find allocations of its events to clear, and skips looking for them (one index
-- probe per conversion). Single-server layout only: once distributed on Citus, first
-- computations always look.
CREATE TABLE attribution_touch_allocated (
    tenant_id      uuid NOT NULL,
    model_version  text NOT NULL
);
-- Not unique: two first computations of the same pair can both add it (a unique key
-- would make the second wait for the first's commit), and a few duplicates are harmless.
CREATE INDEX attribution_touch_allocated_idx ON attribution_touch_allocated (tenant_id, model_version);
ALTER TABLE attribution_touch_allocated ENABLE ROW LEVEL SECURITY;
ALTER TABLE attribution_touch_allocated FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON attribution_touch_allocated
    USING (tenant_id = attribution_current_tenant());
GRANT SELECT, INSERT ON attribution_touch_allocated TO attribution_worker;
-- Dumped: restored allocations without their row would be taken for none.
SELECT pg_catalog.pg_extension_config_dump('attribution_touch_allocated', '');

-- Fits of the data-driven models (Markov, Shapley), per tenant: written by
-- attribution_fit_model(), read by the computations (the latest fit of a tenant and
-- model is the one allocations use). A fit never changes; a new one gets a new id.
CREATE TABLE attribution_model_fits (
    id                      bigint GENERATED BY DEFAULT AS IDENTITY,
    tenant_id               uuid NOT NULL REFERENCES attribution_tenants (id),
    model_version           text NOT NULL REFERENCES attribution_models (model_version),
    kind                    text NOT NULL CHECK (kind IN ('markov', 'shapley')),
    period_start            timestamptz NOT NULL,
    period_end              timestamptz NOT NULL,
    journeys                bigint NOT NULL,
    conversions             bigint NOT NULL,
    -- Channels in name order, with each one's removal effect (Markov) or credited
    -- conversions (Shapley).
    channels                text[] NOT NULL,
    channel_values          double precision[] NOT NULL,
    conversion_probability  double precision,
    -- Shapley: the converting channel sets, [{"channels": [...], "conversions": "n", "journeys": "n"}].
    coalitions              jsonb,
    correlation_id          text,
    fitted_at               timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT attribution_model_fits_pkey PRIMARY KEY (tenant_id, id)
);
ALTER TABLE attribution_model_fits ENABLE ROW LEVEL SECURITY;
ALTER TABLE attribution_model_fits FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON attribution_model_fits
    USING (tenant_id = attribution_current_tenant());
GRANT SELECT ON attribution_model_fits TO attribution_app;
SELECT pg_catalog.pg_extension_config_dump('attribution_model_fits', '');
SELECT pg_catalog.pg_extension_config_dump('attribution_model_fits_id_seq', '');
