//! Fuzzing the data plane (issue 12, item 2): a deterministic stream of frames, most of them
//! built valid and a part of them broken on purpose, goes through the real XDP program with
//! BPF_PROG_TEST_RUN, and an oracle written from the README's promises (not from the data
//! plane's code) judges what came out of every one:
//!
//! - a frame that is not forwardable is passed to the kernel byte for byte (a fragment to a
//!   VIP, addressed to us, may be dropped);
//! - DR: XDP_TX, a real of the service as destination MAC, ours as source, nothing else changed;
//! - NAT, both ways: the address and port rewritten exactly, TTL decremented, the IP checksum
//!   valid, the L4 checksum updated incrementally (valid after if and only if valid before),
//!   the MACs of the FIB's next hop, out of the interface the route says;
//! - no flow ever moves to another real.
//!
//! `XDPLB_FUZZ_SEED` (decimal or 0x-hex) and `XDPLB_FUZZ_FRAMES` override the seed and the
//! number of frames; `XDPLB_FUZZ_TRACE=text` prints every frame whose description contains
//! the text (an address:port, say), with its verdict and action: the history of a flow. A failure names the promise broken, the frame's index and both frames in
//! hex. The connection table carries state from frame to frame, so a failure is replayed by
//! running the same seed up to its index (`XDPLB_FUZZ_FRAMES` = index + 1).
//!
//! The whole run happens in one namespace that looks like a two-arm NAT balancer to
//! bpf_fib_lookup (`FibRouter`); every frame arrives on `out0` or `in0`:
//!
//! ```text
//!   198.18.0.0/24 -- out0 [balancer] in0 -- 198.19.0.0/24
//!   2001:2::/64                               2001:2:0:1::/64
//!   clients, DR reals,                        two-arm NAT reals
//!   one-arm NAT reals
//! ```
//!
//! About a third of the frames are IPv6 (generate6.rs, mutate6.rs), for services of their own
//! beside the IPv4 ones: the same promises, plus IPv6's own (README and the IPv6 data plane's
//! notes in lb-ebpf/src/parse.rs): at most 4 extension headers walked (hop-by-hop, routing,
//! destination options, fragment; an atomic fragment is a whole packet; a longer chain is
//! passed), fragments to a VIP dropped or passed, an IPv4-mapped source or destination passed
//! as martian, ICMPv6 errors about VIP flows sent to the flow's real (DR) or translated (NAT),
//! neighbour discovery and echo passed untouched, the hop limit decremented by NAT, and every
//! forwarded TCP/UDP/ICMPv6 checksum right if and only if it was (etherparse agreeing).
//!
//! Flows never expire during the run (every service's idle and closing timeouts are an hour),
//! so "the same real for every packet of a flow" holds without exception; expiry has its own
//! tests (packet_flow_age.rs).
//!
//! One concern a file:
//!
//! - main.rs (this file): the configuration under test (services, policy, neighbours), the
//!   test and its run loop;
//! - generate.rs: the seeded stream of valid frames, generate6.rs its IPv6 frames; mutate.rs:
//!   how a part of them is broken, mutate6.rs the IPv6 ones;
//! - oracle.rs: the well-formedness rules and the expected outcome (`Verdict`) of every frame;
//! - checks.rs: what the program did, compared with the expected outcome;
//! - report.rs: failure classes, the first frame of each (replay line, hex dumps), the summary;
//! - bytes.rs: byte and checksum helpers.

mod bytes;
mod checks;
mod generate;
mod generate6;
mod mutate;
mod mutate6;
mod oracle;
mod report;

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Instant,
};

use anyhow::{Context, Result};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use xdplb_lab::lab::{FibRouter, in_netns, xdp_md};
use xdplb_tests::fixture::Dataplane;

use crate::{
    generate::Generator,
    oracle::Oracle,
    report::{Report, action_name, failure_example},
};

const DEFAULT_SEED: u64 = 0x1b12_0002;
const DEFAULT_FRAMES: u64 = 150_000;

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMPV6: u8 = 58;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
/// The veths' MTU: bpf_fib_lookup refuses (FRAG_NEEDED) a datagram longer than the egress MTU.
const MTU: usize = 1500;

// ---------------------------------------------------------------------------------------------
// The configuration under test
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Dr,
    Nat,
}

struct Service {
    name: &'static str,
    vip: IpAddr,
    ports: &'static [u16],
    proto: u8,
    mode: Mode,
    reals: &'static [IpAddr],
    /// NAT port translation (the real's `port:`).
    real_port: Option<u16>,
}

const fn client_net(host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, 0, host))
}

const fn inside_net(host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 19, 0, host))
}

/// 2001:2::host, the IPv6 client network (out0).
const fn client6(host: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, host))
}

/// 2001:2:0:1::host, the IPv6 server network (in0).
const fn inside6(host: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, host))
}

/// Several reals per service, so that a flow moving to another real would show.
const SERVICES: &[Service] = &[
    Service {
        name: "dicom",
        vip: client_net(100),
        ports: &[104, 11112],
        proto: TCP,
        mode: Mode::Dr,
        reals: &[client_net(11), client_net(12), client_net(13)],
        real_port: None,
    },
    Service {
        name: "syslog",
        vip: client_net(101),
        ports: &[514],
        proto: UDP,
        mode: Mode::Dr,
        reals: &[client_net(12), client_net(13)],
        real_port: None,
    },
    Service {
        name: "viewer",
        vip: client_net(110),
        ports: &[443],
        proto: TCP,
        mode: Mode::Nat,
        reals: &[inside_net(11), inside_net(12), inside_net(13)],
        real_port: Some(8443),
    },
    Service {
        name: "dns",
        vip: client_net(110),
        ports: &[53],
        proto: UDP,
        mode: Mode::Nat,
        reals: &[inside_net(11), inside_net(12), inside_net(13)],
        real_port: None,
    },
    Service {
        name: "sip",
        vip: client_net(111),
        ports: &[5060],
        proto: UDP,
        mode: Mode::Nat,
        reals: &[inside_net(14), inside_net(15)],
        real_port: Some(15060),
    },
    Service {
        // One-arm: the reals are on the client network, behind out0 as well.
        name: "xds",
        vip: client_net(112),
        ports: &[17035],
        proto: TCP,
        mode: Mode::Nat,
        reals: &[client_net(21), client_net(22)],
        real_port: Some(8080),
    },
    Service {
        name: "web6",
        vip: client6(0x100),
        ports: &[80, 443],
        proto: TCP,
        mode: Mode::Dr,
        reals: &[client6(0x11), client6(0x12), client6(0x13)],
        real_port: None,
    },
    Service {
        name: "dns6",
        vip: client6(0x100),
        ports: &[53],
        proto: UDP,
        mode: Mode::Dr,
        reals: &[client6(0x12), client6(0x13)],
        real_port: None,
    },
    Service {
        name: "pacs6",
        vip: client6(0x110),
        ports: &[104],
        proto: TCP,
        mode: Mode::Nat,
        reals: &[inside6(0x11), inside6(0x12), inside6(0x13)],
        real_port: Some(11112),
    },
    Service {
        name: "ntp6",
        vip: client6(0x110),
        ports: &[123],
        proto: UDP,
        mode: Mode::Nat,
        reals: &[inside6(0x14), inside6(0x15)],
        real_port: None,
    },
    Service {
        // One-arm IPv6 NAT: the reals on the client network.
        name: "hl7-6",
        vip: client6(0x111),
        ports: &[2575],
        proto: TCP,
        mode: Mode::Nat,
        reals: &[client6(0x21), client6(0x22)],
        real_port: Some(12575),
    },
];

/// Clients of NAT flows: on the client network, with neighbour entries, so replies route.
fn nat_clients() -> impl Iterator<Item = IpAddr> {
    (30..62).map(client_net)
}

/// The IPv6 clients of NAT flows, likewise.
fn nat_clients6() -> impl Iterator<Item = IpAddr> {
    (0x30..0x50).map(client6)
}

/// Every host's MAC (reals and clients): unicast, locally administered, from its address
/// (02:52 and the IPv4 address; 02:56 and the last four bytes of the IPv6 address).
fn host_mac(addr: IpAddr) -> [u8; 6] {
    match addr {
        IpAddr::V4(a) => {
            let o = a.octets();
            [0x02, 0x52, o[0], o[1], o[2], o[3]]
        }
        IpAddr::V6(a) => {
            let o = a.octets();
            [0x02, 0x56, o[12], o[13], o[14], o[15]]
        }
    }
}

fn policy_yaml() -> String {
    let mut yaml =
        String::from("interfaces:\n  - name: out0\n  - name: in0\n    role: inside\nservices:\n");
    for s in SERVICES {
        let _ = write!(
            yaml,
            "  - name: {}\n    vip: \"{}\"\n    ports: {:?}\n    protocol: {}\n    forwarding: {}\n    \
             timeouts:\n      idle: 1h\n      closing: 1h\n    reals:\n",
            s.name,
            s.vip,
            s.ports,
            if s.proto == TCP { "tcp" } else { "udp" },
            if s.mode == Mode::Dr { "dr" } else { "nat" },
        );
        for real in s.reals {
            let _ = writeln!(yaml, "      - address: \"{real}\"");
            if let Some(port) = s.real_port {
                let _ = writeln!(yaml, "        port: {port}");
            }
        }
    }
    yaml
}

/// The DR reals' MACs, as the controller would have learnt them.
fn dr_macs() -> Vec<(IpAddr, [u8; 6])> {
    let mut macs: Vec<_> = SERVICES
        .iter()
        .filter(|s| s.mode == Mode::Dr)
        .flat_map(|s| s.reals.iter().map(|r| (*r, host_mac(*r))))
        .collect();
    macs.sort();
    macs.dedup();
    macs
}

/// The router's permanent neighbours: NAT reals and NAT clients.
fn neighbours() -> Vec<(IpAddr, [u8; 6], &'static str)> {
    let mut list: Vec<_> = SERVICES
        .iter()
        .filter(|s| s.mode == Mode::Nat)
        .flat_map(|s| s.reals.iter().copied())
        .chain(nat_clients())
        .chain(nat_clients6())
        .map(|a| (a, host_mac(a), side_of(a).unwrap().name()))
        .collect();
    list.sort();
    list.dedup();
    list
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Out,
    In,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Out => "out0",
            Side::In => "in0",
        }
    }
}

/// Which interface's subnet an address is on.
fn side_of(addr: IpAddr) -> Option<Side> {
    match addr {
        IpAddr::V4(a) => match a.octets() {
            [198, 18, 0, _] => Some(Side::Out),
            [198, 19, 0, _] => Some(Side::In),
            _ => None,
        },
        IpAddr::V6(a) => match a.segments() {
            [0x2001, 2, 0, 0, ..] => Some(Side::Out),
            [0x2001, 2, 0, 1, ..] => Some(Side::In),
            _ => None,
        },
    }
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

/// What the program did with one frame.
struct Outcome {
    action: u32,
    frame: Vec<u8>,
}

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let text = text.trim();
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={text} is not a number")))
}

/// Runs `program` on a frame arriving on `side` (the calling thread is in the router's
/// namespace).
fn run(program: &Xdp, side: Side, frame: &[u8]) -> Result<Outcome> {
    let ctx = xdp_md(side.name(), frame.len())?;
    let mut out = vec![0u8; frame.len() + 256];
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            ..TestRunOptions::new()
        })
        .with_context(|| format!("test run of a {}-byte frame", frame.len()))?;
    out.truncate(result.data_size_out as usize);
    Ok(Outcome {
        action: result.return_value,
        frame: out,
    })
}

fn fuzz(
    program: &Xdp,
    seed: u64,
    frames: u64,
    out_mac: [u8; 6],
    in_mac: [u8; 6],
) -> Result<Report> {
    let mut generator = Generator::new(seed, out_mac, in_mac);
    let mut oracle = Oracle::new(out_mac, in_mac);
    let mut report = Report::new(frames);
    let trace = std::env::var("XDPLB_FUZZ_TRACE").ok();
    for index in 0..frames {
        let case = generator.next(&oracle);
        let verdict = oracle.judge(case.side, &case.frame);
        let out = run(program, case.side, &case.frame)
            .with_context(|| format!("frame #{index}: {}", case.made))?;
        *report.verdicts.entry(verdict.label()).or_default() += 1;
        if let Some(needle) = &trace
            && case.made.contains(needle.as_str())
        {
            println!(
                "packet_fuzz: #{index}: {} => {} => {}",
                case.made,
                verdict.label(),
                action_name(out.action)
            );
        }
        *report.actions.entry(action_name(out.action)).or_default() += 1;
        let mut problems = Vec::new();
        if let Some(p) = oracle.self_check(case.side, &case.frame, &verdict) {
            problems.push(p);
        }
        if let Err(p) = oracle.check(&verdict, case.side, &case.frame, &out) {
            problems.push(p);
        }
        for p in problems {
            report.failures.record(p.class.clone(), || {
                failure_example(seed, index, &case, &verdict, &out, &p)
            });
        }
    }
    report.open_nat_flows = oracle.opened.len();
    Ok(report)
}

#[test]
fn fuzzed_frames_keep_the_readme_promises() -> Result<()> {
    let seed = env_number("XDPLB_FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    let frames = env_number("XDPLB_FUZZ_FRAMES").unwrap_or(DEFAULT_FRAMES);
    println!("packet_fuzz: seed {seed:#x}, {frames} frames (XDPLB_FUZZ_SEED, XDPLB_FUZZ_FRAMES)");

    let router = FibRouter::new(&neighbours())?;
    let mut dp = Dataplane::with_macs(&policy_yaml(), &dr_macs());
    // As on a pair's standby: replies from the reals' service ports of no known flow are
    // adopted, so the oracle judges that path too.
    dp.set_nat_adoption(true);
    // The data plane forwards only frames addressed to the MAC of the interface they arrive on.
    // The frames are run directly below, not through Dataplane::run_in (a thread per frame).
    dp.register_interface(&router.ns, "out0");
    dp.register_interface(&router.ns, "in0");
    let program: &Xdp = dp
        .loaded
        .ebpf
        .program(lb_common::maps::PROGRAM_NAME)
        .context("the XDP program")?
        .try_into()?;

    let started = Instant::now();
    let (out_mac, in_mac) = (router.out_mac, router.in_mac);
    let report = in_netns(&router.ns, || fuzz(program, seed, frames, out_mac, in_mac))?;
    let elapsed = started.elapsed();

    report.print(seed, elapsed);
    let failures = &report.failures;
    assert_eq!(
        failures.total(),
        0,
        "{} frames broke a promise, in {} classes (seed {seed:#x}; see above)",
        failures.total(),
        failures.classes.len()
    );
    Ok(())
}
