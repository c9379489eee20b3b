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

GRANT EXECUTE ON FUNCTION
    schedule_recompute_window(uuid, timestamptz, timestamptz, text, text),
    compute_allocations(uuid, timestamptz, timestamptz, text),
    attribution_split_cents(bigint, integer[]),
    redrive_failed_job(bigint)
TO attribution_app;
GRANT UPDATE (redriven_at) ON worker_failed_jobs TO attribution_app;
