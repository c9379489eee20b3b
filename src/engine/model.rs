//! A registered model's kind and parameters (`attribution_models.kind`, `.params`) turned
//! into the rule-based engine's [`Rule`] and [`PathRules`], with every mistake named.
//!
//! Parameters are a JSON object. Unknown keys are refused rather than ignored, so a typo
//! (`"lookback_dyas"`) is an error, not a silently different model. Pure: no Postgres.

use super::touch::{validate, PathRules, Rule, RuleError, MICROS_PER_DAY};
use serde_json::{Map, Value};
use thiserror::Error;

/// The kinds of multi-touch models (`weighted`, the fixed-weight split, is not one).
pub const TOUCH_KINDS: [&str; 8] = [
    "first_touch",
    "last_touch",
    "last_non_direct",
    "linear",
    "position_based",
    "time_decay",
    "markov",
    "shapley",
];

/// How a multi-touch model credits the touchpoints that count.
#[derive(Debug, Clone, PartialEq)]
pub enum Credit {
    /// A fixed rule (engine::touch).
    Rule(Rule),
    /// In proportion to each channel's removal effect in the tenant's latest Markov fit.
    Markov,
    /// In proportion to each channel's Shapley value in the tenant's latest fit.
    Shapley,
}

/// A multi-touch model, ready to allocate conversions.
#[derive(Debug, Clone, PartialEq)]
pub struct TouchModel {
    pub credit: Credit,
    pub path: PathRules,
}

impl TouchModel {
    /// Whether the model needs a fit (attribution_fit_model) to allocate.
    pub fn data_driven(&self) -> bool {
        matches!(self.credit, Credit::Markov | Credit::Shapley)
    }
}

#[derive(Debug, Error, PartialEq)]
pub enum ModelError {
    #[error("unknown model kind \"{0}\" (expected weighted, {kinds})", kinds = TOUCH_KINDS.join(", "))]
    UnknownKind(String),
    #[error("model parameters must be a JSON object")]
    NotAnObject,
    #[error("unknown parameter \"{key}\" for a {kind} model (allowed: {allowed})")]
    UnknownParameter { kind: String, key: String, allowed: String },
    #[error("parameter \"{key}\" must be {expected}")]
    BadParameter { key: &'static str, expected: &'static str },
    #[error(transparent)]
    Rule(#[from] RuleError),
}

/// Parameters every multi-touch kind accepts.
const PATH_KEYS: [&str; 5] =
    ["lookback_days", "last_n", "skip_channels", "collapse_repeats", "no_touch_channel"];

/// Parses and validates a multi-touch model. `params` is the JSON text of the params
/// column. Defaults: lookback 30 days, no last-N limit, nothing skipped (`direct` for
/// last_non_direct), repeats kept, `direct` credited when nothing counts; position-based
/// 40/20/40; time decay with a 7-day half-life.
pub fn parse(kind: &str, params: &str) -> Result<TouchModel, ModelError> {
    if !TOUCH_KINDS.contains(&kind) {
        return Err(ModelError::UnknownKind(kind.to_owned()));
    }
    let value: Value = serde_json::from_str(params).map_err(|_| ModelError::NotAnObject)?;
    let Value::Object(map) = value else { return Err(ModelError::NotAnObject) };
    let own: &[&str] = match kind {
        "position_based" => &["first", "middle", "last"],
        "time_decay" => &["half_life_days"],
        _ => &[],
    };
    if let Some(key) = map.keys().find(|k| !PATH_KEYS.contains(&k.as_str()) && !own.contains(&k.as_str())) {
        let allowed = PATH_KEYS.iter().chain(own).copied().collect::<Vec<_>>().join(", ");
        return Err(ModelError::UnknownParameter { kind: kind.to_owned(), key: key.clone(), allowed });
    }

    let default_skip: &[&str] = if kind == "last_non_direct" { &["direct"] } else { &[] };
    let path = PathRules {
        lookback: match map.get("lookback_days") {
            None => Some(30 * MICROS_PER_DAY),
            Some(Value::Null) => None,
            Some(_) => Some(days_to_micros(positive_number(&map, "lookback_days")?)),
        },
        last_n: match map.get("last_n") {
            None | Some(Value::Null) => None,
            Some(v) => {
                Some(v.as_u64().filter(|n| (1..=10_000).contains(n)).ok_or(ModelError::BadParameter {
                    key: "last_n",
                    expected: "an integer from 1 to 10000",
                })? as usize)
            }
        },
        skip_channels: match map.get("skip_channels") {
            None => default_skip.iter().map(|s| (*s).to_owned()).collect(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| i.as_str().filter(|s| !s.is_empty()).map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or(ModelError::BadParameter {
                    key: "skip_channels",
                    expected: "an array of non-empty channel names",
                })?,
            Some(_) => {
                return Err(ModelError::BadParameter {
                    key: "skip_channels",
                    expected: "an array of non-empty channel names",
                })
            }
        },
        collapse_repeats: match map.get("collapse_repeats") {
            None => false,
            Some(v) => v
                .as_bool()
                .ok_or(ModelError::BadParameter { key: "collapse_repeats", expected: "true or false" })?,
        },
        no_touch_channel: match map.get("no_touch_channel") {
            None => "direct".to_owned(),
            Some(v) => v
                .as_str()
                .filter(|s| !s.is_empty())
                .ok_or(ModelError::BadParameter {
                    key: "no_touch_channel",
                    expected: "a non-empty channel name",
                })?
                .to_owned(),
        },
    };
    let rule = match kind {
        "markov" | "shapley" => {
            // Data-driven: the fit gives the credit; the path rules still choose the
            // touchpoints that count. Checked with a rule that accepts any path.
            validate(&Rule::Linear, &path)?;
            let credit = if kind == "markov" { Credit::Markov } else { Credit::Shapley };
            return Ok(TouchModel { credit, path });
        }
        "first_touch" => Rule::FirstTouch,
        "last_touch" | "last_non_direct" => Rule::LastTouch,
        "linear" => Rule::Linear,
        "position_based" => Rule::PositionBased {
            first: share(&map, "first", 40)?,
            middle: share(&map, "middle", 20)?,
            last: share(&map, "last", 40)?,
        },
        "time_decay" => Rule::TimeDecay {
            half_life: match map.get("half_life_days") {
                None => 7 * MICROS_PER_DAY,
                Some(_) => days_to_micros(positive_number(&map, "half_life_days")?),
            },
        },
        _ => unreachable!("checked against TOUCH_KINDS"),
    };
    validate(&rule, &path)?;
    Ok(TouchModel { credit: Credit::Rule(rule), path })
}

/// Longest lookback or half-life accepted: 100 years, far inside the timestamp range.
const MAX_DAYS: f64 = 36_525.0;

fn positive_number(map: &Map<String, Value>, key: &'static str) -> Result<f64, ModelError> {
    map.get(key)
        .and_then(Value::as_f64)
        .filter(|d| *d > 0.0 && *d <= MAX_DAYS)
        .ok_or(ModelError::BadParameter { key, expected: "a number of days above 0 and at most 36525" })
}

fn days_to_micros(days: f64) -> i64 {
    (days * MICROS_PER_DAY as f64).round() as i64
}

fn share(map: &Map<String, Value>, key: &'static str, default: u32) -> Result<u32, ModelError> {
    match map.get(key) {
        None => Ok(default),
        Some(v) => v
            .as_u64()
            .filter(|n| *n <= 1_000_000)
            .map(|n| n as u32)
            .ok_or(ModelError::BadParameter { key, expected: "an integer weight from 0 to 1000000" }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_per_kind() {
        let m = parse("linear", "{}").unwrap();
        assert_eq!(m.credit, Credit::Rule(Rule::Linear));
        assert_eq!(m.path, PathRules::default());
        let m = parse("last_non_direct", "{}").unwrap();
        assert_eq!(m.credit, Credit::Rule(Rule::LastTouch));
        assert_eq!(m.path.skip_channels, vec!["direct".to_owned()]);
        assert_eq!(parse("position_based", "{}").unwrap().credit, Credit::Rule(Rule::U_SHAPED));
        assert_eq!(parse("time_decay", "{}").unwrap().credit, Credit::Rule(Rule::TIME_DECAY_7_DAYS));
        assert_eq!(parse("first_touch", "{}").unwrap().credit, Credit::Rule(Rule::FirstTouch));
        let m = parse("markov", r#"{"collapse_repeats": true}"#).unwrap();
        assert!(m.data_driven() && m.credit == Credit::Markov && m.path.collapse_repeats);
        assert_eq!(parse("shapley", "{}").unwrap().credit, Credit::Shapley);
        assert!(!parse("linear", "{}").unwrap().data_driven());
    }

    #[test]
    fn parameters_are_read() {
        let m = parse(
            "position_based",
            r#"{"first": 30, "middle": 0, "last": 70, "lookback_days": 7.5, "last_n": 4,
                "skip_channels": ["direct", "organic"], "collapse_repeats": true, "no_touch_channel": "unknown"}"#,
        )
        .unwrap();
        assert_eq!(m.credit, Credit::Rule(Rule::PositionBased { first: 30, middle: 0, last: 70 }));
        assert_eq!(m.path.lookback, Some(7 * MICROS_PER_DAY + MICROS_PER_DAY / 2));
        assert_eq!(m.path.last_n, Some(4));
        assert_eq!(m.path.skip_channels, vec!["direct".to_owned(), "organic".to_owned()]);
        assert!(m.path.collapse_repeats);
        assert_eq!(m.path.no_touch_channel, "unknown");
        assert_eq!(parse("linear", r#"{"lookback_days": null}"#).unwrap().path.lookback, None);
        assert_eq!(
            parse("time_decay", r#"{"half_life_days": 1}"#).unwrap().credit,
            Credit::Rule(Rule::TimeDecay { half_life: MICROS_PER_DAY })
        );
    }

    #[test]
    fn mistakes_are_named() {
        assert_eq!(parse("markow", "{}"), Err(ModelError::UnknownKind("markow".into())));
        assert_eq!(parse("weighted", "{}"), Err(ModelError::UnknownKind("weighted".into())));
        assert_eq!(parse("linear", "[]"), Err(ModelError::NotAnObject));
        assert_eq!(parse("linear", "not json"), Err(ModelError::NotAnObject));
        assert!(matches!(
            parse("linear", r#"{"lookback_dyas": 3}"#),
            Err(ModelError::UnknownParameter { key, .. }) if key == "lookback_dyas"
        ));
        // A parameter of another kind is unknown here.
        assert!(matches!(parse("linear", r#"{"first": 3}"#), Err(ModelError::UnknownParameter { .. })));
        assert!(matches!(
            parse("markov", r#"{"half_life_days": 3}"#),
            Err(ModelError::UnknownParameter { .. })
        ));
        for (kind, params, key) in [
            ("linear", r#"{"lookback_days": 0}"#, "lookback_days"),
            ("linear", r#"{"lookback_days": -1}"#, "lookback_days"),
            ("linear", r#"{"lookback_days": "30 days"}"#, "lookback_days"),
            ("linear", r#"{"lookback_days": 1e9}"#, "lookback_days"),
            ("linear", r#"{"last_n": 0}"#, "last_n"),
            ("linear", r#"{"last_n": 2.5}"#, "last_n"),
            ("linear", r#"{"skip_channels": "direct"}"#, "skip_channels"),
            ("linear", r#"{"skip_channels": [""]}"#, "skip_channels"),
            ("linear", r#"{"collapse_repeats": 1}"#, "collapse_repeats"),
            ("linear", r#"{"no_touch_channel": ""}"#, "no_touch_channel"),
            ("position_based", r#"{"first": -1}"#, "first"),
            ("time_decay", r#"{"half_life_days": 0}"#, "half_life_days"),
        ] {
            assert!(
                matches!(parse(kind, params), Err(ModelError::BadParameter { key: k, .. }) if k == key),
                "{kind} {params}"
            );
        }
        assert_eq!(
            parse("position_based", r#"{"first": 0, "middle": 0, "last": 0}"#),
            Err(ModelError::Rule(RuleError::ZeroPositionWeights))
        );
    }
}
