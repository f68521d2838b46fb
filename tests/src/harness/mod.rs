//! The end-to-end test harness: network namespaces, veth links, sysctls,
//! iperf3 traffic and the wasmtune daemon, each behind a guard that cleans up
//! on drop (also when the test panics), plus prerequisite checks that skip
//! with a reason and a results file that collects the measured figures.
//!
//! A typical test:
//! ```no_run
//! use wasmtune_tests::harness::{self, Netns, VethPair, IperfServer, Daemon, Requirement};
//! # fn demo() {
//! if harness::skip_without(&Requirement::DAEMON_E2E) {
//!     return;
//! }
//! let rx = Netns::new("demo-rx").expect("create rx");
//! let tx = Netns::new("demo-tx").expect("create tx");
//! let link = VethPair::new(&tx, &rx).expect("veth tx <-> rx");
//! let server = IperfServer::start(&rx, link.addr_b()).expect("iperf3 server");
//! let state = harness::private_dir("demo").expect("state dir");
//! let daemon = Daemon::builder().netns(&rx).state_dir(state.path()).start().expect("daemon");
//! daemon.wait_for_event("ready", harness::READY_TIMEOUT).expect("ready");
//! let during = harness::run_client(&tx, &server, 3).expect("transfer");
//! # }
//! ```

mod bed;
mod capture;
mod command;
mod daemon;
mod error;
mod manifest;
mod netns;
mod paths;
mod prereq;
mod results;
mod seccomp;
mod sysctl;
mod traffic;
mod veth;

pub use bed::{BufferBed, Side};
pub use capture::{LogCapture, LogLine, Stream};
pub use command::run as run_command;
pub use daemon::{
    Daemon, DaemonBuilder, READY_TIMEOUT, cli, cli_json, journal_records, wasmtune_bin, wasmtune_command,
};
pub use error::HarnessError;
pub use manifest::{EmbeddedManifest, embedded_manifest};
pub use netns::Netns;
pub use paths::{private_dir, scratch_dir, target_dir};
pub use prereq::{Requirement, measurement_lock, skip_without};
pub use results::{record, results_file, skip_part};
pub use sysctl::{
    GlobalSysctlGuard, SysctlHistory, SysctlSampler, normalize, parse_fields, set_sysctl_in, sysctl_exists,
    sysctl_fields_in, sysctl_in, sysctl_init,
};
pub use traffic::{BackgroundTransfer, IperfServer, Throughput, run_client};
pub use veth::{VethOptions, VethPair};

use std::sync::atomic::{AtomicU32, Ordering};

/// A number unique within this process, so that two guards made by the same
/// test (or by tests running as threads of one process) never share a name.
fn next_serial() -> u32 {
    static SERIAL: AtomicU32 = AtomicU32::new(0);
    SERIAL.fetch_add(1, Ordering::Relaxed)
}
