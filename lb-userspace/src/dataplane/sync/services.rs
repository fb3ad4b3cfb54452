//! Step 3: each service's Maglev table (written into its standby slot, then switched to), its
//! VIP:port entries (`SERVICES`) with their filter bits, and the VIP addresses (`VIP_ADDRS`).

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result};
use lb_common::{
    addr::Addr,
    clock::ticks_from_secs,
    maps::MAGLEV_TABLE_SIZE,
    service::{
        FORWARD_DR, FORWARD_NAT, FORWARD_SNAT, SERVICE_PERSISTENT, SERVICE_SOURCE_HASH, Service,
        VipKey,
    },
};

use super::{
    Observed, Sync, filter,
    ids::Wanted,
    maglev::{self, Backend},
    persist_mask,
};
use crate::{
    dataplane::maps::{Maps, VIP_ADDR_ADDED, VIP_ADDR_BGP, VIP_ADDR_KEEPALIVED},
    policy::{self, Forwarding, Policy, Scheduler, VipAnnouncement},
};

pub(super) fn vip_key(service: &policy::Service, port: u16) -> VipKey {
    VipKey {
        addr: Addr::from(service.vip),
        port: port.to_be(),
        proto: service.protocol.number(),
        _pad: 0,
        _pad2: 0,
    }
}

impl Sync {
    /// Writes the tables and service entries; returns the NAT reply filter's bits for the
    /// policy's reals (`write_real_filter` adds leaving reals' and writes them).
    pub(super) fn write_services(
        &mut self,
        maps: &mut Maps,
        policy: &Policy,
        wanted: &Wanted,
        new_flows: &HashMap<&str, Vec<policy::Real>>,
    ) -> Result<Vec<u64>> {
        let mut wanted_vip_ports = HashMap::new();
        for service in &policy.services {
            let sid = wanted.service_ids[&service.name];
            let backends: Vec<Backend> = new_flows[service.name.as_str()]
                .iter()
                .map(|r| Backend {
                    address: r.address,
                    port: r.port.unwrap_or(0),
                    weight: r.weight,
                    id: wanted.real_id(sid, r),
                })
                .collect();
            let table_no = self.write_service_table(maps, sid, &backends)?;
            let value = self.service_entry(service, sid, table_no);
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
        Ok(real_bits)
    }

    /// Makes the service's table hold `backends`: the live table if it already does, else the
    /// standby one, written now. Returns the table's number.
    fn write_service_table(
        &mut self,
        maps: &mut Maps,
        sid: u32,
        backends: &[Backend],
    ) -> Result<u32> {
        let table = maglev::build(backends, MAGLEV_TABLE_SIZE);
        let live = self.active_table.get(&sid).copied();
        Ok(match live {
            Some(t) if self.tables.get(&t) == Some(&table) => t,
            _ => {
                let standby = match live {
                    Some(t) if t == sid * 2 => sid * 2 + 1,
                    _ => sid * 2,
                };
                self.write_table(maps, standby, table)?;
                standby
            }
        })
    }

    fn service_entry(&self, service: &policy::Service, sid: u32, table_no: u32) -> Service {
        Service {
            id: sid,
            table_base: table_no * MAGLEV_TABLE_SIZE,
            forwarding: match service.forwarding {
                Forwarding::Dr => FORWARD_DR,
                Forwarding::Nat => FORWARD_NAT,
                Forwarding::Snat => FORWARD_SNAT,
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
        }
    }

    /// `VIP_ADDRS`: every VIP, flagged if the controller itself put it on the interface.
    pub(super) fn write_vip_addresses(
        &mut self,
        maps: &mut Maps,
        policy: &Policy,
        observed: &Observed,
    ) -> Result<()> {
        let wanted: HashMap<Addr, u32> = policy
            .services
            .iter()
            .map(|s| {
                let mut flags = if observed.announced_vips.contains(&s.vip) {
                    VIP_ADDR_ADDED
                } else {
                    0
                };
                match policy.vip_announcement {
                    VipAnnouncement::Unmanaged => flags |= VIP_ADDR_KEEPALIVED,
                    VipAnnouncement::Bgp => flags |= VIP_ADDR_BGP,
                    VipAnnouncement::Arp => {}
                }
                (Addr::from(s.vip), flags)
            })
            .collect();
        for (addr, flags) in &wanted {
            if self.vips.get(addr) != Some(flags) {
                maps.vip_addrs.insert(addr, flags, 0)?;
            }
        }
        for addr in self
            .vips
            .keys()
            .filter(|a| !wanted.contains_key(a))
            .copied()
            .collect::<Vec<_>>()
        {
            maps.vip_addrs.remove(&addr)?;
        }
        self.vips = wanted;
        Ok(())
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

/// Where NAT and SNAT reals' replies come from: their address and the port they serve on (the
/// translated port, or each service port).
fn nat_reply_sources(policy: &Policy) -> Vec<(Addr, u16, u8)> {
    super::nat_origins::reply_sources(policy, &[Forwarding::Nat, Forwarding::Snat])
        .into_iter()
        .map(|origin| origin.source)
        .collect()
}

/// Forgets the flows of VIP:ports that left the policy, so they are not forwarded from the
/// connection table after their service entry is gone, nor their replies translated.
fn purge_flows(maps: &mut Maps, removed: &[VipKey]) -> Result<()> {
    if removed.is_empty() {
        return Ok(());
    }
    let gone: HashSet<(Addr, u16, u8)> =
        removed.iter().map(|k| (k.addr, k.port, k.proto)).collect();
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
    // SNAT's too, freeing their ports.
    let stale_snat: Vec<_> = maps
        .snat_reverse
        .iter()
        .filter_map(|e| e.ok())
        .filter(|(k, back)| gone.contains(&(back.vip, back.vip_port, k.proto)))
        .map(|(k, _)| k)
        .collect();
    for key in stale_snat {
        let _ = maps.snat_reverse.remove(&key);
    }
    Ok(())
}
