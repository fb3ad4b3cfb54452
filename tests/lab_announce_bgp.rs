//! `vip_announcement: bgp` on one balancer of a DR lab, before any BGP speaker is involved:
//! what BIRD's `protocol direct` would announce is the VIP/32 on `lo`, so the test watches that
//! address. It must be there exactly while the balancer can serve, the balancer must answer no
//! ARP for it (an ECMP router reaches it by route, not by ARP), and `xdplb down` must withdraw
//! it before the data plane stops forwarding.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use xdplb_lab::lab::{BALANCER, DrLab, LabConfig, Netns, VIP, dr_policy, who, xdplb_binary};

fn vip_on(ns: &Netns, interface: &str) -> Result<bool> {
    let text = ns.ip(&["-4", "addr", "show", "dev", interface])?;
    Ok(text.contains(&format!("{VIP}/32")))
}

/// Waits up to `limit` for the VIP to be on `lo` (`wanted`) or not.
fn wait_for_vip_on_lo(ns: &Netns, wanted: bool, limit: Duration) -> Result<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if vip_on(ns, "lo")? == wanted {
            return Ok(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!(
        "the VIP was {} lo for {limit:?}",
        if wanted { "not on" } else { "still on" }
    )
}

fn sysctl(ns: &Netns, name: &str) -> Result<String> {
    let out = ns.command("sysctl").args(["-n", name]).output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn vips_are_on_lo_exactly_while_the_balancer_can_serve_and_withdrawn_before_down() -> Result<()> {
    let mut lab = DrLab::build(&LabConfig::default())?;
    let policy = format!("vip_announcement: bgp\n{}", dr_policy(&lab, &[104]));
    lab.balancer.start(&policy)?;
    let ns = &lab.balancer.ns;

    // Announced once the data plane is filled and has served for the settle time: on lo, not
    // on the client-facing interface.
    wait_for_vip_on_lo(ns, true, Duration::from_secs(15))?;
    ensure!(
        !vip_on(ns, "eth0")?,
        "the VIP must not be on eth0 in bgp mode"
    );
    ensure!(sysctl(ns, "net.ipv4.conf.eth0.arp_ignore")? == "1");
    ensure!(sysctl(ns, "net.ipv4.conf.eth0.arp_announce")? == "2");

    // Nobody answers ARP for the VIP: the reals suppress it, and so must the balancer.
    lab.client.ip(&["neigh", "flush", "all"])?;
    let _ = lab
        .client
        .command("ping")
        .args(["-c", "2", "-W", "1", &VIP.to_string()])
        .output()?;
    ensure!(
        lab.client_mac_for_vip()?.is_none(),
        "something answered ARP for the VIP: {:?}",
        lab.client_mac_for_vip()?
    );

    // Reached by route, as from an ECMP router: the balancer forwards to the reals.
    lab.client.ip(&[
        "route",
        "add",
        &format!("{VIP}/32"),
        "via",
        &BALANCER.to_string(),
    ])?;
    for i in 0..30 {
        who(&lab.client, lab.vip(104)).map_err(|e| anyhow::anyhow!("connection {i}: {e}"))?;
    }

    // No real left in the table: withdrawn within a couple of seconds; back once one returns.
    let reals: Vec<String> = lab.reals.iter().map(|(_, a, _)| a.to_string()).collect();
    for real in &reals {
        let out = lab.balancer.ctl(&["halt", "dicom", real])?;
        ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let took = wait_for_vip_on_lo(ns, false, Duration::from_secs(5))?;
    eprintln!("withdrawn {took:?} after the last real left");
    let out = lab.balancer.ctl(&["unhalt", "dicom", &reals[0]])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Announced again only once the service has served for the settle time (the default
    // check's rise 2 x interval 2 s + timeout 1 s = 5 s): a table of one real must not take
    // its share of flows while the others' checks may still be rising.
    let back = wait_for_vip_on_lo(ns, true, Duration::from_secs(15))?;
    eprintln!("announced again {back:?} after a real returned");
    ensure!(
        back >= Duration::from_millis(4500),
        "announced again after {back:?}, before the checks could settle"
    );
    who(&lab.client, lab.vip(104))?;

    // `xdplb down`: the VIP leaves lo first; the data plane keeps forwarding while the routers
    // converge, then detaches.
    let mut down = ns
        .command(xdplb_binary()?.to_str().unwrap())
        .args(["down", "--force", "--pin-dir"])
        .arg(&lab.balancer.pin_dir)
        .spawn()?;
    let start = Instant::now();
    let (mut withdrawn, mut detached) = (None, None);
    while start.elapsed() < Duration::from_secs(10) && detached.is_none() {
        let at = start.elapsed();
        if withdrawn.is_none() && !vip_on(ns, "lo")? {
            withdrawn = Some(at);
        }
        // Detached with its pins (the XDP link is pinned there).
        if withdrawn.is_some() && !lab.balancer.pin_dir.join("link-eth0").exists() {
            detached = Some(at);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = down.wait()?;
    ensure!(status.success(), "xdplb down failed");
    let (withdrawn, detached) = (
        withdrawn.ok_or_else(|| anyhow::anyhow!("the VIP was never withdrawn"))?,
        detached.ok_or_else(|| anyhow::anyhow!("XDP was never detached"))?,
    );
    eprintln!("down: withdrawn at {withdrawn:?}, detached at {detached:?}");
    ensure!(
        detached >= withdrawn + Duration::from_millis(1500),
        "the data plane stopped {:?} after the withdrawal, before the routers could converge",
        detached - withdrawn
    );
    Ok(())
}
