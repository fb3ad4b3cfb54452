//! What SNAT needs from the controller beside the maps (lb-ebpf/src/snat.rs is the data plane):
//! - xdplb's port range reserved in the kernel (`ip_local_reserved_ports`), so the host's own
//!   connections never take a port a SNAT flow may be given; released by `xdplb down`;
//! - this host's own address toward each SNAT real, the source its flows get when the service
//!   has no `snat_address` (the address the kernel picks, so health checks come from it too);
//! - freeing the ports of expired flows: the data plane never frees one (a live flow's port
//!   must never be given to another), so once both directions of a SNAT flow have expired its
//!   reverse entry is removed here.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
};

use anyhow::{Context, Result};
use lb_common::{
    flow::{FlowKey, entry_alive},
    maps::{SNAT_PORT_COUNT, SNAT_PORT_FIRST},
};
use tracing::{info, warn};

use crate::{
    dataplane::maps::Maps,
    policy::{Forwarding, Policy},
};

const RESERVED_PORTS: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";

/// xdplb's range as the sysctl writes it.
fn range() -> String {
    format!(
        "{}-{}",
        SNAT_PORT_FIRST,
        SNAT_PORT_FIRST + (SNAT_PORT_COUNT - 1)
    )
}

/// Adds xdplb's range to the reserved ports, keeping what was there.
pub fn reserve_ports() -> Result<()> {
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
    std::fs::write(RESERVED_PORTS, ranges.join(","))
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
    std::fs::write(RESERVED_PORTS, rest.join(","))
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

/// Removes the reverse entries of SNAT flows whose both directions expired (or whose real's id
/// was given to another real), freeing their ports; returns how many.
pub fn sweep(maps: &mut Maps, now: u32) -> Result<usize> {
    let mut expired = Vec::new();
    for entry in maps.snat_reverse.iter() {
        let Ok((reply, back)) = entry else { continue };
        let real = match maps.reals.get(&back.real, 0) {
            Ok(real) if real.generation == back.generation => real,
            _ => {
                expired.push((reply, back.seen));
                continue;
            }
        };
        if entry_alive(back.seen, back.flags, &real, now) {
            continue;
        }
        let forward = FlowKey {
            src: back.client,
            dst: back.vip,
            sport: back.client_port,
            dport: back.vip_port,
            proto: reply.proto,
            _pad1: 0,
            _pad2: 0,
        };
        let forward_alive = matches!(
            maps.flows.get(&forward, 0),
            Ok(f) if f.real == back.real
                && f.generation == back.generation
                && entry_alive(f.seen, f.flags, &real, now)
        );
        if !forward_alive {
            expired.push((reply, back.seen));
        }
    }
    let mut removed = 0;
    for (reply, seen) in &expired {
        // Read again just before: a packet of the same client may have revived the entry since
        // (a UDP client sending from a fixed port); such an entry stays.
        if let Ok(now_there) = maps.snat_reverse.get(reply, 0)
            && now_there.seen != *seen
        {
            continue;
        }
        if maps.snat_reverse.remove(reply).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}
