//! Largest-remainder allocation of integer cents over weighted channels.
//!
//! Every share is `floor(|revenue| * weight / total_weight)`; the cents this leaves
//! over (always fewer than the number of channels) go one each to the channels with the
//! largest fractional remainder, ties broken by channel position (earlier wins). The
//! shares therefore always sum to the revenue exactly, and the result is a pure function
//! of its inputs. Negative revenue (a refund) mirrors the positive split.

use thiserror::Error;

/// Upper bound on channels per model; keeps the per-event work and the array sizes small.
pub const MAX_CHANNELS: usize = 64;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SplitError {
    #[error("a model needs at least one channel weight")]
    NoWeights,
    #[error("a model has at most {MAX_CHANNELS} channels, got {0}")]
    TooManyWeights(usize),
    #[error("channel weights must be positive, got {0} at position {1}")]
    NonPositiveWeight(i64, usize),
}

/// Checks a weight vector once, so the per-event split can trust it.
pub fn validate_weights(weights: &[i32]) -> Result<(), SplitError> {
    if weights.is_empty() {
        return Err(SplitError::NoWeights);
    }
    if weights.len() > MAX_CHANNELS {
        return Err(SplitError::TooManyWeights(weights.len()));
    }
    if let Some((pos, w)) = weights.iter().enumerate().find(|(_, w)| **w <= 0) {
        return Err(SplitError::NonPositiveWeight(i64::from(*w), pos + 1));
    }
    Ok(())
}

/// Splits `revenue` cents over `weights`, writing one share per weight into `out`.
///
/// `weights` must have passed [`validate_weights`]. Works for every `i64`, including
/// `i64::MIN`, because the arithmetic is done in `i128`.
pub fn split_cents_into(revenue: i64, weights: &[i32], out: &mut Vec<i64>) {
    debug_assert!(validate_weights(weights).is_ok());
    let mut remainders = [0u128; MAX_CHANNELS];
    split(revenue, weights.len(), |i| weights[i] as u128, &mut remainders[..weights.len()], out);
}

/// The same split over any number of wide weights (the multi-touch models' integer
/// credit, see engine::touch), whose sum must be positive.
pub fn split_cents_wide(revenue: i64, weights: &[u128]) -> Vec<i64> {
    assert!(weights.iter().sum::<u128>() > 0, "split_cents_wide needs a positive total weight");
    let mut remainders = vec![0u128; weights.len()];
    let mut out = Vec::with_capacity(weights.len());
    split(revenue, weights.len(), |i| weights[i], &mut remainders, &mut out);
    out
}

/// Largest remainder over `n` weights (`weight(i)`, each below 2^64 times n so that
/// |revenue| × weight fits in u128), with `remainders` as scratch space of length n.
fn split(
    revenue: i64,
    n: usize,
    weight: impl Fn(usize) -> u128,
    remainders: &mut [u128],
    out: &mut Vec<i64>,
) {
    out.clear();
    let magnitude = i128::from(revenue).unsigned_abs();
    let total: u128 = (0..n).map(&weight).sum();

    let mut allocated: u128 = 0;
    for (i, remainder) in remainders.iter_mut().enumerate() {
        let product = magnitude * weight(i);
        let share = product / total;
        *remainder = product % total;
        allocated += share;
        out.push(share as i64); // share <= |i64::MIN|; fixed up below for that one case
    }

    // Fewer than n cents remain, so each weight gets at most one more.
    let mut leftover = (magnitude - allocated) as usize;
    if leftover > 0 {
        let mut order: Vec<usize> = (0..n).collect();
        // Largest remainder first; equal remainders keep their order (stable sort).
        order.sort_by(|a, b| remainders[*b].cmp(&remainders[*a]));
        for i in order {
            if leftover == 0 {
                break;
            }
            out[i] += 1;
            leftover -= 1;
        }
    }

    if revenue < 0 {
        // A share of exactly 2^63 only happens for i64::MIN with one weight; the cast
        // above stored it as i64::MIN, and wrapping negation keeps it there: the answer.
        for share in out.iter_mut() {
            *share = share.wrapping_neg();
        }
    }
}

/// Convenience wrapper around [`split_cents_into`] that validates and allocates.
pub fn split_cents(revenue: i64, weights: &[i32]) -> Result<Vec<i64>, SplitError> {
    validate_weights(weights)?;
    let mut out = Vec::with_capacity(weights.len());
    split_cents_into(revenue, weights, &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const THIRDS: [i32; 3] = [1, 1, 1];

    fn sum(v: &[i64]) -> i128 {
        v.iter().map(|x| i128::from(*x)).sum()
    }

    #[test]
    fn baseline_thirds_keep_every_cent() {
        assert_eq!(split_cents(100, &THIRDS).unwrap(), vec![34, 33, 33]);
        assert_eq!(split_cents(101, &THIRDS).unwrap(), vec![34, 34, 33]);
        assert_eq!(split_cents(102, &THIRDS).unwrap(), vec![34, 34, 34]);
        assert_eq!(split_cents(0, &THIRDS).unwrap(), vec![0, 0, 0]);
        assert_eq!(split_cents(1, &THIRDS).unwrap(), vec![1, 0, 0]);
        assert_eq!(split_cents(2, &THIRDS).unwrap(), vec![1, 1, 0]);
    }

    #[test]
    fn negative_revenue_mirrors_positive() {
        assert_eq!(split_cents(-100, &THIRDS).unwrap(), vec![-34, -33, -33]);
        assert_eq!(split_cents(-1, &THIRDS).unwrap(), vec![-1, 0, 0]);
    }

    #[test]
    fn largest_remainder_beats_position() {
        // 10 * 1/6 = 1.67, 10 * 2/6 = 3.33, 10 * 3/6 = 5: the first channel has the
        // largest remainder and gets the spare cent even though ties would favour it anyway.
        assert_eq!(split_cents(10, &[1, 2, 3]).unwrap(), vec![2, 3, 5]);
        // 7 over [3, 1]: 5.25 and 1.75; the second channel's .75 wins.
        assert_eq!(split_cents(7, &[3, 1]).unwrap(), vec![5, 2]);
    }

    #[test]
    fn bigint_extremes_do_not_overflow() {
        for rev in [i64::MAX, i64::MIN, i64::MAX - 1, i64::MIN + 1] {
            for weights in [&THIRDS[..], &[1][..], &[i32::MAX, 1, i32::MAX][..]] {
                let shares = split_cents(rev, weights).unwrap();
                assert_eq!(sum(&shares), i128::from(rev), "rev {rev} weights {weights:?}");
            }
        }
        assert_eq!(split_cents(i64::MIN, &[1]).unwrap(), vec![i64::MIN]);
    }

    #[test]
    fn bad_weights_are_rejected() {
        assert_eq!(split_cents(1, &[]), Err(SplitError::NoWeights));
        assert_eq!(split_cents(1, &[1, 0]), Err(SplitError::NonPositiveWeight(0, 2)));
        assert_eq!(split_cents(1, &[1, -3]), Err(SplitError::NonPositiveWeight(-3, 2)));
        assert_eq!(split_cents(1, &[1; 65]), Err(SplitError::TooManyWeights(65)));
    }

    /// A small deterministic generator so the property test needs no extra crate.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn random_revenues_always_sum_exactly_and_are_deterministic() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut out = Vec::new();
        for _ in 0..200_000 {
            let rev = match rng.next() % 4 {
                0 => (rng.next() % 1_000) as i64 - 500,
                1 => rng.next() as i64,
                2 => [0, 1, 2, -1, -2, i64::MAX, i64::MIN][(rng.next() % 7) as usize],
                _ => (rng.next() % 10_000_000) as i64,
            };
            let n = 1 + (rng.next() % 8) as usize;
            let weights: Vec<i32> = (0..n).map(|_| 1 + (rng.next() % 1_000) as i32).collect();
            split_cents_into(rev, &weights, &mut out);
            assert_eq!(sum(&out), i128::from(rev), "rev {rev} weights {weights:?}");
            let total: i128 = weights.iter().map(|w| i128::from(*w)).sum();
            for (share, w) in out.iter().zip(&weights) {
                // Each share is within one cent of its exact proportional value.
                let exact_times_total = i128::from(rev) * i128::from(*w);
                let diff = i128::from(*share) * total - exact_times_total;
                assert!(diff.abs() < total, "share {share} too far from exact for rev {rev}");
            }
            let again = split_cents(rev, &weights).unwrap();
            assert_eq!(out, again);
        }
    }
}
