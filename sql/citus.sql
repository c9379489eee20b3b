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
