//! Real servers' Ethernet addresses, from the kernel's neighbour (ARP) table.
//!
//! XDP_TX bypasses the kernel, so the kernel never resolves the reals by itself: when an entry
//! is missing or failed we provoke resolution by sending one UDP datagram to the real's
//! discard port from a socket bound to the interface, and read the answer on the next pass.

use std::{collections::HashMap, net::Ipv4Addr};

use anyhow::Result;
use futures::TryStreamExt;
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourState};
use rtnetlink::Handle;

/// Usable Ethernet addresses of IPv4 neighbours on `if_index`.
pub async fn table(handle: &Handle, if_index: u32) -> Result<HashMap<Ipv4Addr, [u8; 6]>> {
    let mut out = HashMap::new();
    let mut dump = handle
        .neighbours()
        .get()
        .set_address_family(netlink_packet_route::AddressFamily::Inet)
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
                NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => addr = Some(*a),
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
    Ok(out)
}

/// Makes the kernel ARP for `addr` on `interface` (answer arrives asynchronously).
pub fn provoke(interface: &str, addr: Ipv4Addr) {
    use std::net::UdpSocket;
    let Ok(socket) = UdpSocket::bind("0.0.0.0:0") else {
        return;
    };
    let _ = nix::sys::socket::setsockopt(
        &socket,
        nix::sys::socket::sockopt::BindToDevice,
        &std::ffi::OsString::from(interface),
    );
    // Discard port; the datagram itself is irrelevant, the ARP request it triggers is not.
    let _ = socket.send_to(&[], (addr, 9));
}
