//! Step 5: `SNAT_ADDRS`, the source addresses SNAT flows are given. The data plane drops a
//! packet to one of them in xdplb's port range that belongs to no flow, instead of leaving it
//! to the kernel, which would answer with a reset (lb-ebpf/src/snat.rs).

use std::collections::HashSet;

use anyhow::{Context, Result};
use lb_common::addr::Addr;

use super::{Observed, Sync, snat_source};
use crate::{dataplane::maps::Maps, policy::Policy};

impl Sync {
    pub(super) fn write_snat_addrs(
        &mut self,
        maps: &mut Maps,
        policy: &Policy,
        observed: &Observed,
    ) -> Result<()> {
        let wanted: HashSet<Addr> = policy
            .services
            .iter()
            .flat_map(|s| s.members().into_iter().map(move |r| (s, r)))
            .filter_map(|(s, r)| snat_source(s, &r, observed))
            .map(Addr::from)
            .collect();
        let present: HashSet<Addr> = maps.snat_addrs.keys().filter_map(|k| k.ok()).collect();
        for &addr in wanted.difference(&present) {
            maps.snat_addrs
                .insert(addr, 0, 0)
                .context("writing SNAT_ADDRS")?;
        }
        for addr in present.difference(&wanted) {
            let _ = maps.snat_addrs.remove(addr);
        }
        Ok(())
    }
}
