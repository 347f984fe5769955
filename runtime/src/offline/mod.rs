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

use std::path::PathBuf;

/// Errors reading offline data. Each names the file and, where it applies, the column.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// A source path, file or directory cannot be read.
    #[error("{}: {message}", path.display())]
    Source {
        /// The file or path.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A column the view needs is not in the file.
    #[error("{}: missing column \"{column}\"", file.display())]
    MissingColumn {
        /// The file.
        file: PathBuf,
        /// The column.
        column: String,
    },
    /// A column cannot be read as its declared type.
    #[error("{}: column \"{column}\" {message}", file.display())]
    ColumnType {
        /// The file.
        file: PathBuf,
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
