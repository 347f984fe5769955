//! A stub transform crate for an on-demand view whose Feast transformation is Python: the
//! view's inputs and outputs as the transform's signature, a body that returns null for every
//! output, and the Python function as a comment to port. The crate is written by the one
//! transform-crate generator, [`crate::scaffold::transform_crate`].

use std::path::{Path, PathBuf};

use super::convert::{Field, OnDemandView};
use crate::scaffold::transform_crate::{self, TransformCrate};

/// The crate's files: `(path relative to the crate directory, contents)`.
pub fn crate_files(view: &OnDemandView, sdk_dir: &Path) -> Vec<(PathBuf, String)> {
    stub_crate(view).files(sdk_dir)
}

/// The stub crate of `view`: its signature, the placeholder body, the Python source at the end.
pub fn stub_crate(view: &OnDemandView) -> TransformCrate {
    let fields = |fields: &[Field]| -> Vec<transform_crate::Field> {
        fields
            .iter()
            .map(|f| transform_crate::Field {
                name: f.name.clone(),
                dtype: f.dtype.clone(),
            })
            .collect()
    };
    let trailer = if view.python.is_empty() {
        String::new()
    } else {
        format!(
            "The Feast transformation, as `feast apply` stored it:\n\n{}",
            view.python
        )
    };
    TransformCrate {
        view: view.name.clone(),
        transform: view.transform.clone(),
        sources: view.sources.clone(),
        inputs: fields(&view.inputs),
        request_fields: fields(&view.request_fields),
        outputs: fields(&view.schema),
        generated_by: "`quiver import-feast` from the view's Python transformation".into(),
        about: format!(
            "(Feast mode {}.) Port the Python function at the end of this file into the body.",
            view.mode
        ),
        body: None,
        tests: None,
        trailer,
    }
}
