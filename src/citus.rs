//! What the extension needs to know about Citus once `attribution_distribute()` has
//! distributed its tables by tenant: which shards of the job queue this node holds (its
//! workers drain those and no others), and whether a trigger fires on a shard of one of
//! the extension's tables. Without Citus, or before distribution, the queue is the one table.

use crate::catalog;
use pgrx::prelude::*;
use std::cell::RefCell;
use std::time::{Duration, Instant};

/// How long the list of this node's job tables is reused. Shards move only when a DBA
/// rebalances the cluster; a worker notices within this time.
const PLACEMENT_LIFETIME: Duration = Duration::from_secs(5);

thread_local! {
    static JOB_TABLES: RefCell<Option<(Instant, pg_sys::Oid, Placement)>> = const { RefCell::new(None) };
    /// Shards found by is_shard_of, as (table, shard), for the extension's current OID.
    static KNOWN_SHARDS: RefCell<(pg_sys::Oid, Vec<(&'static str, pg_sys::Oid)>)> =
        const { RefCell::new((pg_sys::InvalidOid, Vec::new())) };
}

/// Whether Citus is installed in this database (its catalog tables exist).
fn citus_installed() -> bool {
    Spi::get_one::<bool>(
        "SELECT pg_catalog.to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL
            AND pg_catalog.to_regclass('pg_catalog.pg_dist_local_group') IS NOT NULL",
    )
    .ok()
    .flatten()
    .unwrap_or(false)
}

/// The job tables this node's workers drain, schema-qualified and quoted: the extension's
/// `attribution_recompute_jobs` itself while it is an ordinary table, or, once Citus
/// distributes it, its shards placed on this node (none on a coordinator that holds no
/// shards). Only the placements of this node: a job is claimed, run and recovered where
/// its tenant's events are, by workers whose crash that node's restart detects.
pub fn job_tables() -> Vec<String> {
    placement().tables
}

/// Whether Citus distributes the job queue (and so every tenant table) in this database.
pub fn distributed() -> bool {
    placement().distributed
}

/// Drops what [`job_tables`] remembers, so that the next call looks again.
pub fn forget_placement() {
    JOB_TABLES.with(|c| *c.borrow_mut() = None);
}

#[derive(Clone)]
struct Placement {
    distributed: bool,
    tables: Vec<String>,
}

fn placement() -> Placement {
    let extension = catalog::extension_oid();
    let cached = JOB_TABLES.with(|c| {
        c.borrow()
            .as_ref()
            .filter(|(at, ext, _)| *ext == extension && at.elapsed() < PLACEMENT_LIFETIME)
            .map(|(_, _, placement)| placement.clone())
    });
    if let Some(placement) = cached {
        return placement;
    }
    let schema = catalog::schema();
    let plain = format!("{schema}.attribution_recompute_jobs");
    let placement = if !citus_installed() {
        Placement { distributed: false, tables: vec![plain] }
    } else {
        let distributed = Spi::get_one::<bool>(&format!(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_dist_partition
                             WHERE logicalrelid = '{plain}'::pg_catalog.regclass)"
        ))
        .expect("reading pg_dist_partition")
        .unwrap_or(false);
        if !distributed {
            Placement { distributed: false, tables: vec![plain] }
        } else {
            // Citus names a shard after its table and shard id.
            let tables = Spi::connect(|client| {
                client
                    .select(
                        &format!(
                            "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname OPERATOR(pg_catalog.||) '_'
                                                      OPERATOR(pg_catalog.||) s.shardid)
                               FROM pg_catalog.pg_dist_shard s
                               JOIN pg_catalog.pg_dist_placement p ON p.shardid OPERATOR(pg_catalog.=) s.shardid
                               JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) s.logicalrelid
                               JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
                              WHERE s.logicalrelid OPERATOR(pg_catalog.=) '{plain}'::pg_catalog.regclass
                                AND p.groupid OPERATOR(pg_catalog.=) (SELECT groupid FROM pg_catalog.pg_dist_local_group)
                              ORDER BY s.shardid"
                        ),
                        None,
                        &[],
                    )
                    .expect("reading this node's shard placements")
                    .map(|row| row.get::<String>(1).expect("shard name").expect("not null"))
                    .collect()
            });
            Placement { distributed: true, tables }
        }
    };
    JOB_TABLES.with(|c| *c.borrow_mut() = Some((Instant::now(), extension, placement.clone())));
    placement
}

/// Whether `relid` is a shard of the extension's table `table` (`attribution_events`,
/// say): Citus creates a distributed or reference table's triggers on every shard, and
/// they fire there, on the node holding it. Exact: the relation must be the one
/// Citus's metadata names for a shard of that table.
pub fn is_shard_of(relid: pg_sys::Oid, table: &'static str) -> bool {
    let extension = catalog::extension_oid();
    let known = KNOWN_SHARDS.with(|c| {
        let c = c.borrow();
        c.0 == extension && c.1.contains(&(table, relid))
    });
    if known {
        return true;
    }
    if !citus_installed() {
        return false;
    }
    let schema = catalog::schema();
    let is_shard = Spi::get_one_with_args::<bool>(
        &format!(
            "SELECT EXISTS (
                 SELECT FROM pg_catalog.pg_dist_shard s
                   JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) s.logicalrelid
                  WHERE s.logicalrelid OPERATOR(pg_catalog.=) '{schema}.{table}'::pg_catalog.regclass
                    AND pg_catalog.to_regclass(pg_catalog.format('{schema}.%I',
                            c.relname OPERATOR(pg_catalog.||) '_' OPERATOR(pg_catalog.||) s.shardid))
                        OPERATOR(pg_catalog.=) $1::pg_catalog.regclass)"
        ),
        &[relid.into()],
    )
    .expect("reading pg_dist_shard")
    .unwrap_or(false);
    if is_shard {
        KNOWN_SHARDS.with(|c| {
            let mut c = c.borrow_mut();
            if c.0 != extension {
                *c = (extension, Vec::new());
            }
            c.1.push((table, relid));
        });
    }
    is_shard
}
