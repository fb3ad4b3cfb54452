//! The data plane's clock for flow ages: `bpf_ktime_get_coarse_ns() >> TICK_SHIFT`, so one
//! tick is 2^30 ns (about 1.07 s). A shift instead of a division keeps it to one instruction
//! per packet; ages and timeouts are only ever compared in ticks.

pub const TICK_SHIFT: u32 = 30;
pub const TICK_NANOS: u64 = 1 << TICK_SHIFT;

/// Ticks covering at least `secs` seconds (rounded up), saturating at `u32::MAX`.
pub const fn ticks_from_secs(secs: u64) -> u32 {
    let nanos = secs.saturating_mul(1_000_000_000);
    let ticks = nanos.div_ceil(TICK_NANOS);
    if ticks > u32::MAX as u64 {
        u32::MAX
    } else {
        ticks as u32
    }
}

/// Whether something last seen at tick `seen` is still alive at tick `now` after `timeout`
/// ticks of idleness (wrapping arithmetic: the counter wraps after about 146 years).
#[inline(always)]
pub const fn fresh(seen: u32, now: u32, timeout: u32) -> bool {
    now.wrapping_sub(seen) <= timeout
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_round_up() {
        assert_eq!(ticks_from_secs(0), 0);
        assert_eq!(ticks_from_secs(1), 1);
        assert_eq!(ticks_from_secs(2), 2);
        // 900 s = 838.19 ticks.
        assert_eq!(ticks_from_secs(900), 839);
        assert_eq!(ticks_from_secs(u64::MAX), u32::MAX);
    }

    #[test]
    fn freshness_wraps() {
        assert!(fresh(10, 12, 2));
        assert!(!fresh(10, 13, 2));
        assert!(fresh(u32::MAX, 1, 2));
    }
}
