//! A SYN flood for the namespace lab, from 4,194,304 distinct spoofed sources.
//!
//! ```text
//!   [flood ns] f0 ══ veth ══ flood0 [balancer ns], xdplb attached (a second outside interface)
//!   flood_gen (live frames, XDP_TX out of f0)  ──►  xdplb forwards each SYN (DR: XDP_TX)
//!   bench_sink on f0 counts and drops them      ◄──  toward a real's MAC, back out flood0
//! ```
//! The flood shares the balancer's data plane (connection table, Maglev, flood detector) with
//! the lab's real traffic, but the forwarded SYNs come back to the sink instead of reaching
//! the reals, whose kernels would otherwise spend the lab's two CPUs answering them.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use aya::{
    Ebpf,
    maps::{Array, PerCpuArray},
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode},
};
use etherparse::PacketBuilder;
use std::net::Ipv4Addr;
use xdplb::dataplane::object;

use super::{
    in_netns,
    netns::{Netns, threaded_napi},
    xdp_md,
};

/// The balancer's end of the flood's veth: list it in the policy's `interfaces`.
pub const FLOOD_INTERFACE: &str = "flood0";
/// Distinct spoofed sources the generator cycles through (198.18.0.0/15 x 32 ports).
pub const FLOOD_SOURCES: u32 = 1 << 22;
/// Frames per generator call, and per batch the kernel sends.
const FRAMES_PER_CALL: u32 = 1 << 18;
const BATCH: u32 = 64;

pub struct SynFlood {
    ns: Netns,
    ebpf: Ebpf,
    frame: Vec<u8>,
}

impl SynFlood {
    /// The flood's namespace and veth into `balancer` (its end named `FLOOD_INTERFACE`),
    /// aimed at `vip`:`port`. Start the balancer with that interface before `run`.
    pub fn new(prefix: &str, balancer: &Netns, vip: Ipv4Addr, port: u16) -> Result<SynFlood> {
        let ns = Netns::create(format!("{prefix}-flood"))?;
        ns.ip(&[
            "link",
            "add",
            "f0",
            "type",
            "veth",
            "peer",
            "name",
            FLOOD_INTERFACE,
            "netns",
            &balancer.name,
        ])?;
        ns.ip(&["link", "set", "f0", "up"])?;
        balancer.ip(&["link", "set", FLOOD_INTERFACE, "up"])?;
        // The veths' receive work in kernel threads, not behind the generator's loop.
        threaded_napi(&ns, "f0")?;
        threaded_napi(balancer, FLOOD_INTERFACE)?;
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(ns.mac("f0")?, balancer.mac(FLOOD_INTERFACE)?)
            .ipv4([198, 18, 0, 0], vip.octets(), 64)
            .tcp(1024, port, 1, 64240)
            .syn()
            .write(&mut frame, &[])
            .context("building the SYN template")?;
        frame.resize(64, 0); // the generator writes a 64-byte template: Ethernet padding
        let template = frame.clone();
        let ebpf = in_netns(&ns, move || {
            let mut ebpf = Ebpf::load(object::LAB)?;
            let mut words = [0u64; 8];
            for (i, chunk) in template.chunks(8).enumerate() {
                words[i] = u64::from_ne_bytes(chunk.try_into()?);
            }
            let mut t: Array<_, [u64; 8]> =
                Array::try_from(ebpf.map_mut("GEN_TEMPLATE").context("template map")?)?;
            t.set(0, words, 0)?;
            for name in ["flood_gen", "bench_sink"] {
                let p: &mut Xdp = ebpf.program_mut(name).context(name)?.try_into()?;
                p.load()?;
            }
            let sink: &mut Xdp = ebpf.program_mut("bench_sink").unwrap().try_into()?;
            sink.attach("f0", XdpMode::default())?;
            Ok(ebpf)
        })?;
        Ok(SynFlood { ns, ebpf, frame })
    }

    /// SYNs the balancer forwarded back to the sink so far.
    pub fn forwarded(&self) -> Result<u64> {
        let counts: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map("SINK_PACKETS").context("sink map")?)?;
        Ok(counts.get(&0, 0)?.iter().sum())
    }

    /// Floods for `how_long` or until `enough` says stop (checked between calls of
    /// `FRAMES_PER_CALL` frames); returns the frames generated.
    pub fn run(&self, how_long: Duration, mut enough: impl FnMut() -> bool + Send) -> Result<u64> {
        let generator: &Xdp = self.ebpf.program("flood_gen").unwrap().try_into()?;
        let frame = &self.frame;
        in_netns(&self.ns, || {
            let ctx = xdp_md("f0", frame.len())?;
            let deadline = Instant::now() + how_long;
            let mut sent = 0u64;
            while Instant::now() < deadline && !enough() {
                generator.test_run(TestRunOptions {
                    data_in: Some(frame),
                    ctx_in: Some(&ctx),
                    repeat: FRAMES_PER_CALL,
                    attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
                    ..TestRunOptions::new()
                })?;
                sent += FRAMES_PER_CALL as u64;
            }
            Ok(sent)
        })
    }
}
