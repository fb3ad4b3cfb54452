//! An active/standby pair of balancers under real keepalived (VRRPv3, advert_int 0.1 s), with
//! continuous real TCP through the VIP: a fresh connection every 30 ms, six long-lived
//! conversations and two endless downloads (lab/traffic.rs).
//!
//! What must hold, in DR and in two-arm NAT: pulling the active node's cable moves the VIP
//! (and for NAT the reals' gateway) to the standby, which forwards at once; plugging it back
//! returns mastership to it only after its checks have risen again; an operator taking a node
//! out of service (keepalived stopped, `xdplb down`) moves it too. Through all of it no fresh
//! connection fails, every long-lived connection keeps its real without an error and no
//! download breaks. Also: a keepalived crash on the active node, a DICOM association across a
//! takeover and a failback, and the packaged keepalived examples being what the lab runs.
//!
//! Each test prints its measurements as `pair: ...` lines (`--nocapture` to see them on a
//! pass); `XDPLB_PAIR_LOGS=1` prints both keepalived logs too.

use std::{
    collections::HashMap,
    path::Path,
    process::Stdio,
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use xdplb_lab::lab::{
    Daemon, KeepalivedConfig, Node, PAIR_VIP, PairLab, Traffic, TrafficConfig, XdplbPaths, dicom,
};

/// The lab tests here run one at a time even when the harness runs tests in parallel: with
/// adverts every 100 ms on a small machine, two pairs at once would measure each other.
static ONE_LAB: Mutex<()> = Mutex::new(());

fn one_lab() -> MutexGuard<'static, ()> {
    ONE_LAB
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Time with traffic on one node before the next event.
const DWELL: Duration = Duration::from_secs(3);

fn status(lab: &PairLab, node: Node) -> Result<Value> {
    let out = lab.node(node).ctl(&["status", "--json"])?;
    ensure!(
        out.status.success(),
        "xdplb status on {node}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// NAT flows `node` has adopted from the reals' replies.
fn adopted(lab: &PairLab, node: Node) -> Result<u64> {
    Ok(status(lab, node)?["nat_flows_adopted"]
        .as_u64()
        .unwrap_or(0))
}

/// Whether `node`'s controller says it holds the service's VIP.
fn vip_held(lab: &PairLab, node: Node) -> Result<bool> {
    Ok(status(lab, node)?["services"][0]["vip_held"] == true)
}

/// Waits until `node` is master, checking all along that it never holds a floating address
/// while its own tables lack a real (a node must not take mastership with its checks down).
fn wait_for_failback(lab: &PairLab, node: Node, timeout: Duration) -> Result<Duration> {
    let start = Instant::now();
    loop {
        if lab.held(node)? > 0 {
            let complete = lab.node(node).all_reals_in_live_tables()?;
            let (ready, said) = lab.ready(node)?;
            ensure!(
                complete && ready,
                "{node} took a floating address with its tables incomplete (ready: {said})\n{}",
                lab.diagnosis()
            );
            if lab.master()? == Some(node) {
                return Ok(start.elapsed());
            }
        }
        if start.elapsed() > timeout {
            bail!(
                "{node} not master again within {timeout:?}\n{}",
                lab.diagnosis()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

struct Gaps {
    takeover: Duration,
    failback: Duration,
    operator_stop: Duration,
}

/// The whole story on a started pair (A master): traffic; A's cable pulled (B takes over and
/// forwards); A's cable plugged (A takes back over once ready); A taken out of service by an
/// operator (B takes over). Returns the client-visible gaps; fails if any exchange failed.
fn cable_pull_failback_and_stop(lab: &mut PairLab, mode: &str) -> Result<Gaps> {
    ensure!(
        status(lab, Node::A)?["policy_fingerprint"] == status(lab, Node::B)?["policy_fingerprint"],
        "the two nodes run different policies"
    );
    ensure!(vip_held(lab, Node::A)? && !vip_held(lab, Node::B)?);
    let traffic = Traffic::start(&lab.client, TrafficConfig::to(lab.vip()))?;
    std::thread::sleep(Duration::from_millis(1500));
    let a_before = lab.forwarded(Node::A)?;
    ensure!(a_before > 0, "A forwarded nothing while master");

    // A's cable is pulled: B takes over.
    let b_before = lab.forwarded(Node::B)?;
    let adopted_before = adopted(lab, Node::B)?;
    let pulled = Instant::now();
    lab.cable_pull(Node::A)?;
    let vrrp_takeover = lab.wait_for_master(Node::B, Duration::from_secs(5))?;
    std::thread::sleep(DWELL);
    let b_during = lab.forwarded(Node::B)? - b_before;
    ensure!(
        b_during > 100,
        "B forwarded only {b_during} packets while master\n{}",
        lab.diagnosis()
    );
    ensure!(vip_held(lab, Node::B)?, "B's status does not show the VIP");
    if mode == "nat" {
        // The downloads' next segments come from the reals, before any client packet: B
        // must have taken those flows over from the replies.
        let adopted = adopted(lab, Node::B)? - adopted_before;
        println!("pair: nat flows B adopted from the reals' replies at takeover: {adopted}");
        ensure!(
            adopted > 0,
            "B adopted no flow from a real's reply\n{}",
            lab.diagnosis()
        );
    }

    // A's cable is back: A takes over again once its checks have risen (and preempt_delay).
    let plugged = Instant::now();
    lab.cable_plug(Node::A)?;
    let failback_after = wait_for_failback(lab, Node::A, Duration::from_secs(20))?;
    let a_back = lab.forwarded(Node::A)?;
    std::thread::sleep(DWELL);
    let a_after = lab.forwarded(Node::A)? - a_back;
    ensure!(
        a_after > 100,
        "A forwarded only {a_after} packets after failback\n{}",
        lab.diagnosis()
    );

    // An operator takes A out of service: keepalived stopped politely, then `xdplb down`.
    let stopped = Instant::now();
    lab.take_out_of_service(Node::A)?;
    let stop_takeover = lab.wait_for_master(Node::B, Duration::from_secs(5))?;
    std::thread::sleep(DWELL);
    let report = traffic.stop();
    let summary = format!(
        "{}\n{}",
        lab.forwarding_summary(Node::A),
        lab.forwarding_summary(Node::B)
    );
    println!("{summary}");
    if std::env::var_os("XDPLB_PAIR_LOGS").is_some() {
        for node in Node::BOTH {
            println!("--- keepalived on {node}:\n{}", lab.keepalived_log(node));
        }
    }

    let gaps = Gaps {
        takeover: report.longest_gap(pulled, plugged),
        failback: report.longest_gap(plugged, stopped),
        operator_stop: report.longest_gap(stopped, report.stopped),
    };
    println!("{report}");
    println!(
        "pair: {mode} VRRP: B master {} ms after the pull; A master again {} ms after the plug; \
         B master {} ms after the operator's stop",
        vrrp_takeover.as_millis(),
        failback_after.as_millis(),
        stop_takeover.as_millis()
    );
    println!(
        "pair: {mode} takeover gap {} ms, failback gap {} ms",
        gaps.takeover.as_millis(),
        gaps.failback.as_millis()
    );
    println!(
        "pair: {mode} operator stop gap {} ms",
        gaps.operator_stop.as_millis()
    );
    println!(
        "pair: {mode} longest wait on one long-lived connection: takeover {} ms, failback {} ms, \
         operator stop {} ms",
        report.longest_wait(pulled, plugged).as_millis(),
        report.longest_wait(plugged, stopped).as_millis(),
        report.longest_wait(stopped, report.stopped).as_millis()
    );
    ensure!(
        report.fresh_failed().is_empty(),
        "{} of {} fresh connections failed:\n{report}{summary}",
        report.fresh_failed().len(),
        report.fresh.len()
    );
    ensure!(
        report.all_long_lived_intact(),
        "a long-lived connection broke or moved:\n{report}{summary}"
    );
    ensure!(
        report.all_downloads_intact(),
        "a download broke:\n{report}{summary}"
    );
    ensure!(report.fresh_ok() > 300, "too little traffic:\n{report}");
    Ok(gaps)
}

#[test]
fn dr_pair_survives_cable_pull_and_failback() -> Result<()> {
    let _one = one_lab();
    let mut lab = PairLab::dr(3, &[104])?;
    let policy = lab.policy();
    lab.start(&policy)?;
    let gaps = cable_pull_failback_and_stop(&mut lab, "dr")?;
    // With advert_int 0.1 s the VIP moves within about 0.35 s; the client's retransmissions
    // (200 ms, then doubling) make what it sees longer, but well under the 3 s timeouts.
    ensure!(
        gaps.takeover < Duration::from_millis(2500),
        "takeover gap {:?}",
        gaps.takeover
    );
    Ok(())
}

/// keepalived on the active node crashes (SIGKILL of both its processes): the VIP stays on
/// A, whose data plane keeps forwarding; B takes over when the adverts stop and its gratuitous
/// ARPs move the clients. keepalived started again on A removes the stale VIP, and A takes
/// over again after preempt_delay. Nothing is lost.
#[test]
fn dr_pair_survives_a_keepalived_crash() -> Result<()> {
    let _one = one_lab();
    let mut lab = PairLab::dr(2, &[104])?;
    let policy = lab.policy();
    lab.start(&policy)?;
    let traffic = Traffic::start(&lab.client, TrafficConfig::to(lab.vip()))?;
    std::thread::sleep(Duration::from_secs(1));

    let crashed = Instant::now();
    let pids = lab.keepalived(Node::A)?.pids();
    ensure!(pids.len() == 2, "keepalived is not two processes: {pids:?}");
    lab.keepalived(Node::A)?.crash()?;
    for pid in &pids {
        ensure!(
            !Path::new(&format!("/proc/{pid}/cmdline")).exists()
                || std::fs::read(format!("/proc/{pid}/cmdline"))?.is_empty(),
            "keepalived process {pid} survived the crash"
        );
    }
    // B takes over; A keeps the address it had (nobody removed it).
    let deadline = Instant::now() + Duration::from_secs(5);
    while lab.held(Node::B)? == 0 {
        ensure!(
            Instant::now() < deadline,
            "B did not take over\n{}",
            lab.diagnosis()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    ensure!(lab.held(Node::A)? == 1, "the crashed node's VIP went away");
    std::thread::sleep(Duration::from_secs(2));

    let restarted = Instant::now();
    lab.start_keepalived(Node::A)?;
    let failback = wait_for_failback(&lab, Node::A, Duration::from_secs(15))?;
    std::thread::sleep(Duration::from_secs(2));
    let report = traffic.stop();
    println!("{report}");
    println!(
        "pair: keepalived crash gap {} ms; restarted, A master again after {} ms, gap {} ms",
        report.longest_gap(crashed, restarted).as_millis(),
        failback.as_millis(),
        report.longest_gap(restarted, report.stopped).as_millis()
    );
    ensure!(
        report.fresh_failed().is_empty()
            && report.all_long_lived_intact()
            && report.all_downloads_intact(),
        "traffic was lost:\n{report}"
    );
    Ok(())
}

/// Two-arm NAT. Two things a newly active node has to get right, both found with this lab:
/// - It has no neighbour entry for the client (the client never ARPs for the VIP again:
///   keepalived's gratuitous ARPs moved it), so its first translated replies go to the kernel
///   for resolution with the VIP, one of its own addresses, as source: xdplb sets
///   `accept_local` for NAT, else the kernel drops them.
/// - It has no NAT entries for the flows established through its peer, and a real's segment
///   (a download's next one) reaches it before any packet of the client's: the flow is
///   adopted from the reply (lb-ebpf/src/nat_reply.rs), else it would leave untranslated and
///   the connection break.
#[test]
fn nat_pair_survives_cable_pull_and_failback() -> Result<()> {
    let _one = one_lab();
    let mut lab = PairLab::nat(3)?;
    let policy = lab.policy();
    lab.start(&policy)?;
    cable_pull_failback_and_stop(&mut lab, "nat")?;
    Ok(())
}

/// A modality's association through the DR pair's VIP stays up while the active node's cable
/// is pulled, and while it is plugged back and takes over again: every instance is
/// acknowledged and stored exactly once.
#[test]
fn dicom_association_survives_failover() -> Result<()> {
    let _one = one_lab();
    // No `who` servers: the reals run storescp on the service's port.
    let mut lab = PairLab::dr(2, &[])?;
    lab.ports = vec![104];
    let dir = lab.node(Node::A).work_dir.join("dicom");
    let mut archives = Vec::new();
    let mut outputs = Vec::new();
    for (ns, _, name) in &lab.reals {
        let output = dir.join(name);
        std::fs::create_dir_all(&output)?;
        // One process per association (--fork), so health checks are answered while a store
        // is under way; each store takes 3 s (--sleep-during sleeps 1 s at each of its three
        // progress steps), so one association spans the takeover and the failback. Unique file
        // names: an instance stored twice leaves two files.
        archives.push(Daemon::start(
            ns,
            104,
            "storescp",
            &[
                "--fork",
                "--sleep-during",
                "1",
                "+uf",
                "-od",
                output.to_str().unwrap(),
                "104",
            ],
        )?);
        outputs.push(output);
    }
    let policy = lab.policy();
    lab.start(&policy)?;
    let files_dir = dir.join("send");
    std::fs::create_dir_all(&files_dir)?;
    let sent = dicom::instances(&files_dir, 77, 5)?;

    let sending = Instant::now();
    let mut storescu = lab
        .client
        .command("storescu")
        .args([
            "-aec", "STORESCP", "-aet", "MODALITY", "-to", "5", "-ta", "5",
        ])
        .args(["-td", "10", "-v"])
        .arg(PAIR_VIP.to_string())
        .arg("104")
        .args(sent.iter().map(|(f, _)| f))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(2500));
    ensure!(
        storescu.try_wait()?.is_none(),
        "the association ended before the failover"
    );
    lab.cable_pull(Node::A)?;
    lab.wait_for_master(Node::B, Duration::from_secs(5))?;
    std::thread::sleep(Duration::from_secs(1));
    lab.cable_plug(Node::A)?;
    wait_for_failback(&lab, Node::A, Duration::from_secs(20))?;
    ensure!(
        storescu.try_wait()?.is_none(),
        "the association ended before the failback"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while storescu.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = storescu.kill();
            bail!("storescu did not finish within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = storescu.wait_with_output()?;
    let took = sending.elapsed();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success(),
        "storescu failed across the failover ({}):\n{said}\n{}",
        out.status,
        lab.diagnosis()
    );
    drop(archives);
    let mut counts = HashMap::new();
    let mut per_real = Vec::new();
    for output in &outputs {
        let before: usize = counts.values().sum();
        dicom::stored_uids(output, &mut counts)?;
        per_real.push(counts.values().sum::<usize>() - before);
    }
    for (_, uid) in &sent {
        let n = counts.get(uid).copied().unwrap_or(0);
        ensure!(n == 1, "instance {uid} stored {n} times: {counts:?}");
    }
    ensure!(
        counts.len() == sent.len(),
        "unexpected instances: {counts:?}"
    );
    println!(
        "pair: dicom association of {} instances across A's cable pull and failback: each \
         stored once (per real {per_real:?}), in {} ms",
        sent.len(),
        took.as_millis()
    );
    Ok(())
}

/// The packaged keepalived examples are what the lab runs, with the production paths.
#[test]
fn packaged_keepalived_configs_are_the_labs() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let paths = XdplbPaths::production();
    let vip = PAIR_VIP.to_string();
    let configs = [
        (
            "keepalived-dr.conf",
            KeepalivedConfig::dr(Node::A, &paths, "eth0", &vip),
        ),
        (
            "keepalived-nat.conf",
            KeepalivedConfig::nat(Node::A, &paths, ("eth0", &vip), ("eth1", "198.19.0.1/24")),
        ),
    ];
    for (name, config) in configs {
        let file = root.join("packaging/keepalived").join(name);
        let rendered = config.render();
        if std::env::var_os("XDPLB_WRITE_PACKAGING").is_some() {
            std::fs::write(&file, &rendered)?;
        }
        let packaged = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        ensure!(
            packaged == rendered,
            "{} differs from what the lab runs; regenerate with XDPLB_WRITE_PACKAGING=1 \
             cargo test -p xdplb-tests --test lab_pair packaged",
            file.display()
        );
    }
    Ok(())
}
