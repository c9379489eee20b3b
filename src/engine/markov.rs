//! Data-driven attribution, part one: a first-order Markov chain over channels and each
//! channel's removal effect, solved exactly.
//!
//! The fit reads aggregated paths (a channel sequence with how many journeys along it
//! converted and how many did not) and builds the chain `(start) → c1 → … → ck →
//! (conversion | null)`, every transition counted once per journey. The removal effect of
//! a channel is `1 − P(conversion | channel removed) / P(conversion)`, where removing a
//! channel sends every transition into it to `(null)`.
//!
//! Exact, not simulated: `P(conversion)` is the absorption probability of the chain, the
//! solution of `(I − Q) x = r` over the transient states. Removing channel `c` only loses
//! the converting journeys that pass through `c`, so `P(conversion | c removed) =
//! P(conversion) − P(reach c) · x_c`, and with the fundamental matrix `N = (I − Q)⁻¹`,
//! `P(reach c) = N_start,c / N_c,c`. One inversion therefore gives every removal effect
//! (`O(n³)` for n channels, instead of one solve per removed channel), and the result is
//! the same number as removing the channel and solving again (the tests check that).
//!
//! Consecutive repeats of a channel (`a > a > b`) count as one visit: the chain has no
//! self-loops. This is what `channelattribution`'s `markov_model` (and
//! `marketing_attribution_models` with its default `transition_to_same_state=False`) do,
//! and it changes no removal effect: a self-loop only delays leaving a state, the
//! probabilities of where the chain goes next are the same with it or without it.
//!
//! Everything is a pure function of the multiset of paths: channel names are interned to
//! integer ids in name order, counts are exact integers (`u128`, so sums of `u64` counts
//! never overflow), and the arithmetic runs in a fixed order, so the same paths in any
//! order give bit-identical fits. A fit turns into integer weights per conversion path
//! ([`MarkovFit::path_weights`]) and from there into exact cents with
//! [`split_cents_wide`], like the rule-based models of `engine::touch`.

use super::allocation::split_cents_wide;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use thiserror::Error;

/// Upper bound on the channels of a data-driven fit. The Markov fit counts transitions in
/// a 513 × 514 matrix of `u128` (4 MiB, of which only the rows of channels that exist are
/// touched) and inverts a dense n × n matrix of `f64` (n = 512: 2 MiB and under 0.1 s).
/// Attribution channels are a handful to a few dozen in practice, so this only stops
/// runaway inputs (a channel per campaign id).
pub const MAX_FIT_CHANNELS: usize = 512;

/// One aggregated path: the journeys that touched these channels in this order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathCount {
    /// Channels in the order of the touchpoints, oldest first. Repeats allowed.
    pub channels: Vec<String>,
    /// Journeys along this path that converted.
    pub conversions: u64,
    /// Journeys along this path that did not convert.
    pub nulls: u64,
}

impl PathCount {
    /// A path from channel names, for tests and callers that build paths by hand.
    pub fn new(channels: &[&str], conversions: u64, nulls: u64) -> Self {
        PathCount { channels: channels.iter().map(|c| (*c).to_owned()).collect(), conversions, nulls }
    }
}

/// Why a data-driven model (Markov or Shapley) cannot be fitted or restored.
#[derive(Debug, Error, PartialEq)]
pub enum FitError {
    #[error("no path converts, so there is nothing to attribute")]
    NoConversions,
    #[error("a data-driven model has at most {MAX_FIT_CHANNELS} channels, the paths have {0}")]
    TooManyChannels(usize),
    #[error("the transition matrix is singular: some channel never reaches an end state")]
    Singular,
    #[error("a stored fit must list each channel once, in name order")]
    UnsortedChannels,
    #[error("a stored fit has {0} channels but {1} values")]
    LengthMismatch(usize, usize),
    #[error("stored removal effect {0} of channel {1:?} is not a number in [0, 1]")]
    BadRemovalEffect(f64, String),
    #[error("stored conversion probability {0} is not a number in (0, 1]")]
    BadConversionProbability(f64),
    #[error("stored coalition {0:?} is not a sorted set of known channels with conversions <= journeys")]
    BadCoalition(Vec<String>),
    #[error(
        "the Shapley fit would take about {0} steps (at most {limit}): too many large converting channel sets",
        limit = crate::engine::shapley::MAX_FIT_WORK
    )]
    TooComplex(u128),
}

/// Channel names in name order, and where each id handed out while interning went.
pub(crate) struct Names {
    /// The channels of the paths with journeys, in name order.
    pub names: Vec<String>,
    /// `rank[id]`: the position in `names` of the channel interned as `id`.
    pub rank: Vec<u32>,
}

/// A fast hash for channel names (eight bytes per multiply, as rustc's FxHash, with a
/// final mix so the table's low bits are good too). Not resistant to chosen collisions,
/// and it need not be: the tables never hold more than [`MAX_FIT_CHANNELS`] names, so even a
/// chain of collisions costs at most that many comparisons per touchpoint.
#[derive(Default)]
struct NameHasher(u64);

impl NameHasher {
    const K: u64 = 0xf135_7aea_2e62_a9c5;
    fn add(&mut self, word: u64) {
        self.0 = (self.0 ^ word).wrapping_mul(Self::K).rotate_left(26);
    }
}

impl Hasher for NameHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, byte: u8) {
        self.add(u64::from(byte));
    }

    fn write_u128(&mut self, word: u128) {
        self.add(word as u64);
        self.add((word >> 64) as u64);
    }

    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^ (h >> 33)
    }
}

type NameMap<K> = HashMap<K, u32, BuildHasherDefault<NameHasher>>;

/// A name of at most 15 bytes packed with its length into one integer, so that looking it
/// up compares integers instead of strings (channel names are mostly this short).
fn packed(name: &str) -> Option<u128> {
    let bytes = name.as_bytes();
    (bytes.len() < 16).then(|| {
        let mut word = [0u8; 16];
        word[..bytes.len()].copy_from_slice(bytes);
        word[15] = bytes.len() as u8;
        u128::from_le_bytes(word)
    })
}

/// Interns channel names in one pass: calls `visit(ids, conversions, nulls)` for every
/// path with journeys, ids in order of first appearance, and returns the names in name
/// order with the ranks that map those ids to it (so that nothing a caller keeps depends
/// on the order of the paths). Paths with neither conversions nor nulls never happened
/// and are skipped, so a channel seen only on them is unknown to the fit.
///
/// This loop is most of the time of a fit: one look-up per touchpoint (none for a repeat
/// of the previous one) in a table that stays in the L1 cache, and nothing stored per
/// touchpoint. With SipHash and the ids kept for a second pass, fits took twice as long.
pub(crate) fn intern(
    paths: &[PathCount],
    mut visit: impl FnMut(&[u32], u64, u64),
) -> Result<Names, FitError> {
    let mut short: NameMap<u128> = HashMap::default();
    let mut long: NameMap<&str> = HashMap::default();
    let mut first_seen: Vec<&str> = Vec::new();
    let mut ids: Vec<u32> = Vec::new();
    let kept = |p: &&PathCount| p.conversions > 0 || p.nulls > 0;
    for p in paths.iter().filter(kept) {
        ids.clear();
        let mut previous: Option<(&str, u32)> = None;
        for name in &p.channels {
            if let Some((prev, id)) = previous {
                if prev == name {
                    ids.push(id);
                    continue;
                }
            }
            let key = packed(name);
            let found = match key {
                Some(k) => short.get(&k),
                None => long.get(name.as_str()),
            };
            let id = match found {
                Some(id) => *id,
                None => {
                    if first_seen.len() == MAX_FIT_CHANNELS {
                        let distinct: std::collections::HashSet<&str> = paths
                            .iter()
                            .filter(kept)
                            .flat_map(|p| p.channels.iter().map(String::as_str))
                            .collect();
                        return Err(FitError::TooManyChannels(distinct.len()));
                    }
                    let id = first_seen.len() as u32;
                    match key {
                        Some(k) => short.insert(k, id),
                        None => long.insert(name, id),
                    };
                    first_seen.push(name);
                    id
                }
            };
            previous = Some((name, id));
            ids.push(id);
        }
        visit(&ids, p.conversions, p.nulls);
    }
    let mut order: Vec<u32> = (0..first_seen.len() as u32).collect();
    order.sort_unstable_by_key(|i| first_seen[*i as usize]);
    let mut rank = vec![0u32; order.len()];
    for (r, i) in order.iter().enumerate() {
        rank[*i as usize] = r as u32;
    }
    let names = order.iter().map(|i| first_seen[*i as usize].to_owned()).collect();
    Ok(Names { names, rank })
}

/// Fixed-point scale of the integer weights: 2^40, as for the time-decay credit. The
/// largest value of a path maps to exactly 2^40, so every other one keeps 12 significant
/// digits and `split_cents_wide` never sees a product above 2^104.
const WEIGHT_SCALE: f64 = (1u64 << 40) as f64;

/// Integer weights proportional to `values` (one path's removal effects or Shapley
/// values): negatives (and NaN) count as 0, the largest maps to 2^40, and when nothing is
/// positive every value gets weight 1 (an equal split).
pub(crate) fn quantise(values: &[f64]) -> Vec<u128> {
    let max = values.iter().copied().filter(|v| *v > 0.0).fold(0.0f64, f64::max);
    if max <= 0.0 {
        return vec![1; values.len()];
    }
    values.iter().map(|v| if *v > 0.0 { (v / max * WEIGHT_SCALE).round() as u128 } else { 0 }).collect()
}

/// The distinct channels of a path in name order.
pub(crate) fn distinct_sorted(path_channels: &[String]) -> Vec<&str> {
    let mut distinct: Vec<&str> = path_channels.iter().map(String::as_str).collect();
    distinct.sort_unstable();
    distinct.dedup();
    distinct
}

/// Weights per distinct channel (name order), zero weights left out; see
/// [`MarkovFit::path_weights`].
pub(crate) fn weights_from_values(distinct: &[&str], values: &[f64]) -> Vec<(String, u128)> {
    distinct.iter().zip(quantise(values)).filter(|(_, w)| *w > 0).map(|(c, w)| ((*c).to_owned(), w)).collect()
}

/// Cents per channel from path weights; everything to `no_touch_channel` for an empty path.
pub(crate) fn cents_from_weights(
    revenue: i64,
    weights: Vec<(String, u128)>,
    no_touch_channel: &str,
) -> Vec<(String, i64)> {
    if weights.is_empty() {
        return vec![(no_touch_channel.to_owned(), revenue)];
    }
    let w: Vec<u128> = weights.iter().map(|(_, w)| *w).collect();
    weights.into_iter().map(|(c, _)| c).zip(split_cents_wide(revenue, &w)).collect()
}

/// A fitted Markov model: the channels in name order with their removal effects.
/// Deterministic for a given multiset of paths, and storable: [`MarkovFit::channels`],
/// [`MarkovFit::removal_effects`] and [`MarkovFit::conversion_probability`] are all it
/// holds, and [`MarkovFit::from_parts`] restores it.
#[derive(Debug, Clone, PartialEq)]
pub struct MarkovFit {
    channels: Vec<String>,
    removal_effects: Vec<f64>,
    conversion_probability: f64,
}

impl MarkovFit {
    /// Fits the chain to aggregated paths. Errors when no journey converts (there is no
    /// conversion to attribute, and every removal effect would be 0/0) and above
    /// [`MAX_FIT_CHANNELS`] channels. A path without channels is a journey that went from
    /// `(start)` straight to its end: it counts in `P(conversion)` but credits no channel.
    pub fn fit(paths: &[PathCount]) -> Result<MarkovFit, FitError> {
        // Counted in the ids of first appearance, in rows of the largest possible width so
        // that nothing moves when a channel appears: rows are the channels, then (start);
        // columns the channels, then (conversion), (null). The allocation is zeroed lazily
        // by the system, and only the rows of channels that exist are ever touched.
        const W: usize = MAX_FIT_CHANNELS + 2;
        let (start, conv, null) = (MAX_FIT_CHANNELS, MAX_FIT_CHANNELS, MAX_FIT_CHANNELS + 1);
        let mut raw = vec![0u128; (MAX_FIT_CHANNELS + 1) * W];
        let mut total_conversions: u128 = 0;
        let names = intern(paths, |ids, conversions, nulls| {
            let journeys = u128::from(conversions) + u128::from(nulls);
            total_conversions += u128::from(conversions);
            let mut from = start;
            for id in ids.iter().map(|id| *id as usize) {
                if id != from {
                    raw[from * W + id] += journeys;
                    from = id;
                }
            }
            raw[from * W + conv] += u128::from(conversions);
            raw[from * W + null] += u128::from(nulls);
        })?;
        if total_conversions == 0 {
            return Err(FitError::NoConversions);
        }
        // The same counts with channels in name order, n + 1 rows of n + 2.
        let n = names.names.len();
        let width = n + 2;
        let mut counts = vec![0u128; (n + 1) * width];
        let position = |id: usize| if id < n { names.rank[id] as usize } else { n };
        for from in (0..n).chain([start]) {
            let row = position(from) * width;
            for to in 0..n {
                counts[row + names.rank[to] as usize] = raw[from * W + to];
            }
            counts[row + n] = raw[from * W + conv];
            counts[row + n + 1] = raw[from * W + null];
        }
        let chain = Chain::from_counts(n, &counts);
        let (removal_effects, conversion_probability) = chain.removal_effects()?;
        Ok(MarkovFit { channels: names.names, removal_effects, conversion_probability })
    }

    /// Restores a stored fit, checking what [`MarkovFit::path_weights`] relies on.
    pub fn from_parts(
        channels: Vec<String>,
        removal_effects: Vec<f64>,
        conversion_probability: f64,
    ) -> Result<MarkovFit, FitError> {
        if channels.len() != removal_effects.len() {
            return Err(FitError::LengthMismatch(channels.len(), removal_effects.len()));
        }
        if channels.len() > MAX_FIT_CHANNELS {
            return Err(FitError::TooManyChannels(channels.len()));
        }
        if channels.windows(2).any(|w| w[0] >= w[1]) {
            return Err(FitError::UnsortedChannels);
        }
        if let Some((c, re)) =
            channels.iter().zip(&removal_effects).find(|(_, re)| !(0.0..=1.0).contains(*re))
        {
            return Err(FitError::BadRemovalEffect(*re, c.clone()));
        }
        if !(conversion_probability > 0.0 && conversion_probability <= 1.0) {
            return Err(FitError::BadConversionProbability(conversion_probability));
        }
        Ok(MarkovFit { channels, removal_effects, conversion_probability })
    }

    /// The channels seen on paths with journeys, in name order.
    pub fn channels(&self) -> &[String] {
        &self.channels
    }

    /// Removal effect per channel (same order as [`MarkovFit::channels`]), each in [0, 1]:
    /// the share of conversions lost without the channel.
    pub fn removal_effects(&self) -> &[f64] {
        &self.removal_effects
    }

    /// `P(conversion)` from `(start)`: the chain's conversion rate.
    pub fn conversion_probability(&self) -> f64 {
        self.conversion_probability
    }

    /// The removal effect of one channel; `None` for a channel the fit never saw.
    pub fn removal_effect(&self, channel: &str) -> Option<f64> {
        self.channels.binary_search_by(|c| c.as_str().cmp(channel)).ok().map(|i| self.removal_effects[i])
    }

    /// Each channel's share of the conversions, `RE_c / Σ RE` (the numbers
    /// `channelattribution` reports, divided by the total conversions). All zero only when
    /// no converting journey touched a channel.
    pub fn shares(&self) -> Vec<f64> {
        let total: f64 = self.removal_effects.iter().sum();
        self.removal_effects.iter().map(|re| if total > 0.0 { re / total } else { 0.0 }).collect()
    }

    /// Integer weights of one conversion's path for [`split_cents_wide`]: one per distinct
    /// channel on the path (repeats count once), in name order, proportional to the
    /// channels' removal effects (the largest scaled to 2^40, rounded). Channels with
    /// weight 0 (removal effect 0, or unknown to the fit) are left out; when that is all of
    /// them, every distinct channel gets weight 1, an equal split. Empty only for an empty
    /// path.
    pub fn path_weights(&self, path_channels: &[String]) -> Vec<(String, u128)> {
        let distinct = distinct_sorted(path_channels);
        let values: Vec<f64> = distinct.iter().map(|c| self.removal_effect(c).unwrap_or(0.0)).collect();
        weights_from_values(&distinct, &values)
    }

    /// The cents of `revenue` per channel for one conversion with this path, by
    /// [`MarkovFit::path_weights`] and largest remainder; a conversion without touchpoints
    /// credits `no_touch_channel` with everything. The cents always add up to `revenue`.
    pub fn allocate(
        &self,
        revenue: i64,
        path_channels: &[String],
        no_touch_channel: &str,
    ) -> Vec<(String, i64)> {
        cents_from_weights(revenue, self.path_weights(path_channels), no_touch_channel)
    }
}

/// The chain as probabilities: `q` (n × n, channel to channel), `r` (channel to
/// conversion), and the start row (`start`, `start_conv`).
struct Chain {
    n: usize,
    q: Vec<f64>,
    r: Vec<f64>,
    start: Vec<f64>,
    start_conv: f64,
}

impl Chain {
    fn from_counts(n: usize, counts: &[u128]) -> Chain {
        let width = n + 2;
        let row = |i: usize| -> (Vec<f64>, f64) {
            let cells = &counts[i * width..(i + 1) * width];
            let total: u128 = cells.iter().sum();
            // Every channel on a kept path has a way out, so only (start) of an empty input
            // could have no transitions; the caller refused that already.
            let total = total.max(1) as f64;
            (cells[..n].iter().map(|c| *c as f64 / total).collect(), cells[n] as f64 / total)
        };
        let mut q = Vec::with_capacity(n * n);
        let mut r = Vec::with_capacity(n);
        for i in 0..n {
            let (to_channels, to_conv) = row(i);
            q.extend(to_channels);
            r.push(to_conv);
        }
        let (start, start_conv) = row(n);
        Chain { n, q, r, start, start_conv }
    }

    /// `(removal effect per channel, P(conversion))`.
    fn removal_effects(&self) -> Result<(Vec<f64>, f64), FitError> {
        let n = self.n;
        let mut a: Vec<f64> = self.q.iter().map(|q| -q).collect();
        for i in 0..n {
            a[i * n + i] += 1.0;
        }
        let inv = invert(a, n).ok_or(FitError::Singular)?;
        // x_c = P(conversion | at c), y_c = expected visits to c from (start).
        let x: Vec<f64> = (0..n).map(|i| dot(&inv[i * n..(i + 1) * n], &self.r)).collect();
        let mut y = vec![0.0; n];
        for (d, s) in self.start.iter().enumerate().filter(|(_, s)| **s != 0.0) {
            for (yc, m) in y.iter_mut().zip(&inv[d * n..(d + 1) * n]) {
                *yc += s * m;
            }
        }
        let p = self.start_conv + dot(&self.start, &x);
        let effects = (0..n)
            .map(|c| {
                let reach = y[c] / inv[c * n + c];
                if p > 0.0 {
                    (reach * x[c] / p).clamp(0.0, 1.0)
                } else {
                    0.0
                }
            })
            .collect();
        Ok((effects, p))
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Inverse of the n × n row-major matrix `a` by Gauss-Jordan elimination with partial
/// pivoting (the first row with the largest magnitude wins, so ties are deterministic).
/// `None` when a pivot is zero or not finite. `I − Q` of an absorbing chain is a
/// non-singular M-matrix with unit diagonal, so this is well conditioned in practice.
fn invert(mut a: Vec<f64>, n: usize) -> Option<Vec<f64>> {
    let mut inv = vec![0.0; n * n];
    for i in 0..n {
        inv[i * n + i] = 1.0;
    }
    for col in 0..n {
        let mut pivot = col;
        for r in col + 1..n {
            if a[r * n + col].abs() > a[pivot * n + col].abs() {
                pivot = r;
            }
        }
        let p = a[pivot * n + col];
        if p == 0.0 || !p.is_finite() {
            return None;
        }
        if pivot != col {
            for k in 0..n {
                a.swap(pivot * n + k, col * n + k);
                inv.swap(pivot * n + k, col * n + k);
            }
        }
        for k in 0..n {
            a[col * n + k] /= p;
            inv[col * n + k] /= p;
        }
        let (pivot_a, pivot_inv) = (a[col * n..(col + 1) * n].to_vec(), inv[col * n..(col + 1) * n].to_vec());
        for r in (0..n).filter(|r| *r != col) {
            let f = a[r * n + col];
            if f != 0.0 {
                for k in 0..n {
                    a[r * n + k] -= f * pivot_a[k];
                    inv[r * n + k] -= f * pivot_inv[k];
                }
            }
        }
    }
    Some(inv)
}

/// Reading the cross-check CSV and writing JSON by hand, for the ignored cross-check tests
/// of this module and of `engine::shapley` (see `tests/crosscheck/`).
#[cfg(test)]
pub(crate) mod crosscheck {
    use super::PathCount;
    use std::collections::BTreeMap;

    /// The paths of the CSV named by `CROSSCHECK_PATHS` (`path,total_conversions,total_null`,
    /// channels separated by `>`), or `None` when the variable is not set.
    pub fn read_paths() -> Option<Vec<PathCount>> {
        let file = std::env::var("CROSSCHECK_PATHS").ok()?;
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("cannot read {file}: {e}"));
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().expect("a header line").split(',').collect();
        let col = |name: &str| header.iter().position(|h| h.trim() == name).expect(name);
        let (path, conv, null) = (col("path"), col("total_conversions"), col("total_null"));
        Some(
            lines
                .filter(|l| !l.trim().is_empty())
                .map(|line| {
                    let fields: Vec<&str> = line.split(',').collect();
                    PathCount {
                        channels: fields[path]
                            .split('>')
                            .map(str::trim)
                            .filter(|c| !c.is_empty())
                            .map(str::to_owned)
                            .collect(),
                        conversions: fields[conv].trim().parse().expect("total_conversions"),
                        nulls: fields[null].trim().parse().expect("total_null"),
                    }
                })
                .collect(),
        )
    }

    pub fn string(s: &str) -> String {
        let mut out = String::from("\"");
        for ch in s.chars() {
            match ch {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    /// `{"channel": value, …}` in name order.
    pub fn object(values: &BTreeMap<String, f64>) -> String {
        let fields: Vec<String> =
            values.iter().map(|(k, v)| format!("{}: {}", string(k), number(*v))).collect();
        format!("{{{}}}", fields.join(", "))
    }

    pub fn number(v: f64) -> String {
        assert!(v.is_finite(), "JSON has no {v}");
        format!("{v:e}")
    }

    /// Prints the JSON and, when `CROSSCHECK_OUT` names a directory, writes it to `name` there.
    pub fn emit(name: &str, json: &str) {
        println!("{json}");
        if let Ok(dir) = std::env::var("CROSSCHECK_OUT") {
            let file = std::path::Path::new(&dir).join(name);
            std::fs::write(&file, json).unwrap_or_else(|e| panic!("cannot write {}: {e}", file.display()));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn fit(paths: &[(&[&str], u64, u64)]) -> MarkovFit {
        MarkovFit::fit(
            &paths.iter().map(|(c, conv, null)| PathCount::new(c, *conv, *null)).collect::<Vec<_>>(),
        )
        .unwrap()
    }

    fn names(c: &[&str]) -> Vec<String> {
        c.iter().map(|c| (*c).to_owned()).collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12
    }

    /// The chain on paper:
    ///   a > b: 1 conversion;  a: 1 conversion, 1 null;  b: 1 null.
    /// Transitions: start→a 3/4, start→b 1/4; a→b, a→conv, a→null 1/3 each; b→conv,
    /// b→null 1/2 each. So x_b = 1/2, x_a = 1/3 + 1/3 · 1/2 = 1/2, P = 1/2.
    /// Without a: only start→b→conv is left, 1/4 · 1/2 = 1/8, RE_a = 1 − (1/8)/(1/2) = 3/4.
    /// Without b: x_a = 1/3, P = 3/4 · 1/3 = 1/4, RE_b = 1 − (1/4)/(1/2) = 1/2.
    /// Shares 3/4 : 1/2 = 0.6 : 0.4.
    #[test]
    fn two_channels_solved_on_paper() {
        let f = fit(&[(&["a", "b"], 1, 0), (&["a"], 1, 1), (&["b"], 0, 1)]);
        assert_eq!(f.channels(), names(&["a", "b"]));
        assert!(close(f.conversion_probability(), 0.5));
        assert!(close(f.removal_effects()[0], 0.75), "{:?}", f.removal_effects());
        assert!(close(f.removal_effects()[1], 0.5));
        let shares = f.shares();
        assert!(close(shares[0], 0.6) && close(shares[1], 0.4), "{shares:?}");
        assert_eq!(
            f.allocate(1000, &names(&["b", "a"]), "direct"),
            vec![("a".into(), 600), ("b".into(), 400)]
        );
        assert_eq!(
            f.allocate(1001, &names(&["a", "b", "a"]), "direct"),
            vec![("a".into(), 601), ("b".into(), 400)]
        );
    }

    #[test]
    fn repeats_are_one_visit() {
        let once = fit(&[(&["a", "b"], 1, 0), (&["a"], 1, 1), (&["b"], 0, 1)]);
        let repeated = fit(&[(&["a", "a", "b", "b", "b"], 1, 0), (&["a", "a"], 1, 1), (&["b"], 0, 1)]);
        assert_eq!(once, repeated);
        // Not consecutive: a > b > a is a real loop back to a.
        let looped = fit(&[(&["a", "b", "a"], 1, 0), (&["b"], 0, 1)]);
        assert!(looped.removal_effects().iter().all(|re| *re > 0.0));
    }

    #[test]
    fn single_channel_takes_everything() {
        let f = fit(&[(&["email"], 3, 7), (&["email", "email"], 1, 0)]);
        assert_eq!(f.channels(), names(&["email"]));
        assert!(close(f.removal_effects()[0], 1.0));
        assert!(close(f.conversion_probability(), 4.0 / 11.0));
        assert_eq!(f.shares(), vec![1.0]);
        assert_eq!(f.allocate(-999, &names(&["email"]), "direct"), vec![("email".into(), -999)]);
    }

    #[test]
    fn a_channel_that_never_converts_has_no_effect() {
        // `tv` only ever leads to null, so nothing converts through it. (A path `tv > search`
        // would give it an effect: in a first-order chain tv → search → conversion exists.)
        let f = fit(&[(&["search"], 5, 5), (&["tv"], 0, 4), (&["search", "tv"], 0, 3)]);
        assert_eq!(f.removal_effect("tv"), Some(0.0));
        assert!(close(f.removal_effect("search").unwrap(), 1.0));
        assert_eq!(f.path_weights(&names(&["tv", "search"])), vec![("search".into(), 1u128 << 40)]);
        // Only zero-effect or unknown channels on the path: an equal split.
        assert_eq!(
            f.path_weights(&names(&["tv", "print", "tv"])),
            vec![("print".into(), 1), ("tv".into(), 1)]
        );
        assert_eq!(
            f.allocate(10, &names(&["tv", "print"]), "direct"),
            vec![("print".into(), 5), ("tv".into(), 5)]
        );
        assert_eq!(f.path_weights(&[]), vec![]);
        assert_eq!(f.allocate(10, &[], "direct"), vec![("direct".into(), 10)]);
    }

    #[test]
    fn no_conversions_is_an_error() {
        let paths = [PathCount::new(&["a"], 0, 5), PathCount::new(&["b", "a"], 0, 1)];
        assert_eq!(MarkovFit::fit(&paths), Err(FitError::NoConversions));
        assert_eq!(MarkovFit::fit(&[]), Err(FitError::NoConversions));
        // Paths without journeys are ignored, channels and all.
        let f = MarkovFit::fit(&[PathCount::new(&["a"], 1, 0), PathCount::new(&["b"], 0, 0)]).unwrap();
        assert_eq!(f.channels(), names(&["a"]));
    }

    #[test]
    fn conversions_without_touchpoints_count_in_the_rate_only() {
        let f = fit(&[(&[], 1, 1), (&["a"], 1, 1)]);
        assert!(close(f.conversion_probability(), 0.5));
        // Half the conversions never touched a: removing it loses the other half.
        assert!(close(f.removal_effects()[0], 0.5));
        assert_eq!(f.shares(), vec![1.0]);
        let only_empty = fit(&[(&[], 2, 1)]);
        assert!(only_empty.channels().is_empty());
        assert!(only_empty.shares().is_empty());
    }

    #[test]
    fn symmetric_channels_tie_and_split_by_name() {
        let f = fit(&[(&["x", "y"], 2, 1), (&["y", "x"], 2, 1)]);
        assert_eq!(f.removal_effects()[0], f.removal_effects()[1]);
        assert_eq!(f.allocate(3, &names(&["y", "x"]), "direct"), vec![("x".into(), 2), ("y".into(), 1)]);
    }

    #[test]
    fn short_long_and_empty_names_are_told_apart() {
        // Packed keys hold up to 15 bytes: these differ only in length, or past byte 15.
        let names = [
            "",
            "a",
            "a\0",
            "fifteen_bytes_x",
            "sixteen_bytes_xy",
            "sixteen_bytes_xz",
            "a much longer channel name, with ünïcödé",
        ];
        let paths: Vec<PathCount> = names
            .iter()
            .enumerate()
            .map(|(i, c)| PathCount::new(&[c, c, names[(i + 1) % 7]], 1, 1))
            .collect();
        let f = MarkovFit::fit(&paths).unwrap();
        let mut sorted: Vec<String> = names.iter().map(|c| (*c).to_owned()).collect();
        sorted.sort();
        assert_eq!(f.channels(), sorted);
        assert!(f.removal_effects().iter().all(|re| *re > 0.0));
    }

    #[test]
    fn too_many_channels_are_refused() {
        let names: Vec<String> = (0..=MAX_FIT_CHANNELS).map(|i| format!("c{i}")).collect();
        let paths: Vec<PathCount> =
            names.iter().map(|c| PathCount { channels: vec![c.clone()], conversions: 1, nulls: 0 }).collect();
        assert_eq!(MarkovFit::fit(&paths), Err(FitError::TooManyChannels(MAX_FIT_CHANNELS + 1)));
        assert!(MarkovFit::fit(&paths[..MAX_FIT_CHANNELS]).is_ok());
    }

    #[test]
    fn counts_near_u64_max_do_not_overflow() {
        let big = u64::MAX;
        let f = fit(&[(&["a", "b"], big, big), (&["a"], big, 0), (&["b"], 0, big)]);
        // Same proportions as 1,1 / 1,0 / 0,1.
        let small = fit(&[(&["a", "b"], 1, 1), (&["a"], 1, 0), (&["b"], 0, 1)]);
        for (x, y) in f.removal_effects().iter().zip(small.removal_effects()) {
            assert!(close(*x, *y));
        }
        let cents = f.allocate(i64::MIN, &names(&["a", "b"]), "direct");
        assert_eq!(cents.iter().map(|(_, c)| i128::from(*c)).sum::<i128>(), i128::from(i64::MIN));
    }

    #[test]
    fn stored_fits_round_trip_and_are_checked() {
        let f = fit(&[(&["a", "b"], 1, 0), (&["a"], 1, 1), (&["b"], 0, 1)]);
        let restored = MarkovFit::from_parts(
            f.channels().to_vec(),
            f.removal_effects().to_vec(),
            f.conversion_probability(),
        )
        .unwrap();
        assert_eq!(restored, f);
        assert_eq!(
            MarkovFit::from_parts(names(&["b", "a"]), vec![0.1, 0.2], 0.5),
            Err(FitError::UnsortedChannels)
        );
        assert_eq!(
            MarkovFit::from_parts(names(&["a", "a"]), vec![0.1, 0.2], 0.5),
            Err(FitError::UnsortedChannels)
        );
        assert_eq!(MarkovFit::from_parts(names(&["a"]), vec![], 0.5), Err(FitError::LengthMismatch(1, 0)));
        assert_eq!(
            MarkovFit::from_parts(names(&["a"]), vec![1.5], 0.5),
            Err(FitError::BadRemovalEffect(1.5, "a".into()))
        );
        assert!(matches!(
            MarkovFit::from_parts(names(&["a"]), vec![f64::NAN], 0.5),
            Err(FitError::BadRemovalEffect(..))
        ));
        for p in [0.0, 1.5, f64::NAN] {
            assert!(matches!(
                MarkovFit::from_parts(names(&["a"]), vec![1.0], p),
                Err(FitError::BadConversionProbability(_))
            ));
        }
    }

    #[test]
    fn quantise_scales_to_the_largest_and_falls_back_to_equal() {
        assert_eq!(quantise(&[0.5, 0.25, 0.0]), vec![1 << 40, 1 << 39, 0]);
        assert_eq!(quantise(&[1e-300, 2e-300]), vec![1 << 39, 1 << 40]);
        assert_eq!(quantise(&[0.0, -1.0, f64::NAN]), vec![1, 1, 1]);
        assert_eq!(quantise(&[]), Vec::<u128>::new());
    }

    /// A small deterministic generator, so the property checks need no dependency.
    pub(crate) struct XorShift(pub u64);
    impl XorShift {
        pub fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        pub fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    pub(crate) fn random_paths(rng: &mut XorShift, channels: usize, count: usize) -> Vec<PathCount> {
        (0..count)
            .map(|_| {
                let len = rng.below(6) as usize;
                PathCount {
                    channels: (0..len).map(|_| format!("c{}", rng.below(channels as u64))).collect(),
                    conversions: rng.below(4),
                    nulls: rng.below(6),
                }
            })
            .collect()
    }

    /// P(conversion) by the definition: solve (I − Q) x = r with the channels in `removed`
    /// sending every transition into them to null, by plain Gaussian elimination.
    fn conversion_by_removal(paths: &[PathCount], channels: &[String], removed: Option<usize>) -> f64 {
        let n = channels.len();
        let id = |c: &String| channels.binary_search(c).unwrap();
        let mut counts = vec![vec![0f64; n + 2]; n + 1]; // rows: channels, start; cols: channels, conv, null
        for p in paths.iter().filter(|p| p.conversions + p.nulls > 0) {
            let journeys = (p.conversions + p.nulls) as f64;
            let mut from = n;
            for c in &p.channels {
                let to = id(c);
                if to != from {
                    counts[from][to] += journeys;
                    from = to;
                }
            }
            counts[from][n] += p.conversions as f64;
            counts[from][n + 1] += p.nulls as f64;
        }
        let prob: Vec<Vec<f64>> = counts
            .iter()
            .map(|row| {
                let t: f64 = row.iter().sum();
                row.iter().map(|c| c / t).collect()
            })
            .collect();
        // Unknowns: the n channels and start (index n). Removed channel: x = 0.
        let m = n + 1;
        let mut a = vec![vec![0f64; m + 1]; m];
        for i in 0..m {
            a[i][i] = 1.0;
            if Some(i) == removed {
                continue;
            }
            for j in 0..n {
                if Some(j) != removed {
                    a[i][j] -= prob[i][j];
                }
            }
            a[i][m] = prob[i][n];
        }
        for col in 0..m {
            let p = (col..m).max_by(|x, y| a[*x][col].abs().total_cmp(&a[*y][col].abs())).unwrap();
            a.swap(col, p);
            for r in 0..m {
                if r != col {
                    let f = a[r][col] / a[col][col];
                    let pivot_row = a[col].clone();
                    for (x, p) in a[r].iter_mut().zip(pivot_row).skip(col) {
                        *x -= f * p;
                    }
                }
            }
        }
        a[n][m] / a[n][n]
    }

    #[test]
    fn removal_effects_equal_removing_the_channel_and_solving_again() {
        let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
        for case in 0..200 {
            let paths = random_paths(&mut rng, 1 + case % 9, 1 + case % 40);
            let Ok(f) = MarkovFit::fit(&paths) else { continue };
            let p = conversion_by_removal(&paths, f.channels(), None);
            assert!((p - f.conversion_probability()).abs() < 1e-12, "case {case}");
            for (c, re) in f.removal_effects().iter().enumerate() {
                let without = conversion_by_removal(&paths, f.channels(), Some(c));
                let expected = 1.0 - without / p;
                assert!((re - expected).abs() < 1e-12, "case {case} channel {c}: {re} vs {expected}");
            }
        }
    }

    #[test]
    fn properties_shares_sum_to_one_cents_add_up_and_order_does_not_matter() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for case in 0..300 {
            let mut paths = random_paths(&mut rng, 2 + case % 25, 1 + (case * 7) % 120);
            let Ok(f) = MarkovFit::fit(&paths) else {
                assert!(paths.iter().all(|p| p.conversions == 0));
                continue;
            };
            let shares = f.shares();
            if f.removal_effects().iter().any(|re| *re > 0.0) {
                assert!((shares.iter().sum::<f64>() - 1.0).abs() <= 1e-12, "case {case}");
            }
            assert!(f.removal_effects().iter().all(|re| (0.0..=1.0).contains(re)));
            // Same multiset of paths in another order: the identical fit.
            paths.reverse();
            let n = paths.len();
            paths.rotate_left(case % n);
            assert_eq!(MarkovFit::fit(&paths).unwrap(), f, "case {case}");
            for p in &paths {
                let weights = f.path_weights(&p.channels);
                assert_eq!(weights.is_empty(), p.channels.is_empty());
                assert!(weights.iter().all(|(_, w)| *w > 0));
                let revenue = match rng.below(3) {
                    0 => rng.below(1_000_000) as i64,
                    1 => -(rng.below(1_000) as i64),
                    _ => rng.next() as i64,
                };
                let cents = f.allocate(revenue, &p.channels, "direct");
                assert_eq!(cents.iter().map(|(_, c)| i128::from(*c)).sum::<i128>(), i128::from(revenue));
                assert_eq!(f.allocate(revenue, &p.channels, "direct"), cents);
            }
        }
    }

    /// Fits the paths of `$CROSSCHECK_PATHS` and prints the removal effects, the shares, the
    /// fit's wall time and the first/last/linear/U-shaped credit of `engine::touch` as JSON
    /// (also to `$CROSSCHECK_OUT/engine-markov.json`). `tests/crosscheck/run.sh` compares it
    /// with the Python packages; by hand:
    /// `CROSSCHECK_PATHS=paths.csv cargo test --release --lib -- --ignored crosscheck --nocapture`
    #[test]
    #[ignore = "needs a CSV of paths in CROSSCHECK_PATHS; run by tests/crosscheck/run.sh"]
    fn crosscheck_from_file() {
        use super::super::touch::{counting_path, credit, PathRules, Rule, Touchpoint};
        use crosscheck::{emit, number, object, string};
        use std::collections::BTreeMap;
        use std::time::Instant;

        let parse = Instant::now();
        let Some(paths) = crosscheck::read_paths() else {
            eprintln!("CROSSCHECK_PATHS is not set: nothing to check");
            return;
        };
        let parse_seconds = parse.elapsed().as_secs_f64();
        let started = Instant::now();
        let f = MarkovFit::fit(&paths).expect("a fit");
        let fit_seconds = started.elapsed().as_secs_f64();

        let by_channel = |values: &[f64]| -> BTreeMap<String, f64> {
            f.channels().iter().cloned().zip(values.iter().copied()).collect()
        };

        // Heuristics by engine::touch: touchpoints one microsecond apart, converting at the last.
        let rules = [
            ("first_touch", Rule::FirstTouch),
            ("last_touch", Rule::LastTouch),
            ("linear_touch", Rule::Linear),
            ("position_based", Rule::U_SHAPED),
        ];
        let path_rules = PathRules { lookback: None, ..PathRules::default() };
        let mut heuristics: Vec<BTreeMap<String, f64>> = vec![BTreeMap::new(); rules.len()];
        for p in paths.iter().filter(|p| p.conversions > 0 && !p.channels.is_empty()) {
            let touches: Vec<Touchpoint> = p
                .channels
                .iter()
                .enumerate()
                .map(|(i, c)| Touchpoint { at: i as i64, channel: c.clone() })
                .collect();
            let at = touches.len() as i64 - 1;
            let counted = counting_path(at, &touches, &path_rules);
            for ((_, rule), totals) in rules.iter().zip(&mut heuristics) {
                let weights = credit(at, &counted, rule);
                let sum: u64 = weights.iter().sum();
                for (t, w) in counted.iter().zip(weights) {
                    *totals.entry(t.channel.clone()).or_default() +=
                        p.conversions as f64 * w as f64 / sum as f64;
                }
            }
        }
        let heuristics: Vec<String> = rules
            .iter()
            .zip(&heuristics)
            .map(|((name, _), totals)| format!("{}: {}", string(name), object(totals)))
            .collect();

        let journeys: u128 = paths.iter().map(|p| u128::from(p.conversions) + u128::from(p.nulls)).sum();
        let conversions: u128 = paths.iter().map(|p| u128::from(p.conversions)).sum();
        let json = format!(
            "{{\"rows\": {}, \"journeys\": {journeys}, \"conversions\": {conversions}, \
             \"markov\": {{\"removal_effects\": {}, \"shares\": {}, \"conversion_probability\": {}, \
             \"fit_seconds\": {}, \"parse_seconds\": {}}}, \"heuristics\": {{{}}}}}",
            paths.len(),
            object(&by_channel(f.removal_effects())),
            object(&by_channel(&f.shares())),
            number(f.conversion_probability()),
            number(fit_seconds),
            number(parse_seconds),
            heuristics.join(", "),
        );
        emit("engine-markov.json", &json);
    }
}
