//! Flood defence. A flood of SYNs (or of any packets) from spoofed sources would fill the
//! connection table (an LRU) with flows that never complete, evicting live ones; an evicted
//! flow is rescheduled by Maglev, harmless only while the reals are unchanged. So each CPU
//! counts the new flows it schedules per clock tick (SYNs, and other packets that make an
//! entry); while it counted more than `FLOOD_NEW_FLOWS_PER_TICK` in this tick or the last, no
//! DR flow gets an entry: its packets go to Maglev's choice, which is the same for every packet
//! of the flow, and a flow that began during the flood is entered by its first packet after
//! it. Established flows keep their entries, so they stay on their reals whatever changes.
//! A SYN skips the table lookup too (a spoofed SYN has no entry to find). NAT flows are always
//! entered: the real's replies need the reverse entry.

/// New flows one CPU may schedule in one clock tick (about a second) before it treats the
/// traffic as a flood. At this rate over two CPUs the 1,048,576-flow table would turn over in
/// about eight minutes, inside TCP's 15-minute idle timeout.
pub const FLOOD_NEW_FLOWS_PER_TICK: u32 = 1024;

/// Value of the per-CPU `FLOOD` map (one entry).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FloodState {
    /// The clock tick `this_tick` counts.
    pub tick: u32,
    /// New flows scheduled in tick `tick`, and in the tick before it.
    pub this_tick: u32,
    pub last_tick: u32,
    /// The last tick this CPU was under a flood (0: never).
    pub flooded_at: u32,
    /// Packets of new DR flows forwarded without a connection-table entry because of a flood.
    pub untracked: u64,
}

impl FloodState {
    /// Whether this CPU counts as flooded (at the tick `tick`).
    #[inline(always)]
    pub const fn flooded(&self) -> bool {
        self.this_tick > FLOOD_NEW_FLOWS_PER_TICK || self.last_tick > FLOOD_NEW_FLOWS_PER_TICK
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain #[repr(C)] data without implicit padding.
    unsafe impl aya::Pod for super::FloodState {}
}
