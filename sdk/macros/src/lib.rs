//! The `#[transform]` attribute of the Quiver transform SDK. Use it through `quiver_sdk::transform`;
//! the generated code refers to `::quiver_sdk`. The export and import names it writes come from
//! `quiver-abi`.

use proc_macro2::TokenStream;
use quiver_abi::{IMPORT_MODULE, exports, imports};
use quote::quote;
use syn::{FnArg, ItemFn, ReturnType, Type};

/// Marks `fn name(row: Input) -> Output` as the module's transform.
///
/// The function is kept exactly as written (so it can be unit-tested natively); on
/// `target_arch = "wasm32"` the attribute also generates the module's ABI exports
/// (`quiver_alloc`, `quiver_dealloc`, `quiver_transform`). `Input` must implement
/// `serde::Deserialize` and `Output` `serde::Serialize` (a struct with named fields).
#[proc_macro_attribute]
pub fn transform(
    attr: proc_macro::TokenStream,
    item: proc_macro::TokenStream,
) -> proc_macro::TokenStream {
    expand(attr.into(), item.into()).into()
}

/// The SDK's declaration of the host functions, as `host_error` (the `quiver_error` import).
/// Internal to `quiver-sdk`: `#[link(wasm_import_module = ..)]` accepts only a literal, so the
/// block is generated here from `quiver-abi`'s names rather than written out a second time.
#[doc(hidden)]
#[proc_macro]
pub fn __host_imports(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    if !input.is_empty() {
        return syn::Error::new(
            proc_macro2::Span::call_site(),
            "__host_imports!() takes no input",
        )
        .to_compile_error()
        .into();
    }
    host_imports().into()
}

fn host_imports() -> TokenStream {
    let error = imports::ERROR;
    quote! {
        #[link(wasm_import_module = #IMPORT_MODULE)]
        unsafe extern "C" {
            /// Records the transform's error message; the host ends the call and does not return.
            #[link_name = #error]
            fn host_error(ptr: *const u8, len: usize);
        }
    }
}

/// The attribute's expansion, on `proc_macro2` tokens so that it can be unit-tested.
fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    match parse(attr, item.clone()) {
        Ok(func) => generate(&func),
        Err(err) => {
            // Keep the item, so the only error the author sees is this one (not a cascade of
            // "cannot find function" wherever the item is used).
            let mut out = err.to_compile_error();
            out.extend(item);
            out
        }
    }
}

const USAGE: &str = "write it as `#[transform] fn name(row: Input) -> Output { .. }`";

/// Checks that the attribute sits on a function the exports can call.
fn parse(attr: TokenStream, item: TokenStream) -> syn::Result<ItemFn> {
    if !attr.is_empty() {
        return Err(syn::Error::new_spanned(
            attr,
            "#[transform] takes no arguments; the module is named after its .wasm file",
        ));
    }
    let func: ItemFn = syn::parse2(item).map_err(|e| {
        syn::Error::new(
            e.span(),
            format!("#[transform] must be placed on a function: {USAGE}"),
        )
    })?;
    let sig = &func.sig;
    if let Some(t) = &sig.asyncness {
        return Err(syn::Error::new_spanned(
            t,
            "#[transform] functions cannot be async: transforms run synchronously; remove `async`",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new_spanned(
            &sig.generics,
            format!(
                "#[transform] functions cannot be generic: use concrete input and output types; {USAGE}"
            ),
        ));
    }
    if let Some(t) = &sig.unsafety {
        return Err(syn::Error::new_spanned(
            t,
            "#[transform] functions cannot be unsafe; remove `unsafe`",
        ));
    }
    if let Some(v) = &sig.variadic {
        return Err(syn::Error::new_spanned(
            v,
            format!("#[transform] functions cannot be variadic; {USAGE}"),
        ));
    }
    if sig.inputs.len() != 1 {
        let msg = format!(
            "#[transform] functions take exactly one argument (one input row), found {}; {USAGE}",
            sig.inputs.len()
        );
        // An empty argument list has no span of its own: point at the name instead.
        return Err(if sig.inputs.is_empty() {
            syn::Error::new_spanned(&sig.ident, msg)
        } else {
            syn::Error::new_spanned(&sig.inputs, msg)
        });
    }
    match &sig.inputs[0] {
        FnArg::Receiver(r) => {
            return Err(syn::Error::new_spanned(
                r,
                format!("#[transform] must be a free function, not a method; {USAGE}"),
            ));
        }
        FnArg::Typed(t) => {
            if let Type::ImplTrait(_) = &*t.ty {
                return Err(syn::Error::new_spanned(
                    &t.ty,
                    format!(
                        "#[transform] functions cannot be generic: name the input struct instead of `impl Trait`; {USAGE}"
                    ),
                ));
            }
        }
    }
    if let ReturnType::Default = sig.output {
        return Err(syn::Error::new_spanned(
            &sig.ident,
            format!("#[transform] functions must return the output row; add `-> Output`; {USAGE}"),
        ));
    }
    Ok(func)
}

/// The function as written, plus the wasm32-only ABI exports that call it.
fn generate(func: &ItemFn) -> TokenStream {
    let name = &func.sig.ident;
    let (alloc, dealloc, transform) = (exports::ALLOC, exports::DEALLOC, exports::TRANSFORM);
    quote! {
        #func

        #[cfg(target_arch = "wasm32")]
        const _: () = {
            /// Allocates `len` bytes for the host to write the input into.
            #[unsafe(export_name = #alloc)]
            pub extern "C" fn __quiver_alloc(len: i32) -> i32 {
                ::quiver_sdk::__abi::alloc(len)
            }

            /// Frees a buffer from the alloc export or an output buffer.
            #[unsafe(export_name = #dealloc)]
            pub unsafe extern "C" fn __quiver_dealloc(ptr: i32, len: i32) {
                // SAFETY: the ABI says the host passes back a pointer and length this module
                // handed out.
                unsafe { ::quiver_sdk::__abi::dealloc(ptr, len) }
            }

            /// Runs the transform over the MessagePack rows at `ptr..ptr+len`.
            #[unsafe(export_name = #transform)]
            pub unsafe extern "C" fn __quiver_transform(ptr: i32, len: i32) -> i64 {
                // SAFETY: the ABI says `ptr..ptr+len` came from the alloc export and is handed
                // over to this call.
                unsafe { ::quiver_sdk::__abi::transform(ptr, len, #name) }
            }

            // The exports have the types the contract gives them.
            const _: ::quiver_sdk::__abi::AllocFn = __quiver_alloc;
            const _: ::quiver_sdk::__abi::DeallocFn = __quiver_dealloc;
            const _: ::quiver_sdk::__abi::TransformFn = __quiver_transform;
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(attr: TokenStream, item: TokenStream) -> String {
        match parse(attr, item) {
            Ok(_) => panic!("expected the macro to reject this input"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_plain_function_is_accepted_and_kept_as_written() {
        let item = quote! { fn user_risk(row: Input) -> Output { compute(row) } };
        let out = expand(TokenStream::new(), item).to_string();
        assert!(
            out.starts_with("fn user_risk (row : Input) -> Output"),
            "{out}"
        );
        for export in [
            "\"quiver_alloc\"",
            "\"quiver_dealloc\"",
            "\"quiver_transform\"",
        ] {
            assert!(out.contains(&format!("export_name = {export}")), "{out}");
        }
        assert!(out.contains("target_arch = \"wasm32\""), "{out}");
        assert!(out.contains(":: quiver_sdk :: __abi :: transform (ptr , len , user_risk)"));
    }

    #[test]
    fn the_host_import_block_names_the_abi_module_and_function() {
        let out = host_imports().to_string();
        assert!(
            out.contains("wasm_import_module = \"quiver:abi/v1\""),
            "{out}"
        );
        assert!(out.contains("link_name = \"quiver_error\""), "{out}");
    }

    #[test]
    fn a_pattern_argument_is_accepted() {
        let item = quote! { pub fn f(Input { a }: Input) -> Output { Output { a } } };
        assert!(parse(TokenStream::new(), item).is_ok());
    }

    #[test]
    fn a_struct_is_rejected_with_the_expected_shape() {
        let msg = error_of(TokenStream::new(), quote! { struct Input { a: f64 } });
        assert!(msg.contains("must be placed on a function"), "{msg}");
        assert!(msg.contains("fn name(row: Input) -> Output"), "{msg}");
    }

    #[test]
    fn two_arguments_are_rejected_with_the_count() {
        let msg = error_of(
            TokenStream::new(),
            quote! { fn f(a: Input, b: Other) -> Output { todo() } },
        );
        assert!(msg.contains("exactly one argument"), "{msg}");
        assert!(msg.contains("found 2"), "{msg}");
    }

    #[test]
    fn no_arguments_are_rejected() {
        let msg = error_of(TokenStream::new(), quote! { fn f() -> Output { x() } });
        assert!(msg.contains("found 0"), "{msg}");
    }

    #[test]
    fn generic_functions_are_rejected() {
        let msg = error_of(
            TokenStream::new(),
            quote! { fn f<T: Into<f64>>(row: T) -> Output { x() } },
        );
        assert!(msg.contains("cannot be generic"), "{msg}");
        let msg = error_of(
            TokenStream::new(),
            quote! { fn f(row: impl Deserialize) -> Output { x() } },
        );
        assert!(msg.contains("cannot be generic"), "{msg}");
    }

    #[test]
    fn async_functions_are_rejected() {
        let msg = error_of(
            TokenStream::new(),
            quote! { async fn f(row: Input) -> Output { x() } },
        );
        assert!(msg.contains("cannot be async"), "{msg}");
    }

    #[test]
    fn a_missing_return_type_is_rejected() {
        let msg = error_of(TokenStream::new(), quote! { fn f(row: Input) { x() } });
        assert!(msg.contains("must return the output row"), "{msg}");
    }

    #[test]
    fn methods_are_rejected() {
        let msg = error_of(TokenStream::new(), quote! { fn f(&self) -> Output { x() } });
        assert!(msg.contains("not a method"), "{msg}");
    }

    #[test]
    fn arguments_to_the_attribute_are_rejected() {
        let msg = error_of(
            quote! { name = "x" },
            quote! { fn f(row: Input) -> Output { x() } },
        );
        assert!(msg.contains("takes no arguments"), "{msg}");
    }

    #[test]
    fn errors_expand_to_compile_error_and_keep_the_item() {
        let out = expand(TokenStream::new(), quote! { fn f() {} }).to_string();
        assert!(out.contains("compile_error"), "{out}");
        assert!(out.contains("fn f () { }"), "{out}");
        assert!(!out.contains("quiver_transform"), "{out}");
    }
}
