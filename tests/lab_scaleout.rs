//! Several active balancers behind an ECMP router, announced over BGP by real BIRD 2
//! (`vip_announcement: bgp`, lab/scaleout.rs): three balancers, three DR reals answering
//! through the router, a client behind the router with continuous real TCP to the VIP (a
//! fresh connection every 30 ms, six long-lived conversations and two endless downloads,
//! lab/traffic.rs).
//!
//! What must hold: every balancer forwards a share of the new connections; one balancer's
//! cable pulled (the router notices through BFD), plugged back (it is announced again once its
//! checks have brought its reals back), another taken out with `xdplb down` (withdrawn, then
//! forwarding 2 s more): no fresh connection fails, every long-lived connection keeps its real
//! without an error, although the router's plain multipath hash moves flows between balancers
//! at each change. A service whose reals are all down on one balancer is withdrawn from the
//! router through that balancer only. And the packaged BIRD examples are what the lab runs.
//!
//! Each test prints its measurements as `scaleout: ...` lines (`--nocapture` to see them on a
//! pass): the router's convergence per event (from the event to the change of its kernel
//! route), what clients saw, the balancers' shares. `XDPLB_SCALEOUT_LOGS=1` prints the BIRD
//! logs too.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::Path,
    process::Stdio,
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use xdplb_lab::lab::{
    BirdLog, SCALEOUT_PORT, SCALEOUT_VIP, SECOND_VIP, ScaleoutLab, Traffic, TrafficConfig,
    TrafficReport, balancer_protocol, xdplb_binary,
};

/// The lab tests here run one at a time even when the harness runs tests in parallel: BFD at
/// 100 ms and three balancers on a small machine, two labs at once would measure each other.
static ONE_LAB: Mutex<()> = Mutex::new(());

fn one_lab() -> MutexGuard<'static, ()> {
    ONE_LAB
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Time with traffic after each event before the next.
const DWELL: Duration = Duration::from_secs(3);

/// New flows per balancer between successive phases (`None`: its data plane is gone).
struct Shares {
    last: Vec<Option<u64>>,
    phases: Vec<(String, Vec<Option<u64>>)>,
}

impl Shares {
    fn new(lab: &ScaleoutLab) -> Shares {
        Shares {
            last: counts(lab),
            phases: Vec::new(),
        }
    }

    /// Closes a phase: the new flows each balancer scheduled since the last one.
    fn phase(&mut self, lab: &ScaleoutLab, name: &str) -> Vec<Option<u64>> {
        let now = counts(lab);
        let delta: Vec<Option<u64>> = now
            .iter()
            .zip(&self.last)
            .map(|(now, last)| Some(now.as_ref()? - last.unwrap_or(0)))
            .collect();
        self.last = now;
        self.phases.push((name.into(), delta.clone()));
        delta
    }

    fn print(&self) {
        for (name, flows) in &self.phases {
            let total: u64 = flows.iter().flatten().sum();
            let parts: Vec<String> = flows
                .iter()
                .enumerate()
                .map(|(i, f)| match f {
                    Some(f) => format!(
                        "lb-{} {f} ({:.0}%)",
                        i + 1,
                        100.0 * *f as f64 / total.max(1) as f64
                    ),
                    None => format!("lb-{} down", i + 1),
                })
                .collect();
            println!("scaleout: new flows {name}: {}", parts.join(", "));
        }
    }
}

fn counts(lab: &ScaleoutLab) -> Vec<Option<u64>> {
    (0..lab.balancers.len())
        .map(|i| lab.new_flows(i).ok())
        .collect()
}

/// For each long-lived connection and download to `to` (by client end): the balancers whose
/// connection table has it (that have carried it), added to `seen`.
fn record_paths(
    lab: &ScaleoutLab,
    to: SocketAddr,
    locals: &[SocketAddr],
    seen: &mut BTreeMap<SocketAddr, Vec<usize>>,
) -> Result<()> {
    for &local in locals {
        let on = seen.entry(local).or_default();
        for i in 0..lab.balancers.len() {
            if !on.contains(&i) && lab.has_flow(i, local, to).unwrap_or(false) {
                on.push(i);
            }
        }
        on.sort();
    }
    Ok(())
}

/// Prints which balancers carried each long-lived connection and download, and on which
/// real it stayed; returns how many were carried by more than one balancer.
fn print_paths(report: &TrafficReport, paths: &BTreeMap<SocketAddr, Vec<usize>>) -> usize {
    for (local, on) in paths {
        let real = report
            .long
            .iter()
            .find(|l| l.local == Some(*local))
            .map(|l| l.real.clone())
            .or_else(|| {
                report
                    .downloads
                    .iter()
                    .find(|d| d.local == Some(*local))
                    .map(|d| d.real.clone())
            })
            .unwrap_or_default();
        println!(
            "scaleout: long-lived {local} on {real}: carried by balancers {:?}",
            on.iter().map(|i| i + 1).collect::<Vec<_>>()
        );
    }
    paths.values().filter(|on| on.len() > 1).count()
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

fn ensure_no_loss(report: &TrafficReport, lab: &ScaleoutLab) -> Result<()> {
    ensure!(
        report.fresh_failed().is_empty(),
        "{} of {} fresh connections failed:\n{report}{}",
        report.fresh_failed().len(),
        report.fresh.len(),
        lab.diagnosis()
    );
    ensure!(
        report.all_long_lived_intact(),
        "a long-lived connection broke or moved:\n{report}{}",
        lab.diagnosis()
    );
    ensure!(
        report.all_downloads_intact(),
        "a download broke:\n{report}{}",
        lab.diagnosis()
    );
    Ok(())
}

/// The whole story on three balancers: shares; lb-1's cable pulled and plugged back; lb-2
/// taken out with `xdplb down`. No connection may fail or move to another real.
#[test]
fn three_balancers_share_and_keep_every_connection_through_pull_return_and_down() -> Result<()> {
    let _one = one_lab();
    let mut lab = ScaleoutLab::build(3, 3)?;
    let policy = lab.policy();
    let start = Instant::now();
    lab.start(&policy)?;
    println!(
        "scaleout: 3 balancers serving, BGP up and both VIPs via all three {} ms after start",
        ms(start.elapsed())
    );
    let traffic = Traffic::start(lab.client(), TrafficConfig::to(lab.vip()))?;
    let locals = traffic.long_lived_locals().to_vec();
    let mut shares = Shares::new(&lab);
    let mut paths = BTreeMap::new();
    std::thread::sleep(DWELL);
    let all = shares.phase(&lab, "with all three");
    record_paths(&lab, lab.vip(), &locals, &mut paths)?;
    let total: u64 = all.iter().flatten().sum();
    for (i, flows) in all.iter().enumerate() {
        let flows = flows.context("a balancer's data plane is gone")?;
        ensure!(
            flows * 10 >= total,
            "balancer {} scheduled only {flows} of {total} new flows\n{}",
            i + 1,
            lab.diagnosis()
        );
    }

    // lb-1's cable is pulled: the router notices through BFD and drops it as a next hop.
    let pulled = Instant::now();
    lab.set_cable(0, false)?;
    let pull_converged = lab.wait_for_next_hops(SCALEOUT_VIP, &[1, 2], Duration::from_secs(5))?;
    std::thread::sleep(DWELL);
    let during = shares.phase(&lab, "with lb-1's cable pulled");
    ensure!(
        during[1].unwrap_or(0) > 0 && during[2].unwrap_or(0) > 0,
        "lb-2 and lb-3 did not take the traffic: {during:?}\n{}",
        lab.diagnosis()
    );
    // Cut off from the reals, lb-1 has marked them down and withdrawn its VIPs itself.
    ensure!(
        !lab.vip_on_lo(0, SCALEOUT_VIP)?,
        "lb-1 still holds the VIP on lo without a real\n{}",
        lab.diagnosis()
    );
    record_paths(&lab, lab.vip(), &locals, &mut paths)?;

    // Plugged back: announced again once its checks have brought the reals back.
    let plugged = Instant::now();
    lab.set_cable(0, true)?;
    let plug_converged =
        lab.wait_for_next_hops(SCALEOUT_VIP, &[0, 1, 2], Duration::from_secs(30))?;
    let complete_at_return = lab.balancers[0].all_reals_in_live_tables()?;
    std::thread::sleep(DWELL);
    let back = shares.phase(&lab, "with lb-1 back");
    ensure!(
        back[0].unwrap_or(0) > 0,
        "lb-1 scheduled no new flow after its return: {back:?}\n{}",
        lab.diagnosis()
    );
    record_paths(&lab, lab.vip(), &locals, &mut paths)?;

    // An operator takes lb-2 out: `xdplb down` withdraws its VIPs, forwards 2 s more, detaches.
    let downed = Instant::now();
    let lb2 = &lab.balancers[1];
    let down = lb2
        .ns
        .command(xdplb_binary()?.to_str().context("xdplb path")?)
        .args(["down", "--pin-dir"])
        .arg(&lb2.pin_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let (mut withdrawn, mut detached) = (None, None);
    while detached.is_none() && downed.elapsed() < Duration::from_secs(15) {
        if withdrawn.is_none() && lab.next_hops(SCALEOUT_VIP)? == [0, 2] {
            withdrawn = Some(downed.elapsed());
        }
        if !lb2.xdp_attached("eth0")? {
            detached = Some(downed.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = down.wait_with_output()?;
    ensure!(
        out.status.success(),
        "xdplb down on lb-2: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let withdrawn = withdrawn.with_context(|| {
        format!(
            "the router still routed via lb-2 when its data plane was detached\n{}",
            lab.diagnosis()
        )
    })?;
    let detached = detached.context("lb-2's XDP program was never detached")?;
    std::thread::sleep(DWELL);
    shares.phase(&lab, "with lb-2 down");
    record_paths(&lab, lab.vip(), &locals, &mut paths)?;
    let report = traffic.stop();

    println!("{report}");
    shares.print();
    let crossed = print_paths(&report, &paths);
    println!(
        "scaleout: router converged: lb-1's cable pulled -> route without lb-1 after {} ms \
         (BFD); plugged -> route with lb-1 again after {} ms (its tables complete then: \
         {complete_at_return}); `xdplb down` on lb-2 -> route without lb-2 after {} ms, \
         lb-2 detached after {} ms",
        ms(pull_converged),
        ms(plug_converged),
        ms(withdrawn),
        ms(detached)
    );
    println!(
        "scaleout: clients' longest gap without a successful exchange: pull {} ms, return {} ms, \
         down {} ms; longest wait on one long-lived connection: pull {} ms, return {} ms, down \
         {} ms",
        ms(report.longest_gap(pulled, plugged)),
        ms(report.longest_gap(plugged, downed)),
        ms(report.longest_gap(downed, report.stopped)),
        ms(report.longest_wait(pulled, plugged)),
        ms(report.longest_wait(plugged, downed)),
        ms(report.longest_wait(downed, report.stopped))
    );
    println!(
        "scaleout: {} of {} long-lived connections and downloads were carried by more than one \
         balancer (the router's multipath hash moved them); failed fresh connections {}, \
         long-lived broken or moved to another real {}, downloads broken {}",
        crossed,
        paths.len(),
        report.fresh_failed().len(),
        report.long.iter().filter(|l| !l.intact()).count(),
        report.downloads.iter().filter(|d| !d.intact()).count()
    );
    if std::env::var_os("XDPLB_SCALEOUT_LOGS").is_some() {
        println!("--- router BIRD log:\n{}", lab.router_bird()?.log());
        for i in 0..lab.balancers.len() {
            println!("--- lb-{} BIRD log:\n{}", i + 1, lab.bird(i)?.log());
        }
    }
    ensure!(
        withdrawn + Duration::from_millis(1000) <= detached,
        "lb-2 stopped forwarding {} ms after the router dropped it: too close",
        ms(detached.saturating_sub(withdrawn))
    );
    ensure_no_loss(&report, &lab)?;
    ensure!(report.fresh_ok() > 300, "too little traffic:\n{report}");
    Ok(())
}

/// One balancer's reals for service `viewer` are all halted there (as when it is cut off
/// from them): that balancer withdraws the viewer's VIP, the router keeps it via the others,
/// and keeps the other VIP via all three. Connections to the viewer's VIP carry on through the
/// other balancers, on their reals.
#[test]
fn a_service_without_reals_on_one_balancer_is_withdrawn_there_only() -> Result<()> {
    let _one = one_lab();
    let mut lab = ScaleoutLab::build(3, 3)?;
    let policy = lab.policy();
    lab.start(&policy)?;
    let to = SocketAddr::from((SECOND_VIP, SCALEOUT_PORT));
    let mut config = TrafficConfig::to(to);
    config.downloads = 0;
    let traffic = Traffic::start(lab.client(), config)?;
    let locals = traffic.long_lived_locals().to_vec();
    let mut paths = BTreeMap::new();
    std::thread::sleep(Duration::from_secs(2));
    record_paths(&lab, to, &locals, &mut paths)?;

    let halted = Instant::now();
    let lb3 = &lab.balancers[2];
    for (_, address, _) in &lab.reals {
        let out = lb3.ctl(&["halt", "viewer", &address.to_string()])?;
        ensure!(
            out.status.success(),
            "xdplb halt on lb-3: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let halt_took = halted.elapsed();
    let withdrawn = lab.wait_for_next_hops(SECOND_VIP, &[0, 1], Duration::from_secs(5))?;
    ensure!(
        lab.next_hops(SCALEOUT_VIP)? == [0, 1, 2],
        "the other VIP lost a next hop\n{}",
        lab.diagnosis()
    );
    ensure!(lab.vip_on_lo(2, SCALEOUT_VIP)? && !lab.vip_on_lo(2, SECOND_VIP)?);
    let bird_routes = lab.router_bird()?.routes(&[&format!("{SECOND_VIP}/32")])?;
    println!("scaleout: the router's BIRD with viewer's reals halted on lb-3:\n{bird_routes}");
    std::thread::sleep(DWELL);

    let unhalted = Instant::now();
    for (_, address, _) in &lab.reals {
        let out = lb3.ctl(&["unhalt", "viewer", &address.to_string()])?;
        ensure!(
            out.status.success(),
            "xdplb unhalt on lb-3: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let returned = lab.wait_for_next_hops(SECOND_VIP, &[0, 1, 2], Duration::from_secs(10))?;
    std::thread::sleep(DWELL);
    record_paths(&lab, to, &locals, &mut paths)?;
    let report = traffic.stop();
    println!("{report}");
    print_paths(&report, &paths);
    println!(
        "scaleout: viewer's reals halted on lb-3 (3 commands, {} ms): the router's route to \
         {SECOND_VIP} without lb-3 after {} ms; unhalted: with lb-3 again after {} ms",
        ms(halt_took),
        ms(withdrawn),
        ms(returned)
    );
    println!(
        "scaleout: clients of {SECOND_VIP}: longest gap {} ms around the withdrawal, slowest \
         fresh connection {} ms, longest wait on one long-lived connection {} ms",
        ms(report.longest_gap(halted, unhalted)),
        ms(report.slowest_fresh()),
        ms(report.longest_wait(halted, unhalted))
    );
    ensure_no_loss(&report, &lab)?;
    Ok(())
}

/// The packaged BIRD examples are what the lab runs, logging to syslog instead of the lab's
/// log file.
#[test]
fn packaged_bird_configs_are_the_labs() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let configs = [
        (
            "bird-balancer.conf",
            ScaleoutLab::balancer_bird_config(0, BirdLog::Syslog).render(),
        ),
        (
            "bird-router.conf",
            ScaleoutLab::router_bird_config(3, BirdLog::Syslog).render(),
        ),
    ];
    for (name, rendered) in configs {
        let file = root.join("packaging/bird").join(name);
        if std::env::var_os("XDPLB_WRITE_PACKAGING").is_some() {
            std::fs::create_dir_all(file.parent().unwrap())?;
            std::fs::write(&file, &rendered)?;
        }
        let packaged = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        ensure!(
            packaged == rendered,
            "{} differs from what the lab runs; regenerate with XDPLB_WRITE_PACKAGING=1 \
             cargo test -p xdplb-tests --test lab_scaleout packaged",
            file.display()
        );
        // BIRD itself accepts it.
        let out = std::process::Command::new("bird")
            .arg("-p")
            .arg("-c")
            .arg(&file)
            .output()
            .context("running bird -p")?;
        ensure!(
            out.status.success(),
            "bird -p refused {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Blocks (or unblocks) balancer `i`'s own connections to real `r`'s service port: its health
/// checks fail, while the data plane (XDP, before netfilter) still reaches the real. An
/// nftables table per real, so each comes back on its own.
fn block_checks(lab: &ScaleoutLab, i: usize, r: usize, blocked: bool) -> Result<()> {
    let table = format!("lab_block_r{}", r + 1);
    let ns = &lab.balancers[i].ns;
    let script = if blocked {
        format!(
            "add table ip {table}; add chain ip {table} out {{ type filter hook output priority 0; }}; add rule ip {table} out ip daddr {} tcp dport {SCALEOUT_PORT} drop",
            lab.reals[r].1
        )
    } else {
        format!("delete table ip {table}")
    };
    let out = ns.command("nft").arg(&script).output()?;
    ensure!(
        out.status.success(),
        "nft {script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A balancer that lost all its reals while its BGP session stayed up announces the VIP again
/// only once a service of it has served for the settle time (rise x interval + timeout, as
/// `xdplb ready` for a pair), so the checks of its other reals have risen by then. Announced at
/// the first real's return (the defect this test found), the router moved a share of the flows
/// to it, and those whose real was not back there were scheduled to another real and reset.
///
/// Here lb-1 is first taken out of the router's route (its BIRD stopped), so that losing its
/// reals breaks nothing; its own checks to the reals are blocked (nftables on its output; the
/// data plane, before netfilter, still reaches them) until it has marked them all down and
/// withdrawn the VIP from lo; BIRD is started again (the session comes up, nothing to
/// announce); then real-1 comes back on lb-1, and real-2 and real-3 600 ms later, within the
/// settle time (2 x 500 ms + 400 ms).
#[test]
fn a_returning_balancer_announces_only_once_its_checks_have_settled() -> Result<()> {
    let _one = one_lab();
    let mut lab = ScaleoutLab::build(3, 3)?;
    let policy = lab.policy();
    lab.start(&policy)?;
    let traffic = Traffic::start(lab.client(), TrafficConfig::to(lab.vip()))?;
    std::thread::sleep(Duration::from_secs(2));
    lab.stop_bird(0);
    lab.wait_for_next_hops(SCALEOUT_VIP, &[1, 2], Duration::from_secs(5))?;
    std::thread::sleep(Duration::from_secs(1));
    for r in 0..lab.reals.len() {
        block_checks(&lab, 0, r, true)?;
    }
    let cut_off = Instant::now();
    while lab.vip_on_lo(0, SCALEOUT_VIP)? {
        ensure!(
            cut_off.elapsed() < Duration::from_secs(10),
            "lb-1 kept the VIP on lo without reals\n{}",
            lab.diagnosis()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let withdrawn = cut_off.elapsed();
    lab.start_bird(0)?;
    lab.router_bird()?
        .wait_established(&[balancer_protocol(0)], Duration::from_secs(20))?;
    std::thread::sleep(Duration::from_secs(1));

    let back = Instant::now();
    block_checks(&lab, 0, 0, false)?;
    // Until the router routes via lb-1 again: were its tables complete at that moment?
    let mut others_back = false;
    let (returned, complete) = loop {
        if !others_back && back.elapsed() >= Duration::from_millis(600) {
            for r in 1..lab.reals.len() {
                block_checks(&lab, 0, r, false)?;
            }
            others_back = true;
        }
        if lab.next_hops(SCALEOUT_VIP)? == [0, 1, 2] {
            break (back.elapsed(), lab.balancers[0].all_reals_in_live_tables()?);
        }
        ensure!(
            back.elapsed() < Duration::from_secs(10),
            "lb-1 not announced again within 10 s\n{}",
            lab.diagnosis()
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    if !others_back {
        for r in 1..lab.reals.len() {
            block_checks(&lab, 0, r, false)?;
        }
    }
    std::thread::sleep(DWELL);
    let report = traffic.stop();
    println!("{report}");
    println!(
        "scaleout: lb-1 out of the route, its checks blocked: VIP off its lo after {} ms; real-1 \
         back, then the others 600 ms later: the router routed via lb-1 again {} ms after real-1 \
         came back, lb-1's tables then {}",
        ms(withdrawn),
        ms(returned),
        if complete { "complete" } else { "PARTIAL" }
    );
    for line in lab.balancers[0].log().lines() {
        if line.contains("VIP added") || line.contains("real is up") {
            println!("scaleout: lb-1: {line}");
        }
    }
    ensure!(
        complete,
        "lb-1 was announced {} ms after its first real came back, its table still partial\n{report}",
        ms(returned)
    );
    ensure_no_loss(&report, &lab)?;
    Ok(())
}
