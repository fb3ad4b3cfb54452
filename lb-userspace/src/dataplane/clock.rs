//! The data plane's clock as userspace reads it: jiffies (lb_common::clock). Userspace has no
//! call that returns jiffies, so the clock program stores them in the `CLOCK` map on each
//! BPF_PROG_TEST_RUN. The kernel's HZ (jiffies per second, a build option) is measured once
//! at load, to turn seconds into ticks.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use aya::{
    maps::{Array, MapData},
    programs::{TestRun, TestRunOptions, Xdp},
};
use lb_common::clock::TICK_SHIFT;

/// The smallest frame BPF_PROG_TEST_RUN takes for XDP (an Ethernet header); never looked at.
const PROBE_FRAME: [u8; 64] = [0; 64];
/// How long HZ is measured over: 20 jiffies at the lowest HZ Linux offers (100).
const HZ_WINDOW: Duration = Duration::from_millis(200);
/// The HZ values x86-64 and arm64 kernels can be built with.
const KNOWN_HZ: [u32; 4] = [100, 250, 300, 1000];

/// Current jiffies, through the clock program.
pub fn jiffies(program: &Xdp, clock: &Array<MapData, u64>) -> Result<u64> {
    program
        .test_run(TestRunOptions {
            data_in: Some(&PROBE_FRAME),
            ..TestRunOptions::new()
        })
        .context("running the clock program")?;
    Ok(clock.get(&0, 0)?)
}

/// The current clock tick.
pub fn now_tick(program: &Xdp, clock: &Array<MapData, u64>) -> Result<u32> {
    Ok((jiffies(program, clock)? >> TICK_SHIFT) as u32)
}

/// The kernel's HZ: jiffies counted over `HZ_WINDOW` of the monotonic clock, snapped to the
/// known value within 10% (a window edge can add or lose a jiffy), else as measured.
pub fn measure_hz(program: &Xdp, clock: &Array<MapData, u64>) -> Result<u32> {
    let (j0, t0) = (jiffies(program, clock)?, Instant::now());
    std::thread::sleep(HZ_WINDOW);
    let (j1, t1) = (jiffies(program, clock)?, Instant::now());
    let measured = j1.saturating_sub(j0) as f64 / (t1 - t0).as_secs_f64();
    Ok(snap_hz(measured))
}

fn snap_hz(measured: f64) -> u32 {
    KNOWN_HZ
        .into_iter()
        .find(|&hz| (measured - hz as f64).abs() <= hz as f64 * 0.1)
        .unwrap_or_else(|| (measured.round() as u32).max(1))
}

#[cfg(test)]
mod tests {
    use super::snap_hz;

    #[test]
    fn hz_snaps_to_known_values() {
        // 200 ms windows: one jiffy more or less at each HZ.
        assert_eq!(snap_hz(105.0), 100);
        assert_eq!(snap_hz(245.0), 250);
        assert_eq!(snap_hz(305.0), 300);
        assert_eq!(snap_hz(995.0), 1000);
        // An unusual build is taken as measured.
        assert_eq!(snap_hz(512.4), 512);
    }
}
