//! Turns the policy (plus what the controller learnt: real servers' MACs) into map contents,
//! writing only what changed, in an order that never shows the data plane a half-made state:
//! reals first, then a new Maglev table into the service's standby slot, then the service
//! entries switch to it in one map update each, and only then are removed reals retired.
//!
//! Ids (service ids, real ids) are adopted from the maps when the controller restarts, so
//! connection-table entries written by an earlier controller keep pointing at the same reals.

use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
};

use anyhow::{Context, Result, bail};
use lb_common::{
    clock::ticks_from_secs,
    flow::entry_alive,
    maps::{MAGLEV_TABLE_SIZE, MAX_REALS, MAX_SERVICES},
    service::{
        FORWARD_DR, FORWARD_NAT, REAL_NAT, REAL_NEW_FLOWS, REAL_PERSISTENT, REAL_UP, Real,
        SERVICE_PERSISTENT, SERVICE_SOURCE_HASH, Service, VipKey,
    },
};

use super::{
    filter::{self, Filter},
    maglev::{self, Backend},
    maps::{Maps, VIP_ADDR_ADDED},
};
use crate::policy::{self, Forwarding, Policy, RealRef, Scheduler};

/// What the controller knows about the real servers beyond the policy.
#[derive(Debug, Default, Clone)]
pub struct Observed {
    /// Ethernet address of each reachable real server.
    pub macs: HashMap<Ipv4Addr, [u8; 6]>,
    /// VIPs the controller itself added to the client-facing interface.
    pub announced_vips: HashSet<Ipv4Addr>,
    /// Reals whose health check says down (or has not answered yet): no flows at all.
    pub unhealthy: HashSet<RealRef>,
    /// Reals an operator drained at run time (`xdplb drain`): as weight 0.
    pub drained: HashSet<RealRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RealKey {
    service: u32,
    address: Ipv4Addr,
    port: Option<u16>,
}

/// A real as the data plane currently holds it, for status and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealView {
    pub service: String,
    pub service_id: u32,
    pub address: Ipv4Addr,
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
    vips: HashMap<u32, u32>,
    vip_filter: Filter,
    real_filter: Filter,
    /// What the last `apply` produced, by service name.
    pub reals_view: Vec<RealView>,
    /// Reals removed from a service that still exists, kept usable (but out of the table)
    /// until their established flows end; `retire_idle` retires them.
    leaving: HashMap<u32, LeavingReal>,
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
        Ok(sync)
    }

    /// The data plane's id of a service (its counters' index).
    pub fn service_id(&self, name: &str) -> Option<u32> {
        self.service_ids.get(name).copied()
    }

    /// Service id an earlier controller gave this service, found through any of its VIP:ports.
    fn adopted_service_id(&self, service: &policy::Service) -> Option<u32> {
        service
            .ports
            .iter()
            .find_map(|&port| self.vip_ports.get(&vip_key(service, port)).map(|s| s.id))
    }

    pub fn apply(&mut self, maps: &mut Maps, policy: &Policy, observed: &Observed) -> Result<()> {
        // 1. Ids: keep existing ones, adopt ones found in the maps, give new ones the lowest free.
        let mut service_ids = HashMap::new();
        for service in &policy.services {
            let id = self
                .service_ids
                .get(&service.name)
                .copied()
                .or_else(|| self.adopted_service_id(service))
                .filter(|id| !service_ids.values().any(|v| *v == Some(*id)));
            service_ids.insert(service.name.clone(), id);
        }
        let mut used: HashSet<u32> = service_ids.values().flatten().copied().collect();
        // New services get the lowest free ids in policy order, so ids are reproducible.
        let mut assigned = HashMap::new();
        for service in &policy.services {
            let id = service_ids[&service.name].unwrap_or_else(|| {
                let free = (0..MAX_SERVICES)
                    .find(|i| !used.contains(i))
                    .expect("policy validation caps services");
                used.insert(free);
                free
            });
            assigned.insert(service.name.clone(), id);
        }
        let service_ids = assigned;

        let mut real_ids = HashMap::new();
        let mut taken: HashSet<u32> = HashSet::new();
        let mut wanted_reals = Vec::new();
        let members: Vec<Vec<policy::Real>> = policy.services.iter().map(|s| s.members()).collect();
        for (service, members) in policy.services.iter().zip(&members) {
            let sid = service_ids[&service.name];
            for real in members {
                let key = RealKey {
                    service: sid,
                    address: real.address,
                    port: real.port,
                };
                let existing = self.real_ids.get(&key).copied().or_else(|| {
                    self.written_reals
                        .iter()
                        .find(|(_, r)| {
                            r.service == sid && r.addr == u32::from_ne_bytes(real.address.octets())
                        })
                        .map(|(&id, _)| id)
                });
                if let Some(id) = existing.filter(|id| !taken.contains(id)) {
                    taken.insert(id);
                    real_ids.insert(key.clone(), id);
                }
                wanted_reals.push((service, real, key));
            }
        }
        for (_, _, key) in &wanted_reals {
            if !real_ids.contains_key(key) {
                let Some(id) = (0..MAX_REALS)
                    .find(|i| !taken.contains(i) && !self.written_reals.contains_key(i))
                else {
                    bail!("no free real id: at most {MAX_REALS} reals");
                };
                taken.insert(id);
                self.generations[id as usize] = self.generations[id as usize].wrapping_add(1);
                real_ids.insert(key.clone(), id);
            }
        }

        // 2. Reals: written before any table can point at them.
        let mut view = Vec::new();
        let new_flows: HashMap<&str, Vec<policy::Real>> = policy
            .services
            .iter()
            .map(|s| (s.name.as_str(), new_flow_reals(s, observed)))
            .collect();
        for (service, real, key) in &wanted_reals {
            let id = real_ids[key];
            let mac = observed.macs.get(&real.address);
            let nat = if service.forwarding == Forwarding::Nat {
                REAL_NAT
            } else {
                0
            };
            let up = usable(service, real, observed);
            let mut flags = nat;
            if up {
                flags |= REAL_UP;
            }
            if new_flows[service.name.as_str()].contains(real) {
                flags |= REAL_NEW_FLOWS;
            }
            if service.persistence.is_some() {
                flags |= REAL_PERSISTENT;
            }
            let entry = Real {
                mac: mac.copied().unwrap_or_default(),
                flags,
                addr: u32::from_ne_bytes(real.address.octets()),
                generation: self.generations[id as usize],
                service: key.service,
                port: real.port.unwrap_or(0).to_be(),
                _pad: 0,
                idle_timeout: ticks_from_secs(service.timeouts.idle.as_secs(), self.hz),
                closing_timeout: ticks_from_secs(service.timeouts.closing.as_secs(), self.hz),
                persist_mask: persist_mask(service),
            };
            if self.written_reals.get(&id) != Some(&entry) {
                maps.reals
                    .set(id, entry, 0)
                    .with_context(|| format!("writing real {}", real.address))?;
                self.written_reals.insert(id, entry);
            }
            view.push(RealView {
                service: service.name.clone(),
                service_id: key.service,
                address: real.address,
                port: real.port,
                id,
                up,
                in_table: flags & REAL_NEW_FLOWS != 0,
                weight: real.weight,
                fallback: service.is_fallback(real),
            });
        }

        // 3. Tables and service entries.
        let mut wanted_vip_ports = HashMap::new();
        for service in &policy.services {
            let sid = service_ids[&service.name];
            let backends: Vec<Backend> = new_flows[service.name.as_str()]
                .iter()
                .map(|r| {
                    let id = real_ids[&RealKey {
                        service: sid,
                        address: r.address,
                        port: r.port,
                    }];
                    Backend {
                        address: r.address,
                        port: r.port.unwrap_or(0),
                        weight: r.weight,
                        id,
                    }
                })
                .collect();
            let table = maglev::build(&backends, MAGLEV_TABLE_SIZE);
            let live = self.active_table.get(&sid).copied();
            let table_no = match live {
                Some(t) if self.tables.get(&t) == Some(&table) => t,
                _ => {
                    // Write the standby table, then switch to it below.
                    let standby = match live {
                        Some(t) if t == sid * 2 => sid * 2 + 1,
                        _ => sid * 2,
                    };
                    self.write_table(maps, standby, table)?;
                    standby
                }
            };
            let value = Service {
                id: sid,
                table_base: table_no * MAGLEV_TABLE_SIZE,
                forwarding: match service.forwarding {
                    Forwarding::Dr => FORWARD_DR,
                    Forwarding::Nat => FORWARD_NAT,
                },
                flags: match service.scheduler {
                    Scheduler::SourceHash => SERVICE_SOURCE_HASH,
                    _ => 0,
                } | if service.persistence.is_some() {
                    SERVICE_PERSISTENT
                } else {
                    0
                },
                _pad: 0,
                persist_timeout: service
                    .persistence
                    .map(|p| ticks_from_secs(p.timeout.as_secs().max(1), self.hz))
                    .unwrap_or(0),
                persist_mask: persist_mask(service),
            };
            for &port in &service.ports {
                wanted_vip_ports.insert(vip_key(service, port), value);
            }
            self.active_table.insert(sid, table_no);
        }
        // Filter bits go on before the entries they stand for, and come off after (filter.rs).
        let vip_bits = filter::words(wanted_vip_ports.keys().map(|k| (k.addr, k.port, k.proto)));
        let real_bits = filter::words(nat_reply_sources(policy));
        self.vip_filter.add(&mut maps.vip_filter, &vip_bits)?;
        self.real_filter.add(&mut maps.real_filter, &real_bits)?;
        for (key, value) in &wanted_vip_ports {
            if self.vip_ports.get(key) != Some(value) {
                maps.services
                    .insert(key, value, 0)
                    .context("writing a service entry")?;
            }
        }
        let removed: Vec<VipKey> = self
            .vip_ports
            .keys()
            .filter(|k| !wanted_vip_ports.contains_key(k))
            .copied()
            .collect();
        for key in &removed {
            maps.services
                .remove(key)
                .context("removing a service entry")?;
        }
        purge_flows(maps, &removed)?;
        self.vip_filter.write(&mut maps.vip_filter, vip_bits)?;
        self.vip_ports = wanted_vip_ports;

        let wanted_vips: HashMap<u32, u32> = policy
            .services
            .iter()
            .map(|s| {
                let flags = if observed.announced_vips.contains(&s.vip) {
                    VIP_ADDR_ADDED
                } else {
                    0
                };
                (u32::from_ne_bytes(s.vip.octets()), flags)
            })
            .collect();
        for (addr, flags) in &wanted_vips {
            if self.vips.get(addr) != Some(flags) {
                maps.vip_addrs.insert(addr, flags, 0)?;
            }
        }
        for addr in self
            .vips
            .keys()
            .filter(|a| !wanted_vips.contains_key(a))
            .copied()
            .collect::<Vec<_>>()
        {
            maps.vip_addrs.remove(&addr)?;
        }
        self.vips = wanted_vips;

        // 4. Reals that left the policy: out of every table now. One whose service stays and
        //    that was up keeps its established flows (graceful removal, like IPVS) until
        //    `retire_idle` finds them ended; the others are retired at once.
        let live_ids: HashSet<u32> = real_ids.values().copied().collect();
        let live_services: HashSet<u32> = service_ids.values().copied().collect();
        self.leaving.retain(|id, _| !live_ids.contains(id));
        for id in self
            .written_reals
            .keys()
            .filter(|id| !live_ids.contains(id))
            .copied()
            .collect::<Vec<_>>()
        {
            let old = self.written_reals[&id];
            if live_services.contains(&old.service) && old.flags & REAL_UP != 0 {
                if !self.leaving.contains_key(&id) {
                    let leaving = Real {
                        flags: old.flags & !(REAL_NEW_FLOWS | REAL_PERSISTENT),
                        ..old
                    };
                    maps.reals.set(id, leaving, 0)?;
                    self.written_reals.insert(id, leaving);
                    self.leaving.insert(
                        id,
                        LeavingReal {
                            port: (old.port != 0).then(|| u16::from_be(old.port)),
                            service: old.service,
                            since: std::time::Instant::now(),
                        },
                    );
                }
            } else {
                self.leaving.remove(&id);
                self.retire(maps, id)?;
            }
        }
        // Leaving NAT reals' replies must still be recognised.
        let mut real_bits = real_bits;
        let leaving_sources = self.leaving_reply_sources(policy, &service_ids);
        for (word, bits) in filter::words(leaving_sources).into_iter().enumerate() {
            real_bits[word] |= bits;
        }
        self.real_filter.write(&mut maps.real_filter, real_bits)?;
        self.active_table
            .retain(|sid, _| live_services.contains(sid));
        self.service_ids = service_ids;
        self.real_ids = real_ids;
        self.reals_view = view;
        maps.void_flow_cache()
    }

    fn retire(&mut self, maps: &mut Maps, id: u32) -> Result<()> {
        let retired = Real {
            mac: [0; 6],
            flags: 0,
            addr: 0,
            generation: self.generations[id as usize],
            service: 0,
            port: 0,
            _pad: 0,
            idle_timeout: 0,
            closing_timeout: 0,
            persist_mask: 0,
        };
        maps.reals.set(id, retired, 0)?;
        self.written_reals.remove(&id);
        Ok(())
    }

    /// Reply sources (address, port, protocol) of leaving NAT reals.
    fn leaving_reply_sources(
        &self,
        policy: &Policy,
        service_ids: &HashMap<String, u32>,
    ) -> Vec<(u32, u16, u8)> {
        let mut out = Vec::new();
        for (id, leaving) in &self.leaving {
            let real = self.written_reals[id];
            if real.flags & REAL_NAT == 0 {
                continue;
            }
            let Some(service) = policy
                .services
                .iter()
                .find(|s| service_ids.get(&s.name) == Some(&leaving.service))
            else {
                continue;
            };
            let ports = match leaving.port {
                Some(port) => vec![port],
                None => service.ports.clone(),
            };
            out.extend(
                ports
                    .into_iter()
                    .map(|p| (real.addr, p.to_be(), service.protocol.number())),
            );
        }
        out
    }

    /// Retires leaving reals that no live flow uses any more (walks the connection tables;
    /// call it every few seconds, not per packet) at clock tick `now`. Returns the addresses retired, so the
    /// caller re-applies the policy (the NAT reply filter loses their bits).
    pub fn retire_idle(
        &mut self,
        maps: &mut Maps,
        now: u32,
    ) -> Result<Vec<(Ipv4Addr, std::time::Duration)>> {
        if self.leaving.is_empty() {
            return Ok(Vec::new());
        }
        let mut busy = HashSet::new();
        let alive = |seen: u32, flags: u32, real: &Real| entry_alive(seen, flags, real, now);
        for entry in maps.flows.iter() {
            let Ok((_, flow)) = entry else { continue };
            if let Some(real) = self
                .leaving
                .get(&flow.real)
                .map(|_| self.written_reals[&flow.real])
                && real.generation == flow.generation
                && alive(flow.seen, flow.flags, &real)
            {
                busy.insert(flow.real);
            }
        }
        for entry in maps.nat_reverse.iter() {
            let Ok((_, back)) = entry else { continue };
            if let Some(real) = self
                .leaving
                .get(&back.real)
                .map(|_| self.written_reals[&back.real])
                && real.generation == back.generation
                && alive(back.seen, back.flags, &real)
            {
                busy.insert(back.real);
            }
        }
        let mut retired = Vec::new();
        for (id, leaving) in self
            .leaving
            .iter()
            .filter(|(id, _)| !busy.contains(id))
            .map(|(id, l)| (*id, *l))
            .collect::<Vec<_>>()
        {
            let addr = Ipv4Addr::from(self.written_reals[&id].addr.to_ne_bytes());
            self.leaving.remove(&id);
            self.retire(maps, id)?;
            retired.push((addr, leaving.since.elapsed()));
        }
        Ok(retired)
    }

    /// Writes `table` into table number `table_no`, only the entries that differ from what it
    /// is known to hold.
    fn write_table(&mut self, maps: &mut Maps, table_no: u32, table: Vec<u32>) -> Result<()> {
        let base = table_no * MAGLEV_TABLE_SIZE;
        let old = self.tables.get(&table_no);
        for (i, &id) in table.iter().enumerate() {
            if old.map(|o| o[i]) != Some(id) {
                maps.maglev
                    .set(base + i as u32, id, 0)
                    .context("writing a Maglev table")?;
            }
        }
        self.tables.insert(table_no, table);
        Ok(())
    }
}

fn vip_key(service: &policy::Service, port: u16) -> VipKey {
    VipKey {
        addr: u32::from_ne_bytes(service.vip.octets()),
        port: port.to_be(),
        proto: service.protocol.number(),
        _pad: 0,
    }
}

/// Whether the data plane can send to `real`: DR needs its MAC on the segment; NAT routes
/// through the kernel's FIB, which finds the next hop itself.
/// Whether a real may receive packets at all: reachable (NAT: through the FIB; DR: its MAC is
/// known) and not failing its health check. Established flows of a real that is not usable
/// are rescheduled.
fn usable(service: &policy::Service, real: &policy::Real, observed: &Observed) -> bool {
    (service.forwarding == Forwarding::Nat || observed.macs.contains_key(&real.address))
        && !observed.unhealthy.contains(&RealRef::of(service, real))
}

/// The reals a service's table holds, the ones new flows go to: usable, weight above 0
/// (weight 0 is drained), non-backup ones while any is usable, else the backups; with
/// `scheduler: failover` only the first of those in policy order; the fallback server when
/// none at all is usable.
fn new_flow_reals(service: &policy::Service, observed: &Observed) -> Vec<policy::Real> {
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

/// The persistence netmask as an address mask in network byte order.
fn persist_mask(service: &policy::Service) -> u32 {
    let bits = service.persistence.map(|p| p.netmask).unwrap_or(32) as u32;
    let host_order = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    host_order.to_be()
}

/// Where NAT reals' replies come from: their address and the port they serve on (the
/// translated port, or each service port).
fn nat_reply_sources(policy: &Policy) -> Vec<(u32, u16, u8)> {
    let mut out = Vec::new();
    for service in policy
        .services
        .iter()
        .filter(|s| s.forwarding == Forwarding::Nat)
    {
        for real in service.members() {
            let addr = u32::from_ne_bytes(real.address.octets());
            let ports = match real.port {
                Some(port) => vec![port],
                None => service.ports.clone(),
            };
            out.extend(
                ports
                    .into_iter()
                    .map(|p| (addr, p.to_be(), service.protocol.number())),
            );
        }
    }
    out
}

/// Forgets the flows of VIP:ports that left the policy, so they are not forwarded from the
/// connection table after their service entry is gone, nor their replies translated.
fn purge_flows(maps: &mut Maps, removed: &[VipKey]) -> Result<()> {
    if removed.is_empty() {
        return Ok(());
    }
    let gone: HashSet<(u32, u16, u8)> = removed.iter().map(|k| (k.addr, k.port, k.proto)).collect();
    let stale: Vec<_> = maps
        .flows
        .keys()
        .filter_map(|k| k.ok())
        .filter(|k| gone.contains(&(k.dst, k.dport, k.proto)))
        .collect();
    for key in stale {
        // An entry the LRU evicted meanwhile is already gone.
        let _ = maps.flows.remove(&key);
    }
    // NAT replies are keyed by the real's side; their value names the VIP:port they restore.
    let stale_replies: Vec<_> = maps
        .nat_reverse
        .iter()
        .filter_map(|e| e.ok())
        .filter(|(k, back)| gone.contains(&(back.vip, back.vip_port, k.proto)))
        .map(|(k, _)| k)
        .collect();
    for key in stale_replies {
        let _ = maps.nat_reverse.remove(&key);
    }
    Ok(())
}
