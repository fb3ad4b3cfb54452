//! Reading the per-CPU counters and summing them over CPUs.

use std::net::IpAddr;

use anyhow::Result;
use lb_common::counters::{Reason, TrafficCounters};

use super::maps::Maps;

#[derive(Debug, Clone)]
pub struct RealCounters {
    pub id: u32,
    pub service_id: u32,
    pub address: IpAddr,
    pub up: bool,
    pub counters: TrafficCounters,
}

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// (service id, counters) for every service with a VIP:port entry.
    pub services: Vec<(u32, TrafficCounters)>,
    pub reals: Vec<RealCounters>,
    pub reasons: Vec<(Reason, u64)>,
    /// Packets of new DR flows forwarded without a connection-table entry during floods.
    pub untracked: u64,
    /// The last clock tick any CPU was under a flood (0: never).
    pub flooded_at: u32,
    /// NAT flows adopted from a real's reply (flows this node never saw open: a pair peer's).
    pub nat_adopted: u64,
}

impl Snapshot {
    /// Whether a flood is being defended against at clock tick `now`.
    pub fn flood_active(&self, now: u32) -> bool {
        self.flooded_at != 0 && now.wrapping_sub(self.flooded_at) <= 1
    }
}

fn sum(values: &[TrafficCounters]) -> TrafficCounters {
    values
        .iter()
        .fold(TrafficCounters::default(), |a, c| TrafficCounters {
            packets: a.packets + c.packets,
            bytes: a.bytes + c.bytes,
            new_flows: a.new_flows + c.new_flows,
        })
}

pub fn snapshot(maps: &Maps) -> Result<Snapshot> {
    let mut snapshot = Snapshot::default();
    for (id, real) in maps.reals.iter().enumerate() {
        let real = real?;
        if real.addr.is_none() {
            continue;
        }
        let per_cpu = maps.real_counters.get(&(id as u32), 0)?;
        snapshot.reals.push(RealCounters {
            id: id as u32,
            service_id: real.service,
            address: IpAddr::from(real.addr),
            up: real.flags & lb_common::service::REAL_UP != 0,
            counters: sum(&per_cpu),
        });
    }
    let mut ids: Vec<u32> = maps
        .services
        .iter()
        .filter_map(|e| e.ok())
        .map(|(_, s)| s.id)
        .collect();
    ids.sort();
    ids.dedup();
    for id in ids {
        snapshot
            .services
            .push((id, sum(&maps.service_counters.get(&id, 0)?)));
    }
    let forwarded: u64 = snapshot.services.iter().map(|(_, c)| c.packets).sum();
    for reason in Reason::ALL {
        let count = match reason {
            Reason::Forwarded => forwarded,
            _ => maps.reason_counters.get(&(reason as u32), 0)?.iter().sum(),
        };
        snapshot.reasons.push((reason, count));
    }
    for cpu in maps.flood.get(&0, 0)?.iter() {
        snapshot.untracked += cpu.untracked;
        if cpu.flooded_at != 0
            && (snapshot.flooded_at == 0
                || cpu.flooded_at.wrapping_sub(snapshot.flooded_at) as i32 > 0)
        {
            snapshot.flooded_at = cpu.flooded_at;
        }
    }
    snapshot.nat_adopted = maps.nat_adopted.get(&0, 0)?.iter().sum();
    Ok(snapshot)
}
