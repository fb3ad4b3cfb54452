//! Typed handles on the data plane's maps, from a freshly loaded object or from the pins.

use std::{net::IpAddr, path::Path};

use anyhow::{Context, Result, bail};
use aya::{
    Ebpf,
    maps::{Array, HashMap, Map, MapData, PerCpuArray},
};
use lb_common::{
    addr::Addr,
    counters::TrafficCounters,
    flood::FloodState,
    flow::{FlowKey, FlowValue, NatOrigin, NatReverse, PersistKey, PersistValue, ReplySource},
    interface::{INTERFACE_GUARDS_REALS, INTERFACE_SLOTS, InterfaceMac},
    maps::*,
    service::{Real, Service, VipKey},
};

pub struct Maps {
    pub services: HashMap<MapData, VipKey, Service>,
    /// VIP address -> flags (`VIP_ADDR_ADDED`: the controller put it on the interface).
    pub vip_addrs: HashMap<MapData, Addr, u32>,
    /// Bitmap of hashed VIP:port:protocol, one u64 per entry.
    pub vip_filter: Array<MapData, u64>,
    /// Bitmap of hashed address:port:protocol NAT reals reply from.
    pub real_filter: Array<MapData, u64>,
    /// NAT reply 5-tuple -> VIP:port to restore (an LRU hash in the kernel).
    pub nat_reverse: HashMap<MapData, FlowKey, NatReverse>,
    /// SNAT reply 5-tuple -> the flow (client, VIP:port); a plain hash, swept by the controller.
    pub snat_reverse: HashMap<MapData, FlowKey, NatReverse>,
    /// SNAT addresses in use (value unused).
    pub snat_addrs: HashMap<MapData, Addr, u32>,
    /// NAT reals' reply sources -> the one VIP:port each serves, for adopting flows.
    pub nat_origins: HashMap<MapData, ReplySource, NatOrigin>,
    /// Per CPU, entry 0: NAT flows adopted from a real's reply.
    pub nat_adopted: PerCpuArray<MapData, u64>,
    /// Entry 0: the clock tick until which NAT flows may be adopted (`NAT_ADOPT_ALWAYS`).
    pub nat_adopt_until: Array<MapData, u32>,
    pub reals: Array<MapData, Real>,
    pub maglev: Array<MapData, u32>,
    /// An LRU hash in the kernel; aya reads it as a hash map.
    pub flows: HashMap<MapData, FlowKey, FlowValue>,
    /// Persistent clients (an LRU hash in the kernel).
    pub persist: HashMap<MapData, PersistKey, PersistValue>,
    pub service_counters: PerCpuArray<MapData, TrafficCounters>,
    pub real_counters: PerCpuArray<MapData, TrafficCounters>,
    pub reason_counters: PerCpuArray<MapData, u64>,
    /// Per CPU, entry 0: the SYN-flood detector (`lb_common::flood`).
    pub flood: PerCpuArray<MapData, FloodState>,
    /// Entry 0: `LAYOUT_VERSION` of the build that created the maps.
    pub meta: Array<MapData, u32>,
    /// Entry 0: jiffies, stored by the clock program (`dataplane::clock`).
    pub clock: Array<MapData, u64>,
    /// Entry 0: the flow cache's epoch (`MAP_CACHE_EPOCH`). Not pinned, so only the process
    /// that loaded the program has it; maps opened from the pins (read-only uses) do not.
    pub cache_epoch: Option<Array<MapData, u32>>,
    /// Attached interfaces' own MACs (`MAP_INTERFACE_MACS`), by ifindex modulo the slots.
    pub interface_macs: Array<MapData, InterfaceMac>,
}

/// `VIP_ADDRS` value bit: the controller added this VIP to the interface, `down` removes it.
pub const VIP_ADDR_ADDED: u32 = 1;
/// `VIP_ADDRS` value bit: the policy leaves this VIP to keepalived (`vip_announcement: none`).
pub const VIP_ADDR_KEEPALIVED: u32 = 2;
/// `VIP_ADDRS` value bit: the policy announces this VIP over BGP (`vip_announcement: bgp`):
/// `xdplb down` withdraws it and waits for the routers before it detaches.
pub const VIP_ADDR_BGP: u32 = 4;

impl Maps {
    /// Takes the maps out of a loaded object.
    pub fn take(ebpf: &mut Ebpf) -> Result<Maps> {
        let cache_epoch = ebpf
            .take_map(MAP_CACHE_EPOCH)
            .context("map CACHE_EPOCH missing from the program")?
            .try_into()?;
        let mut maps = Maps::from_source(|name| {
            ebpf.take_map(name)
                .with_context(|| format!("map {name} missing from the program"))
        })?;
        maps.cache_epoch = Some(cache_epoch);
        Ok(maps)
    }

    /// Records `mac` as the own MAC of the interface `ifindex`: the data plane forwards only
    /// frames addressed to it. Refuses an interface whose slot another one holds.
    pub fn set_interface_mac(&mut self, ifindex: u32, mac: [u8; 6]) -> Result<()> {
        let slot = ifindex % INTERFACE_SLOTS;
        let held = self.interface_macs.get(&slot, 0)?;
        if held.ifindex != 0 && held.ifindex != ifindex {
            bail!(
                "interfaces with index {} and {ifindex} cannot both be attached (the data plane keeps \
                 {INTERFACE_SLOTS} interface slots, by index modulo {INTERFACE_SLOTS})",
                held.ifindex
            );
        }
        // The flags are the controller's (`set_interface_guard`): kept.
        let flags = if held.ifindex == ifindex {
            held.flags
        } else {
            0
        };
        let entry = InterfaceMac {
            ifindex,
            mac,
            flags,
        };
        if held != entry {
            self.interface_macs
                .set(slot, entry, 0)
                .context("recording the interface's MAC address")?;
        }
        Ok(())
    }

    /// Sets whether routed frames arriving on `ifindex` may reach the NAT reals' service ports
    /// other than through a VIP (`INTERFACE_GUARDS_REALS`). The interface must be recorded.
    pub fn set_interface_guard(&mut self, ifindex: u32, guarded: bool) -> Result<()> {
        let slot = ifindex % INTERFACE_SLOTS;
        let mut entry = self.interface_macs.get(&slot, 0)?;
        if entry.ifindex != ifindex {
            bail!("interface {ifindex} is not recorded");
        }
        let flags = if guarded {
            entry.flags | INTERFACE_GUARDS_REALS
        } else {
            entry.flags & !INTERFACE_GUARDS_REALS
        };
        if flags != entry.flags {
            entry.flags = flags;
            self.interface_macs
                .set(slot, entry, 0)
                .context("recording the interface's guard")?;
        }
        Ok(())
    }

    /// Forgets every interface but `attached` (one removed by a reload, or re-created under
    /// another index): nothing is forwarded for it any more, and its slot is free.
    pub fn keep_interfaces(&mut self, attached: &[u32]) -> Result<()> {
        for slot in 0..INTERFACE_SLOTS {
            let held = self.interface_macs.get(&slot, 0)?;
            if held.ifindex != 0 && !attached.contains(&held.ifindex) {
                self.interface_macs
                    .set(slot, InterfaceMac::default(), 0)
                    .context("forgetting an interface")?;
            }
        }
        Ok(())
    }

    /// Voids the data plane's flow cache: called after every change to the maps, so the
    /// change applies to the next packet of every flow.
    pub fn void_flow_cache(&mut self) -> Result<()> {
        if let Some(epoch) = &mut self.cache_epoch {
            let next = epoch.get(&0, 0)?.wrapping_add(1);
            epoch
                .set(0, next, 0)
                .context("bumping the flow cache epoch")?;
        }
        Ok(())
    }

    /// Reads only the pinned `VIP_ADDRS` map (each VIP and its flags): `xdplb down` reads it
    /// also from a data plane of another layout version. Its values have never changed; its
    /// keys were IPv4 addresses (4 bytes, network byte order) before layout 10, and are
    /// `Addr`s since.
    pub fn pinned_vip_addrs(pin_dir: &Path) -> Result<Vec<(IpAddr, u32)>> {
        let path = pin_dir.join(MAP_VIP_ADDRS);
        let data =
            MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
        let key_size = data
            .info()
            .with_context(|| format!("reading {}", path.display()))?
            .key_size();
        let map = Map::from_map_data(data)?;
        if key_size as usize == size_of::<u32>() {
            let map: HashMap<MapData, u32, u32> = map.try_into()?;
            map.iter()
                .map(|entry| {
                    let (addr, flags) = entry?;
                    Ok((IpAddr::from(addr.to_ne_bytes()), flags))
                })
                .collect()
        } else {
            let map: HashMap<MapData, Addr, u32> = map.try_into()?;
            map.iter()
                .map(|entry| {
                    let (addr, flags) = entry?;
                    Ok((IpAddr::from(addr), flags))
                })
                .collect()
        }
    }

    /// Opens the maps a running (or crashed) balancer pinned under `pin_dir`.
    pub fn open_pinned(pin_dir: &Path) -> Result<Maps> {
        Maps::from_source(|name| {
            let path = pin_dir.join(name);
            let data = MapData::from_pin(&path).with_context(|| {
                format!(
                    "no xdplb data plane pinned at {} (is `xdplb run` up?)",
                    path.display()
                )
            })?;
            Ok(Map::from_map_data(data)?)
        })
    }

    fn from_source(mut map: impl FnMut(&str) -> Result<Map>) -> Result<Maps> {
        Ok(Maps {
            services: map(MAP_SERVICES)?.try_into()?,
            vip_addrs: map(MAP_VIP_ADDRS)?.try_into()?,
            vip_filter: map(MAP_VIP_FILTER)?.try_into()?,
            real_filter: map(MAP_REAL_FILTER)?.try_into()?,
            nat_reverse: map(MAP_NAT_REVERSE)?.try_into()?,
            snat_reverse: map(MAP_SNAT_REVERSE)?.try_into()?,
            snat_addrs: map(MAP_SNAT_ADDRS)?.try_into()?,
            nat_origins: map(MAP_NAT_ORIGINS)?.try_into()?,
            nat_adopted: map(MAP_NAT_ADOPTED)?.try_into()?,
            nat_adopt_until: map(MAP_NAT_ADOPT_UNTIL)?.try_into()?,
            reals: map(MAP_REALS)?.try_into()?,
            maglev: map(MAP_MAGLEV)?.try_into()?,
            flows: map(MAP_FLOWS)?.try_into()?,
            persist: map(MAP_PERSIST)?.try_into()?,
            service_counters: map(MAP_SERVICE_COUNTERS)?.try_into()?,
            real_counters: map(MAP_REAL_COUNTERS)?.try_into()?,
            reason_counters: map(MAP_REASON_COUNTERS)?.try_into()?,
            flood: map(MAP_FLOOD)?.try_into()?,
            meta: map(MAP_META)?.try_into()?,
            clock: map(MAP_CLOCK)?.try_into()?,
            cache_epoch: None,
            interface_macs: map(MAP_INTERFACE_MACS)?.try_into()?,
        })
    }
}
