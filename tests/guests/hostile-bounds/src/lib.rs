//! Fixture: a policy granted `tcp_rmem[2]` up to 8 MiB that asks for 1 GiB,
//! and separately for a change of field 0, which its grant excludes. Logs
//! each denial.

use wasmtune_sdk::{Config, Event, EventKind, Info, Policy, sysctl};

const RMEM: &str = "net.ipv4.tcp_rmem";
const SCENARIO: &str = "hostile fixture";

struct OutOfBounds;

impl Policy for OutOfBounds {
    fn init(_: &Config) -> Result<(Self, Info), String> {
        Ok((OutOfBounds, Info::events(&[EventKind::TcpBufferLimit])))
    }

    fn on_event(&mut self, event: &Event) {
        let Event::TcpBufferLimit(hit) = event else { return };
        let [min, default, max] = match sysctl::read_integers(hit.netns, RMEM).as_deref() {
            Ok(&[min, default, max]) => [min, default, max],
            Ok(other) => return wasmtune_sdk::warn!("{RMEM} has {} fields", other.len()),
            Err(denial) => return wasmtune_sdk::warn!("{RMEM} unreadable ({}): {}", denial.kind(), denial.explain()),
        };
        if let Err(denial) = sysctl::request_integers(hit.netns, RMEM, &[min, default, 1 << 30], SCENARIO, "1 GiB") {
            wasmtune_sdk::warn!("{RMEM}[2] = 1 GiB denied ({}): {}", denial.kind(), denial.explain());
        }
        let other_min = if min == 4096 { 8192 } else { 4096 };
        if let Err(denial) = sysctl::request_integers(hit.netns, RMEM, &[other_min, default, max], SCENARIO, "field 0")
        {
            wasmtune_sdk::warn!("{RMEM}[0] change denied ({}): {}", denial.kind(), denial.explain());
        }
    }
}

wasmtune_sdk::export_policy!(OutOfBounds);
