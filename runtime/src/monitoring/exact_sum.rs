//! An exactly rounded floating-point sum (Shewchuk's algorithm, as Python's `math.fsum`): the
//! result is the exact sum of the inputs rounded once, so it does not depend on the order in which
//! values are added or on how partial sums are combined.

/// A running sum kept as non-overlapping partials whose exact total is the sum of every value
/// added. Non-finite inputs (and overflow) are summed apart: any infinity makes the sum infinite,
/// opposite infinities make it NaN.
#[derive(Debug, Clone, Default)]
pub(crate) struct ExactSum {
    partials: Vec<f64>,
    special: f64,
}

impl ExactSum {
    /// Adds one value.
    pub(crate) fn add(&mut self, value: f64) {
        if !value.is_finite() {
            self.special += value;
            return;
        }
        let mut x = value;
        let mut kept = 0;
        for j in 0..self.partials.len() {
            let mut y = self.partials[j];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            let lo = y - (hi - x);
            if lo != 0.0 {
                self.partials[kept] = lo;
                kept += 1;
            }
            x = hi;
        }
        self.partials.truncate(kept);
        if x.is_finite() {
            self.partials.push(x);
        } else {
            // The exact sum left f64's range.
            self.special += x;
        }
    }

    /// Adds everything another sum holds.
    pub(crate) fn merge(&mut self, other: &ExactSum) {
        for &p in &other.partials {
            self.add(p);
        }
        self.special += other.special;
    }

    /// The exact sum, correctly rounded to the nearest f64 (ties to even).
    pub(crate) fn value(&self) -> f64 {
        if self.special != 0.0 || self.special.is_nan() {
            return self.special;
        }
        let p = &self.partials;
        let mut n = p.len();
        if n == 0 {
            return 0.0;
        }
        n -= 1;
        let mut hi = p[n];
        let mut lo = 0.0;
        while n > 0 {
            let x = hi;
            n -= 1;
            let y = p[n];
            hi = x + y;
            let yr = hi - x;
            lo = y - yr;
            if lo != 0.0 {
                break;
            }
        }
        // Round half-way cases the way the remaining partials say.
        if n > 0 && ((lo < 0.0 && p[n - 1] < 0.0) || (lo > 0.0 && p[n - 1] > 0.0)) {
            let y = lo * 2.0;
            let x = hi + y;
            let yr = x - hi;
            if y == yr {
                hi = x;
            }
        }
        hi
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(values: &[f64]) -> f64 {
        let mut s = ExactSum::default();
        values.iter().for_each(|&v| s.add(v));
        s.value()
    }

    #[test]
    fn the_sum_is_exact_where_naive_addition_loses_the_small_terms() {
        assert_eq!(sum(&[1e100, 1.0, -1e100]), 1.0);
        assert_eq!(sum(&[0.1; 10]), 1.0);
        assert_eq!(sum(&[]), 0.0);
    }

    #[test]
    fn the_sum_does_not_depend_on_the_order_or_the_grouping() {
        let values: Vec<f64> = (0..1000)
            .map(|i| ((i * 7919) % 1013) as f64 * 1.1e-3 + (i as f64).sin() * 1e6)
            .collect();
        let forward = sum(&values);
        let mut reversed = values.clone();
        reversed.reverse();
        assert_eq!(forward.to_bits(), sum(&reversed).to_bits());
        let (a, b) = values.split_at(377);
        let mut left = ExactSum::default();
        a.iter().for_each(|&v| left.add(v));
        let mut right = ExactSum::default();
        b.iter().for_each(|&v| right.add(v));
        right.merge(&left);
        assert_eq!(forward.to_bits(), right.value().to_bits());
    }

    #[test]
    fn infinities_make_the_sum_infinite_or_nan() {
        assert_eq!(sum(&[1.0, f64::INFINITY]), f64::INFINITY);
        assert!(sum(&[f64::INFINITY, f64::NEG_INFINITY]).is_nan());
    }
}
