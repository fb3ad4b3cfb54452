//! Step 4: `NAT_ORIGINS`, the one VIP:port each NAT real's reply source serves, so a reply of
//! a flow this node never saw (a pair peer scheduled it, then failed) is translated and the
//! flow adopted (lb-ebpf/src/nat_reply.rs). An address:port that serves several VIP:ports
//! has no entry: which client-side address its reply needs cannot be known, and such a
//! flow is taken over only by the client's next packet.

use std::collections::{BTreeSet, HashMap};

use anyhow::{Context, Result};
use lb_common::{
    addr::Addr,
    flow::{NatOrigin, ReplySource},
    maps::MAX_NAT_ORIGINS,
};
use tracing::warn;

use super::{Sync, ids::Wanted};
use crate::{
    dataplane::maps::Maps,
    policy::{self, Forwarding, Policy},
};

/// An address:port:protocol a NAT real replies from, and the service port it answers for.
pub(super) struct ReplyOrigin<'p> {
    pub service: &'p policy::Service,
    pub real: policy::Real,
    /// Address, port (network byte order) and protocol of the replies.
    pub source: (Addr, u16, u8),
    pub vip_port: u16,
}

/// The reply sources of every real of a service forwarded in one of `modes`: its address and
/// the port it serves each service port on (its translation, or the service port itself).
pub(super) fn reply_sources<'p>(policy: &'p Policy, modes: &[Forwarding]) -> Vec<ReplyOrigin<'p>> {
    let mut out = Vec::new();
    for service in policy
        .services
        .iter()
        .filter(|s| modes.contains(&s.forwarding))
    {
        for real in service.members() {
            let addr = Addr::from(real.address);
            for &vip_port in &service.ports {
                let port = real.port.unwrap_or(vip_port);
                out.push(ReplyOrigin {
                    service,
                    real: real.clone(),
                    source: (addr, port.to_be(), service.protocol.number()),
                    vip_port,
                });
            }
        }
    }
    out
}

impl Sync {
    pub(super) fn write_nat_origins(
        &mut self,
        maps: &mut Maps,
        policy: &Policy,
        wanted: &Wanted,
    ) -> Result<()> {
        let mut origins: HashMap<ReplySource, Option<NatOrigin>> = HashMap::new();
        let mut ambiguous = BTreeSet::new();
        // SNAT flows are never adopted: their replies do not say which client they are for.
        for origin in reply_sources(policy, &[Forwarding::Nat]) {
            let (addr, port, proto) = origin.source;
            let key = ReplySource {
                addr,
                port,
                proto,
                _pad: 0,
                _pad2: 0,
            };
            let id = wanted.real_id(wanted.service_ids[&origin.service.name], &origin.real);
            let value = NatOrigin {
                vip: Addr::from(origin.service.vip),
                vip_port: origin.vip_port.to_be(),
                _pad: 0,
                real: id,
                generation: self.generations[id as usize],
                _pad2: 0,
            };
            let slot = origins.entry(key).or_insert(Some(value));
            if slot.is_some_and(|held| (held.vip, held.vip_port) != (value.vip, value.vip_port)) {
                *slot = None;
                ambiguous.insert(format!(
                    "{}:{}/{}",
                    origin.real.address,
                    u16::from_be(port),
                    origin.service.protocol.name()
                ));
            }
        }
        if ambiguous != self.ambiguous_origins && !ambiguous.is_empty() {
            warn!(
                sources = ?ambiguous,
                "these NAT real address:ports serve several VIP:ports: a flow through them that \
                 another balancer scheduled is taken over only by the client's next packet, not \
                 by the real's reply (give each VIP:port a port of its own on the real)"
            );
        }
        self.ambiguous_origins = ambiguous;
        let mut wanted_origins: HashMap<ReplySource, NatOrigin> = origins
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect();
        if wanted_origins.len() > MAX_NAT_ORIGINS as usize {
            warn!(
                count = wanted_origins.len(),
                "more NAT reply sources than the data plane can adopt flows for; the rest are not"
            );
            let mut keys: Vec<ReplySource> = wanted_origins.keys().copied().collect();
            // As the words lie in memory: for IPv4, the order of the address's last word.
            keys.sort_by_key(|k| (k.addr.words, k.port, k.proto));
            for key in &keys[MAX_NAT_ORIGINS as usize..] {
                wanted_origins.remove(key);
            }
        }
        for key in self
            .nat_origins
            .keys()
            .filter(|k| !wanted_origins.contains_key(k))
            .copied()
            .collect::<Vec<_>>()
        {
            maps.nat_origins
                .remove(&key)
                .context("removing a NAT origin")?;
        }
        for (key, value) in &wanted_origins {
            if self.nat_origins.get(key) != Some(value) {
                maps.nat_origins
                    .insert(key, value, 0)
                    .context("writing a NAT origin")?;
            }
        }
        self.nat_origins = wanted_origins;
        Ok(())
    }
}
