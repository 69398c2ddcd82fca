//! Percentiles of latency samples, computed one way for every bench program.

/// p50, p99 and max of a set of samples.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Summary<T> {
    pub p50: T,
    pub p99: T,
    pub max: T,
}

/// The `p` quantile (0.0..=1.0) of samples sorted ascending: the sample at rank round((n-1)·p).
/// `None` when there are no samples.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    let last = sorted.len().checked_sub(1)?;
    let rank = (last as f64 * p.clamp(0.0, 1.0)).round() as usize;
    sorted.get(rank.min(last)).copied()
}

/// Sorts the samples and returns their p50, p99 and max (all zero/default when there are none).
pub fn summarize<T: Copy + Ord + Default>(mut samples: Vec<T>) -> Summary<T> {
    samples.sort_unstable();
    let q = |p| percentile(&samples, p).unwrap_or_default();
    Summary {
        p50: q(0.50),
        p99: q(0.99),
        max: q(1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_one_to_hundred() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&v, 0.5), Some(51));
        assert_eq!(percentile(&v, 0.99), Some(99));
        assert_eq!(percentile(&v, 1.0), Some(100));
        let s = summarize(v.into_iter().rev().collect());
        assert_eq!((s.p50, s.p99, s.max), (51, 99, 100));
    }

    #[test]
    fn empty_is_none_or_default() {
        assert_eq!(percentile::<u64>(&[], 0.5), None);
        assert_eq!(summarize::<u64>(Vec::new()), Summary::default());
    }
}
