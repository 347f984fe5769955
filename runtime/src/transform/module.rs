//! A compiled, checked transform module and its calls.

use std::time::SystemTime;

use quiver_abi::{IMPORT_MODULE, Signature, exports, imports};
use wasmtime::{ExternType, FuncType, InstancePre, Module, Store, Trap};

use super::engine::{CallState, TransformEngine, deadline_ticks};
use super::{Limits, TransformError, codec};
use crate::registry::Field;
use crate::types::Value;

/// A transform module, compiled and checked, ready to be called. Shared as `Arc<LoadedModule>`:
/// a call keeps the version it started with even if the catalog swaps in a new one.
pub struct LoadedModule {
    /// The module's name (its file name without `.wasm`).
    pub name: String,
    /// SHA-256 of the module's bytes, lowercase hex.
    pub sha256: String,
    /// When it was loaded.
    pub loaded_at: SystemTime,
    engine: TransformEngine,
    /// Imports resolved and type-checked once, so each call only instantiates.
    pre: InstancePre<CallState>,
}

impl std::fmt::Debug for LoadedModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModule")
            .field("name", &self.name)
            .field("sha256", &self.sha256)
            .field("loaded_at", &self.loaded_at)
            .finish_non_exhaustive()
    }
}

/// Why a call stopped, before it is turned into a [`TransformError`].
enum Failure {
    /// Instantiation or a guest call failed; classified from the store's state.
    Wasm(wasmtime::Error),
    /// Already classified.
    Transform(TransformError),
}

impl From<wasmtime::Error> for Failure {
    fn from(e: wasmtime::Error) -> Self {
        Failure::Wasm(e)
    }
}

impl LoadedModule {
    pub(crate) fn new(
        name: String,
        sha256: String,
        loaded_at: SystemTime,
        engine: TransformEngine,
        pre: InstancePre<CallState>,
    ) -> Self {
        LoadedModule {
            name,
            sha256,
            loaded_at,
            engine,
            pre,
        }
    }

    /// Runs the transform over `rows`.
    ///
    /// `input_names` name the columns of every input row; returns one row per input row, values
    /// in the order of `output` fields, each checked against its field's type.
    ///
    /// Every call gets a fresh instance in a fresh `Store`: no state survives from one call (or
    /// one user's request) to the next, a trap or a limit hit leaves nothing poisoned behind, and
    /// memory grown by one call is returned at its end. With the instance pre-linked (and pooled
    /// slots with copy-on-write memory images), instantiating costs microseconds, far below the
    /// encoding of the rows.
    pub fn call(
        &self,
        input_names: &[&str],
        rows: &[Vec<Value>],
        output: &[Field],
        limits: &Limits,
    ) -> Result<Vec<Vec<Value>>, TransformError> {
        if let Some((i, row)) = rows
            .iter()
            .enumerate()
            .find(|(_, r)| r.len() != input_names.len())
        {
            return Err(TransformError::InvalidInput {
                module: self.name.clone(),
                message: format!(
                    "row {i} has {} values for {} input names",
                    row.len(),
                    input_names.len()
                ),
            });
        }
        if u32::try_from(rows.len()).is_err() || u32::try_from(input_names.len()).is_err() {
            return Err(TransformError::InvalidInput {
                module: self.name.clone(),
                message: "too many rows or columns for one call".into(),
            });
        }
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let input = codec::encode_rows(input_names, rows);

        let mut store = Store::new(self.engine.wasm(), CallState::new(limits.max_memory_bytes));
        store.limiter(|state| state);
        // The deadline covers instantiation (a start function) and the call.
        store.set_epoch_deadline(deadline_ticks(limits.timeout));
        match self.run(&mut store, &input, rows.len(), output, limits) {
            Ok(rows) => Ok(rows),
            Err(Failure::Transform(e)) => Err(e),
            Err(Failure::Wasm(e)) => Err(self.classify(e, store.data(), limits)),
        }
    }

    /// Instantiates the module in a fresh `Store`, exactly as every [`LoadedModule::call`] starts,
    /// and drops it: lets benchmarks time instantiation apart from a whole call.
    pub fn instantiate(&self, limits: &Limits) -> Result<(), TransformError> {
        let mut store = Store::new(self.engine.wasm(), CallState::new(limits.max_memory_bytes));
        store.limiter(|state| state);
        store.set_epoch_deadline(deadline_ticks(limits.timeout));
        match self.pre.instantiate(&mut store) {
            Ok(_) => Ok(()),
            Err(e) => Err(self.classify(e, store.data(), limits)),
        }
    }

    fn run(
        &self,
        store: &mut Store<CallState>,
        input: &[u8],
        expected_rows: usize,
        output: &[Field],
        limits: &Limits,
    ) -> Result<Vec<Vec<Value>>, Failure> {
        let instance = self.pre.instantiate(&mut *store)?;
        // Presence and types were checked at load; these lookups cannot fail for a loaded module.
        let memory = instance
            .get_memory(&mut *store, exports::MEMORY)
            .ok_or_else(|| self.bad_output("the module has no exported memory"))?;
        let alloc = instance.get_typed_func::<i32, i32>(&mut *store, exports::ALLOC)?;
        let transform =
            instance.get_typed_func::<(i32, i32), i64>(&mut *store, exports::TRANSFORM)?;

        let Ok(len) = i32::try_from(input.len()) else {
            return Err(Failure::Transform(TransformError::OutOfMemory {
                module: self.name.clone(),
                limit_bytes: limits.max_memory_bytes,
            }));
        };
        let ptr = alloc.call(&mut *store, len)?;
        memory
            .write(&mut *store, ptr as u32 as usize, input)
            .map_err(|_| {
                self.bad_output(format!(
                    "{}({len}) returned {ptr}, outside the module's memory",
                    exports::ALLOC
                ))
            })?;
        let (out_ptr, out_len) =
            quiver_abi::unpack_output(transform.call(&mut *store, (ptr, len))?);
        let (out_ptr, out_len) = (out_ptr as usize, out_len as usize);
        let bytes = out_ptr
            .checked_add(out_len)
            .and_then(|end| memory.data(&*store).get(out_ptr..end))
            .ok_or_else(|| {
                self.bad_output(format!(
                    "output buffer {out_ptr}+{out_len} is outside the module's memory"
                ))
            })?;
        codec::decode_rows(&self.name, bytes, expected_rows, output).map_err(Failure::Transform)
    }

    fn bad_output(&self, message: impl Into<String>) -> Failure {
        Failure::Transform(TransformError::BadOutput {
            module: self.name.clone(),
            message: message.into(),
        })
    }

    /// Turns a failed instantiation or guest call into the error that says why.
    fn classify(&self, e: wasmtime::Error, state: &CallState, limits: &Limits) -> TransformError {
        let module = self.name.clone();
        if let Some(message) = &state.guest_error {
            return TransformError::Guest {
                module,
                message: message.clone(),
            };
        }
        if state.memory_exceeded {
            return TransformError::OutOfMemory {
                module,
                limit_bytes: limits.max_memory_bytes,
            };
        }
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => TransformError::Timeout {
                module,
                limit: limits.timeout,
            },
            Some(trap) => TransformError::Trap {
                module,
                message: format!("{trap}; {e:#}"),
            },
            None => TransformError::Trap {
                module,
                message: format!("{e:#}"),
            },
        }
    }
}

/// Rejects every import but Quiver's host functions of the current ABI version. An import
/// from another ABI version is reported as such, before anything else.
pub(crate) fn check_imports(name: &str, module: &Module) -> Result<(), TransformError> {
    for import in module.imports() {
        let from = import.module();
        if quiver_abi::abi_version_of(from).is_some() && from != IMPORT_MODULE {
            return Err(TransformError::AbiMismatch {
                module: name.to_owned(),
                found: from.to_owned(),
                expected: IMPORT_MODULE.to_owned(),
            });
        }
    }
    for import in module.imports() {
        let allowed = import.module() == IMPORT_MODULE
            && imports::FUNCTIONS.iter().any(|f| f.name == import.name())
            && matches!(import.ty(), ExternType::Func(_));
        if !allowed {
            return Err(TransformError::ForbiddenImport {
                module: name.to_owned(),
                import: format!("{}::{}", import.module(), import.name()),
            });
        }
    }
    Ok(())
}

/// Checks that the ABI's exports are present with the right types.
pub(crate) fn check_exports(name: &str, module: &Module) -> Result<(), TransformError> {
    let invalid = |message: String| TransformError::InvalidModule {
        module: name.to_owned(),
        message,
    };
    let memory = exports::MEMORY;
    match module.get_export(memory) {
        Some(ExternType::Memory(m)) if !m.is_64() && !m.is_shared() => {}
        Some(_) => {
            return Err(invalid(format!(
                "export `{memory}` must be a 32-bit, unshared linear memory"
            )));
        }
        None => return Err(invalid(format!("missing export `{memory}`"))),
    }
    for function in exports::FUNCTIONS {
        let (export, expected) = (function.name, &function.signature);
        match module.get_export(export) {
            Some(ExternType::Func(f)) if has_signature(&f, expected) => {}
            Some(ExternType::Func(f)) => {
                return Err(invalid(format!(
                    "export `{export}` has type {}, expected {expected}",
                    signature(&f)
                )));
            }
            Some(_) => return Err(invalid(format!("export `{export}` is not a function"))),
            None => {
                return Err(invalid(format!(
                    "missing export `{export}` (is the transform marked #[transform]?)"
                )));
            }
        }
    }
    Ok(())
}

/// Whether a function type is exactly the ABI's signature.
fn has_signature(f: &FuncType, expected: &Signature) -> bool {
    let is = |t: wasmtime::ValType, e: &quiver_abi::ValType| match e {
        quiver_abi::ValType::I32 => t.is_i32(),
        quiver_abi::ValType::I64 => t.is_i64(),
    };
    f.params().len() == expected.params.len()
        && f.results().len() == expected.results.len()
        && f.params().zip(expected.params).all(|(t, e)| is(t, e))
        && f.results().zip(expected.results).all(|(t, e)| is(t, e))
}

/// A function type as `(i32, i32) -> (i64)`, as [`Signature`] displays.
fn signature(f: &FuncType) -> String {
    let list = |types: Vec<String>| types.join(", ");
    format!(
        "({}) -> ({})",
        list(f.params().map(|t| t.to_string()).collect()),
        list(f.results().map(|t| t.to_string()).collect())
    )
}
