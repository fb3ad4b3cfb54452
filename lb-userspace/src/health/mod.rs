//! Health checks: does a real server's *service* work, not merely its port? One file per
//! checker; `probe` builds a checker once per real, `state` turns results into up/down with
//! rise/fall, `monitor` runs one task per real so a server that hangs delays only its own
//! checks.

pub mod dicom;
pub mod exec;
pub mod hl7;
pub mod http;
pub mod monitor;
pub mod probe;
pub mod state;
pub mod tcp;

use std::{net::IpAddr, time::Duration};

/// Where a check goes: the real's own address (in DR the real serves on both VIP and RIP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Target {
    pub address: IpAddr,
    pub port: u16,
}

/// A TCP connection to the target, from the address the kernel picks toward it: for SNAT
/// without `snat_address`, the very source the real sees its flows come from. (A floating
/// `snat_address` cannot be the checks' source: on a pair's standby it is not this host's, and
/// the real's answers would go to the active node.)
pub async fn connect(target: Target) -> std::io::Result<tokio::net::TcpStream> {
    tokio::net::TcpStream::connect((target.address, target.port)).await
}

impl std::fmt::Display for Target {
    /// `198.18.0.11:104`, `[2001:2::11]:104`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", std::net::SocketAddr::new(self.address, self.port))
    }
}

/// One check's result: up with what was seen ("HTTP 200"), or down with why
/// ("association rejected: called AE title not recognized").
pub type Verdict = Result<String, String>;

/// A finished check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub up: bool,
    /// What was seen (up) or why it failed (down).
    pub reason: String,
    pub latency: Duration,
}

/// An error with its causes, e.g. "could not connect to server: Connection refused".
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}
