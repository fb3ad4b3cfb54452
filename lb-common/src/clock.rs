//! The data plane's clock for flow ages: `bpf_jiffies64() >> TICK_SHIFT`, so one tick is 256
//! jiffies: 1.024 s at HZ=250, 0.256 s at HZ=1000, 2.56 s at HZ=100. The JIT inlines
//! bpf_jiffies64 into a load; `bpf_ktime_get_coarse_ns`, the clock before, is a helper call
//! that cost 14 ns per packet here (a third of what the program spends above a bare XDP_TX).
//! Ages and timeouts are only ever compared in ticks; the controller converts seconds with
//! the kernel's HZ, which it measures (`ticks_from_secs`).

pub const TICK_SHIFT: u32 = 8;
pub const TICK_JIFFIES: u64 = 1 << TICK_SHIFT;

/// Ticks covering at least `secs` seconds (rounded up) at `hz` jiffies per second,
/// saturating at `u32::MAX`.
pub const fn ticks_from_secs(secs: u64, hz: u32) -> u32 {
    let jiffies = secs.saturating_mul(hz as u64);
    let ticks = jiffies.div_ceil(TICK_JIFFIES);
    if ticks > u32::MAX as u64 {
        u32::MAX
    } else {
        ticks as u32
    }
}

/// Whether something last seen at tick `seen` is still alive at tick `now` after `timeout`
/// ticks of idleness (wrapping arithmetic: the counter wraps after 34 years at HZ=1000).
#[inline(always)]
pub const fn fresh(seen: u32, now: u32, timeout: u32) -> bool {
    now.wrapping_sub(seen) <= timeout
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_round_up() {
        assert_eq!(ticks_from_secs(0, 250), 0);
        assert_eq!(ticks_from_secs(1, 250), 1);
        assert_eq!(ticks_from_secs(2, 250), 2);
        // 900 s at HZ=250 = 878.9 ticks; at HZ=1000, 3515.6.
        assert_eq!(ticks_from_secs(900, 250), 879);
        assert_eq!(ticks_from_secs(900, 1000), 3516);
        assert_eq!(ticks_from_secs(1, 100), 1);
        assert_eq!(ticks_from_secs(u64::MAX, 250), u32::MAX);
    }

    #[test]
    fn freshness_wraps() {
        assert!(fresh(10, 12, 2));
        assert!(!fresh(10, 13, 2));
        assert!(fresh(u32::MAX, 1, 2));
    }
}
