//! `cargo xtask demo`: a client, the balancer and three real servers in namespaces; real TCP
//! requests through the VIP in DR mode; which real answered each; the balancer's counters.

use std::{thread::sleep, time::Duration};

use anyhow::Result;

use crate::lab::{BALANCER, CLIENT, Conversation, DrLab, LabConfig, VIP, dr_policy, who};

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

    println!("\n`xdplb stats` on the balancer:");
    println!(
        "{}",
        indent(&lab.balancer.xdplb(&[
            "stats",
            "--pin-dir",
            lab.balancer.pin_dir.to_str().unwrap()
        ])?)
    );
    drop(held);
    println!("tearing the lab down (namespaces, XDP programs, pins)");
    drop(lab);
    println!("done.");
    Ok(())
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}
