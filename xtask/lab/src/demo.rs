//! `cargo xtask demo`: a client, the balancer and three real servers in namespaces; real TCP
//! requests through the VIP in DR mode; which real answered each; the balancer's counters.
//! `cargo xtask demo --nat`: the same in two-arm NAT mode with HTTP (curl) and UDP, the reals
//! on their own network behind the balancer, VIP:80 translated to real:8080.

use std::{thread::sleep, time::Duration};

use anyhow::Result;

use crate::lab::{
    Arms, BALANCER, CLIENT, Conversation, DrLab, LabConfig, NatLab, VIP, dr_policy, http_get,
    udp_who, who,
};

pub fn run() -> Result<()> {
    println!("== xdplb demo: Direct Routing of DICOM ports 104 and 11112 ==\n");
    let mut lab = DrLab::build(&LabConfig::default())?;
    println!(
        "lab (network namespaces on one bridge, prefix {}):",
        lab.prefix
    );
    println!("  client   {CLIENT}");
    println!("  balancer {BALANCER}  runs `xdplb run`, XDP on eth0, owns VIP {VIP}");
    for (_, addr, name) in &lab.reals {
        println!("  {name}   {addr}  `xdplb realserver up --vip {VIP}`: VIP on lo, ARP suppressed");
    }
    let policy = dr_policy(&lab, &[104, 11112]);
    println!("\npolicy:\n{}", indent(&policy));
    lab.balancer.start(&policy)?;

    println!("new TCP connections from the client to the VIP:");
    for i in 0..12 {
        let port = if i % 2 == 0 { 104 } else { 11112 };
        let real = who(&lab.client, lab.vip(port))?;
        println!(
            "  connection {:>2} to {VIP}:{port:<5} answered by {real}",
            i + 1
        );
    }

    println!("\none connection held open (a study transfer in flight):");
    let mut held = Conversation::open(&lab.client, lab.vip(104))?;
    for i in 0..3 {
        println!(
            "  request {} on the same connection answered by {}",
            i + 1,
            held.who()?
        );
        sleep(Duration::from_millis(200));
    }

    let mac = lab.client_mac_for_vip()?.unwrap_or_else(|| "none".into());
    let lb_mac = lab.balancer.mac("eth0")?;
    println!(
        "\nclient's ARP entry for {VIP}: {mac} (balancer eth0 is {lb_mac}; the reals stay silent)"
    );

    println!("\n`xdplb status` on the balancer (from the running controller):");
    println!("{}", indent(&lab.balancer.status_table()?));
    println!("`xdplb stats` on the balancer (straight from the pinned maps):");
    println!("{}", indent(&lab.balancer.stats_table()?));
    drop(held);
    println!("tearing the lab down (namespaces, XDP programs, pins)");
    drop(lab);
    println!("done.");
    Ok(())
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

pub fn run_nat() -> Result<()> {
    println!("== xdplb demo: two-arm NAT, HTTPS-viewer style port translation and UDP ==\n");
    let mut lab = NatLab::build(Arms::Two, 2)?;
    println!("lab (network namespaces, two bridges):");
    println!(
        "  client   {}  network 198.18.0.0/24, default route via the balancer",
        lab.client_addr
    );
    println!(
        "  balancer eth0 198.18.0.2 (clients, owns VIP {}), eth1 198.19.0.1 (reals)",
        crate::lab::NAT_VIP
    );
    for (_, addr, name) in &lab.reals {
        println!("  {name}   {addr}  network 198.19.0.0/24, default route via the balancer");
    }
    let policy = lab.policy();
    println!("\npolicy:\n{}", indent(&policy));
    lab.balancer.start(&policy)?;

    println!(
        "HTTP: curl http://{}/ from the client (VIP:80 -> real:8080):",
        lab.vip(80)
    );
    for i in 0..6 {
        println!(
            "  request {} answered by {}",
            i + 1,
            http_get(&lab.client, lab.vip(80))?
        );
    }
    println!(
        "\nUDP to {} (the reply must come from the VIP, or the client's socket drops it):",
        lab.vip(53)
    );
    for i in 0..6 {
        println!(
            "  datagram {} answered by {}",
            i + 1,
            udp_who(&lab.client, lab.vip(53))?
        );
    }

    println!("\n`xdplb stats` on the balancer:");
    println!("{}", indent(&lab.balancer.stats_table()?));
    println!("tearing the lab down (namespaces, XDP programs, pins)");
    drop(lab);
    println!("done.");
    Ok(())
}
