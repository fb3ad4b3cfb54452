//! When the data plane may adopt NAT flows from the reals' replies (lb-ebpf/src/nat_reply.rs):
//! a packet from a real's service port is taken as a reply of a flow through the VIP only
//! around a pair's takeover, because at other times it may as well be someone talking to the
//! real directly through this host.
//!
//! - `vip_announcement: none` (a pair) with NAT services: open while this node does not hold
//!   every VIP of the policy (the standby: whatever reaches it, reaches it because the VIPs are
//!   arriving), and for `ADOPTION_WINDOW_SECS` after it took the last of them over; then
//!   closed until it loses one. A restarted controller on a node that held them all before
//!   keeps adoption closed.
//! - Otherwise (a balancer on its own): closed.

use std::{collections::HashSet, net::IpAddr};

use anyhow::{Context, Result};
use lb_common::{
    clock::ticks_from_secs,
    maps::{ADOPTION_WINDOW_SECS, NAT_ADOPT_ALWAYS},
};
use tracing::info;

use crate::{
    dataplane::maps::Maps,
    policy::{Forwarding, Policy, VipAnnouncement},
};

#[derive(Debug, Default)]
pub struct AdoptionWindow {
    /// The clock tick since which this node holds every VIP.
    all_held_since: Option<u32>,
    /// What the map holds, as last written (unknown at start).
    written: Option<u32>,
}

impl AdoptionWindow {
    /// Follows the VIPs this node holds (`held`: its addresses) at clock tick `now`.
    pub fn follow(
        &mut self,
        maps: &mut Maps,
        policy: &Policy,
        held: &HashSet<IpAddr>,
        now: u32,
        hz: u32,
    ) -> Result<()> {
        let pair = policy.vip_announcement == VipAnnouncement::Unmanaged
            && policy
                .services
                .iter()
                .any(|s| s.forwarding == Forwarding::Nat);
        let window = ticks_from_secs(ADOPTION_WINDOW_SECS, hz);
        let all_held = policy.services.iter().all(|s| held.contains(&s.vip));
        if self.written.is_none() {
            self.written = Some(maps.nat_adopt_until.get(&0, 0)?);
            // A restart on a node that already held every VIP, with adoption closed: stays so.
            if let Some(until) = self.written
                && all_held
                && until != NAT_ADOPT_ALWAYS
                && (until.wrapping_sub(now) as i32) < 0
            {
                self.all_held_since = Some(now.wrapping_sub(window));
            }
        }
        let until = if !pair {
            0
        } else if !all_held {
            self.all_held_since = None;
            NAT_ADOPT_ALWAYS
        } else {
            self.all_held_since.get_or_insert(now).wrapping_add(window)
        };
        if self.written != Some(until) {
            maps.nat_adopt_until
                .set(0, until, 0)
                .context("writing the NAT adoption window")?;
            match until {
                0 => info!("NAT flow adoption closed"),
                NAT_ADOPT_ALWAYS => info!(
                    "NAT flow adoption open: this node does not hold every VIP (a pair's standby)"
                ),
                _ => info!(
                    window_s = ADOPTION_WINDOW_SECS,
                    "this node holds every VIP: it adopts NAT flows from the reals' replies for a while"
                ),
            }
            self.written = Some(until);
        }
        Ok(())
    }
}
