//! The Quiver transform ABI, version 1, written once for both sides (`docs/wasm-abi.md`).
//!
//! The guest SDK (`quiver-sdk` and its `#[transform]` macro) and the host (`quiver`'s transform
//! engine) both depend on this crate, so an import name, an export name, a signature, the packed
//! return value or the row framing cannot drift apart between them.
//!
//! - [`IMPORT_MODULE`]: the import module of the host functions; the version lives in its name.
//! - [`imports`]: the host functions a module may import.
//! - [`exports`]: the memory and functions a module must export, with their signatures.
//! - [`pack_output`] / [`unpack_output`]: how `quiver_transform` returns its output buffer.
//! - `rows` (feature `rows`): the MessagePack framing of the rows, an array of maps each way.

#![no_std]

#[cfg(feature = "rows")]
extern crate std;

#[cfg(feature = "rows")]
pub mod rows;

use core::fmt;

/// Expands to the ABI version as a literal, so that [`IMPORT_MODULE`] is built from it.
macro_rules! abi_version {
    () => {
        1
    };
}

/// Expands to the prefix of the import module names as a literal, for the same reason.
macro_rules! import_module_prefix {
    () => {
        "quiver:abi/"
    };
}

/// The ABI version this crate describes.
pub const VERSION: u32 = abi_version!();

/// The import module name of the host functions. The version is part of the name, so a module
/// built against another version fails at load time instead of misbehaving in a call.
pub const IMPORT_MODULE: &str = concat!(import_module_prefix!(), "v", abi_version!());

/// The prefix of every ABI version's import module name (`quiver:abi/vN`).
pub const IMPORT_MODULE_PREFIX: &str = import_module_prefix!();

/// The ABI version an import module name speaks, if it is a Quiver ABI module at all:
/// `Some("v2")` for `quiver:abi/v2`.
pub fn abi_version_of(import_module: &str) -> Option<&str> {
    import_module.strip_prefix(IMPORT_MODULE_PREFIX)
}

/// A WebAssembly value type used by the ABI's functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValType {
    /// `i32`: pointers, lengths.
    I32,
    /// `i64`: the packed output of `quiver_transform`.
    I64,
}

impl fmt::Display for ValType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ValType::I32 => "i32",
            ValType::I64 => "i64",
        })
    }
}

/// A function's WebAssembly signature. Displays as `(i32, i32) -> (i64)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature {
    /// Parameter types, in order.
    pub params: &'static [ValType],
    /// Result types, in order.
    pub results: &'static [ValType],
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |f: &mut fmt::Formatter<'_>, types: &[ValType]| {
            for (i, t) in types.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{t}")?;
            }
            Ok(())
        };
        f.write_str("(")?;
        list(f, self.params)?;
        f.write_str(") -> (")?;
        list(f, self.results)?;
        f.write_str(")")
    }
}

/// A function of the ABI: its name and signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Function {
    /// The import or export name.
    pub name: &'static str,
    /// Its WebAssembly signature.
    pub signature: Signature,
}

/// The host functions, imported from [`IMPORT_MODULE`]. A module may import nothing else.
pub mod imports {
    use super::{Function, Signature, ValType};

    /// `quiver_error(ptr, len)`: reports `len` bytes of UTF-8 at `ptr` as the call's error. Does
    /// not return: the host ends the call.
    pub const ERROR: &str = "quiver_error";

    /// How many bytes of a `quiver_error` message the host keeps.
    pub const MAX_ERROR_MESSAGE_BYTES: usize = 4096;

    /// Every host function of this version.
    pub const FUNCTIONS: &[Function] = &[Function {
        name: ERROR,
        signature: Signature {
            params: &[ValType::I32, ValType::I32],
            results: &[],
        },
    }];
}

/// What a module must export.
pub mod exports {
    use super::{Function, Signature, ValType};

    /// The module's only linear memory (32-bit, unshared).
    pub const MEMORY: &str = "memory";

    /// `quiver_alloc(len) -> ptr`: `len` writable bytes for the host to write the input into.
    pub const ALLOC: &str = "quiver_alloc";

    /// `quiver_dealloc(ptr, len)`: frees a buffer from `quiver_alloc` or an output buffer.
    pub const DEALLOC: &str = "quiver_dealloc";

    /// `quiver_transform(ptr, len) -> packed`: runs the transform over the input rows at
    /// `ptr..ptr+len` (now owned by the module) and returns the output buffer as
    /// [`pack_output`](super::pack_output) packs it.
    pub const TRANSFORM: &str = "quiver_transform";

    /// The Rust type of the `quiver_alloc` export.
    pub type AllocFn = extern "C" fn(i32) -> i32;

    /// The Rust type of the `quiver_dealloc` export.
    pub type DeallocFn = unsafe extern "C" fn(i32, i32);

    /// The Rust type of the `quiver_transform` export.
    pub type TransformFn = unsafe extern "C" fn(i32, i32) -> i64;

    /// Every exported function, with the signature the host requires.
    pub const FUNCTIONS: &[Function] = &[
        Function {
            name: ALLOC,
            signature: Signature {
                params: &[ValType::I32],
                results: &[ValType::I32],
            },
        },
        Function {
            name: DEALLOC,
            signature: Signature {
                params: &[ValType::I32, ValType::I32],
                results: &[],
            },
        },
        Function {
            name: TRANSFORM,
            signature: Signature {
                params: &[ValType::I32, ValType::I32],
                results: &[ValType::I64],
            },
        },
    ];
}

/// Packs the output buffer returned by `quiver_transform`: `(ptr << 32) | len`.
pub fn pack_output(ptr: u32, len: u32) -> i64 {
    ((u64::from(ptr) << 32) | u64::from(len)) as i64
}

/// Unpacks `quiver_transform`'s return value into the output buffer's `(ptr, len)`.
pub fn unpack_output(packed: i64) -> (u32, u32) {
    let packed = packed as u64;
    ((packed >> 32) as u32, packed as u32)
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::string::ToString;

    use super::*;

    #[test]
    fn the_import_module_names_version_1() {
        assert_eq!(VERSION, 1);
        assert_eq!(IMPORT_MODULE, "quiver:abi/v1");
        assert_eq!(abi_version_of(IMPORT_MODULE), Some("v1"));
        assert_eq!(abi_version_of("quiver:abi/v2"), Some("v2"));
        assert_eq!(abi_version_of("wasi_snapshot_preview1"), None);
    }

    #[test]
    fn signatures_display_as_parameter_and_result_lists() {
        let rendered: std::vec::Vec<_> = exports::FUNCTIONS
            .iter()
            .map(|f| (f.name, f.signature.to_string()))
            .collect();
        assert_eq!(
            rendered,
            [
                ("quiver_alloc", "(i32) -> (i32)".to_string()),
                ("quiver_dealloc", "(i32, i32) -> ()".to_string()),
                ("quiver_transform", "(i32, i32) -> (i64)".to_string()),
            ]
        );
        assert_eq!(
            imports::FUNCTIONS[0].signature.to_string(),
            "(i32, i32) -> ()"
        );
    }

    #[test]
    fn the_output_buffer_round_trips_through_the_packed_value() {
        for (ptr, len) in [(0, 0), (8, 3), (u32::MAX, u32::MAX), (0x8000_0000, 1)] {
            assert_eq!(unpack_output(pack_output(ptr, len)), (ptr, len));
        }
        assert_eq!(pack_output(1, 2), (1 << 32) | 2);
    }
}
