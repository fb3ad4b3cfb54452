//! Which real gets a packet. A flow the cache holds (flow_cache.rs, looked up in main.rs
//! before anything else) keeps its real while that real is up (`cached`). Otherwise the
//! connection table: an established flow is forwarded from its entry and the real alone,
//! with no service lookup. On a miss, the service (VIP:port:protocol): a persistent client's
//! remembered real, else its Maglev table indexed by the flow hash (by the client address
//! alone with `source-hash`), and the choice is remembered.
//!
//! A remembered real that went down, left the policy or whose id was given to another real is
//! not used, nor is an entry that has expired (`age`): the flow is scheduled afresh (or
//! passed, if its service is gone). A remembered client is only sent back to a real that
//! still takes new flows (not down, drained or out of the table).

use lb_common::{
    addr::Addr,
    clock::fresh,
    counters::Reason,
    flow::{
        CachedFlow, FLOW_CLOSING, FLOW_OPENING, FlowKey, FlowValue, NextHop, PersistKey,
        PersistValue,
    },
    hash::{flow_hash, folded_hash},
    maps::{MAGLEV_TABLE_SIZE, NO_REAL},
    service::{
        FORWARD_DR, REAL_NAT, REAL_NEW_FLOWS, REAL_PERSISTENT, REAL_SNAT, REAL_UP, Real,
        SERVICE_PERSISTENT, SERVICE_SOURCE_HASH, Service, VipKey,
    },
};

use crate::{
    age, flood, flow_cache,
    maps::{FLOWS, MAGLEV, PERSIST, REALS, SERVICES},
    nat,
    parse::Packet,
    zero,
};

pub struct Chosen {
    pub id: u32,
    /// The real's map entry, read field by field (copying it whole costs every packet).
    pub real: &'static Real,
    pub new_flow: bool,
    /// Where NAT keeps the flow's next hop: in its connection-table entry, or in the flow-cache
    /// slot that served this packet; null if the flow could not be stored.
    pub hop: *mut NextHop,
    /// The packet went through the connection table, so NAT may cache the flow once its next
    /// hop is known.
    pub via_table: bool,
    /// The clock tick this packet was handled at.
    pub now: u32,
    /// NAT and SNAT: the source the packet leaves with (the client's own in NAT; the SNAT
    /// address and port once known in SNAT).
    pub src: (Addr, u16),
}

impl Chosen {
    /// A new flow whose packet needs nothing from a connection-table entry: DR (no next hop
    /// to keep), whether entered or not (source hashing, a SYN flood, a full table).
    #[inline(always)]
    fn new_flow(id: u32, real: &'static Real, now: u32) -> Chosen {
        Chosen {
            id,
            real,
            new_flow: true,
            hop: core::ptr::null_mut(),
            via_table: false,
            now,
            src: (Addr::NONE, 0),
        }
    }
}

/// A client's flow served by its flow-cache slot (`flow_cache::get`), if its real is still up
/// and the same one.
#[inline(always)]
pub fn cached(slot: &'static mut CachedFlow, now: u32) -> Option<Chosen> {
    let real = usable_real(slot.real)?;
    // A NAT flow is cached with its next hop, a DR flow without: a real whose mode changed
    // under the same id takes the table path.
    if real.generation != slot.generation || (real.flags & REAL_NAT == 0) != (slot.hop.ifindex == 0)
    {
        return None;
    }
    Some(Chosen {
        id: slot.real,
        real,
        new_flow: false,
        hop: &mut slot.hop,
        via_table: false,
        now,
        src: (Addr::load(&slot.out_addr), slot.out_port),
    })
}

/// The real for a packet to a VIP, from the connection table or by scheduling it.
#[inline(always)]
pub fn pick_real<const V6: bool>(packet: &Packet<V6>, now: u32) -> Result<Chosen, Reason> {
    // During a flood (lb_common::flood) a SYN skips the connection table: a spoofed one has
    // no entry to find. (The flood state is read again below rather than kept: a value held
    // across the scheduling steps multiplies the paths the verifier walks.)
    if !(packet.opens && flood::flooded(now))
        && let Some(chosen) = established(packet, now)
    {
        return Ok(chosen);
    }
    let flow = packet.flow();
    if martian(flow) {
        return Err(Reason::Martian);
    }
    let vip = VipKey {
        addr: Addr::load(&flow.dst),
        port: flow.dport,
        proto: flow.proto,
        _pad: 0,
        _pad2: 0,
    };
    // SAFETY: the value is copied out at once.
    let service = match unsafe { SERVICES.get(vip) } {
        Some(service) => *service,
        None => return Err(Reason::NotForVip),
    };
    // During a flood no DR flow gets an entry: every packet of a flow that begins during it
    // comes here, and makes the same choice. NAT keeps entering flows (replies need the
    // reverse entries); a retransmitted SYN is entered again, to Maglev's same choice unless
    // the reals changed since its first.
    let untracked = service.forwarding == FORWARD_DR && flood::flooded(now);
    // The detector counts SYNs, and other packets when they make an entry: an untracked
    // flow's packets do not keep a flood going.
    if packet.opens {
        flood::count_new_flow(now);
    }
    let (id, real) = match remembered_client(flow, &service, now) {
        Some(chosen) => chosen,
        None => {
            let id = from_table(flow, &service)?;
            let real = usable_real(id).ok_or(Reason::NoReal)?;
            if service.flags & SERVICE_PERSISTENT != 0 && !untracked {
                refresh_client(flow, real, id, now);
            }
            (id, real)
        }
    };
    if untracked {
        flood::count_untracked();
        return Ok(Chosen::new_flow(id, real, now));
    }
    if !packet.opens {
        flood::count_new_flow(now);
    }
    // SNAT: the flow's source port is claimed by a program of its own (snat.rs), which finds
    // the flow by this entry; until then the entry has none.
    let snat_port = 0;
    let mut value = core::mem::MaybeUninit::<FlowValue>::uninit();
    zero::fill(&mut value);
    let v = value.as_mut_ptr();
    // SAFETY: writing fields of the zeroed value, then reading it whole.
    let value = unsafe {
        (*v).real = id;
        (*v).generation = real.generation;
        (*v).seen = now;
        (*v).flags = if packet.closes {
            FLOW_CLOSING
        } else if packet.opens && real.flags & REAL_SNAT != 0 {
            FLOW_OPENING
        } else {
            0
        };
        (*v).snat_port = snat_port;
        value.assume_init_ref()
    };
    // A full table evicts the least recently used flow; an error here only costs stickiness.
    let _ = FLOWS.insert(flow, value, 0);
    if real.flags & REAL_NAT == 0 {
        flow_cache::put_to_real(
            packet,
            id,
            real.generation,
            now,
            NextHop::default(),
            (Addr::NONE, 0),
        );
        return Ok(Chosen::new_flow(id, real, now));
    }
    let src = (Addr::load(&flow.src), flow.sport);
    let Some(entry) = FLOWS.get_ptr_mut(flow) else {
        return Ok(Chosen {
            src,
            ..Chosen::new_flow(id, real, now)
        });
    };
    Ok(Chosen {
        id,
        real,
        new_flow: true,
        // SAFETY: a field of a map value pointer from a successful lookup.
        hop: unsafe { &mut (*entry).hop },
        via_table: true,
        now,
        src,
    })
}

/// An established flow, from its connection-table entry while the entry is alive and its
/// real up and the same; refreshes the entry.
#[inline(always)]
fn established<const V6: bool>(packet: &Packet<V6>, now: u32) -> Option<Chosen> {
    let flow = packet.flow();
    if let Some(entry) = FLOWS.get_ptr_mut(flow) {
        // SAFETY: a map value pointer from a successful lookup.
        let (id, generation, seen, flags, snat_port) = unsafe {
            (
                (*entry).real,
                (*entry).generation,
                (*entry).seen,
                (*entry).flags,
                (*entry).snat_port,
            )
        };
        if let Some(real) = live_real(flow, id, generation, seen, flags, now, snat_port) {
            if seen != now && real.flags & REAL_PERSISTENT != 0 {
                // Once per tick: the client is still active, keep its real remembered.
                refresh_client(flow, real, id, now);
            }
            // SAFETY: fields of the entry found above.
            let began_closing =
                unsafe { age::touch(&mut (*entry).seen, &mut (*entry).flags, now, packet.closes) };
            if flags & FLOW_OPENING != 0 && !packet.opens {
                // The client's second packet: the connection is no longer half-open.
                // SAFETY: as above.
                unsafe { (*entry).flags &= !FLOW_OPENING };
            }
            if began_closing && real.flags & REAL_NAT != 0 {
                nat::mark_reply_closing(flow, real, snat_port);
            }
            if real.flags & REAL_NAT == 0 {
                flow_cache::put_to_real(
                    packet,
                    id,
                    generation,
                    now,
                    NextHop::default(),
                    (Addr::NONE, 0),
                );
            }
            return Some(Chosen {
                id,
                real,
                new_flow: false,
                // SAFETY: a field of the entry found above.
                hop: unsafe { &mut (*entry).hop },
                via_table: true,
                now,
                // SNAT's table path goes to the SNAT program, which knows its source.
                src: (Addr::load(&flow.src), flow.sport),
            });
        }
    }

    None
}

/// The real of the service's live table for this flow. A persistent client is placed by its
/// masked address alone, so every balancer of a pair (or a group) places it alike without
/// sharing what it remembers: memory only keeps it on its real once the reals change.
#[inline(always)]
fn from_table(flow: &FlowKey, service: &Service) -> Result<u32, Reason> {
    // `persist_mask` is all ones without persistence: source hashing uses the whole address.
    let hash = if service.flags & (SERVICE_SOURCE_HASH | SERVICE_PERSISTENT) != 0 {
        folded_hash(flow.src.masked(&service.persist_mask).fold(), 0, 0, 0, 0)
    } else {
        flow_hash(&flow.src, &flow.dst, flow.sport, flow.dport, flow.proto)
    };
    match MAGLEV.get(service.table_base + hash % MAGLEV_TABLE_SIZE) {
        Some(&id) if id != NO_REAL => Ok(id),
        _ => Err(Reason::NoReal),
    }
}

/// The real a flow's packets would go to now, found without changing anything (for an ICMP
/// error about the flow): its live connection-table entry, else what scheduling would pick.
#[inline(always)]
pub fn owner(flow: &FlowKey, service: &Service, now: u32) -> Option<(u32, &'static Real)> {
    if let Some(found) = tracked_real(flow, now) {
        return Some(found);
    }
    if let Some(found) = remembered(flow, service, now) {
        return Some(found);
    }
    let id = from_table(flow, service).ok()?;
    Some((id, usable_real(id)?))
}

/// The real of a flow's live connection-table entry, found without changing anything.
#[inline(always)]
pub fn tracked_real(flow: &FlowKey, now: u32) -> Option<(u32, &'static Real)> {
    // SAFETY: the fields are copied out at once.
    let (id, generation, seen, flags, snat_port) = unsafe {
        let entry = FLOWS.get(flow)?;
        (
            entry.real,
            entry.generation,
            entry.seen,
            entry.flags,
            entry.snat_port,
        )
    };
    Some((
        id,
        live_real(flow, id, generation, seen, flags, now, snat_port)?,
    ))
}

/// The real of a connection-table entry (`id`, `generation`, `seen`, `flags`, `snat_port`) of
/// `flow`, if the entry is alive (a NAT flow lives while its replies are) and its real up and
/// the same.
#[inline(always)]
fn live_real(
    flow: &FlowKey,
    id: u32,
    generation: u32,
    seen: u32,
    flags: u32,
    now: u32,
    snat_port: u16,
) -> Option<&'static Real> {
    let real = usable_real(id)?;
    if real.generation == generation
        && (age::alive(seen, flags, real, now)
            || (real.flags & REAL_NAT != 0 && nat::reply_alive(flow, real, now, snat_port)))
    {
        Some(real)
    } else {
        None
    }
}

/// A persistent client's real, if remembered, fresh and still taking new flows; read only.
#[inline(always)]
fn remembered(flow: &FlowKey, service: &Service, now: u32) -> Option<(u32, &'static Real)> {
    if service.flags & SERVICE_PERSISTENT == 0 {
        return None;
    }
    // SAFETY: the value is copied out at once.
    let remembered = unsafe { *PERSIST.get(client_key(flow, service.id, &service.persist_mask))? };
    still_remembered(&remembered, service, now)
}

/// A persistent client's real, if remembered, fresh and still taking new flows; the client is
/// remembered afresh.
#[inline(always)]
fn remembered_client(flow: &FlowKey, service: &Service, now: u32) -> Option<(u32, &'static Real)> {
    if service.flags & SERVICE_PERSISTENT == 0 {
        return None;
    }
    let key = client_key(flow, service.id, &service.persist_mask);
    let entry = PERSIST.get_ptr_mut(key)?;
    // SAFETY: a map value pointer from a successful lookup.
    let found = still_remembered(unsafe { &*entry }, service, now)?;
    // SAFETY: as above.
    unsafe { (*entry).seen = now };
    Some(found)
}

/// The remembered real, if the memory is fresh and the real still takes new flows.
#[inline(always)]
fn still_remembered(
    remembered: &PersistValue,
    service: &Service,
    now: u32,
) -> Option<(u32, &'static Real)> {
    if !fresh(remembered.seen, now, service.persist_timeout) {
        return None;
    }
    let real = usable_real(remembered.real)?;
    if real.generation != remembered.generation || real.flags & REAL_NEW_FLOWS == 0 {
        return None;
    }
    Some((remembered.real, real))
}

#[inline(always)]
fn client_key(flow: &FlowKey, service: u32, mask: &Addr) -> PersistKey {
    PersistKey {
        service,
        client: flow.src.masked(mask),
        _pad: 0,
    }
}

/// Remembers (or refreshes) the client's real.
#[inline(always)]
fn refresh_client(flow: &FlowKey, real: &Real, id: u32, now: u32) {
    let value = PersistValue {
        real: id,
        generation: real.generation,
        seen: now,
        _pad: 0,
    };
    let _ = PERSIST.insert(client_key(flow, real.service, &real.persist_mask), value, 0);
}

/// A source no host can have, or the destination itself (a "land" packet): never a flow.
/// Only new flows are checked: no established flow can have such a source. (An IPv6 packet
/// with an IPv4-mapped address never gets this far: parse refuses it.)
#[inline(always)]
fn martian(flow: &FlowKey) -> bool {
    let src = &flow.src;
    if src.same(&flow.dst) {
        return true;
    }
    // The first octet of the address as it lies in memory (network order, little endian).
    if src.is_v4() {
        let first = src.v4_word() as u8;
        first == 0 || first == 127 || first >= 224
    } else {
        // Unspecified, loopback and the rest of ::/96; multicast (ff00::/8); link-local
        // (fe80::/10: no route leads back to it).
        let first = src.words[0];
        (first | src.words[1] | src.words[2]) == 0
            || first as u8 == 0xff
            || first & 0xc0ff == 0x80fe
    }
}

#[inline(always)]
fn usable_real(id: u32) -> Option<&'static Real> {
    let real = REALS.get(id)?;
    if real.flags & REAL_UP != 0 {
        Some(real)
    } else {
        None
    }
}
