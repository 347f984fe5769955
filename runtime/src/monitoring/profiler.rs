//! Computing a [`Profile`] from Arrow batches in two passes of bounded memory.
//!
//! 1. [`Profiler`] counts values and nulls, tracks min and max, sums the values exactly
//!    ([`ExactSum`]: correctly rounded, so independent of order and grouping) and keeps a sample of
//!    `sample_size` rows per feature: the rows whose index hashes lowest (xxh3 of the row index
//!    with a fixed seed). The sample is a function of the row indices alone, so it is the same
//!    however the rows are split into batches or across workers; when a feature has no more
//!    values than `sample_size`, it holds all of them and the edges are exact.
//! 2. From the sample come the numeric edges (quantiles) and the top-value candidates; the
//!    [`SecondPass`] then counts every value into its bin with the same function
//!    [`FeatureProfile::bin_of`] uses and sums the squared deviations from the mean exactly.
//!
//! Both passes merge partial results (`merge`) into the same totals whatever the order, since
//! they only add counts and exact sums and keep the lowest-hashing rows.

use std::collections::{BinaryHeap, HashMap};

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array, StringArray};
use arrow::compute::{cast, kernels::length::length};
use arrow::datatypes::{DataType, Float64Type, TimeUnit};

use super::exact_sum::ExactSum;
use super::profile::{
    CategoricalSummary, CategoryCount, FORMAT_VERSION, FeatureProfile, NumericSummary, Origin,
    Profile, ProfileError, ProfileOptions, Summary, bin_of_edges, bool_label,
};
use crate::types::{ScalarType, ValueType};

/// The seed of the row-sampling hash. Changing it changes every sampled profile.
const SAMPLE_SEED: u64 = 0x5155_4956_4552; // "QUIVER"

/// A column to profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileColumn {
    /// The column name.
    pub name: String,
    /// The feature as served, `view:feature`.
    pub feature: String,
    /// The declared type.
    pub dtype: ValueType,
}

/// How a column's values are profiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Numeric,
    Timestamp,
    Length,
    String,
    Bool,
}

fn kind_of(dtype: ValueType) -> Kind {
    match dtype {
        ValueType::List(_) | ValueType::Scalar(ScalarType::Bytes) => Kind::Length,
        ValueType::Scalar(ScalarType::UnixTimestamp) => Kind::Timestamp,
        ValueType::Scalar(ScalarType::String) => Kind::String,
        ValueType::Scalar(ScalarType::Bool) => Kind::Bool,
        ValueType::Scalar(_) => Kind::Numeric,
    }
}

/// A column's values, normalized for profiling.
enum Values {
    Numbers(Float64Array),
    Strings(StringArray),
    Bools(BooleanArray),
}

fn read_values(column: &ProfileColumn, array: &ArrayRef) -> Result<Values, ProfileError> {
    let wrong = |message: String| ProfileError::ColumnType {
        column: column.name.clone(),
        dtype: column.dtype.to_string(),
        message,
    };
    let to_f64 = |a: &ArrayRef| -> Result<Values, ProfileError> {
        let cast = cast(a, &DataType::Float64).map_err(|e| {
            wrong(format!(
                "Arrow type {} is not a number: {e}",
                array.data_type()
            ))
        })?;
        Ok(Values::Numbers(cast.as_primitive::<Float64Type>().clone()))
    };
    let kind = kind_of(column.dtype);
    let dt = array.data_type();
    let readable = match kind {
        Kind::Numeric => dt.is_numeric(),
        Kind::Timestamp => matches!(dt, DataType::Timestamp(..) | DataType::Int64),
        Kind::String => matches!(
            dt,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        ),
        Kind::Bool => matches!(dt, DataType::Boolean),
        Kind::Length => true, // the length kernel says what it cannot measure
    };
    if !readable {
        return Err(wrong(format!(
            "Arrow type {dt} cannot be read as {}",
            column.dtype
        )));
    }
    match kind {
        Kind::Numeric => to_f64(array),
        Kind::Timestamp => match array.data_type() {
            // Microseconds since the epoch, whatever the unit or zone (the zone only names how
            // the UTC instant is displayed).
            DataType::Timestamp(_, tz) => {
                let micros = cast(
                    array,
                    &DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
                )
                .and_then(|a| cast(&a, &DataType::Int64))
                .map_err(|e| wrong(e.to_string()))?;
                to_f64(&micros)
            }
            _ => to_f64(array),
        },
        Kind::Length => {
            let lengths: ArrayRef = length(array.as_ref()).map_err(|e| {
                wrong(format!(
                    "Arrow type {} has no length: {e}",
                    array.data_type()
                ))
            })?;
            to_f64(&lengths)
        }
        Kind::String => {
            let strings = cast(array, &DataType::Utf8)
                .map_err(|e| wrong(format!("Arrow type {} is not text: {e}", array.data_type())))?;
            Ok(Values::Strings(strings.as_string::<i32>().clone()))
        }
        Kind::Bool => {
            let bools = cast(array, &DataType::Boolean)
                .map_err(|e| wrong(format!("Arrow type {} is not bool: {e}", array.data_type())))?;
            Ok(Values::Bools(bools.as_boolean().clone()))
        }
    }
}

/// The rows of lowest `(hash, row)`, at most `capacity` of them.
#[derive(Debug, Clone)]
struct Sample<T: Ord> {
    capacity: usize,
    heap: BinaryHeap<(u64, u64, T)>,
}

impl<T: Ord> Sample<T> {
    fn new(capacity: usize) -> Self {
        Sample {
            capacity,
            heap: BinaryHeap::new(),
        }
    }

    fn priority(row: u64) -> u64 {
        xxhash_rust::xxh3::xxh3_64_with_seed(&row.to_le_bytes(), SAMPLE_SEED)
    }

    /// Offers row `row`; `value` is only called when the row is kept.
    fn offer(&mut self, row: u64, value: impl FnOnce() -> T) {
        let key = (Self::priority(row), row);
        if self.heap.len() < self.capacity {
            self.heap.push((key.0, key.1, value()));
        } else if let Some(top) = self.heap.peek()
            && key < (top.0, top.1)
        {
            self.heap.pop();
            self.heap.push((key.0, key.1, value()));
        }
    }

    fn merge(&mut self, other: Sample<T>) {
        for (p, row, v) in other.heap {
            if self.heap.len() < self.capacity {
                self.heap.push((p, row, v));
            } else if let Some(top) = self.heap.peek()
                && (p, row) < (top.0, top.1)
            {
                self.heap.pop();
                self.heap.push((p, row, v));
            }
        }
    }

    fn len(&self) -> usize {
        self.heap.len()
    }

    fn into_values(self) -> impl Iterator<Item = T> {
        self.heap.into_iter().map(|(_, _, v)| v)
    }
}

#[derive(Debug, Clone)]
struct NumericFirst {
    count: u64,
    nulls: u64,
    nan: u64,
    infinite: u64,
    min_finite: f64,
    max_finite: f64,
    sum: ExactSum,
    /// Finite values, as f64 bits (ordered as numbers after sorting by `f64::total_cmp`).
    sample: Sample<u64>,
}

#[derive(Debug, Clone)]
struct CategoricalFirst {
    count: u64,
    nulls: u64,
    sample: Sample<String>,
}

#[derive(Debug, Clone)]
enum FirstState {
    Numeric(NumericFirst),
    Categorical(CategoricalFirst),
}

/// The first pass of a profile: counts, extremes, exact sums and row samples.
#[derive(Debug, Clone)]
pub struct Profiler {
    columns: Vec<ProfileColumn>,
    options: ProfileOptions,
    states: Vec<FirstState>,
    rows: u64,
}

fn check_shape(columns: &[ProfileColumn], arrays: &[ArrayRef]) -> Result<usize, ProfileError> {
    if arrays.len() != columns.len() {
        return Err(ProfileError::Shape(format!(
            "expected {} columns to profile, got {}",
            columns.len(),
            arrays.len()
        )));
    }
    let rows = arrays.first().map_or(0, |a| a.len());
    if let Some((c, a)) = columns.iter().zip(arrays).find(|(_, a)| a.len() != rows) {
        return Err(ProfileError::Shape(format!(
            "column \"{}\" has {} rows, the batch {rows}",
            c.name,
            a.len()
        )));
    }
    Ok(rows)
}

impl Profiler {
    /// A profiler of `columns`.
    pub fn new(columns: Vec<ProfileColumn>, options: ProfileOptions) -> Result<Self, ProfileError> {
        options.check()?;
        let states = columns
            .iter()
            .map(|c| match kind_of(c.dtype) {
                Kind::Numeric | Kind::Timestamp | Kind::Length => {
                    FirstState::Numeric(NumericFirst {
                        count: 0,
                        nulls: 0,
                        nan: 0,
                        infinite: 0,
                        min_finite: f64::INFINITY,
                        max_finite: f64::NEG_INFINITY,
                        sum: ExactSum::default(),
                        sample: Sample::new(options.sample_size),
                    })
                }
                Kind::String | Kind::Bool => FirstState::Categorical(CategoricalFirst {
                    count: 0,
                    nulls: 0,
                    sample: Sample::new(options.sample_size),
                }),
            })
            .collect();
        Ok(Profiler {
            columns,
            options,
            states,
            rows: 0,
        })
    }

    /// Takes one batch: `arrays[i]` holds column `i`'s values of rows `first_row..`. Row indices
    /// choose the sample: give each row the same index however the data is split.
    pub fn observe(&mut self, first_row: u64, arrays: &[ArrayRef]) -> Result<(), ProfileError> {
        let rows = check_shape(&self.columns, arrays)?;
        for ((column, array), state) in self.columns.iter().zip(arrays).zip(&mut self.states) {
            match (state, read_values(column, array)?) {
                (FirstState::Numeric(s), Values::Numbers(values)) => {
                    for (i, v) in values.iter().enumerate() {
                        let x = match v {
                            None => {
                                s.nulls += 1;
                                continue;
                            }
                            Some(x) if x.is_nan() => {
                                s.nulls += 1;
                                s.nan += 1;
                                continue;
                            }
                            Some(x) => x + 0.0, // -0.0 is 0.0
                        };
                        s.count += 1;
                        if x.is_infinite() {
                            s.infinite += 1;
                            continue;
                        }
                        s.min_finite = s.min_finite.min(x);
                        s.max_finite = s.max_finite.max(x);
                        s.sum.add(x);
                        s.sample.offer(first_row + i as u64, || x.to_bits());
                    }
                }
                (FirstState::Categorical(s), values) => {
                    let mut take = |i: usize, v: Option<&str>| match v {
                        None => s.nulls += 1,
                        Some(v) => {
                            s.count += 1;
                            s.sample.offer(first_row + i as u64, || v.to_string());
                        }
                    };
                    match values {
                        Values::Strings(a) => a.iter().enumerate().for_each(|(i, v)| take(i, v)),
                        Values::Bools(a) => a
                            .iter()
                            .enumerate()
                            .for_each(|(i, v)| take(i, v.map(bool_label))),
                        Values::Numbers(_) => unreachable!("categorical columns read as text"),
                    }
                }
                (FirstState::Numeric(_), _) => unreachable!("numeric columns read as numbers"),
            }
        }
        self.rows += rows as u64;
        Ok(())
    }

    /// Adds another profiler's observations of other rows of the same columns.
    pub fn merge(&mut self, other: Profiler) -> Result<(), ProfileError> {
        if other.columns != self.columns || other.options != self.options {
            return Err(ProfileError::Shape(
                "cannot merge profilers of different columns or options".into(),
            ));
        }
        for (a, b) in self.states.iter_mut().zip(other.states) {
            match (a, b) {
                (FirstState::Numeric(a), FirstState::Numeric(b)) => {
                    a.count += b.count;
                    a.nulls += b.nulls;
                    a.nan += b.nan;
                    a.infinite += b.infinite;
                    a.min_finite = a.min_finite.min(b.min_finite);
                    a.max_finite = a.max_finite.max(b.max_finite);
                    a.sum.merge(&b.sum);
                    a.sample.merge(b.sample);
                }
                (FirstState::Categorical(a), FirstState::Categorical(b)) => {
                    a.count += b.count;
                    a.nulls += b.nulls;
                    a.sample.merge(b.sample);
                }
                _ => unreachable!("same columns, same states"),
            }
        }
        self.rows += other.rows;
        Ok(())
    }

    /// Ends the first pass: fixes the edges and the top-value candidates.
    pub fn into_second_pass(self) -> SecondPass {
        let options = self.options;
        let states = self
            .states
            .into_iter()
            .map(|state| match state {
                FirstState::Numeric(s) => {
                    let finite = s.count - s.infinite;
                    let sampled = (s.sample.len() as u64) < finite;
                    let mut values: Vec<f64> = s.sample.into_values().map(f64::from_bits).collect();
                    values.sort_by(f64::total_cmp);
                    let edges = quantile_edges(&values, s.min_finite, s.max_finite, options.bins);
                    let mean = (finite > 0).then(|| s.sum.value() / finite as f64);
                    let inner = NumericSummary::inner_bins(&edges);
                    SecondState::Numeric(NumericSecond {
                        first: NumericTotals {
                            count: s.count,
                            nulls: s.nulls,
                            nan: s.nan,
                            infinite: s.infinite,
                            min: (finite > 0).then_some(s.min_finite),
                            max: (finite > 0).then_some(s.max_finite),
                            mean,
                            sampled,
                        },
                        edges,
                        counts: vec![0; inner + 3],
                        squares: ExactSum::default(),
                    })
                }
                FirstState::Categorical(s) => {
                    let sampled = (s.sample.len() as u64) < s.count;
                    let mut frequency: HashMap<String, u64> = HashMap::new();
                    for v in s.sample.into_values() {
                        *frequency.entry(v).or_default() += 1;
                    }
                    let mut ranked: Vec<(String, u64)> = frequency.into_iter().collect();
                    rank(&mut ranked);
                    // Twice as many candidates as kept: the exact counts of the second pass
                    // choose among them.
                    ranked.truncate(options.top_k.saturating_mul(2));
                    let candidates: Vec<String> = ranked.into_iter().map(|(v, _)| v).collect();
                    let index = candidates
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (v.clone(), i))
                        .collect();
                    SecondState::Categorical(CategoricalSecond {
                        count: s.count,
                        nulls: s.nulls,
                        sampled,
                        counts: vec![0; candidates.len()],
                        candidates,
                        index,
                        other: 0,
                        null: 0,
                    })
                }
            })
            .collect();
        SecondPass {
            columns: self.columns,
            options,
            rows: self.rows,
            seen: 0,
            states,
        }
    }
}

/// Most frequent first, ties by value.
fn rank(values: &mut [(String, u64)]) {
    values.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
}

/// The edges of `bins` quantile bins over the sorted finite values `sorted`: the exact minimum
/// and maximum, and between them the values of rank `ceil(i·n/bins)` (the smallest value with at
/// least `i/bins` of the values at or below it), `i = 1..bins`; equal edges merged.
pub(crate) fn quantile_edges(sorted: &[f64], min: f64, max: f64, bins: usize) -> Vec<f64> {
    if sorted.is_empty() {
        return Vec::new();
    }
    let n = sorted.len();
    let mut edges = Vec::with_capacity(bins + 1);
    edges.push(min);
    for i in 1..bins {
        let rank = (i * n).div_ceil(bins).max(1);
        edges.push(sorted[rank - 1]);
    }
    edges.push(max);
    edges.dedup();
    edges
}

#[derive(Debug, Clone)]
struct NumericTotals {
    count: u64,
    nulls: u64,
    nan: u64,
    infinite: u64,
    min: Option<f64>,
    max: Option<f64>,
    mean: Option<f64>,
    sampled: bool,
}

#[derive(Debug, Clone)]
struct NumericSecond {
    first: NumericTotals,
    edges: Vec<f64>,
    /// Underflow, the inner bins, overflow, null.
    counts: Vec<u64>,
    squares: ExactSum,
}

#[derive(Debug, Clone)]
struct CategoricalSecond {
    count: u64,
    nulls: u64,
    sampled: bool,
    candidates: Vec<String>,
    index: HashMap<String, usize>,
    counts: Vec<u64>,
    other: u64,
    null: u64,
}

#[derive(Debug, Clone)]
enum SecondState {
    Numeric(NumericSecond),
    Categorical(CategoricalSecond),
}

/// The second pass of a profile: bin counts over the fixed edges and candidates, and the
/// squared deviations from the mean.
#[derive(Debug, Clone)]
pub struct SecondPass {
    columns: Vec<ProfileColumn>,
    options: ProfileOptions,
    rows: u64,
    seen: u64,
    states: Vec<SecondState>,
}

impl SecondPass {
    /// Takes one batch of the same rows as the first pass (in any order or split).
    pub fn observe(&mut self, arrays: &[ArrayRef]) -> Result<(), ProfileError> {
        let rows = check_shape(&self.columns, arrays)?;
        for ((column, array), state) in self.columns.iter().zip(arrays).zip(&mut self.states) {
            match (state, read_values(column, array)?) {
                (SecondState::Numeric(s), Values::Numbers(values)) => {
                    let null_bin = s.counts.len() - 1;
                    for v in values.iter() {
                        match v {
                            Some(x) if !x.is_nan() => {
                                let x = x + 0.0;
                                s.counts[bin_of_edges(&s.edges, x)] += 1;
                                if let (true, Some(mean)) = (x.is_finite(), s.first.mean) {
                                    let d = x - mean;
                                    s.squares.add(d * d);
                                }
                            }
                            _ => s.counts[null_bin] += 1,
                        }
                    }
                }
                (SecondState::Categorical(s), values) => {
                    let mut take = |v: Option<&str>| match v {
                        None => s.null += 1,
                        Some(v) => match s.index.get(v) {
                            Some(&i) => s.counts[i] += 1,
                            None => s.other += 1,
                        },
                    };
                    match values {
                        Values::Strings(a) => a.iter().for_each(&mut take),
                        Values::Bools(a) => a.iter().for_each(|v| take(v.map(bool_label))),
                        Values::Numbers(_) => unreachable!("categorical columns read as text"),
                    }
                }
                (SecondState::Numeric(_), _) => unreachable!("numeric columns read as numbers"),
            }
        }
        self.seen += rows as u64;
        Ok(())
    }

    /// An empty second pass over the same edges and candidates, for another worker whose
    /// results are then [merged](SecondPass::merge).
    pub fn fork(&self) -> SecondPass {
        let mut fork = self.clone();
        fork.seen = 0;
        for s in &mut fork.states {
            match s {
                SecondState::Numeric(n) => {
                    n.counts.iter_mut().for_each(|c| *c = 0);
                    n.squares = ExactSum::default();
                }
                SecondState::Categorical(c) => {
                    c.counts.iter_mut().for_each(|c| *c = 0);
                    c.other = 0;
                    c.null = 0;
                }
            }
        }
        fork
    }

    /// Adds the counts of a [fork](SecondPass::fork).
    pub fn merge(&mut self, other: SecondPass) {
        for (a, b) in self.states.iter_mut().zip(other.states) {
            match (a, b) {
                (SecondState::Numeric(a), SecondState::Numeric(b)) => {
                    a.counts
                        .iter_mut()
                        .zip(&b.counts)
                        .for_each(|(x, y)| *x += y);
                    a.squares.merge(&b.squares);
                }
                (SecondState::Categorical(a), SecondState::Categorical(b)) => {
                    a.counts
                        .iter_mut()
                        .zip(&b.counts)
                        .for_each(|(x, y)| *x += y);
                    a.other += b.other;
                    a.null += b.null;
                }
                _ => unreachable!("forks have the same states"),
            }
        }
        self.seen += other.seen;
    }

    /// The profile. Fails when the second pass did not see the rows of the first.
    pub fn finish(self, origin: Origin) -> Result<Profile, ProfileError> {
        if self.seen != self.rows {
            return Err(ProfileError::Shape(format!(
                "the second pass read {} rows, the first {}: the data changed while it was profiled",
                self.seen, self.rows
            )));
        }
        let top_k = self.options.top_k;
        let features = self
            .columns
            .into_iter()
            .zip(self.states)
            .map(|(column, state)| {
                let (count, nulls, summary) = match state {
                    SecondState::Numeric(s) => {
                        let t = s.first;
                        let finite = t.count - t.infinite;
                        let std_dev = t.mean.map(|_| (s.squares.value() / finite as f64).sqrt());
                        let inner = s.counts.len() - 3;
                        let summary = NumericSummary {
                            min: t.min,
                            max: t.max,
                            mean: t.mean,
                            std_dev,
                            nan: t.nan,
                            infinite: t.infinite,
                            sampled: t.sampled,
                            edges: s.edges,
                            underflow: s.counts[0],
                            bins: s.counts[1..=inner].to_vec(),
                            overflow: s.counts[inner + 1],
                            null: s.counts[inner + 2],
                        };
                        let summary = match kind_of(column.dtype) {
                            Kind::Length => Summary::Length(summary),
                            _ => Summary::Numeric(summary),
                        };
                        (t.count, t.nulls, summary)
                    }
                    SecondState::Categorical(s) => {
                        let mut ranked: Vec<(String, u64)> =
                            s.candidates.into_iter().zip(s.counts).collect();
                        ranked.retain(|(_, c)| *c > 0);
                        rank(&mut ranked);
                        ranked.truncate(top_k);
                        let kept: u64 = ranked.iter().map(|(_, c)| c).sum();
                        let top = ranked
                            .into_iter()
                            .map(|(value, count)| CategoryCount { value, count })
                            .collect();
                        let summary =
                            CategoricalSummary::new(top, s.count - kept, s.null, s.sampled);
                        (s.count, s.nulls, Summary::Categorical(summary))
                    }
                };
                FeatureProfile {
                    name: column.name,
                    feature: column.feature,
                    dtype: column.dtype.to_string(),
                    count,
                    nulls,
                    summary,
                }
            })
            .collect();
        Ok(Profile {
            format_version: FORMAT_VERSION,
            origin,
            rows: self.rows,
            options: self.options,
            features,
        })
    }
}

/// Profiles batches held in memory (both passes over `batches`, rows numbered in order).
pub fn profile_batches(
    columns: Vec<ProfileColumn>,
    options: ProfileOptions,
    batches: &[Vec<ArrayRef>],
    origin: Origin,
) -> Result<Profile, ProfileError> {
    let mut first = Profiler::new(columns, options)?;
    let mut row = 0u64;
    for batch in batches {
        first.observe(row, batch)?;
        row += batch.first().map_or(0, |a| a.len()) as u64;
    }
    let mut second = first.into_second_pass();
    for batch in batches {
        second.observe(batch)?;
    }
    second.finish(origin)
}
