//! DR end to end in a namespace lab: real TCP through the real XDP program attached by the real
//! `xdplb run`, to real servers prepared by `xdplb realserver up`.

use std::collections::HashMap;

use anyhow::Result;
use xdplb_lab::lab::{Conversation, DrLab, LabConfig, dr_policy, who};

#[test]
fn dr_balances_real_tcp_connections_and_keeps_established_ones() -> Result<()> {
    let mut lab = DrLab::build(&LabConfig::default())?;
    lab.balancer.start(&dr_policy(&lab, &[104, 11112]))?;

    // A long-lived connection (a study transfer) held for the whole test.
    let mut held = Conversation::open(&lab.client, lab.vip(104)).map_err(|e| {
        anyhow::anyhow!(
            "{e}\nstats: {:?}\nlog:\n{}",
            lab.balancer.stats(),
            lab.balancer.log()
        )
    })?;
    let held_real = held.who()?;

    let mut answers: HashMap<String, usize> = HashMap::new();
    for i in 0..240 {
        let port = if i % 2 == 0 { 104 } else { 11112 };
        let real = who(&lab.client, lab.vip(port))
            .map_err(|e| anyhow::anyhow!("connection {i} to port {port} failed: {e}"))?;
        *answers.entry(real).or_default() += 1;
        if i % 60 == 0 {
            assert_eq!(
                held.who()?,
                held_real,
                "the held connection moved to another real"
            );
        }
    }
    assert_eq!(
        answers.values().sum::<usize>(),
        240,
        "every connection succeeded"
    );
    for (_, _, name) in &lab.reals {
        let got = answers.get(name).copied().unwrap_or(0);
        assert!(
            got >= 30,
            "{name} got {got} of 240 connections: {answers:?}"
        );
    }
    assert_eq!(
        held.who()?,
        held_real,
        "the held connection kept its real to the end"
    );

    // The client reached the VIP through the balancer's MAC (the reals never answered ARP).
    assert_eq!(lab.client_mac_for_vip()?, Some(lab.balancer.mac("eth0")?));

    // A second controller for the same pin directory refuses, and the first keeps working.
    let policy_file = lab.balancer.work_dir.join("policy.yaml");
    let second = lab
        .balancer
        .ns
        .command(xdplb_lab::lab::xdplb_binary()?.to_str().unwrap())
        .args(["run", "--metrics-listen", "off", "--config"])
        .arg(&policy_file)
        .arg("--pin-dir")
        .arg(&lab.balancer.pin_dir)
        .output()?;
    assert!(!second.status.success(), "a second run must refuse");
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("already active"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert_eq!(held.who()?, held_real);

    // Each real was handed its flows by XDP: its counters saw them.
    let stats = lab.balancer.stats()?;
    for real in &stats.reals {
        assert!(
            real.counters.new_flows >= 30,
            "real {} counted {:?}",
            real.address,
            real.counters
        );
    }
    Ok(())
}

#[test]
fn realserver_up_is_idempotent_and_down_restores() -> Result<()> {
    let lab = DrLab::build(&LabConfig {
        reals: 1,
        ports: vec![],
    })?;
    let (ns, _, _) = &lab.reals[0];
    let bin = xdplb_lab::lab::xdplb_binary()?;
    let xdplb = |args: &[&str]| ns.command(bin.to_str().unwrap()).args(args).output();
    let vip = xdplb_lab::lab::VIP.to_string();
    // `build` ran `up` once; a second `up` changes nothing and `check` is happy.
    let again = xdplb(&["realserver", "up", "--vip", &vip, "--interface", "eth0"])?;
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("already on lo"));
    assert!(
        xdplb(&["realserver", "check", "--vip", &vip, "--interface", "eth0"])?
            .status
            .success()
    );
    assert!(
        ns.ip(&["addr", "show", "dev", "lo"])?
            .contains(&format!("{vip}/32"))
    );

    let down = xdplb(&["realserver", "down", "--vip", &vip])?;
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert!(!ns.ip(&["addr", "show", "dev", "lo"])?.contains(&vip));
    let check = xdplb(&["realserver", "check", "--vip", &vip, "--interface", "eth0"])?;
    assert!(
        !check.status.success(),
        "check must fail once the VIP is gone and ARP is restored"
    );
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(
        report.contains("NOT on lo") && report.contains("arp_ignore=0"),
        "{report}"
    );
    Ok(())
}

#[test]
fn forwarding_survives_a_controller_crash_and_restart() -> Result<()> {
    let mut lab = DrLab::build(&LabConfig {
        reals: 2,
        ports: vec![104],
    })?;
    let policy = dr_policy(&lab, &[104]);
    lab.balancer.start(&policy)?;
    let mut held = Conversation::open(&lab.client, lab.vip(104))?;
    let held_real = held.who()?;

    // kill -9: nothing tidies up, the pinned program and maps keep forwarding.
    lab.balancer.kill()?;
    assert_eq!(held.who()?, held_real, "held connection after the crash");
    for i in 0..20 {
        who(&lab.client, lab.vip(104))
            .map_err(|e| anyhow::anyhow!("connection {i} while no controller runs: {e}"))?;
    }

    // A new controller adopts the pins: the held connection never moves.
    lab.balancer.start(&policy)?;
    assert!(
        lab.balancer.log().contains("took over the pinned XDP link"),
        "{}",
        lab.balancer.log()
    );
    assert_eq!(held.who()?, held_real, "held connection after the restart");
    for i in 0..40 {
        who(&lab.client, lab.vip(104))
            .map_err(|e| anyhow::anyhow!("connection {i} after the restart: {e}"))?;
    }
    Ok(())
}

#[test]
fn a_real_whose_mac_changes_is_followed() -> Result<()> {
    let mut lab = DrLab::build(&LabConfig {
        reals: 1,
        ports: vec![104],
    })?;
    lab.balancer.start(&dr_policy(&lab, &[104]))?;
    let mut held = Conversation::open(&lab.client, lab.vip(104))?;
    let name = held.who()?;
    let (real_ns, real_addr, _) = &lab.reals[0];

    // A NIC swap: new MAC, announced by gratuitous ARP (arp_notify) as hosts do.
    real_ns
        .command("sysctl")
        .args(["-qw", "net.ipv4.conf.eth0.arp_notify=1"])
        .status()?;
    let new_mac = [0x02, 0x42, 0, 0, 0, 0x99];
    let text = xdplb_lab::lab::mac_text(&new_mac);
    real_ns.ip(&["link", "set", "dev", "eth0", "address", &text])?;

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while lab.balancer.dataplane_mac(*real_addr)? != Some(new_mac) {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "data plane still has the old MAC:\n{}",
            lab.balancer.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(held.who()?, name, "the held connection follows the new MAC");
    assert_eq!(who(&lab.client, lab.vip(104))?, name);
    Ok(())
}

#[test]
fn down_detaches_unpins_and_removes_the_vips_it_added() -> Result<()> {
    let mut lab = DrLab::build(&LabConfig {
        reals: 1,
        ports: vec![104],
    })?;
    lab.balancer.start(&dr_policy(&lab, &[104]))?;
    assert!(
        lab.balancer
            .ns
            .ip(&["addr", "show", "dev", "eth0"])?
            .contains("198.18.0.100/32")
    );
    assert!(
        lab.balancer
            .ns
            .ip(&["link", "show", "dev", "eth0"])?
            .contains("prog/xdp")
    );

    let out = lab
        .balancer
        .xdplb(&["down", "--pin-dir", lab.balancer.pin_dir.to_str().unwrap()])?;
    assert!(out.contains("xdplb is down"), "{out}");
    assert!(!lab.balancer.pin_dir.exists(), "pins removed");
    assert!(
        !lab.balancer
            .ns
            .ip(&["addr", "show", "dev", "eth0"])?
            .contains("198.18.0.100"),
        "VIP removed"
    );
    let link = lab.balancer.ns.ip(&["link", "show", "dev", "eth0"])?;
    assert!(!link.contains("prog/xdp"), "XDP detached: {link}\n{out}");
    // With the balancer gone, the VIP is unreachable: nothing answers for it any more.
    assert!(who(&lab.client, lab.vip(104)).is_err());
    Ok(())
}
