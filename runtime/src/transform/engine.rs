//! The process's WebAssembly engine: compilation settings, fuel and time limits, host functions.

use std::sync::{Arc, Mutex, Weak};
use std::thread;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use wasmtime::{
    Caller, Config, Enabled, Engine, EngineWeak, Extern, InstanceAllocationStrategy, Linker,
    Module, PoolingAllocationConfig, ResourceLimiter,
};

use quiver_abi::{IMPORT_MODULE, exports, imports};

use super::TransformError;
use super::module::{self, LoadedModule};

/// How often the epoch advances; time limits are rounded up to a multiple of this.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(2);

/// Table growth beyond this many elements is refused (Rust modules use a few dozen).
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Compiles and runs transform modules. Cheap to clone; every clone shares one
/// `wasmtime::Engine`, and [`TransformEngine::new`] hands out the process's engine while one is
/// alive, so there is one engine (and one epoch ticker, one instance pool) per process.
#[derive(Clone)]
pub struct TransformEngine {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    /// Quiver's host functions; shared by every module (they keep no per-module state).
    linker: Linker<CallState>,
    pooling: bool,
}

/// The live engine, if any. Guarded by a mutex so two threads starting at once make one engine.
static SHARED: Mutex<Weak<Inner>> = Mutex::new(Weak::new());

impl std::fmt::Debug for TransformEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransformEngine")
            .field("pooling", &self.inner.pooling)
            .finish_non_exhaustive()
    }
}

impl TransformEngine {
    /// The process's engine, created on first use.
    pub fn new() -> Result<Self, TransformError> {
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(inner) = shared.upgrade() {
            return Ok(TransformEngine { inner });
        }
        let (engine, pooling) = build_engine()?;
        let linker = host_functions(&engine)?;
        spawn_epoch_ticker(engine.weak());
        let inner = Arc::new(Inner {
            engine,
            linker,
            pooling,
        });
        *shared = Arc::downgrade(&inner);
        Ok(TransformEngine { inner })
    }

    /// Whether instances come from the pooling allocator (false: allocated on demand).
    pub fn uses_pooling(&self) -> bool {
        self.inner.pooling
    }

    /// Compiles and checks a module: only Quiver's host functions may be imported, and the ABI's
    /// exports must be present with the right types. `name` is used in errors and logs.
    pub fn load(&self, name: &str, wasm_bytes: &[u8]) -> Result<Arc<LoadedModule>, TransformError> {
        let invalid = |message: String| TransformError::InvalidModule {
            module: name.to_owned(),
            message,
        };
        if !wasm_bytes.starts_with(b"\0asm") {
            return Err(invalid(
                "not a WebAssembly module (no \\0asm header); build it with --target wasm32-unknown-unknown"
                    .to_owned(),
            ));
        }
        let sha256 = hex::encode(Sha256::digest(wasm_bytes));
        let module = Module::new(&self.inner.engine, wasm_bytes)
            .map_err(|e| invalid(format!("does not compile: {e:#}")))?;
        module::check_imports(name, &module)?;
        module::check_exports(name, &module)?;
        let pre = self
            .inner
            .linker
            .instantiate_pre(&module)
            .map_err(|e| invalid(format!("cannot be linked: {e:#}")))?;
        tracing::info!(module = name, sha256 = %sha256, "loaded transform module");
        Ok(Arc::new(LoadedModule::new(
            name.to_owned(),
            sha256,
            SystemTime::now(),
            self.clone(),
            pre,
        )?))
    }

    pub(crate) fn wasm(&self) -> &Engine {
        &self.inner.engine
    }
}

/// The engine configuration: deterministic floats, epoch-based time limits, pooled instances
/// when the host allows the address-space reservation.
fn build_engine() -> Result<(Engine, bool), TransformError> {
    let mut config = Config::new();
    // Fuel decides pass or fail (deterministic); the epoch deadline is the wall-clock backstop.
    config.consume_fuel(true);
    config.epoch_interruption(true);
    // NaNs produced by guest arithmetic get one canonical bit pattern on every CPU.
    config.cranelift_nan_canonicalization(true);
    // One memory per module, so the per-call memory limit bounds the whole call.
    config.wasm_multi_memory(false);
    // Each module compiles on its own loading thread (see `catalog`): a shared compilation pool
    // would let one huge module hold every other module's compilation up.
    config.parallel_compilation(false);

    // Memory accesses are bounds-checked by compiled code instead of caught by guard pages and a
    // signal handler. With guard pages, every call that grows its memory (the guest allocator's
    // first use in a fresh instance) changes page protections twice: `mprotect` when it grows,
    // and again when its pool slot is reused. Each `mprotect` of a multi-threaded process
    // interrupts every other CPU running one of its threads to flush its TLB; under load that
    // cost more than the call. A slot's pages now stay mapped read-write once used, and are still
    // reset between calls. Traps are the same traps (explicit checks), fuel counts are the same
    // (fuel counts Wasm operators, not machine instructions), so results do not change.
    // Cranelift's Spectre hardening of heap and table accesses relies on faulting loads, so it is
    // off with signals; a module has no clock, no threads and no host import besides its error
    // report, so it cannot time a speculative access.
    // (wasmtime turns that hardening off itself when signals-based traps are off.)
    config.signals_based_traps(false);
    config.memory_guard_size(0);

    let mut pool = PoolingAllocationConfig::new();
    // Instances live for one call, so this bounds concurrent calls, not modules; each slot only
    // reserves address space until used.
    pool.total_core_instances(1000)
        .total_memories(1000)
        .total_tables(1000)
        .max_memories_per_module(1)
        .linear_memory_keep_resident(8 << 20)
        .table_keep_resident(64 << 10)
        // Where the kernel has PAGEMAP_SCAN (Linux 6.7+), a slot returned after a call resets
        // only the pages the call wrote, instead of `memset`-ing the kept-resident megabyte:
        // the fresh instance per call stays, at the price of the few pages a call touches.
        .pagemap_scan(Enabled::Auto);
    let mut pooled = config.clone();
    pooled.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    match Engine::new(&pooled) {
        Ok(engine) => Ok((engine, true)),
        Err(e) => {
            tracing::warn!(
                error = %format!("{e:#}"),
                "pooling allocator unavailable; allocating transform instances on demand"
            );
            config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
            let engine = Engine::new(&config).map_err(|e| TransformError::Engine {
                message: format!("{e:#}"),
            })?;
            Ok((engine, false))
        }
    }
}

/// Quiver's host functions, in the current ABI module.
fn host_functions(engine: &Engine) -> Result<Linker<CallState>, TransformError> {
    let mut linker = Linker::new(engine);
    linker
        .func_wrap(
            IMPORT_MODULE,
            imports::ERROR,
            |mut caller: Caller<'_, CallState>, ptr: i32, len: i32| -> wasmtime::Result<()> {
                let message = match caller.get_export(exports::MEMORY) {
                    Some(Extern::Memory(memory)) => {
                        let data = memory.data(&caller);
                        let start = ptr as u32 as usize;
                        // A guest could report its whole memory; keep what the ABI promises.
                        let len = (len as u32 as usize).min(imports::MAX_ERROR_MESSAGE_BYTES);
                        match data.get(start..start.saturating_add(len)) {
                            Some(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                            None => "error message out of bounds of the module's memory".into(),
                        }
                    }
                    _ => "error reported by a module without an exported memory".into(),
                };
                caller.data_mut().guest_error = Some(message);
                // The error import does not return: the call ends here.
                Err(wasmtime::Error::msg("the transform reported an error"))
            },
        )
        .map_err(|e| TransformError::Engine {
            message: format!("cannot define host functions: {e:#}"),
        })?;
    Ok(linker)
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until the engine is dropped. It holds only a
/// weak handle, so it never keeps the engine alive.
fn spawn_epoch_ticker(engine: EngineWeak) {
    let spawned = thread::Builder::new()
        .name("quiver-wasm-epoch".into())
        .spawn(move || {
            loop {
                thread::sleep(EPOCH_TICK);
                match engine.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => return,
                }
            }
        });
    if let Err(e) = spawned {
        // Without the ticker no call would ever time out; refuse to run without it.
        panic!("cannot start the transform epoch ticker thread: {e}");
    }
}

/// The epoch deadline for a time limit, in ticks (rounded up, plus one for the partial tick
/// in progress).
pub(crate) fn deadline_ticks(timeout: Duration) -> u64 {
    let ticks = timeout.as_nanos().div_ceil(EPOCH_TICK.as_nanos());
    u64::try_from(ticks).unwrap_or(u64::MAX / 2).max(1) + 1
}

/// Per-call state of a `Store`: the memory limit and what went wrong, if anything.
pub(crate) struct CallState {
    pub(crate) max_memory_bytes: usize,
    /// Set when the guest tried to grow past `max_memory_bytes`.
    pub(crate) memory_exceeded: bool,
    /// The message the guest passed to `quiver_error`.
    pub(crate) guest_error: Option<String>,
}

impl CallState {
    pub(crate) fn new(max_memory_bytes: usize) -> Self {
        CallState {
            max_memory_bytes,
            memory_exceeded: false,
            guest_error: None,
        }
    }
}

impl ResourceLimiter for CallState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory_bytes {
            self.memory_exceeded = true;
            // Trap rather than fail the grow: the call is over either way, and the error then
            // says "out of memory" whatever the guest's allocator does with a failed grow.
            return Err(wasmtime::Error::msg("memory limit exceeded"));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn memories(&self) -> usize {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_round_up_to_whole_ticks_plus_one() {
        assert_eq!(deadline_ticks(Duration::from_millis(100)), 51);
        assert_eq!(deadline_ticks(Duration::from_millis(1)), 2);
        assert_eq!(deadline_ticks(Duration::ZERO), 2);
        assert!(deadline_ticks(Duration::MAX) > 1 << 40);
    }

    #[test]
    fn engines_created_while_one_is_alive_share_it() {
        let a = TransformEngine::new().unwrap();
        let b = TransformEngine::new().unwrap();
        assert!(Arc::ptr_eq(&a.inner, &b.inner));
    }
}
