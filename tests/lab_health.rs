//! Health checks and scheduling semantics end to end: the real `xdplb run` in a DR namespace
//! lab checks real servers and rewrites the maps; real TCP connections show what a user sees.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use anyhow::{Result, ensure};
use xdplb_lab::lab::{Conversation, DrLab, LabConfig, VIP, who};

const INTERVAL_MS: u64 = 500;
const FALL: u64 = 2;
const RISE: u64 = 2;

/// One DR service on port 104 over the lab's reals, checked by TCP connect every 500 ms.
/// `reals[i]` = (weight, backup) of real i.
fn policy(lab: &DrLab, scheduler: &str, reals: &[(u16, bool)]) -> String {
    policy_with(lab, &[104], &format!("    scheduler: {scheduler}\n"), reals)
}

/// As `policy`, with other ports and `extra` service keys (indented by 4).
fn policy_with(lab: &DrLab, ports: &[u16], extra: &str, reals: &[(u16, bool)]) -> String {
    let ports = ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let mut text = format!(
        "interfaces:\n  - name: eth0\n    xdp_mode: driver\nservices:\n  - name: dicom\n    vip: {VIP}\n    ports: [{ports}]\n    protocol: tcp\n    forwarding: dr\n{extra}    health:\n      check: tcp\n      interval: {INTERVAL_MS}ms\n      timeout: 300ms\n      rise: {RISE}\n      fall: {FALL}\n    reals:\n"
    );
    for ((_, addr, _), (weight, backup)) in lab.reals.iter().zip(reals) {
        text += &format!(
            "      - address: {addr}\n        weight: {weight}\n        backup: {backup}\n"
        );
    }
    text
}

fn lab(reals: usize) -> Result<DrLab> {
    DrLab::build(&LabConfig {
        reals,
        ports: vec![104],
    })
}

/// `n` new connections; who answered each (an error text for a failed one).
fn spread(lab: &DrLab, n: usize) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        let name = who(&lab.client, lab.vip(104)).unwrap_or_else(|e| format!("failed: {e}"));
        *seen.entry(name).or_default() += 1;
    }
    seen
}

/// Polls with new connections until `pred` holds for 20 in a row; returns how long it took.
fn until(lab: &DrLab, limit: Duration, pred: impl Fn(&str) -> bool) -> Result<Duration> {
    let start = Instant::now();
    let mut streak = 0;
    let mut settled = start.elapsed();
    while streak < 20 {
        ensure!(
            start.elapsed() < limit,
            "not settled within {limit:?}; last answers: {:?}",
            spread(lab, 10)
        );
        let answer = who(&lab.client, lab.vip(104)).unwrap_or_else(|e| format!("failed: {e}"));
        if pred(&answer) {
            if streak == 0 {
                settled = start.elapsed();
            }
            streak += 1;
        } else {
            streak = 0;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(settled)
}

#[test]
fn a_stopped_service_leaves_fast_its_flows_only_move_and_it_rejoins() -> Result<()> {
    let mut lab = lab(3)?;
    lab.balancer
        .start(&policy(&lab, "maglev", &[(100, false); 3]))?;

    // Established flows (study transfers) on every real.
    let mut held: Vec<(String, Conversation)> = Vec::new();
    for _ in 0..30 {
        let mut c = Conversation::open(&lab.client, lab.vip(104))?;
        held.push((c.who()?, c));
    }
    for (_, _, name) in &lab.reals {
        ensure!(
            held.iter().any(|(n, _)| n == name),
            "{name} holds no connection"
        );
    }

    // real-1's service stops: new connections must avoid it within interval × fall + 1 s.
    lab.stop_service(0);
    let limit = Duration::from_millis(INTERVAL_MS * FALL + 1000);
    let detected = until(&lab, limit + Duration::from_secs(2), |a| {
        a == "real-2" || a == "real-3"
    })?;
    ensure!(
        detected <= limit,
        "new connections avoided real-1 only after {detected:?}"
    );
    let after = spread(&lab, 60);
    ensure!(
        after.keys().all(|k| k == "real-2" || k == "real-3"),
        "after detection: {after:?}"
    );
    ensure!(
        lab.balancer.log().contains("real is down"),
        "the change is logged:\n{}",
        lab.balancer.log()
    );

    // Established flows: those on real-2 and real-3 never notice; only real-1's moved.
    let mut moved = 0;
    let total = held.len();
    for (name, conn) in &mut held {
        match conn.who() {
            Ok(now) if now == *name => {}
            _ => {
                ensure!(name == "real-1", "a flow on {name} broke");
                moved += 1;
            }
        }
    }
    let on_real_1 = held.iter().filter(|(n, _)| n == "real-1").count();
    ensure!(
        moved == on_real_1,
        "{moved} moved, {on_real_1} were on real-1"
    );
    eprintln!(
        "detection: new connections avoided the stopped real after {detected:?} (limit {limit:?}); established flows moved: {moved} of {total} (real-1 had {on_real_1})"
    );

    // It comes back: new connections reach it again after `rise` successes.
    lab.start_service(0)?;
    let back = Instant::now();
    let rejoin_limit = Duration::from_millis(INTERVAL_MS * (RISE + 1) + 1000);
    loop {
        if who(&lab.client, lab.vip(104)).ok().as_deref() == Some("real-1") {
            break;
        }
        ensure!(back.elapsed() < rejoin_limit, "real-1 did not rejoin");
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "rejoin: real-1 took new connections {:?} after it came back",
        back.elapsed()
    );
    Ok(())
}

#[test]
fn drain_keeps_established_flows_and_takes_no_new_ones() -> Result<()> {
    let mut lab = lab(2)?;
    lab.balancer
        .start(&policy(&lab, "maglev", &[(100, false), (100, false)]))?;
    let mut on_real_1 = Vec::new();
    for _ in 0..20 {
        let mut c = Conversation::open(&lab.client, lab.vip(104))?;
        if c.who()? == "real-1" {
            on_real_1.push(c);
        }
    }
    ensure!(!on_real_1.is_empty());

    // Maintenance: weight 0 on real-1.
    lab.balancer
        .reload(&policy(&lab, "maglev", &[(0, false), (100, false)]))?;
    let new = spread(&lab, 40);
    ensure!(new.get("real-2") == Some(&40), "new connections: {new:?}");
    for c in &mut on_real_1 {
        ensure!(c.who()? == "real-1", "a drained real's flow moved");
    }
    // Back in service.
    lab.balancer
        .reload(&policy(&lab, "maglev", &[(100, false), (100, false)]))?;
    let new = spread(&lab, 40);
    ensure!(new.contains_key("real-1"), "undrained: {new:?}");
    Ok(())
}

#[test]
fn failover_order_and_backup_reals() -> Result<()> {
    let mut lab = lab(3)?;
    // Failover: all new flows to the first real that is up, in policy order.
    lab.balancer
        .start(&policy(&lab, "failover", &[(100, false); 3]))?;
    ensure!(spread(&lab, 20).get("real-1") == Some(&20));
    lab.stop_service(0);
    until(&lab, Duration::from_secs(5), |a| a == "real-2")?;
    lab.start_service(0)?;
    until(&lab, Duration::from_secs(5), |a| a == "real-1")?;

    // Maglev with real-3 as backup: it takes flows only when real-1 and real-2 are both down.
    lab.balancer.reload(&policy(
        &lab,
        "maglev",
        &[(100, false), (100, false), (100, true)],
    ))?;
    let normal = spread(&lab, 40);
    ensure!(!normal.contains_key("real-3"), "backup used: {normal:?}");
    lab.stop_service(0);
    lab.stop_service(1);
    until(&lab, Duration::from_secs(5), |a| a == "real-3")?;
    lab.start_service(1)?;
    until(&lab, Duration::from_secs(5), |a| a == "real-2")?;
    Ok(())
}

#[test]
fn a_persistent_client_stays_on_one_real_across_both_ports() -> Result<()> {
    let mut lab = DrLab::build(&LabConfig {
        reals: 3,
        ports: vec![104, 11112],
    })?;
    lab.balancer.start(&policy_with(
        &lab,
        &[104, 11112],
        "    persistence:\n      timeout: 600s\n",
        &[(100, false); 3],
    ))?;
    let mut seen = HashMap::new();
    for i in 0..30 {
        let port = if i % 2 == 0 { 104 } else { 11112 };
        *seen.entry(who(&lab.client, lab.vip(port))?).or_insert(0) += 1;
    }
    ensure!(seen.len() == 1, "one client, one real: {seen:?}");
    Ok(())
}

#[test]
fn the_fallback_serves_only_while_every_real_is_down() -> Result<()> {
    let mut lab = lab(3)?;
    // real-3's host is the "sorry server": the fallback, not a real.
    let fallback = lab.reals[2].1;
    lab.balancer.start(&policy_with(
        &lab,
        &[104],
        &format!("    fallback: {fallback}\n"),
        &[(100, false), (100, false)],
    ))?;
    let normal = spread(&lab, 20);
    ensure!(!normal.contains_key("real-3"), "fallback used: {normal:?}");
    lab.stop_service(0);
    lab.stop_service(1);
    until(&lab, Duration::from_secs(5), |a| a == "real-3")?;
    let mut on_fallback = Conversation::open(&lab.client, lab.vip(104))?;
    ensure!(on_fallback.who()? == "real-3");
    lab.start_service(0)?;
    until(&lab, Duration::from_secs(5), |a| a == "real-1")?;
    ensure!(
        on_fallback.who()? == "real-3",
        "a flow on the fallback keeps it"
    );
    Ok(())
}
