//! Turns the policy (plus what the controller learnt: real servers' MACs) into map contents,
//! writing only what changed, in an order that never shows the data plane a half-made state:
//! reals first, then a new Maglev table into the service's standby slot, then the service
//! entries switch to it in one map update each, and only then are removed reals retired.
//!
//! Ids (service ids, real ids) are adopted from the maps when the controller restarts, so
//! connection-table entries written by an earlier controller keep pointing at the same reals.

mod ids;
mod leaving;
mod nat_origins;
mod reals;
mod services;
mod snat_addrs;

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    net::IpAddr,
};

use anyhow::Result;
use lb_common::{
    addr::Addr,
    flow::{NatOrigin, ReplySource},
    maps::{MAGLEV_TABLE_SIZE, MAX_REALS},
    service::{Real, Service, VipKey},
};

use super::{
    filter::{self, Filter},
    maglev,
    maps::Maps,
};
use crate::policy::{self, Forwarding, Policy, RealRef, Scheduler};

/// What the controller knows about the real servers beyond the policy.
#[derive(Debug, Default, Clone)]
pub struct Observed {
    /// Ethernet address of each reachable real server.
    pub macs: HashMap<IpAddr, [u8; 6]>,
    /// VIPs the controller itself added to the client-facing interface.
    pub announced_vips: HashSet<IpAddr>,
    /// Reals whose health check says down (or has not answered yet): no flows at all.
    pub unhealthy: HashSet<RealRef>,
    /// Reals an operator drained at run time (`xdplb drain`): as weight 0.
    pub drained: HashSet<RealRef>,
    /// Reals an operator halted at run time (`xdplb halt`): as if their check failed.
    pub halted: HashSet<RealRef>,
    /// This host's own address toward each SNAT real (the source the kernel picks), for SNAT
    /// services without `snat_address`.
    pub snat_sources: HashMap<IpAddr, IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RealKey {
    service: u32,
    address: IpAddr,
    port: Option<u16>,
}

/// A real as the data plane currently holds it, for status and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealView {
    pub service: String,
    pub service_id: u32,
    pub address: IpAddr,
    pub port: Option<u16>,
    pub id: u32,
    /// May receive packets (its established flows stay on it).
    pub up: bool,
    /// In the live table: takes new flows.
    pub in_table: bool,
    pub weight: u16,
    pub fallback: bool,
}

#[derive(Default)]
pub struct Sync {
    service_ids: HashMap<String, u32>,
    real_ids: HashMap<RealKey, u32>,
    /// Last generation given out per real id.
    generations: Vec<u32>,
    /// Real entries as last written, to skip unchanged writes.
    written_reals: HashMap<u32, Real>,
    /// Live table number per service id.
    active_table: HashMap<u32, u32>,
    /// Contents of each table as last written (unknown after a restart: written in full).
    tables: HashMap<u32, Vec<u32>>,
    vip_ports: HashMap<VipKey, Service>,
    vips: HashMap<Addr, u32>,
    vip_filter: Filter,
    real_filter: Filter,
    /// What the last `apply` produced, by service name.
    pub reals_view: Vec<RealView>,
    /// Reals removed from a service that still exists, kept usable (but out of the table)
    /// until their established flows end; `retire_idle` retires them.
    leaving: HashMap<u32, LeavingReal>,
    /// `NAT_ORIGINS` as last written.
    nat_origins: HashMap<ReplySource, NatOrigin>,
    /// NAT reply sources that serve several VIP:ports (warned about once).
    ambiguous_origins: BTreeSet<String>,
    /// The kernel's jiffies per second, to turn timeouts into data-plane ticks.
    hz: u32,
}

/// A real on its way out of the data plane.
#[derive(Debug, Clone, Copy)]
struct LeavingReal {
    /// NAT port translation: the reply source port to keep recognising (else the service's).
    port: Option<u16>,
    /// Id of the service it leaves (whose ports it served without a translation).
    service: u32,
    since: std::time::Instant,
}

impl Sync {
    /// Starts from what the maps already hold (empty, or left by an earlier controller).
    pub fn adopt(maps: &Maps, hz: u32) -> Result<Sync> {
        let mut sync = Sync {
            generations: vec![0; MAX_REALS as usize],
            hz,
            ..Default::default()
        };
        for (id, real) in maps.reals.iter().enumerate() {
            let real = real?;
            sync.generations[id] = real.generation;
            if real.flags != 0 {
                sync.written_reals.insert(id as u32, real);
            }
        }
        for entry in maps.services.iter() {
            let (key, service) = entry?;
            sync.active_table
                .insert(service.id, service.table_base / MAGLEV_TABLE_SIZE);
            sync.vip_ports.insert(key, service);
        }
        for entry in maps.vip_addrs.iter() {
            let (addr, flags) = entry?;
            sync.vips.insert(addr, flags);
        }
        for entry in maps.nat_origins.iter() {
            let (source, origin) = entry?;
            sync.nat_origins.insert(source, origin);
        }
        Ok(sync)
    }

    /// Whether `adopt` found service entries in the maps (an earlier controller's data plane);
    /// meaningful before the first `apply`.
    pub fn found_services(&self) -> bool {
        !self.vip_ports.is_empty()
    }

    /// The data plane's id of a service (its counters' index).
    pub fn service_id(&self, name: &str) -> Option<u32> {
        self.service_ids.get(name).copied()
    }

    /// Writes what `policy` and `observed` ask for, in named steps whose order is the point:
    /// nothing the data plane can reach ever refers to something not yet written.
    pub fn apply(&mut self, maps: &mut Maps, policy: &Policy, observed: &Observed) -> Result<()> {
        let service_ids = self.assign_service_ids(policy);
        let wanted = self.assign_real_ids(policy, &service_ids)?;
        let new_flows: HashMap<&str, Vec<policy::Real>> = policy
            .services
            .iter()
            .map(|s| (s.name.as_str(), new_flow_reals(s, observed)))
            .collect();
        // Reals are written before any table can point at them.
        let view = self.write_reals(maps, &wanted, &new_flows, observed)?;
        let real_bits = self.write_services(maps, policy, &wanted, &new_flows)?;
        self.write_vip_addresses(maps, policy, observed)?;
        self.write_nat_origins(maps, policy, &wanted)?;
        self.write_snat_addrs(maps, policy, observed)?;
        self.retire_departed(maps, &wanted)?;
        self.write_real_filter(maps, policy, &wanted.service_ids, real_bits)?;
        let live_services: HashSet<u32> = wanted.service_ids.values().copied().collect();
        self.active_table
            .retain(|sid, _| live_services.contains(sid));
        self.service_ids = wanted.service_ids;
        self.real_ids = wanted.real_ids;
        self.reals_view = view;
        maps.void_flow_cache()
    }
}

/// Whether a real may receive packets at all: reachable (DR: its MAC is known; NAT: through the
/// kernel's FIB, which finds the next hop itself; SNAT: and it has a source address) and not
/// failing its health check. Established flows of a real that is not usable are rescheduled.
pub(super) fn usable(service: &policy::Service, real: &policy::Real, observed: &Observed) -> bool {
    let reachable = match service.forwarding {
        Forwarding::Dr => observed.macs.contains_key(&real.address),
        Forwarding::Nat => true,
        Forwarding::Snat => snat_source(service, real, observed).is_some(),
    };
    reachable
        && !observed.unhealthy.contains(&RealRef::of(service, real))
        && !observed.halted.contains(&RealRef::of(service, real))
}

/// The source address a SNAT real sees: the service's `snat_address`, else this host's own
/// address toward the real. `None` for other modes, or while no route leads to the real.
pub fn snat_source(
    service: &policy::Service,
    real: &policy::Real,
    observed: &Observed,
) -> Option<IpAddr> {
    if service.forwarding != Forwarding::Snat {
        return None;
    }
    service
        .snat_address
        .or_else(|| observed.snat_sources.get(&real.address).copied())
}

/// The reals a service's table holds, the ones new flows go to: usable, weight above 0
/// (weight 0 is drained), non-backup ones while any is usable, else the backups; with
/// `scheduler: failover` only the first of those in policy order; the fallback server when
/// none at all is usable.
pub(super) fn new_flow_reals(service: &policy::Service, observed: &Observed) -> Vec<policy::Real> {
    let candidates: Vec<&policy::Real> = service
        .reals
        .iter()
        .filter(|r| {
            r.weight > 0
                && !observed.drained.contains(&RealRef::of(service, r))
                && usable(service, r, observed)
        })
        .collect();
    let primaries: Vec<&policy::Real> = candidates.iter().copied().filter(|r| !r.backup).collect();
    let mut chosen = if primaries.is_empty() {
        candidates
    } else {
        primaries
    };
    if service.scheduler == Scheduler::Failover {
        chosen.truncate(1);
    }
    let mut chosen: Vec<policy::Real> = chosen.into_iter().cloned().collect();
    if chosen.is_empty() {
        chosen.extend(
            service
                .members()
                .into_iter()
                .filter(|r| service.is_fallback(r) && usable(service, r, observed)),
        );
    }
    chosen
}

/// The persistence netmask as an address mask in the VIP's family (IPv4: the mapped form,
/// whose first 96 bits are kept whole). Without persistence, the whole address.
pub(super) fn persist_mask(service: &policy::Service) -> Addr {
    let v4 = service.vip.is_ipv4();
    let whole = if v4 { 32 } else { 128 };
    let bits = service
        .persistence
        .map_or(whole, |p| p.netmask.min(whole as u8) as u32);
    Addr::prefix_mask(v4, bits)
}
