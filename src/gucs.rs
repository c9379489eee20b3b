//! Every `attribution.*` setting: declared here, registered in [`init`], read through a
//! typed getter. No other module parses setting strings.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::CString;

pub static TENANT_ID: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static CORRELATION_ID: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static WINDOW_WIDTH: GucSetting<i32> = GucSetting::<i32>::new(86_400);
pub static MAX_WINDOW: GucSetting<i32> = GucSetting::<i32>::new(31 * 86_400);

pub fn init() {
    GucRegistry::define_string_guc(
        c"attribution.tenant_id",
        c"Tenant the current transaction acts for.",
        c"Row-level security policies compare every tenant_id with this setting. Set it per transaction with set_config(..., true).",
        &TENANT_ID,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"attribution.correlation_id",
        c"Correlation id recorded on jobs scheduled by the insert trigger and on allocations written.",
        c"When empty, a new uuid is generated per statement.",
        &CORRELATION_ID,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"attribution.window_width",
        c"Width of the UTC buckets the insert trigger schedules.",
        c"Buckets are aligned to the Unix epoch, so the default of one day is a UTC calendar day.",
        &WINDOW_WIDTH,
        60,
        31 * 86_400,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"attribution.max_window",
        c"Longest window schedule_recompute_window and compute_allocations accept.",
        c"Bounds the work one job or call can do.",
        &MAX_WINDOW,
        60,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
}


/// The caller's correlation id setting, `None` when unset or empty. Not yet validated.
pub fn correlation_id() -> Option<String> {
    non_empty(&CORRELATION_ID)
}

pub fn window_width_seconds() -> i64 {
    i64::from(WINDOW_WIDTH.get())
}

pub fn max_window_seconds() -> i64 {
    i64::from(MAX_WINDOW.get())
}

fn non_empty(setting: &GucSetting<Option<CString>>) -> Option<String> {
    setting
        .get()
        .map(|v| v.to_string_lossy().into_owned())
        .filter(|v| !v.is_empty())
}
