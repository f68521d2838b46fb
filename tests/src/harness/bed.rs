//! `BufferBed`: the test bed of the TCP buffer scenarios — a sender and a
//! receiver namespace over veth, an iperf3 server in the receiver, and one
//! side's buffer sysctl set far too low — plus readers for the daemon's
//! `sysctl-change` lines about it.

use super::{
    BackgroundTransfer, HarnessError, IperfServer, LogLine, Netns, Throughput, VethPair, parse_fields, run_client,
    set_sysctl_in, sysctl_in,
};

/// Which end of the transfer has its buffer limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The receiver: `net.ipv4.tcp_rmem` in the rx namespace.
    Receiver,
    /// The sender: `net.ipv4.tcp_wmem` in the tx namespace.
    Sender,
}

impl Side {
    /// The sysctl limited on this side.
    pub fn tunable(self) -> &'static str {
        match self {
            Side::Receiver => "net.ipv4.tcp_rmem",
            Side::Sender => "net.ipv4.tcp_wmem",
        }
    }
}

/// tx ──veth── rx, iperf3 server in rx, one buffer sysctl set low.
/// Everything is removed on drop.
pub struct BufferBed {
    // Field order is drop order: the server before its namespace.
    server: IperfServer,
    _link: VethPair,
    rx: Netns,
    tx: Netns,
    side: Side,
    bad_value: String,
}

impl BufferBed {
    /// Builds the bed; namespaces are labelled `<label>-rx` and `<label>-tx`,
    /// and `side`'s sysctl is set to `bad_value` (e.g. `"4096 131072 98304"`).
    pub fn new(label: &str, side: Side, bad_value: &str) -> Result<BufferBed, HarnessError> {
        let rx = Netns::new(&format!("{label}-rx"))?;
        let tx = Netns::new(&format!("{label}-tx"))?;
        let link = VethPair::new(&tx, &rx)?;
        let server = IperfServer::start(&rx, link.addr_b())?;
        let bed = BufferBed { server, _link: link, rx, tx, side, bad_value: bad_value.to_string() };
        set_sysctl_in(bed.tuned_netns(), side.tunable(), bad_value)?;
        Ok(bed)
    }

    /// The receiving namespace (iperf3 server).
    pub fn rx(&self) -> &Netns {
        &self.rx
    }

    /// The sending namespace (iperf3 client).
    pub fn tx(&self) -> &Netns {
        &self.tx
    }

    /// The namespace whose sysctl was set low: rx for `Receiver`, tx for `Sender`.
    pub fn tuned_netns(&self) -> &Netns {
        match self.side {
            Side::Receiver => &self.rx,
            Side::Sender => &self.tx,
        }
    }

    /// The sysctl set low.
    pub fn tunable(&self) -> &'static str {
        self.side.tunable()
    }

    /// The low value it was set to.
    pub fn bad_value(&self) -> &str {
        &self.bad_value
    }

    /// The sysctl's current value in the tuned namespace.
    pub fn current(&self) -> Result<String, HarnessError> {
        sysctl_in(self.tuned_netns(), self.tunable())
    }

    /// The current value's fields.
    pub fn current_fields(&self) -> Result<Vec<u64>, HarnessError> {
        parse_fields(self.tunable(), &self.current()?)
    }

    /// Sends tx → rx for `seconds`, blocking.
    pub fn transfer(&self, seconds: u32) -> Result<Throughput, HarnessError> {
        run_client(&self.tx, &self.server, seconds)
    }

    /// Starts sending tx → rx for `seconds` in the background.
    pub fn background_transfer(&self, seconds: u32) -> Result<BackgroundTransfer, HarnessError> {
        BackgroundTransfer::start(&self.tx, &self.server, seconds)
    }

    /// The lines of `event` (e.g. `sysctl-change`) about this bed's tunable
    /// in its tuned namespace, in order.
    pub fn lines_about(&self, lines: &[LogLine], event: &str) -> Vec<LogLine> {
        let netns = self.tuned_netns().name();
        lines
            .iter()
            .filter(|l| l.is_event(event) && l.field_is("tunable", self.tunable()) && l.field_is("netns", netns))
            .cloned()
            .collect()
    }

    /// A predicate for `LogCapture::wait_for`/`wait_quiet`: a line of
    /// `event` about this bed's tunable in its tuned namespace.
    pub fn matcher(&self, event: &'static str) -> impl Fn(&LogLine) -> bool + use<> {
        let (tunable, netns) = (self.tunable(), self.tuned_netns().name().to_string());
        move |l: &LogLine| l.is_event(event) && l.field_is("tunable", tunable) && l.field_is("netns", &netns)
    }
}
