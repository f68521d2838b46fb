//! Answers control requests from the daemon's live state: the running
//! policy set and its counters, the policies on offer, the journal's fold,
//! the kernel's current values and the administrator's overrides.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{Value as Json, json};

use super::protocol::{Request, Response};
use crate::actuate::Actuator;
use crate::grants::Arbiter;
use crate::ledger::{PeerEntry, RollbackReport, Summary};
use crate::manifest::Access;
use crate::netns::NetnsRegistry;
use crate::router::PolicySet;
use crate::watcher::{OfferList, Reconciler};

/// What the control socket answers from; a clone answers from the same state.
#[derive(Clone)]
pub struct ControlContext {
    pub policies: Arc<PolicySet>,
    pub offered: OfferList,
    pub reconciler: Arc<Mutex<Reconciler>>,
    pub actuator: Actuator,
    pub arbiter: Arc<Arbiter>,
    pub registry: Arc<NetnsRegistry>,
    pub started: Instant,
    pub dry_run: bool,
    /// Where this daemon's journal lives.
    pub state_dir: std::path::PathBuf,
    /// Tunables policies found missing on this kernel.
    pub missing: Arc<crate::missing::MissingTunables>,
    /// Where policies run.
    pub runtime: Arc<crate::runtime::supervisor::RuntimeProcess>,
}

impl ControlContext {
    pub fn answer(&self, request: &Request) -> Response {
        match request {
            Request::Status => Response::ok(self.status_json()),
            Request::Metrics => Response::ok(json!({ "text": self.metrics_text(crate::metrics::Format::Text) })),
            Request::PolicyList => Response::ok(json!({ "policies": self.policies_json() })),
            Request::PolicyEnable { name } => self.set_enabled(name, true),
            Request::PolicyDisable { name } => self.set_enabled(name, false),
            Request::Summary => Response::ok(summary_json(&self.actuator.summary())),
            Request::Rollback => Response::ok(rollback_json(&self.actuator.rollback())),
            Request::OverrideClear { tunable, netns } => self.clear_override(tunable, netns.as_deref()),
            Request::ShadowStart { file } => self.shadow_start(file),
            Request::ShadowStop { name } => self.shadow_stop(name),
            Request::CanaryStart { file, netns, prefixes, health } => self.canary_start(file, netns, prefixes, health),
            Request::CanaryPromote { name } => self.canary_promote(name),
            Request::CanaryAbort { name } => self.canary_abort(name),
        }
    }

    /// The Prometheus exposition: the live counters, this daemon's status
    /// and the hooks' run counters (`docs/metrics.md`).
    pub fn metrics_text(&self, format: crate::metrics::Format) -> String {
        let hooks = crate::metrics::hooks::run_stats();
        crate::metrics::render(format, &self.status_json(), crate::metrics::global(), hooks.as_deref())
    }

    fn status_json(&self) -> Json {
        json!({
                "pid": std::process::id(),
                "uptime-ms": u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
                "dry-run": self.dry_run,
                "state-dir": self.state_dir.to_string_lossy(),
                "policies": self.policies_json(),
                "tunables": self.tunables_json(),
                "overrides": self.overrides_json(),
                "missing-tunables": self.missing_json(),
                "peers": peers_json(self.actuator.ledger_state().peers()),
                "events-lost-upstream": self.policies.upstream_lost(),
                "runtime": self.runtime_json(),
                "shadows": self.shadows_json(),
                "canaries": self.canaries_json(),
        })
    }

    fn runtime_json(&self) -> serde_json::Value {
        let identity = self.runtime.identity();
        json!({
            "pid": self.runtime.pid(),
            "uid": identity.uid,
            "gid": identity.gid,
            "user": if identity.named { crate::sandbox::RUNTIME_USER } else { "(chosen uid)" },
            "restarts": self.runtime.restarts(),
        })
    }

    fn set_enabled(&self, name: &str, enabled: bool) -> Response {
        // The lock is released before the retired version is stopped: other
        // requests and the directory watcher do not wait for its thread.
        let retired = self.reconciler.lock().unwrap_or_else(|p| p.into_inner()).set_enabled(name, enabled);
        let Some(retired) = retired else {
            return Response::error(format!("no policy named {name:?} is on offer"));
        };
        retired.stop();
        let running = self.policies.get(name).is_some();
        match (enabled, running) {
            (true, false) => {
                Response::error(format!("policy {name} is enabled but did not start; see the daemon's log"))
            }
            _ => Response::ok(json!({ "name": name, "enabled": enabled, "running": running })),
        }
    }

    fn shadow_start(&self, file: &str) -> Response {
        let started = self.reconciler.lock().unwrap_or_else(|p| p.into_inner()).shadow_file(std::path::Path::new(file));
        match started {
            Ok((name, retired)) => {
                retired.stop();
                let running = self.policies.shadows().iter().any(|s| s.name == name);
                if running {
                    Response::ok(json!({ "name": name, "file": file, "running": true }))
                } else {
                    Response::error(format!("the shadow of {name} did not start; see the daemon's log"))
                }
            }
            Err(why) => Response::error(why),
        }
    }

    fn shadow_stop(&self, name: &str) -> Response {
        let stopped = self.reconciler.lock().unwrap_or_else(|p| p.into_inner()).stop_shadow(name);
        match stopped {
            Ok(retired) => {
                retired.stop();
                Response::ok(json!({ "name": name, "running": false }))
            }
            Err(why) => Response::error(why),
        }
    }

    fn canary_start(
        &self,
        file: &str,
        netns: &[String],
        prefixes: &[String],
        health: &crate::canary::health::HealthRequest,
    ) -> Response {
        let scope = match crate::canary::scope::CanaryScope::parse(netns, prefixes) {
            Ok(scope) => scope,
            Err(e) => return Response::error(e.to_string()),
        };
        let health = match health.resolve(&scope) {
            Ok(health) => health,
            Err((field, problem)) => return Response::error(format!("--{field}: {problem}")),
        };
        let request = crate::watcher::CanaryRequest {
            file: std::path::PathBuf::from(file),
            scope: scope.clone(),
            health,
            declared: false,
        };
        let started = self.reconciler.lock().unwrap_or_else(|p| p.into_inner()).start_canary(request);
        match started {
            Ok(name) => Response::ok(json!({ "name": name, "file": file, "scope": scope.to_string() })),
            Err(why) => Response::error(why),
        }
    }

    fn canary_promote(&self, name: &str) -> Response {
        let promoted = self.reconciler.lock().unwrap_or_else(|p| p.into_inner()).promote_canary(name);
        match promoted {
            Ok(retired) => {
                retired.stop();
                let version = self.policies.get(name).map(|w| w.version.clone());
                Response::ok(json!({ "name": name, "promoted": true, "version": version }))
            }
            Err(why) => Response::error(why),
        }
    }

    fn canary_abort(&self, name: &str) -> Response {
        let ended = self.reconciler.lock().unwrap_or_else(|p| p.into_inner()).end_canary(
            name,
            crate::watcher::Ending::Aborted,
            "aborted by the administrator",
        );
        match ended {
            Ok(undone) => Response::ok(json!({ "name": name, "undone": undone, "said": undone.describe() })),
            Err(why) => Response::error(why),
        }
    }

    /// Each canary: its scope, how it is judged and the last verdict; then
    /// the files reverted for their health.
    fn canaries_json(&self) -> Json {
        let running: Vec<Json> = self
            .policies
            .canaries()
            .iter()
            .map(|c| {
                let w = &c.worker;
                let verdict = c.verdict.lock().unwrap_or_else(|p| p.into_inner()).clone();
                json!({
                    "name": w.name,
                    "version": w.version,
                    "source": w.source.to_string(),
                    "digest": w.digest,
                    "state": w.stats.state(),
                    "scope": c.scope.to_string(),
                    "declared": c.declared,
                    "running-ms": u64::try_from(c.started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    "metric": c.health.metric,
                    "margin": c.health.margin,
                    "window-s": c.health.window.as_secs(),
                    "compare": c.health.compare,
                    "min-connections": c.health.min_connections,
                    "events-handled": w.stats.events_handled.load(Ordering::Relaxed),
                    "changes-accepted": w.stats.requests.accepted.load(Ordering::Relaxed),
                    "changes-denied": w.stats.requests.denied.load(Ordering::Relaxed),
                    "faults": w.stats.faults.load(Ordering::Relaxed),
                    "verdict": verdict,
                })
            })
            .collect();
        let reverted: Vec<Json> = self
            .reconciler
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reverted_canaries()
            .into_iter()
            .map(|(name, r)| {
                json!({ "name": name, "state": "reverted", "source": r.source, "digest": r.digest,
                "time": r.time, "why": r.why })
            })
            .collect();
        json!({ "running": running, "reverted": reverted })
    }

    fn netns_name(&self, cookie: u64) -> String {
        self.registry.display_name(cookie)
    }

    /// Each shadow version: what it decided, and how often the live version
    /// of its name decided the same on the same batch.
    fn shadows_json(&self) -> Json {
        let list: Vec<Json> = self
            .policies
            .shadows()
            .iter()
            .map(|w| {
                let counts = w.shadow_book.as_ref().map(|b| b.counts()).unwrap_or_default();
                json!({
                    "name": w.name,
                    "version": w.version,
                    "source": w.source.to_string(),
                    "digest": w.digest,
                    "state": w.stats.state(),
                    "live": self.policies.get(&w.name).is_some(),
                    "events-handled": w.stats.events_handled.load(Ordering::Relaxed),
                    "faults": w.stats.faults.load(Ordering::Relaxed),
                    "decisions": counts.decisions,
                    "agreements": counts.agreements,
                    "disagreements": counts.disagreements,
                    "changes-dropped": counts.changes,
                    "last-differences": counts.last_differences,
                })
            })
            .collect();
        Json::Array(list)
    }

    /// Every policy on offer or running, by name.
    fn policies_json(&self) -> Json {
        let offered = self.offered.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let owners = self.arbiter.owners();
        let totals = self.policies.all_totals();
        let running = self.policies.snapshot();
        let mut names: Vec<String> = offered.keys().cloned().collect();
        names.extend(running.iter().map(|w| w.name.clone()));
        names.sort();
        names.dedup();
        let list: Vec<Json> = names
            .iter()
            .map(|name| {
                let worker = running.iter().find(|w| &w.name == name);
                let offer = offered.get(name);
                let mut owned: Vec<String> = owners
                    .iter()
                    .filter(|(_, _, owner)| owner == name)
                    .map(|(netns, tunable, _)| format!("{}/{tunable}", self.netns_name(*netns)))
                    .collect();
                owned.sort();
                let total = totals.iter().find(|(n, _)| n == name).map(|(_, t)| {
                    json!({
                        "routed": t.routed.load(Ordering::Relaxed),
                        "handled": t.handled.load(Ordering::Relaxed),
                        "lost": t.lost.load(Ordering::Relaxed),
                        "failed": t.failed.load(Ordering::Relaxed),
                        "versions": t.versions.load(Ordering::Relaxed),
                    })
                });
                match worker {
                    Some(w) => json!({
                        "name": name,
                        "version": w.version,
                        "source": w.source.to_string(),
                        "digest": w.digest,
                        "state": w.stats.state(),
                        "events-handled": w.stats.events_handled.load(Ordering::Relaxed),
                        "events-lost": w.stats.events_lost.load(Ordering::Relaxed),
                        "events-failed": w.stats.events_failed.load(Ordering::Relaxed),
                        "faults": w.stats.faults.load(Ordering::Relaxed),
                        "runtime-failures": w.stats.runtime_failures.load(Ordering::Relaxed),
                        "last-fault": w.stats.last_fault(),
                        "queued-batches": w.queued_batches(),
                        "granted-tunables": w.grant.sysctls.iter()
                            .filter(|(_, g)| g.access == Access::Write)
                            .map(|(n, _)| n.clone()).collect::<Vec<_>>(),
                        "owned-tunables": owned,
                        "totals": total,
                    }),
                    None => json!({
                        "name": name,
                        "version": offer.map(|o| o.version.clone()),
                        "source": offer.map(|o| o.source.clone()),
                        "digest": Json::Null,
                        "state": if offer.is_some_and(|o| !o.enabled) { "disabled" } else { "not-running" },
                        "events-handled": 0,
                        "events-lost": 0,
                        "events-failed": 0,
                        "faults": 0,
                        "runtime-failures": 0,
                        "last-fault": Json::Null,
                        "queued-batches": 0,
                        "granted-tunables": Vec::<String>::new(),
                        "owned-tunables": owned,
                        "totals": total,
                    }),
                }
            })
            .collect();
        Json::Array(list)
    }

    /// Every tunable the journal knows a change of, with the kernel's value now.
    fn tunables_json(&self) -> Json {
        let state = self.actuator.ledger_state();
        let list: Vec<Json> = state
            .tunables()
            .iter()
            .map(|(key, history)| {
                let current = match self.actuator.read(history.netns_cookie, &key.tunable) {
                    Ok(value) => Json::String(value.to_string()),
                    Err(_) => Json::Null,
                };
                json!({
                    "netns": key.netns,
                    "tunable": key.tunable,
                    "original": history.original.to_string(),
                    "current": current,
                    "last-written": history.last_written.as_ref().map(ToString::to_string),
                    "changes": history.changes,
                    "overridden": self.actuator.is_overridden(history.netns_cookie, &key.tunable),
                    "last-change": {
                        "policy": history.last_policy,
                        "scenario": history.last_scenario,
                        "reason": history.last_reason,
                        "time-ms": history.last_time,
                    },
                })
            })
            .collect();
        Json::Array(list)
    }

    /// Every override: those seen, and the boot-time settings of tunables a
    /// running policy may write (the others concern no policy).
    fn overrides_json(&self) -> Json {
        let writable = self.policies.with_workers(|workers| {
            workers
                .iter()
                .flat_map(|w| w.grant.sysctls.iter().filter(|(_, g)| g.access == Access::Write))
                .map(|(name, _)| name.clone())
                .collect::<std::collections::BTreeSet<String>>()
        });
        let overrides = self.actuator.overrides();
        let boot = overrides.boot_overrides().into_iter().filter(|o| writable.contains(&o.tunable));
        let list: Vec<Json> = overrides
            .list()
            .into_iter()
            .chain(boot)
            .map(|o| {
                json!({
                    "netns": o.netns,
                    "tunable": o.tunable,
                    "value": o.value,
                    "pid": o.pid,
                    "comm": o.comm,
                    "who": o.who(),
                    "time-ms": o.time_ms,
                    "source": o.source,
                })
            })
            .collect();
        Json::Array(list)
    }

    fn missing_json(&self) -> Json {
        let list: Vec<Json> = self
            .missing
            .list()
            .into_iter()
            .map(|m| json!({ "policy": m.policy, "netns": m.netns, "tunable": m.tunable, "lost": m.lost }))
            .collect();
        Json::Array(list)
    }

    /// Hands a tunable back: forgets the override (on disk too), says so,
    /// and tells the policies subscribed to `admin-override`, which may then
    /// tune it again.
    fn clear_override(&self, tunable: &str, netns: Option<&str>) -> Response {
        if let Err(error) = crate::sysctl::validate_name(tunable) {
            return Response::error(error.to_string());
        }
        let cleared = match self.actuator.overrides().clear(netns, tunable) {
            Ok(cleared) => cleared,
            Err(error) => return Response::error(format!("the override is not cleared: {error}")),
        };
        let mut events = Vec::new();
        for o in &cleared {
            tracing::info!(
                event = "override-cleared",
                tunable = %o.tunable,
                netns = %o.netns,
                "{} in netns {} is handed back to the policies (it was the administrator's since {} set it to ({}))",
                o.tunable,
                o.netns,
                o.who(),
                o.value.as_deref().unwrap_or("unknown")
            );
            if let Some(cookie) = self.registry.cookie_of(&o.netns) {
                events.push(crate::wit::Event::AdminRelease(crate::wit::AdminRelease {
                    netns: cookie,
                    sysctl: o.tunable.clone(),
                }));
            }
        }
        crate::router::dispatch(&events, &self.registry, &self.policies);
        let list: Vec<Json> = cleared.iter().map(|o| json!({ "netns": o.netns, "tunable": o.tunable })).collect();
        Response::ok(json!({ "cleared": list }))
    }
}

/// Per-destination entries in effect, by namespace then peer, each with the
/// policy that owns it.
pub fn peers_json<'a>(peers: impl IntoIterator<Item = &'a PeerEntry>) -> Json {
    let list: Vec<Json> = peers
        .into_iter()
        .map(|peer| {
            json!({
                "netns": peer.netns,
                "peer": peer.peer,
                "settings": peer.settings.to_string(),
                "policy": peer.policy,
                "scenario": peer.scenario,
                "reason": peer.reason,
                "time-ms": peer.time,
            })
        })
        .collect();
    Json::Array(list)
}

pub fn summary_json(summary: &Summary) -> Json {
    json!({
        "dry-run": summary.dry_run,
        "lines": summary.lines(),
        "scenarios": summary.scenarios.iter()
            .map(|s| json!({ "scenario": s.scenario, "changes": s.changes })).collect::<Vec<_>>(),
        "tunables": summary.tunables.iter().map(|t| json!({
            "netns": t.netns,
            "tunable": t.tunable,
            "original": t.original.to_string(),
            "last": t.last.to_string(),
            "changes": t.changes,
            "policy": t.policy,
        })).collect::<Vec<_>>(),
        "peers": peers_json(&summary.peers),
    })
}

pub fn rollback_json(report: &RollbackReport) -> Json {
    json!({
        "complete": report.complete,
        "lines": report.lines(),
        "restored": report.restored.iter().map(|r| json!({
            "netns": r.netns,
            "tunable": r.tunable,
            "from": r.from.to_string(),
            "to": r.to.to_string(),
        })).collect::<Vec<_>>(),
        "skipped": report.skipped.iter().map(|(key, reason)| json!({
            "netns": key.netns,
            "tunable": key.tunable,
            "reason": reason.to_string(),
        })).collect::<Vec<_>>(),
        "peers-removed": peers_json(&report.peers_removed),
        "peers-ended": peers_json(&report.peers_ended),
    })
}
