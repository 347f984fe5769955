//! Why a lookup failed. Transports map each kind to their own codes (HTTP: `serving::error`).

use crate::store::StoreError;

/// A failed lookup. Every message names the offending field, feature, view or value.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The request is malformed: missing or conflicting fields, unequal column lengths, a missing
    /// join key or request field, a duplicated output name.
    #[error("{0}")]
    InvalidRequest(String),
    /// An unknown feature view, feature or feature service.
    #[error("{0}")]
    NotFound(String),
    /// A well-formed request with a value of the wrong type.
    #[error("{0}")]
    InvalidEntity(String),
    /// More entity rows than `server.max_entities`.
    #[error("{0}")]
    TooLarge(String),
    /// The online store failed or could not be reached.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An on-demand view's transform module is not loaded.
    #[error("{0}")]
    TransformUnavailable(String),
    /// An on-demand view's transform failed for the whole request.
    #[error("{message}")]
    TransformFailed {
        /// What failed, naming the view.
        message: String,
        /// Whether it ran out of time (as opposed to trapping or returning bad output).
        timed_out: bool,
    },
}
