//! End-to-end TCP connections/s (part of `cargo xtask bench`): short connections (connect,
//! HTTP GET, read the answer, close) from the client through each path to the same two real
//! servers, on the same one-arm NAT topology (reals' gateway = the balancer):
//! xdplb DR (VIP:8080), xdplb NAT (VIP:80 → real:8080), nftables DNAT (VIP:80 → real:8080,
//! alternating reals) and HAProxy in TCP mode (VIP:80 → real:8080, round robin).
//! Everything shares this VM's two CPUs, so the figures compare the paths under the same load
//! rather than show any path's limit.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};

use crate::lab::{Arms, Daemon, NAT_VIP, NatLab, netns::run as run_command, xdplb_binary};

/// How long each case runs, and client threads.
const SECONDS: u64 = 3;
const CLIENTS: usize = 2;

struct Case {
    name: &'static str,
    per_second: f64,
    failed: u64,
}

/// Short connections to `to` from the lab's client for `SECONDS`.
fn measure(lab: &NatLab, name: &'static str, to: SocketAddr) -> Result<Case> {
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut threads = Vec::new();
    for _ in 0..CLIENTS {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        threads.push(lab.client.spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let counter = if fetch(to).is_ok() { &ok } else { &failed };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        })?);
    }
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(SECONDS));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let case = Case {
        name,
        per_second: ok.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64(),
        failed: failed.load(Ordering::Relaxed),
    };
    eprintln!(
        "  {name}: {:.0} connections/s, {} failed",
        case.per_second, case.failed
    );
    ensure!(case.per_second > 0.0, "{name}: no connection succeeded");
    Ok(case)
}

fn fetch(to: SocketAddr) -> Result<()> {
    let mut stream = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    ensure!(answer.starts_with(b"HTTP/1.1 200"), "bad answer");
    Ok(())
}

fn policy(lab: &NatLab, forwarding: &str, port: u16, real_port: &str) -> String {
    let mut text = format!(
        "interfaces:\n  - name: eth0\n    xdp_mode: driver\nservices:\n  - name: web\n    vip: {NAT_VIP}\n    ports: [{port}]\n    protocol: tcp\n    forwarding: {forwarding}\n    reals:\n"
    );
    for (_, addr, _) in &lab.reals {
        text += &format!("      - address: {addr}\n{real_port}");
    }
    text
}

pub fn run() -> Result<()> {
    let mut lab = NatLab::build(Arms::One, 2)?;
    let xdplb = xdplb_binary()?;
    for (ns, _, name) in &lab.reals {
        run_command(ns.command(xdplb.to_str().unwrap()).args([
            "realserver",
            "up",
            "--vip",
            &NAT_VIP.to_string(),
            "--interface",
            "eth0",
        ]))
        .with_context(|| format!("realserver up on {name}"))?;
    }
    let mut cases = Vec::new();

    // DR: replies go straight to the client (on the same segment), not through the
    // balancer, which holds the VIP and would drop them as martians.
    let client_net = "198.18.1.0/24";
    for (ns, _, _) in &lab.reals {
        ns.ip(&["route", "add", client_net, "dev", "eth0"])?;
    }
    lab.balancer.start(&policy(&lab, "dr", 8080, ""))?;
    cases.push(measure(
        &lab,
        "xdplb DR",
        SocketAddr::from((NAT_VIP, 8080)),
    )?);
    lab.balancer.stop();
    for (ns, _, _) in &lab.reals {
        ns.ip(&["route", "del", client_net, "dev", "eth0"])?;
    }

    lab.balancer
        .start(&policy(&lab, "nat", 80, "        port: 8080\n"))?;
    cases.push(measure(&lab, "xdplb NAT", SocketAddr::from((NAT_VIP, 80)))?);
    lab.balancer.stop();

    // The kernel paths: the balancer holds the VIP itself.
    let lb = &lab.balancer.ns;
    lb.ip(&["addr", "add", &format!("{NAT_VIP}/32"), "dev", "eth0"])?;
    run_command(lb.command("sysctl").args(["-qw", "net.ipv4.ip_forward=1"]))?;
    let reals: Vec<String> = lab.reals.iter().map(|(_, a, _)| a.to_string()).collect();
    run_command(lb.command("nft").arg(format!(
        "add table ip bench; add chain ip bench pre {{ type nat hook prerouting priority dstnat; }}; add rule ip bench pre ip daddr {NAT_VIP} tcp dport 80 dnat to numgen inc mod 2 map {{ 0 : {}, 1 : {} }} : 8080",
        reals[0], reals[1]
    )))?;
    cases.push(measure(
        &lab,
        "nftables DNAT",
        SocketAddr::from((NAT_VIP, 80)),
    )?);
    run_command(lb.command("nft").args(["delete", "table", "ip", "bench"]))?;

    let config = lab.balancer.work_dir.join("haproxy.cfg");
    std::fs::write(
        &config,
        format!(
            "global\n  maxconn 4000\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 5s\n  timeout server 5s\nfrontend vip\n  bind *:80\n  default_backend reals\nbackend reals\n  balance roundrobin\n  server r1 {}:8080\n  server r2 {}:8080\n",
            reals[0], reals[1]
        ),
    )?;
    {
        let _haproxy = Daemon::start(
            &lab.balancer.ns,
            80,
            "haproxy",
            &["-db", "-f", config.to_str().unwrap()],
        )?;
        cases.push(measure(
            &lab,
            "HAProxy (TCP mode)",
            SocketAddr::from((NAT_VIP, 80)),
        )?);
    }

    println!(
        "\nTCP connections/s, {CLIENTS} client threads for {SECONDS} s each, connect + HTTP GET + close, same topology (one-arm)\n"
    );
    println!("{:<22} {:>14} {:>8}", "case", "connections/s", "failed");
    for c in &cases {
        println!("{:<22} {:>14.0} {:>8}", c.name, c.per_second, c.failed);
    }
    let rate = |name: &str| {
        cases
            .iter()
            .find(|c| c.name.starts_with(name))
            .map(|c| c.per_second)
    };
    if let (Some(dr), Some(nat), Some(nft), Some(haproxy)) = (
        rate("xdplb DR"),
        rate("xdplb NAT"),
        rate("nftables"),
        rate("HAProxy"),
    ) {
        println!(
            "\nxdplb DR = {:.2}x nftables DNAT, {:.2}x HAProxy; xdplb NAT = {:.2}x nftables DNAT, {:.2}x HAProxy",
            dr / nft,
            dr / haproxy,
            nat / nft,
            nat / haproxy
        );
    }
    Ok(())
}
