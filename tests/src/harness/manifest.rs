//! Reading a policy component's embedded manifest (the `wasmtune-manifest`
//! custom section) without the host's parser, so tests can state what a
//! fixture declares independently of the code under test.

use std::path::Path;

use super::HarnessError;

/// The custom section's name, as the contract fixes it.
const SECTION_NAME: &[u8] = b"wasmtune-manifest";

/// What a test needs from a manifest: the policy's name and its sysctl grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedManifest {
    /// The manifest's TOML text, verbatim.
    pub text: String,
    /// `[policy] name`.
    pub name: Option<String>,
    /// `name` of every `[[sysctl]]` table, in order.
    pub sysctls: Vec<String>,
    /// Every `(table, key)` assigned, in order; the table is `""` before the
    /// first header.
    pub keys: Vec<(String, String)>,
}

/// Finds the `wasmtune-manifest` custom section in the component (or core
/// module) at `path` and summarises its TOML. `Ok(None)` when there is none.
pub fn embedded_manifest(path: &Path) -> Result<Option<EmbeddedManifest>, HarnessError> {
    let bytes =
        std::fs::read(path).map_err(|source| HarnessError::Io { action: "read", path: path.to_path_buf(), source })?;
    Ok(find_section(&bytes).map(|payload| summarise(&String::from_utf8_lossy(payload))))
}

/// The payload of the first custom section named `wasmtune-manifest`.
///
/// A custom section is `0x00, size (LEB128), name length (LEB128), name,
/// payload`; the name is searched for and the header checked backwards
/// from it, which works inside a component's nested core module too.
fn find_section(bytes: &[u8]) -> Option<&[u8]> {
    let name_len = SECTION_NAME.len();
    let mut from = 0;
    while let Some(offset) = find(&bytes[from..], SECTION_NAME) {
        let name_at = from + offset;
        from = name_at + 1;
        // The name length is one byte (17 < 128).
        if name_at < 2 || bytes[name_at - 1] as usize != name_len {
            continue;
        }
        let size_end = name_at - 1;
        for size_len in 1..=5.min(size_end - 1) {
            let size_start = size_end - size_len;
            if bytes[size_start - 1] != 0 {
                continue;
            }
            let Some(size) = read_leb(&bytes[size_start..size_end]) else {
                continue;
            };
            let payload_start = name_at + name_len;
            let Some(payload_len) = size.checked_sub(1 + name_len) else {
                continue;
            };
            if let Some(payload) = bytes.get(payload_start..payload_start + payload_len) {
                return Some(payload);
            }
        }
    }
    None
}

/// An unsigned LEB128 that spans exactly `bytes`.
fn read_leb(bytes: &[u8]) -> Option<usize> {
    let (last, init) = bytes.split_last()?;
    if last & 0x80 != 0 || init.iter().any(|b| b & 0x80 == 0) {
        return None;
    }
    Some(bytes.iter().enumerate().fold(0usize, |acc, (i, b)| acc | (((b & 0x7f) as usize) << (7 * i))))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads `[policy] name` and every `[[sysctl]] name` line by line: enough
/// for manifests written the way the contract shows them.
fn summarise(text: &str) -> EmbeddedManifest {
    let mut table = String::new();
    let mut name = None;
    let mut sysctls = Vec::new();
    let mut keys = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            table = line.trim_matches(|c| c == '[' || c == ']').trim().to_string();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        keys.push((table.clone(), key.trim().to_string()));
        if key.trim() != "name" {
            continue;
        }
        let value = value.split('#').next().unwrap_or("").trim().trim_matches('"').to_string();
        match table.as_str() {
            "policy" if name.is_none() => name = Some(value),
            "sysctl" => sysctls.push(value),
            _ => {}
        }
    }
    EmbeddedManifest { text: text.to_string(), name, sysctls, keys }
}

#[cfg(test)]
mod tests {
    use super::{find_section, summarise};

    fn custom_section(name: &[u8], payload: &[u8]) -> Vec<u8> {
        let size = 1 + name.len() + payload.len();
        let mut section = vec![0u8];
        let mut rest = size;
        loop {
            let byte = (rest & 0x7f) as u8;
            rest >>= 7;
            if rest == 0 {
                section.push(byte);
                break;
            }
            section.push(byte | 0x80);
        }
        section.push(name.len() as u8);
        section.extend_from_slice(name);
        section.extend_from_slice(payload);
        section
    }

    #[test]
    fn section_is_found_after_other_bytes_with_a_long_size() {
        let toml = "[policy]\nname = \"p\"\n".repeat(20);
        let mut module = b"\0asm\x01\0\0\0\x01\x04\x01\x60\0\0".to_vec();
        module.extend(custom_section(b"wasmtune-manifest", toml.as_bytes()));
        module.extend(custom_section(b"other", b"zz"));
        assert_eq!(find_section(&module), Some(toml.as_bytes()));
    }

    #[test]
    fn policy_name_and_sysctl_grants_are_summarised() {
        let summary = summarise(
            "[policy]\nname = \"hostile-trap\" # why\nversion = \"0.1.0\"\n\n[[sysctl]]\nname = \"net.ipv4.tcp_rmem\"\nmax = 1\n",
        );
        assert_eq!(summary.name.as_deref(), Some("hostile-trap"));
        assert_eq!(summary.sysctls, vec!["net.ipv4.tcp_rmem".to_string()]);
        assert_eq!(summary.keys.len(), 4);
        assert_eq!(summary.keys[3], ("sysctl".to_string(), "max".to_string()));
    }
}
