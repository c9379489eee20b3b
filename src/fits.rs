//! Data-driven model fits (Markov, Shapley): stored per tenant and model in
//! attribution_model_fits, loaded into a per-session cache before a computation uses
//! them, so that the per-conversion split (attribution_touch_split) runs no SQL.

use crate::catalog;
use crate::engine::markov::{MarkovFit, PathCount};
use crate::engine::shapley::{Coalition, ShapleyFit};
use crate::errors::AttributionError;
use pgrx::pg_sys::BuiltinOid::*;
use pgrx::prelude::*;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// A restored fit.
pub enum Fit {
    Markov(MarkovFit),
    Shapley(ShapleyFit),
}

impl Fit {
    /// Integer weights of one conversion's counting path (see the engine's path_weights).
    pub fn path_weights(&self, channels: &[String]) -> Vec<(String, u128)> {
        match self {
            Fit::Markov(f) => f.path_weights(channels),
            Fit::Shapley(f) => f.path_weights(channels),
        }
    }
}

thread_local! {
    /// Fits loaded by this session, by id, with the tenant each belongs to. Fits never
    /// change once written (a new fit gets a new id), so an entry never goes stale.
    static FITS: RefCell<HashMap<i64, (pgrx::Uuid, Rc<Fit>)>> = RefCell::new(HashMap::new());
}

/// Most fits a session keeps; the cache is emptied when a load would exceed it.
const CACHED_FITS: usize = 32;

/// The fit `fit_id` of `tenant_id`, if this session loaded it.
pub fn cached(tenant_id: pgrx::Uuid, fit_id: i64) -> Option<Rc<Fit>> {
    FITS.with_borrow(|fits| fits.get(&fit_id).filter(|(t, _)| *t == tenant_id).map(|(_, f)| f.clone()))
}

/// The id of the latest fit of the tenant and model, loaded into the cache; an error
/// (55000) when the tenant has no fit of the model yet. Every run asks for the id only;
/// the fit itself (a Shapley fit's coalitions can be megabytes) is read once per session.
pub fn latest(tenant_id: pgrx::Uuid, model_version: &str) -> Result<i64, AttributionError> {
    let latest = catalog::statement("latest_fit", &catalog::types(&[UUIDOID, TEXTOID]), |schema| {
        format!(
            "SELECT max(id) FROM {schema}.attribution_model_fits
              WHERE tenant_id = $1 AND model_version = $2"
        )
    });
    let id: Option<i64> = Spi::connect(|client| {
        client.select(&*latest, Some(1), &[tenant_id.into(), model_version.into()])?.first().get_one()
    })
    .expect("reading attribution_model_fits");
    let Some(id) = id else {
        return Err(AttributionError::NoFit {
            tenant: tenant_id.to_string(),
            model_version: model_version.to_owned(),
        });
    };
    if cached(tenant_id, id).is_some() {
        return Ok(id);
    }
    let load = catalog::statement("load_fit", &catalog::types(&[UUIDOID, INT8OID]), |schema| {
        format!(
            "SELECT kind, channels, channel_values, conversion_probability, coalitions::text
               FROM {schema}.attribution_model_fits
              WHERE tenant_id = $1 AND id = $2"
        )
    });
    let (kind, channels, values, probability, coalitions) = Spi::connect(|client| {
        let row = client.select(&*load, Some(1), &[tenant_id.into(), id.into()])?.first();
        Ok::<_, pgrx::spi::SpiError>((
            row.get::<String>(1)?.expect("kind"),
            row.get::<Vec<String>>(2)?.expect("channels"),
            row.get::<Vec<f64>>(3)?.expect("channel_values"),
            row.get::<f64>(4)?,
            row.get::<String>(5)?,
        ))
    })
    .expect("reading the fit");
    let fit = match kind.as_str() {
        "markov" => Fit::Markov(MarkovFit::from_parts(channels, values, probability.unwrap_or(0.0))?),
        _ => Fit::Shapley(ShapleyFit::from_coalitions(channels, parse_coalitions(coalitions.as_deref())?)?),
    };
    FITS.with_borrow_mut(|fits| {
        if fits.len() >= CACHED_FITS {
            fits.clear();
        }
        fits.insert(id, (tenant_id, Rc::new(fit)));
    });
    Ok(id)
}

/// The stored form of a Shapley fit's coalitions: a JSON array of
/// {"channels": [...], "conversions": n, "journeys": n}.
fn coalitions_json(coalitions: &[Coalition]) -> serde_json::Value {
    serde_json::Value::Array(
        coalitions
            .iter()
            .map(|c| {
                serde_json::json!({
                    "channels": c.channels,
                    "conversions": c.conversions.to_string(),
                    "journeys": c.journeys.to_string(),
                })
            })
            .collect(),
    )
}

fn parse_coalitions(text: Option<&str>) -> Result<Vec<Coalition>, AttributionError> {
    let bad = || AttributionError::ModelShape("a stored Shapley fit has malformed coalitions");
    let value: serde_json::Value = serde_json::from_str(text.ok_or_else(bad)?).map_err(|_| bad())?;
    value
        .as_array()
        .ok_or_else(bad)?
        .iter()
        .map(|c| {
            let channels = c["channels"]
                .as_array()
                .ok_or_else(bad)?
                .iter()
                .map(|s| s.as_str().map(str::to_owned).ok_or_else(bad))
                .collect::<Result<Vec<_>, _>>()?;
            let count = |key: &str| c[key].as_str().and_then(|s| s.parse::<u128>().ok()).ok_or_else(bad);
            Ok(Coalition { channels, conversions: count("conversions")?, journeys: count("journeys")? })
        })
        .collect()
}

/// What a new fit stores.
pub struct NewFit {
    pub channels: Vec<String>,
    pub values: Vec<f64>,
    pub shares: Vec<f64>,
    pub conversion_probability: Option<f64>,
    pub coalitions: Option<serde_json::Value>,
}

/// Fits `kind` ("markov" or "shapley") to aggregated paths.
pub fn fit(kind: &str, paths: &[PathCount]) -> Result<NewFit, AttributionError> {
    Ok(match kind {
        "markov" => {
            let f = MarkovFit::fit(paths)?;
            NewFit {
                channels: f.channels().to_vec(),
                values: f.removal_effects().to_vec(),
                shares: f.shares(),
                conversion_probability: Some(f.conversion_probability()),
                coalitions: None,
            }
        }
        _ => {
            let f = ShapleyFit::fit(paths)?;
            NewFit {
                channels: f.channels().to_vec(),
                values: f.totals().to_vec(),
                shares: f.shares(),
                conversion_probability: None,
                coalitions: Some(coalitions_json(&f.coalitions())),
            }
        }
    })
}
