//! Multi-touch models in SQL: the check every model row passes, and the per-conversion
//! split the computing statement calls (src/compute.rs). The rules live in
//! `engine::model` and `engine::touch`.

use crate::engine::model::{self, Credit, TouchModel};
use crate::engine::touch::{
    channel_weights, counting_path, split_by_weights, Split, Touchpoint, RATIO_SCALE,
};
use crate::errors::{AttributionError, OrReport};
use pgrx::prelude::*;
use std::cell::RefCell;
use std::rc::Rc;

/// Checks a model row's kind, channels and parameters (the BEFORE trigger on
/// attribution_models calls it), raising invalid_parameter_value (22023) with what is
/// wrong.
#[pg_extern(stable, parallel_safe)]
fn attribution_check_model(
    kind: Option<&str>,
    channels: Option<Vec<Option<String>>>,
    params: Option<pgrx::JsonB>,
) {
    let kind = kind.unwrap_or("weighted");
    let params = params.map(|p| p.0).unwrap_or_else(|| serde_json::json!({}));
    if kind == "weighted" {
        if channels.is_none() {
            AttributionError::ModelShape("a weighted model needs channels and weights").report();
        }
        if params.as_object().is_none_or(|p| !p.is_empty()) {
            AttributionError::ModelShape(
                "a weighted model takes no params (its channels and weights say it all)",
            )
            .report();
        }
        return;
    }
    if channels.is_some() {
        AttributionError::ModelShape(
            "a multi-touch model has no channels or weights: its channels come from the touchpoints",
        )
        .report();
    }
    model::parse(kind, &params.to_string()).or_report();
}

thread_local! {
    /// The last model parsed: a statement computes one model, so each call after the
    /// first finds it here instead of parsing the parameters again.
    static LAST: RefCell<Option<(String, String, Rc<TouchModel>)>> = const { RefCell::new(None) };
}

fn touch_model(kind: &str, params: &str) -> Rc<TouchModel> {
    LAST.with_borrow_mut(|last| {
        if let Some((k, p, m)) = last.as_ref() {
            if k == kind && p == params {
                return m.clone();
            }
        }
        let m = Rc::new(model::parse(kind, params).or_report());
        *last = Some((kind.to_owned(), params.to_owned(), m.clone()));
        m
    })
}

/// One conversion's cents per channel under a multi-touch model: its customer's
/// touchpoints (times and channels, any order), the model's kind and parameters (JSON
/// text), and for a data-driven kind the id of the fit to use. Channels in name order;
/// the ratio is each channel's share of the credit.
///
/// Runs no SQL: a data-driven kind's fit must have been loaded by this session for the
/// tenant of the current context (compute_allocations() and the workers do that before
/// they compute), so no session can read another tenant's fit through it.
#[pg_extern(stable, parallel_safe)]
#[allow(clippy::type_complexity)]
fn attribution_touch_split(
    revenue_cents: Option<i64>,
    converted_at: Option<TimestampWithTimeZone>,
    touch_at: Option<Vec<Option<TimestampWithTimeZone>>>,
    touch_channels: Option<Vec<Option<String>>>,
    kind: Option<&str>,
    params: Option<&str>,
    fit_id: default!(Option<i64>, "NULL"),
) -> TableIterator<'static, (name!(channel, String), name!(ratio, f64), name!(cents, i64))> {
    let split = split(revenue_cents, converted_at, touch_at, touch_channels, kind, params, fit_id);
    TableIterator::new(
        split.into_iter().map(|(channel, ratio, cents)| (channel, ratio as f64 / RATIO_SCALE as f64, cents)),
    )
}

/// The same, for the computing statement (src/compute.rs), which calls it in its select
/// list, where its rows stream out one at a time (in FROM, each call's rows would be
/// gathered in a tuplestore first), and with the ratio as an integer number of 10^-10
/// (exact, where a float would need a slow conversion to numeric).
#[pg_extern(stable, parallel_safe)]
#[allow(clippy::type_complexity)]
fn attribution_touch_split_e10(
    revenue_cents: Option<i64>,
    converted_at: Option<TimestampWithTimeZone>,
    touch_at: Option<Vec<Option<TimestampWithTimeZone>>>,
    touch_channels: Option<Vec<Option<String>>>,
    kind: Option<&str>,
    params: Option<&str>,
    fit_id: Option<i64>,
) -> TableIterator<'static, (name!(channel, String), name!(ratio_e10, i64), name!(cents, i64))> {
    TableIterator::new(split(revenue_cents, converted_at, touch_at, touch_channels, kind, params, fit_id))
}

#[allow(clippy::type_complexity)]
fn split(
    revenue_cents: Option<i64>,
    converted_at: Option<TimestampWithTimeZone>,
    touch_at: Option<Vec<Option<TimestampWithTimeZone>>>,
    touch_channels: Option<Vec<Option<String>>>,
    kind: Option<&str>,
    params: Option<&str>,
    fit_id: Option<i64>,
) -> Split {
    let revenue = super::require(revenue_cents, "revenue_cents").or_report();
    let converted_at: i64 = super::require(converted_at, "converted_at").or_report().into();
    let kind = super::require(kind, "kind").or_report();
    let model = touch_model(kind, params.unwrap_or("{}"));
    let touch_at = touch_at.unwrap_or_default();
    let touch_channels = touch_channels.unwrap_or_default();
    if touch_at.len() != touch_channels.len() {
        AttributionError::TouchArrays.report();
    }
    let touches: Vec<Touchpoint> = touch_at
        .into_iter()
        .zip(touch_channels)
        .map(|(at, channel)| match (at, channel) {
            (Some(at), Some(channel)) => Touchpoint { at: at.into(), channel },
            _ => AttributionError::TouchArrays.report(),
        })
        .collect();
    let weights = match &model.credit {
        Credit::Rule(rule) => channel_weights(converted_at, &touches, rule, &model.path),
        Credit::Markov | Credit::Shapley => {
            let channels: Vec<String> =
                counting_path(converted_at, &touches, &model.path).into_iter().map(|t| t.channel).collect();
            loaded_fit(fit_id).path_weights(&channels)
        }
    };
    split_by_weights(revenue, weights, &model.path.no_touch_channel)
}

/// The fit this session loaded for the current tenant context, or a clear error.
fn loaded_fit(fit_id: Option<i64>) -> std::rc::Rc<crate::fits::Fit> {
    let Some(fit_id) = fit_id else {
        AttributionError::FitNotLoaded("a data-driven model needs the id of its fit".into()).report()
    };
    // SAFETY: reads a registered setting's current value; missing_ok, as it may be unset.
    let value = unsafe { pg_sys::GetConfigOption(c"attribution.tenant_id".as_ptr(), true, false) };
    let tenant = (!value.is_null())
        .then(|| unsafe { std::ffi::CStr::from_ptr(value) }.to_str().ok())
        .flatten()
        .and_then(|s| pgrx::Uuid::from_slice(&uuid_bytes(s)?).ok());
    match tenant.and_then(|t| crate::fits::cached(t, fit_id)) {
        Some(fit) => fit,
        None => AttributionError::FitNotLoaded(format!(
            "fit {fit_id} is not loaded in this session for the current tenant"
        ))
        .report(),
    }
}

/// The 16 bytes of a uuid in its canonical text form.
fn uuid_bytes(text: &str) -> Option<[u8; 16]> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(bytes)
}
