//! Canary versions in the reconciler: started from `wasmtune policy canary`
//! or a `[canary.NAME]` table, promoted (the file becomes the version of
//! its name everywhere, as a hot swap), aborted, or reverted when its
//! health regressed. Undoing one rolls its changes back from the journal
//! (`Actuator::rollback_canary`); a reverted file is remembered by digest
//! in `<state-dir>/canary-reverted.json` and not started again until it
//! changes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{Reconciler, Retired, announce_namespaces};
use crate::actuate::CanaryRollback;
use crate::canary::health::HealthSettings;
use crate::canary::scope::CanaryScope;
use crate::config::Origin;
use crate::router::Canary;
use crate::runtime::image::PolicySource;
use crate::runtime::worker::PolicyWorker;

/// What a canary is asked to be.
#[derive(Debug, Clone, PartialEq)]
pub struct CanaryRequest {
    pub file: PathBuf,
    pub scope: CanaryScope,
    pub health: HealthSettings,
    /// From the configuration (ended when the table goes), not the command line.
    pub declared: bool,
}

/// A canary file reverted for its health, by policy name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RevertedCanary {
    pub digest: String,
    pub source: String,
    /// Milliseconds since the Unix epoch.
    pub time: u64,
    /// The figures that reverted it.
    pub why: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RevertedFile {
    version: u32,
    reverted: BTreeMap<String, RevertedCanary>,
}

const REVERTED_VERSION: u32 = 1;

/// The reverted canary files, kept across restarts when there is a path.
#[derive(Debug, Default)]
pub struct RevertedCanaries {
    path: Option<PathBuf>,
    reverted: BTreeMap<String, RevertedCanary>,
}

impl RevertedCanaries {
    /// Reads `<state_dir>/canary-reverted.json`; a file that cannot be read
    /// is said once and treated as empty (a reverted file may then run
    /// again as a canary: judged again, it is reverted again).
    pub fn load(state_dir: &Path) -> RevertedCanaries {
        let path = state_dir.join("canary-reverted.json");
        let reverted = match crate::state_file::read::<RevertedFile>(
            &path,
            "canary files reverted for their health",
            |f| f.version,
            REVERTED_VERSION,
        ) {
            Ok(file) => file.map(|f| f.reverted).unwrap_or_default(),
            Err(error) => {
                tracing::warn!(%error, "{error}; no canary file is taken as reverted");
                BTreeMap::new()
            }
        };
        RevertedCanaries { path: Some(path), reverted }
    }

    pub fn get(&self, name: &str, digest: &str) -> Option<&RevertedCanary> {
        self.reverted.get(name).filter(|r| r.digest == digest)
    }

    pub fn list(&self) -> Vec<(String, RevertedCanary)> {
        self.reverted.iter().map(|(n, r)| (n.clone(), r.clone())).collect()
    }

    fn insert(&mut self, name: &str, entry: RevertedCanary) {
        self.reverted.insert(name.to_string(), entry);
        let Some(path) = &self.path else { return };
        let file = RevertedFile { version: REVERTED_VERSION, reverted: self.reverted.clone() };
        if let Err(error) = crate::state_file::write(path, &file) {
            tracing::warn!(%error, "{error}; after a restart the reverted canary of {name} may run again");
        }
    }
}

/// A canary file that is the version of its name everywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    pub file: PathBuf,
    /// `promote = true` in a `[canary.NAME]` table: it ends with the table.
    pub declared: bool,
}

/// The directory a canary file is checked in (its owner and mode, as a
/// policy directory's).
pub(super) fn parent_dir(path: &Path) -> PathBuf {
    path.parent().map_or_else(|| PathBuf::from("/"), Path::to_path_buf)
}

/// How a canary ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// `wasmtune policy abort`, or its table left the configuration.
    Aborted,
    /// Its health regressed beyond the margin.
    Reverted,
}

impl Reconciler {
    /// Keeps reverted canary files in `state_dir` across restarts.
    pub fn keep_reverted_canaries_in(&mut self, state_dir: &Path) {
        self.reverted_canaries = RevertedCanaries::load(state_dir);
    }

    /// The reverted canary files, for status.
    pub fn reverted_canaries(&self) -> Vec<(String, RevertedCanary)> {
        self.reverted_canaries.list()
    }

    /// Starts FILE as the canary of its policy name; its name.
    pub fn start_canary(&mut self, request: CanaryRequest) -> Result<String, String> {
        let path = request.file.clone();
        let image = self
            .shadow_image(&parent_dir(&path), &path)
            .ok_or_else(|| format!("{} cannot run as a canary; see the daemon's log for why", path.display()))?;
        let name = image.name().to_string();
        if let Some(reverted) = self.reverted_canaries.get(&name, &image.digest) {
            return Err(format!(
                "{} was reverted as the canary of {name} ({}); change the file to try again",
                path.display(),
                reverted.why
            ));
        }
        if let Some(running) = self.policies.canary(&name) {
            return Err(format!(
                "a canary of {name} already runs from {} ({}); promote or abort it first",
                running.worker.source, running.scope
            ));
        }
        if let CanaryScope::Netns(names) = &request.scope {
            let registry = &self.ctx.registry;
            let tuned: Vec<String> = registry.list().into_iter().map(|n| registry.display_name(n.cookie)).collect();
            if let Some(unknown) = names.iter().find(|n| !tuned.contains(n)) {
                return Err(format!(
                    "netns {unknown} is not one this daemon tunes (it tunes: {})",
                    if tuned.is_empty() { "none".to_string() } else { tuned.join(", ") }
                ));
            }
        }
        // The administrator's explicit request is the enabling; a name the
        // configuration disables stays disabled.
        let settings = self.settings_for(&name, Origin::Replacement);
        if settings.enabled == Some(false) {
            return Err(format!("policy {name} is disabled by the administrator"));
        }
        self.ctx.canaries.set(&name, request.scope.clone());
        let worker = match PolicyWorker::start_canary(&image, &self.ctx, &settings, self.policies.totals_for(&name)) {
            Ok(worker) => worker,
            Err(error) => {
                self.ctx.canaries.remove(&name);
                return Err(format!("the canary of {name} did not start: {error}"));
            }
        };
        if let CanaryScope::Peers(_) = request.scope {
            announce_namespaces(&worker, &self.ctx.registry);
        } else {
            self.announce_scope(&worker, &request.scope);
        }
        let live = self.policies.get(&name).map_or_else(
            || "no current version".to_string(),
            |w| format!("the current version {} keeps everything else", w.version),
        );
        tracing::info!(event = "canary-started", policy = %name, source = %image.source, scope = %request.scope,
            metric = %request.health.metric, margin = request.health.margin,
            window_s = request.health.window.as_secs(), compare = %request.health.compare,
            "canary of {name} {} from {} acts in {}; {live}; reverted if its {} is more than {:.0} % worse than its {} over {} s",
            image.manifest.policy.version, image.source, request.scope, request.health.metric,
            request.health.margin * 100.0, request.health.compare, request.health.window.as_secs());
        self.policies.insert_canary(Canary {
            worker: Arc::new(worker),
            scope: request.scope.clone(),
            health: request.health.clone(),
            started: Instant::now(),
            declared: request.declared,
            verdict: Default::default(),
        });
        self.canary_requests.insert(name.clone(), request);
        Ok(name)
    }

    /// A namespace canary is told of its namespaces only.
    fn announce_scope(&self, worker: &PolicyWorker, scope: &CanaryScope) {
        if !worker.wants(crate::wit::EventKind::NamespaceChange) {
            return;
        }
        let registry = &self.ctx.registry;
        let known: Vec<_> = crate::runtime::worker::namespace_announcements(registry)
            .into_iter()
            .filter(|e| crate::events::event_netns(e).is_some_and(|n| scope.owns_netns(&registry.display_name(n))))
            .collect();
        if !known.is_empty() {
            worker.deliver(known);
        }
    }

    /// `wasmtune policy promote NAME`: the canary's file becomes the
    /// version of NAME everywhere, as any hot swap (state handed over), until
    /// the daemon stops; declare it in the configuration to keep it.
    pub fn promote_canary(&mut self, name: &str) -> Result<Retired, String> {
        let canary = self.policies.canary(name).ok_or_else(|| format!("no canary of {name} runs"))?;
        let PolicySource::File(path) = canary.worker.source.clone() else {
            return Err(format!("the canary of {name} is not a file"));
        };
        self.promoted.insert(name.to_string(), Promotion { file: path.clone(), declared: false });
        self.enabled_override.insert(name.to_string(), true);
        let mut retired = self.retired();
        self.reconcile_into(&mut retired);
        let running = self.policies.get(name);
        if running.as_ref().is_none_or(|w| w.digest != canary.worker.digest) {
            self.promoted.remove(name);
            return Err(format!("the canary of {name} could not take over everywhere; see the daemon's log"));
        }
        self.policies.remove_canary(name);
        self.ctx.canaries.remove(name);
        self.canary_requests.remove(name);
        tracing::info!(event = "canary-promoted", policy = %name, source = %path.display(),
            "canary of {name} from {} promoted: it is the version of {name} everywhere now", path.display());
        retired.superseded(canary.worker.clone());
        Ok(retired)
    }

    /// Ends the canary of `name`: it stops, the current version takes its
    /// scope again, and what it changed is rolled back from the journal.
    /// `why` goes into the log and the journal's reasons.
    pub fn end_canary(&mut self, name: &str, ending: Ending, why: &str) -> Result<CanaryRollback, String> {
        let canary = self.policies.remove_canary(name).ok_or_else(|| format!("no canary of {name} runs"))?;
        self.ctx.canaries.remove(name);
        canary.worker.stop();
        let undone = self.ctx.actuator.rollback_canary(name, why);
        let request = self.canary_requests.remove(name);
        let source = canary.worker.source.to_string();
        match ending {
            Ending::Aborted => {
                tracing::info!(event = "canary-aborted", policy = %name, source = %source,
                    sysctls = undone.sysctls.len(), peers_restored = undone.peers_restored.len(),
                    peers_removed = undone.peers_removed.len(),
                    "canary of {name} from {source} aborted ({why}): {}; the current version acts in {} again",
                    undone.describe(), canary.scope);
            }
            Ending::Reverted => {
                self.reverted_canaries.insert(
                    name,
                    RevertedCanary {
                        digest: canary.worker.digest.clone(),
                        source: source.clone(),
                        time: crate::ledger::record::now_ms(),
                        why: why.to_string(),
                    },
                );
                tracing::warn!(event = "canary-reverted", policy = %name, source = %source, scope = %canary.scope,
                    sysctls = undone.sysctls.len(), peers_restored = undone.peers_restored.len(),
                    peers_removed = undone.peers_removed.len(),
                    "canary of {name} from {source} reverted: {why}; {}; the current version acts in {} again; \
                     this file is not tried again until it changes",
                    undone.describe(), canary.scope);
                // A declared canary stays declared: it is kept from running
                // by its digest until the file changes.
                if let Some(request) = request.filter(|r| r.declared) {
                    self.canary_requests.insert(name.to_string(), request);
                }
            }
        }
        for line in undone.sysctls.iter().chain(&undone.peers_restored).chain(&undone.peers_removed) {
            tracing::info!(policy = %name, "canary of {name} undone: {line}");
        }
        Ok(undone)
    }

    /// The `[canary.NAME]` tables: promotions first (they decide which file
    /// is the version of a name), then the canaries, started when absent,
    /// restarted when their file or scope changed, ended when their table
    /// went.
    pub(super) fn reconcile_declared_promotions(&mut self) {
        let declared: Vec<(String, PathBuf)> = self
            .config
            .canary
            .iter()
            .filter(|(_, c)| c.promote)
            .map(|(name, c)| (name.clone(), c.file.clone()))
            .collect();
        // A declaration removed (or turned into a canary) ends its promotion.
        self.promoted.retain(|name, p| !p.declared || declared.iter().any(|(n, _)| n == name));
        for (name, file) in declared {
            self.promoted.insert(name.clone(), Promotion { file, declared: true });
            self.enabled_override.entry(name).or_insert(true);
        }
    }

    pub(super) fn reconcile_declared_canaries(&mut self) {
        let mut wanted: BTreeMap<String, CanaryRequest> = BTreeMap::new();
        for (name, table) in self.config.canary.clone() {
            // Promoted (declared so, or by `policy promote`): no canary.
            if table.promote || self.promoted.contains_key(&name) {
                continue;
            }
            match table.resolve() {
                Ok((scope, health)) => {
                    wanted.insert(name, CanaryRequest { file: table.file.clone(), scope, health, declared: true });
                }
                // Checked when the configuration was read.
                Err((field, problem)) => tracing::warn!(policy = %name, "canary.{name}.{field}: {problem}"),
            }
        }
        let running: Vec<(String, Option<CanaryRequest>)> = self
            .policies
            .canaries()
            .iter()
            .filter(|c| c.declared)
            .map(|c| (c.worker.name.clone(), self.canary_requests.get(&c.worker.name).cloned()))
            .collect();
        for (name, request) in running {
            let file_changed = wanted.get(&name).is_some_and(|wanted| {
                let digest =
                    self.shadow_image(&parent_dir(&wanted.file), &wanted.file).map(|image| image.digest.clone());
                digest != self.policies.canary(&name).map(|c| c.worker.digest.clone())
            });
            if file_changed || request.as_ref() != wanted.get(&name) {
                let _ = self.end_canary(&name, Ending::Aborted, "its [canary] table changed or went");
            }
        }
        for (name, request) in wanted {
            if self.policies.canary(&name).is_some() {
                continue;
            }
            // A reverted declared canary keeps its request: not retried
            // while the file is the same.
            let Some(image) = self.shadow_image(&parent_dir(&request.file), &request.file) else { continue };
            if self.reverted_canaries.get(image.name(), &image.digest).is_some() {
                continue;
            }
            if let Err(why) = self.start_canary(request) {
                tracing::warn!(policy = %name, "the canary declared in [canary.{name}] did not start: {why}");
            }
        }
    }
}
