//! Freeing SNAT's ports. The data plane never frees one, so that a live flow's port is never
//! given to another (lb-ebpf/src/snat.rs); once both directions of a SNAT flow have expired,
//! its reverse entry is removed here, every second, and the port can be claimed again.

use anyhow::Result;
use lb_common::flow::{FlowKey, entry_alive};

use super::maps::Maps;

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
