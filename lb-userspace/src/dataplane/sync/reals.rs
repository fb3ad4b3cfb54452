//! Step 2: the reals' entries (`REALS`), written before any table can point at them.

use std::collections::HashMap;

use anyhow::{Context, Result};
use lb_common::{
    addr::Addr,
    clock::ticks_from_secs,
    service::{REAL_NAT, REAL_NEW_FLOWS, REAL_PERSISTENT, REAL_SNAT, REAL_UP, Real},
};

use super::{Observed, RealView, Sync, ids::Wanted, persist_mask, snat_source, usable};
use crate::policy::{self, Forwarding};

impl Sync {
    /// Writes every wanted real's entry that changed; returns what status shows of them.
    pub(super) fn write_reals(
        &mut self,
        maps: &mut super::Maps,
        wanted: &Wanted,
        new_flows: &HashMap<&str, Vec<policy::Real>>,
        observed: &Observed,
    ) -> Result<Vec<RealView>> {
        let mut view = Vec::new();
        for (service, real, key) in &wanted.reals {
            let id = wanted.real_ids[key];
            let mac = observed.macs.get(&real.address);
            let up = usable(service, real, observed);
            let mut flags = match service.forwarding {
                Forwarding::Dr => 0,
                Forwarding::Nat => REAL_NAT,
                Forwarding::Snat => REAL_NAT | REAL_SNAT,
            };
            if up {
                flags |= REAL_UP;
            }
            if new_flows[service.name.as_str()].contains(real) {
                flags |= REAL_NEW_FLOWS;
            }
            if service.persistence.is_some() {
                flags |= REAL_PERSISTENT;
            }
            let snat_addr = snat_source(service, real, observed).map_or(Addr::NONE, Addr::from);
            let port = real.port.unwrap_or(0).to_be();
            // A real whose translation changed (its mode, its port, or the source SNAT gives
            // its flows, after a reload or a route change) gets a new generation: its
            // established flows are scheduled afresh rather than sent on with a port or source
            // they were never given, where another flow may hold it.
            if let Some(old) = self.written_reals.get(&id)
                && (old.flags & (REAL_NAT | REAL_SNAT) != flags & (REAL_NAT | REAL_SNAT)
                    || old.port != port
                    || (old.snat_addr != snat_addr && !old.snat_addr.is_none()))
            {
                self.generations[id as usize] = self.generations[id as usize].wrapping_add(1);
            }
            let entry = Real {
                mac: mac.copied().unwrap_or_default(),
                flags,
                addr: Addr::from(real.address),
                generation: self.generations[id as usize],
                service: key.service,
                port,
                _pad: 0,
                idle_timeout: ticks_from_secs(service.timeouts.idle.as_secs(), self.hz),
                closing_timeout: ticks_from_secs(service.timeouts.closing.as_secs(), self.hz),
                persist_mask: persist_mask(service),
                snat_addr,
                _pad2: 0,
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
        Ok(view)
    }
}
