//! On-demand transforms: WebAssembly modules built with `quiver-sdk`, run in a sandbox.
//!
//! - [`TransformEngine`] compiles modules ([`TransformEngine::load`]) into [`LoadedModule`]s.
//! - [`LoadedModule::call`] runs a batch of rows under [`Limits`] (time and memory).
//! - [`ModuleCatalog`] holds the loaded modules of a directory and hot-reloads them.
//!
//! The guest ABI is described in `docs/wasm-abi.md` and defined, for the SDK and this host alike,
//! by the `quiver-abi` crate. A module may import nothing but Quiver's own host functions (no
//! WASI, no clock, no I/O), so a transform is a pure function of its inputs.

pub mod catalog;
mod codec;
mod engine;
mod module;

use std::time::Duration;

use thiserror::Error;

pub use catalog::{CatalogError, CatalogWatcher, ModuleCatalog, ModuleInfo, RejectHook};
pub use engine::TransformEngine;
pub use module::LoadedModule;

/// Limits on one call of a transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock limit on the call (instantiation included).
    pub timeout: Duration,
    /// Limit on the module's linear memory, in bytes.
    pub max_memory_bytes: usize,
}

impl Limits {
    /// The limits of an on-demand view.
    pub fn of_view(view: &crate::registry::OnDemandView) -> Self {
        Limits {
            timeout: view.timeout,
            max_memory_bytes: view.max_memory_bytes,
        }
    }
}

/// Why a transform could not be loaded or a call failed. `module` is always the module's name.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum TransformError {
    /// The module trapped (e.g. `unreachable`, out-of-bounds access, stack overflow).
    #[error("transform {module}: trapped: {message}")]
    Trap {
        /// Module name.
        module: String,
        /// The trap and where it happened.
        message: String,
    },
    /// The call ran longer than its time limit.
    #[error("transform {module}: timed out after {limit:?}")]
    Timeout {
        /// Module name.
        module: String,
        /// The limit that was exceeded.
        limit: Duration,
    },
    /// The module tried to grow its memory past the limit.
    #[error("transform {module}: out of memory (limit {limit_bytes} bytes)")]
    OutOfMemory {
        /// Module name.
        module: String,
        /// The limit that was exceeded.
        limit_bytes: usize,
    },
    /// The module was built against another ABI version: it imports from another version's
    /// module than [`quiver_abi::IMPORT_MODULE`].
    #[error(
        "transform {module}: built against ABI {found}, this Quiver speaks {expected}; rebuild it with a matching quiver-sdk"
    )]
    AbiMismatch {
        /// Module name.
        module: String,
        /// The ABI import module the module uses.
        found: String,
        /// The ABI import module this host provides.
        expected: String,
    },
    /// The module imports something other than Quiver's host functions (WASI, say).
    #[error(
        "transform {module}: imports {import}, which transforms may not use (only {abi} host functions are provided)",
        abi = quiver_abi::IMPORT_MODULE
    )]
    ForbiddenImport {
        /// Module name.
        module: String,
        /// `module::name` of the import.
        import: String,
    },
    /// Not WebAssembly, fails to compile, or lacks the ABI's exports.
    #[error("transform {module}: invalid module: {message}")]
    InvalidModule {
        /// Module name.
        module: String,
        /// What is wrong.
        message: String,
    },
    /// The output is not a MessagePack array of maps with one map per input row.
    #[error("transform {module}: bad output: {message}")]
    BadOutput {
        /// Module name.
        module: String,
        /// What is wrong.
        message: String,
    },
    /// An output row does not match the declared output fields.
    #[error("transform {module}: output field {field}: {message}")]
    SchemaMismatch {
        /// Module name.
        module: String,
        /// The field concerned.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The transform reported an error itself (e.g. an input row that does not fit its input
    /// type, or a panic).
    #[error("transform {module}: {message}")]
    Guest {
        /// Module name.
        module: String,
        /// The transform's message.
        message: String,
    },
    /// The WebAssembly engine itself could not be set up (not about any one module).
    #[error("cannot set up the WebAssembly engine: {message}")]
    Engine {
        /// What failed.
        message: String,
    },
    /// The caller passed rows that do not match `input_names` (a bug in the caller).
    #[error("transform {module}: invalid input: {message}")]
    InvalidInput {
        /// Module name.
        module: String,
        /// What is wrong.
        message: String,
    },
}

impl TransformError {
    /// The name of the module concerned (`None` for [`TransformError::Engine`]).
    pub fn module(&self) -> Option<&str> {
        Some(match self {
            TransformError::Trap { module, .. }
            | TransformError::Timeout { module, .. }
            | TransformError::OutOfMemory { module, .. }
            | TransformError::AbiMismatch { module, .. }
            | TransformError::ForbiddenImport { module, .. }
            | TransformError::InvalidModule { module, .. }
            | TransformError::BadOutput { module, .. }
            | TransformError::SchemaMismatch { module, .. }
            | TransformError::Guest { module, .. }
            | TransformError::InvalidInput { module, .. } => module,
            TransformError::Engine { .. } => return None,
        })
    }
}
