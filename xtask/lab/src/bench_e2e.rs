//! End-to-end packets/s (part of `cargo xtask bench`): frames through the forwarders on one
//! veth pair, the same topology and generator for every case, in one run.
//!
//! ```text
//!   [gen ns] g0 198.18.0.1, 198.18.0.11 (the real) ══ veth ══ b0 198.18.0.2 [balancer ns]
//!   bench_gen (live frames, XDP_TX out of g0)  ──►  forwarder on b0, sends back out b0
//!   bench_sink on g0 counts and drops what comes back  ◄──
//! ```
//! The generator is an XDP program run with BPF_PROG_TEST_RUN in live-frames mode; it writes
//! the template frame (UDP 198.18.0.1:40000 → VIP 198.18.0.100:53) over every frame, because
//! the kernel recycles pages a forwarder rewrote. Cases: a bare MAC-swapping XDP forwarder
//! (the ceiling), xdplb DR, xdplb NAT (one-arm, VIP:53 → real:5353), xdplb SNAT (the same,
//! from the balancer's own address 198.18.0.2 and a port of xdplb's range), and the kernel's
//! nftables DNAT (the path users have today; b0 runs an XDP_PASS program so the veth delivers).
//! Every forwarder is loaded once, and a case starts by putting its program in b0's one XDP
//! link (`Forwarders`), so rounds are short and ratios are taken within a round.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context, Result, ensure};
use aya::{
    Ebpf,
    maps::{Array, PerCpuArray},
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode as AyaXdpMode, xdp::XdpLink},
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

use crate::lab::{
    Netns, in_netns,
    netns::{self, run as run_command, unique_prefix},
    xdp_md,
};

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const REAL: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
/// Frames per generator run, and rounds (every path once per round).
const FRAMES: u32 = 2_000_000;
const RUNS: usize = 41;
/// Frames the kernel sends per batch in live-frames mode.
const BATCH: u32 = 64;

struct Topology {
    generator: Netns,
    lb: Netns,
    gen_mac: [u8; 6],
    lb_mac: [u8; 6],
}

impl Topology {
    fn build() -> Result<Topology> {
        netns::sweep_leftovers();
        let prefix = unique_prefix();
        let generator = Netns::create(format!("{prefix}-gen"))?;
        let lb = Netns::create(format!("{prefix}-fwd"))?;
        generator.ip(&[
            "link", "add", "g0", "type", "veth", "peer", "name", "b0", "netns", &lb.name,
        ])?;
        for (ns, dev, addrs) in [
            (&generator, "g0", vec!["198.18.0.1/24", "198.18.0.11/24"]),
            (&lb, "b0", vec!["198.18.0.2/24"]),
        ] {
            for a in addrs {
                ns.ip(&["addr", "add", a, "dev", dev])?;
            }
            ns.ip(&["link", "set", dev, "up"])?;
            run_command(ns.command("ethtool").args(["-K", dev, "tx", "off"]))?;
        }
        // Threaded NAPI: the veths' receive work runs in kernel threads the scheduler can put
        // on the other CPU, instead of queueing behind the generator's loop (which overflows
        // the veth rings and loses nearly every frame).
        for (ns, dev) in [(&generator, "g0"), (&lb, "b0")] {
            netns::threaded_napi(ns, dev)?;
        }
        pin_napi_threads(&[("napi/g0-", SINK_CPU), ("napi/b0-", FORWARDER_CPU)])?;
        let gen_mac = generator.mac("g0")?;
        let lb_mac = lb.mac("b0")?;
        lb.ip(&[
            "neigh",
            "replace",
            &REAL.to_string(),
            "lladdr",
            &crate::lab::mac_text(&gen_mac),
            "dev",
            "b0",
            "nud",
            "permanent",
        ])?;
        Ok(Topology {
            generator,
            lb,
            gen_mac,
            lb_mac,
        })
    }

    /// The template: a 64-byte UDP frame from the client to the VIP, addressed to b0.
    fn template(&self) -> Vec<u8> {
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(self.gen_mac, self.lb_mac)
            .ipv4([198, 18, 0, 1], VIP.octets(), 64)
            .udp(40000, 53)
            .write(&mut frame, &[0u8; 22])
            .expect("building the template frame");
        frame
    }
}

/// The generator's CPU; the veths' NAPI threads (the forwarder under test and the sink) get
/// the other one. Left to the scheduler, a NAPI thread sometimes shared the generator's CPU
/// for a whole case, and that case's figure fell by a quarter.
const GENERATOR_CPU: usize = 0;
const FORWARDER_CPU: usize = 1;
fn sink_cpu() -> usize {
    std::env::var("SINKCPU")
        .map(|v| v.parse().unwrap())
        .unwrap_or(1)
}
const SINK_CPU: usize = 99;

fn cpu_set(cpu: usize) -> Result<nix::sched::CpuSet> {
    let mut cpus = nix::sched::CpuSet::new();
    cpus.set(cpu)?;
    Ok(cpus)
}

/// Pins the NAPI threads whose names start with one of `prefixes` to `NAPI_CPU`.
fn pin_napi_threads(prefixes: &[(&str, usize)]) -> Result<()> {
    let mut pinned = 0;
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(comm) = std::fs::read_to_string(entry.path().join("comm")) else {
            continue;
        };
        if let Some((_, cpu)) = prefixes.iter().find(|(p, _)| comm.starts_with(p)) {
            let cpu = if *cpu == 99 { sink_cpu() } else { *cpu };
            nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(pid), &cpu_set(cpu)?)
                .with_context(|| format!("pinning {} to CPU {cpu}", comm.trim()))?;
            pinned += 1;
        }
    }
    ensure!(
        pinned == prefixes.len(),
        "found {pinned} NAPI threads for the bench's {} veths (is another bench running?)",
        prefixes.len()
    );
    Ok(())
}

/// The generator and the sink, loaded in the generator namespace.
struct Traffic {
    ebpf: Ebpf,
}

impl Traffic {
    fn start(topology: &Topology) -> Result<Traffic> {
        let template = topology.template();
        let ebpf = in_netns(&topology.generator, move || {
            let mut ebpf = Ebpf::load(object::LAB)?;
            let mut words = [0u64; 8];
            for (i, chunk) in template.chunks(8).take(8).enumerate() {
                let mut b = [0u8; 8];
                b[..chunk.len()].copy_from_slice(chunk);
                words[i] = u64::from_ne_bytes(b);
            }
            let mut t: Array<_, [u64; 8]> =
                Array::try_from(ebpf.map_mut("GEN_TEMPLATE").context("template map")?)?;
            t.set(0, words, 0)?;
            for name in ["bench_gen", "bench_sink"] {
                let p: &mut Xdp = ebpf.program_mut(name).context(name)?.try_into()?;
                p.load()?;
            }
            let sink: &mut Xdp = ebpf.program_mut("bench_sink").unwrap().try_into()?;
            sink.attach("g0", AyaXdpMode::Default)?;
            Ok(ebpf)
        })?;
        Ok(Traffic { ebpf })
    }

    fn sunk(&self) -> Result<u64> {
        let counts: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map("SINK_PACKETS").context("sink map")?)?;
        Ok(counts.get(&0, 0)?.iter().sum())
    }

    /// Sends `FRAMES` frames; returns (frames forwarded back to the sink per second, frames
    /// generated per second).
    fn measure(&self, topology: &Topology) -> Result<(f64, f64)> {
        let before = self.sunk()?;
        let frame = topology.template();
        let generator: &Xdp = self.ebpf.program("bench_gen").unwrap().try_into()?;
        let elapsed = in_netns(&topology.generator, || {
            nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpu_set(GENERATOR_CPU)?)?;
            let ctx = xdp_md("g0", frame.len())?;
            let start = Instant::now();
            generator.test_run(TestRunOptions {
                data_in: Some(&frame),
                ctx_in: Some(&ctx),
                repeat: FRAMES,
                attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
                ..TestRunOptions::new()
            })?;
            Ok(start.elapsed())
        })?;
        // Frames in flight land within a moment.
        std::thread::sleep(std::time::Duration::from_millis(50));
        let forwarded = self.sunk()? - before;
        let secs = elapsed.as_secs_f64();
        Ok((forwarded as f64 / secs, FRAMES as f64 / secs))
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

struct Case {
    name: &'static str,
    /// Frames forwarded per second, one per round.
    rounds: Vec<f64>,
    /// Frames generated per second, one per round.
    generated: Vec<f64>,
}

impl Case {
    fn pps(&self) -> f64 {
        median(self.rounds.clone())
    }
}

/// The paths measured, in the order of each round.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Forwarder {
    Ceiling,
    XdplbDr,
    XdplbNat,
    XdplbSnat,
    Nftables,
}

const FORWARDERS: [(Forwarder, &str); 5] = [
    (Forwarder::Ceiling, "ceiling (XDP MAC swap)"),
    (Forwarder::XdplbDr, "xdplb DR"),
    (Forwarder::XdplbNat, "xdplb NAT"),
    (Forwarder::XdplbSnat, "xdplb SNAT"),
    (Forwarder::Nftables, "nftables DNAT"),
];

/// Every forwarder, loaded once, and the one XDP link on b0 that runs whichever is measured.
///
/// Cases switch by replacing the program in the link (`bpf_link_update`): the veth keeps its
/// queues and NAPI state, and nothing is loaded or freed between cases, so a round takes a
/// couple of seconds. This VM's speed moves by up to 2x for seconds at a time (the same
/// program, measured back to back), so rounds must be short for ratios within a round to
/// cancel that drift.
struct Forwarders {
    /// The ceiling (`bench_mac_fwd`) and `lab_pass`, which hands frames to the kernel for the
    /// nftables case.
    lab: Ebpf,
    dr: loader::Loaded,
    nat: loader::Loaded,
    snat: loader::Loaded,
    link: Option<XdpLink>,
}

impl Forwarders {
    /// Loads every forwarder, attaches the ceiling to b0, and installs the nftables DNAT rule
    /// (frames an XDP program transmits never reach netfilter, so it stays in place).
    fn install(topology: &Topology, pin_dir: &Path) -> Result<Forwarders> {
        let lb = &topology.lb;
        // The kernel path forwards back out the interface it came in on: no redirects.
        lb.ip(&["route", "replace", &format!("{REAL}/32"), "dev", "b0"])?;
        for setting in [
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.send_redirects=0",
            "net.ipv4.conf.b0.send_redirects=0",
        ] {
            run_command(lb.command("sysctl").args(["-qw", setting]))?;
        }
        run_command(lb.command("nft").arg(format!(
            "add table ip e2e; add chain ip e2e pre {{ type nat hook prerouting priority dstnat; }}; add rule ip e2e pre ip daddr {VIP} udp dport 53 dnat to {REAL}:5353"
        )))?;
        let dr = load_xdplb(topology, &pin_dir.join("dr"), &policy("dr", "", ""))?;
        let nat = load_xdplb(
            topology,
            &pin_dir.join("nat"),
            &policy("nat", "", "        port: 5353\n"),
        )?;
        let snat = load_xdplb(
            topology,
            &pin_dir.join("snat"),
            &policy(
                "snat",
                "    snat_address: 198.18.0.2\n",
                "        port: 5353\n",
            ),
        )?;
        let (lab, link) = in_netns(lb, || {
            let mut lab = Ebpf::load(object::LAB)?;
            for name in ["lab_pass", "bench_mac_fwd"] {
                let p: &mut Xdp = lab.program_mut(name).context(name)?.try_into()?;
                p.load()?;
            }
            let ceiling: &mut Xdp = lab.program_mut("bench_mac_fwd").unwrap().try_into()?;
            let id = ceiling.attach("b0", AyaXdpMode::Driver)?;
            let link = ceiling.take_link(id)?;
            Ok((lab, link))
        })?;
        Ok(Forwarders {
            lab,
            dr,
            nat,
            snat,
            link: Some(link),
        })
    }

    /// Makes `forwarder` the program b0 runs.
    fn switch_to(&mut self, forwarder: Forwarder) -> Result<()> {
        let program: &mut Xdp = match forwarder {
            Forwarder::Ceiling => self.lab.program_mut("bench_mac_fwd"),
            Forwarder::Nftables => self.lab.program_mut("lab_pass"),
            Forwarder::XdplbDr => self.dr.ebpf.program_mut(PROGRAM_NAME),
            Forwarder::XdplbNat => self.nat.ebpf.program_mut(PROGRAM_NAME),
            Forwarder::XdplbSnat => self.snat.ebpf.program_mut(PROGRAM_NAME),
        }
        .context("program missing")?
        .try_into()?;
        let link = self.link.take().context("b0's XDP link")?;
        let id = program
            .attach_to_link(link)
            .context("replacing the program on b0")?;
        self.link = Some(program.take_link(id)?);
        Ok(())
    }
}

/// xdplb loaded with `policy`, its maps pinned under `pin_dir`; not attached.
fn load_xdplb(topology: &Topology, pin_dir: &Path, policy_text: &str) -> Result<loader::Loaded> {
    let policy = policy::parse("e2e", policy_text)?;
    let observed = Observed {
        macs: [(REAL.into(), topology.gen_mac)].into_iter().collect(),
        ..Default::default()
    };
    let pin_dir = pin_dir.to_path_buf();
    in_netns(&topology.lb, move || {
        let mut loaded = loader::load(&pin_dir)?;
        loaded.record_interface_mac("b0")?;
        let mut sync = Sync::adopt(&loaded.maps, loaded.hz)?;
        sync.apply(&mut loaded.maps, &policy, &observed)?;
        Ok(loaded)
    })
}

/// The one-service policy: `service_keys` and `real_keys` are extra lines of each.
fn policy(forwarding: &str, service_keys: &str, real_keys: &str) -> String {
    format!(
        "interfaces:\n  - name: b0\nservices:\n  - name: dns\n    vip: {VIP}\n    ports: [53]\n    protocol: udp\n    forwarding: {forwarding}\n{service_keys}    reals:\n      - address: {REAL}\n{real_keys}"
    )
}

pub fn run() -> Result<()> {
    let topology = Topology::build()?;
    let traffic = Traffic::start(&topology)?;
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/lab-{}-e2e", unique_prefix()));
    let result = Forwarders::install(&topology, &pin_dir).and_then(|mut forwarders| {
        report_table_memory(&pin_dir.join("dr"))?;
        cases(&traffic, &topology, &mut forwarders)
    });
    for dir in ["dr", "nat", "snat"] {
        let _ = loader::remove_pins(&pin_dir.join(dir));
    }
    let _ = std::fs::remove_dir(&pin_dir);
    let cases = result?;
    report(&cases);
    Ok(())
}

/// Every forwarder once per round, rounds repeated; ratios are taken within a round.
fn cases(traffic: &Traffic, topology: &Topology, forwarders: &mut Forwarders) -> Result<Vec<Case>> {
    let mut cases: Vec<Case> = FORWARDERS
        .iter()
        .map(|(_, name)| Case {
            name,
            rounds: Vec::new(),
            generated: Vec::new(),
        })
        .collect();
    for round in 0..RUNS {
        // Odd rounds run the cases in reverse, so a case's place in a round weighs on every
        // case alike.
        let order: Vec<usize> = if round % 2 == 0 {
            (0..FORWARDERS.len()).collect()
        } else {
            (0..FORWARDERS.len()).rev().collect()
        };
        for i in order {
            let (forwarder, name) = &FORWARDERS[i];
            forwarders.switch_to(*forwarder)?;
            let (pps, gen_pps) = traffic.measure(topology)?;
            ensure!(pps > 0.0, "{name}: nothing came back through the forwarder");
            cases[i].rounds.push(pps);
            cases[i].generated.push(gen_pps);
        }
    }
    Ok(cases)
}

/// Kernel memory of the connection tables (LRU hashes are preallocated): per flow, and per
/// million flows; a NAT flow has a forward and a reverse entry.
fn report_table_memory(pin_dir: &Path) -> Result<()> {
    let bytes = |map: &str| -> Result<(f64, f64)> {
        let out = run_command(
            Command::new("bpftool")
                .args(["-j", "map", "show", "pinned"])
                .arg(pin_dir.join(map)),
        )?;
        let info: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let memlock = info["bytes_memlock"].as_f64().context("bytes_memlock")?;
        let entries = info["max_entries"].as_f64().context("max_entries")?;
        Ok((memlock / entries, entries))
    };
    let (flow, entries) = bytes("FLOWS")?;
    let (reverse, _) = bytes("NAT_REVERSE")?;
    eprintln!(
        "\nconnection table: {entries} flows preallocated; {flow:.0} bytes per flow = {:.0} MiB per million flows (DR), {:.0} MiB with NAT's reverse entries",
        flow * 1e6 / (1 << 20) as f64,
        (flow + reverse) * 1e6 / (1 << 20) as f64
    );
    Ok(())
}

/// `a`'s packets/s over `b`'s in the same round: the median over rounds, and the middle half
/// of the rounds, so a reader sees how far the machine moved the figure.
fn ratio(a: &Case, b: &Case) -> String {
    let mut per_round: Vec<f64> = a.rounds.iter().zip(&b.rounds).map(|(x, y)| x / y).collect();
    per_round.sort_by(|x, y| x.partial_cmp(y).unwrap());
    let n = per_round.len();
    format!(
        "{:.2}x (middle half of rounds {:.2}-{:.2})",
        per_round[n / 2],
        per_round[n / 4],
        per_round[(3 * n) / 4]
    )
}

fn report(cases: &[Case]) {
    let get = |name: &str| cases.iter().find(|c| c.name.starts_with(name));
    println!(
        "\nxdplb end to end: {FRAMES} UDP frames of 64 bytes per run, {RUNS} rounds of every path, one veth pair\n"
    );
    println!("{:<24} {:>12} {:>14}", "case", "Mpps", "generated Mpps");
    for c in cases {
        println!(
            "{:<24} {:>12.2} {:>14.2}",
            c.name,
            c.pps() / 1e6,
            median(c.generated.clone()) / 1e6
        );
    }
    if let (Some(ceiling), Some(dr), Some(nat), Some(snat), Some(nft)) = (
        get("ceiling"),
        get("xdplb DR"),
        get("xdplb NAT"),
        get("xdplb SNAT"),
        get("nftables"),
    ) {
        println!(
            "\nratios within a round, median:\n  xdplb DR   = {} the ceiling (target >= 0.9)\n  xdplb DR   = {} nftables DNAT (target >= 3)\n  xdplb NAT  = {} the ceiling (target >= 0.8)\n  xdplb SNAT = {} xdplb NAT (target >= 0.83, i.e. at most +20% per packet)",
            ratio(dr, ceiling),
            ratio(dr, nft),
            ratio(nat, ceiling),
            ratio(snat, nat)
        );
    }
}
