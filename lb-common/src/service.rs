//! What the data plane knows of a virtual service and of its real servers.

use crate::addr::Addr;

/// Key of the `SERVICES` map: one entry per VIP, port and protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VipKey {
    pub addr: Addr,
    /// Destination port, network byte order.
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
    pub _pad2: u32,
}

/// Forwarding modes (`Service::forwarding`).
pub const FORWARD_DR: u8 = 1;
pub const FORWARD_NAT: u8 = 2;
/// NAT with the source rewritten too (`Real::snat_addr`, a port of `maps::SNAT_PORTS`).
pub const FORWARD_SNAT: u8 = 3;

/// Value of the `SERVICES` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Service {
    /// Index into the per-service counters; stable for the service's life.
    pub id: u32,
    /// First entry of the live Maglev table in `MAGLEV`
    /// (table number × `MAGLEV_TABLE_SIZE`). Switching tables rewrites only this field's entry.
    pub table_base: u32,
    pub forwarding: u8,
    /// `SERVICE_SOURCE_HASH`, `SERVICE_PERSISTENT`.
    pub flags: u8,
    pub _pad: u16,
    /// Persistence: how long a client's real is remembered after its last packet, in clock
    /// ticks (`clock`).
    pub persist_timeout: u32,
    /// Persistence: the client address mask, in the VIP's family.
    pub persist_mask: Addr,
}

/// `Service::flags`: the Maglev table is indexed by the client address alone and no flow
/// entry is kept (DR): all of a client's flows go to one real.
pub const SERVICE_SOURCE_HASH: u8 = 1;
/// `Service::flags`: clients (source address masked by `Real::persist_mask`) stick to a real.
pub const SERVICE_PERSISTENT: u8 = 2;

/// `Real::flags`: the real may receive packets (configured, reachable, healthy).
pub const REAL_UP: u16 = 1;
/// `Real::flags`: the real's service forwards by NAT (else DR). Kept on the real so an
/// established flow is handled from the connection table and the real alone.
pub const REAL_NAT: u16 = 2;
/// `Real::flags`: the real is in its service's live table, so it may take new flows and new
/// clients; a remembered client whose real lost this (down, drained, replaced by a returning
/// primary) is scheduled afresh.
pub const REAL_NEW_FLOWS: u16 = 4;
/// `Real::flags`: its service has persistence; established packets refresh the client's entry.
pub const REAL_PERSISTENT: u16 = 8;
/// `Real::flags`, always with `REAL_NAT`: the source is rewritten too, to `Real::snat_addr`
/// and a port of `maps::SNAT_PORTS` (SNAT: replies come back whatever the real's routes).
pub const REAL_SNAT: u16 = 16;

/// Value of the `REALS` array, indexed by real id.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Real {
    /// Ethernet address the data plane sends to (DR), learnt from the neighbour table.
    pub mac: [u8; 6],
    pub flags: u16,
    /// Real server address, in its service's family.
    pub addr: Addr,
    /// Persistence: the client address mask of the service.
    pub persist_mask: Addr,
    /// SNAT: the source address the real sees; `Addr::NONE` otherwise.
    pub snat_addr: Addr,
    /// Bumped each time the id is given to another real, so flows remembered for the previous
    /// holder of the id are never sent to the new one.
    pub generation: u32,
    /// Id of the service this real belongs to (for its counters).
    pub service: u32,
    /// NAT: destination port to translate to, network byte order; 0 keeps the client's.
    pub port: u16,
    pub _pad: u16,
    /// The service's connection-table timeouts, in clock ticks (`clock::ticks_from_secs`),
    /// kept on the real because an established packet reads only its flow entry and the real.
    /// A flow idle longer than `idle_timeout` is scheduled afresh; after a TCP FIN or RST,
    /// `closing_timeout` applies instead.
    pub idle_timeout: u32,
    pub closing_timeout: u32,
    pub _pad2: u32,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain #[repr(C)] data with explicit padding and no invalid bit patterns.
    unsafe impl aya::Pod for super::VipKey {}
    unsafe impl aya::Pod for super::Service {}
    unsafe impl aya::Pod for super::Real {}
}
