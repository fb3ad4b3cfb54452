//! Freeing SNAT's ports. The data plane never frees one, so that a live flow's port is never
//! given to another (lb-ebpf/src/snat.rs); once a SNAT flow has ended, its reverse entry is
//! removed here, every second, and the port can be claimed again:
//! - both directions expired (the service's timeouts), and the last packet is at least
//!   `PORT_QUIET_SECS` old, so a closed connection's TIME_WAIT on the real has ended;
//! - or the flow is half-open (`FLOW_OPENING`: a SYN and nothing more from the client) and the
//!   client's side expired, whatever the real still sends: SYN-ACK retransmissions to a spoofed
//!   source must not hold ports for the idle timeout;
//! - or its real's id was given to another real.

use anyhow::Result;
use lb_common::{
    clock::{fresh, ticks_from_secs},
    flow::{FLOW_OPENING, FlowKey, entry_alive},
};

use super::maps::Maps;

/// How long a port stays taken after its flow's last packet at least: Linux's TIME_WAIT.
const PORT_QUIET_SECS: u64 = 60;

/// Removes the reverse entries of SNAT flows that ended, freeing their ports; returns how many.
/// `hz`: the data plane's clock rate (`Loaded::hz`).
pub fn sweep(maps: &mut Maps, now: u32, hz: u32) -> Result<usize> {
    let quiet = ticks_from_secs(PORT_QUIET_SECS, hz);
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
        let forward = FlowKey {
            src: back.client,
            dst: back.vip,
            sport: back.client_port,
            dport: back.vip_port,
            proto: reply.proto,
            _pad1: 0,
            _pad2: 0,
        };
        let forward = maps
            .flows
            .get(&forward, 0)
            .ok()
            .filter(|f| f.real == back.real && f.generation == back.generation);
        if forward.is_some_and(|f| entry_alive(f.seen, f.flags, &real, now)) {
            continue;
        }
        let half_open = forward.is_some_and(|f| f.flags & FLOW_OPENING != 0);
        let replies_over =
            !entry_alive(back.seen, back.flags, &real, now) && !fresh(back.seen, now, quiet);
        if half_open || replies_over {
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
