//! `wasmtune:policy/sysctl`: reading and changing sysctls, every call checked
//! against the policy's effective grant, the administrator's overrides,
//! ownership and the rate limit before anything reaches the actuator.
//!
//! A denial is returned to the guest as a value (it can react) and logged
//! once per tunable and kind per interval, so a policy that keeps asking
//! cannot flood the log.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::actuate::{ActuateError, SysctlChange};
use crate::caps::denials::DenialLog;
use crate::caps::kernel::KernelSide;
use crate::caps::shadow::Decision;
use crate::grants::{Arbiter, EffectiveGrant};
use crate::missing::MissingTunables;
use crate::recording::writer::Recorder;
use crate::sysctl::{SysctlError, Value};
use crate::text::{self, printable};
use crate::wit::wasmtune::policy::sysctl::{Change as RequestedChange, Host};
use crate::wit::{Denial, SysctlValue};

/// Accepted changes kept between two batches for comparison; a policy past
/// the change budget cannot have more.
const MAX_DECIDED: usize = 1024;

/// When the actuator's queue is full: retry after this long.
pub const QUEUE_FULL_RETRY_MS: u32 = 100;

/// Counters a policy's requests leave behind, read by status and tests.
#[derive(Debug, Default)]
pub struct RequestCounters {
    pub accepted: AtomicU64,
    pub denied: AtomicU64,
}

/// Everything the sysctl capability needs, shared by a policy's successive
/// instances (a rebuilt instance keeps its counters and log rate limit).
pub struct SysctlCap {
    pub policy: String,
    pub grant: Arc<EffectiveGrant>,
    pub arbiter: Arc<Arbiter>,
    pub kernel: Arc<dyn KernelSide>,
    pub counters: Arc<RequestCounters>,
    pub missing: Arc<MissingTunables>,
    denials: DenialLog,
    /// `--record`: the values read are written down.
    recorder: Option<Arc<Recorder>>,
    /// A shadow version's: its refusals are logged as `shadow-denied`.
    pub shadow: bool,
    /// Changes accepted since the last [`SysctlCap::take_decided`].
    decided: Vec<Decision>,
}

impl SysctlCap {
    pub fn new(
        grant: Arc<EffectiveGrant>,
        arbiter: Arc<Arbiter>,
        kernel: Arc<dyn KernelSide>,
        counters: Arc<RequestCounters>,
        missing: Arc<MissingTunables>,
    ) -> SysctlCap {
        SysctlCap {
            policy: grant.policy.clone(),
            grant,
            arbiter,
            kernel,
            counters,
            missing,
            denials: DenialLog::default(),
            recorder: None,
            shadow: false,
            decided: Vec::new(),
        }
    }

    /// The capability of a shadow version: refusals are `shadow-denied`
    /// (its kernel side, a [`crate::caps::shadow::ShadowKernel`], drops
    /// what it accepts).
    pub fn as_shadow(mut self) -> SysctlCap {
        self.denials = DenialLog::for_shadow();
        self.shadow = true;
        self
    }

    /// The changes accepted since the last call (for comparing a shadow
    /// with the live version, batch by batch).
    pub fn take_decided(&mut self) -> Vec<Decision> {
        std::mem::take(&mut self.decided)
    }

    /// Writes every value read (and every tunable found missing) to `recorder`.
    pub fn recording_to(mut self, recorder: Option<Arc<Recorder>>) -> SysctlCap {
        self.recorder = recorder;
        self
    }

    fn netns_name(&self, netns: u64) -> String {
        self.kernel.netns_name(netns)
    }

    fn check_netns(&self, netns: u64) -> Result<(), Denial> {
        if self.kernel.is_known_tuned(netns) { Ok(()) } else { Err(Denial::UnknownNetns(netns)) }
    }

    /// The kernel's value. A tunable this kernel or namespace does not have
    /// is `unsupported` (a typed outcome the SDK turns into "missing"), and
    /// said once per namespace with what the policy loses.
    fn current(&self, netns: u64, name: &str) -> Result<Value, Denial> {
        let result = self.kernel.read(netns, name);
        if let Some(recorder) = &self.recorder {
            match &result {
                Ok(value) => recorder.sysctl(&self.netns_name(netns), name, Some(value)),
                Err(ActuateError::Sysctl { source: SysctlError::DoesNotExist { .. } }) => {
                    recorder.sysctl(&self.netns_name(netns), name, None);
                }
                Err(_) => {}
            }
        }
        result.map_err(|error| {
            if let ActuateError::Sysctl { source: SysctlError::DoesNotExist { .. } } = &error {
                let purpose = self.grant.sysctls.get(name).and_then(|g| g.purpose.as_deref());
                self.missing.note(&self.policy, &self.netns_name(netns), name, purpose);
                return Denial::Unsupported(format!("{name} does not exist in this network namespace on this kernel"));
            }
            Denial::Unsupported(format!("{name}: {error}"))
        })
    }

    /// The checks, in order; the value the request was checked against.
    fn check_change(&self, change: &RequestedChange, requested: &Value) -> Result<Value, Denial> {
        self.check_netns(change.netns)?;
        self.grant.check_writable(&change.name)?;
        if let Some(why) = self.kernel.scope_refusal(change.netns, None) {
            return Err(Denial::NotGranted(why));
        }
        let current = self.current(change.netns, &change.name)?;
        self.grant.check_change(&change.name, &current, requested)?;
        if self.kernel.is_overridden(change.netns, &change.name) {
            return Err(Denial::AdminOverride(format!(
                "the administrator changed {} in netns {}; it is left alone",
                change.name,
                self.netns_name(change.netns)
            )));
        }
        self.arbiter.admit(&self.policy, change.netns, &change.name, self.kernel.now())?;
        Ok(current)
    }

    fn record_denial(&mut self, netns: u64, tunable: &str, denial: &Denial) {
        self.counters.denied.fetch_add(1, Ordering::Relaxed);
        // A name the grant does not declare is the guest's own string: it
        // is rate-limited as one subject, however many names are invented.
        let subject =
            if self.grant.sysctls.contains_key(tunable) { tunable } else { crate::metrics::counters::NOT_DECLARED };
        if !self.shadow {
            crate::metrics::global().denied(&self.policy, subject, crate::grants::denial_kind(denial));
        }
        let kernel = &self.kernel;
        self.denials.say(&self.policy, subject, denial, || printable(tunable, 128), || kernel.netns_name(netns));
    }
}

impl Host for SysctlCap {
    fn read(&mut self, netns: u64, name: String) -> wasmtime::Result<Result<SysctlValue, Denial>> {
        let result = self
            .check_netns(netns)
            .and_then(|()| self.grant.check_read(&name))
            .and_then(|()| self.current(netns, &name))
            .map(SysctlValue::from);
        Ok(result)
    }

    fn request_change(&mut self, change: RequestedChange) -> wasmtime::Result<Result<(), Denial>> {
        let requested = Value::from(change.value.clone());
        let checked_against = match self.check_change(&change, &requested) {
            Ok(current) => current,
            Err(denial) => {
                self.record_denial(change.netns, &change.name, &denial);
                return Ok(Err(denial));
            }
        };
        let tunable = change.name.clone();
        let netns = change.netns;
        let submitted = SysctlChange {
            policy: self.policy.clone(),
            netns: change.netns,
            tunable: change.name,
            value: requested,
            checked_against: Some(checked_against),
            scenario: text::scenario(&change.scenario),
            reason: text::reason(&change.reason),
        };
        let decision = Decision::of(&submitted, self.netns_name(netns));
        let queued = self.kernel.submit(submitted);
        if !queued {
            let denial = Denial::RateLimited(QUEUE_FULL_RETRY_MS);
            self.record_denial(change.netns, &tunable, &denial);
            return Ok(Err(denial));
        }
        self.counters.accepted.fetch_add(1, Ordering::Relaxed);
        if !self.shadow {
            crate::metrics::global().decided(&self.policy, &tunable);
        }
        if self.decided.len() < MAX_DECIDED {
            self.decided.push(decision);
        }
        Ok(Ok(()))
    }
}
