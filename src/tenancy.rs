//! The tenant context (`attribution.tenant_id`) as the SQL functions see it.
//!
//! A function that acts for a tenant refuses when the transaction already acts for a
//! different one. When no context is set it sets one for the duration of the call, so that
//! a role subject to RLS sees the tenant's rows, and clears it again afterwards. The
//! setting is transaction-local, so an error that aborts the call also undoes it.

use crate::catalog;
use crate::errors::AttributionError;
use pgrx::pg_sys::BuiltinOid::TEXTOID;
use pgrx::prelude::*;

#[must_use = "call leave() when the work for the tenant is done"]
pub struct TenantScope {
    set_here: bool,
}

pub fn enter(tenant_id: pgrx::Uuid) -> Result<TenantScope, AttributionError> {
    // Parsed by Postgres, exactly as the policies parse it.
    let stmt = catalog::statement("read_tenant_context", &[], |_| {
        "SELECT NULLIF(pg_catalog.current_setting('attribution.tenant_id', true), '')::uuid".into()
    });
    let context: Option<pgrx::Uuid> =
        Spi::connect(|client| client.select(&*stmt, Some(1), &[])?.first().get_one())
            .expect("reading attribution.tenant_id");
    match context {
        Some(current) if current == tenant_id => Ok(TenantScope { set_here: false }),
        Some(current) => Err(AttributionError::TenantMismatch {
            context: current.to_string(),
            requested: tenant_id.to_string(),
        }),
        None => {
            set_context(Some(&tenant_id.to_string()));
            Ok(TenantScope { set_here: true })
        }
    }
}

/// Like [`enter`], but refuses when no context is set: for functions that read or
/// change a tenant's own data (a fit), which a session acting for no tenant must not do.
pub fn enter_own(tenant_id: pgrx::Uuid) -> Result<TenantScope, AttributionError> {
    let scope = enter(tenant_id)?;
    if scope.set_here {
        // Undo at once: the context was not the caller's.
        set_context(None);
        return Err(AttributionError::NoTenantContext);
    }
    Ok(scope)
}

impl TenantScope {
    pub fn leave(self) {
        if self.set_here {
            set_context(None);
        }
    }
}

/// Sets the tenant context for the rest of the current transaction (`None` clears it).
pub fn set_context(tenant_id: Option<&str>) {
    let stmt = catalog::statement("set_tenant_context", &catalog::types(&[TEXTOID]), |_| {
        "SELECT pg_catalog.set_config('attribution.tenant_id', $1, true)".into()
    });
    Spi::connect_mut(|client| client.update(&*stmt, None, &[tenant_id.unwrap_or("").into()]).map(|_| ()))
        .expect("setting attribution.tenant_id");
}
