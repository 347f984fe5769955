//! Which entity a request asks for: uniform or Zipf-skewed over a fixed key space.

use std::sync::Arc;

use rand::Rng;

/// A distribution over user numbers `1..=n` (`user_0001`, ...; see `quickstart::user_id`).
#[derive(Clone)]
pub enum KeyDist {
    /// Every user equally likely.
    Uniform {
        /// Key-space size.
        n: usize,
    },
    /// User `k` drawn with probability proportional to `1 / k^s`.
    Zipf {
        /// Cumulative probabilities, one per user.
        cdf: Arc<[f64]>,
        /// The exponent.
        s: f64,
    },
}

impl KeyDist {
    /// Uniform when `s` is 0, Zipf with exponent `s` otherwise.
    pub fn new(n: usize, s: f64) -> Self {
        assert!(n > 0, "empty key space");
        if s <= 0.0 {
            return KeyDist::Uniform { n };
        }
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for k in 1..=n {
            total += 1.0 / (k as f64).powf(s);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        KeyDist::Zipf { cdf: cdf.into(), s }
    }

    /// Draws a user number in `1..=n`.
    pub fn sample(&self, rng: &mut impl Rng) -> usize {
        match self {
            KeyDist::Uniform { n } => rng.random_range(1..=*n),
            KeyDist::Zipf { cdf, .. } => {
                let u: f64 = rng.random();
                cdf.partition_point(|&c| c < u).min(cdf.len() - 1) + 1
            }
        }
    }

    /// `uniform` or `zipf(s)`.
    pub fn describe(&self) -> String {
        match self {
            KeyDist::Uniform { .. } => "uniform".into(),
            KeyDist::Zipf { s, .. } => format!("zipf({s})"),
        }
    }
}

/// Appends the user id of user `i` (`user_0001`) as a JSON string, the same id
/// `quickstart::user_id` writes into the data.
pub fn push_user_json(out: &mut Vec<u8>, i: usize) {
    use std::io::Write;
    let _ = write!(out, "\"user_{i:04}\"");
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn zipf_favours_small_ranks_and_stays_in_range() {
        let d = KeyDist::new(1000, 1.0);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let draws: Vec<usize> = (0..20_000).map(|_| d.sample(&mut rng)).collect();
        assert!(draws.iter().all(|&k| (1..=1000).contains(&k)));
        let first = draws.iter().filter(|&&k| k == 1).count() as f64 / 20_000.0;
        // P(1) = 1 / H(1000) ≈ 0.134.
        assert!((0.11..0.16).contains(&first), "{first}");
    }

    #[test]
    fn user_ids_match_the_generator() {
        let mut out = Vec::new();
        push_user_json(&mut out, 7);
        assert_eq!(out, format!("\"{}\"", quickstart::user_id(7)).into_bytes());
    }
}
