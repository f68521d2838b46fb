//! `VethPair`: a veth link between two `Netns`, addressed from a subnet
//! chosen per pair, up, optionally without segmentation offloads.

use std::net::Ipv4Addr;

use super::command::run_args;
use super::{HarnessError, Netns, next_serial};

/// How to set a veth pair up.
#[derive(Debug, Clone, Copy, Default)]
pub struct VethOptions {
    /// Turn off TSO, GSO and GRO on both ends, so that one dropped packet
    /// costs one packet rather than a 64 KB super-packet.
    pub offloads_off: bool,
}

/// A veth pair: end `a` in one namespace with `10.x.y.1/24`, end `b` in the
/// other with `10.x.y.2/24`. Deleted on drop (deleting one end removes both).
#[derive(Debug)]
pub struct VethPair {
    netns_a: String,
    dev_a: String,
    dev_b: String,
    addr_a: Ipv4Addr,
    addr_b: Ipv4Addr,
}

impl VethPair {
    /// A pair between `a` and `b` with offloads left on.
    pub fn new(a: &Netns, b: &Netns) -> Result<VethPair, HarnessError> {
        VethPair::with_options(a, b, VethOptions::default())
    }

    /// A pair between `a` and `b`.
    pub fn with_options(a: &Netns, b: &Netns, options: VethOptions) -> Result<VethPair, HarnessError> {
        let serial = next_serial();
        let pid = std::process::id();
        let (x, y) = subnet_for(pid, serial);
        // Interface names are limited to 15 bytes; the ends are created
        // directly inside their namespaces, but unique names keep a failure
        // halfway (an end left in the root namespace) from blocking others.
        let tag = format!("{:x}", (pid << 8) ^ serial);
        let tag = &tag[tag.len().saturating_sub(10)..];
        let pair = VethPair {
            netns_a: a.name().to_string(),
            dev_a: format!("wt{tag}a"),
            dev_b: format!("wt{tag}b"),
            addr_a: Ipv4Addr::new(10, x, y, 1),
            addr_b: Ipv4Addr::new(10, x, y, 2),
        };
        run_args(
            "ip",
            &[
                "link",
                "add",
                &pair.dev_a,
                "netns",
                a.name(),
                "type",
                "veth",
                "peer",
                "name",
                &pair.dev_b,
                "netns",
                b.name(),
            ],
        )?;
        for (netns, dev, addr) in [(a, &pair.dev_a, pair.addr_a), (b, &pair.dev_b, pair.addr_b)] {
            let cidr = format!("{addr}/24");
            run_args("ip", &["-n", netns.name(), "addr", "add", &cidr, "dev", dev])?;
            run_args("ip", &["-n", netns.name(), "link", "set", dev, "up"])?;
            if options.offloads_off {
                netns.run("ethtool", &["-K", dev, "tso", "off", "gso", "off", "gro", "off"])?;
            }
        }
        Ok(pair)
    }

    /// The address of end `a` (in the first namespace).
    pub fn addr_a(&self) -> Ipv4Addr {
        self.addr_a
    }

    /// The address of end `b` (in the second namespace).
    pub fn addr_b(&self) -> Ipv4Addr {
        self.addr_b
    }

    /// The interface name of end `a`.
    pub fn dev_a(&self) -> &str {
        &self.dev_a
    }

    /// The interface name of end `b`.
    pub fn dev_b(&self) -> &str {
        &self.dev_b
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        // Fails harmlessly when the namespace is already gone, which takes
        // its veth ends with it.
        let _ = run_args("ip", &["-n", &self.netns_a, "link", "del", &self.dev_a]);
    }
}

/// `(x, y)` of the `10.x.y.0/24` subnet for a pair: spread by pid and serial
/// so that concurrently running tests use different subnets.
fn subnet_for(pid: u32, serial: u32) -> (u8, u8) {
    const SUBNETS: u32 = 200 * 256;
    let slot = (pid.wrapping_mul(16).wrapping_add(serial)) % SUBNETS;
    ((20 + slot / 256) as u8, (slot % 256) as u8)
}

#[cfg(test)]
mod tests {
    use super::subnet_for;

    #[test]
    fn subnets_stay_inside_ten_slash_eight_and_differ_per_serial() {
        for pid in [1, 4242, 4_194_303] {
            let (x, _) = subnet_for(pid, 0);
            assert!((20..220).contains(&x));
            assert_ne!(subnet_for(pid, 0), subnet_for(pid, 1));
        }
    }
}
