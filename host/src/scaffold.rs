//! `wasmtune new NAME`: a policy crate that builds outside this repository,
//! with a worked example whose decision is a pure function, native tests
//! against the SDK's fake host, and a README with the commands that build,
//! test and load it. The files are templates compiled into the binary, so
//! what `new` writes matches the SDK and contract of this version.

use std::path::{Path, PathBuf};

/// Where the development package installs the SDK source: used when no
/// `--sdk` is given, so a policy builds offline on an installed system.
pub const INSTALLED_SDK: &str = "/usr/share/wasmtune/sdk";
/// The SDK version a crate asks for when it uses the registry.
pub const SDK_REQUIREMENT: &str = "0.1";

/// (path in the crate, template).
const TEMPLATES: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("../templates/new/Cargo.toml.in")),
    ("policy.toml", include_str!("../templates/new/policy.toml.in")),
    ("src/lib.rs", include_str!("../templates/new/src/lib.rs.in")),
    ("tests/decide.rs", include_str!("../templates/new/tests/decide.rs.in")),
    ("README.md", include_str!("../templates/new/README.md.in")),
    ("events.jsonl", include_str!("../templates/new/events.jsonl.in")),
    (".gitignore", "/target\n"),
];

#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("{0:?} is not a policy name: 1-64 characters of a-z, 0-9 and '-', starting with a letter")]
    Name(String),
    #[error("{} exists and is not empty; choose another name or --dir", .0.display())]
    Exists(PathBuf),
    #[error("--sdk {}: no wasmtune-sdk crate there (no Cargo.toml naming it)", .0.display())]
    NoSdk(PathBuf),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

/// Where the crate gets the SDK from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdkSource {
    /// `wasmtune-sdk = "0.1"` from the registry.
    Registry,
    /// A local copy of the SDK crate (absolute path).
    Path(PathBuf),
}

impl SdkSource {
    /// `--sdk PATH` when given (checked), else the installed copy when
    /// there is one, else the registry.
    pub fn choose(given: Option<&Path>) -> Result<SdkSource, ScaffoldError> {
        match given {
            Some(path) => {
                let path = std::path::absolute(path)
                    .map_err(|source| ScaffoldError::Io { path: path.to_path_buf(), source })?;
                let manifest = std::fs::read_to_string(path.join("Cargo.toml")).unwrap_or_default();
                if !manifest.contains("name = \"wasmtune-sdk\"") {
                    return Err(ScaffoldError::NoSdk(path));
                }
                Ok(SdkSource::Path(path))
            }
            None if Path::new(INSTALLED_SDK).join("Cargo.toml").is_file() => {
                Ok(SdkSource::Path(PathBuf::from(INSTALLED_SDK)))
            }
            None => Ok(SdkSource::Registry),
        }
    }

    /// The dependency's value in `Cargo.toml`, with `features` if any.
    fn dependency(&self, features: &[&str]) -> String {
        let features = match features {
            [] => String::new(),
            some => format!(", features = [{}]", some.iter().map(|f| format!("{f:?}")).collect::<Vec<_>>().join(", ")),
        };
        match self {
            SdkSource::Registry => format!("{{ version = {SDK_REQUIREMENT:?}{features} }}"),
            SdkSource::Path(path) => {
                let path = path.to_string_lossy().replace('\\', "\\\\").replace('"', "\\\"");
                format!("{{ version = {SDK_REQUIREMENT:?}, path = \"{path}\"{features} }}")
            }
        }
    }
}

/// Writes the crate `name` into `parent/name`; returns its directory and
/// the files written. Nothing is written when the name is bad or the
/// directory holds anything already.
pub fn scaffold(name: &str, parent: &Path, sdk: &SdkSource) -> Result<(PathBuf, Vec<PathBuf>), ScaffoldError> {
    check_name(name)?;
    let dir = parent.join(name);
    let occupied = std::fs::read_dir(&dir).map(|mut entries| entries.next().is_some()).unwrap_or(false);
    if occupied {
        return Err(ScaffoldError::Exists(dir));
    }
    let crate_name = name.replace('-', "_");
    let mut written = Vec::new();
    for (relative, template) in TEMPLATES {
        let text = template
            .replace("{{name}}", name)
            .replace("{{crate}}", &crate_name)
            .replace("{{sdk}}", &sdk.dependency(&[]))
            .replace("{{sdk_testing}}", &sdk.dependency(&["testing"]));
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|source| ScaffoldError::Io { path: parent.to_path_buf(), source })?;
        }
        std::fs::write(&path, text).map_err(|source| ScaffoldError::Io { path: path.clone(), source })?;
        written.push(path);
    }
    Ok((dir, written))
}

/// The manifest's rule for a policy name, which is also the crate's name.
fn check_name(name: &str) -> Result<(), ScaffoldError> {
    let good = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if good { Ok(()) } else { Err(ScaffoldError::Name(name.to_string())) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crate_is_written_with_the_name_and_sdk_filled_in() {
        let dir = tempfile::tempdir().expect("temp dir");
        let sdk = SdkSource::Path(PathBuf::from("/opt/sdk"));
        let (crate_dir, files) = scaffold("grow-rmem", dir.path(), &sdk).expect("scaffold");
        assert_eq!(files.len(), TEMPLATES.len());
        let cargo = std::fs::read_to_string(crate_dir.join("Cargo.toml")).expect("Cargo.toml");
        assert!(cargo.contains("name = \"grow-rmem\""), "{cargo}");
        assert!(cargo.contains("wasmtune-sdk = { version = \"0.1\", path = \"/opt/sdk\" }"), "{cargo}");
        assert!(cargo.contains("path = \"/opt/sdk\", features = [\"testing\"]"), "{cargo}");
        let test = std::fs::read_to_string(crate_dir.join("tests/decide.rs")).expect("test");
        assert!(test.contains("use grow_rmem::"), "{test}");
        for file in &files {
            let text = std::fs::read_to_string(file).expect("read");
            assert!(!text.contains("{{"), "{} keeps a placeholder", file.display());
        }
        let manifest = std::fs::read(crate_dir.join("policy.toml")).expect("policy.toml");
        let text = String::from_utf8(manifest).expect("utf-8");
        let parsed = crate::manifest::Manifest::parse(&text).expect("the manifest is valid");
        assert_eq!(parsed.policy.name, "grow-rmem");

        assert!(matches!(scaffold("grow-rmem", dir.path(), &sdk), Err(ScaffoldError::Exists(_))));
        assert!(matches!(scaffold("Grow", dir.path(), &sdk), Err(ScaffoldError::Name(_))));
        assert!(matches!(scaffold("../x", dir.path(), &sdk), Err(ScaffoldError::Name(_))));
    }

    #[test]
    fn without_a_path_the_registry_version_is_asked_for() {
        assert_eq!(SdkSource::Registry.dependency(&["testing"]), "{ version = \"0.1\", features = [\"testing\"] }");
    }
}
