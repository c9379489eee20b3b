//! Where the extension's tables live, and the backend's cache of prepared statements.
//! SQL issued from Rust always names tables with their schema, so a caller's search_path
//! can neither break nor hijack it; hot statements are prepared once and re-planned every
//! few seconds (see STATEMENT_LIFETIME).

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use pgrx::PgOid;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

struct Cache {
    extension: pg_sys::Oid,
    schema: String,
    /// The OID of the extension's attribution_events, looked up on first use.
    events: Option<pg_sys::Oid>,
    statements: HashMap<String, (Instant, Rc<OwnedPreparedStatement>)>,
}

/// How long a prepared statement is reused before it is planned again. Postgres
/// re-plans a cached generic plan only after ANALYZE, so a plan made while the tables
/// were empty (right after CREATE EXTENSION, say) would otherwise pick index paths that
/// scan a whole tenant once the tables have grown. A fresh plan sees the tables' real
/// size; planning every statement every few seconds costs next to nothing.
const STATEMENT_LIFETIME: Duration = Duration::from_secs(2);

thread_local! {
    static CACHE: RefCell<Option<Cache>> = const { RefCell::new(None) };
}

/// The quoted name of the schema pg_attribution is installed in. Cached per backend;
/// the cache (with every prepared statement) is dropped when the extension is dropped
/// and created again.
pub fn schema() -> String {
    let ext_oid = extension_oid();
    CACHE.with(|cache| {
        if let Some(c) = cache.borrow().as_ref() {
            if c.extension == ext_oid {
                return c.schema.clone();
            }
        }
        let schema: String = Spi::get_one_with_args(
            "SELECT pg_catalog.quote_ident(n.nspname)
               FROM pg_catalog.pg_extension e
               JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
              WHERE e.oid = $1",
            &[ext_oid.into()],
        )
        .expect("reading the extension's schema")
        .expect("an installed extension has a schema");
        *cache.borrow_mut() = Some(Cache {
            extension: ext_oid,
            schema: schema.clone(),
            events: None,
            statements: HashMap::new(),
        });
        schema
    })
}

/// The OID of the extension's own attribution_events table. Cached with the schema.
pub fn events_relid() -> pg_sys::Oid {
    let schema = schema();
    if let Some(oid) = CACHE.with(|c| c.borrow().as_ref().and_then(|c| c.events)) {
        return oid;
    }
    let oid: pg_sys::Oid =
        Spi::get_one(&format!("SELECT '{schema}.attribution_events'::pg_catalog.regclass::pg_catalog.oid"))
            .expect("looking up attribution_events")
            .expect("the extension has attribution_events");
    CACHE.with(|c| {
        if let Some(c) = c.borrow_mut().as_mut() {
            c.events = Some(oid);
        }
    });
    oid
}

/// The statement `name`, prepared from `sql(schema)` with argument types `args` and
/// reused by this backend for [`STATEMENT_LIFETIME`].
pub fn statement(name: &str, args: &[PgOid], sql: impl FnOnce(&str) -> String) -> Rc<OwnedPreparedStatement> {
    let schema = schema();
    let cached = CACHE.with(|c| {
        c.borrow().as_ref().and_then(|c| {
            c.statements.get(name).filter(|(at, _)| at.elapsed() < STATEMENT_LIFETIME).map(|(_, s)| s.clone())
        })
    });
    if let Some(stmt) = cached {
        return stmt;
    }
    let text = sql(&schema);
    let stmt = Rc::new(Spi::connect(|client| {
        client.prepare_mut(text.as_str(), args).unwrap_or_else(|e| panic!("preparing {name}: {e}")).keep()
    }));
    CACHE.with(|c| {
        if let Some(c) = c.borrow_mut().as_mut() {
            c.statements.insert(name.to_owned(), (Instant::now(), stmt.clone()));
        }
    });
    stmt
}

/// Argument types for [`statement`].
pub fn types(oids: &[pg_sys::BuiltinOid]) -> Vec<PgOid> {
    oids.iter().map(|oid| PgOid::BuiltIn(*oid)).collect()
}

/// The extension's OID; ERROR when it is not installed in this database.
pub fn extension_oid() -> pg_sys::Oid {
    // SAFETY: get_extension_oid only reads the catalog; missing_ok avoids an ERROR path.
    let ext_oid = unsafe { pg_sys::get_extension_oid(crate::names::EXTENSION_C.as_ptr(), true) };
    if ext_oid == pg_sys::InvalidOid {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "extension \"pg_attribution\" is not installed in this database",
            "pg_attribution",
        )
        .set_hint("Run CREATE EXTENSION pg_attribution;")
        .report(PgLogLevel::ERROR);
    }
    ext_oid
}

/// The version this library was built as; the installed SQL should match it.
pub const LIBRARY_VERSION: &str = env!("CARGO_PKG_VERSION");

thread_local! {
    static VERSION_SEEN: RefCell<Option<(Instant, String)>> = const { RefCell::new(None) };
}

/// pg_extension.extversion, read at most once a second per backend.
pub fn installed_version() -> String {
    let cached = VERSION_SEEN.with(|v| {
        v.borrow().as_ref().filter(|(at, _)| at.elapsed() < Duration::from_secs(1)).map(|(_, s)| s.clone())
    });
    if let Some(version) = cached {
        return version;
    }
    let version: String =
        Spi::get_one("SELECT extversion::text FROM pg_catalog.pg_extension WHERE extname = 'pg_attribution'")
            .ok()
            .flatten()
            .unwrap_or_default();
    VERSION_SEEN.with(|v| *v.borrow_mut() = Some((Instant::now(), version.clone())));
    version
}

/// Whether the installed SQL is this library's version. Between installing a new
/// library and ALTER EXTENSION UPDATE, the trigger and the SQL functions keep to what
/// the installed SQL has (no incremental bookkeeping), so that ingestion goes on.
pub fn sql_is_current() -> bool {
    installed_version() == LIBRARY_VERSION
}
