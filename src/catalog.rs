//! Where the extension's tables live. SQL issued from Rust always names them with their
//! schema, so a caller's search_path can neither break nor hijack it.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use std::cell::RefCell;

thread_local! {
    static SCHEMA: RefCell<Option<(pg_sys::Oid, String)>> = const { RefCell::new(None) };
}

/// The quoted name of the schema pg_attribution is installed in. Cached per backend and
/// re-read when the extension is dropped and created again.
pub fn schema() -> String {
    // SAFETY: get_extension_oid only reads the catalog; missing_ok avoids an ERROR path.
    let ext_oid = unsafe { pg_sys::get_extension_oid(c"pg_attribution".as_ptr(), true) };
    if ext_oid == pg_sys::InvalidOid {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "extension \"pg_attribution\" is not installed in this database",
            "pg_attribution",
        )
        .set_hint("Run CREATE EXTENSION pg_attribution;")
        .report(PgLogLevel::ERROR);
    }
    SCHEMA.with(|cache| {
        if let Some((oid, name)) = cache.borrow().as_ref() {
            if *oid == ext_oid {
                return name.clone();
            }
        }
        let name: String = Spi::get_one_with_args(
            "SELECT pg_catalog.quote_ident(n.nspname)
               FROM pg_catalog.pg_extension e
               JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
              WHERE e.oid = $1",
            &[ext_oid.into()],
        )
        .expect("reading the extension's schema")
        .expect("an installed extension has a schema");
        *cache.borrow_mut() = Some((ext_oid, name.clone()));
        name
    })
}
