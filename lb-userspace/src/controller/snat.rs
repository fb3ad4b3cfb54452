//! What SNAT needs from the controller beside the maps (lb-ebpf/src/snat.rs is the data plane):
//! - xdplb's port range reserved in the kernel (`ip_local_reserved_ports`), so the host's own
//!   connections never take a port a SNAT flow may be given; released by `xdplb down`;
//! - this host's own address toward each SNAT real, the source its flows get when the service
//!   has no `snat_address` (the address the kernel picks, so health checks come from it too);
//! - freeing the ports of expired flows is `dataplane::snat_sweep`'s.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr, UdpSocket},
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
    let mut ranges = reserved()?;
    let (first, last) = ours();
    // The kernel prints merged ranges: ours may lie inside a wider one.
    if ranges.iter().any(|&(a, b)| a <= first && last <= b) {
        return Ok(());
    }
    ranges.push((first, last));
    write_reserved(&ranges)
        .context("reserving xdplb's SNAT ports in net.ipv4.ip_local_reserved_ports")?;
    info!(
        ports = %range(),
        "net.ipv4.ip_local_reserved_ports: SNAT's source ports are reserved, so this host's own connections never take one"
    );
    Ok(())
}

/// Takes xdplb's range out of the reserved ports (`xdplb down`, or a reload that leaves no SNAT
/// service), leaving the ports outside it as they were.
pub fn release_ports() -> Result<()> {
    let Ok(ranges) = reserved() else {
        return Ok(());
    };
    let (first, last) = ours();
    if !ranges.iter().any(|&(a, b)| a <= last && first <= b) {
        return Ok(());
    }
    let mut rest = Vec::new();
    for (a, b) in ranges {
        if a < first {
            rest.push((a, b.min(first - 1)));
        }
        if b > last {
            rest.push((a.max(last + 1), b));
        }
    }
    write_reserved(&rest)
        .context("releasing xdplb's SNAT ports from net.ipv4.ip_local_reserved_ports")?;
    info!(ports = %range(), "SNAT's reserved ports released");
    Ok(())
}

fn ours() -> (u16, u16) {
    (SNAT_PORT_FIRST, SNAT_PORT_FIRST + (SNAT_PORT_COUNT - 1))
}

/// The reserved ports as ranges (the sysctl's `8080,9000-9010` form).
fn reserved() -> Result<Vec<(u16, u16)>> {
    let text =
        std::fs::read_to_string(RESERVED_PORTS).context("reading ip_local_reserved_ports")?;
    Ok(parse_ranges(&text))
}

fn parse_ranges(text: &str) -> Vec<(u16, u16)> {
    text.trim()
        .split(',')
        .filter_map(|r| {
            let (a, b) = r.split_once('-').unwrap_or((r, r));
            Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
        })
        .collect()
}

fn write_reserved(ranges: &[(u16, u16)]) -> std::io::Result<()> {
    let text: Vec<String> = ranges
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    // With a newline: an empty write is no write(2) at all, and would leave the range.
    std::fs::write(RESERVED_PORTS, format!("{}\n", text.join(",")))
}

/// This host's own address toward each real of a SNAT service without `snat_address`: the
/// source the kernel would pick (a UDP socket's `connect` sends nothing).
pub fn sources(policy: &Policy) -> HashMap<IpAddr, IpAddr> {
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
            if let Some(source) = source_toward(SocketAddr::new(real.address, port)) {
                out.insert(real.address, source);
            }
        }
    }
    out
}

/// The source address the kernel picks toward `to` (a connected UDP socket sends nothing).
fn source_toward(to: SocketAddr) -> Option<IpAddr> {
    let any: SocketAddr = if to.is_ipv6() {
        "[::]:0".parse().ok()?
    } else {
        "0.0.0.0:0".parse().ok()?
    };
    let socket = UdpSocket::bind(any).ok()?;
    socket.connect(to).ok()?;
    let local = socket.local_addr().ok()?.ip();
    (!local.is_unspecified()).then_some(local)
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

/// Logs the SNAT reals whose source address changed since `before` (all of them at the start,
/// when `before` is `None`): a real without a route gets no flows.
pub fn log_source_changes(
    policy: &Policy,
    before: Option<&HashMap<IpAddr, IpAddr>>,
    now: &HashMap<IpAddr, IpAddr>,
) {
    let reals = policy
        .services
        .iter()
        .filter(|s| s.forwarding == Forwarding::Snat && s.snat_address.is_none())
        .flat_map(|s| s.members());
    let mut seen = std::collections::HashSet::new();
    for real in reals {
        if !seen.insert(real.address) {
            continue;
        }
        let (old, new) = (
            before.and_then(|b| b.get(&real.address)),
            now.get(&real.address),
        );
        if before.is_some() && old == new {
            continue;
        }
        match new {
            Some(source) => {
                info!(real = %real.address, source = %source, "SNAT source toward this real")
            }
            None => {
                warn!(real = %real.address, "no route to this SNAT real: it gets no flows until there is one")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_ranges_parse_as_the_kernel_prints_them() {
        assert_eq!(
            parse_ranges("8080,40000-57400\n"),
            vec![(8080, 8080), (40000, 57400)]
        );
        assert_eq!(parse_ranges("\n"), vec![]);
    }
}
