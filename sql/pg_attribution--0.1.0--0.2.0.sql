-- pg_attribution 0.1.0 -> 0.2.0: data safety and tenant hardening.
--   * pg_dump/pg_restore keep every row (tables marked with pg_extension_config_dump);
--   * events are keyed by (tenant_id, id), so one tenant's ids cannot shadow another's;
--   * the queue, dead letters and allocations are written only by the extension:
--     application roles read them and act through SECURITY DEFINER functions;
--   * CHECK constraints on job counters, windows and correlation ids;
--   * indexes for the fair (per-tenant round-robin) claim, replacing the run_after one;
--   * every function that runs SQL has a pinned search_path;
--   * attribution_queue_health counts workers for application roles too;
--   * attribution_metrics() for monitoring (pg_monitor);
--   * incremental recompute: recorded event changes, full-pass requests, last computation.
--   * constraints that bound functions through the search_path are rebound to pg_catalog;
--   * every statement here names pg_catalog where a look-alike could match better.
-- Released scripts are frozen: fix forward in the next script.
\echo Use "ALTER EXTENSION pg_attribution UPDATE TO '0.2.0'" to load this file. \quit

-- The tenant context, with every name qualified so that it can still be inlined.
CREATE OR REPLACE FUNCTION attribution_current_tenant() RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
SELECT CASE WHEN pg_catalog.current_setting('attribution.tenant_id', true) OPERATOR(pg_catalog.=) ''
            THEN NULL
            ELSE pg_catalog.current_setting('attribution.tenant_id', true)::pg_catalog.uuid END
$$;

ALTER FUNCTION attribution_models_track_channels() SET search_path = pg_catalog, pg_temp;

-- 0.1.0 bound these checks through the search_path at CREATE EXTENSION time, so a
-- look-alike cardinality() or array_position() in the extension's schema could have been
-- bound in (and run as whoever writes a model). Rebind them to pg_catalog's.
ALTER TABLE attribution_tenants DROP CONSTRAINT attribution_tenants_name_check,
    ADD CONSTRAINT attribution_tenants_name_check CHECK (pg_catalog.length(name) BETWEEN 1 AND 200);
ALTER TABLE attribution_models DROP CONSTRAINT attribution_models_channels_shape,
    ADD CONSTRAINT attribution_models_channels_shape CHECK (
        pg_catalog.cardinality(channels) BETWEEN 1 AND 64
        AND pg_catalog.cardinality(weights) = pg_catalog.cardinality(channels)
        AND pg_catalog.array_position(channels, NULL) IS NULL
        AND pg_catalog.array_position(weights, NULL) IS NULL
        AND 0 < ALL (weights)
    );

-- Events keyed by (tenant_id, id).
ALTER TABLE attribution_allocations DROP CONSTRAINT attribution_allocations_event_fkey;
ALTER TABLE attribution_events DROP CONSTRAINT attribution_events_pkey;
ALTER TABLE attribution_events DROP CONSTRAINT attribution_events_tenant_id_id_key;
ALTER TABLE attribution_events ADD CONSTRAINT attribution_events_pkey PRIMARY KEY (tenant_id, id);
ALTER TABLE attribution_allocations ADD CONSTRAINT attribution_allocations_event_fkey
    FOREIGN KEY (tenant_id, event_id) REFERENCES attribution_events (tenant_id, id) ON DELETE CASCADE;

-- The foreign key's per-row check on insert is switched off: only the extension writes
-- allocations (application roles may only read them), and every statement that does
-- locks the events it allocates FOR KEY SHARE in the same set-based read, which is what
-- the check would do one row and one query at a time (it cost more than half of a large
-- window's computation). The key stays declared, so deleting an event still cascades to
-- its allocations and an event's key cannot change while allocations reference it.
DO $disable_fk_check$
DECLARE t name;
BEGIN
    FOR t IN SELECT tg.tgname FROM pg_catalog.pg_trigger tg
               JOIN pg_catalog.pg_constraint c ON c.oid = tg.tgconstraint
              WHERE c.conname = 'attribution_allocations_event_fkey'
                AND c.conrelid = 'attribution_allocations'::pg_catalog.regclass
                AND tg.tgrelid = 'attribution_allocations'::pg_catalog.regclass
    LOOP
        EXECUTE pg_catalog.format('ALTER TABLE attribution_allocations DISABLE TRIGGER %I', t);
    END LOOP;
END
$disable_fk_check$;

-- 0.1.0 let application roles write job rows directly. Bring what they may have written
-- within the new constraints: counters into range, unsafe correlation ids replaced by the
-- job id, and jobs whose window can never run moved to the dead-letter table.
UPDATE attribution_recompute_jobs
   SET run_count = greatest(run_count, 0), attempts = greatest(attempts, 0)
 WHERE run_count < 0 OR attempts < 0;
UPDATE attribution_recompute_jobs SET last_correlation_id = id::text
 WHERE last_correlation_id !~ '^[!-~]{1,128}$';
UPDATE worker_failed_jobs SET correlation_id = job_id::text
 WHERE correlation_id !~ '^[!-~]{1,128}$';
UPDATE worker_failed_jobs SET attempts = 0 WHERE attempts < 0;
-- inject_failure is for tests run by a DBA; under 0.1.0 any application role could set it.
UPDATE attribution_recompute_jobs SET inject_failure = NULL WHERE inject_failure IS NOT NULL;
WITH unrunnable AS (
    DELETE FROM attribution_recompute_jobs
     WHERE NOT (isfinite(window_start) AND isfinite(window_end))
 RETURNING *
)
INSERT INTO worker_failed_jobs (job_id, tenant_id, payload, correlation_id, sqlstate, error_message, attempts)
SELECT id, tenant_id,
       pg_catalog.jsonb_build_object('tenant_id', tenant_id, 'window_start', window_start,
                          'window_end', window_end, 'model_version', model_version,
                          'correlation_id', last_correlation_id),
       last_correlation_id, '22008',
       'the job row cannot run: window bounds must be finite timestamps (removed by the 0.2.0 upgrade)',
       attempts
  FROM unrunnable;

ALTER TABLE attribution_recompute_jobs
    ADD CONSTRAINT attribution_recompute_jobs_window_finite
        CHECK (isfinite(window_start) AND isfinite(window_end)),
    ADD CONSTRAINT attribution_recompute_jobs_counters CHECK (run_count >= 0 AND attempts >= 0),
    ADD CONSTRAINT attribution_recompute_jobs_correlation_id
        CHECK (last_correlation_id ~ '^[!-~]{1,128}$');
ALTER TABLE worker_failed_jobs
    ADD CONSTRAINT worker_failed_jobs_attempts CHECK (attempts >= 0),
    ADD CONSTRAINT worker_failed_jobs_correlation_id CHECK (correlation_id ~ '^[!-~]{1,128}$');

-- The claim goes tenant by tenant now; a global run_after index would tempt the
-- planner into filtering every tenant's jobs.
DROP INDEX attribution_recompute_jobs_runnable_idx;
CREATE INDEX attribution_recompute_jobs_tenant_runnable_idx
    ON attribution_recompute_jobs (tenant_id, run_after) WHERE status = 'pending';

-- Worker count for every role.
CREATE FUNCTION attribution_worker_count() RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
SELECT count(*) FROM pg_catalog.pg_stat_activity
 WHERE backend_type = 'pg_attribution worker' AND datname = pg_catalog.current_database()
$$;
REVOKE EXECUTE ON FUNCTION attribution_worker_count() FROM PUBLIC;

CREATE OR REPLACE VIEW attribution_queue_health WITH (security_invoker = true) AS
SELECT count(*) FILTER (WHERE status = 'pending') AS pending,
       count(*) FILTER (WHERE status = 'pending' AND run_after <= now()) AS runnable,
       count(*) FILTER (WHERE status = 'pending' AND attempts > 0) AS retrying,
       count(*) FILTER (WHERE status = 'running') AS running,
       count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       now() - min(enqueued_at) FILTER (WHERE status = 'pending') AS oldest_pending_age,
       count(*) FILTER (WHERE status = 'succeeded'
                          AND finished_at > now() - interval '1 minute') AS finished_last_minute,
       (SELECT count(*) FROM worker_failed_jobs WHERE redriven_at IS NULL) AS dead_letters,
       attribution_worker_count() AS workers
  FROM attribution_recompute_jobs;

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

-- The queue, the dead letters and the allocations become the extension's own.
REVOKE INSERT, UPDATE, DELETE ON attribution_allocations FROM attribution_app;
REVOKE INSERT, UPDATE ON attribution_recompute_jobs FROM attribution_app;
REVOKE UPDATE (redriven_at) ON worker_failed_jobs FROM attribution_app;
GRANT EXECUTE ON FUNCTION attribution_worker_count() TO attribution_app;
GRANT INSERT, UPDATE, DELETE ON attribution_allocations TO attribution_worker;

ALTER FUNCTION schedule_recompute_window(uuid, timestamptz, timestamptz, text, text)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION compute_allocations(uuid, timestamptz, timestamptz, text)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION redrive_failed_job(bigint)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION attribution_events_schedule()
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
REVOKE EXECUTE ON FUNCTION
    schedule_recompute_window(uuid, timestamptz, timestamptz, text, text),
    compute_allocations(uuid, timestamptz, timestamptz, text),
    redrive_failed_job(bigint),
    attribution_events_schedule()
FROM PUBLIC;

-- Backups keep every row.
SELECT pg_catalog.pg_extension_config_dump('attribution_tenants', '');
SELECT pg_catalog.pg_extension_config_dump('attribution_models', $$WHERE model_version <> '1.0.0'$$);
SELECT pg_catalog.pg_extension_config_dump('attribution_events', '');
SELECT pg_catalog.pg_extension_config_dump('attribution_allocations', '');
SELECT pg_catalog.pg_extension_config_dump('attribution_recompute_jobs', '');
SELECT pg_catalog.pg_extension_config_dump('worker_failed_jobs', '');
SELECT pg_catalog.pg_extension_config_dump('attribution_allocations_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('worker_failed_jobs_id_seq', '');

-- Incremental recompute.
ALTER TABLE attribution_models ADD COLUMN changed_at timestamptz;
CREATE OR REPLACE FUNCTION attribution_models_track_channels() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.channels IS DISTINCT FROM OLD.channels THEN
        NEW.channels_changed_at := now();
    END IF;
    IF (NEW.channels, NEW.weights) IS DISTINCT FROM (OLD.channels, OLD.weights) THEN
        NEW.changed_at := now();
    END IF;
    RETURN NEW;
END $$;
ALTER TABLE attribution_recompute_jobs
    ADD COLUMN full_requested boolean NOT NULL DEFAULT false,
    ADD COLUMN computed_at timestamptz;
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
ALTER TABLE attribution_event_changes ENABLE ROW LEVEL SECURITY;
ALTER TABLE attribution_event_changes FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON attribution_event_changes
    USING (tenant_id = attribution_current_tenant());
GRANT SELECT, DELETE ON attribution_event_changes TO attribution_worker;
SELECT pg_catalog.pg_extension_config_dump('attribution_event_changes', '');

-- A full recompute for repairs.
CREATE FUNCTION "schedule_full_recompute"(
	"tenant_id" uuid,
	"window_start" timestamp with time zone,
	"window_end" timestamp with time zone,
	"correlation_id" TEXT DEFAULT NULL,
	"model_version" TEXT DEFAULT '1.0.0'
) RETURNS uuid
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'schedule_full_recompute_wrapper';
ALTER FUNCTION schedule_full_recompute(uuid, timestamptz, timestamptz, text, text)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
REVOKE EXECUTE ON FUNCTION schedule_full_recompute(uuid, timestamptz, timestamptz, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION schedule_full_recompute(uuid, timestamptz, timestamptz, text, text) TO attribution_app;

CREATE FUNCTION "attribution_models_schedule"()
	RETURNS TRIGGER
	LANGUAGE c
	AS 'MODULE_PATHNAME', 'attribution_models_schedule_wrapper';

-- A model added active, or whose channels or weights change (or that becomes active),
-- gets a full recompute of every window that holds events (src/api/trigger.rs).
CREATE TRIGGER attribution_models_schedule_insert
    AFTER INSERT ON attribution_models
    REFERENCING NEW TABLE AS attribution_new_models
    FOR EACH STATEMENT EXECUTE FUNCTION attribution_models_schedule();
CREATE TRIGGER attribution_models_schedule_update
    AFTER UPDATE ON attribution_models
    REFERENCING OLD TABLE AS attribution_old_models NEW TABLE AS attribution_new_models
    FOR EACH STATEMENT EXECUTE FUNCTION attribution_models_schedule();
ALTER FUNCTION attribution_models_schedule()
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
REVOKE EXECUTE ON FUNCTION attribution_models_schedule() FROM PUBLIC;
