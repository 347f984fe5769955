//! The reference profile of a training set or of a feature view's data: per feature, counts,
//! nulls, summary statistics and a histogram over fixed bins, and [`FeatureProfile::bin_of`],
//! which puts a served value into the bin the histogram would have counted it in.
//!
//! The bins of a feature, by index:
//!
//! - numbers (`int32`, `int64`, `float32`, `float64`, `unix_timestamp` in microseconds) and
//!   lengths (of `list<...>` and `bytes` values): `0` underflow (below the first edge), `1..=m`
//!   the `m` bins between the `m + 1` edges (`[e_{i-1}, e_i)`, the last one closed:
//!   `[e_{m-1}, e_m]`; a single edge gives one bin holding exactly that value), `m + 1` overflow
//!   (above the last edge), `m + 2` null. NaN counts as null; ±∞ fall in underflow / overflow.
//! - strings and bools (`"true"`, `"false"`): `0..k` the top `k` values, `k` other, `k + 1` null.
//!
//! `docs/monitoring.md` describes the format, the binning and the determinism guarantees.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::types::Value;

/// The version of the profile's JSON format; readers refuse other versions.
pub const FORMAT_VERSION: u32 = 1;

/// Parquet key-value metadata key of the profile of a training set written by
/// `quiver historical`.
pub const META_PROFILE: &str = "quiver.profile";

/// Errors building, reading or using a profile.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The profiling options are out of range.
    #[error("invalid profile options: {0}")]
    Options(String),
    /// A column cannot be profiled as its declared type.
    #[error("column \"{column}\" cannot be profiled as {dtype}: {message}")]
    ColumnType {
        /// The column.
        column: String,
        /// Its declared type.
        dtype: String,
        /// What was found.
        message: String,
    },
    /// The columns given to the profiler do not match the columns it was created for.
    #[error("{0}")]
    Shape(String),
    /// The JSON is not a profile.
    #[error("not a Quiver profile: {0}")]
    Json(#[from] serde_json::Error),
    /// The profile was written in a format this version does not read.
    #[error(
        "profile format_version {found} is not supported (this Quiver reads version {FORMAT_VERSION})"
    )]
    Version {
        /// The version found.
        found: u32,
    },
}

/// How a profile is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileOptions {
    /// Quantile bins per numeric feature before deduplication of equal edges (1 to
    /// [`MAX_BINS`]).
    pub bins: usize,
    /// Most frequent values kept per string or bool feature (1 to [`MAX_TOP_K`]).
    pub top_k: usize,
    /// Rows sampled per feature for quantile edges and top-value candidates; the edges and
    /// candidates are exact when a feature has no more non-null values than this.
    pub sample_size: usize,
}

/// The largest number of quantile bins.
pub const MAX_BINS: usize = 50;
/// The largest number of top values per categorical feature.
pub const MAX_TOP_K: usize = 1000;

impl Default for ProfileOptions {
    fn default() -> Self {
        ProfileOptions {
            bins: 10,
            top_k: 20,
            sample_size: 100_000,
        }
    }
}

impl ProfileOptions {
    /// Checks the ranges.
    pub fn check(&self) -> Result<(), ProfileError> {
        if !(1..=MAX_BINS).contains(&self.bins) {
            return Err(ProfileError::Options(format!(
                "bins is {}, expected 1 to {MAX_BINS}",
                self.bins
            )));
        }
        if !(1..=MAX_TOP_K).contains(&self.top_k) {
            return Err(ProfileError::Options(format!(
                "top_k is {}, expected 1 to {MAX_TOP_K}",
                self.top_k
            )));
        }
        if self.sample_size < self.bins {
            return Err(ProfileError::Options(format!(
                "sample_size is {}, expected at least bins ({})",
                self.sample_size, self.bins
            )));
        }
        Ok(())
    }
}

/// Where and when a profile was made. Kept apart from the content: the same data gives the same
/// content bytes ([`Profile::content_json`]) whenever it is profiled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Origin {
    /// What was profiled: `training set <file>` or `feature view <name> (<source path>)`.
    pub source: String,
    /// The window's start (RFC 3339), for a feature view's data.
    pub start: Option<String>,
    /// The window's end (RFC 3339), for a feature view's data.
    pub end: Option<String>,
    /// When the profile was computed (RFC 3339).
    pub created_at: String,
}

/// The profile of a set of features: a training set's feature columns, or a feature view's
/// fields over a time window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// Where and when it was made (not part of the deterministic content).
    pub origin: Origin,
    /// Rows profiled.
    pub rows: u64,
    /// The options it was computed with.
    pub options: ProfileOptions,
    /// One profile per feature, in column order.
    pub features: Vec<FeatureProfile>,
}

/// Everything in a profile but its origin, borrowed for serialization.
#[derive(Serialize)]
struct Content<'p> {
    format_version: u32,
    rows: u64,
    options: &'p ProfileOptions,
    features: &'p [FeatureProfile],
}

impl Profile {
    /// The profile as compact JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a profile serializes")
    }

    /// The profile as indented JSON, for people.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).expect("a profile serializes")
    }

    /// The content without the origin, as compact JSON: byte-identical for the same data and
    /// options, however it was read and whenever it was computed.
    pub fn content_json(&self) -> String {
        serde_json::to_string(&Content {
            format_version: self.format_version,
            rows: self.rows,
            options: &self.options,
            features: &self.features,
        })
        .expect("a profile serializes")
    }

    /// Reads a profile, refusing other format versions.
    pub fn from_json(text: &str) -> Result<Profile, ProfileError> {
        #[derive(Deserialize)]
        struct Version {
            format_version: u32,
        }
        let version: Version = serde_json::from_str(text)?;
        if version.format_version != FORMAT_VERSION {
            return Err(ProfileError::Version {
                found: version.format_version,
            });
        }
        Ok(serde_json::from_str(text)?)
    }

    /// The index of a feature, by column name or by `view:feature`. Resolve once, then use
    /// [`Profile::bin_of`] or the feature's own [`FeatureProfile::bin_of`].
    pub fn index_of(&self, feature: &str) -> Option<usize> {
        self.features
            .iter()
            .position(|f| f.name == feature || f.feature == feature)
    }

    /// The bin of feature `feature` (an index from [`Profile::index_of`]) a value falls in.
    ///
    /// # Panics
    /// If `feature` is out of range.
    pub fn bin_of(&self, feature: usize, value: &Value) -> usize {
        self.features[feature].bin_of(value)
    }
}

/// The profile of one feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureProfile {
    /// The column name (in a training set, as written: `feature` or `view__feature`).
    pub name: String,
    /// The feature as served: `view:feature`.
    pub feature: String,
    /// The declared type (`float64`, `list<string>`, ...).
    pub dtype: String,
    /// Non-null values (NaN counts as null).
    pub count: u64,
    /// Null values, NaN included.
    pub nulls: u64,
    /// Statistics and histogram.
    pub summary: Summary,
}

/// A feature's statistics and histogram, by kind of value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Summary {
    /// Numbers: `int*`, `float*`, `unix_timestamp` (microseconds).
    Numeric(NumericSummary),
    /// The length of each value: `list<...>` (items) and `bytes` (bytes).
    Length(NumericSummary),
    /// Strings and bools: the most frequent values.
    Categorical(CategoricalSummary),
}

/// Statistics and a histogram over quantile edges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumericSummary {
    /// Smallest finite value; `None` without finite values.
    pub min: Option<f64>,
    /// Largest finite value; `None` without finite values.
    pub max: Option<f64>,
    /// Mean of the finite values; `None` without finite values.
    pub mean: Option<f64>,
    /// Population standard deviation (divided by the count) of the finite values.
    pub std_dev: Option<f64>,
    /// NaN values (also counted in `nulls` and the null bin).
    pub nan: u64,
    /// ±∞ values (counted in the underflow and overflow bins, not in min, max, mean and
    /// std_dev).
    pub infinite: u64,
    /// Whether the edges come from a sample of the rows (else from every value).
    pub sampled: bool,
    /// The bin edges, strictly increasing, finite.
    pub edges: Vec<f64>,
    /// Values below the first edge.
    pub underflow: u64,
    /// Values per bin between edges (`max(edges - 1, 1)` bins, none without edges).
    pub bins: Vec<u64>,
    /// Values above the last edge (every non-null value when there are no edges).
    pub overflow: u64,
    /// Nulls and NaN.
    pub null: u64,
}

/// The most frequent values and the rest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "CategoricalRepr")]
pub struct CategoricalSummary {
    /// The most frequent values, most frequent first, ties by value (byte order).
    pub top: Vec<CategoryCount>,
    /// Non-null values not among `top`.
    pub other: u64,
    /// Nulls.
    pub null: u64,
    /// Whether the top values were chosen from a sample of the rows (their counts are exact).
    pub sampled: bool,
    #[serde(skip)]
    index: HashMap<String, usize>,
}

impl PartialEq for CategoricalSummary {
    fn eq(&self, other: &Self) -> bool {
        self.top == other.top
            && self.other == other.other
            && self.null == other.null
            && self.sampled == other.sampled
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CategoricalRepr {
    top: Vec<CategoryCount>,
    other: u64,
    null: u64,
    sampled: bool,
}

impl TryFrom<CategoricalRepr> for CategoricalSummary {
    type Error = String;

    fn try_from(r: CategoricalRepr) -> Result<Self, String> {
        let summary = CategoricalSummary::new(r.top, r.other, r.null, r.sampled);
        if summary.index.len() != summary.top.len() {
            return Err("a value appears twice in \"top\"".into());
        }
        Ok(summary)
    }
}

/// One of the most frequent values and its count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryCount {
    /// The value (`"true"` / `"false"` for bools).
    pub value: String,
    /// How many times it occurs.
    pub count: u64,
}

impl CategoricalSummary {
    /// A summary with its lookup index.
    pub fn new(top: Vec<CategoryCount>, other: u64, null: u64, sampled: bool) -> Self {
        let index = top
            .iter()
            .enumerate()
            .map(|(i, c)| (c.value.clone(), i))
            .collect();
        CategoricalSummary {
            top,
            other,
            null,
            sampled,
            index,
        }
    }

    /// The bin of a non-null value: its place in `top`, or the other bin.
    pub fn bin_of_str(&self, value: &str) -> usize {
        self.index.get(value).copied().unwrap_or(self.top.len())
    }

    /// The null bin.
    pub fn null_bin(&self) -> usize {
        self.top.len() + 1
    }
}

impl NumericSummary {
    /// Bins between edges: `max(edges - 1, 1)`, or none without edges.
    pub fn inner_bins(edges: &[f64]) -> usize {
        match edges.len() {
            0 => 0,
            n => (n - 1).max(1),
        }
    }

    /// The bin of a value that is not null and not NaN.
    pub fn bin_of_f64(&self, x: f64) -> usize {
        bin_of_edges(&self.edges, x)
    }

    /// The null bin.
    pub fn null_bin(&self) -> usize {
        Self::inner_bins(&self.edges) + 2
    }
}

/// The bin of `x` (not NaN) over `edges`: see the module documentation.
pub(crate) fn bin_of_edges(edges: &[f64], x: f64) -> usize {
    let inner = NumericSummary::inner_bins(edges);
    let (Some(&first), Some(&last)) = (edges.first(), edges.last()) else {
        return 1; // no edges: overflow
    };
    if x < first {
        0
    } else if x > last {
        inner + 1
    } else {
        // Edges <= x, at least 1; x == last falls in the last inner bin.
        edges.partition_point(|&e| e <= x).min(inner)
    }
}

impl FeatureProfile {
    /// The bin a value falls in, as the histogram was counted: no allocation, a binary search
    /// over the edges or one hash lookup. A null, a NaN, or a value of another type than the
    /// feature's (which serving never returns as present) falls in the null bin.
    pub fn bin_of(&self, value: &Value) -> usize {
        match &self.summary {
            Summary::Numeric(n) => match numeric_value(value) {
                Some(x) if !x.is_nan() => n.bin_of_f64(x),
                _ => n.null_bin(),
            },
            Summary::Length(n) => match value {
                Value::List(items) => n.bin_of_f64(items.len() as f64),
                Value::Bytes(b) => n.bin_of_f64(b.len() as f64),
                _ => n.null_bin(),
            },
            Summary::Categorical(c) => match value {
                Value::String(s) => c.bin_of_str(s),
                Value::Bool(b) => c.bin_of_str(bool_label(*b)),
                _ => c.null_bin(),
            },
        }
    }

    /// The number of bins, null bin included.
    pub fn bin_count(&self) -> usize {
        match &self.summary {
            Summary::Numeric(n) | Summary::Length(n) => n.null_bin() + 1,
            Summary::Categorical(c) => c.null_bin() + 1,
        }
    }

    /// The reference counts per bin, in bin order: what [`psi`](super::psi) and
    /// [`js_distance`](super::js_distance) compare served counts with.
    pub fn counts(&self) -> Vec<u64> {
        match &self.summary {
            Summary::Numeric(n) | Summary::Length(n) => {
                let mut out = Vec::with_capacity(n.bins.len() + 3);
                out.push(n.underflow);
                out.extend(&n.bins);
                out.push(n.overflow);
                out.push(n.null);
                out
            }
            Summary::Categorical(c) => {
                let mut out: Vec<u64> = c.top.iter().map(|t| t.count).collect();
                out.push(c.other);
                out.push(c.null);
                out
            }
        }
    }

    /// A readable name for a bin: `< 1.5`, `[1.5, 2)`, `> 9`, `null`, a value, `other`.
    pub fn bin_label(&self, bin: usize) -> String {
        match &self.summary {
            Summary::Numeric(n) | Summary::Length(n) => {
                let inner = NumericSummary::inner_bins(&n.edges);
                let e = &n.edges;
                if bin == n.null_bin() {
                    "null".into()
                } else if e.is_empty() {
                    "non-null".into()
                } else if bin == 0 {
                    format!("< {}", e[0])
                } else if bin == inner + 1 {
                    format!("> {}", e[e.len() - 1])
                } else if e.len() == 1 {
                    format!("[{0}, {0}]", e[0])
                } else if bin == inner {
                    format!("[{}, {}]", e[bin - 1], e[bin])
                } else {
                    format!("[{}, {})", e[bin - 1], e[bin])
                }
            }
            Summary::Categorical(c) => match c.top.get(bin) {
                Some(t) => t.value.clone(),
                None if bin == c.top.len() => "other".into(),
                None => "null".into(),
            },
        }
    }
}

/// The label of a bool value.
pub(crate) fn bool_label(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

/// A number as profiled: integers and timestamps as f64, -0.0 as 0.0.
fn numeric_value(value: &Value) -> Option<f64> {
    let x = match value {
        Value::Int(i) => *i as f64,
        Value::Float32(f) => f64::from(*f),
        Value::Float64(f) => *f,
        _ => return None,
    };
    Some(x + 0.0)
}
