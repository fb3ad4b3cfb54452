//! A namespace that looks like a NAT balancer to bpf_fib_lookup, for packet-level tests and
//! benchmarks: `out0` on the client network, `in0` on the real servers' network, permanent
//! neighbours for the hosts named, forwarding on. Nothing is attached; the program under test
//! runs with BPF_PROG_TEST_RUN as if packets arrived on one of these interfaces.
//!
//! ```text
//!   clients 198.18.0.0/24 -- out0 198.18.0.2 [router] in0 198.19.0.1 -- reals 198.19.0.0/24
//!   clients 2001:2::/64   -- out0 2001:2::2  [router] in0 2001:2:0:1::1 -- reals 2001:2:0:1::/64
//! ```

use std::{fs::File, net::IpAddr};

use anyhow::{Context, Result};
use aya::programs::{TestRun, TestRunOptions, Xdp};

use super::netns::{Netns, mac_text, run, unique_prefix};

pub struct FibRouter {
    pub ns: Netns,
    pub out_mac: [u8; 6],
    pub in_mac: [u8; 6],
}

impl FibRouter {
    /// `neighbours`: (address of either family, MAC, "out0" or "in0").
    pub fn new<A: Into<IpAddr> + Copy>(neighbours: &[(A, [u8; 6], &str)]) -> Result<FibRouter> {
        let ns = Netns::create(format!("{}-fib", unique_prefix()))?;
        // Fixed MACs: a seeded test that mutates frames must meet the same addresses each run.
        for (dev, addr, addr6, mac) in [
            ("out0", "198.18.0.2/24", "2001:2::2/64", "02:00:00:00:18:02"),
            (
                "in0",
                "198.19.0.1/24",
                "2001:2:0:1::1/64",
                "02:00:00:00:19:01",
            ),
        ] {
            ns.ip(&[
                "link",
                "add",
                dev,
                "address",
                mac,
                "type",
                "veth",
                "peer",
                "name",
                &format!("{dev}p"),
            ])?;
            ns.ip(&["addr", "add", addr, "dev", dev])?;
            // No duplicate address detection: the address is usable at once.
            ns.ip(&["addr", "add", addr6, "dev", dev, "nodad"])?;
            ns.ip(&["link", "set", dev, "up"])?;
            ns.ip(&["link", "set", &format!("{dev}p"), "up"])?;
        }
        for (addr, mac, dev) in neighbours {
            let addr: IpAddr = (*addr).into();
            ns.ip(&[
                "neigh",
                "replace",
                &addr.to_string(),
                "lladdr",
                &mac_text(mac),
                "dev",
                dev,
                "nud",
                "permanent",
            ])?;
        }
        run(ns.command("sysctl").args([
            "-qw",
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
        ]))?;
        let out_mac = ns.mac("out0")?;
        let in_mac = ns.mac("in0")?;
        Ok(FibRouter {
            ns,
            out_mac,
            in_mac,
        })
    }
}

/// Runs `f` on a thread inside `ns` and waits for it (`f` may borrow).
pub fn in_netns<T: Send>(ns: &Netns, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let netns = File::open(format!("/run/netns/{}", ns.name))?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| -> Result<T> {
                nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET)?;
                f()
            })
            .join()
            .map_err(|_| anyhow::anyhow!("thread in {} panicked", ns.name))?
    })
}

/// A BPF_PROG_TEST_RUN context (struct xdp_md) for a frame of `len` bytes arriving on
/// `interface` of the calling thread's namespace.
pub fn xdp_md(interface: &str, len: usize) -> Result<Vec<u8>> {
    let ifindex =
        nix::net::if_::if_nametoindex(interface).with_context(|| format!("no {interface}"))?;
    // data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex
    let md: [u32; 6] = [0, len as u32, 0, ifindex, 0, 0];
    Ok(md.iter().flat_map(|v| v.to_ne_bytes()).collect())
}

/// What one BPF_PROG_TEST_RUN returned.
pub struct RunResult {
    pub action: u32,
    pub frame: Vec<u8>,
    /// Mean time per repeat, as the kernel measured it.
    pub nanos: u64,
}

/// Runs `program` on `frame` (`repeat` times) as if it arrived on `interface` of `ns`.
pub fn test_run_in(
    ns: &Netns,
    interface: &str,
    program: &Xdp,
    frame: &[u8],
    repeat: u32,
) -> Result<RunResult> {
    in_netns(ns, || {
        let ctx = xdp_md(interface, frame.len())?;
        let mut out = vec![0u8; frame.len() + 256];
        let result = program.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            repeat,
            ..TestRunOptions::new()
        })?;
        out.truncate(result.data_size_out as usize);
        Ok(RunResult {
            action: result.return_value,
            frame: out,
            nanos: result.duration.as_nanos() as u64,
        })
    })
}
