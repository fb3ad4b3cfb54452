//! Step 5: reals that left the policy. They are out of every table at once; one whose service
//! stays and that was up keeps its established flows (graceful removal, like IPVS) until
//! `retire_idle` finds them ended, and its replies stay recognised; the others are retired
//! at once.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

use anyhow::Result;
use lb_common::{
    addr::Addr,
    flow::entry_alive,
    service::{REAL_NAT, REAL_NEW_FLOWS, REAL_PERSISTENT, REAL_UP, Real},
};

use super::{LeavingReal, Sync, filter, ids::Wanted};
use crate::{dataplane::maps::Maps, policy::Policy};

impl Sync {
    pub(super) fn retire_departed(&mut self, maps: &mut Maps, wanted: &Wanted) -> Result<()> {
        let live_ids: HashSet<u32> = wanted.real_ids.values().copied().collect();
        let live_services: HashSet<u32> = wanted.service_ids.values().copied().collect();
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
        Ok(())
    }

    /// The NAT reply filter: the policy's reals' `bits`, plus leaving NAT reals' replies,
    /// which must still be recognised.
    pub(super) fn write_real_filter(
        &mut self,
        maps: &mut Maps,
        policy: &Policy,
        service_ids: &HashMap<String, u32>,
        mut bits: Vec<u64>,
    ) -> Result<()> {
        let leaving_sources = self.leaving_reply_sources(policy, service_ids);
        for (word, leaving) in filter::words(leaving_sources).into_iter().enumerate() {
            bits[word] |= leaving;
        }
        self.real_filter.write(&mut maps.real_filter, bits)
    }

    pub(super) fn retire(&mut self, maps: &mut Maps, id: u32) -> Result<()> {
        let retired = Real {
            mac: [0; 6],
            flags: 0,
            addr: Addr::NONE,
            generation: self.generations[id as usize],
            service: 0,
            port: 0,
            _pad: 0,
            idle_timeout: 0,
            closing_timeout: 0,
            persist_mask: Addr::NONE,
            snat_addr: Addr::NONE,
            _pad2: 0,
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
    ) -> Vec<(Addr, u16, u8)> {
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
    ) -> Result<Vec<(IpAddr, std::time::Duration)>> {
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
            let addr = IpAddr::from(self.written_reals[&id].addr);
            self.leaving.remove(&id);
            self.retire(maps, id)?;
            retired.push((addr, leaving.since.elapsed()));
        }
        Ok(retired)
    }
}
