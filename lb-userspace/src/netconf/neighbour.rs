//! Real servers' Ethernet addresses, from the kernel's neighbour table (ARP for IPv4, neighbour
//! discovery for IPv6).
//!
//! XDP_TX bypasses the kernel, so the kernel never resolves the reals by itself: when an entry
//! is missing or failed we provoke resolution by sending one UDP datagram to the real's
//! discard port from a socket bound to the interface, and read the answer on the next pass.

use std::{collections::HashMap, net::IpAddr};

use anyhow::{Context, Result};
use futures::TryStreamExt;
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourState};
use rtnetlink::Handle;

/// Usable Ethernet addresses of the IPv4 and IPv6 neighbours on `if_index`.
pub async fn table(handle: &Handle, if_index: u32) -> Result<HashMap<IpAddr, [u8; 6]>> {
    let mut out = HashMap::new();
    for family in [
        netlink_packet_route::AddressFamily::Inet,
        netlink_packet_route::AddressFamily::Inet6,
    ] {
        family_table(handle, if_index, family, &mut out).await?;
    }
    Ok(out)
}

async fn family_table(
    handle: &Handle,
    if_index: u32,
    family: netlink_packet_route::AddressFamily,
    out: &mut HashMap<IpAddr, [u8; 6]>,
) -> Result<()> {
    let mut dump = handle
        .neighbours()
        .get()
        .set_address_family(family)
        .execute();
    while let Some(msg) = dump.try_next().await? {
        if msg.header.ifindex != if_index {
            continue;
        }
        let usable = matches!(
            msg.header.state,
            NeighbourState::Reachable
                | NeighbourState::Stale
                | NeighbourState::Delay
                | NeighbourState::Probe
                | NeighbourState::Permanent
                | NeighbourState::Noarp
        );
        if !usable {
            continue;
        }
        let mut addr = None;
        let mut mac = None;
        for attr in &msg.attributes {
            match attr {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                    addr = Some(IpAddr::V4(*a))
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                    addr = Some(IpAddr::V6(*a))
                }
                NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
                    mac = Some([l[0], l[1], l[2], l[3], l[4], l[5]]);
                }
                _ => {}
            }
        }
        if let (Some(addr), Some(mac)) = (addr, mac)
            && mac != [0; 6]
        {
            out.insert(addr, mac);
        }
    }
    Ok(())
}

/// Makes the kernel resolve `addr` on `interface`, by ARP or a neighbour solicitation (the
/// answer arrives asynchronously).
pub fn provoke(interface: &str, addr: IpAddr) {
    use std::net::UdpSocket;
    let any = if addr.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    };
    let Ok(socket) = UdpSocket::bind(any) else {
        return;
    };
    let _ = nix::sys::socket::setsockopt(
        &socket,
        nix::sys::socket::sockopt::BindToDevice,
        &std::ffi::OsString::from(interface),
    );
    // Discard port; the datagram itself is irrelevant, the resolution it triggers is not.
    let _ = socket.send_to(&[], (addr, 9));
}

/// The IPv6 proxy neighbour entries (`ip -6 neigh show proxy`): (interface index, 0 for
/// every interface; address). With proxy_ndp and forwarding on, the kernel answers neighbour
/// solicitations for these addresses.
pub async fn proxies6(handle: &Handle) -> Result<Vec<(u32, std::net::Ipv6Addr)>> {
    let mut out = Vec::new();
    let mut dump = handle
        .neighbours()
        .get()
        .proxies()
        .set_address_family(netlink_packet_route::AddressFamily::Inet6)
        .execute();
    while let Some(msg) = dump.try_next().await? {
        for attr in &msg.attributes {
            if let NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) = attr {
                out.push((msg.header.ifindex, *a));
            }
        }
    }
    Ok(out)
}

/// The IPv6 anycast addresses of this host's interfaces (/proc/net/anycast6): (interface
/// name, address). The kernel answers neighbour solicitations for them too.
pub fn anycast6() -> Result<Vec<(String, std::net::Ipv6Addr)>> {
    let text = match std::fs::read_to_string("/proc/net/anycast6") {
        Ok(t) => t,
        // No IPv6 in this kernel: no anycast either.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).context("reading /proc/net/anycast6"),
    };
    Ok(parse_anycast6(&text))
}

/// Lines of `INDEX NAME ADDRESS(32 hex digits) USERS`.
fn parse_anycast6(text: &str) -> Vec<(String, std::net::Ipv6Addr)> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (name, hex) = (fields.get(1)?, fields.get(2)?);
            let bits = u128::from_str_radix(hex, 16)
                .ok()
                .filter(|_| hex.len() == 32)?;
            Some((name.to_string(), std::net::Ipv6Addr::from(bits)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anycast6_lines_are_read() {
        let text = "2    eth0            20010002000000000000000000000000     1\n\
                    2    eth0            fe800000000000000000000000000000     1\n";
        assert_eq!(
            parse_anycast6(text),
            vec![
                ("eth0".to_string(), "2001:2::".parse().unwrap()),
                ("eth0".to_string(), "fe80::".parse().unwrap()),
            ]
        );
        assert!(parse_anycast6("garbage\n2 eth0 12 1\n").is_empty());
    }
}
