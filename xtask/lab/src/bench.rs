//! `cargo xtask bench`: per-packet cost of the xdplb XDP program under BPF_PROG_TEST_RUN,
//! each case as a ratio to a bare XDP_TX program timed in the same run (the floor).
//!
//! The kernel reports the mean time per repeat. Cases whose packet is the same on every repeat
//! (DR rewrites only MACs, idempotently) use a large repeat count. A new flow cannot repeat (the
//! first run inserts it), so new-flow packets run once each with distinct source ports, and
//! their floor is measured the same way (XDP_TX, repeat 1), so the per-run overhead cancels.

use std::{net::Ipv4Addr, path::PathBuf};

use anyhow::{Context, Result};
use aya::{
    Ebpf,
    programs::{TestRun, TestRunOptions, Xdp},
};
use etherparse::PacketBuilder;
use lb_common::maps::PROGRAM_NAME;
use xdplb::{
    dataplane::{
        loader, object,
        sync::{Observed, Sync},
    },
    policy,
};

const REPEAT: u32 = 2_000_000;
const RUNS: usize = 11;
const SINGLE_SHOTS: u16 = 20_000;

const POLICY: &str = "
interfaces:
  - name: lo
services:
  - name: dicom
    vip: 198.18.0.100
    ports: [104, 11112]
    protocol: tcp
    forwarding: dr
    reals:
      - address: 198.18.0.11
      - address: 198.18.0.12
      - address: 198.18.0.13
";

fn tcp_frame(dst: Ipv4Addr, sport: u16, dport: u16, syn: bool) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 0xfe])
        .ipv4([198, 18, 0, 1], dst.octets(), 64)
        .tcp(sport, dport, 1, 64240);
    let builder = if syn { builder.syn() } else { builder.ack(1) };
    let payload = [0u8; 64];
    let mut frame = Vec::new();
    builder.write(&mut frame, &payload).unwrap();
    frame
}

fn mean_ns(program: &Xdp, frame: &[u8], repeat: u32) -> Result<f64> {
    let mut out = vec![0u8; frame.len() + 64];
    let result = program.test_run(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        repeat,
        ..TestRunOptions::new()
    })?;
    Ok(result.duration.as_nanos() as f64)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn repeated(program: &Xdp, frame: &[u8]) -> Result<f64> {
    Ok(median(
        (0..RUNS)
            .map(|_| mean_ns(program, frame, REPEAT))
            .collect::<Result<_>>()?,
    ))
}

/// Mean over distinct single-shot frames (`make(i)`), median over runs.
fn single_shots(program: &Xdp, make: impl Fn(u16, usize) -> Vec<u8>) -> Result<f64> {
    let mut medians = Vec::new();
    for run in 0..RUNS.min(3) {
        let mut total = 0.0;
        for i in 0..SINGLE_SHOTS {
            total += mean_ns(program, &make(i, run), 1)?;
        }
        medians.push(total / SINGLE_SHOTS as f64);
    }
    Ok(median(medians))
}

pub fn run() -> Result<()> {
    // One CPU for every case: BPF_PROG_TEST_RUN runs on the calling CPU, and moving between
    // CPUs (or sharing one with the other case) adds noise to a ratio measured in one run.
    let mut cpus = nix::sched::CpuSet::new();
    cpus.set(last_cpu())?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpus)?;
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/bench-{}", std::process::id()));
    let result = measure(&pin_dir);
    let _ = loader::remove_pins(&pin_dir);
    result
}

fn last_cpu() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get() - 1)
        .unwrap_or(0)
}

fn measure(pin_dir: &std::path::Path) -> Result<()> {
    let mut floor_obj = Ebpf::load(object::LAB)?;
    let floor: &mut Xdp = floor_obj
        .program_mut("bench_tx")
        .context("bench_tx")?
        .try_into()?;
    floor.load()?;

    let mut loaded = loader::load(pin_dir)?;
    let policy = policy::parse("bench", POLICY)?;
    let observed = Observed {
        macs: (11..=13)
            .map(|i| (Ipv4Addr::new(198, 18, 0, i), [2, 0, 0, 0, 0, i]))
            .collect(),
        ..Default::default()
    };
    let mut sync = Sync::adopt(&loaded.maps)?;
    sync.apply(&mut loaded.maps, &policy, &observed)?;
    let xdplb: &Xdp = loaded
        .ebpf
        .program(PROGRAM_NAME)
        .context("xdplb")?
        .try_into()?;

    let vip = Ipv4Addr::new(198, 18, 0, 100);
    let established = tcp_frame(vip, 40000, 104, false);
    mean_ns(xdplb, &established, 1)?; // schedules the flow; every repeat after is established
    let no_vip = tcp_frame(Ipv4Addr::new(198, 18, 0, 50), 40000, 104, false);

    println!(
        "xdplb per-packet cost, BPF_PROG_TEST_RUN, {}-byte TCP frames",
        established.len()
    );
    println!(
        "repeated cases: mean of {REPEAT} repeats, median of {RUNS} runs; new flows: {SINGLE_SHOTS} single runs\n"
    );
    let floor_ns = repeated(floor, &established)?;
    let floor_single = single_shots(floor, |i, _| tcp_frame(vip, i, 104, true))?;
    let rows = [
        ("floor: bare XDP_TX", floor_ns, floor_ns, ""),
        (
            "DR established flow",
            repeated(xdplb, &established)?,
            floor_ns,
            "target <= 3.5x",
        ),
        (
            "DR new flow (SYN)",
            single_shots(xdplb, |i, run| {
                tcp_frame(vip, i, if run % 2 == 0 { 104 } else { 11112 }, true)
            })?,
            floor_single,
            "vs floor at repeat 1",
        ),
        (
            "packet to no VIP",
            repeated(xdplb, &no_vip)?,
            floor_ns,
            "target <= 2x",
        ),
    ];
    println!("{:<22} {:>10} {:>9}", "case", "ns/packet", "x floor");
    for (name, ns, base, note) in rows {
        println!("{name:<22} {ns:>10.1} {:>8.2}x  {note}", ns / base);
    }
    println!(
        "\n(floor at repeat 1: {floor_single:.1} ns per run, includes the per-run timer overhead)"
    );
    Ok(())
}
