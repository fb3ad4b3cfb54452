//! `cargo xtask bench`: per-packet cost of the xdplb XDP program under BPF_PROG_TEST_RUN,
//! each case as a ratio to a bare XDP_TX program timed in the same run (the floor).
//!
//! The kernel reports the mean time per repeat, and reuses the packet buffer across repeats.
//! - DR rewrites only MACs, idempotently, and a packet to no VIP is not touched: runs of
//!   10,000 repeats.
//! - NAT rewrites addresses in place, so the bench policy makes translation circular: service
//!   A maps VIP:443 to 198.19.0.11:8443, and service B has 198.19.0.11:8443 as its VIP and maps
//!   it back. Every repeat is then a real established-flow NAT translation with a FIB lookup
//!   (replies alternate between the two reverse entries likewise). The frame starts at TTL 255
//!   and each call repeats 240 times, so TTL never expires; the floor is timed the same way.
//! - SNAT is made circular likewise, with two SNAT services: A maps 198.18.0.102:443 to
//!   198.19.0.13:8443 from 198.19.0.12, and B has A's real as its VIP and maps it back to
//!   A's VIP from the client's address. The ports the two flows claim are then set by hand so
//!   that B's output is A's input again (each flow's port is whatever the other needs).
//! - A new flow is established by its first run, so each SYN runs once per call with its own
//!   source port; single runs start with cold caches, so it is compared with single runs of the
//!   floor, and has no target.
//!
//! Both programs are attached (to idle veths of the bench namespace) while timed, as xdplb is
//! in production. Unattached, every call with more than one repeat adds the program to the
//! kernel's XDP dispatcher and removes it afterwards, and the first packets after that rebuild
//! run with cold TLBs and caches: about 1.4 µs per call for the floor and 7 µs for xdplb, which
//! added 30 ns per packet to xdplb's NAT figures (calls of 240) and not to the floor's.
//!
//! Every case checks the action it got, so it measures the path it names. Runs are pinned to
//! one CPU. Each run of a case follows a run of the floor timed the same way, and the ratio
//! printed is the median of those per-pair ratios: this VM's floor drifts between about 21
//! and 26 ns over minutes, which a single floor figure turned into ratio noise. Runs are kept
//! short (under a millisecond) and many: a long run catches more of the host's interruptions,
//! and with equal repeat counts the slower program's runs are the longer ones.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context, Result, ensure};
use aya::maps::{MapData, PerCpuArray, PerCpuValues};
use aya::{
    Ebpf,
    programs::{TestRun, TestRunOptions, Xdp, XdpMode},
};
use etherparse::PacketBuilder;
use lb_common::{addr::Addr, flood::FloodState, flow::FlowKey, maps::PROGRAM_NAME};
use xdplb::{
    dataplane::{
        loader, object,
        sync::{Observed, Sync},
    },
    policy,
};

use crate::lab::{FibRouter, in_netns, xdp_md};

const REPEAT: u32 = 10_000;
const RUNS: usize = 51;
const SINGLE_SHOTS: u32 = 2_000;
const SINGLE_RUNS: usize = 3;
/// Paired runs of the NAT-style cases (each run is `NAT_CALLS` calls).
const NAT_RUNS: usize = 5;
/// Repeats per call in the NAT cases: TTL 255 stays above 1.
const NAT_REPEAT: u32 = 240;
const NAT_CALLS: u32 = 200;

const XDP_REDIRECT: u32 = 4;
const XDP_TX: u32 = 3;
const XDP_PASS: u32 = 2;

const POLICY: &str = "
interfaces:
  - name: out0
  - name: in0
    role: inside
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
  - name: viewer
    vip: 198.18.0.101
    ports: [443]
    protocol: tcp
    forwarding: nat
    reals:
      - address: 198.19.0.11
        port: 8443
  - name: viewer-back
    vip: 198.19.0.99
    ports: [8443]
    protocol: tcp
    forwarding: nat
    reals:
      - address: 198.18.0.199
        port: 443
  - name: snat-viewer
    vip: 198.18.0.102
    ports: [443]
    protocol: tcp
    forwarding: snat
    snat_address: 198.19.0.12
    reals:
      - address: 198.19.0.13
        port: 8443
  - name: snat-back
    vip: 198.19.0.98
    ports: [8443]
    protocol: tcp
    forwarding: snat
    snat_address: 198.18.0.1
    reals:
      - address: 198.18.0.198
        port: 443
  - name: dicom6
    vip: 2001:2::100
    ports: [104]
    protocol: tcp
    forwarding: dr
    reals:
      - address: 2001:2::11
      - address: 2001:2::12
  - name: viewer6
    vip: 2001:2::101
    ports: [443]
    protocol: tcp
    forwarding: nat
    reals:
      - address: 2001:2:0:1::11
        port: 8443
  - name: viewer6-back
    vip: 2001:2:0:1::99
    ports: [8443]
    protocol: tcp
    forwarding: nat
    reals:
      - address: 2001:2::199
        port: 443
";

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
/// The destination MAC of every bench frame: the balancer's.
const LB_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xfe];
const NAT_REAL: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 11);
const NAT_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 101);
const DR_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const SNAT_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 102);
const SNAT_REAL: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 13);
const SNAT_ADDRESS: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 12);
/// The SNAT flow's client port.
const SNAT_CLIENT_PORT: u16 = 50100;
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1);
const DR_VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x100);
const NAT_VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x101);
const NAT_REAL6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 0x11);

/// A TCP frame of either family, with a TTL (hop limit) of 255.
fn tcp_frame(
    src: impl Into<IpAddr>,
    sport: u16,
    dst: impl Into<IpAddr>,
    dport: u16,
    syn: bool,
) -> Vec<u8> {
    let ethernet = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC);
    let builder = match (src.into(), dst.into()) {
        (IpAddr::V6(src), IpAddr::V6(dst)) => ethernet.ipv6(src.octets(), dst.octets(), 255),
        (IpAddr::V4(src), IpAddr::V4(dst)) => ethernet.ipv4(src.octets(), dst.octets(), 255),
        _ => panic!("a frame's addresses are of one family"),
    }
    .tcp(sport, dport, 1, 64240);
    let builder = if syn { builder.syn() } else { builder.ack(1) };
    let mut frame = Vec::new();
    builder.write(&mut frame, &[0u8; 64]).unwrap();
    frame
}

/// One BPF_PROG_TEST_RUN: (action, mean ns per repeat).
fn test_run(program: &Xdp, frame: &[u8], repeat: u32, ctx: Option<&[u8]>) -> Result<(u32, f64)> {
    let mut out = vec![0u8; frame.len() + 64];
    let result = program.test_run(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ctx_in: ctx,
        repeat,
        ..TestRunOptions::new()
    })?;
    Ok((result.return_value, result.duration.as_nanos() as f64))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// A case timed in runs, each right after a run of the floor timed the same way, so a slow
/// drift of the machine (this VM's floor moves between 21 and 26 ns) cancels in the ratio.
struct Paired {
    /// Median of the case's runs.
    ns: f64,
    /// Median over runs of (case run / the floor run just before it).
    ratio: f64,
}

fn paired(runs: usize, mut run: impl FnMut(bool) -> Result<f64>) -> Result<Paired> {
    let mut ns = Vec::new();
    let mut ratios = Vec::new();
    for _ in 0..runs {
        let floor = run(true)?;
        let case = run(false)?;
        ns.push(case);
        ratios.push(case / floor);
    }
    Ok(Paired {
        ns: median(ns),
        ratio: median(ratios),
    })
}

/// Mean per repeat of one run of `REPEAT` repeats, checking the action.
fn repeated_once(program: &Xdp, frame: &[u8], expect: u32) -> Result<f64> {
    let (action, ns) = test_run(program, frame, REPEAT, None)?;
    ensure!(action == expect, "got action {action}, expected {expect}");
    Ok(ns)
}

/// Median over runs of the mean per repeat, checking the action.
fn repeated(program: &Xdp, frame: &[u8], expect: u32) -> Result<f64> {
    let mut means = Vec::new();
    for _ in 0..RUNS {
        means.push(repeated_once(program, frame, expect)?);
    }
    Ok(median(means))
}

/// Mean of `NAT_CALLS` calls of `NAT_REPEAT` repeats, checking the action.
fn short_repeats_once(
    program: &Xdp,
    frame: &[u8],
    ctx: Option<&[u8]>,
    expect: &[u32],
) -> Result<f64> {
    let mut total = 0.0;
    for _ in 0..NAT_CALLS {
        let (action, ns) = test_run(program, frame, NAT_REPEAT, ctx)?;
        ensure!(
            expect.contains(&action),
            "got action {action}, expected one of {expect:?}"
        );
        total += ns;
    }
    Ok(total / NAT_CALLS as f64)
}

/// Median over runs of `short_repeats_once`.
fn short_repeats(program: &Xdp, frame: &[u8], ctx: Option<&[u8]>, expect: &[u32]) -> Result<f64> {
    let mut means = Vec::new();
    for _ in 0..SINGLE_RUNS {
        means.push(short_repeats_once(program, frame, ctx, expect)?);
    }
    Ok(median(means))
}

/// Median over runs of the mean of `SINGLE_SHOTS` single runs of `frame(i)`, checking the action.
fn single(
    program: &Xdp,
    frame: impl Fn(u32) -> Vec<u8>,
    ctx: Option<&[u8]>,
    expect: u32,
) -> Result<f64> {
    single_with(program, frame, ctx, expect, |_| Ok(()))
}

/// As `single`, calling `between(i)` (untimed) before the `i`th run.
fn single_with(
    program: &Xdp,
    frame: impl Fn(u32) -> Vec<u8>,
    ctx: Option<&[u8]>,
    expect: u32,
    mut between: impl FnMut(u32) -> Result<()>,
) -> Result<f64> {
    let mut means = Vec::new();
    for run_no in 0..SINGLE_RUNS as u32 {
        let mut total = 0.0;
        for i in 0..SINGLE_SHOTS {
            let n = run_no * SINGLE_SHOTS + i;
            between(n)?;
            let (action, ns) = test_run(program, &frame(n), 1, ctx)?;
            ensure!(action == expect, "got action {action}, expected {expect}");
            total += ns;
        }
        means.push(total / SINGLE_SHOTS as f64);
    }
    Ok(median(means))
}

/// Sets every CPU's flood detector (the pinned `FLOOD` map, opened on its own because writing
/// needs a handle the bench does not otherwise borrow mutably): zeroed, or flooded at `tick`.
fn set_flood(pin_dir: &std::path::Path, flooded_at: Option<u32>) -> Result<()> {
    let data = MapData::from_pin(pin_dir.join(lb_common::maps::MAP_FLOOD))?;
    let mut map: PerCpuArray<MapData, FloodState> =
        PerCpuArray::try_from(aya::maps::Map::PerCpuArray(data))?;
    let mut states = map.get(&0, 0)?.to_vec();
    for state in &mut states {
        *state = match flooded_at {
            None => FloodState::default(),
            Some(tick) => FloodState {
                tick,
                this_tick: lb_common::flood::FLOOD_NEW_FLOWS_PER_TICK + 1,
                last_tick: lb_common::flood::FLOOD_NEW_FLOWS_PER_TICK + 1,
                flooded_at: tick,
                ..*state
            },
        };
    }
    map.set(0, PerCpuValues::try_from(states)?, 0)?;
    Ok(())
}

/// SYNs the flood defence forwarded without an entry, over all CPUs.
fn untracked(flood: &PerCpuArray<MapData, FloodState>) -> Result<u64> {
    Ok(flood.get(&0, 0)?.iter().map(|s| s.untracked).sum())
}

fn last_cpu() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get() - 1)
        .unwrap_or(0)
}

pub fn run() -> Result<()> {
    let pin_dir = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/lab-xdplb-{}-bench",
        std::process::id()
    ));
    let result = measure(&pin_dir);
    let _ = loader::remove_pins(&pin_dir);
    result
}

struct Row {
    name: &'static str,
    measured: Paired,
    target: &'static str,
}

impl Row {
    fn new(name: &'static str, measured: Paired, target: &'static str) -> Row {
        Row {
            name,
            measured,
            target,
        }
    }
}

/// What every comparison needs: the floor program, xdplb loaded with the bench policy, and
/// a FIB router namespace for NAT's next hops.
struct Bench {
    floor_obj: Ebpf,
    loaded: loader::Loaded,
    router: FibRouter,
}

impl Bench {
    fn new(pin_dir: &std::path::Path) -> Result<Bench> {
        let mut floor_obj = Ebpf::load(object::LAB)?;
        let floor: &mut Xdp = floor_obj
            .program_mut("bench_tx")
            .context("bench_tx")?
            .try_into()?;
        floor.load()?;

        let mut loaded = loader::load(pin_dir)?;
        let mut policy = policy::parse("bench", POLICY)?;
        // The circle (see above): each NAT service's real is the other's VIP, which `validate`
        // rightly refuses in a policy file (the packets would be balanced again).
        policy.services[2].vip = Ipv4Addr::new(198, 19, 0, 11).into();
        policy.services[2].reals[0].address = Ipv4Addr::new(198, 18, 0, 101).into();
        policy.services[4].vip = SNAT_REAL.into();
        policy.services[4].reals[0].address = SNAT_VIP.into();
        policy.services[7].vip = NAT_REAL6.into();
        policy.services[7].reals[0].address = NAT_VIP6.into();
        let observed = Observed {
            // The kernel hands each repeat the previous one's output: with the reals at the
            // balancer's MAC, a forwarded frame is still addressed to the balancer, as the
            // data plane requires, and every repeat is the same established forward.
            macs: (11..=13)
                .map(|i| (Ipv4Addr::new(198, 18, 0, i).into(), LB_MAC))
                .chain(
                    (0x11..=0x12)
                        .map(|i| (Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, i).into(), LB_MAC)),
                )
                .collect(),
            ..Default::default()
        };
        let mut sync = Sync::adopt(&loaded.maps, loaded.hz)?;
        sync.apply(&mut loaded.maps, &policy, &observed)?;
        let router = FibRouter::new(&[
            // NAT is timed on a circular flow (each repeat translates the previous one's
            // output back), so every next hop has the MAC the program accepts frames for.
            (IpAddr::from(CLIENT), LB_MAC, "out0"),
            (NAT_REAL.into(), LB_MAC, "in0"),
            (NAT_VIP.into(), LB_MAC, "out0"),
            (SNAT_REAL.into(), LB_MAC, "in0"),
            (SNAT_ADDRESS.into(), LB_MAC, "in0"),
            (SNAT_VIP.into(), LB_MAC, "out0"),
            (CLIENT6.into(), LB_MAC, "out0"),
            (NAT_REAL6.into(), LB_MAC, "in0"),
            (NAT_VIP6.into(), LB_MAC, "out0"),
        ])?;
        // The bench's frames are addressed to LB_MAC, arriving on lo, out0 or in0.
        in_netns(&router.ns, || {
            for interface in ["lo", "out0", "in0"] {
                let ifindex = nix::net::if_::if_nametoindex(interface)?;
                loaded.maps.set_interface_mac(ifindex, LB_MAC)?;
            }
            Ok(())
        })?;
        in_netns(&router.ns, || {
            let floor: &mut Xdp = floor_obj
                .program_mut("bench_tx")
                .context("bench_tx")?
                .try_into()?;
            floor.attach("out0p", XdpMode::Driver)?;
            loaded.attach("in0p", policy::XdpMode::Driver)
        })?;
        Ok(Bench {
            floor_obj,
            loaded,
            router,
        })
    }

    fn floor(&self) -> Result<&Xdp> {
        Ok(self
            .floor_obj
            .program("bench_tx")
            .context("bench_tx")?
            .try_into()?)
    }

    fn xdplb(&self) -> Result<&Xdp> {
        Ok(self
            .loaded
            .ebpf
            .program(PROGRAM_NAME)
            .context("xdplb")?
            .try_into()?)
    }
}

fn pin_to(cpu: usize) -> Result<()> {
    let mut cpus = nix::sched::CpuSet::new();
    cpus.set(cpu)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpus)?;
    Ok(())
}

fn measure(pin_dir: &std::path::Path) -> Result<()> {
    let mut bench = Bench::new(pin_dir)?;
    let (snat_request, snat_reply) = {
        let Bench { loaded, router, .. } = &mut bench;
        let len = tcp_frame(CLIENT, SNAT_CLIENT_PORT, SNAT_VIP, 443, false).len();
        let ctx_out = in_netns(&router.ns, || xdp_md("out0", len))?;
        in_netns(&router.ns, || {
            close_snat_circle(&loaded.ebpf, &mut loaded.maps, &ctx_out)
        })?
    };
    let floor = bench.floor()?;
    let xdplb = bench.xdplb()?;
    let router = &bench.router;
    let nat_vip = NAT_VIP;

    let cpu = last_cpu();
    let dr_vip = DR_VIP;
    let established = tcp_frame(CLIENT, 40000, dr_vip, 104, false);
    test_run(xdplb, &established, 1, None)?; // schedules the flow: every repeat after is established
    let no_vip = tcp_frame(CLIENT, 40000, Ipv4Addr::new(198, 18, 0, 50), 104, false);
    let established6 = tcp_frame(CLIENT6, 40000, DR_VIP6, 104, false);
    test_run(xdplb, &established6, 1, None)?;

    println!(
        "xdplb per-packet cost, BPF_PROG_TEST_RUN, {}-byte TCP frames, pinned to CPU {cpu}",
        established.len()
    );
    println!(
        "repeated: mean of {REPEAT} repeats, median of {RUNS} runs; NAT: {NAT_CALLS} calls of {NAT_REPEAT} repeats (floor likewise); new flows: {SINGLE_SHOTS} single runs
"
    );

    // Everything below runs on one CPU, inside the router namespace (only NAT's FIB lookups
    // depend on it).
    let (rows, floors) = in_netns(&router.ns, || {
        pin_to(cpu)?;
        let ctx_out = xdp_md("out0", established.len())?;
        let ctx_in = xdp_md("in0", established.len())?;

        let floor_ns = repeated(floor, &established, XDP_TX)?;
        let floor_short = short_repeats(floor, &established, Some(&ctx_out), &[XDP_TX])?;
        let floor_single = single(floor, |_| established.clone(), Some(&ctx_out), XDP_TX)?;

        // Warm-up creates both NAT flows (VIP:443 -> real, and the way back).
        let request = tcp_frame(CLIENT, 50000, nat_vip, 443, false);
        let (action, _) = test_run(xdplb, &request, 2, Some(&ctx_out))?;
        ensure!(
            action == XDP_TX,
            "circular NAT warm-up gave action {action}"
        );
        let reply = tcp_frame(NAT_REAL, 8443, CLIENT, 50000, false);
        let nat = [XDP_TX, XDP_REDIRECT];
        // The same circle in IPv6, whose frames are 20 bytes longer.
        let request6 = tcp_frame(CLIENT6, 50000, NAT_VIP6, 443, false);
        let ctx_out6 = xdp_md("out0", request6.len())?;
        let ctx_in6 = xdp_md("in0", request6.len())?;
        let (action, _) = test_run(xdplb, &request6, 2, Some(&ctx_out6))?;
        ensure!(
            action == XDP_TX,
            "circular IPv6 NAT warm-up gave action {action}"
        );
        let reply6 = tcp_frame(NAT_REAL6, 8443, CLIENT6, 50000, false);
        let syn = |i: u32| {
            let port = if (i / 60000).is_multiple_of(2) {
                104
            } else {
                11112
            };
            tcp_frame(CLIENT, (i % 60000) as u16 + 1024, dr_vip, port, true)
        };

        let repeated_pair = |frame: &[u8], expect: u32| {
            paired(RUNS, |is_floor| {
                if is_floor {
                    repeated_once(floor, &established, XDP_TX)
                } else {
                    repeated_once(xdplb, frame, expect)
                }
            })
        };
        let calls_pair = |frame: &[u8], ctx: &[u8], expect: &[u32]| {
            paired(NAT_RUNS, |is_floor| {
                if is_floor {
                    short_repeats_once(floor, &established, Some(&ctx_out), &[XDP_TX])
                } else {
                    short_repeats_once(xdplb, frame, Some(ctx), expect)
                }
            })
        };
        // A new flow as usual: the flood detector (lb_common::flood) is reset before it could
        // count a flood, so every SYN gets its connection-table entry.
        let flood = &bench.loaded.maps.flood;
        let single_ns = single_with(xdplb, syn, Some(&ctx_out), XDP_TX, |i| {
            if i % 512 == 0 {
                set_flood(pin_dir, None)?;
            }
            Ok(())
        })?;
        // Under a SYN flood: the detector is tripped (as more than its limit of SYNs in a tick
        // would), then every SYN is forwarded without an entry (checked by its counter).
        let flooded_syn = |i: u32| syn(i + 1_000_000);
        let untracked_before = untracked(flood)?;
        let flood_ns = single_with(xdplb, flooded_syn, Some(&ctx_out), XDP_TX, |i| {
            if i % 256 == 0 {
                set_flood(pin_dir, Some(bench.loaded.now_tick()?))?;
            }
            Ok(())
        })?;
        let untracked = untracked(flood)? - untracked_before;
        ensure!(
            untracked == (SINGLE_RUNS as u32 * SINGLE_SHOTS) as u64,
            "the flood case left only {untracked} SYNs untracked"
        );
        let rows = vec![
            Row::new(
                "DR established flow",
                repeated_pair(&established, XDP_TX)?,
                "target <= 3.5x",
            ),
            Row::new(
                "packet to no VIP",
                repeated_pair(&no_vip, XDP_PASS)?,
                "target <= 2x",
            ),
            Row::new(
                "DR established (calls)",
                calls_pair(&established, &ctx_out, &[XDP_TX])?,
                "timed like NAT, to compare with it",
            ),
            Row::new(
                "NAT inbound",
                calls_pair(&request, &ctx_out, &nat)?,
                "target <= 4x",
            ),
            Row::new(
                "NAT return",
                calls_pair(&reply, &ctx_in, &nat)?,
                "target <= 4x",
            ),
            Row::new(
                "DR established IPv6",
                repeated_pair(&established6, XDP_TX)?,
                "IPv4 + a tail call (xdplb_v6)",
            ),
            Row::new(
                "NAT inbound IPv6",
                calls_pair(&request6, &ctx_out6, &nat)?,
                "target <= 4x",
            ),
            Row::new(
                "NAT return IPv6",
                calls_pair(&reply6, &ctx_in6, &nat)?,
                "target <= 4x",
            ),
            Row::new(
                "SNAT inbound",
                calls_pair(&snat_request, &ctx_out, &nat)?,
                "target <= NAT inbound +20%",
            ),
            Row::new(
                "SNAT return",
                calls_pair(&snat_reply, &ctx_in, &nat)?,
                "target <= NAT return +20%",
            ),
            Row::new(
                "DR new flow (SYN)",
                Paired {
                    ns: single_ns,
                    ratio: single_ns / floor_single,
                },
                "single runs, vs the floor's single runs",
            ),
            Row::new(
                "DR SYN under a flood",
                Paired {
                    ns: flood_ns,
                    ratio: flood_ns / floor_single,
                },
                "target <= 4x; single runs, no table entry",
            ),
        ];
        Ok((rows, [floor_ns, floor_short, floor_single]))
    })?;

    println!("{:<22} {:>10} {:>9}", "case", "ns/packet", "x floor");
    for row in rows {
        println!(
            "{:<22} {:>10.1} {:>8.2}x  {}",
            row.name, row.measured.ns, row.measured.ratio, row.target
        );
    }
    println!(
        "\nfloor (bare XDP_TX): {:.1} ns repeated, {:.1} ns in calls of {NAT_REPEAT}, {:.1} ns single runs",
        floors[0], floors[1], floors[2]
    );
    Ok(())
}

/// Makes both SNAT flows (A: client -> 198.18.0.102:443, B: its output, to A's real as B's
/// VIP) and sets B's port to A's client port, so B's output is A's input again and each
/// direction is circular. Returns A's request and the real's reply to it.
fn close_snat_circle(
    ebpf: &Ebpf,
    maps: &mut xdplb::dataplane::maps::Maps,
    ctx_out: &[u8],
) -> Result<(Vec<u8>, Vec<u8>)> {
    let xdplb: &Xdp = ebpf.program(PROGRAM_NAME).context("xdplb")?.try_into()?;
    let request = tcp_frame(CLIENT, SNAT_CLIENT_PORT, SNAT_VIP, 443, false);
    let mut a_out = vec![0u8; request.len() + 64];
    let a = xdplb.test_run(TestRunOptions {
        data_in: Some(&request),
        data_out: Some(&mut a_out),
        ctx_in: Some(ctx_out),
        ..TestRunOptions::new()
    })?;
    ensure!(
        a.return_value == XDP_REDIRECT,
        "SNAT A gave {}",
        a.return_value
    );
    a_out.truncate(a.data_size_out as usize);
    let a_port = u16::from_be_bytes([a_out[34], a_out[35]]);
    // B's first packet is A's output (claiming B's own port).
    let (b, _) = test_run(xdplb, &a_out, 1, Some(ctx_out))?;
    ensure!(b == XDP_TX, "SNAT B gave {b}");
    let key = |src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16| FlowKey {
        src: Addr::from(src),
        dst: Addr::from(dst),
        sport: sport.to_be(),
        dport: dport.to_be(),
        proto: 6,
        _pad1: 0,
        _pad2: 0,
    };
    let b_flow = key(SNAT_ADDRESS, a_port, SNAT_REAL, 8443);
    let mut b_entry = maps.flows.get(&b_flow, 0)?;
    let b_port = u16::from_be(b_entry.snat_port);
    b_entry.snat_port = SNAT_CLIENT_PORT.to_be();
    maps.flows.insert(b_flow, b_entry, 0)?;
    let claimed = key(SNAT_VIP, 443, CLIENT, b_port);
    let b_back = maps.snat_reverse.get(&claimed, 0)?;
    maps.snat_reverse.remove(&claimed)?;
    maps.snat_reverse
        .insert(key(SNAT_VIP, 443, CLIENT, SNAT_CLIENT_PORT), b_back, 0)?;
    Ok((
        request,
        tcp_frame(SNAT_REAL, 8443, SNAT_ADDRESS, a_port, false),
    ))
}

/// Rounds of the A/B comparison; each round times both programs once per case.
const AB_ROUNDS: usize = 15;

/// `xdplb-lab bench-ab BASELINE`: this build's program against another build's `lb-ebpf`
/// object (e.g. main's), both on the same pinned maps and the same packets, alternating
/// which goes first. Prints the median over rounds of this/baseline per case: a change of a
/// few ns shows through this VM's drift, which separate bench runs cannot resolve.
pub fn run_ab(baseline: &std::path::Path) -> Result<()> {
    let pin_dir = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/lab-xdplb-{}-bench-ab",
        std::process::id()
    ));
    let result = compare(&pin_dir, baseline);
    let _ = loader::remove_pins(&pin_dir);
    result
}

fn compare(pin_dir: &std::path::Path, baseline: &std::path::Path) -> Result<()> {
    let bench = Bench::new(pin_dir)?;
    let bytes = std::fs::read(baseline)
        .with_context(|| format!("reading the baseline object {}", baseline.display()))?;
    let mut base_obj = aya::EbpfLoader::new()
        .default_map_pin_directory(pin_dir)
        .load(&bytes)
        .context("loading the baseline object on the same pinned maps")?;
    let program: &mut Xdp = base_obj
        .program_mut(PROGRAM_NAME)
        .context("baseline xdplb")?
        .try_into()?;
    program.load()?;
    in_netns(&bench.router.ns, || {
        program.attach("out0", XdpMode::Driver)?;
        Ok(())
    })?;
    // A baseline that forwards only frames addressed to its interfaces has its own (unpinned)
    // table of their MACs: give it the same as this build's.
    if let Some(map) = base_obj.map_mut(lb_common::maps::MAP_INTERFACE_MACS) {
        let mut macs: aya::maps::Array<_, lb_common::interface::InterfaceMac> =
            aya::maps::Array::try_from(map)?;
        let entries = in_netns(&bench.router.ns, || {
            ["lo", "out0", "in0"]
                .iter()
                .map(|name| Ok(nix::net::if_::if_nametoindex(*name)?))
                .collect::<Result<Vec<u32>>>()
        })?;
        for ifindex in entries {
            let entry = lb_common::interface::InterfaceMac {
                ifindex,
                mac: LB_MAC,
                flags: 0,
            };
            macs.set(ifindex % lb_common::interface::INTERFACE_SLOTS, entry, 0)?;
        }
    }
    let program: &mut Xdp = base_obj
        .program_mut(PROGRAM_NAME)
        .context("baseline xdplb")?
        .try_into()?;
    let base: &Xdp = program;
    let this = bench.xdplb()?;

    let established = tcp_frame(CLIENT, 40000, DR_VIP, 104, false);
    let request = tcp_frame(CLIENT, 50000, NAT_VIP, 443, false);
    let reply = tcp_frame(NAT_REAL, 8443, CLIENT, 50000, false);
    let no_vip = tcp_frame(CLIENT, 40000, Ipv4Addr::new(198, 18, 0, 50), 104, false);
    let nat = [XDP_TX, XDP_REDIRECT];
    let cpu = last_cpu();
    let rows = in_netns(&bench.router.ns, || {
        pin_to(cpu)?;
        let ctx_out = xdp_md("out0", established.len())?;
        let ctx_in = xdp_md("in0", established.len())?;
        test_run(this, &established, 1, None)?;
        let (action, _) = test_run(this, &request, 2, Some(&ctx_out))?;
        ensure!(
            action == XDP_TX,
            "circular NAT warm-up gave action {action}"
        );

        type Case<'a> = (&'static str, Box<dyn Fn(&Xdp) -> Result<f64> + 'a>);
        let cases: Vec<Case> = vec![
            (
                "DR established flow",
                Box::new(|p| repeated_once(p, &established, XDP_TX)),
            ),
            (
                "packet to no VIP",
                Box::new(|p| repeated_once(p, &no_vip, XDP_PASS)),
            ),
            (
                "NAT inbound",
                Box::new(|p| short_repeats_once(p, &request, Some(&ctx_out), &nat)),
            ),
            (
                "NAT return",
                Box::new(|p| short_repeats_once(p, &reply, Some(&ctx_in), &nat)),
            ),
        ];
        let mut rows = Vec::new();
        for (name, case) in &cases {
            let (mut this_ns, mut base_ns, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
            for round in 0..AB_ROUNDS {
                let (a, b) = if round % 2 == 0 {
                    let a = case(this)?;
                    (a, case(base)?)
                } else {
                    let b = case(base)?;
                    (case(this)?, b)
                };
                this_ns.push(a);
                base_ns.push(b);
                ratios.push(a / b);
            }
            rows.push((*name, median(this_ns), median(base_ns), median(ratios)));
        }
        Ok(rows)
    })?;

    println!(
        "this build vs {}: median of {AB_ROUNDS} rounds",
        baseline.display()
    );
    println!(
        "{:<22} {:>8} {:>9} {:>11}",
        "case", "this ns", "base ns", "this/base"
    );
    for (name, this_ns, base_ns, ratio) in rows {
        println!("{name:<22} {this_ns:>8.1} {base_ns:>9.1} {ratio:>10.3}x");
    }
    Ok(())
}
