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
//! (the ceiling), xdplb DR, xdplb NAT (one-arm, VIP:53 → real:5353), and the kernel's
//! nftables DNAT (the path users have today; b0 runs an XDP_PASS program so the veth delivers).

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
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode as AyaXdpMode},
};
use etherparse::PacketBuilder;
use xdplb::{
    dataplane::{
        loader, object,
        sync::{Observed, Sync},
    },
    policy::{self, XdpMode},
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
const RUNS: usize = 9;
/// Pause between installing a forwarder and timing it.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(1);
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
            // GRO on gives the veth its NAPI instance, which threaded mode needs.
            run_command(ns.command("ethtool").args(["-K", dev, "gro", "on"]))?;
            run_command(
                Command::new("ip")
                    .args(["netns", "exec", &ns.name, "sh", "-c"])
                    .arg(format!("echo 1 > /sys/class/net/{dev}/threaded")),
            )?;
        }
        pin_napi_threads(&["napi/g0-", "napi/b0-"])?;
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
const NAPI_CPU: usize = 1;

fn cpu_set(cpu: usize) -> Result<nix::sched::CpuSet> {
    let mut cpus = nix::sched::CpuSet::new();
    cpus.set(cpu)?;
    Ok(cpus)
}

/// Pins the NAPI threads whose names start with one of `prefixes` to `NAPI_CPU`.
fn pin_napi_threads(prefixes: &[&str]) -> Result<()> {
    let cpus = cpu_set(NAPI_CPU)?;
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
        if prefixes.iter().any(|p| comm.starts_with(p)) {
            nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(pid), &cpus)
                .with_context(|| format!("pinning {} to CPU {NAPI_CPU}", comm.trim()))?;
            pinned += 1;
        }
    }
    ensure!(
        pinned == prefixes.len(),
        "found {pinned} of {} NAPI threads",
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
    generated: f64,
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
    Nftables,
}

const FORWARDERS: [(Forwarder, &str); 4] = [
    (Forwarder::Ceiling, "ceiling (XDP MAC swap)"),
    (Forwarder::XdplbDr, "xdplb DR"),
    (Forwarder::XdplbNat, "xdplb NAT"),
    (Forwarder::Nftables, "nftables DNAT"),
];

/// What keeps a forwarder in place on b0 while it is measured.
enum Installed {
    Program { _ebpf: Ebpf },
    Xdplb { _loaded: Box<loader::Loaded> },
}

/// A lab program attached to b0 for the duration of a case.
fn attach_lab_program(topology: &Topology, name: &'static str) -> Result<Ebpf> {
    in_netns(&topology.lb, move || {
        let mut ebpf = Ebpf::load(object::LAB)?;
        let p: &mut Xdp = ebpf.program_mut(name).context(name)?.try_into()?;
        p.load()?;
        p.attach("b0", AyaXdpMode::Default)?;
        Ok(ebpf)
    })
}

/// xdplb loaded with `policy`, attached to b0, pinned under `pin_dir`.
fn attach_xdplb(topology: &Topology, pin_dir: &Path, policy_text: &str) -> Result<loader::Loaded> {
    let policy = policy::parse("e2e", policy_text)?;
    let observed = Observed {
        macs: [(REAL, topology.gen_mac)].into_iter().collect(),
        ..Default::default()
    };
    let pin_dir = pin_dir.to_path_buf();
    in_netns(&topology.lb, move || {
        let mut loaded = loader::load(&pin_dir)?;
        let mut sync = Sync::adopt(&loaded.maps, loaded.hz)?;
        sync.apply(&mut loaded.maps, &policy, &observed)?;
        loaded.attach("b0", XdpMode::Driver)?;
        Ok(loaded)
    })
}

fn policy(forwarding: &str, port: &str) -> String {
    format!(
        "interfaces:\n  - name: b0\nservices:\n  - name: dns\n    vip: {VIP}\n    ports: [53]\n    protocol: udp\n    forwarding: {forwarding}\n    reals:\n      - address: {REAL}\n{port}"
    )
}

pub fn run() -> Result<()> {
    let topology = Topology::build()?;
    let traffic = Traffic::start(&topology)?;
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/lab-{}-e2e", unique_prefix()));
    let result = cases(&topology, &traffic, &pin_dir);
    let _ = loader::remove_pins(&pin_dir);
    let cases = result?;
    report(&cases);
    Ok(())
}

fn install(forwarder: Forwarder, topology: &Topology, pin_dir: &Path) -> Result<Installed> {
    Ok(match forwarder {
        Forwarder::Ceiling => Installed::Program {
            _ebpf: attach_lab_program(topology, "bench_mac_fwd")?,
        },
        Forwarder::XdplbDr => Installed::Xdplb {
            _loaded: Box::new(attach_xdplb(topology, pin_dir, &policy("dr", ""))?),
        },
        Forwarder::XdplbNat => Installed::Xdplb {
            _loaded: Box::new(attach_xdplb(
                topology,
                pin_dir,
                &policy("nat", "        port: 5353\n"),
            )?),
        },
        Forwarder::Nftables => {
            let pass = attach_lab_program(topology, "lab_pass")?;
            run_command(topology.lb.command("nft").arg(format!(
                "add table ip e2e; add chain ip e2e pre {{ type nat hook prerouting priority dstnat; }}; add rule ip e2e pre ip daddr {VIP} udp dport 53 dnat to {REAL}:5353"
            )))?;
            Installed::Program { _ebpf: pass }
        }
    })
}

fn uninstall(
    forwarder: Forwarder,
    installed: Installed,
    topology: &Topology,
    pin_dir: &Path,
) -> Result<()> {
    drop(installed);
    match forwarder {
        Forwarder::XdplbDr | Forwarder::XdplbNat => loader::remove_pins(pin_dir)?,
        Forwarder::Nftables => {
            run_command(
                topology
                    .lb
                    .command("nft")
                    .args(["delete", "table", "ip", "e2e"]),
            )?;
        }
        Forwarder::Ceiling => {}
    }
    Ok(())
}

/// Every forwarder once per round, rounds repeated: a slow drift of the machine then affects
/// all forwarders alike, and ratios are taken within a round.
fn cases(topology: &Topology, traffic: &Traffic, pin_dir: &Path) -> Result<Vec<Case>> {
    // The kernel path forwards back out the interface it came in on: no redirects.
    let lb = &topology.lb;
    lb.ip(&["route", "replace", &format!("{REAL}/32"), "dev", "b0"])?;
    for setting in [
        "net.ipv4.ip_forward=1",
        "net.ipv4.conf.all.send_redirects=0",
        "net.ipv4.conf.b0.send_redirects=0",
    ] {
        run_command(lb.command("sysctl").args(["-qw", setting]))?;
    }
    let mut cases: Vec<Case> = FORWARDERS
        .iter()
        .map(|(_, name)| Case {
            name,
            rounds: Vec::new(),
            generated: 0.0,
        })
        .collect();
    let mut generated = vec![Vec::new(); FORWARDERS.len()];
    for round in 0..RUNS {
        // Odd rounds run the cases in reverse, so a case's place in a round (the ones after
        // another case's teardown, the ones early or late in it) weighs on every case alike.
        let order: Vec<usize> = if round % 2 == 0 {
            (0..FORWARDERS.len()).collect()
        } else {
            (0..FORWARDERS.len()).rev().collect()
        };
        for i in order {
            let (forwarder, name) = &FORWARDERS[i];
            let installed = install(*forwarder, topology, pin_dir)?;
            // The previous case's maps (xdplb preallocates about 250 MB) are freed by a kernel
            // worker after they are dropped: let that finish before the next case is timed.
            std::thread::sleep(SETTLE);
            let measured = traffic.measure(topology);
            if round == 0 && *forwarder == Forwarder::XdplbDr {
                report_table_memory(pin_dir)?;
            }
            uninstall(*forwarder, installed, topology, pin_dir)?;
            let (pps, gen_pps) = measured?;
            ensure!(pps > 0.0, "{name}: nothing came back through the forwarder");
            cases[i].rounds.push(pps);
            generated[i].push(gen_pps);
        }
    }
    for (case, g) in cases.iter_mut().zip(generated) {
        case.generated = median(g);
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

/// Median over rounds of `a`'s packets/s over `b`'s in the same round.
fn ratio(a: &Case, b: &Case) -> f64 {
    median(a.rounds.iter().zip(&b.rounds).map(|(x, y)| x / y).collect())
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
            c.generated / 1e6
        );
    }
    if let (Some(ceiling), Some(dr), Some(nat), Some(nft)) = (
        get("ceiling"),
        get("xdplb DR"),
        get("xdplb NAT"),
        get("nftables"),
    ) {
        println!(
            "\nratios within a round, median: xdplb DR = {:.2}x ceiling (target >= 0.9), {:.1}x nftables DNAT (target >= 3)\nxdplb NAT = {:.2}x ceiling (target >= 0.8)",
            ratio(dr, ceiling),
            ratio(dr, nft),
            ratio(nat, ceiling)
        );
    }
}
