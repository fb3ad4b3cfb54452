//! The data plane's clock as userspace reads it, to tell live flows from expired ones.

/// The current clock tick: bpf_ktime_get_coarse_ns() is CLOCK_MONOTONIC_COARSE, shifted as
/// the data plane shifts it (lb_common::clock).
pub fn now_tick() -> u32 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    let nanos = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
    (nanos >> lb_common::clock::TICK_SHIFT) as u32
}
