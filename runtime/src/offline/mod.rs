//! The offline side: Parquet sources, materialization of their latest values into the online
//! store, training sets, and profiles of offline data.

pub mod check;
pub mod columns;
pub mod feature_log;
pub mod historical;
pub mod materialize;
pub mod profile;
pub mod push_writer;
pub mod source;

/// Errors reading offline data. Each names the file and, where it applies, the column.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// A source path, file or directory cannot be read.
    #[error("{path}: {message}")]
    Source {
        /// The file, path or URL.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A column the view needs is not in the file.
    #[error("{file}: missing column \"{column}\"")]
    MissingColumn {
        /// The file (a path or URL).
        file: String,
        /// The column.
        column: String,
    },
    /// A column cannot be read as its declared type.
    #[error("{file}: column \"{column}\" {message}")]
    ColumnType {
        /// The file (a path or URL).
        file: String,
        /// The column.
        column: String,
        /// What was found.
        message: String,
    },
    /// Writing to the online store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// An on-demand view's transform could not be loaded or failed.
    #[error("on-demand view \"{view}\": {source}")]
    Transform {
        /// The on-demand view.
        view: String,
        /// What the transform engine reported.
        source: crate::transform::TransformError,
    },
    /// The write-ahead log of pushed rows cannot be written or replayed.
    #[error(transparent)]
    Wal(#[from] push_writer::wal::WalError),
    /// A profile cannot be computed or read.
    #[error(transparent)]
    Profile(#[from] crate::monitoring::ProfileError),
    /// Any other failure (bad arguments, I/O on outputs).
    #[error("{0}")]
    Other(String),
}

impl From<crate::storage::StorageError> for OfflineError {
    fn from(e: crate::storage::StorageError) -> Self {
        OfflineError::Source {
            path: e.location,
            message: e.message,
        }
    }
}
