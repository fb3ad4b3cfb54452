//! The BPF maps. Layouts and names come from lb-common; all are pinned by name so a restarted
//! controller finds the same connection table and counters.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, ProgramArray},
};
use lb_common::{
    addr::Addr,
    counters::{Reason, TrafficCounters},
    flood::FloodState,
    flow::{
        CachedFlow, FlowKey, FlowValue, NatOrigin, NatReverse, PersistKey, PersistValue,
        ReplySource,
    },
    interface::{INTERFACE_SLOTS, InterfaceMac},
    maps::{
        FLOW_CACHE_SLOTS, MAGLEV_TABLE_SIZE, MAGLEV_TABLES, MAX_FLOWS, MAX_NAT_ORIGINS,
        MAX_PERSISTENT_CLIENTS, MAX_REALS, MAX_SERVICES, MAX_SNAT_ADDRS, MAX_SNAT_FLOWS,
        MAX_VIP_PORTS, PROGRAM_SLOTS, VIP_FILTER_WORDS,
    },
    service::{Real, Service, VipKey},
};

/// Entry 0: the layout version of the build that created these maps (written by the
/// controller; never read here).
#[map]
pub static META: Array<u32> = Array::pinned(1, 0);

/// Entry 0: jiffies, stored by the clock program for the controller.
#[map]
pub static CLOCK: Array<u64> = Array::pinned(1, 0);

/// VIP:port:protocol -> service.
#[map]
pub static SERVICES: HashMap<VipKey, Service> = HashMap::pinned(MAX_VIP_PORTS, 0);

/// VIP addresses (any port), to recognise fragments addressed to a VIP. Value unused.
#[map]
pub static VIP_ADDRS: HashMap<Addr, u32> = HashMap::pinned(MAX_VIP_PORTS, 0);

/// Bitmap of hashed VIP:port:protocol (see lb_common::hash::vip_filter_bit).
#[map]
pub static VIP_FILTER: Array<u64> = Array::pinned(VIP_FILTER_WORDS, 0);

/// Bitmap of hashed real address:port:protocol of NAT reals, to recognise their replies.
#[map]
pub static REAL_FILTER: Array<u64> = Array::pinned(VIP_FILTER_WORDS, 0);

/// NAT reply 5-tuple (real -> client) -> what to rewrite the source back to.
#[map]
pub static NAT_REVERSE: LruHashMap<FlowKey, NatReverse> = LruHashMap::pinned(MAX_FLOWS, 0);

/// SNAT reply 5-tuple (real -> SNAT address:port) -> the flow (`lb_common::maps::
/// MAP_SNAT_REVERSE`). A plain hash map: it never evicts a live flow's entry, so a port in use
/// is never given to another flow; allocated as used, since most balancers have no SNAT.
#[map]
pub static SNAT_REVERSE: HashMap<FlowKey, NatReverse> =
    HashMap::pinned(MAX_SNAT_FLOWS, BPF_F_NO_PREALLOC);

/// The SNAT addresses in use. Value unused.
#[map]
pub static SNAT_ADDRS: HashMap<Addr, u32> = HashMap::pinned(MAX_SNAT_ADDRS, 0);

/// A NAT real's reply source -> the one VIP:port it serves, to adopt flows scheduled by a
/// pair peer (nat_reply.rs).
#[map]
pub static NAT_ORIGINS: HashMap<ReplySource, NatOrigin> = HashMap::pinned(MAX_NAT_ORIGINS, 0);

/// Entry 0: the clock tick until which NAT flows may be adopted (written by the controller).
#[map]
pub static NAT_ADOPT_UNTIL: Array<u32> = Array::pinned(1, 0);

/// Per CPU, entry 0: NAT flows adopted from a real's reply.
#[map]
pub static NAT_ADOPTED: PerCpuArray<u64> = PerCpuArray::pinned(1, 0);

/// Real id -> real server.
#[map]
pub static REALS: Array<Real> = Array::pinned(MAX_REALS, 0);

/// All Maglev tables back to back; entry = real id or NO_REAL.
#[map]
pub static MAGLEV: Array<u32> = Array::pinned(MAGLEV_TABLES * MAGLEV_TABLE_SIZE, 0);

/// Connection table: 5-tuple -> real, so established flows stay put.
#[map]
pub static FLOWS: LruHashMap<FlowKey, FlowValue> = LruHashMap::pinned(MAX_FLOWS, 0);

/// Per CPU, one entry: an IPv6 payload offset the parser stores and reads back, so the
/// verifier forgets which way through the extension headers it came (parse.rs, `forget`).
#[map]
pub static OFFSET_SCRATCH: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Per CPU, one entry: a NAT reverse entry being made (nat.rs, `enter_reply`), kept off the
/// stack.
#[map]
pub static REVERSE_SCRATCH: PerCpuArray<NatReverse> = PerCpuArray::with_max_entries(1, 0);

/// Per CPU, one entry: the request of the FIB lookup being made (nat.rs), kept off the stack.
#[map]
pub static FIB_REQUEST: PerCpuArray<aya_ebpf::bindings::bpf_fib_lookup> =
    PerCpuArray::with_max_entries(1, 0);

/// Per-CPU cache of flows seen in their table this clock tick (flow_cache.rs). Not pinned: a
/// new program starts with it empty.
#[map]
pub static FLOW_CACHE: PerCpuArray<CachedFlow> = PerCpuArray::with_max_entries(FLOW_CACHE_SLOTS, 0);

/// The controller's change counter (`lb_common::maps::MAP_CACHE_EPOCH`); not pinned, like the
/// cache it invalidates.
#[map]
pub static CACHE_EPOCH: Array<u32> = Array::with_max_entries(1, 0);

/// Attached interfaces' own MACs, by `ifindex % INTERFACE_SLOTS`, filled by the loader before
/// the program is attached. Pinned, so a restarting controller's new programs see them from
/// their first packet.
#[map]
pub static INTERFACE_MACS: Array<InterfaceMac> = Array::pinned(INTERFACE_SLOTS, 0);

/// The data plane's other programs, tail-called (`lb_common::maps::PROGRAM_ICMP`, ...), filled by
/// the loader before the main program is attached. Pinned: the kernel empties a program array
/// once no file descriptor or pin refers to it, which would end ICMP handling when the
/// controller stops.
#[map]
pub static PROGRAMS: ProgramArray = ProgramArray::pinned(PROGRAM_SLOTS, 0);

/// Persistence: (service, masked client address) -> the client's real.
#[map]
pub static PERSIST: LruHashMap<PersistKey, PersistValue> =
    LruHashMap::pinned(MAX_PERSISTENT_CLIENTS, 0);

/// Per CPU: new flows per tick, whether this CPU is flooded, SYNs left untracked (flood.rs).
#[map]
pub static FLOOD: PerCpuArray<FloodState> = PerCpuArray::pinned(1, 0);

#[map]
pub static SERVICE_COUNTERS: PerCpuArray<TrafficCounters> = PerCpuArray::pinned(MAX_SERVICES, 0);

#[map]
pub static REAL_COUNTERS: PerCpuArray<TrafficCounters> = PerCpuArray::pinned(MAX_REALS, 0);

#[map]
pub static REASON_COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(Reason::SLOTS, 0);
