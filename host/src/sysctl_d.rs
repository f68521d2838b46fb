//! Boot-time sysctl settings: what `systemd-sysctl` (and procps `sysctl
//! --system`) apply at boot, read from the same files, so the daemon knows
//! which tunables the administrator already chose. As in bpftune, a tunable
//! set at boot belongs to the administrator, and no policy may change it.
//!
//! This module only reads the files. It answers, for each sysctl name, which
//! value wins and the file and line that set it. Acting on that answer is the
//! job of [`crate::overrides`].
//!
//! Precedence follows sysctl.d(5):
//! - Only `*.conf` files are read, and hidden files are skipped. A file in a
//!   directory earlier in [`DEFAULT_DIRS`] replaces a file with the same name
//!   in a later directory. A symlink to `/dev/null`, or an empty file, masks
//!   that name and sets nothing.
//! - The files that remain are read in byte order of their file names,
//!   whatever directory they are in. After them, procps reads
//!   [`DEFAULT_MAIN_FILE`]. If a file resolves to a path that was already read
//!   (Debian links `/etc/sysctl.d/99-sysctl.conf` to `../sysctl.conf`), it is
//!   not read again, so it keeps its place in the order.
//! - Within that order, a later assignment to the same key replaces an earlier
//!   one.
//! - A key with a glob character (`*`, `?`, `[`) is a pattern. systemd skips
//!   a pattern for any name that has its own explicit entry, wherever that
//!   entry is in the order. When several patterns match a name, systemd
//!   applies them in order, so the last one wins. A line holding just
//!   `-name`, with no `=`, is an explicit entry that sets nothing: it removes
//!   an earlier assignment and keeps the name out of every pattern.
//!
//! The admin's files must not stop the daemon. A missing directory is normal.
//! Any other I/O problem, and any malformed line, becomes a warning that names
//! the file (and the line), and reading goes on.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// sysctl.d directories, highest priority first (systemd's order; procps adds
/// `/lib/sysctl.d`, which on merged-/usr systems is `/usr/lib/sysctl.d`).
pub const DEFAULT_DIRS: &[&str] =
    &["/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d", "/lib/sysctl.d"];
/// procps reads this after every sysctl.d file.
pub const DEFAULT_MAIN_FILE: &str = "/etc/sysctl.conf";

/// What a masking symlink points at.
const DEV_NULL: &str = "/dev/null";

/// One boot-time assignment: a sysctl name in dotted form (or a pattern), and
/// the value, file and 1-based line that set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootSetting {
    pub name: String,
    pub value: String,
    pub file: PathBuf,
    pub line: usize,
}

impl BootSetting {
    /// Whether this setting is a glob pattern rather than a single name.
    pub fn is_pattern(&self) -> bool {
        is_glob(&self.name)
    }

    /// Whether this setting covers the sysctl `name` (dotted or slash form).
    /// Patterns are matched the way glob(7) matches them under `/proc/sys`:
    /// each dot-separated part is a path component, so `*`, `?` and `[...]`
    /// never match a `.`. For example, `net.ipv4.conf.*.rp_filter` covers
    /// `net.ipv4.conf.eth0.rp_filter` but not `net.ipv4.conf.a.b.rp_filter`.
    pub fn matches(&self, name: &str) -> bool {
        let name = normalize(name);
        if self.is_pattern() { glob_match(&self.name, &name) } else { self.name == name }
    }

    /// `FILE:LINE`, the way admins and editors refer to a line.
    pub fn location(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }
}

/// The boot-time settings that win, after every file was read in order.
#[derive(Debug, Default)]
pub struct BootSettings {
    /// Explicit names and their winning assignments.
    exact: BTreeMap<String, BootSetting>,
    /// Names that a value-less `-name` line keeps out of every pattern.
    excluded: BTreeSet<String>,
    /// Patterns in application order: the last one matching a name wins.
    patterns: Vec<BootSetting>,
    /// Unreadable paths and malformed lines, each naming its file (and line).
    pub warnings: Vec<String>,
}

impl BootSettings {
    /// Reads the `*.conf` files in `dirs` (highest priority first), and then
    /// `main_file` if one is given. Never fails: problems go to
    /// [`BootSettings::warnings`].
    pub fn read(dirs: &[PathBuf], main_file: Option<&Path>) -> BootSettings {
        let mut settings = BootSettings::default();
        let files = settings.list(dirs);
        let mut read = HashSet::new();
        for path in files.values() {
            settings.read_file(path, &mut read);
        }
        if let Some(main_file) = main_file {
            settings.read_file(main_file, &mut read);
        }
        settings
    }

    /// Reads the same files as `systemd-sysctl` and `sysctl --system` at boot.
    pub fn read_default() -> BootSettings {
        let dirs: Vec<PathBuf> = DEFAULT_DIRS.iter().map(PathBuf::from).collect();
        BootSettings::read(&dirs, Some(Path::new(DEFAULT_MAIN_FILE)))
    }

    /// The setting that wins at boot for the sysctl `name` (dotted or slash
    /// form). This is its own explicit assignment if it has one; if not, it
    /// is the last pattern that matches it. A `-name` line means no pattern
    /// applies.
    pub fn get(&self, name: &str) -> Option<&BootSetting> {
        let name = normalize(name);
        if let Some(setting) = self.exact.get(&name) {
            return Some(setting);
        }
        if self.excluded.contains(&name) {
            return None;
        }
        self.patterns.iter().rev().find(|pattern| glob_match(&pattern.name, &name))
    }

    /// How many winning assignments there are, counting each pattern once.
    pub fn len(&self) -> usize {
        self.exact.len() + self.patterns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every winning assignment: explicit names in name order, then patterns
    /// in application order.
    pub fn iter(&self) -> impl Iterator<Item = &BootSetting> {
        self.exact.values().chain(self.patterns.iter())
    }

    /// The `*.conf` files that survive masking, keyed and ordered by file name.
    /// `OsString` sorts by bytes, like systemd's `strcmp`.
    fn list(&mut self, dirs: &[PathBuf]) -> BTreeMap<OsString, PathBuf> {
        let mut files = BTreeMap::new();
        for dir in dirs {
            let entries = match fs::read_dir(dir) {
                Ok(entries) => entries,
                Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                Err(error) => {
                    self.warnings.push(format!("{}: cannot list: {error}", dir.display()));
                    continue;
                }
            };
            for entry in entries {
                match entry {
                    Ok(entry) => {
                        let name = entry.file_name();
                        if is_config_name(&name) {
                            // Directories come highest priority first, so the first file
                            // with a given name is the one that counts.
                            files.entry(name).or_insert_with(|| entry.path());
                        }
                    }
                    Err(error) => self.warnings.push(format!("{}: cannot list: {error}", dir.display())),
                }
            }
        }
        files
    }

    /// Reads one file unless it masks, or unless it resolves to a path that
    /// was already read.
    fn read_file(&mut self, path: &Path, read: &mut HashSet<PathBuf>) {
        let resolved = match fs::canonicalize(path) {
            Ok(resolved) => resolved,
            // The file is gone, or it is a dangling symlink. systemd passes over both in
            // silence.
            Err(error) if error.kind() == io::ErrorKind::NotFound => return,
            Err(error) => {
                self.warnings.push(format!("{}: cannot resolve: {error}", path.display()));
                return;
            }
        };
        if resolved == Path::new(DEV_NULL) {
            return;
        }
        if !read.insert(resolved.clone()) {
            return;
        }
        // Read regular files only: a FIFO would block the daemon.
        match fs::metadata(&resolved) {
            Ok(metadata) if metadata.is_file() => {}
            Ok(_) => {
                self.warnings.push(format!("{}: not a regular file, ignoring", path.display()));
                return;
            }
            Err(error) => {
                self.warnings.push(format!("{}: cannot read: {error}", path.display()));
                return;
            }
        }
        match fs::read(&resolved) {
            Ok(bytes) => self.parse(path, &String::from_utf8_lossy(&bytes)),
            Err(error) => self.warnings.push(format!("{}: cannot read: {error}", path.display())),
        }
    }

    /// Applies one file's lines in order, with systemd's line syntax.
    fn parse(&mut self, file: &Path, text: &str) {
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with(['#', ';']) {
                continue;
            }
            // A leading `-` only means "do not fail the boot if this cannot be
            // written". The assignment still counts.
            let (key, value) = match trimmed.split_once('=') {
                Some((key, value)) => (key.strip_prefix('-').unwrap_or(key), Some(value.trim())),
                None => match trimmed.strip_prefix('-') {
                    Some(key) => (key, None),
                    None => {
                        self.warnings
                            .push(format!("{}:{line}: not an assignment, ignoring: {trimmed}", file.display()));
                        continue;
                    }
                },
            };
            let key = key.trim();
            // `!pattern` exclusions only narrow what a pattern writes. They
            // never give a name a value, so they are skipped.
            if key.starts_with('!') {
                continue;
            }
            let name = normalize(key);
            if name.is_empty() {
                self.warnings.push(format!("{}:{line}: no sysctl name, ignoring: {trimmed}", file.display()));
                continue;
            }
            match value {
                Some(value) => {
                    self.assign(BootSetting { name, value: value.to_string(), file: file.to_path_buf(), line })
                }
                None => self.exclude(name),
            }
        }
    }

    fn assign(&mut self, setting: BootSetting) {
        if !setting.is_pattern() {
            self.excluded.remove(&setting.name);
            self.exact.insert(setting.name.clone(), setting);
            return;
        }
        match self.patterns.iter().position(|pattern| pattern.name == setting.name) {
            // systemd leaves a repeat with the same value where the first one
            // was. That position decides which of two overlapping patterns is
            // last. The location still moves to the newer line.
            Some(index) if self.patterns[index].value == setting.value => self.patterns[index] = setting,
            Some(index) => {
                self.patterns.remove(index);
                self.patterns.push(setting);
            }
            None => self.patterns.push(setting),
        }
    }

    /// A value-less `-name` line. systemd stores it as an entry without a
    /// value, so it replaces an earlier assignment to the same key.
    fn exclude(&mut self, name: String) {
        if is_glob(&name) {
            self.patterns.retain(|pattern| pattern.name != name);
        } else {
            self.exact.remove(&name);
            self.excluded.insert(name);
        }
    }
}

/// `*.conf`, not hidden. systemd's conf-files skips hidden entries.
fn is_config_name(name: &OsStr) -> bool {
    let bytes = name.as_encoded_bytes();
    !bytes.starts_with(b".") && bytes.ends_with(b".conf")
}

fn is_glob(name: &str) -> bool {
    name.contains(['*', '?', '['])
}

/// Puts a sysctl key in the dotted form that [`crate::sysctl`] uses. When the
/// first separator is `/`, the key is in path form. There, a `.` belongs to a
/// component (`enp3s0.200`), so `/` and `.` swap:
/// `net/ipv4/conf/enp3s0.200/forwarding` becomes
/// `net.ipv4.conf.enp3s0/200.forwarding`. Empty components are dropped, as
/// systemd's path simplification drops them.
fn normalize(key: &str) -> String {
    let path_form = key.find(['/', '.']).is_some_and(|index| key.as_bytes()[index] == b'/');
    let dotted: String = if path_form {
        key.chars()
            .map(|c| match c {
                '/' => '.',
                '.' => '/',
                c => c,
            })
            .collect()
    } else {
        key.to_string()
    };
    dotted.split('.').filter(|part| !part.is_empty()).collect::<Vec<_>>().join(".")
}

/// Matches dotted `name` against a glob pattern, where `.` separates path
/// components. This supports `*`, `?`, `[...]` (with `!` or `^` to negate,
/// and ranges) and `\` escapes. A `[` with no closing `]` is a literal.
fn glob_match(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    let (mut p, mut n) = (0, 0);
    // Where the latest `*` resumes in the pattern, and the first name char it
    // has not taken yet. Backtracking only to the latest star is enough:
    // stars cannot take a `.`, so each `.` in the pattern has only one
    // place it can go.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some('*') => {
                p += 1;
                star = Some((p, n));
                continue;
            }
            Some(_) => {
                if let Some(next) = match_one(&pattern, p, name[n]) {
                    p = next;
                    n += 1;
                    continue;
                }
            }
            None => {}
        }
        match star {
            Some((resume, taken)) if name[taken] != '.' => {
                star = Some((resume, taken + 1));
                p = resume;
                n = taken + 1;
            }
            _ => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// Matches the single pattern element at `p` (not `*`) against `c`. Returns
/// the index after that element.
fn match_one(pattern: &[char], p: usize, c: char) -> Option<usize> {
    match pattern[p] {
        '?' => (c != '.').then_some(p + 1),
        '[' => match bracket(pattern, p, c) {
            Some((matched, next)) => matched.then_some(next),
            None => (c == '[').then_some(p + 1),
        },
        '\\' if p + 1 < pattern.len() => (pattern[p + 1] == c).then_some(p + 2),
        literal => (literal == c).then_some(p + 1),
    }
}

/// Reads the bracket expression that opens at `open`. Returns whether `c` is
/// in it and the index after its `]`, or `None` if it never closes.
fn bracket(pattern: &[char], open: usize, c: char) -> Option<(bool, usize)> {
    let mut i = open + 1;
    let negated = matches!(pattern.get(i), Some('!' | '^'));
    if negated {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let current = *pattern.get(i)?;
        // A `]` right after the opening bracket is a member, not the end.
        if current == ']' && !first {
            break;
        }
        first = false;
        let (low, next) = if current == '\\' { (*pattern.get(i + 1)?, i + 2) } else { (current, i + 1) };
        match (pattern.get(next), pattern.get(next + 1)) {
            (Some('-'), Some(&high)) if high != ']' => {
                matched |= low <= c && c <= high;
                i = next + 2;
            }
            _ => {
                matched |= low == c;
                i = next;
            }
        }
    }
    Some((c != '.' && matched != negated, i + 1))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// A fake root with the three directories the tests need, highest priority
    /// first.
    struct Root {
        dir: tempfile::TempDir,
    }

    impl Root {
        fn new() -> Root {
            let root = Root { dir: tempfile::tempdir().expect("tempdir") };
            for dir in root.dirs() {
                fs::create_dir_all(dir).expect("create sysctl.d");
            }
            root
        }

        fn dirs(&self) -> Vec<PathBuf> {
            ["etc/sysctl.d", "run/sysctl.d", "usr/lib/sysctl.d"].iter().map(|dir| self.dir.path().join(dir)).collect()
        }

        fn etc(&self) -> PathBuf {
            self.dirs()[0].clone()
        }

        fn usr(&self) -> PathBuf {
            self.dirs()[2].clone()
        }

        fn main_file(&self) -> PathBuf {
            self.dir.path().join("etc/sysctl.conf")
        }

        fn read(&self) -> BootSettings {
            BootSettings::read(&self.dirs(), Some(&self.main_file()))
        }
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, text).expect("write config");
        path
    }

    fn value<'a>(settings: &'a BootSettings, name: &str) -> Option<&'a str> {
        settings.get(name).map(|setting| setting.value.as_str())
    }

    #[test]
    fn higher_priority_directory_masks_a_file_of_the_same_name() {
        let root = Root::new();
        let etc = write(&root.etc(), "50-net.conf", "net.core.rmem_max = 1\n");
        write(&root.usr(), "50-net.conf", "net.core.rmem_max = 2\nnet.core.wmem_max = 3\n");
        let settings = root.read();
        assert_eq!(settings.get("net.core.rmem_max").map(|s| (s.value.as_str(), &s.file)), Some(("1", &etc)));
        assert_eq!(settings.get("net.core.wmem_max"), None, "the masked file must not be read at all");
        assert_eq!(settings.len(), 1);
        assert!(settings.warnings.is_empty(), "{:?}", settings.warnings);
    }

    #[test]
    fn files_are_read_in_name_order_regardless_of_directory() {
        let root = Root::new();
        write(&root.etc(), "10-admin.conf", "net.core.somaxconn = 1024\n");
        let vendor = write(&root.usr(), "90-vendor.conf", "net.core.somaxconn = 4096\n");
        let settings = root.read();
        let setting = settings.get("net.core.somaxconn").expect("set");
        assert_eq!((setting.value.as_str(), &setting.file, setting.line), ("4096", &vendor, 1));
    }

    #[test]
    fn a_later_assignment_wins() {
        let root = Root::new();
        let file = write(&root.etc(), "50-a.conf", "net.core.rmem_max = 1\nnet.core.rmem_max = 2\n");
        let settings = root.read();
        assert_eq!(
            settings.get("net.core.rmem_max"),
            Some(&BootSetting { name: "net.core.rmem_max".into(), value: "2".into(), file, line: 2 })
        );
        assert_eq!(settings.iter().count(), 1);
    }

    #[test]
    fn slash_separators_become_dots_and_dots_in_components_become_slashes() {
        let root = Root::new();
        write(
            &root.etc(),
            "50-a.conf",
            "net/ipv4/tcp_rmem = 4096\t131072 6291456 \nnet/ipv4/conf/enp3s0.200/forwarding=1\n",
        );
        let settings = root.read();
        assert_eq!(value(&settings, "net.ipv4.tcp_rmem"), Some("4096\t131072 6291456"));
        assert_eq!(value(&settings, "net/ipv4/tcp_rmem"), Some("4096\t131072 6291456"));
        assert_eq!(value(&settings, "net.ipv4.conf.enp3s0/200.forwarding"), Some("1"));
        let names: Vec<&str> = settings.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["net.ipv4.conf.enp3s0/200.forwarding", "net.ipv4.tcp_rmem"]);
    }

    #[test]
    fn a_leading_dash_is_stripped_and_the_assignment_counts() {
        let root = Root::new();
        write(&root.etc(), "50-a.conf", "-net.core.rmem_max = 5\n- net.core.wmem_max=6\n");
        let settings = root.read();
        assert_eq!(value(&settings, "net.core.rmem_max"), Some("5"));
        assert_eq!(value(&settings, "net.core.wmem_max"), Some("6"));
    }

    #[test]
    fn comments_and_blank_lines_are_skipped() {
        let root = Root::new();
        write(&root.etc(), "50-a.conf", "# net.core.rmem_max = 1\n\n; net.core.wmem_max = 2\n   # x = 3\n \t\n");
        let settings = root.read();
        assert!(settings.is_empty());
        assert!(settings.warnings.is_empty(), "{:?}", settings.warnings);
    }

    #[test]
    fn a_malformed_line_warns_with_file_and_line_and_reading_goes_on() {
        let root = Root::new();
        let file = write(&root.etc(), "50-a.conf", "# comment\nnet.core.rmem_max = 1\nnot an assignment\n= 4\n");
        write(&root.etc(), "60-b.conf", "net.core.wmem_max = 2\n");
        let settings = root.read();
        assert_eq!(
            settings.warnings,
            [
                format!("{}:3: not an assignment, ignoring: not an assignment", file.display()),
                format!("{}:4: no sysctl name, ignoring: = 4", file.display()),
            ]
        );
        assert_eq!(value(&settings, "net.core.rmem_max"), Some("1"));
        assert_eq!(value(&settings, "net.core.wmem_max"), Some("2"));
    }

    #[test]
    fn a_dev_null_symlink_or_an_empty_file_masks() {
        let root = Root::new();
        symlink(DEV_NULL, root.etc().join("50-vendor.conf")).expect("symlink");
        write(&root.usr(), "50-vendor.conf", "net.core.rmem_max = 1\n");
        write(&root.etc(), "60-vendor.conf", "");
        write(&root.usr(), "60-vendor.conf", "net.core.wmem_max = 2\n");
        let settings = root.read();
        assert!(settings.is_empty(), "{:?}", settings.iter().collect::<Vec<_>>());
        assert!(settings.warnings.is_empty(), "{:?}", settings.warnings);
    }

    #[test]
    fn the_main_file_is_read_last() {
        let root = Root::new();
        write(&root.etc(), "99-zzz.conf", "net.core.rmem_max = 1\n");
        let main = write(root.dir.path().join("etc").as_path(), "sysctl.conf", "net.core.rmem_max = 2\n");
        let settings = root.read();
        assert_eq!(settings.get("net.core.rmem_max").map(|s| (s.value.as_str(), &s.file)), Some(("2", &main)));
        let without_main = BootSettings::read(&root.dirs(), None);
        assert_eq!(value(&without_main, "net.core.rmem_max"), Some("1"));
    }

    #[test]
    fn a_file_reached_twice_is_read_once_in_its_first_place() {
        let root = Root::new();
        write(root.dir.path().join("etc").as_path(), "sysctl.conf", "net.core.rmem_max = main\n");
        // Debian's layout: the main file is also a sysctl.d file.
        let link = root.etc().join("99-sysctl.conf");
        symlink("../sysctl.conf", &link).expect("symlink");
        write(&root.usr(), "99-zzz.conf", "net.core.rmem_max = vendor\n");
        let settings = root.read();
        // Reading the main file again at the end would make "main" win.
        assert_eq!(value(&settings, "net.core.rmem_max"), Some("vendor"));

        fs::remove_file(root.usr().join("99-zzz.conf")).expect("remove");
        let settings = root.read();
        assert_eq!(settings.get("net.core.rmem_max").map(|s| (s.value.as_str(), &s.file)), Some(("main", &link)));
        assert!(settings.warnings.is_empty(), "{:?}", settings.warnings);
    }

    #[test]
    fn a_pattern_covers_names_without_an_explicit_entry() {
        let root = Root::new();
        let early = write(&root.etc(), "10-explicit.conf", "net.ipv4.conf.all.rp_filter = 0\n");
        let patterns = write(
            &root.usr(),
            "50-patterns.conf",
            "net.ipv4.conf.*.rp_filter = 2\n-net.ipv4.conf.lo.rp_filter\nnet.ipv4.conf.eth?.rp_filter = 1\n",
        );
        let settings = root.read();
        // An explicit entry beats a pattern even when the pattern comes later.
        assert_eq!(settings.get("net.ipv4.conf.all.rp_filter").map(|s| &s.file), Some(&early));
        assert_eq!(value(&settings, "net.ipv4.conf.lo.rp_filter"), None);
        // The last pattern that matches wins.
        let eth0 = settings.get("net.ipv4.conf.eth0.rp_filter").expect("eth0");
        assert_eq!((eth0.value.as_str(), &eth0.file, eth0.line), ("1", &patterns, 3));
        assert_eq!(value(&settings, "net.ipv4.conf.enp3s0.rp_filter"), Some("2"));
        assert_eq!(value(&settings, "net.ipv4.conf.enp3s0/200.rp_filter"), Some("2"));
        // `*` stays inside one component.
        assert_eq!(value(&settings, "net.ipv4.conf.a.b.rp_filter"), None);
        assert_eq!(value(&settings, "net.ipv4.conf.eth0.forwarding"), None);
        assert!(eth0.is_pattern() && eth0.matches("net/ipv4/conf/eth1/rp_filter"));
        assert_eq!(settings.len(), 3);
    }

    #[test]
    fn a_value_less_dash_line_cancels_an_earlier_assignment() {
        let root = Root::new();
        write(&root.usr(), "10-vendor.conf", "net.core.rmem_max = 1\nnet.ipv4.conf.*.rp_filter = 2\n");
        write(&root.etc(), "20-admin.conf", "-net.core.rmem_max\n-net.ipv4.conf.*.rp_filter\n");
        let settings = root.read();
        assert!(settings.is_empty(), "{:?}", settings.iter().collect::<Vec<_>>());
        write(&root.etc(), "30-admin.conf", "net.core.rmem_max = 3\n");
        assert_eq!(value(&root.read(), "net.core.rmem_max"), Some("3"));
    }

    #[test]
    fn a_repeated_pattern_with_the_same_value_keeps_its_place() {
        let root = Root::new();
        write(&root.etc(), "50-a.conf", "net.ipv4.conf.*.rp_filter = 2\nnet.ipv4.conf.eth*.rp_filter = 1\n");
        let file = write(&root.etc(), "60-b.conf", "net.ipv4.conf.*.rp_filter = 2\n");
        let settings = root.read();
        assert_eq!(value(&settings, "net.ipv4.conf.eth0.rp_filter"), Some("1"));
        let wildcard = settings.get("net.ipv4.conf.lo.rp_filter").expect("lo");
        assert_eq!((&wildcard.file, wildcard.line), (&file, 1));
    }

    #[test]
    fn only_visible_conf_files_are_read() {
        let root = Root::new();
        write(&root.etc(), "50-a.conf.bak", "net.core.rmem_max = 1\n");
        write(&root.etc(), ".50-a.conf", "net.core.rmem_max = 2\n");
        write(&root.etc(), "README", "net.core.rmem_max = 3\n");
        assert!(root.read().is_empty());
    }

    #[test]
    fn missing_paths_are_silent_and_other_io_errors_warn() {
        let root = Root::new();
        let not_a_dir = write(root.dir.path(), "file", "");
        fs::create_dir(root.etc().join("40-dir.conf")).expect("mkdir");
        symlink(root.dir.path().join("nowhere"), root.etc().join("45-dangling.conf")).expect("symlink");
        write(&root.etc(), "50-a.conf", "net.core.rmem_max = 1\n");
        let dirs = vec![root.dir.path().join("missing"), not_a_dir.clone(), root.etc()];
        let settings = BootSettings::read(&dirs, Some(&root.dir.path().join("missing.conf")));
        assert_eq!(value(&settings, "net.core.rmem_max"), Some("1"));
        assert_eq!(settings.warnings.len(), 2, "{:?}", settings.warnings);
        assert!(settings.warnings[0].starts_with(&format!("{}: cannot list: ", not_a_dir.display())));
        assert_eq!(
            settings.warnings[1],
            format!("{}: not a regular file, ignoring", root.etc().join("40-dir.conf").display())
        );
    }

    #[test]
    fn normalizes_keys_like_systemd() {
        assert_eq!(normalize("net.ipv4.tcp_rmem"), "net.ipv4.tcp_rmem");
        assert_eq!(normalize("net/ipv4/tcp_rmem"), "net.ipv4.tcp_rmem");
        assert_eq!(normalize("/net/ipv4//tcp_rmem/"), "net.ipv4.tcp_rmem");
        assert_eq!(normalize("net.ipv4.conf.enp3s0/200.forwarding"), "net.ipv4.conf.enp3s0/200.forwarding");
        assert_eq!(normalize("net/ipv4/conf/enp3s0.200/forwarding"), "net.ipv4.conf.enp3s0/200.forwarding");
        assert_eq!(normalize("kernel"), "kernel");
    }

    #[test]
    fn globs_match_within_components() {
        let cases = [
            ("net.*.conf", "net.ipv4.conf", true),
            ("net.*.conf", "net.ipv4.x.conf", false),
            ("net.*", "net.a", true),
            ("*", "", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("a*.b", "axx.b", true),
            ("a*", "a.b", false),
            ("eth?", "eth0", true),
            ("eth?", "eth", false),
            ("a?b", "a.b", false),
            ("eth[0-2]", "eth1", true),
            ("eth[0-2]", "eth3", false),
            ("eth[!0-2]", "eth3", true),
            ("eth[^0-2]", "eth1", false),
            ("a[!x]b", "a.b", false),
            ("a[]]b", "a]b", true),
            ("a[b", "a[b", true),
            ("a\\*", "a*", true),
            ("a\\*", "ab", false),
        ];
        for (pattern, name, expected) in cases {
            assert_eq!(glob_match(pattern, name), expected, "{pattern} vs {name}");
        }
    }
}
