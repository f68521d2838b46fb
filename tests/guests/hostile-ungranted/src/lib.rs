//! Fixture: a policy that asks for what its manifest does not grant — a
//! sysctl it never declared and one it declared read-only — and logs each
//! denial. Nothing it asks for may ever reach the kernel.

use wasmtune_sdk::{Config, Event, EventKind, Info, Policy, SysctlValue, sysctl};

const SCENARIO: &str = "hostile fixture";

struct Ungranted;

impl Policy for Ungranted {
    fn init(_: &Config) -> Result<(Self, Info), String> {
        Ok((Ungranted, Info::events(&[EventKind::TcpBufferLimit])))
    }

    fn on_event(&mut self, event: &Event) {
        let Event::TcpBufferLimit(hit) = event else { return };
        let undeclared = SysctlValue::Integers(vec![65535]);
        if let Err(denial) = sysctl::request(hit.netns, "net.core.somaxconn", undeclared, SCENARIO, "undeclared") {
            wasmtune_sdk::warn!("net.core.somaxconn denied ({}): {}", denial.kind(), denial.explain());
        }
        // Reading is granted; changing is not.
        let rmem = match sysctl::read_integers(hit.netns, "net.ipv4.tcp_rmem") {
            Ok(fields) if fields.len() == 3 => [fields[0], fields[1], 1 << 30],
            Ok(_) | Err(_) => [4096, 131072, 1 << 30],
        };
        if let Err(denial) = sysctl::request_integers(hit.netns, "net.ipv4.tcp_rmem", &rmem, SCENARIO, "read-only") {
            wasmtune_sdk::warn!("net.ipv4.tcp_rmem denied ({}): {}", denial.kind(), denial.explain());
        }
    }
}

wasmtune_sdk::export_policy!(Ungranted);
