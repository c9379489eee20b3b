//! Rule-based multi-touch attribution: which touchpoints of a customer's path count for
//! a conversion, how much credit each gets, and the exact cents each channel receives.
//!
//! Pure functions of their inputs, like the rest of the engine. The path is sorted
//! first (by time, then channel), so the order in which touchpoints are given never
//! matters. Credit is turned into integer weights and the cents are split by largest
//! remainder (ties to the channel whose name sorts first), so every conversion's cents
//! add up to its revenue exactly, refunds mirror the split, and the same input always
//! gives the same cents.
//!
//! Not wired into SQL yet: the models of the attribution-models issue build on it.

use super::allocation::split_cents_wide;
use std::collections::BTreeMap;
use thiserror::Error;

/// Postgres timestamps: microseconds.
pub const MICROS_PER_DAY: i64 = 86_400 * 1_000_000;

/// One touchpoint of a customer's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Touchpoint {
    /// When it happened (microseconds, as Postgres stores timestamps).
    pub at: i64,
    pub channel: String,
}

/// How a conversion's credit is shared among the touchpoints that count.
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    /// All credit to the earliest touchpoint.
    FirstTouch,
    /// All credit to the latest touchpoint (last non-direct: this rule with `direct` in
    /// [`PathRules::skip_channels`]).
    LastTouch,
    /// Equal credit to every touchpoint.
    Linear,
    /// `first` and `last` parts to the first and last touchpoints, `middle` shared
    /// equally by those in between (40/20/40 is the U shape). One touchpoint gets all;
    /// two share first:last.
    PositionBased { first: u32, middle: u32, last: u32 },
    /// Weight 2^(-age / half_life) per touchpoint, age measured to the conversion.
    TimeDecay { half_life: i64 },
}

impl Rule {
    /// The U shape: 40 % first, 20 % middle, 40 % last.
    pub const U_SHAPED: Rule = Rule::PositionBased { first: 40, middle: 20, last: 40 };
    /// Time decay with the default half-life of 7 days.
    pub const TIME_DECAY_7_DAYS: Rule = Rule::TimeDecay { half_life: 7 * MICROS_PER_DAY };
}

/// Which touchpoints of a path count.
#[derive(Debug, Clone, PartialEq)]
pub struct PathRules {
    /// Only touchpoints at most this long before the conversion (and not after it).
    pub lookback: Option<i64>,
    /// Only the last N touchpoints (after the other filters).
    pub last_n: Option<usize>,
    /// Channels that count only when nothing else is left (e.g. `direct`).
    pub skip_channels: Vec<String>,
    /// Consecutive touchpoints of the same channel count once (the earliest of them).
    pub collapse_repeats: bool,
    /// The channel credited when no touchpoint counts.
    pub no_touch_channel: String,
}

impl Default for PathRules {
    /// Lookback 30 days, no last-N limit, nothing skipped, repeats kept, `direct` when
    /// there is no touchpoint.
    fn default() -> Self {
        PathRules {
            lookback: Some(30 * MICROS_PER_DAY),
            last_n: None,
            skip_channels: Vec::new(),
            collapse_repeats: false,
            no_touch_channel: "direct".to_owned(),
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RuleError {
    #[error("position-based weights must not all be zero")]
    ZeroPositionWeights,
    #[error("the time-decay half-life must be positive, got {0} microseconds")]
    NonPositiveHalfLife(i64),
    #[error("the lookback must be positive, got {0} microseconds")]
    NonPositiveLookback(i64),
    #[error("last_n must be at least 1")]
    ZeroLastN,
    #[error("the channel for conversions without touchpoints must not be empty")]
    EmptyNoTouchChannel,
}

/// Checks a rule and its path rules once, so the per-conversion work can trust them.
pub fn validate(rule: &Rule, path: &PathRules) -> Result<(), RuleError> {
    match rule {
        Rule::PositionBased { first: 0, middle: 0, last: 0 } => return Err(RuleError::ZeroPositionWeights),
        Rule::TimeDecay { half_life } if *half_life <= 0 => {
            return Err(RuleError::NonPositiveHalfLife(*half_life))
        }
        _ => {}
    }
    match path {
        PathRules { lookback: Some(l), .. } if *l <= 0 => Err(RuleError::NonPositiveLookback(*l)),
        PathRules { last_n: Some(0), .. } => Err(RuleError::ZeroLastN),
        p if p.no_touch_channel.is_empty() => Err(RuleError::EmptyNoTouchChannel),
        _ => Ok(()),
    }
}

/// The touchpoints that count for a conversion at `conversion_at`, oldest first.
pub fn counting_path(conversion_at: i64, touches: &[Touchpoint], path: &PathRules) -> Vec<Touchpoint> {
    let mut counted: Vec<Touchpoint> = touches
        .iter()
        .filter(|t| t.at <= conversion_at)
        .filter(|t| {
            path.lookback.is_none_or(|l| i128::from(conversion_at) - i128::from(t.at) <= i128::from(l))
        })
        .cloned()
        .collect();
    counted.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.channel.cmp(&b.channel)));
    if !path.skip_channels.is_empty() {
        let kept: Vec<Touchpoint> =
            counted.iter().filter(|t| !path.skip_channels.contains(&t.channel)).cloned().collect();
        if !kept.is_empty() {
            counted = kept;
        }
    }
    if path.collapse_repeats {
        counted.dedup_by(|later, earlier| later.channel == earlier.channel);
    }
    if let Some(n) = path.last_n {
        let excess = counted.len().saturating_sub(n);
        counted.drain(..excess);
    }
    counted
}

/// Fixed-point scale of time-decay weights: 2^40, so the smallest weight a path can
/// give (after 40 half-lives) still counts and the largest fits any sum of them.
const DECAY_SCALE: f64 = (1u64 << 40) as f64;

/// Integer credit per touchpoint of a counting path (same order as the path). Never all
/// zero for a non-empty path.
pub fn credit(conversion_at: i64, path: &[Touchpoint], rule: &Rule) -> Vec<u64> {
    let n = path.len();
    if n == 0 {
        return Vec::new();
    }
    let mut weights = vec![0u64; n];
    match rule {
        Rule::FirstTouch => weights[0] = 1,
        Rule::LastTouch => weights[n - 1] = 1,
        Rule::Linear => weights.fill(1),
        Rule::PositionBased { first, middle, last } => match n {
            1 => weights[0] = 1,
            2 if first + last == 0 => weights.fill(1),
            2 => {
                weights[0] = u64::from(*first);
                weights[1] = u64::from(*last);
            }
            _ => {
                // first × m, each of the m middle ones × 1 × middle, last × m: the
                // shares first : middle : last, with the middle part split equally.
                let m = (n - 2) as u64;
                weights[0] = u64::from(*first) * m;
                weights[n - 1] = u64::from(*last) * m;
                for w in &mut weights[1..n - 1] {
                    *w = u64::from(*middle);
                }
                if weights.iter().all(|w| *w == 0) {
                    weights.fill(1);
                }
            }
        },
        Rule::TimeDecay { half_life } => {
            for (w, t) in weights.iter_mut().zip(path) {
                let age = (i128::from(conversion_at) - i128::from(t.at)).max(0) as f64;
                let factor = (-(age / *half_life as f64)).exp2();
                *w = (factor * DECAY_SCALE).round() as u64;
            }
            if weights.iter().all(|w| *w == 0) {
                // Every touchpoint older than 40 half-lives: the newest takes it all.
                weights[n - 1] = 1;
            }
        }
    }
    weights
}

/// The cents of `revenue` per channel for one conversion: the credit of each channel's
/// touchpoints summed, split by largest remainder. Channels in name order; channels
/// whose touchpoints got no credit are left out. A conversion with no counting
/// touchpoint credits `path.no_touch_channel` with everything.
pub fn allocate(
    revenue: i64,
    conversion_at: i64,
    touches: &[Touchpoint],
    rule: &Rule,
    path: &PathRules,
) -> Vec<(String, i64)> {
    allocate_with_shares(revenue, conversion_at, touches, rule, path)
        .into_iter()
        .map(|(channel, _, cents)| (channel, cents))
        .collect()
}

/// One conversion's allocation: per channel (name order), its credit as a fraction
/// rounded half up to [`RATIO_SCALE`] (so 1/3 is 3333333333) and its cents.
pub type Split = Vec<(String, i64, i64)>;

/// Denominator of the fractions in a [`Split`]: ten decimal places, as
/// `attribution_allocations.allocation_ratio` keeps them.
pub const RATIO_SCALE: u128 = 10_000_000_000;

/// Cents and credit fractions from integer weights per channel (in name order);
/// `no_touch_channel` takes everything when there are none.
pub fn split_by_weights(revenue: i64, weights: Vec<(String, u128)>, no_touch_channel: &str) -> Split {
    if weights.is_empty() {
        return vec![(no_touch_channel.to_owned(), RATIO_SCALE as i64, revenue)];
    }
    let w: Vec<u128> = weights.iter().map(|(_, w)| *w).collect();
    let total: u128 = w.iter().sum();
    weights
        .into_iter()
        .zip(split_cents_wide(revenue, &w))
        .map(|((channel, w), cents)| {
            // w ≤ total < 2^(64 + 40) here, so w · 10^10 fits in u128.
            let ratio = (w.saturating_mul(RATIO_SCALE) + total / 2) / total;
            (channel, ratio as i64, cents)
        })
        .collect()
}

/// A rule-based model's integer credit per channel for one conversion, in name order
/// (empty when no touchpoint counts).
pub fn channel_weights(
    conversion_at: i64,
    touches: &[Touchpoint],
    rule: &Rule,
    path: &PathRules,
) -> Vec<(String, u128)> {
    let counted = counting_path(conversion_at, touches, path);
    let mut per_channel: BTreeMap<&str, u128> = BTreeMap::new();
    for (t, w) in counted.iter().zip(credit(conversion_at, &counted, rule)) {
        if w > 0 {
            *per_channel.entry(t.channel.as_str()).or_default() += u128::from(w);
        }
    }
    per_channel.into_iter().map(|(c, w)| (c.to_owned(), w)).collect()
}

/// [`allocate`], with each channel's share of the credit (credit / total credit; the
/// shares sum to 1 up to floating-point rounding) between its name and its cents.
pub fn allocate_with_shares(
    revenue: i64,
    conversion_at: i64,
    touches: &[Touchpoint],
    rule: &Rule,
    path: &PathRules,
) -> Vec<(String, f64, i64)> {
    split_by_weights(revenue, channel_weights(conversion_at, touches, rule, path), &path.no_touch_channel)
        .into_iter()
        .map(|(channel, ratio, cents)| (channel, ratio as f64 / RATIO_SCALE as f64, cents))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = MICROS_PER_DAY;

    fn path(touches: &[(i64, &str)]) -> Vec<Touchpoint> {
        touches.iter().map(|(at, c)| Touchpoint { at: *at, channel: (*c).to_owned() }).collect()
    }

    fn cents(revenue: i64, touches: &[(i64, &str)], rule: &Rule, rules: &PathRules) -> Vec<(String, i64)> {
        allocate(revenue, 100 * DAY, &path(touches), rule, rules)
    }

    fn pairs(v: &[(&str, i64)]) -> Vec<(String, i64)> {
        v.iter().map(|(c, n)| ((*c).to_owned(), *n)).collect()
    }

    const JOURNEY: [(i64, &str); 4] =
        [(90 * DAY, "search"), (95 * DAY, "email"), (98 * DAY, "social"), (99 * DAY, "direct")];

    #[test]
    fn single_touch_rules() {
        let r = PathRules::default();
        assert_eq!(cents(1000, &JOURNEY, &Rule::FirstTouch, &r), pairs(&[("search", 1000)]));
        assert_eq!(cents(1000, &JOURNEY, &Rule::LastTouch, &r), pairs(&[("direct", 1000)]));
        let non_direct = PathRules { skip_channels: vec!["direct".into()], ..PathRules::default() };
        assert_eq!(cents(1000, &JOURNEY, &Rule::LastTouch, &non_direct), pairs(&[("social", 1000)]));
    }

    #[test]
    fn linear_splits_equally_with_ties_to_the_first_name() {
        let r = PathRules::default();
        // 1000 / 4 = 250 each.
        assert_eq!(
            cents(1000, &JOURNEY, &Rule::Linear, &r),
            pairs(&[("direct", 250), ("email", 250), ("search", 250), ("social", 250)])
        );
        // 1001: one cent left over, to the first channel by name.
        assert_eq!(
            cents(1001, &JOURNEY, &Rule::Linear, &r),
            pairs(&[("direct", 251), ("email", 250), ("search", 250), ("social", 250)])
        );
        // A channel touched twice gets twice the credit.
        let twice = [(90 * DAY, "search"), (95 * DAY, "email"), (96 * DAY, "search")];
        assert_eq!(cents(300, &twice, &Rule::Linear, &r), pairs(&[("email", 100), ("search", 200)]));
    }

    #[test]
    fn position_based_handles_one_two_and_many_touches() {
        let r = PathRules::default();
        let u = Rule::U_SHAPED;
        assert_eq!(cents(1000, &JOURNEY[..1], &u, &r), pairs(&[("search", 1000)]));
        assert_eq!(cents(1000, &JOURNEY[..2], &u, &r), pairs(&[("email", 500), ("search", 500)]));
        // 40 / 10 / 10 / 40.
        assert_eq!(
            cents(1000, &JOURNEY, &u, &r),
            pairs(&[("direct", 400), ("email", 100), ("search", 400), ("social", 100)])
        );
        // J shape: 20 / 20 / 60.
        let j = Rule::PositionBased { first: 20, middle: 20, last: 60 };
        assert_eq!(
            cents(1000, &JOURNEY[..3], &j, &r),
            pairs(&[("email", 200), ("search", 200), ("social", 600)])
        );
    }

    #[test]
    fn time_decay_halves_credit_every_half_life() {
        let r = PathRules::default();
        let two = [(86 * DAY, "search"), (93 * DAY, "email")];
        // Ages 14 and 7 days with a 7-day half-life: weights 1/4 and 1/2.
        assert_eq!(cents(300, &two, &Rule::TIME_DECAY_7_DAYS, &r), pairs(&[("email", 200), ("search", 100)]));
    }

    #[test]
    fn path_rules_filter_the_touchpoints() {
        let r = PathRules { lookback: Some(5 * DAY), ..PathRules::default() };
        assert_eq!(cents(1000, &JOURNEY, &Rule::FirstTouch, &r), pairs(&[("email", 1000)]));
        let r = PathRules { last_n: Some(2), ..PathRules::default() };
        assert_eq!(cents(1000, &JOURNEY, &Rule::FirstTouch, &r), pairs(&[("social", 1000)]));
        // A touchpoint after the conversion never counts.
        let late = [(90 * DAY, "search"), (101 * DAY, "email")];
        assert_eq!(cents(1000, &late, &Rule::LastTouch, &PathRules::default()), pairs(&[("search", 1000)]));
        // Repeats collapse to the earliest of each run.
        let repeats = [(90 * DAY, "search"), (91 * DAY, "search"), (92 * DAY, "email"), (93 * DAY, "search")];
        let r = PathRules { collapse_repeats: true, ..PathRules::default() };
        assert_eq!(cents(300, &repeats, &Rule::Linear, &r), pairs(&[("email", 100), ("search", 200)]));
        // Only skipped channels left: they count after all.
        let only_direct = [(95 * DAY, "direct")];
        let r = PathRules { skip_channels: vec!["direct".into()], ..PathRules::default() };
        assert_eq!(cents(1000, &only_direct, &Rule::LastTouch, &r), pairs(&[("direct", 1000)]));
        // No touchpoint at all: the no-touch channel.
        let r = PathRules { no_touch_channel: "unattributed".into(), ..PathRules::default() };
        assert_eq!(cents(1000, &[], &Rule::Linear, &r), pairs(&[("unattributed", 1000)]));
    }

    #[test]
    fn zero_negative_and_extreme_revenue() {
        let r = PathRules::default();
        assert_eq!(
            cents(0, &JOURNEY, &Rule::Linear, &r),
            pairs(&[("direct", 0), ("email", 0), ("search", 0), ("social", 0)])
        );
        assert_eq!(
            cents(-1001, &JOURNEY, &Rule::Linear, &r),
            pairs(&[("direct", -251), ("email", -250), ("search", -250), ("social", -250)])
        );
        for revenue in [i64::MAX, i64::MIN, i64::MIN + 1] {
            for rule in [Rule::Linear, Rule::U_SHAPED, Rule::TIME_DECAY_7_DAYS, Rule::FirstTouch] {
                let split = cents(revenue, &JOURNEY, &rule, &r);
                assert_eq!(split.iter().map(|(_, c)| i128::from(*c)).sum::<i128>(), i128::from(revenue));
            }
        }
        assert_eq!(split_cents_wide(i64::MIN, &[1]), vec![i64::MIN]);
    }

    #[test]
    fn validation_refuses_bad_parameters() {
        let ok = PathRules::default();
        assert_eq!(
            validate(&Rule::PositionBased { first: 0, middle: 0, last: 0 }, &ok),
            Err(RuleError::ZeroPositionWeights)
        );
        assert_eq!(validate(&Rule::TimeDecay { half_life: 0 }, &ok), Err(RuleError::NonPositiveHalfLife(0)));
        assert_eq!(
            validate(&Rule::Linear, &PathRules { lookback: Some(-1), ..PathRules::default() }),
            Err(RuleError::NonPositiveLookback(-1))
        );
        assert_eq!(
            validate(&Rule::Linear, &PathRules { last_n: Some(0), ..PathRules::default() }),
            Err(RuleError::ZeroLastN)
        );
        assert_eq!(
            validate(&Rule::Linear, &PathRules { no_touch_channel: String::new(), ..PathRules::default() }),
            Err(RuleError::EmptyNoTouchChannel)
        );
        assert_eq!(validate(&Rule::U_SHAPED, &ok), Ok(()));
    }

    /// A small deterministic generator, so the property checks need no dependency.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            self.0 >> 33
        }
    }

    #[test]
    fn properties_sums_are_exact_results_deterministic_and_order_irrelevant() {
        let channels = ["search", "email", "social", "direct", "affiliate", "tv"];
        let rules = [
            Rule::FirstTouch,
            Rule::LastTouch,
            Rule::Linear,
            Rule::U_SHAPED,
            Rule::PositionBased { first: 0, middle: 1, last: 3 },
            Rule::TIME_DECAY_7_DAYS,
            Rule::TimeDecay { half_life: 3_600_000_000 },
        ];
        let path_rules = [
            PathRules::default(),
            PathRules {
                skip_channels: vec!["direct".into()],
                collapse_repeats: true,
                last_n: Some(3),
                ..PathRules::default()
            },
            PathRules { lookback: None, ..PathRules::default() },
        ];
        let mut rng = Lcg(42);
        for case in 0..3000 {
            let n = (rng.next() % 9) as usize;
            let touches: Vec<(i64, &str)> = (0..n)
                .map(|_| {
                    ((rng.next() % (60 * 24)) as i64 * 3_600_000_000, channels[(rng.next() % 6) as usize])
                })
                .collect();
            let revenue = match case % 4 {
                0 => (rng.next() % 100_000) as i64,
                1 => -((rng.next() % 100_000) as i64),
                2 => (rng.next() as i64) << 30,
                _ => (rng.next() % 7) as i64,
            };
            let conversion = 45 * DAY;
            let rule = &rules[case % rules.len()];
            let pr = &path_rules[case % path_rules.len()];
            let forward = allocate(revenue, conversion, &path(&touches), rule, pr);
            assert_eq!(
                forward.iter().map(|(_, c)| *c).sum::<i64>(),
                revenue,
                "case {case}: {touches:?} {rule:?}"
            );
            let mut reversed = path(&touches);
            reversed.reverse();
            assert_eq!(
                allocate(revenue, conversion, &reversed, rule, pr),
                forward,
                "case {case}: order matters"
            );
            assert_eq!(allocate(revenue, conversion, &path(&touches), rule, pr), forward);
            // Positive revenue never gives a channel negative cents.
            if revenue > 0 && !forward.is_empty() {
                assert!(forward.iter().all(|(_, c)| *c >= 0));
            }
        }
    }
}
