-- Triggers that schedule recompute windows. Statement-level with transition tables, so
-- the cost is one grouped read per statement, not one enqueue per row.
CREATE TRIGGER attribution_events_schedule_insert
    AFTER INSERT ON attribution_events
    REFERENCING NEW TABLE AS attribution_new_events
    FOR EACH STATEMENT EXECUTE FUNCTION attribution_events_schedule();

CREATE TRIGGER attribution_events_schedule_update
    AFTER UPDATE ON attribution_events
    REFERENCING OLD TABLE AS attribution_old_events NEW TABLE AS attribution_new_events
    FOR EACH STATEMENT EXECUTE FUNCTION attribution_events_schedule();

CREATE TRIGGER attribution_events_schedule_delete
    AFTER DELETE ON attribution_events
    REFERENCING OLD TABLE AS attribution_old_events
    FOR EACH STATEMENT EXECUTE FUNCTION attribution_events_schedule();

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

-- The functions that write the extension's tables run as its owner (SECURITY DEFINER),
-- so application roles need no write access to the queue, the dead letters or the
-- allocations. Each acts only for the caller's tenant (see src/tenancy.rs). Like every
-- function here that runs SQL, they run with search_path pinned to pg_catalog, pg_temp,
-- and name the extension's own objects with their schema, so objects a role creates in
-- a schema on the caller's search_path are never called.
ALTER FUNCTION schedule_recompute_window(uuid, timestamptz, timestamptz, text, text)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION schedule_full_recompute(uuid, timestamptz, timestamptz, text, text)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION compute_allocations(uuid, timestamptz, timestamptz, text)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION redrive_failed_job(bigint)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION attribution_events_schedule()
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

REVOKE EXECUTE ON FUNCTION
    schedule_recompute_window(uuid, timestamptz, timestamptz, text, text),
    schedule_full_recompute(uuid, timestamptz, timestamptz, text, text),
    compute_allocations(uuid, timestamptz, timestamptz, text),
    redrive_failed_job(bigint),
    attribution_events_schedule()
FROM PUBLIC;
-- attribution_split_cents runs no SQL (pure Rust), so it needs no pinned search_path.
GRANT EXECUTE ON FUNCTION
    schedule_recompute_window(uuid, timestamptz, timestamptz, text, text),
    schedule_full_recompute(uuid, timestamptz, timestamptz, text, text),
    compute_allocations(uuid, timestamptz, timestamptz, text),
    attribution_split_cents(bigint, integer[]),
    redrive_failed_job(bigint)
TO attribution_app;

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
