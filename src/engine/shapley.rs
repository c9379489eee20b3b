//! Data-driven attribution, part two: Shapley values of channel coalitions.
//!
//! The characteristic function is the one of `marketing_attribution_models` (`MAM`'s
//! `attribution_shapley`, in 2.x `MAM.run_shapley`), so the two can be compared number
//! for number:
//!
//! - a journey's coalition is the *set* of distinct channels it touched (order and
//!   repeats do not matter);
//! - `v(S)` is the conversion rate of the journeys whose coalition is exactly `S`:
//!   conversions / journeys. A set no journey had, or no journey converted with, is worth
//!   0 (as is the empty set);
//! - every converting coalition `S` is its own game whose players are the channels of `S`,
//!   and the conversions of `S` are split among them in proportion to their Shapley values
//!   `φ_i = Σ_{T ⊆ S, i ∉ T} |T|! (|S| − |T| − 1)! / |S|! · (v(T ∪ {i}) − v(T))`.
//!   By efficiency `Σ_i φ_i = v(S) > 0`, so the proportions add up to one.
//!
//! A channel's total is the sum over coalitions of its part of their conversions
//! ([`ShapleyFit::totals`]). As in the Python package, a channel whose presence lowers the
//! conversion rate has a negative Shapley value in that coalition and its total counts it
//! negatively. Cents cannot be negative for a positive conversion, so
//! [`ShapleyFit::path_weights`] gives such a channel weight 0 (see there).
//!
//! Exact while the work allows it, at any number of channels: `v` is zero outside the
//! observed converting coalitions, so only the observed subsets `T` of `S` contribute to
//! `φ_i = Σ_T v(T) · c(i, T)` (with `c = (|T|−1)!(n−|T|)!/n!` when `i ∈ T`, and
//! `−|T|!(n−|T|−1)!/n!` when not). Those are found either by enumerating the 2^n subsets
//! of `S` and looking each up, or by scanning the M observed converting coalitions for
//! subsets of `S`, whichever is cheaper, so one coalition costs at most
//! `O(min(2^n · n, M · n))` and a fit `O(M² · n)` in the worst case (every coalition
//! larger than log2 M channels; in practice journeys touch a handful of channels and the
//! cost is `O(M · 2^n)`). Unlike `marketing_attribution_models`, whose `max_size=4`
//! default keeps only the 4 alphabetically last channels of a coalition, nothing is cut.
//! A fit shares a fixed budget ([`MAX_FIT_WORK`]) among its coalitions; a coalition whose
//! exact values cost more than its share (large sets among many: |S| · min(2^|S|, M)
//! above MAX_FIT_WORK / M) is approximated by sampling orders of its players, seeded by
//! the set (see [`MAX_FIT_WORK`]), so every fit takes bounded time and stays
//! deterministic.
//!
//! Deterministic: coalitions are kept in the order of their sorted channel ids, each
//! `φ` sums its terms in that order whichever way the subsets were found, and channel ids
//! follow name order, so the same paths in any order give bit-identical fits.

use super::markov::{
    cents_from_weights, distinct_sorted, intern, weights_from_values, FitError, PathCount, MAX_FIT_CHANNELS,
};
use std::collections::HashMap;

/// About how many elementary steps a fit (or restoring one) may take: a second or so. A
/// fit runs inside a SQL function and a stored fit is restored by every session that
/// allocates with it, neither of which can be interrupted while the engine computes, so
/// the work is bounded before it starts.
///
/// The budget is shared equally by the M converting sets. A set whose exact values cost
/// more than its share (|S| · min(2^|S|, M) steps: large sets among many) gets the
/// documented approximation instead: the average marginal contribution over a fixed
/// number of random orders of its players (seeded by the set, so deterministic), as many
/// orders as its share pays for (|S|² steps each), at least [`MIN_PERMUTATIONS`]. Each
/// order's contributions add up to v(S) exactly, so the shares still sum to one.
pub const MAX_FIT_WORK: u128 = 400_000_000;

/// The fewest orders a sampled set averages.
pub const MIN_PERMUTATIONS: u128 = 64;

/// Steps of the exact values of a set of `k` players among `m` observed sets.
fn exact_cost(k: usize, m: usize) -> u128 {
    let subsets = if k >= 100 { u128::MAX } else { 1u128 << k };
    (k as u128).saturating_mul(subsets.min(m as u128))
}

/// Each converting set's share of [`MAX_FIT_WORK`].
fn per_set_budget(m: usize) -> u128 {
    (MAX_FIT_WORK / (m.max(1) as u128)).max(1)
}

/// Refuses a fit that even the approximation cannot keep near [`MAX_FIT_WORK`]: so many
/// converting sets that their least work, [`MIN_PERMUTATIONS`] orders each, is more than
/// four times the budget.
fn check_work(set_sizes: impl Iterator<Item = usize> + Clone) -> Result<(), FitError> {
    let m = set_sizes.clone().count();
    let budget = per_set_budget(m);
    let work: u128 = set_sizes
        .map(|k| exact_cost(k, m).min(budget.max(MIN_PERMUTATIONS * (k * k) as u128)))
        .fold(0u128, u128::saturating_add);
    if work > 4 * MAX_FIT_WORK {
        return Err(FitError::TooComplex(work));
    }
    Ok(())
}

/// One observed converting coalition, as stored: its channels (distinct, name order), the
/// conversions and the journeys (converting or not) whose channel set was exactly this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coalition {
    pub channels: Vec<String>,
    pub conversions: u128,
    pub journeys: u128,
}

/// A fitted Shapley model: the converting coalitions with their conversion rates, and
/// each channel's total. [`ShapleyFit::channels`] and [`ShapleyFit::coalitions`] are all
/// it needs; [`ShapleyFit::from_coalitions`] restores it.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapleyFit {
    channels: Vec<String>,
    /// Converting coalitions as sorted channel ids, in lexicographic order.
    sets: Vec<Vec<u32>>,
    conversions: Vec<u128>,
    journeys: Vec<u128>,
    /// `v` of each coalition: conversions / journeys.
    values: Vec<f64>,
    index: HashMap<Vec<u32>, usize>,
    totals: Vec<f64>,
}

impl ShapleyFit {
    /// Fits the model to aggregated paths. Errors when no journey converts and above
    /// [`MAX_FIT_CHANNELS`] channels. Paths without channels count in no coalition (their
    /// conversions belong to whatever the caller credits for no touchpoint).
    pub fn fit(paths: &[PathCount]) -> Result<ShapleyFit, FitError> {
        // Aggregated by set in the ids of first appearance, then renamed to name order.
        let mut by_set: HashMap<Vec<u32>, (u128, u128)> = HashMap::new();
        let mut set: Vec<u32> = Vec::new();
        let mut any_conversion = false;
        let names = intern(paths, |ids, conversions, nulls| {
            any_conversion |= conversions > 0;
            if ids.is_empty() {
                return;
            }
            set.clear();
            set.extend_from_slice(ids);
            set.sort_unstable();
            set.dedup();
            let journeys = u128::from(conversions) + u128::from(nulls);
            match by_set.get_mut(set.as_slice()) {
                Some((c, j)) => {
                    *c += u128::from(conversions);
                    *j += journeys;
                }
                None => {
                    by_set.insert(set.clone(), (u128::from(conversions), journeys));
                }
            }
        })?;
        if !any_conversion {
            return Err(FitError::NoConversions);
        }
        let mut sets: Vec<(Vec<u32>, (u128, u128))> = by_set
            .into_iter()
            .filter(|(_, (c, _))| *c > 0)
            .map(|(mut ids, counts)| {
                for id in &mut ids {
                    *id = names.rank[*id as usize];
                }
                ids.sort_unstable();
                (ids, counts)
            })
            .collect();
        sets.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        check_work(sets.iter().map(|(ids, _)| ids.len()))?;
        Ok(ShapleyFit::build(names.names, sets))
    }

    /// Restores a stored fit: the channels in name order and the converting coalitions (in
    /// any order). Checks that every coalition is a non-empty set of known channels in name
    /// order, listed once, with `0 < conversions <= journeys`.
    pub fn from_coalitions(
        channels: Vec<String>,
        coalitions: Vec<Coalition>,
    ) -> Result<ShapleyFit, FitError> {
        if channels.len() > MAX_FIT_CHANNELS {
            return Err(FitError::TooManyChannels(channels.len()));
        }
        if channels.windows(2).any(|w| w[0] >= w[1]) {
            return Err(FitError::UnsortedChannels);
        }
        let mut sets = Vec::with_capacity(coalitions.len());
        for c in coalitions {
            let ids: Option<Vec<u32>> =
                c.channels.iter().map(|name| channels.binary_search(name).ok().map(|i| i as u32)).collect();
            match ids {
                Some(ids)
                    if !ids.is_empty()
                        && ids.windows(2).all(|w| w[0] < w[1])
                        && c.conversions > 0
                        && c.conversions <= c.journeys =>
                {
                    sets.push((ids, (c.conversions, c.journeys), c.channels))
                }
                _ => return Err(FitError::BadCoalition(c.channels)),
            }
        }
        sets.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        if let Some(w) = sets.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(FitError::BadCoalition(w[0].2.clone()));
        }
        check_work(sets.iter().map(|(ids, _, _)| ids.len()))?;
        Ok(ShapleyFit::build(channels, sets.into_iter().map(|(ids, counts, _)| (ids, counts)).collect()))
    }

    /// `sets`: converting coalitions in lexicographic order of their ids.
    fn build(channels: Vec<String>, sets: Vec<(Vec<u32>, (u128, u128))>) -> ShapleyFit {
        let mut fit = ShapleyFit {
            totals: vec![0.0; channels.len()],
            channels,
            values: sets.iter().map(|(_, (c, j))| *c as f64 / *j as f64).collect(),
            index: sets.iter().enumerate().map(|(i, (ids, _))| (ids.clone(), i)).collect(),
            conversions: sets.iter().map(|(_, (c, _))| *c).collect(),
            journeys: sets.iter().map(|(_, (_, j))| *j).collect(),
            sets: sets.into_iter().map(|(ids, _)| ids).collect(),
        };
        let mut totals = vec![0.0; fit.channels.len()];
        for (k, set) in fit.sets.iter().enumerate() {
            let phi = fit.phi(set, set.len(), Method::Cheaper);
            let sum: f64 = phi.iter().sum();
            if sum != 0.0 {
                let conversions = fit.conversions[k] as f64;
                for (id, p) in set.iter().zip(&phi) {
                    totals[*id as usize] += conversions * p / sum;
                }
            }
        }
        fit.totals = totals;
        fit
    }

    /// The channels seen on paths with journeys, in name order.
    pub fn channels(&self) -> &[String] {
        &self.channels
    }

    /// The converting coalitions, in the order of their channels' positions in
    /// [`ShapleyFit::channels`].
    pub fn coalitions(&self) -> Vec<Coalition> {
        self.sets
            .iter()
            .zip(self.conversions.iter().zip(&self.journeys))
            .map(|(ids, (c, j))| Coalition {
                channels: ids.iter().map(|id| self.channels[*id as usize].clone()).collect(),
                conversions: *c,
                journeys: *j,
            })
            .collect()
    }

    /// `v(S)` of a set of channels (order and repeats ignored): its conversion rate, 0 when
    /// it never converted.
    pub fn value(&self, channels: &[String]) -> f64 {
        let ids: Option<Vec<u32>> =
            distinct_sorted(channels).iter().map(|c| self.id(c)).collect::<Option<Vec<u32>>>();
        ids.and_then(|ids| self.index.get(&ids)).map_or(0.0, |k| self.values[*k])
    }

    /// Conversions attributed to each channel (same order as [`ShapleyFit::channels`]):
    /// the sum over converting coalitions of conversions × φ_i / Σ φ. Negative for a
    /// channel that mostly lowers the conversion rate of the coalitions it is in.
    pub fn totals(&self) -> &[f64] {
        &self.totals
    }

    /// Each channel's share of the attributed conversions; sums to one.
    pub fn shares(&self) -> Vec<f64> {
        let sum: f64 = self.totals.iter().sum();
        self.totals.iter().map(|t| if sum != 0.0 { t / sum } else { 0.0 }).collect()
    }

    /// The Shapley value of each distinct channel of a path in the game of its coalition,
    /// in name order. A channel the fit never saw is a player whose every coalition is
    /// worth 0.
    pub fn shapley_values(&self, path_channels: &[String]) -> Vec<(String, f64)> {
        let distinct = distinct_sorted(path_channels);
        let values = self.values_by_name(&distinct, Method::Cheaper);
        distinct.into_iter().map(str::to_owned).zip(values).collect()
    }

    /// Integer weights of one conversion's path for `split_cents_wide`: one per distinct
    /// channel, in name order, proportional to its Shapley value in the path's coalition
    /// (largest scaled to 2^40, rounded). Channels with a Shapley value of 0 or less are
    /// left out: a negative value means the channel lowered the conversion rate of this
    /// coalition, and a conversion's cents are never negative. When no channel is left,
    /// every distinct channel gets weight 1, an equal split. Empty only for an empty path.
    pub fn path_weights(&self, path_channels: &[String]) -> Vec<(String, u128)> {
        let distinct = distinct_sorted(path_channels);
        let values = self.values_by_name(&distinct, Method::Cheaper);
        weights_from_values(&distinct, &values)
    }

    /// The cents of `revenue` per channel for one conversion with this path, by
    /// [`ShapleyFit::path_weights`] and largest remainder; a conversion without touchpoints
    /// credits `no_touch_channel` with everything. The cents always add up to `revenue`.
    pub fn allocate(
        &self,
        revenue: i64,
        path_channels: &[String],
        no_touch_channel: &str,
    ) -> Vec<(String, i64)> {
        cents_from_weights(revenue, self.path_weights(path_channels), no_touch_channel)
    }

    fn id(&self, channel: &str) -> Option<u32> {
        self.channels.binary_search_by(|c| c.as_str().cmp(channel)).ok().map(|i| i as u32)
    }

    /// φ of each name of `distinct` (distinct, name order; unknown names allowed).
    fn values_by_name(&self, distinct: &[&str], method: Method) -> Vec<f64> {
        // Known channels first (their ids are in name order too), unknown ones after.
        let known: Vec<(usize, u32)> =
            distinct.iter().enumerate().filter_map(|(i, c)| self.id(c).map(|id| (i, id))).collect();
        let ids: Vec<u32> = known.iter().map(|(_, id)| *id).collect();
        let phi = self.phi(&ids, distinct.len(), method);
        let mut out = vec![phi.get(ids.len()).copied().unwrap_or(0.0); distinct.len()];
        for ((i, _), p) in known.iter().zip(&phi) {
            out[*i] = *p;
        }
        out
    }

    /// Shapley values of the game on `players` channels: the known ones `ids` (sorted)
    /// and `players − ids.len()` unknown ones, who are in no observed coalition. Returns
    /// one value per known id, then one per unknown player (they are all equal).
    fn phi(&self, ids: &[u32], players: usize, method: Method) -> Vec<f64> {
        let n = players;
        let k = ids.len();
        let mut phi = vec![0.0; k + usize::from(n > k)];
        if n == 0 {
            return phi;
        }
        if matches!(method, Method::Cheaper)
            && exact_cost(k, self.sets.len()) > per_set_budget(self.sets.len())
        {
            let orders = (per_set_budget(self.sets.len()) / (n * n) as u128).max(MIN_PERMUTATIONS);
            return self.phi_sampled(ids, n, orders.min(1_000_000) as usize);
        }
        let (inside, outside) = coefficients(n);
        let enumerate = match method {
            Method::Cheaper => k < 32 && (1u64 << k) <= self.sets.len() as u64,
            #[cfg(test)]
            Method::Enumerate => true,
            #[cfg(test)]
            Method::Scan => false,
        };
        let mut found: Vec<(usize, u64)> = Vec::new(); // (coalition, membership mask) or…
        let mut members: Vec<Vec<bool>> = Vec::new(); // …membership for large sets
        if enumerate {
            let mut key = Vec::with_capacity(k);
            for mask in 1u64..(1u64 << k) {
                key.clear();
                key.extend((0..k).filter(|i| mask >> i & 1 == 1).map(|i| ids[i]));
                if let Some(c) = self.index.get(key.as_slice()) {
                    found.push((*c, mask));
                }
            }
            found.sort_unstable();
            members = found.iter().map(|(_, mask)| (0..k).map(|i| mask >> i & 1 == 1).collect()).collect();
        } else {
            for (c, set) in self.sets.iter().enumerate().filter(|(_, set)| set.len() <= k) {
                if let Some(m) = membership(set, ids) {
                    found.push((c, 0));
                    members.push(m);
                }
            }
        }
        for ((c, _), member) in found.iter().zip(&members) {
            let v = self.values[*c];
            let t = self.sets[*c].len();
            for (p, is_member) in phi.iter_mut().zip(member) {
                *p += if *is_member { v * inside[t] } else { -v * outside[t] };
            }
            if n > k {
                phi[k] -= v * outside[t];
            }
        }
        phi
    }
}

impl ShapleyFit {
    /// [`ShapleyFit::phi`] approximated: the average, over `orders` random orders of the
    /// players (seeded by `ids`, so the same set always gets the same values), of each
    /// player's marginal contribution v(before ∪ {i}) − v(before). Unknown players make
    /// every coalition they are in worth 0, as in the exact values.
    fn phi_sampled(&self, ids: &[u32], n: usize, orders: usize) -> Vec<f64> {
        let k = ids.len();
        let mut sums = vec![0.0f64; n];
        let mut order: Vec<usize> = (0..n).collect();
        let mut before: Vec<u32> = Vec::with_capacity(n);
        // xorshift64*, seeded by the set (FNV-1a over its ids and size).
        let mut state = ids
            .iter()
            .map(|id| u64::from(*id))
            .chain([n as u64])
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, x| (h ^ x).wrapping_mul(0x0100_0000_01b3))
            | 1;
        let mut next = move || {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        for _ in 0..orders {
            for i in (1..n).rev() {
                order.swap(i, (next() % (i as u64 + 1)) as usize);
            }
            before.clear();
            let mut unknown_in = false;
            let mut previous = 0.0;
            for &player in &order {
                if player < k {
                    let at = before.partition_point(|x| *x < ids[player]);
                    before.insert(at, ids[player]);
                } else {
                    unknown_in = true;
                }
                let v = if unknown_in {
                    0.0
                } else {
                    self.index.get(before.as_slice()).map_or(0.0, |c| self.values[*c])
                };
                sums[player] += v - previous;
                previous = v;
            }
        }
        let mut phi: Vec<f64> = sums[..k].iter().map(|s| s / orders as f64).collect();
        if n > k {
            // Unknown players are interchangeable: their average.
            phi.push(sums[k..].iter().sum::<f64>() / ((n - k) as f64 * orders as f64));
        }
        phi
    }
}

/// How [`ShapleyFit::phi`] finds the observed subsets; all give bit-identical results.
#[derive(Clone, Copy)]
enum Method {
    /// Whichever costs fewer steps for the set at hand.
    Cheaper,
    /// Look up every subset (the tests force each way to compare them).
    #[cfg(test)]
    Enumerate,
    /// Test every observed coalition for being a subset.
    #[cfg(test)]
    Scan,
}

/// Which of `of`'s members are in `set` (both sorted), or `None` if `set ⊄ of`.
fn membership(set: &[u32], of: &[u32]) -> Option<Vec<bool>> {
    let mut member = vec![false; of.len()];
    let mut j = 0;
    for x in set {
        while j < of.len() && of[j] < *x {
            j += 1;
        }
        if j == of.len() || of[j] != *x {
            return None;
        }
        member[j] = true;
        j += 1;
    }
    Some(member)
}

/// The Shapley weights of an n-player game by coalition size t, `inside[t] =
/// (t−1)!(n−t)!/n! = 1/(t·C(n,t))` and `outside[t] = t!(n−t−1)!/n! = 1/((n−t)·C(n,t))`
/// (0 for t = n). C(n, t) is exact in `u128` as far as it fits (n ≤ 130 always does),
/// and a product of floats beyond that.
fn coefficients(n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut inside = vec![0.0; n + 1];
    let mut outside = vec![0.0; n + 1];
    let mut exact: Option<u128> = Some(1);
    let mut approx = 1.0f64;
    for t in 1..=n {
        // C(n, t) = C(n, t−1) · (n − t + 1) / t, exact at every step in integers.
        exact = exact.and_then(|c| c.checked_mul((n - t + 1) as u128)).map(|c| c / t as u128);
        approx = approx * (n - t + 1) as f64 / t as f64;
        let binomial = exact.map_or(approx, |c| c as f64);
        inside[t] = 1.0 / (t as f64 * binomial);
        if t < n {
            outside[t] = 1.0 / ((n - t) as f64 * binomial);
        }
    }
    (inside, outside)
}

#[cfg(test)]
mod tests {
    use super::super::markov::tests::{random_paths, XorShift};
    use super::*;

    fn fit(paths: &[(&[&str], u64, u64)]) -> ShapleyFit {
        ShapleyFit::fit(
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

    /// On paper: v(a) = 2/10, v(b) = 1/10, v(ab) = 4/10.
    /// In the game of {a, b}: φ_a = ½ v(a) + ½ (v(ab) − v(b)) = 0.1 + 0.15 = 0.25,
    /// φ_b = ½ v(b) + ½ (v(ab) − v(a)) = 0.05 + 0.1 = 0.15 (sum 0.4 = v(ab)).
    /// Totals: a = 2 + 4 · 0.25/0.4 = 4.5, b = 1 + 4 · 0.15/0.4 = 2.5.
    #[test]
    fn two_channels_solved_on_paper() {
        // Paths in different orders and with repeats: only the sets count.
        let f = fit(&[(&["a"], 2, 8), (&["b", "b"], 1, 9), (&["a", "b"], 3, 2), (&["b", "a", "b"], 1, 4)]);
        assert_eq!(f.channels(), names(&["a", "b"]));
        assert!(close(f.value(&names(&["b", "a"])), 0.4));
        let phi = f.shapley_values(&names(&["b", "a"]));
        assert!(close(phi[0].1, 0.25) && close(phi[1].1, 0.15), "{phi:?}");
        assert!(close(f.totals()[0], 4.5) && close(f.totals()[1], 2.5), "{:?}", f.totals());
        assert!(close(f.shares()[0], 4.5 / 7.0));
        // 1000 cents 0.25 : 0.15 = 625 : 375.
        assert_eq!(
            f.allocate(1000, &names(&["a", "b"]), "direct"),
            vec![("a".into(), 625), ("b".into(), 375)]
        );
        assert_eq!(f.allocate(1000, &names(&["b"]), "direct"), vec![("b".into(), 1000)]);
    }

    /// v(a) = 0.5, v(b) = 0.1, v(ab) = 0.2: φ_a = 0.25 + 0.05 = 0.3, φ_b = 0.05 − 0.15 = −0.1.
    #[test]
    fn a_channel_that_lowers_the_rate_gets_no_cents() {
        let f = fit(&[(&["a"], 5, 5), (&["b"], 1, 9), (&["a", "b"], 2, 8)]);
        let phi = f.shapley_values(&names(&["a", "b"]));
        assert!(close(phi[0].1, 0.3) && close(phi[1].1, -0.1), "{phi:?}");
        // Totals like the Python package: b's part of {a, b} is negative.
        assert!(close(f.totals()[1], 1.0 + 2.0 * -0.1 / 0.2));
        assert!(close(f.shares().iter().sum::<f64>(), 1.0));
        assert_eq!(f.path_weights(&names(&["a", "b"])), vec![("a".into(), 1u128 << 40)]);
        assert_eq!(f.allocate(999, &names(&["b", "a"]), "direct"), vec![("a".into(), 999)]);
    }

    #[test]
    fn single_channel_and_channels_that_never_convert() {
        let f = fit(&[(&["email"], 3, 7)]);
        assert_eq!(f.totals(), &[3.0]);
        assert_eq!(f.shares(), vec![1.0]);
        assert!(close(f.shapley_values(&names(&["email"]))[0].1, 0.3));

        // `tv` is only on journeys that never convert: never in a converting coalition.
        let f = fit(&[(&["search"], 4, 4), (&["tv"], 0, 10), (&["tv", "search"], 0, 5)]);
        assert_eq!(f.channels(), names(&["search", "tv"]));
        assert_eq!(f.totals(), &[4.0, 0.0]);
        assert_eq!(f.value(&names(&["tv", "search"])), 0.0);
        // In {search, tv}: φ_search = ½ v(search) + ½ (0 − 0) = 0.25, φ_tv = ½·0 + ½(0 − 0.5) = −0.25.
        assert_eq!(f.path_weights(&names(&["tv", "search"])), vec![("search".into(), 1u128 << 40)]);
        // Nothing positive on the path (tv alone, or unknown channels): an equal split.
        assert_eq!(f.path_weights(&names(&["tv"])), vec![("tv".into(), 1)]);
        assert_eq!(f.path_weights(&names(&["print", "tv"])), vec![("print".into(), 1), ("tv".into(), 1)]);
        assert_eq!(f.allocate(7, &[], "direct"), vec![("direct".into(), 7)]);
        assert_eq!(f.path_weights(&[]), vec![]);
    }

    #[test]
    fn unknown_channels_are_players_with_nothing_observed() {
        let f = fit(&[(&["a"], 1, 1)]);
        // Game {a, x}: v(a) = 0.5, v(x) = v(ax) = 0. φ_a = ½·0.5 + ½(0 − 0) = 0.25, φ_x = −0.25.
        let phi = f.shapley_values(&names(&["x", "a"]));
        assert_eq!(phi.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>(), ["a", "x"]);
        assert!(close(phi[0].1, 0.25) && close(phi[1].1, -0.25), "{phi:?}");
        let two_unknown = f.shapley_values(&names(&["y", "a", "x"]));
        assert!(close(two_unknown.iter().map(|(_, p)| p).sum::<f64>(), 0.0));
        assert_eq!(two_unknown[1].1, two_unknown[2].1);
    }

    #[test]
    fn no_conversions_is_an_error_and_empty_paths_count_nowhere() {
        assert_eq!(ShapleyFit::fit(&[PathCount::new(&["a"], 0, 3)]), Err(FitError::NoConversions));
        assert_eq!(ShapleyFit::fit(&[]), Err(FitError::NoConversions));
        let f = ShapleyFit::fit(&[PathCount::new(&[], 5, 0), PathCount::new(&["a"], 0, 1)]).unwrap();
        assert!(f.coalitions().is_empty());
        assert_eq!(f.totals(), &[0.0]);
        assert_eq!(f.path_weights(&names(&["a"])), vec![("a".into(), 1)]);
    }

    #[test]
    fn symmetric_channels_tie() {
        let f = fit(&[(&["x"], 1, 1), (&["y"], 1, 1), (&["x", "y"], 3, 1)]);
        assert_eq!(f.totals()[0], f.totals()[1]);
        assert_eq!(f.allocate(5, &names(&["y", "x"]), "direct"), vec![("x".into(), 3), ("y".into(), 2)]);
    }

    #[test]
    fn counts_near_u64_max_do_not_overflow() {
        let big = u64::MAX;
        let f = fit(&[(&["a"], big, big), (&["a"], big, big), (&["a", "b"], big, 0), (&["b"], 1, big)]);
        assert_eq!(
            f.coalitions()[0],
            Coalition {
                channels: names(&["a"]),
                conversions: 2 * u128::from(big),
                journeys: 4 * u128::from(big)
            }
        );
        assert!(close(f.value(&names(&["a"])), 0.5));
        assert!(close(f.shares().iter().sum::<f64>(), 1.0));
        let cents = f.allocate(i64::MAX, &names(&["a", "b"]), "direct");
        assert_eq!(cents.iter().map(|(_, c)| i128::from(*c)).sum::<i128>(), i128::from(i64::MAX));
    }

    #[test]
    fn stored_fits_round_trip_and_are_checked() {
        let f = fit(&[(&["a"], 2, 8), (&["b"], 1, 9), (&["a", "b"], 4, 6)]);
        let mut stored = f.coalitions();
        stored.reverse();
        assert_eq!(ShapleyFit::from_coalitions(f.channels().to_vec(), stored.clone()).unwrap(), f);
        let bad = |c: &[&str], conversions, journeys| Coalition { channels: names(c), conversions, journeys };
        for coalition in
            [bad(&["b", "a"], 1, 1), bad(&["c"], 1, 1), bad(&[], 1, 1), bad(&["a"], 0, 1), bad(&["a"], 2, 1)]
        {
            let expected = Err(FitError::BadCoalition(coalition.channels.clone()));
            assert_eq!(ShapleyFit::from_coalitions(names(&["a", "b"]), vec![coalition]), expected);
        }
        stored.push(stored[0].clone());
        assert!(matches!(
            ShapleyFit::from_coalitions(names(&["a", "b"]), stored),
            Err(FitError::BadCoalition(_))
        ));
        assert_eq!(ShapleyFit::from_coalitions(names(&["b", "a"]), vec![]), Err(FitError::UnsortedChannels));
    }

    /// φ by the textbook formula over all subsets, with v looked up by name.
    fn phi_by_definition(f: &ShapleyFit, set: &[String]) -> Vec<f64> {
        let n = set.len();
        let fact = |k: usize| (1..=k).map(|i| i as f64).product::<f64>();
        (0..n)
            .map(|i| {
                let others: Vec<usize> = (0..n).filter(|j| *j != i).collect();
                (0..1u32 << others.len())
                    .map(|mask| {
                        let t: Vec<String> = others
                            .iter()
                            .enumerate()
                            .filter(|(b, _)| mask >> b & 1 == 1)
                            .map(|(_, j)| set[*j].clone())
                            .collect();
                        let mut with_i = t.clone();
                        with_i.push(set[i].clone());
                        let s = t.len();
                        fact(s) * fact(n - s - 1) / fact(n) * (f.value(&with_i) - f.value(&t))
                    })
                    .sum()
            })
            .collect()
    }

    #[test]
    fn shapley_values_match_the_definition_and_both_search_methods_agree_bit_for_bit() {
        let mut rng = XorShift(0xDEAD_BEEF_CAFE_F00D);
        for case in 0..60 {
            let paths = random_paths(&mut rng, 2 + case % 7, 5 + case * 3);
            let Ok(f) = ShapleyFit::fit(&paths) else { continue };
            for p in paths.iter().filter(|p| !p.channels.is_empty()) {
                let distinct: Vec<String> =
                    distinct_sorted(&p.channels).into_iter().map(str::to_owned).collect();
                let got = f.shapley_values(&p.channels);
                for ((_, g), e) in got.iter().zip(phi_by_definition(&f, &distinct)) {
                    assert!((g - e).abs() < 1e-12, "case {case}: {g} vs {e}");
                }
                let names: Vec<&str> = distinct.iter().map(String::as_str).collect();
                let by_enumeration = f.values_by_name(&names, Method::Enumerate);
                let by_scan = f.values_by_name(&names, Method::Scan);
                assert_eq!(
                    by_enumeration.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    by_scan.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
                );
            }
        }
    }

    #[test]
    fn large_coalitions_are_exact_too() {
        // 40 channels on one path: 2^40 subsets, of which three are observed.
        let all: Vec<String> = (0..40).map(|i| format!("c{i:02}")).collect();
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let f = fit(&[(&refs, 1, 1), (&["c00"], 1, 3), (&["c00", "c01"], 1, 1)]);
        let phi = f.shapley_values(&all);
        // Efficiency: the values add up to v(all) = 0.5.
        assert!(
            close(phi.iter().map(|(_, p)| p).sum::<f64>(), 0.5),
            "{}",
            phi.iter().map(|(_, p)| p).sum::<f64>()
        );
        // c02..c39 are symmetric.
        assert!(phi[2..].iter().all(|(_, p)| *p == phi[2].1));
        assert!(phi[0].1 > phi[1].1 && phi[1].1 > phi[2].1);
        // A coalition of 300 channels still has finite coefficients.
        let (inside, outside) = coefficients(300);
        assert!(inside.iter().chain(&outside).all(|c| c.is_finite() && *c >= 0.0));
        assert!(close(inside[1], 1.0 / 300.0) && close(inside[300], 1.0 / 300.0));
    }

    #[test]
    fn properties_shares_sum_to_one_cents_add_up_and_order_does_not_matter() {
        let mut rng = XorShift(0x0123_4567_89AB_CDEF);
        for case in 0..300 {
            let mut paths = random_paths(&mut rng, 2 + case % 12, 1 + (case * 7) % 150);
            let Ok(f) = ShapleyFit::fit(&paths) else {
                assert!(paths.iter().all(|p| p.conversions == 0));
                continue;
            };
            if !f.coalitions().is_empty() {
                assert!((f.shares().iter().sum::<f64>() - 1.0).abs() <= 1e-12, "case {case}");
                let converted: u128 = f.coalitions().iter().map(|c| c.conversions).sum();
                assert!((f.totals().iter().sum::<f64>() - converted as f64).abs() <= 1e-9 * converted as f64);
            }
            paths.reverse();
            let n = paths.len();
            paths.rotate_left(case % n);
            assert_eq!(ShapleyFit::fit(&paths).unwrap(), f, "case {case}");
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
            }
        }
    }

    /// Fits the paths of `$CROSSCHECK_PATHS` and prints each channel's Shapley total and
    /// share and the fit's wall time as JSON (also to `$CROSSCHECK_OUT/engine-shapley.json`).
    /// `tests/crosscheck/run.sh` compares it with `marketing_attribution_models`; by hand:
    /// `CROSSCHECK_PATHS=paths.csv cargo test --release --lib -- --ignored crosscheck --nocapture`
    #[test]
    #[ignore = "needs a CSV of paths in CROSSCHECK_PATHS; run by tests/crosscheck/run.sh"]
    fn crosscheck_from_file() {
        use super::super::markov::crosscheck::{emit, number, object, read_paths};
        use std::collections::BTreeMap;
        use std::time::Instant;

        let Some(paths) = read_paths() else {
            eprintln!("CROSSCHECK_PATHS is not set: nothing to check");
            return;
        };
        let started = Instant::now();
        let f = ShapleyFit::fit(&paths).expect("a fit");
        let fit_seconds = started.elapsed().as_secs_f64();
        let by_channel = |values: &[f64]| -> BTreeMap<String, f64> {
            f.channels().iter().cloned().zip(values.iter().copied()).collect()
        };
        // The cents view: every converting path's conversions split by path_weights
        // (negative Shapley values at 0), to show how far that is from the signed totals.
        let mut allocated: BTreeMap<String, f64> = BTreeMap::new();
        for p in paths.iter().filter(|p| p.conversions > 0) {
            let weights = f.path_weights(&p.channels);
            let sum: u128 = weights.iter().map(|(_, w)| w).sum();
            for (c, w) in weights {
                *allocated.entry(c).or_default() += p.conversions as f64 * w as f64 / sum as f64;
            }
        }
        let json = format!(
            "{{\"shapley\": {{\"totals\": {}, \"shares\": {}, \"allocated\": {}, \"coalitions\": {}, \"fit_seconds\": {}}}}}",
            object(&by_channel(f.totals())),
            object(&by_channel(&f.shares())),
            object(&allocated),
            f.coalitions().len(),
            number(fit_seconds),
        );
        emit("engine-shapley.json", &json);
    }

    #[test]
    fn large_sets_among_many_are_approximated_within_the_budget() {
        // 8,000 converting sets of 17 channels (out of 40): exactly, 8,000 · 17 · 8,000
        // steps; approximated, each set gets its share of the budget.
        let channels: Vec<String> = (0..40).map(|i| format!("c{i:02}")).collect();
        let mut paths = Vec::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..8000 {
            let mut set = std::collections::BTreeSet::new();
            while set.len() < 17 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                set.insert((x % 40) as usize);
            }
            let names: Vec<&str> = set.iter().map(|i| channels[*i].as_str()).collect();
            paths.push(PathCount::new(&names, 1 + x % 3, 1 + x % 5));
        }
        let started = std::time::Instant::now();
        let fit = ShapleyFit::fit(&paths).unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(60), "took {:?}", started.elapsed());
        // Deterministic, and the shares still sum to one (each order's contributions add
        // up to v(S)).
        assert_eq!(fit, ShapleyFit::fit(&paths).unwrap());
        assert!((fit.shares().iter().sum::<f64>() - 1.0).abs() < 1e-9);
        let path: Vec<String> = paths[0].channels.clone();
        let weights = fit.path_weights(&path);
        assert!(!weights.is_empty());
        assert_eq!(weights, fit.path_weights(&path));
    }

    #[test]
    fn the_sampled_values_approach_the_exact_ones() {
        let mut rng = XorShift(7);
        let paths = random_paths(&mut rng, 8, 3000);
        let fit = ShapleyFit::fit(&paths).unwrap();
        let ids: Vec<u32> = (0..fit.channels().len().min(6) as u32).collect();
        let exact = fit.phi(&ids, ids.len(), Method::Enumerate);
        let sampled = fit.phi_sampled(&ids, ids.len(), 20_000);
        let sum: f64 = exact.iter().sum();
        assert!((sampled.iter().sum::<f64>() - sum).abs() < 1e-12, "efficiency holds exactly");
        // 20,000 orders: a standard error of a few thousandths of these rates.
        for (e, s) in exact.iter().zip(&sampled) {
            assert!((e - s).abs() <= 0.003, "exact {e}, sampled {s}");
        }
    }
}
