//! Starting points written to disk: a whole project (`quiver init`, [`project`]) and a transform
//! crate (`quiver new-transform`, [`new_transform`]). Every transform crate — these and
//! `quiver import-feast`'s stubs — comes from one generator, [`transform_crate`].
//!
//! Nothing is overwritten silently: a non-empty target directory is refused unless the caller
//! forces it, and a forced run reports each file it replaced.

pub mod new_transform;
pub mod project;
pub mod transform_crate;

use std::path::{Path, PathBuf};

/// This checkout's `sdk/` (the `quiver-sdk` crate), which generated transform crates depend on
/// by path unless told otherwise. Shared by `quiver init`, `quiver new-transform` and
/// `quiver import-feast`.
pub const DEFAULT_SDK_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk");

/// The SDK directory to write into a crate's `Cargo.toml`: `given` or [`DEFAULT_SDK_DIR`], made
/// absolute and tidy (`/checkout/sdk`, not `/checkout/runtime/../sdk`) when it exists.
pub fn sdk_dir(given: Option<&Path>) -> PathBuf {
    let dir = given.map_or_else(|| PathBuf::from(DEFAULT_SDK_DIR), Path::to_path_buf);
    dir.canonicalize().unwrap_or(dir)
}

/// Why a scaffold was not written.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The target directory holds files and the caller did not force it.
    #[error(
        "{} is not empty (it holds {}); choose an empty or new directory, or pass --force to write into it (files of the same name are replaced)",
        .dir.display(), .entry
    )]
    NotEmpty {
        /// The directory.
        dir: PathBuf,
        /// One entry found in it.
        entry: String,
    },
    /// The target exists and is not a directory.
    #[error("{} exists and is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// A name is not a valid Quiver name (or crate name).
    #[error("invalid {what} {name:?}: {reason}")]
    InvalidName {
        /// What the name names: "transform name", "source view".
        what: &'static str,
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: String,
    },
    /// A `name:dtype` field specification is malformed.
    #[error("invalid field {spec:?} in --{option}: {reason}")]
    InvalidField {
        /// The option it came from (`inputs`, `request`, `outputs`).
        option: &'static str,
        /// The specification as given.
        spec: String,
        /// What is wrong.
        reason: String,
    },
    /// The SDK directory has no `Cargo.toml`.
    #[error("the quiver-sdk crate is not at {}: pass --sdk <path of Quiver's sdk/ directory>", .0.display())]
    SdkMissing(PathBuf),
    /// The sample data could not be encoded.
    #[error("cannot write the sample data {}: {message}", .path.display())]
    SampleData {
        /// The Parquet file.
        path: PathBuf,
        /// The encoder's error.
        message: String,
    },
    /// A file or directory could not be written.
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A file written by a scaffold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The path, relative to the scaffold's root directory.
    pub path: PathBuf,
    /// Whether a file was there before (only with `force`).
    pub replaced: bool,
}

/// Checks that `dir` is absent, empty, or (with `force`) any directory. A `.git` directory alone
/// does not make it non-empty, so `git init` may come first.
pub fn check_target(dir: &Path, force: bool) -> Result<(), ScaffoldError> {
    if !dir.exists() {
        return Ok(());
    }
    if !dir.is_dir() {
        return Err(ScaffoldError::NotADirectory(dir.to_path_buf()));
    }
    if force {
        return Ok(());
    }
    let entries = std::fs::read_dir(dir).map_err(|source| ScaffoldError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name != ".git" {
            return Err(ScaffoldError::NotEmpty {
                dir: dir.to_path_buf(),
                entry: name,
            });
        }
    }
    Ok(())
}

/// Writes `files` (paths relative to `root`), creating directories, and says which replaced an
/// existing file. Call [`check_target`] first.
pub fn write_files(
    root: &Path,
    files: &[(PathBuf, Vec<u8>)],
) -> Result<Vec<Written>, ScaffoldError> {
    let mut written = Vec::with_capacity(files.len());
    for (relative, contents) in files {
        let path = root.join(relative);
        let replaced = path.exists();
        let write = || -> std::io::Result<()> {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, contents)
        };
        write().map_err(|source| ScaffoldError::Write {
            path: path.clone(),
            source,
        })?;
        written.push(Written {
            path: relative.clone(),
            replaced,
        });
    }
    Ok(written)
}

/// Fails when `sdk_dir` holds no crate (a typo in `--sdk`, or a binary moved away from its
/// checkout).
pub fn check_sdk(sdk_dir: &Path) -> Result<(), ScaffoldError> {
    if sdk_dir.join("Cargo.toml").is_file() {
        Ok(())
    } else {
        Err(ScaffoldError::SdkMissing(sdk_dir.to_path_buf()))
    }
}

/// "Created" or "Replaced" lines for a report, one per file.
pub fn report_lines(root: &Path, written: &[Written]) -> String {
    written
        .iter()
        .map(|w| {
            format!(
                "  {} {}\n",
                if w.replaced { "replaced" } else { "created " },
                root.join(&w.path).display()
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_sdk_dir_is_this_checkouts_sdk_crate() {
        let dir = sdk_dir(None);
        assert!(dir.is_absolute(), "{}", dir.display());
        assert!(dir.ends_with("sdk"), "{}", dir.display());
        check_sdk(&dir).unwrap();
        assert!(matches!(
            check_sdk(Path::new("/nonexistent/sdk")),
            Err(ScaffoldError::SdkMissing(_))
        ));
    }

    #[test]
    fn a_non_empty_directory_is_refused_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        check_target(&dir.path().join("new"), false).unwrap();
        std::fs::create_dir(dir.path().join(".git")).unwrap();
        check_target(dir.path(), false).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        let err = check_target(dir.path(), false).unwrap_err().to_string();
        assert!(
            err.contains("is not empty (it holds notes.txt)") && err.contains("--force"),
            "{err}"
        );
        check_target(dir.path(), true).unwrap();
        let written = write_files(
            dir.path(),
            &[
                ("notes.txt".into(), b"new".to_vec()),
                ("a/b.txt".into(), b"b".to_vec()),
            ],
        )
        .unwrap();
        assert!(written[0].replaced && !written[1].replaced);
        let report = report_lines(dir.path(), &written);
        assert!(
            report.contains("replaced ") && report.contains("created "),
            "{report}"
        );
    }
}
