//! The administrator's configuration (`/etc/wasmtune/config.toml`): daemon
//! defaults, and per policy whether it runs, its settings, and how its
//! grants are narrowed or denied, and which policy files it trusts (pinned
//! digests, required signatures). Unknown fields are rejected; every error
//! names the file, line, column and field.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};
use toml::Spanned;

/// The parsed configuration; an absent default file means all defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AdminConfig {
    /// 0..=4; the command line wins over it.
    pub learning_rate: Option<LearningRate>,
    /// Whether tunables set in the boot-time sysctl files (`/etc/sysctl.d`
    /// and the rest of systemd-sysctl's list, then `/etc/sysctl.conf`) are
    /// the administrator's in the initial namespace from the start. Default
    /// true.
    pub respect_sysctl_d: Option<bool>,
    /// The sysctl.d directories to read, highest priority first, instead of
    /// systemd's list; `/etc/sysctl.conf` is then not read.
    pub sysctl_d_dirs: Option<Vec<PathBuf>>,
    /// Whether policy files (not built in) run without each being enabled
    /// by name. Default false: a file dropped into a policy directory
    /// changes nothing until the administrator enables it.
    pub enable_policy_files: Option<bool>,
    /// The journal is compacted (rewritten as one snapshot of what it adds
    /// up to) once it is this long. Default 8 MiB; at least 64 KiB.
    pub journal_max_bytes: Option<u64>,
    /// Whether every policy file must carry a good detached signature
    /// (`FILE.sig`) by a key in `keys-dir`. Default false. Kept with its
    /// place in the file: a daemon that cannot honour it (no keys) says
    /// where it was asked for.
    pub require_signatures: Option<Spanned<bool>>,
    /// The trusted public keys (minisign `.pub` files); default
    /// `/etc/wasmtune/keys`. Read only when some signature is required.
    pub keys_dir: Option<Spanned<PathBuf>>,
    /// The Prometheus endpoint (`docs/metrics.md`); off when absent.
    pub metrics: Option<MetricsSettings>,
    #[serde(default)]
    pub policies: BTreeMap<String, PolicySettings>,
    /// Canary versions, by policy name (`docs/policy-lifecycle.md`): kept
    /// here, they come back after a restart.
    #[serde(default)]
    pub canary: BTreeMap<String, CanaryConfig>,
    /// The file this was read from, to place errors found after parsing.
    #[serde(skip)]
    source: ConfigSource,
}

/// The configuration's path and text: errors found once the values are
/// read (a required key directory that holds no key) still name the line.
#[derive(Debug, Clone, Default)]
struct ConfigSource {
    path: PathBuf,
    text: String,
}

/// `[metrics]`: where `GET /metrics` is served; the command line's
/// `--metrics` wins.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MetricsSettings {
    /// An address and port, such as `127.0.0.1:9560`; no endpoint when absent.
    pub listen: Option<ListenAddr>,
}

/// A socket address, validated while parsing so that a bad one is reported
/// with its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddr(pub std::net::SocketAddr);

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map(ListenAddr).map_err(|_| {
            serde::de::Error::custom(format!(
                "{text:?} is not an address and port, such as \"127.0.0.1:9560\" or \"[::1]:9560\""
            ))
        })
    }
}

/// `[canary.NAME]`: a file that runs as the canary of policy NAME in a
/// scope, judged as the health keys say; or, with `promote = true`, as the
/// version of NAME everywhere.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CanaryConfig {
    pub file: PathBuf,
    #[serde(default)]
    pub netns: Vec<String>,
    #[serde(default)]
    pub prefixes: Vec<String>,
    pub metric: Option<String>,
    pub margin: Option<f64>,
    pub window_seconds: Option<u64>,
    pub compare: Option<String>,
    pub min_connections: Option<usize>,
    pub min_bytes: Option<u64>,
    #[serde(default)]
    pub promote: bool,
}

impl CanaryConfig {
    /// Its scope and how it is judged; the error names the field.
    pub fn resolve(
        &self,
    ) -> Result<(crate::canary::scope::CanaryScope, crate::canary::health::HealthSettings), (String, String)> {
        if !self.file.is_absolute() {
            return Err(("file".into(), format!("{} is not an absolute path", self.file.display())));
        }
        let scope = crate::canary::scope::CanaryScope::parse(&self.netns, &self.prefixes).map_err(|e| {
            let field = if self.prefixes.is_empty() { "netns" } else { "prefixes" };
            (field.to_string(), e.to_string())
        })?;
        let request = crate::canary::health::HealthRequest {
            metric: self.metric.clone(),
            margin: self.margin,
            window_seconds: self.window_seconds,
            compare: self.compare.clone(),
            min_connections: self.min_connections,
            min_bytes: self.min_bytes,
        };
        let health = request.resolve(&scope).map_err(|(field, problem)| (field.to_string(), problem))?;
        Ok((scope, health))
    }
}

/// A journal bound below this would compact at nearly every change.
pub const MIN_JOURNAL_BYTES: u64 = 64 << 10;

/// Where a policy on offer comes from, which decides whether it runs when
/// the configuration does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Built into the host: runs unless disabled.
    Builtin,
    /// A file the configuration declares as the replacement of the built-in
    /// of its name: the administrator chose it, so it runs like a built-in.
    Replacement,
    /// Any other file: runs only once enabled.
    File,
}

/// What the administrator says about one policy, by its manifest name.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PolicySettings {
    /// Whether it runs; when absent, built-ins run and files do not (unless
    /// `enable-policy-files`). Resolved by [`AdminConfig::settings_for`].
    pub enabled: Option<bool>,
    /// A policy file of this name replaces the built-in one (a new version
    /// of it, hot-swapped); without this, such a file is refused.
    #[serde(default)]
    pub replace_builtin: bool,
    /// Passed to the policy's `init` as `config.settings`.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// Narrowing of the policy's sysctl grants, by sysctl name.
    #[serde(default)]
    pub sysctl: BTreeMap<String, SysctlNarrowing>,
    /// Narrowing of the policy's `[tcp]` (per-destination) grant.
    pub tcp: Option<TcpNarrowing>,
    /// When the policy is unloaded (file removed, or disabled), restore the
    /// values it set; by default they stay.
    #[serde(default)]
    pub rollback_on_unload: bool,
    /// The only file content this policy may have (`sha256:` and the hex
    /// digest `wasmtune policy info` prints). Applies to files: a built-in
    /// is part of the binary, so a pin on a built-in's name binds only the
    /// file that replaces it.
    pub digest: Option<PolicyDigest>,
    /// A file of this policy must carry a good signature by a trusted key
    /// (as `require-signatures` asks of every file).
    pub signed: Option<Spanned<bool>>,
}

/// A policy file's SHA-256, as the administrator pins it: `sha256:` and 64
/// hexadecimal digits. Validated while parsing, so that a malformed pin is
/// reported with its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDigest(String);

impl PolicyDigest {
    pub const PREFIX: &'static str = "sha256:";

    pub fn parse(text: &str) -> Result<PolicyDigest, String> {
        let problem = || {
            format!(
                "{text:?} is not a policy digest: expected {}<64 hexadecimal digits>, as `wasmtune policy info` \
                 prints it",
                Self::PREFIX
            )
        };
        let hex = text.strip_prefix(Self::PREFIX).ok_or_else(problem)?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(problem());
        }
        Ok(PolicyDigest(hex.to_ascii_lowercase()))
    }

    /// The lower-case hex digest, as the host computes a file's.
    pub fn hex(&self) -> &str {
        &self.0
    }

    /// Whether `hex` (a file's digest as the host computes it) is this one.
    pub fn matches(&self, hex: &str) -> bool {
        self.0.eq_ignore_ascii_case(hex)
    }
}

impl std::fmt::Display for PolicyDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", Self::PREFIX, self.0)
    }
}

impl<'de> Deserialize<'de> for PolicyDigest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        PolicyDigest::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Narrows one granted sysctl: the effective range is the intersection with
/// the manifest's; `deny` removes the grant.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SysctlNarrowing {
    pub min: Option<i64>,
    pub max: Option<i64>,
    #[serde(default)]
    pub deny: bool,
    /// Grants a tunable outside the host's table (`min` and `max` then
    /// required): the administrator's explicit decision, never a manifest's.
    #[serde(default)]
    pub allow: bool,
    /// For text sysctls: the subset of the manifest's values allowed.
    pub values: Option<Vec<String>>,
}

/// Narrows a policy's `[tcp]` grant. Each field present is intersected with
/// the manifest's (a list with the manifest's list, prefixes so that a peer
/// must fall in both, bounds with bounds); an absent field leaves the
/// manifest's as it is. Nothing here can widen a grant.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TcpNarrowing {
    /// The algorithms it may choose, of those the manifest grants.
    pub congestion: Option<Vec<String>>,
    /// Peer prefixes ("10.0.0.0/8", "fd00::/8", an address alone).
    pub prefixes: Option<Vec<String>>,
    pub initial_cwnd: Option<BoundsNarrowing>,
    pub window_clamp: Option<BoundsNarrowing>,
    pub syn_rto_ms: Option<BoundsNarrowing>,
    /// `false` takes away TCP_NODELAY; `true` cannot grant it.
    pub no_delay: Option<bool>,
    /// Removes the `[tcp]` grant altogether.
    #[serde(default)]
    pub deny: bool,
}

/// Bounds intersected with the manifest's range.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoundsNarrowing {
    pub min: Option<u32>,
    pub max: Option<u32>,
}

/// The learning rate, 0 (cautious) to 4 (fast), validated while parsing so
/// that a bad value is reported with its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LearningRate(u8);

impl LearningRate {
    pub const MAX: u8 = 4;
    pub const DEFAULT: LearningRate = LearningRate(4);

    pub fn new(rate: u8) -> Result<LearningRate, String> {
        if rate <= Self::MAX { Ok(LearningRate(rate)) } else { Err(format!("learning rate {rate} is not in 0..=4")) }
    }

    pub fn get(self) -> u8 {
        self.0
    }

    /// How close to a limit is "near" it: within `limit >> shift`, one
    /// policy step at this rate. The kernel-side filters (BPF, the /proc
    /// poller, the start-up socket walk) take this shift, and policies step
    /// with the SDK's `wasmtune_sdk::rate::step_shift`; the two must agree
    /// (a test holds them equal), or events and decisions disagree about
    /// "nearly full".
    pub const fn near_limit_shift(self) -> u32 {
        6 - self.0 as u32
    }
}

impl<'de> Deserialize<'de> for LearningRate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = i64::deserialize(d)?;
        u8::try_from(raw)
            .map_err(|_| format!("learning rate {raw} is not in 0..=4"))
            .and_then(LearningRate::new)
            .map_err(serde::de::Error::custom)
    }
}

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// Syntax, an unknown field or a bad value.
    #[error("{path}: line {line}, column {column} (`{text}`): {message}")]
    Parse { path: PathBuf, line: usize, column: usize, text: String, message: String },
    /// Well-formed but contradictory.
    #[error("{path}: {field}: {problem}")]
    Invalid { path: PathBuf, field: String, problem: String },
    /// Well-formed, but what it asks for cannot be done (signatures
    /// required with no key to check them), found after parsing.
    #[error("{path}: line {line}, column {column} (`{text}`): {field}: {problem}")]
    Placed { path: PathBuf, line: usize, column: usize, text: String, field: String, problem: String },
}

impl TcpNarrowing {
    /// Refuses prefixes that are not prefixes and bounds that hold nothing;
    /// the error is the field's full name and what is wrong with it.
    fn validate(&self, policy: &str) -> Result<(), (String, String)> {
        for prefix in self.prefixes.iter().flatten() {
            if crate::peer::parse_prefix(prefix).is_none() {
                return Err((
                    format!("policies.{policy}.tcp.prefixes"),
                    format!("{prefix:?} is not an address or an address/length prefix"),
                ));
            }
        }
        let bounds =
            [("initial-cwnd", self.initial_cwnd), ("window-clamp", self.window_clamp), ("syn-rto-ms", self.syn_rto_ms)];
        for (name, bounds) in bounds {
            if let Some(BoundsNarrowing { min: Some(min), max: Some(max) }) = bounds
                && min > max
            {
                return Err((format!("policies.{policy}.tcp.{name}"), format!("min {min} is above max {max}")));
            }
        }
        Ok(())
    }
}

impl AdminConfig {
    /// Loads `path`. A missing file is an error only when `required` (the
    /// administrator named it); the default location may simply be absent.
    pub fn load(path: &Path, required: bool) -> Result<AdminConfig, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => return Ok(AdminConfig::default()),
            Err(source) => return Err(ConfigError::Read { path: path.to_path_buf(), source }),
        };
        AdminConfig::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<AdminConfig, ConfigError> {
        let mut config: AdminConfig = toml::from_str(text).map_err(|e| {
            let (line, column) = crate::text::line_column(text, &e);
            let text = text.lines().nth(line - 1).unwrap_or("").trim().to_string();
            ConfigError::Parse { path: path.to_path_buf(), line, column, text, message: e.message().to_string() }
        })?;
        config.source = ConfigSource { path: path.to_path_buf(), text: text.to_string() };
        if let Some(dir) = &config.keys_dir
            && !dir.get_ref().is_absolute()
        {
            return Err(config.error_at(
                dir.span(),
                "keys-dir",
                format!("{} is not an absolute path", dir.get_ref().display()),
            ));
        }
        if let Some(bytes) = config.journal_max_bytes
            && bytes < MIN_JOURNAL_BYTES
        {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                field: "journal-max-bytes".into(),
                problem: format!("{bytes} is below the least useful size, {MIN_JOURNAL_BYTES}"),
            });
        }
        for (policy, settings) in &config.policies {
            for (name, narrowing) in &settings.sysctl {
                if let (Some(min), Some(max)) = (narrowing.min, narrowing.max)
                    && min > max
                {
                    return Err(ConfigError::Invalid {
                        path: path.to_path_buf(),
                        field: format!("policies.{policy}.sysctl.\"{name}\""),
                        problem: format!("min {min} is above max {max}"),
                    });
                }
            }
        }
        for (policy, canary) in &config.canary {
            canary.resolve().map_err(|(field, problem)| ConfigError::Invalid {
                path: path.to_path_buf(),
                field: format!("canary.{policy}.{field}"),
                problem,
            })?;
        }
        for (policy, settings) in &config.policies {
            if let Some(tcp) = &settings.tcp {
                tcp.validate(policy).map_err(|(field, problem)| ConfigError::Invalid {
                    path: path.to_path_buf(),
                    field,
                    problem,
                })?;
            }
        }
        Ok(config)
    }

    /// An error about the value at `span` (a [`Spanned`] field's), placed
    /// by file, line and column and named by its field.
    pub fn error_at(&self, span: Range<usize>, field: &str, problem: String) -> ConfigError {
        let (line, column) = crate::text::line_column_at(&self.source.text, span.start);
        let text = self.source.text.lines().nth(line - 1).unwrap_or("").trim().to_string();
        ConfigError::Placed { path: self.source.path.clone(), line, column, text, field: field.to_string(), problem }
    }

    /// Where signatures are asked for, first: `require-signatures = true`,
    /// else the first policy with `signed = true`; its place and field name.
    pub fn first_signature_requirement(&self) -> Option<(Range<usize>, String)> {
        if let Some(required) = &self.require_signatures
            && *required.get_ref()
        {
            return Some((required.span(), "require-signatures".to_string()));
        }
        self.policies.iter().find_map(|(name, settings)| {
            let signed = settings.signed.as_ref().filter(|s| *s.get_ref())?;
            Some((signed.span(), format!("policies.{name}.signed")))
        })
    }

    /// Where the trusted public keys are.
    pub fn keys_dir(&self) -> PathBuf {
        self.keys_dir.as_ref().map_or_else(|| PathBuf::from(crate::paths::DEFAULT_KEYS_DIR), |d| d.get_ref().clone())
    }

    pub fn policy(&self, name: &str) -> PolicySettings {
        self.policies.get(name).cloned().unwrap_or_default()
    }

    /// The settings of `name`, with whether it runs decided: what the
    /// configuration says, else by where the policy comes from.
    pub fn settings_for(&self, name: &str, origin: Origin) -> PolicySettings {
        let mut settings = self.policy(name);
        let by_default = match origin {
            Origin::Builtin | Origin::Replacement => true,
            Origin::File => self.enable_policy_files.unwrap_or(false),
        };
        settings.enabled = Some(settings.enabled.unwrap_or(by_default));
        settings
    }

    /// Whether a file named `name` may replace the built-in of that name.
    pub fn replaces_builtin(&self, name: &str) -> bool {
        self.policies.get(name).is_some_and(|p| p.replace_builtin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file packages install as /etc/wasmtune/config.toml: as shipped it
    /// is the default configuration; with every key uncommented it still
    /// parses, and the values it shows are the defaults the daemon uses.
    #[test]
    fn the_packaged_configuration_shows_the_defaults() {
        let shipped = include_str!("../../packaging/config.toml");
        let path = Path::new("packaging/config.toml");
        let as_shipped = AdminConfig::parse(shipped, path).expect("parses as shipped");
        assert!(as_shipped.learning_rate.is_none() && as_shipped.policies.is_empty(), "everything commented out");
        let uncommented: Vec<&str> = shipped
            .lines()
            .map(|line| match line.strip_prefix('#') {
                Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase() || c == '[') => rest,
                _ => line,
            })
            .collect();
        let shown = AdminConfig::parse(&uncommented.join("\n"), path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(shown.learning_rate, Some(LearningRate(4)));
        assert_eq!(shown.respect_sysctl_d, Some(true));
        assert_eq!(shown.enable_policy_files, Some(false));
        // The ledger compacts at 8 MiB (`ledger::COMPACT_AT_BYTES`, declared after this module).
        assert_eq!(shown.journal_max_bytes, Some(8 << 20));
        assert_eq!(shown.keys_dir().to_str(), Some(crate::paths::DEFAULT_KEYS_DIR));
        let tcp_buffer = shown.policy("tcp-buffer");
        assert_eq!(tcp_buffer.enabled, Some(true));
        assert!(!tcp_buffer.replace_builtin && !tcp_buffer.rollback_on_unload);
        assert!(shown.metrics.is_some_and(|m| m.listen.is_none()), "no metrics endpoint unless asked for");
    }

    #[test]
    fn the_metrics_address_is_checked_where_it_is_written() {
        let c = parse("[metrics]\nlisten = \"127.0.0.1:9560\"\n").expect("valid");
        assert_eq!(c.metrics.and_then(|m| m.listen).map(|a| a.0.to_string()).as_deref(), Some("127.0.0.1:9560"));
        let err = parse("\n[metrics]\nlisten = \"localhost\"\n").expect_err("no port").to_string();
        assert!(err.starts_with("/etc/wasmtune/config.toml: line 3, column 10 (`listen = \"localhost\"`)"), "{err}");
        assert!(err.contains("is not an address and port"), "{err}");
        let err = parse("[metrics]\nport = 9560\n").expect_err("unknown key").to_string();
        assert!(err.contains("unknown field `port`"), "{err}");
    }

    #[test]
    fn the_near_limit_shift_is_the_sdks_step_shift() {
        for rate in 0..=LearningRate::MAX {
            let ours = LearningRate::new(rate).expect("in range").near_limit_shift();
            assert_eq!(ours, wasmtune_sdk::rate::step_shift(rate), "learning rate {rate}");
        }
    }

    fn parse(text: &str) -> Result<AdminConfig, ConfigError> {
        AdminConfig::parse(text, Path::new("/etc/wasmtune/config.toml"))
    }

    #[test]
    fn empty_file_means_defaults() {
        let c = parse("").expect("empty is fine");
        assert!(c.learning_rate.is_none());
        assert_eq!(c.settings_for("tcp-buffer", Origin::Builtin).enabled, Some(true));
        assert_eq!(c.settings_for("third-party", Origin::File).enabled, Some(false));
    }

    #[test]
    fn narrows_and_disables() {
        let c = parse(
            r#"
learning-rate = 2
[policies.tcp-buffer]
enabled = false
settings = { mode = "gentle" }
[policies.tcp-buffer.sysctl."net.ipv4.tcp_rmem"]
max = 16777216
"#,
        )
        .expect("valid");
        assert_eq!(c.learning_rate, Some(LearningRate(2)));
        let p = c.policy("tcp-buffer");
        assert_eq!(p.enabled, Some(false));
        assert_eq!(p.settings.get("mode").map(String::as_str), Some("gentle"));
        assert_eq!(p.sysctl["net.ipv4.tcp_rmem"].max, Some(16_777_216));
    }

    #[test]
    fn bad_learning_rate_names_file_and_line() {
        let err = parse("\n\nlearning-rate = 9\n").expect_err("out of range").to_string();
        assert!(err.contains("/etc/wasmtune/config.toml"), "{err}");
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("0..=4"), "{err}");
    }

    #[test]
    fn unknown_field_is_rejected() {
        let err = parse("[policies.tcp-buffer]\nenable = true\n").expect_err("typo").to_string();
        assert!(err.contains("enable"), "{err}");
    }

    #[test]
    fn contradictory_range_is_rejected() {
        let err = parse("[policies.x.sysctl.\"net.core.somaxconn\"]\nmin = 10\nmax = 1\n").expect_err("min > max");
        assert!(matches!(err, ConfigError::Invalid { .. }));
    }

    #[test]
    fn policy_files_run_only_when_the_administrator_says_so() {
        let c = parse("[policies.vendor-tuner]\nenabled = true\n[policies.tcp-buffer]\nreplace-builtin = true\n")
            .expect("valid");
        assert_eq!(c.settings_for("vendor-tuner", Origin::File).enabled, Some(true));
        assert_eq!(c.settings_for("other-vendor", Origin::File).enabled, Some(false));
        assert!(c.replaces_builtin("tcp-buffer") && !c.replaces_builtin("route"));
        assert_eq!(c.settings_for("tcp-buffer", Origin::Replacement).enabled, Some(true));
        let all = parse("enable-policy-files = true\n[policies.noisy]\nenabled = false\n").expect("valid");
        assert_eq!(all.settings_for("other-vendor", Origin::File).enabled, Some(true));
        assert_eq!(all.settings_for("noisy", Origin::File).enabled, Some(false));
    }

    #[test]
    fn narrows_the_tcp_grant() {
        let c = parse(
            r#"
[policies.tcp-cong.tcp]
congestion = ["cubic", "bbr"]
prefixes = ["10.0.0.0/8", "fd00::/8"]
initial-cwnd = { min = 4, max = 40 }
no-delay = false
"#,
        )
        .expect("valid");
        let tcp = c.policy("tcp-cong").tcp.expect("narrowed");
        assert_eq!(tcp.congestion, Some(vec!["cubic".to_string(), "bbr".to_string()]));
        assert_eq!(tcp.prefixes.map(|p| p.len()), Some(2));
        assert_eq!(tcp.initial_cwnd.map(|b| (b.min, b.max)), Some((Some(4), Some(40))));
        assert_eq!(tcp.no_delay, Some(false));
        assert!(!tcp.deny);
        assert!(c.policy("tcp-buffer").tcp.is_none());
    }

    #[test]
    fn an_unknown_tcp_key_names_file_line_column_and_field() {
        let err = parse("[policies.tcp-cong.tcp]\ncongestion = [\"bbr\"]\nprefix = [\"10.0.0.0/8\"]\n")
            .expect_err("typo")
            .to_string();
        assert!(err.starts_with("/etc/wasmtune/config.toml: line 3, column 1 (`prefix = [\"10.0.0.0/8\"]`)"), "{err}");
        assert!(err.contains("unknown field `prefix`"), "{err}");
        let err =
            parse("[policies.tcp-cong.tcp]\ninitial-cwnd = { min = 4, most = 9 }\n").expect_err("typo").to_string();
        assert!(err.contains("line 2") && err.contains("`most`"), "{err}");
    }

    #[test]
    fn a_malformed_digest_pin_names_file_line_and_field() {
        let digest = "ab".repeat(32);
        let c =
            parse(&format!("[policies.vendor-tuner]\ndigest = \"sha256:{}\"\nsigned = true\n", digest.to_uppercase()))
                .expect("valid");
        let p = c.policy("vendor-tuner");
        assert_eq!(p.digest.as_ref().map(PolicyDigest::hex), Some(digest.as_str()));
        assert_eq!(p.signed.map(|s| s.into_inner()), Some(true));
        assert_eq!(
            c.first_signature_requirement().map(|(_, field)| field).as_deref(),
            Some("policies.vendor-tuner.signed")
        );
        for bad in [digest.as_str(), "sha256:abc", "sha512:00", &format!("sha256:{}zz", "0".repeat(62))] {
            let err = parse(&format!("\n[policies.vendor-tuner]\ndigest = \"{bad}\"\n")).expect_err(bad).to_string();
            assert!(err.starts_with("/etc/wasmtune/config.toml: line 3, column 10 (`digest = "), "{err}");
            assert!(err.contains("is not a policy digest"), "{err}");
        }
    }

    #[test]
    fn a_relative_key_directory_is_refused_where_it_is_written() {
        let err = parse("require-signatures = true\nkeys-dir = \"keys\"\n").expect_err("relative");
        assert!(matches!(&err, ConfigError::Placed { line: 2, field, .. } if field == "keys-dir"), "{err}");
        let c = parse("require-signatures = true\n").expect("valid");
        assert_eq!(c.keys_dir(), PathBuf::from(crate::paths::DEFAULT_KEYS_DIR));
        assert_eq!(c.first_signature_requirement().map(|(_, field)| field).as_deref(), Some("require-signatures"));
        assert!(parse("require-signatures = false\n").expect("valid").first_signature_requirement().is_none());
    }

    #[test]
    fn a_bad_tcp_prefix_or_empty_bounds_are_refused_with_the_field() {
        let err = parse("[policies.tcp-cong.tcp]\nprefixes = [\"10.0.0.0/33\"]\n").expect_err("bad prefix");
        assert!(
            matches!(&err, ConfigError::Invalid { field, .. } if field == "policies.tcp-cong.tcp.prefixes"),
            "{err}"
        );
        let err = parse("[policies.tcp-cong.tcp]\nsyn-rto-ms = { min = 900, max = 200 }\n").expect_err("empty");
        assert!(
            matches!(&err, ConfigError::Invalid { field, .. } if field == "policies.tcp-cong.tcp.syn-rto-ms"),
            "{err}"
        );
    }
}
