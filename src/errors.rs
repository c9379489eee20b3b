//! The one domain error type, and the one place it becomes a Postgres ERROR with a
//! precise SQLSTATE and a hint that says what to do.

use crate::engine::allocation::SplitError;
use crate::engine::correlation::CorrelationIdError;
use crate::engine::markov::FitError;
use crate::engine::model::ModelError;
use crate::engine::window::WindowError;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum AttributionError {
    #[error("{0} must not be NULL")]
    NullArgument(&'static str),
    #[error(transparent)]
    Window(#[from] WindowError),
    #[error(transparent)]
    CorrelationId(#[from] CorrelationIdError),
    #[error("model \"{model_version}\" has invalid weights: {source}")]
    ModelWeights { model_version: String, source: SplitError },
    #[error(transparent)]
    Split(#[from] SplitError),
    #[error("tenant {0} is not registered")]
    UnknownTenant(String),
    #[error("attribution model \"{0}\" does not exist")]
    UnknownModel(String),
    #[error("no dead-lettered job with id {0} is visible")]
    UnknownFailedJob(i64),
    #[error("the transaction acts for tenant {context}, not for tenant {requested}")]
    TenantMismatch { context: String, requested: String },
    #[error("{0}() only runs as a trigger on the extension's own table")]
    TriggerMisplaced(&'static str),
    #[error("invalid attribution model: {0}")]
    Model(#[from] ModelError),
    #[error("invalid attribution model: {0}")]
    ModelShape(&'static str),
    #[error("touch_at and touch_channels must have the same length, without NULLs")]
    TouchArrays,
    #[error("tenant {tenant} has no fit of model \"{model_version}\" yet")]
    NoFit { tenant: String, model_version: String },
    #[error("cannot fit the model: {0}")]
    Fit(#[from] FitError),
    #[error("{0}")]
    FitNotLoaded(String),
    #[error("this function acts only for the tenant of the transaction's context, and none is set")]
    NoTenantContext,
}

impl AttributionError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        use PgSqlErrorCode::*;
        match self {
            Self::NullArgument(_) => ERRCODE_NULL_VALUE_NOT_ALLOWED,
            Self::Window(WindowError::NotFinite | WindowError::BeyondRange) => {
                ERRCODE_DATETIME_FIELD_OVERFLOW
            }
            Self::Window(_) => ERRCODE_INVALID_PARAMETER_VALUE,
            Self::CorrelationId(CorrelationIdError::TooLong(_)) => ERRCODE_STRING_DATA_RIGHT_TRUNCATION,
            Self::CorrelationId(_) => ERRCODE_INVALID_PARAMETER_VALUE,
            Self::ModelWeights { .. } => ERRCODE_DATA_EXCEPTION,
            Self::Split(_) => ERRCODE_INVALID_PARAMETER_VALUE,
            Self::UnknownTenant(_) => ERRCODE_FOREIGN_KEY_VIOLATION,
            Self::UnknownModel(_) => ERRCODE_UNDEFINED_OBJECT,
            Self::UnknownFailedJob(_) => ERRCODE_NO_DATA_FOUND,
            Self::TenantMismatch { .. } | Self::TriggerMisplaced(_) => ERRCODE_INSUFFICIENT_PRIVILEGE,
            Self::Model(_) | Self::ModelShape(_) | Self::TouchArrays => ERRCODE_INVALID_PARAMETER_VALUE,
            Self::NoFit { .. } | Self::FitNotLoaded(_) => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            Self::Fit(_) => ERRCODE_DATA_EXCEPTION,
            Self::NoTenantContext => ERRCODE_INSUFFICIENT_PRIVILEGE,
        }
    }

    fn hint(&self) -> Option<&'static str> {
        match self {
            Self::NullArgument(_) => Some("Pass a value for every argument that has no default."),
            Self::Window(WindowError::Empty) => Some("Windows are half-open: [window_start, window_end)."),
            Self::Window(WindowError::TooLong { .. }) => {
                Some("Split the range into shorter windows, or raise attribution.max_window.")
            }
            Self::Window(WindowError::NotFinite) => Some("Use finite timestamps, not 'infinity'."),
            Self::Window(WindowError::BeyondRange) => {
                Some("Check occurred_at: it is within one window of the end of the timestamp range.")
            }
            Self::CorrelationId(_) => Some(
                "Correlation ids are 1 to 128 visible ASCII characters (no spaces or control characters).",
            ),
            Self::UnknownTenant(_) => Some("Register the tenant in attribution_tenants first."),
            Self::UnknownModel(_) => Some("See attribution_models for the registered model versions."),
            Self::UnknownFailedJob(_) => {
                Some("See worker_failed_jobs; set attribution.tenant_id to the job's tenant.")
            }
            Self::TenantMismatch { .. } => {
                Some("Set attribution.tenant_id to the tenant you act for, or leave it unset.")
            }
            Self::TriggerMisplaced(_) => Some("Drop the trigger that calls it on this table."),
            Self::ModelWeights { .. } | Self::Split(_) => {
                Some("Weights are 1 to 64 positive integers, one per channel.")
            }
            Self::Model(_) | Self::ModelShape(_) => {
                Some("See the README, \"Multi-touch models\", for each kind's parameters.")
            }
            Self::TouchArrays => None,
            Self::NoTenantContext => {
                Some("Set attribution.tenant_id to the tenant first (SET LOCAL or set_config(..., true)).")
            }
            Self::NoFit { .. } => Some("Fit it with attribution_fit_model(tenant_id, model_version, period_start, period_end)."),
            Self::Fit(_) => Some("A fit needs converting journeys in the period, over at most 512 channels."),
            Self::FitNotLoaded(_) => Some(
                "Data-driven models allocate through compute_allocations() and the workers, which load the tenant's latest fit.",
            ),
        }
    }

    /// Raises this error as a Postgres ERROR. Never returns.
    #[track_caller]
    pub fn report(self) -> ! {
        let mut report = ErrorReport::new(self.sqlstate(), self.to_string(), "pg_attribution");
        if let Some(hint) = self.hint() {
            report = report.set_hint(hint);
        }
        report.report(PgLogLevel::ERROR);
        unreachable!("ERROR-level reports do not return")
    }
}

/// Unwraps a domain result or raises it as a Postgres ERROR.
pub trait OrReport<T> {
    fn or_report(self) -> T;
}

impl<T, E: Into<AttributionError>> OrReport<T> for Result<T, E> {
    #[track_caller]
    fn or_report(self) -> T {
        self.unwrap_or_else(|e| e.into().report())
    }
}
