//! A compiled, checked transform module and its calls.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

use quiver_abi::{IMPORT_MODULE, Signature, exports, imports};
use wasmtime::{ExternType, FuncType, InstancePre, Module, ModuleExport, Store, Trap};

use super::engine::{CallState, TransformEngine, deadline_ticks};
use super::{Limits, TransformError, codec};
use crate::registry::Field;
use crate::types::Value;

/// Rows kept per sample.
const SAMPLE_ROWS: usize = 8;
/// Samples kept per module (one per view calling it).
const MAX_SAMPLES: usize = 4;
/// Single-row calls' worth of fuel that isolating a failed batch may spend beyond the batch's own.
pub const ISOLATION_SPARE_ROWS: u64 = 16;
/// A module records a sample at most this often.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// The outcome of [`LoadedModule::call_isolating`].
#[derive(Debug, Default)]
pub struct RowResults {
    /// One entry per input row: its output values (in output-field order), or why it failed.
    pub rows: Vec<Result<Vec<Value>, TransformError>>,
    /// Why the batch call failed, when the rows had to be retried one by one.
    pub batch_error: Option<TransformError>,
}

impl RowResults {
    /// How many rows failed.
    pub fn failed(&self) -> usize {
        self.rows.iter().filter(|r| r.is_err()).count()
    }
}

/// Inputs a version ran without error, kept to try its successor on.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    pub(crate) input_names: Vec<String>,
    pub(crate) rows: Vec<Vec<Value>>,
    pub(crate) output: Vec<Field>,
    pub(crate) limits: Limits,
}

#[derive(Default)]
struct Samples {
    entries: Vec<Sample>,
    recorded_at: Option<Instant>,
}

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
    /// The ABI's exports, resolved once, so a call finds them without string lookups.
    abi_exports: AbiExports,
    /// Guards the recorded samples: written at most once a second with `try_lock`, read on
    /// reload, so calls never wait on it.
    samples: Mutex<Samples>,
    /// The most fuel per row any [`LoadedModule::call_isolating`] of this version has spent
    /// (retries included; 0 before the first call). It only guides where a call runs
    /// ([`LoadedModule::expected_fuel`]), never what it may spend; relaxed ordering is enough.
    most_fuel_per_row: AtomicU64,
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

/// Indices of the exports every call uses.
struct AbiExports {
    memory: ModuleExport,
    alloc: ModuleExport,
    transform: ModuleExport,
}

impl AbiExports {
    /// The ABI's exports of `module`; `None` when one is missing (modules are checked before).
    fn of(module: &Module) -> Option<Self> {
        Some(AbiExports {
            memory: module.get_export_index(exports::MEMORY)?,
            alloc: module.get_export_index(exports::ALLOC)?,
            transform: module.get_export_index(exports::TRANSFORM)?,
        })
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
    /// `pre` must be of a module that passed [`check_exports`].
    pub(crate) fn new(
        name: String,
        sha256: String,
        loaded_at: SystemTime,
        engine: TransformEngine,
        pre: InstancePre<CallState>,
    ) -> Result<Self, TransformError> {
        let abi_exports =
            AbiExports::of(pre.module()).ok_or_else(|| TransformError::InvalidModule {
                module: name.clone(),
                message: "missing an export of the ABI".into(),
            })?;
        Ok(LoadedModule {
            name,
            sha256,
            loaded_at,
            engine,
            pre,
            abi_exports,
            samples: Mutex::new(Samples::default()),
            most_fuel_per_row: AtomicU64::new(0),
        })
    }

    /// Runs the transform over `rows`, as one call: any failure fails the whole batch.
    ///
    /// `input_names` name the columns of every input row; returns one row per input row, values
    /// in the order of `output` fields, each checked against its field's type. The call gets
    /// [`Limits::fuel_for`] `rows.len()` fuel.
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
        self.check_input(input_names, rows)?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let (result, _) = self.run_call(
            input_names,
            rows,
            Some(output),
            limits,
            limits.fuel_for(rows.len()),
        );
        if result.is_ok() {
            self.maybe_record_sample(input_names, rows, output, limits);
        }
        result
    }

    /// Runs the transform over `rows` so that only the rows that fail, fail.
    ///
    /// One call over the batch first. If it fails (trap, out of fuel or memory, guest error, bad
    /// output), every row is called again on its own, with [`Limits::fuel_for`] one row, and gets
    /// that call's result: a row fails exactly when it fails alone, whatever batch it came in.
    /// The retries of one batch together get at most the batch's own fuel plus that of
    /// [`ISOLATION_SPARE_ROWS`] single-row calls; rows left when it is spent fail with
    /// [`TransformError::OutOfFuel`] without running. So a module that runs away on every row
    /// costs a bounded multiple of its batch budget, and a batch with fewer runaway rows than
    /// that (the case that matters) has every row judged on its own. Only an invalid input (a
    /// caller bug) fails the whole call.
    pub fn call_isolating(
        &self,
        input_names: &[&str],
        rows: &[Vec<Value>],
        output: &[Field],
        limits: &Limits,
    ) -> Result<RowResults, TransformError> {
        self.check_input(input_names, rows)?;
        if rows.is_empty() {
            return Ok(RowResults::default());
        }
        let batch_fuel = limits.fuel_for(rows.len());
        let (result, batch_spent) =
            self.run_call(input_names, rows, Some(output), limits, batch_fuel);
        let mut spent = batch_spent;
        let batch_error = match result {
            Ok(out) => {
                self.note_fuel_spent(spent, rows.len());
                self.maybe_record_sample(input_names, rows, output, limits);
                return Ok(RowResults {
                    rows: out.into_iter().map(Ok).collect(),
                    batch_error: None,
                });
            }
            Err(e) => e,
        };
        if rows.len() == 1 {
            self.note_fuel_spent(spent, 1);
            return Ok(RowResults {
                rows: vec![Err(batch_error.clone())],
                batch_error: Some(batch_error),
            });
        }
        let solo_fuel = limits.fuel_for(1);
        let mut left = solo_fuel
            .saturating_mul(ISOLATION_SPARE_ROWS)
            .saturating_add(batch_fuel);
        let mut results = Vec::with_capacity(rows.len());
        for row in rows {
            if left < solo_fuel {
                results.push(Err(TransformError::OutOfFuel {
                    module: self.name.clone(),
                    limit: solo_fuel,
                }));
                continue;
            }
            let (result, row_spent) = self.run_call(
                input_names,
                std::slice::from_ref(row),
                Some(output),
                limits,
                solo_fuel,
            );
            left = left.saturating_sub(row_spent);
            spent = spent.saturating_add(row_spent);
            results.push(result.map(|mut out| out.pop().expect("one output row per input row")));
        }
        self.note_fuel_spent(spent, rows.len());
        Ok(RowResults {
            rows: results,
            batch_error: Some(batch_error),
        })
    }

    /// The most fuel [`LoadedModule::call_isolating`] can spend on `rows` rows: the batch call,
    /// plus, when it fails and there is more than one row, the retries' budget.
    pub fn isolating_fuel_bound(limits: &Limits, rows: usize) -> u64 {
        let batch = limits.fuel_for(rows);
        if rows <= 1 {
            return batch;
        }
        limits
            .fuel_for(1)
            .saturating_mul(ISOLATION_SPARE_ROWS)
            .saturating_add(batch)
            .saturating_add(batch)
    }

    /// The fuel a [`LoadedModule::call_isolating`] over `rows` rows is expected to spend: the
    /// most per row this version has spent so far, times `rows`; before its first call, the most
    /// the call may spend ([`LoadedModule::isolating_fuel_bound`]). Callers use it to decide where
    /// to run a call (a cheap one on the current thread); limits are never derived from it, so
    /// outcomes do not depend on a process's history.
    pub fn expected_fuel(&self, limits: &Limits, rows: usize) -> u64 {
        let bound = Self::isolating_fuel_bound(limits, rows);
        match self.most_fuel_per_row.load(Ordering::Relaxed) {
            0 => bound,
            per_row => per_row.saturating_mul(rows as u64).min(bound),
        }
    }

    fn note_fuel_spent(&self, spent: u64, rows: usize) {
        let per_row = spent.div_ceil(rows.max(1) as u64).max(1);
        self.most_fuel_per_row.fetch_max(per_row, Ordering::Relaxed);
    }

    /// Calls the module with an empty batch and checks only that it runs to completion (no trap,
    /// no limit hit, no guest error): the catalog's first trial of a new module, before any view
    /// schema is at hand.
    pub fn call_empty(&self, limits: &Limits) -> Result<(), TransformError> {
        self.run_call(&[], &[], None, limits, limits.fuel_for(0))
            .0
            .map(drop)
    }

    /// Instantiates the module in a fresh `Store`, exactly as every [`LoadedModule::call`] starts,
    /// and drops it: lets benchmarks time instantiation apart from a whole call.
    pub fn instantiate(&self, limits: &Limits) -> Result<(), TransformError> {
        let mut store = self.store(limits, limits.fuel_for(0));
        match self.pre.instantiate(&mut store) {
            Ok(_) => Ok(()),
            Err(e) => Err(self.classify(e, store.data(), limits, limits.fuel_for(0))),
        }
    }

    /// Recent inputs that this version ran without error (a few rows per view), to try a new
    /// version on before it replaces this one.
    pub(crate) fn samples(&self) -> Vec<Sample> {
        self.samples.lock().entries.clone()
    }

    fn check_input(&self, input_names: &[&str], rows: &[Vec<Value>]) -> Result<(), TransformError> {
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
        Ok(())
    }

    /// A fresh store with the memory limiter, `fuel` and the wall-clock backstop.
    fn store(&self, limits: &Limits, fuel: u64) -> Store<CallState> {
        let mut store = Store::new(self.engine.wasm(), CallState::new(limits.max_memory_bytes));
        store.limiter(|state| state);
        store
            .set_fuel(fuel)
            .expect("the engine is configured to consume fuel");
        // The deadline covers instantiation (a start function) and the call.
        store.set_epoch_deadline(deadline_ticks(limits.timeout));
        store
    }

    /// One call with `fuel`; returns its result and the fuel it used. `output: None` skips
    /// decoding (the output buffer must still lie in memory).
    fn run_call(
        &self,
        input_names: &[&str],
        rows: &[Vec<Value>],
        output: Option<&[Field]>,
        limits: &Limits,
        fuel: u64,
    ) -> (Result<Vec<Vec<Value>>, TransformError>, u64) {
        let input = codec::encode_rows(input_names, rows);
        let mut store = self.store(limits, fuel);
        let result = match self.run(&mut store, &input, rows.len(), output, limits) {
            Ok(rows) => Ok(rows),
            Err(Failure::Transform(e)) => Err(e),
            Err(Failure::Wasm(e)) => Err(self.classify(e, store.data(), limits, fuel)),
        };
        let spent = fuel.saturating_sub(store.get_fuel().unwrap_or(0));
        (result, spent)
    }

    /// Keeps the first rows of a successful call as this version's sample for its view (the
    /// output fields tell views apart), at most once per [`SAMPLE_INTERVAL`]; never blocks.
    fn maybe_record_sample(
        &self,
        input_names: &[&str],
        rows: &[Vec<Value>],
        output: &[Field],
        limits: &Limits,
    ) {
        let Some(mut samples) = self.samples.try_lock() else {
            return;
        };
        if samples
            .recorded_at
            .is_some_and(|at| at.elapsed() < SAMPLE_INTERVAL)
        {
            return;
        }
        samples.recorded_at = Some(Instant::now());
        let sample = Sample {
            input_names: input_names.iter().map(|n| (*n).to_owned()).collect(),
            rows: rows.iter().take(SAMPLE_ROWS).cloned().collect(),
            output: output.to_vec(),
            limits: *limits,
        };
        let entries = &mut samples.entries;
        if let Some(same) = entries.iter_mut().find(|s| s.output == sample.output) {
            *same = sample;
        } else if entries.len() < MAX_SAMPLES {
            entries.push(sample);
        }
    }

    fn run(
        &self,
        store: &mut Store<CallState>,
        input: &[u8],
        expected_rows: usize,
        output: Option<&[Field]>,
        limits: &Limits,
    ) -> Result<Vec<Vec<Value>>, Failure> {
        let instance = self.pre.instantiate(&mut *store)?;
        // Presence and types were checked at load; these lookups cannot fail for a loaded module.
        let missing = |what: &str| self.bad_output(format!("the module has no exported {what}"));
        let memory = instance
            .get_module_export(&mut *store, &self.abi_exports.memory)
            .and_then(|e| e.into_memory())
            .ok_or_else(|| missing("memory"))?;
        let alloc = instance
            .get_module_export(&mut *store, &self.abi_exports.alloc)
            .and_then(|e| e.into_func())
            .ok_or_else(|| missing(exports::ALLOC))?
            .typed::<i32, i32>(&*store)?;
        let transform = instance
            .get_module_export(&mut *store, &self.abi_exports.transform)
            .and_then(|e| e.into_func())
            .ok_or_else(|| missing(exports::TRANSFORM))?
            .typed::<(i32, i32), i64>(&*store)?;

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
        match output {
            Some(fields) => codec::decode_rows(&self.name, bytes, expected_rows, fields)
                .map_err(Failure::Transform),
            None => Ok(Vec::new()),
        }
    }

    fn bad_output(&self, message: impl Into<String>) -> Failure {
        Failure::Transform(TransformError::BadOutput {
            module: self.name.clone(),
            message: message.into(),
        })
    }

    /// Turns a failed instantiation or guest call into the error that says why.
    fn classify(
        &self,
        e: wasmtime::Error,
        state: &CallState,
        limits: &Limits,
        fuel: u64,
    ) -> TransformError {
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
            Some(Trap::OutOfFuel) => TransformError::OutOfFuel {
                module,
                limit: fuel,
            },
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
