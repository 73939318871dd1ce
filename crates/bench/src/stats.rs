//! Medians and spreads of repeated measurements.

/// The summary of one measurement repeated over rounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Middle value (the mean of the two middle ones for an even count).
    pub median: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Number of values.
    pub count: usize,
}

impl Summary {
    /// Summarizes `values`; `None` when there are none (or only NaNs).
    ///
    /// ```
    /// let s = herald_bench::stats::Summary::of(&[3.0, 1.0, 2.0, 10.0]).unwrap();
    /// assert_eq!((s.median, s.min, s.max, s.count), (2.5, 1.0, 10.0, 4));
    /// ```
    pub fn of(values: &[f64]) -> Option<Summary> {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 };
        Some(Summary { median, min: sorted[0], max: sorted[n - 1], count: n })
    }

    /// Spread as a fraction of the median: `(max - min) / median` (0 when the median is 0).
    pub fn spread(&self) -> f64 {
        if self.median == 0.0 { 0.0 } else { (self.max - self.min) / self.median }
    }
}

/// Per-round ratios `a[i] / b[i]` of two measurements taken in the same rounds.
///
/// Pairing by round cancels some of the noise that hits both variants of a round alike
/// (another build compiling on the same cores).
pub fn paired_ratios(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).filter(|(_, b)| **b > 0.0).map(|(a, b)| a / b).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(Summary::of(&[5.0]).map(|s| s.median), Some(5.0));
        assert_eq!(Summary::of(&[4.0, 1.0, 9.0]).map(|s| s.median), Some(4.0));
        assert_eq!(Summary::of(&[4.0, 1.0, 9.0, 2.0]).map(|s| s.median), Some(3.0));
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(Summary::of(&[f64::NAN]), None);
    }

    #[test]
    fn spread_is_relative_to_the_median() {
        let s = Summary::of(&[90.0, 100.0, 110.0]).expect("values");
        assert!((s.spread() - 0.2).abs() < 1e-12);
        assert_eq!(Summary::of(&[0.0, 0.0]).map(|s| s.spread()), Some(0.0));
    }

    #[test]
    fn ratios_pair_rounds_and_skip_empty_baselines() {
        assert_eq!(paired_ratios(&[9.0, 8.0, 5.0], &[10.0, 0.0, 5.0]), vec![0.9, 1.0]);
    }
}
