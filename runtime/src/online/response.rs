//! The typed response: one column of cells per requested feature, in request order.

use std::borrow::Cow;
use std::sync::Arc;

use crate::registry::FeatureStatus;
use crate::store::FeatureRow;
use crate::types::{EpochMicros, Value, ValueType};

/// The features of a lookup, one column per requested feature, one cell per entity row. The
/// entity columns themselves are the caller's: transports echo those `echoed` marks, as sent.
pub struct OnlineResponse<'p> {
    /// Per entity column of the request, in request order: whether the response echoes it (join
    /// keys are echoed; request fields of on-demand views are inputs only, as in Feast).
    pub echoed: Vec<bool>,
    /// Feature columns, in request order.
    pub features: Vec<FeatureColumn<'p>>,
    /// The lookup's id in the feature log, when its feature service logs (returned to clients
    /// so they can join their labels to the logged rows).
    pub request_id: Option<Arc<str>>,
}

/// One feature column of the response.
pub struct FeatureColumn<'p> {
    /// Output name: `feature`, or `view__feature` with full feature names.
    pub name: Cow<'p, str>,
    /// Declared type (for rendering).
    pub dtype: ValueType,
    /// One cell per entity row.
    pub cells: Vec<Cell>,
    /// For on-demand features: the transform's output rows, shared by the view's columns.
    pub computed: Option<Arc<Vec<Vec<Value>>>>,
}

impl FeatureColumn<'_> {
    /// The value served in row `row`: `None` unless its status is PRESENT.
    pub fn value(&self, row: usize) -> Option<&Value> {
        let cell = &self.cells[row];
        if cell.status != FeatureStatus::Present {
            return None;
        }
        match &cell.row {
            Some(stored) => stored.values.get(cell.index),
            None => self
                .computed
                .as_ref()
                .and_then(|c| c.get(row))
                .and_then(|values| values.get(cell.index)),
        }
    }
}

/// One response cell. Values are not copied out of the stored rows: a cell points at its row.
#[derive(Clone)]
pub struct Cell {
    /// The stored row the value comes from; `None` for NOT_FOUND and for on-demand features.
    pub row: Option<Arc<FeatureRow>>,
    /// Index into `row.values` (or into the computed row for on-demand features).
    pub index: usize,
    /// Status.
    pub status: FeatureStatus,
    /// Event timestamp reported (0 when there is none).
    pub event_ts: EpochMicros,
}
