//! On-demand transforms: WebAssembly modules built with `quiver-sdk`, run in a sandbox.
//!
//! - [`TransformEngine`] compiles modules ([`TransformEngine::load`]) into [`LoadedModule`]s.
//! - [`LoadedModule::call`] runs a batch of rows under [`Limits`] (fuel, memory, and a wall-clock
//!   backstop); [`LoadedModule::call_isolating`] retries a failed batch row by row, so only the
//!   rows that fail alone fail.
//! - [`ModuleCatalog`] holds the loaded modules of a directory and hot-reloads them, after a trial
//!   call, under [`LoadLimits`].
//!
//! The guest ABI is described in `docs/wasm-abi.md` and defined, for the SDK and this host alike,
//! by the `quiver-abi` crate. A module may import nothing but Quiver's own host functions (no
//! WASI, no clock, no I/O), so a transform is a pure function of its inputs.

pub mod catalog;
mod codec;
mod engine;
mod module;
pub mod ratelimit;

use std::time::Duration;

use thiserror::Error;

pub use catalog::{CatalogError, LoadLimits, ModuleCatalog, ModuleInfo, RejectHook};
pub use engine::TransformEngine;
pub use module::{ISOLATION_SPARE_ROWS, LoadedModule, RowResults};

/// Default fuel of a call whatever its rows (instantiation, allocator set-up, framing).
pub const DEFAULT_FUEL_PER_CALL: u64 = 1_000_000;
/// Default fuel added per input row.
pub const DEFAULT_FUEL_PER_ROW: u64 = 200_000;
/// Default wall-clock backstop of one call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default largest module file accepted.
pub const DEFAULT_MAX_MODULE_BYTES: u64 = 16 << 20;
/// Default most functions a module may define.
pub const DEFAULT_MAX_FUNCTIONS: u32 = 10_000;
/// Default longest time a module may take to compile and pass its trial.
pub const DEFAULT_LOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Limits on one call of a transform.
///
/// The limit that decides pass or fail is fuel (WebAssembly instructions executed): a call of `n`
/// rows gets `fuel_per_call + fuel_per_row × n`, the same on every machine at every load. The
/// wall-clock `timeout` is only a backstop for the host's own sake and should never be reached by
/// a call that fits its fuel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Fuel of a call whatever its rows.
    pub fuel_per_call: u64,
    /// Fuel added per input row.
    pub fuel_per_row: u64,
    /// Wall-clock backstop on the call (instantiation included).
    pub timeout: Duration,
    /// Limit on the module's linear memory, in bytes.
    pub max_memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel_per_call: DEFAULT_FUEL_PER_CALL,
            fuel_per_row: DEFAULT_FUEL_PER_ROW,
            timeout: DEFAULT_TIMEOUT,
            max_memory_bytes: 64 << 20,
        }
    }
}

impl Limits {
    /// The limits of an on-demand view.
    pub fn of_view(view: &crate::registry::OnDemandView) -> Self {
        Limits {
            fuel_per_call: view.fuel_per_call,
            fuel_per_row: view.fuel_per_row,
            timeout: view.timeout,
            max_memory_bytes: view.max_memory_bytes,
        }
    }

    /// The fuel of a call of `rows` rows: `fuel_per_call + fuel_per_row × rows`, saturating.
    pub fn fuel_for(&self, rows: usize) -> u64 {
        self.fuel_per_row
            .saturating_mul(rows as u64)
            .saturating_add(self.fuel_per_call)
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
    /// The call executed more instructions than its fuel allows (see [`Limits`]). Deterministic:
    /// the same call fails the same way on any machine, at any load.
    #[error("transform {module}: out of fuel (limit {limit} instructions)")]
    OutOfFuel {
        /// Module name.
        module: String,
        /// The fuel the call had.
        limit: u64,
    },
    /// The call ran longer than its wall-clock backstop (a host under extreme load; a call that
    /// runs away is stopped by its fuel first).
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
    /// The module was not accepted by the catalog: too large, too slow to compile, or it failed
    /// its trial call.
    #[error("transform {module}: rejected: {message}")]
    Rejected {
        /// Module name.
        module: String,
        /// Why.
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
            | TransformError::OutOfFuel { module, .. }
            | TransformError::Timeout { module, .. }
            | TransformError::OutOfMemory { module, .. }
            | TransformError::AbiMismatch { module, .. }
            | TransformError::ForbiddenImport { module, .. }
            | TransformError::InvalidModule { module, .. }
            | TransformError::BadOutput { module, .. }
            | TransformError::SchemaMismatch { module, .. }
            | TransformError::Guest { module, .. }
            | TransformError::Rejected { module, .. }
            | TransformError::InvalidInput { module, .. } => module,
            TransformError::Engine { .. } => return None,
        })
    }

    /// A short, bounded label for metrics (`trap`, `out_of_fuel`, ...).
    pub fn outcome(&self) -> &'static str {
        match self {
            TransformError::Trap { .. } => "trap",
            TransformError::OutOfFuel { .. } => "out_of_fuel",
            TransformError::Timeout { .. } => "timeout",
            TransformError::OutOfMemory { .. } => "out_of_memory",
            TransformError::SchemaMismatch { .. } => "schema_mismatch",
            TransformError::BadOutput { .. } => "bad_output",
            TransformError::Guest { .. } => "guest_error",
            _ => "error",
        }
    }
}
