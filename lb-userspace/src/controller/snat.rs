//! What SNAT needs from the controller beside the maps (lb-ebpf/src/snat.rs is the data plane):
//! - xdplb's port range reserved in the kernel (`ip_local_reserved_ports`), so the host's own
//!   connections never take a port a SNAT flow may be given; released by `xdplb down`;
//! - this host's own address toward each SNAT real, the source its flows get when the service
//!   has no `snat_address` (the address the kernel picks, so health checks come from it too);
//! - freeing the ports of expired flows is `dataplane::snat_sweep`'s.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
};

use anyhow::{Context, Result};
use lb_common::maps::{SNAT_PORT_COUNT, SNAT_PORT_FIRST};
use tracing::{info, warn};

use crate::policy::{Forwarding, Policy};

const RESERVED_PORTS: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";

/// xdplb's range as the sysctl writes it.
fn range() -> String {
    format!(
        "{}-{}",
        SNAT_PORT_FIRST,
        SNAT_PORT_FIRST + (SNAT_PORT_COUNT - 1)
    )
}

/// Adds xdplb's range to the reserved ports, keeping what was there. Connections this host
/// opened earlier from a port of the range are named: a SNAT real's replies to them will be
/// taken for SNAT's and dropped.
pub fn reserve_ports() -> Result<()> {
    warn_of_ports_in_use();
    let current =
        std::fs::read_to_string(RESERVED_PORTS).context("reading ip_local_reserved_ports")?;
    let mut ranges: Vec<&str> = current
        .trim()
        .split(',')
        .filter(|r| !r.is_empty())
        .collect();
    let ours = range();
    if ranges.contains(&ours.as_str()) {
        return Ok(());
    }
    ranges.push(&ours);
    std::fs::write(RESERVED_PORTS, format!("{}\n", ranges.join(",")))
        .context("reserving xdplb's SNAT ports in net.ipv4.ip_local_reserved_ports")?;
    info!(
        ports = %ours,
        "net.ipv4.ip_local_reserved_ports: SNAT's source ports are reserved, so this host's own connections never take one"
    );
    Ok(())
}

/// Takes xdplb's range out of the reserved ports (`xdplb down`), leaving the rest.
pub fn release_ports() -> Result<()> {
    let Ok(current) = std::fs::read_to_string(RESERVED_PORTS) else {
        return Ok(());
    };
    let ours = range();
    let ranges: Vec<&str> = current
        .trim()
        .split(',')
        .filter(|r| !r.is_empty())
        .collect();
    if !ranges.contains(&ours.as_str()) {
        return Ok(());
    }
    let rest: Vec<&str> = ranges.into_iter().filter(|r| *r != ours).collect();
    // With a newline: an empty write is no write(2) at all, and would leave the range.
    std::fs::write(RESERVED_PORTS, format!("{}\n", rest.join(",")))
        .context("releasing xdplb's SNAT ports from net.ipv4.ip_local_reserved_ports")?;
    info!(ports = %ours, "SNAT's reserved ports released");
    Ok(())
}

/// This host's own address toward each real of a SNAT service without `snat_address`: the
/// source the kernel would pick (a UDP socket's `connect` sends nothing).
pub fn sources(policy: &Policy) -> HashMap<Ipv4Addr, Ipv4Addr> {
    let mut out = HashMap::new();
    for service in policy
        .services
        .iter()
        .filter(|s| s.forwarding == Forwarding::Snat && s.snat_address.is_none())
    {
        for real in service.members() {
            if out.contains_key(&real.address) {
                continue;
            }
            let port = real.port.unwrap_or(service.ports[0]);
            match source_toward(SocketAddrV4::new(real.address, port)) {
                Some(source) => {
                    out.insert(real.address, source);
                }
                None => warn!(real = %real.address, "no route to this SNAT real: it gets no flows"),
            }
        }
    }
    out
}

fn source_toward(to: SocketAddrV4) -> Option<Ipv4Addr> {
    let socket = UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect(to).ok()?;
    match socket.local_addr().ok()? {
        std::net::SocketAddr::V4(local) if !local.ip().is_unspecified() => Some(*local.ip()),
        _ => None,
    }
}

/// Warns of this host's TCP connections whose local port is in xdplb's range (opened before
/// the range was reserved).
fn warn_of_ports_in_use() {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return;
    };
    let in_use: Vec<u16> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1)?;
            let state = fields.nth(1)?;
            let port = u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()?;
            // 0A: listening, not a connection.
            (state != "0A").then_some(port)
        })
        .filter(|p| (SNAT_PORT_FIRST..SNAT_PORT_FIRST + SNAT_PORT_COUNT).contains(p))
        .collect();
    if !in_use.is_empty() {
        warn!(
            connections = in_use.len(),
            ports = ?in_use.iter().take(8).collect::<Vec<_>>(),
            range = %range(),
            "this host has TCP connections from ports of SNAT's range, opened before it was reserved: replies to them from a SNAT real's service address:port are dropped as SNAT's (reconnect them)"
        );
    }
}
