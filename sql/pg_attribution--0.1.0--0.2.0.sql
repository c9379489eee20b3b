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
-- (Also: the multi-touch kinds, which have parameters instead of channels and weights.)
ALTER TABLE attribution_models DROP CONSTRAINT attribution_models_channels_shape,
    DROP CONSTRAINT attribution_models_kind_check,
    ALTER COLUMN channels DROP NOT NULL,
    ALTER COLUMN weights DROP NOT NULL,
    ADD COLUMN params jsonb NOT NULL DEFAULT '{}'::jsonb,
    ADD CONSTRAINT attribution_models_kind_check CHECK (kind IN ('weighted', 'first_touch',
        'last_touch', 'last_non_direct', 'linear', 'position_based', 'time_decay', 'markov',
        'shapley')),
    ADD CONSTRAINT attribution_models_channels_shape CHECK (
        CASE WHEN kind OPERATOR(pg_catalog.=) 'weighted' THEN
            pg_catalog.cardinality(channels) BETWEEN 1 AND 64
            AND pg_catalog.cardinality(weights) = pg_catalog.cardinality(channels)
            AND pg_catalog.array_position(channels, NULL) IS NULL
            AND pg_catalog.array_position(weights, NULL) IS NULL
            AND 0 < ALL (weights)
        ELSE channels IS NULL AND weights IS NULL END
    );

-- Events keyed by (tenant_id, id).
ALTER TABLE attribution_allocations DROP CONSTRAINT attribution_allocations_event_fkey;
ALTER TABLE attribution_events DROP CONSTRAINT attribution_events_pkey;
ALTER TABLE attribution_events DROP CONSTRAINT attribution_events_tenant_id_id_key;
ALTER TABLE attribution_events ADD CONSTRAINT attribution_events_pkey PRIMARY KEY (tenant_id, id);
ALTER TABLE attribution_allocations ADD CONSTRAINT attribution_allocations_event_fkey
    FOREIGN KEY (tenant_id, event_id) REFERENCES attribution_events (tenant_id, id) ON DELETE CASCADE;

-- The foreign key's per-row check on insert is switched off: only the extension writes
-- allocations (application roles may only read them; the worker role is the extension's
-- own and trusted), and every statement that does locks the events it allocates FOR KEY
-- SHARE in the same set-based read, which is what the check would do one row and one
-- query at a time (it cost more than half of a large window's computation). The key
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

-- The queue, the dead letters and the allocations become the extension's own.
REVOKE INSERT, UPDATE, DELETE ON attribution_allocations FROM attribution_app;
REVOKE INSERT, UPDATE ON attribution_recompute_jobs FROM attribution_app;
REVOKE UPDATE (redriven_at) ON worker_failed_jobs FROM attribution_app;
GRANT EXECUTE ON FUNCTION attribution_worker_count() TO attribution_app;
GRANT INSERT, UPDATE, DELETE ON attribution_allocations TO attribution_worker;
GRANT UPDATE (tenant_id) ON attribution_events TO attribution_worker;

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
    IF (NEW.kind, NEW.channels, NEW.weights, NEW.params)
       IS DISTINCT FROM (OLD.kind, OLD.channels, OLD.weights, OLD.params) THEN
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
-- A queue: every row is deleted soon after it is written. Vacuum it after a fixed
-- number of dead rows, not a fraction of the table, so that a bulk load's dead rows do
-- not linger in the window index, which every run of the window scans.
ALTER TABLE attribution_event_changes SET (
    autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000,
    autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 50000,
    autovacuum_vacuum_cost_delay = 0);
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
-- Scaling out on Citus: attribution_distribute() turns an installation on a Citus
-- coordinator into the distributed layout, data included. Tenant tables are distributed
-- by tenant_id and co-located (a tenant's events, allocations, jobs, dead letters and
-- change records share one shard index, so they live on one node); the registries are
-- reference tables (a copy on every node). Every unique and foreign key of a tenant table
-- already leads with tenant_id, as Citus requires.
--
-- One change of keys: attribution_allocations loses its surrogate id (an identity column,
-- key (tenant_id, id)); its rows are identified by (tenant_id, event_id, model_version,
-- channel), unique already. Citus runs an INSERT ... SELECT on the shards only when no
-- column default draws from a sequence; with one, the computation's INSERT would pull
-- the window's events to the node that planned it.
--
-- Idempotent: tables already in this layout are left alone, so it may be run again (after
-- adding a node, say). It runs in one transaction: on error nothing is distributed.
-- Superusers only (EXECUTE is revoked from PUBLIC): it changes every node.
CREATE FUNCTION attribution_distribute(shard_count integer DEFAULT NULL)
RETURNS TABLE (table_name regclass, layout text)
LANGUAGE plpgsql
-- Citus's notices on each table it copies say nothing the result does not.
SET search_path = pg_catalog, pg_temp SET client_min_messages = warning
AS $$
DECLARE
    ext_schema text;
    ext_version text;
    node record;
    t text;
    placed record;
    events_colocation integer;
    -- Citus builds a foreign key between distributed tables only once both are
    -- distributed, so these are dropped first and created again afterwards.
    foreign_keys constant text[][] := ARRAY[
        ['attribution_events', 'attribution_events_tenant_id_fkey',
         'FOREIGN KEY (tenant_id) REFERENCES %1$s.attribution_tenants (id)'],
        ['attribution_allocations', 'attribution_allocations_event_fkey',
         'FOREIGN KEY (tenant_id, event_id) REFERENCES %1$s.attribution_events (tenant_id, id) ON DELETE CASCADE'],
        ['attribution_recompute_jobs', 'attribution_recompute_jobs_tenant_id_fkey',
         'FOREIGN KEY (tenant_id) REFERENCES %1$s.attribution_tenants (id)'],
        ['attribution_recompute_jobs', 'attribution_recompute_jobs_model_version_fkey',
         'FOREIGN KEY (model_version) REFERENCES %1$s.attribution_models (model_version)'],
        ['worker_failed_jobs', 'worker_failed_jobs_tenant_id_fkey',
         'FOREIGN KEY (tenant_id) REFERENCES %1$s.attribution_tenants (id)'],
        ['attribution_touchpoints', 'attribution_touchpoints_tenant_id_fkey',
         'FOREIGN KEY (tenant_id) REFERENCES %1$s.attribution_tenants (id)'],
        ['attribution_model_fits', 'attribution_model_fits_tenant_id_fkey',
         'FOREIGN KEY (tenant_id) REFERENCES %1$s.attribution_tenants (id)'],
        ['attribution_model_fits', 'attribution_model_fits_model_version_fkey',
         'FOREIGN KEY (model_version) REFERENCES %1$s.attribution_models (model_version)'],
        ['attribution_tenant_models', 'attribution_tenant_models_tenant_id_fkey',
         'FOREIGN KEY (tenant_id) REFERENCES %1$s.attribution_tenants (id)'],
        ['attribution_tenant_models', 'attribution_tenant_models_model_version_fkey',
         'FOREIGN KEY (model_version) REFERENCES %1$s.attribution_models (model_version)']];
    reference_tables constant text[] := ARRAY['attribution_tenants', 'attribution_models',
        'attribution_tenant_models'];
    -- attribution_events first: the others are co-located with it.
    tenant_tables constant text[] := ARRAY['attribution_events', 'attribution_allocations',
        'attribution_recompute_jobs', 'worker_failed_jobs', 'attribution_event_changes',
        'attribution_touchpoints', 'attribution_model_fits'];
    pending boolean := false;
    i integer;
    -- Run on every node, before any table is distributed: the coordinator's table and
    -- the worker nodes' own copies (which stand in for the distributed table there)
    -- must have the same columns.
    drop_allocation_id text;
BEGIN
    IF shard_count IS NOT NULL AND shard_count NOT BETWEEN 1 AND 64000 THEN
        RAISE EXCEPTION 'shard_count must be between 1 and 64000, not %', shard_count
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF pg_catalog.to_regclass('pg_catalog.pg_dist_partition') IS NULL THEN
        RAISE EXCEPTION 'Citus is not installed in this database'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Add citus to shared_preload_libraries (before pg_attribution), restart, '
                         'run CREATE EXTENSION citus and add the worker nodes with citus_add_node().';
    END IF;
    IF NOT pg_catalog.citus_is_coordinator() THEN
        RAISE EXCEPTION 'attribution_distribute() runs on the Citus coordinator'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    SELECT pg_catalog.quote_ident(n.nspname), e.extversion INTO ext_schema, ext_version
      FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
     WHERE e.extname = 'pg_attribution';

    -- Every node runs the extension's functions (the trigger and the policies on its
    -- shards, the workers that drain its part of the queue): each needs the same version.
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_dist_node
                    WHERE groupid <> 0 AND noderole = 'primary' AND isactive) THEN
        RAISE EXCEPTION 'the Citus cluster has no worker node'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Add the worker nodes with citus_add_node() first.';
    END IF;
    FOR node IN SELECT * FROM pg_catalog.run_command_on_workers(
            $c$SELECT coalesce((SELECT extversion FROM pg_catalog.pg_extension
                                 WHERE extname = 'pg_attribution'), 'none')$c$) LOOP
        IF NOT node.success OR node.result IS DISTINCT FROM ext_version THEN
            RAISE EXCEPTION 'worker node %:% has pg_attribution %, the coordinator has %',
                    node.nodename, node.nodeport,
                    CASE WHEN node.success THEN node.result ELSE '(unreachable)' END, ext_version
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Install the same pg_attribution build on every node, with '
                             'pg_attribution in shared_preload_libraries after citus.';
        END IF;
    END LOOP;

    -- What is there already: this layout is fine, any other one is the DBA's to undo.
    FOREACH t IN ARRAY reference_tables || tenant_tables LOOP
        SELECT p.partmethod, p.repmodel,
               CASE WHEN p.partmethod = 'h'
                    THEN pg_catalog.column_to_column_name(p.logicalrelid, p.partkey) END AS column_name,
               p.colocationid
          INTO placed
          FROM pg_catalog.pg_dist_partition p
         WHERE p.logicalrelid = pg_catalog.format('%s.%I', ext_schema, t)::pg_catalog.regclass;
        IF NOT FOUND THEN
            pending := true;
        ELSIF t = ANY (reference_tables) AND (placed.partmethod, placed.repmodel) <> ('n', 't') THEN
            RAISE EXCEPTION 'table % is already a Citus table, but not a reference table', t
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = pg_catalog.format('Run SELECT undistribute_table(%L) first.', t);
        ELSIF t = ANY (tenant_tables) AND (placed.partmethod <> 'h' OR placed.column_name <> 'tenant_id') THEN
            RAISE EXCEPTION 'table % is already distributed, but not by tenant_id', t
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = pg_catalog.format('Run SELECT undistribute_table(%L) first.', t);
        ELSIF t = 'attribution_events' THEN
            events_colocation := placed.colocationid;
        ELSIF t = ANY (tenant_tables) AND placed.colocationid IS DISTINCT FROM events_colocation THEN
            RAISE EXCEPTION 'table % is distributed by tenant_id but not co-located with attribution_events', t
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = pg_catalog.format('Run SELECT undistribute_table(%L) first.', t);
        END IF;
    END LOOP;

    drop_allocation_id := pg_catalog.format($d$
            DO $drop$
            BEGIN
                -- On a worker node, the table stands in for a distributed one, whose
                -- DDL Citus otherwise accepts only from the coordinator.
                IF NOT pg_catalog.citus_is_coordinator() THEN
                    PERFORM pg_catalog.set_config('citus.enable_ddl_propagation', 'off', true);
                END IF;
                IF EXISTS (SELECT FROM pg_catalog.pg_depend
                            WHERE classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                              AND objid = pg_catalog.to_regclass(%1$L) AND deptype = 'e') THEN
                    ALTER EXTENSION pg_attribution DROP SEQUENCE %2$s.attribution_allocations_id_seq;
                END IF;
                IF EXISTS (SELECT FROM pg_catalog.pg_attribute
                            WHERE attrelid = '%2$s.attribution_allocations'::pg_catalog.regclass
                              AND attname = 'id' AND NOT attisdropped) THEN
                    ALTER TABLE %2$s.attribution_allocations DROP COLUMN id;
                END IF;
            END
            $drop$
        $d$, ext_schema || '.attribution_allocations_id_seq', ext_schema);
    IF pending THEN
        EXECUTE drop_allocation_id;
    END IF;
    -- Also on every run: a worker node added since has the extension's tables as
    -- CREATE EXTENSION made them.
    FOR node IN SELECT * FROM pg_catalog.run_command_on_workers(drop_allocation_id) LOOP
        IF NOT node.success THEN
            RAISE EXCEPTION 'could not prepare worker node %:%: %', node.nodename, node.nodeport, node.result
                USING ERRCODE = 'object_not_in_prerequisite_state';
        END IF;
    END LOOP;

    IF pending THEN
        -- The triggers on attribution_events go to every shard and fire there; Citus
        -- asks for this setting to allow that.
        PERFORM pg_catalog.set_config('citus.enable_unsafe_triggers', 'on', true);
        -- One connection per node, so that a table distributed in this transaction can
        -- be referenced by the next one.
        PERFORM pg_catalog.set_config('citus.multi_shard_modify_mode', 'sequential', true);
        IF shard_count IS NOT NULL THEN
            PERFORM pg_catalog.set_config('citus.shard_count', shard_count::text, true);
        END IF;
        -- On the worker nodes the extension's tables stand in for the distributed ones
        -- (Citus does not create tables an extension owns); their foreign keys would
        -- clash with the ones created below, which reach the worker nodes as well.
        FOR node IN SELECT * FROM pg_catalog.run_command_on_workers((
                SELECT pg_catalog.string_agg(pg_catalog.format(
                           'ALTER TABLE %s.%I DROP CONSTRAINT IF EXISTS %I',
                           ext_schema, foreign_keys[k][1], foreign_keys[k][2]), '; ')
                  FROM pg_catalog.generate_subscripts(foreign_keys, 1) AS k)) LOOP
            IF NOT node.success THEN
                RAISE EXCEPTION 'could not prepare worker node %:%: %', node.nodename, node.nodeport, node.result
                    USING ERRCODE = 'object_not_in_prerequisite_state';
            END IF;
        END LOOP;
        FOR i IN 1 .. pg_catalog.array_length(foreign_keys, 1) LOOP
            EXECUTE pg_catalog.format('ALTER TABLE %s.%I DROP CONSTRAINT IF EXISTS %I',
                                      ext_schema, foreign_keys[i][1], foreign_keys[i][2]);
        END LOOP;
        FOREACH t IN ARRAY reference_tables LOOP
            IF NOT EXISTS (SELECT FROM pg_catalog.pg_dist_partition
                            WHERE logicalrelid = pg_catalog.format('%s.%I', ext_schema, t)::pg_catalog.regclass) THEN
                PERFORM pg_catalog.create_reference_table(pg_catalog.format('%s.%I', ext_schema, t)::pg_catalog.regclass);
            END IF;
        END LOOP;
        FOREACH t IN ARRAY tenant_tables LOOP
            IF NOT EXISTS (SELECT FROM pg_catalog.pg_dist_partition
                            WHERE logicalrelid = pg_catalog.format('%s.%I', ext_schema, t)::pg_catalog.regclass) THEN
                PERFORM pg_catalog.create_distributed_table(
                    pg_catalog.format('%s.%I', ext_schema, t)::pg_catalog.regclass, 'tenant_id',
                    colocate_with => CASE WHEN t = 'attribution_events' THEN 'default'
                                          ELSE pg_catalog.format('%s.attribution_events', ext_schema) END);
            END IF;
        END LOOP;
        FOR i IN 1 .. pg_catalog.array_length(foreign_keys, 1) LOOP
            EXECUTE pg_catalog.format('ALTER TABLE %s.%I ADD CONSTRAINT %I ',
                                      ext_schema, foreign_keys[i][1], foreign_keys[i][2])
                 || pg_catalog.format(foreign_keys[i][3], ext_schema);
        END LOOP;
        -- The data now lives in the shards; the coordinator's copies are dead weight.
        FOREACH t IN ARRAY reference_tables || tenant_tables LOOP
            PERFORM pg_catalog.truncate_local_data_after_distributing_table(
                pg_catalog.format('%s.%I', ext_schema, t)::pg_catalog.regclass);
        END LOOP;
    END IF;

    -- Dead-letter ids are drawn on the node that writes the row (its workers). Each
    -- node draws from its own range, as Citus does for the sequences of the tables it
    -- creates: node group g from g * 2^48 on (the coordinator is group 0).
    FOR node IN SELECT * FROM pg_catalog.run_command_on_workers((
            SELECT pg_catalog.string_agg(pg_catalog.format(
                       'SELECT pg_catalog.setval(%1$L, %2$s) FROM %3$s WHERE last_value < %2$s',
                       s, '(SELECT groupid FROM pg_catalog.pg_dist_local_group)::bigint << 48', s), '; ')
              FROM pg_catalog.unnest(ARRAY[ext_schema || '.worker_failed_jobs_id_seq']) AS s)) LOOP
        IF NOT node.success THEN
            RAISE EXCEPTION 'could not set the identity range of worker node %:%: %',
                    node.nodename, node.nodeport, node.result
                USING ERRCODE = 'object_not_in_prerequisite_state';
        END IF;
    END LOOP;

    -- Citus sends a SET LOCAL on to the nodes a transaction reaches only with this
    -- setting; the policies on the shards read attribution.tenant_id there.
    EXECUTE pg_catalog.format('ALTER DATABASE %I SET citus.propagate_set_commands = local',
                              pg_catalog.current_database());

    RETURN QUERY
        SELECT p.logicalrelid::pg_catalog.regclass,
               CASE WHEN p.partmethod = 'n' THEN 'reference'
                    ELSE pg_catalog.format('distributed by tenant_id, %s shards, co-located with attribution_events',
                                           (SELECT count(*) FROM pg_catalog.pg_dist_shard s
                                             WHERE s.logicalrelid = p.logicalrelid)) END
          FROM pg_catalog.pg_dist_partition p
         WHERE p.logicalrelid IN (SELECT pg_catalog.format('%s.%I', ext_schema, u)::pg_catalog.regclass
                                    FROM pg_catalog.unnest(reference_tables || tenant_tables) AS u)
         ORDER BY p.partmethod DESC, 1;
END
$$;
REVOKE EXECUTE ON FUNCTION attribution_distribute(integer) FROM PUBLIC;

-- Running jobs: what a worker with nothing to claim looks at to help a hot window, and
-- what crash recovery looks for.
CREATE INDEX attribution_recompute_jobs_running_idx
    ON attribution_recompute_jobs (started_at) WHERE status = 'running';

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

CREATE FUNCTION "attribution_check_model"(
	"kind" TEXT,
	"channels" TEXT[],
	"params" jsonb
) RETURNS void
STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'attribution_check_model_wrapper';
CREATE FUNCTION "attribution_touch_split"(
	"revenue_cents" bigint,
	"converted_at" timestamp with time zone,
	"touch_at" timestamp with time zone[],
	"touch_channels" TEXT[],
	"kind" TEXT,
	"params" TEXT,
	"fit_id" bigint DEFAULT NULL
) RETURNS TABLE (
	"channel" TEXT,
	"ratio" double precision,
	"cents" bigint
)
STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'attribution_touch_split_wrapper';
CREATE FUNCTION "attribution_touch_split_e10"(
	"revenue_cents" bigint,
	"converted_at" timestamp with time zone,
	"touch_at" timestamp with time zone[],
	"touch_channels" TEXT[],
	"kind" TEXT,
	"params" TEXT,
	"fit_id" bigint
) RETURNS TABLE (
	"channel" TEXT,
	"ratio_e10" bigint,
	"cents" bigint
)
STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'attribution_touch_split_e10_wrapper';
CREATE FUNCTION "attribution_fit_model"(
	"tenant_id" uuid,
	"model_version" TEXT,
	"period_start" timestamp with time zone,
	"period_end" timestamp with time zone
) RETURNS TABLE (
	"fit_id" bigint,
	"channel" TEXT,
	"value" double precision,
	"share" double precision
)
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'attribution_fit_model_wrapper';
CREATE FUNCTION "attribution_disable_model"(
	"tenant_id" uuid,
	"model_version" TEXT
) RETURNS bool
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'attribution_disable_model_wrapper';
CREATE FUNCTION "attribution_tenant_models_schedule"()
	RETURNS TRIGGER
	LANGUAGE c
	AS 'MODULE_PATHNAME', 'attribution_tenant_models_schedule_wrapper';
CREATE FUNCTION "attribution_touchpoints_schedule"()
	RETURNS TRIGGER
	LANGUAGE c
	AS 'MODULE_PATHNAME', 'attribution_touchpoints_schedule_wrapper';

-- Multi-touch models (README, "Multi-touch models"). Every model row is checked, with a
-- message that names what is wrong.
CREATE FUNCTION attribution_models_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- A model version's kind is part of what it is: allocations made under one kind
    -- would otherwise linger for tenants that do not use the other.
    IF TG_OP = 'UPDATE' AND NEW.kind IS DISTINCT FROM OLD.kind THEN
        RAISE EXCEPTION 'the kind of model % cannot change (% to %)', OLD.model_version, OLD.kind, NEW.kind
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Register a new model_version with the new kind.';
    END IF;
    PERFORM @extschema@.attribution_check_model(NEW.kind, NEW.channels, NEW.params);
    RETURN NEW;
END $$;
CREATE TRIGGER attribution_models_check
    BEFORE INSERT OR UPDATE ON attribution_models
    FOR EACH ROW EXECUTE FUNCTION attribution_models_check();
-- A tenant turning a model on gets its windows computed for it.
CREATE TRIGGER attribution_tenant_models_schedule
    AFTER INSERT ON attribution_tenant_models
    REFERENCING NEW TABLE AS attribution_new_tenant_models
    FOR EACH STATEMENT EXECUTE FUNCTION attribution_tenant_models_schedule();
-- Late touchpoints re-attribute the conversions they change.
CREATE TRIGGER attribution_touchpoints_schedule_insert
    AFTER INSERT ON attribution_touchpoints
    REFERENCING NEW TABLE AS attribution_new_touchpoints
    FOR EACH STATEMENT EXECUTE FUNCTION attribution_touchpoints_schedule();
CREATE TRIGGER attribution_touchpoints_schedule_update
    AFTER UPDATE ON attribution_touchpoints
    REFERENCING OLD TABLE AS attribution_old_touchpoints NEW TABLE AS attribution_new_touchpoints
    FOR EACH STATEMENT EXECUTE FUNCTION attribution_touchpoints_schedule();
CREATE TRIGGER attribution_touchpoints_schedule_delete
    AFTER DELETE ON attribution_touchpoints
    REFERENCING OLD TABLE AS attribution_old_touchpoints
    FOR EACH STATEMENT EXECUTE FUNCTION attribution_touchpoints_schedule();
ALTER FUNCTION attribution_tenant_models_schedule()
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION attribution_touchpoints_schedule()
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
REVOKE EXECUTE ON FUNCTION attribution_tenant_models_schedule(), attribution_touchpoints_schedule()
    FROM PUBLIC;
-- A conversion credits a handful of channels, not the planner's default of 1,000 rows
-- per set-returning function: with that estimate a window's statement looked expensive
-- enough to be JIT-compiled, which took longer than running it.
ALTER FUNCTION attribution_touch_split(bigint, timestamptz, timestamptz[], text[], text, text, bigint) ROWS 4;
ALTER FUNCTION attribution_touch_split_e10(bigint, timestamptz, timestamptz[], text[], text, text, bigint) ROWS 4;
-- Pure Rust, like attribution_split_cents: no SQL, no pinned search_path needed.
GRANT EXECUTE ON FUNCTION
    attribution_check_model(text, text[], jsonb),
    attribution_touch_split(bigint, timestamptz, timestamptz[], text[], text, text, bigint)
TO attribution_app;
-- Fitting writes the tenant's fit and schedules its windows: as the extension's owner,
-- for the caller's tenant only (src/tenancy.rs), like compute_allocations().
ALTER FUNCTION attribution_fit_model(uuid, text, timestamptz, timestamptz)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
REVOKE EXECUTE ON FUNCTION attribution_fit_model(uuid, text, timestamptz, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION attribution_fit_model(uuid, text, timestamptz, timestamptz) TO attribution_app;
ALTER FUNCTION attribution_disable_model(uuid, text)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
REVOKE EXECUTE ON FUNCTION attribution_disable_model(uuid, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION attribution_disable_model(uuid, text) TO attribution_app;
