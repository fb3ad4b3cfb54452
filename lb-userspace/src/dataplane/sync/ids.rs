//! Step 1: ids. Existing ones are kept, ones found in the maps (an earlier controller's) are
//! adopted, new ones get the lowest free number in policy order, so ids are reproducible.

use std::collections::{HashMap, HashSet};

use anyhow::{Result, bail};
use lb_common::{
    addr::Addr,
    maps::{MAX_REALS, MAX_SERVICES},
};

use super::{RealKey, Sync};
use crate::policy::{self, Policy};

/// The ids this apply gives the policy's services and reals.
pub(super) struct Wanted<'p> {
    pub service_ids: HashMap<String, u32>,
    pub real_ids: HashMap<RealKey, u32>,
    /// Every real of every service (its members: reals and fallback), in policy order.
    pub reals: Vec<(&'p policy::Service, policy::Real, RealKey)>,
}

impl Wanted<'_> {
    /// The id of `real` of the service with id `service`.
    pub fn real_id(&self, service: u32, real: &policy::Real) -> u32 {
        self.real_ids[&RealKey {
            service,
            address: real.address,
            port: real.port,
        }]
    }
}

impl Sync {
    pub(super) fn assign_service_ids(&self, policy: &Policy) -> HashMap<String, u32> {
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
        assigned
    }

    pub(super) fn assign_real_ids<'p>(
        &mut self,
        policy: &'p Policy,
        service_ids: &HashMap<String, u32>,
    ) -> Result<Wanted<'p>> {
        let mut real_ids = HashMap::new();
        let mut taken: HashSet<u32> = HashSet::new();
        let mut reals = Vec::new();
        for service in &policy.services {
            let sid = service_ids[&service.name];
            for real in service.members() {
                let key = RealKey {
                    service: sid,
                    address: real.address,
                    port: real.port,
                };
                let existing = self.real_ids.get(&key).copied().or_else(|| {
                    self.written_reals
                        .iter()
                        .find(|(_, r)| r.service == sid && r.addr == Addr::from(real.address))
                        .map(|(&id, _)| id)
                });
                if let Some(id) = existing.filter(|id| !taken.contains(id)) {
                    taken.insert(id);
                    real_ids.insert(key.clone(), id);
                }
                reals.push((service, real, key));
            }
        }
        for (_, _, key) in &reals {
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
        Ok(Wanted {
            service_ids: service_ids.clone(),
            real_ids,
            reals,
        })
    }

    /// Service id an earlier controller gave this service, found through any of its VIP:ports.
    fn adopted_service_id(&self, service: &policy::Service) -> Option<u32> {
        service.ports.iter().find_map(|&port| {
            self.vip_ports
                .get(&super::services::vip_key(service, port))
                .map(|s| s.id)
        })
    }
}
