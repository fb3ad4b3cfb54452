//! A SYN flood from over a million spoofed sources against a DR VIP, through the real XDP
//! program, while real clients hold long-lived connections and open fresh ones.
//!
//! Without a defence the flood fills the connection table (an LRU) with a million entries of
//! flows that never complete. The kernel's LRU evicts first what was not used since its last
//! rotation, so a connection that keeps sending survives a short flood, but an idle one
//! (a DICOM association between studies) is evicted in a long one and, if the reals changed
//! meanwhile, rescheduled and reset. With the defence (lb_common::flood) the flood's SYNs
//! leave no entries at all: the test checks that, then changes the reals and checks that
//! every long-lived connection stays on its real and that fresh connections never failed.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use xdplb::dataplane::maps::Maps;
use xdplb_lab::lab::{
    Conversation, DrLab, FLOOD_INTERFACE, FLOOD_SOURCES, LabConfig, SynFlood, VIP,
};

const PORT: u16 = 104;
const LONG_LIVED: usize = 12;
/// SYNs the data plane must have forwarded (each from another spoofed source) before the
/// flood stops: more than the connection table holds (1,048,576).
const FLOOD_SYNS: u64 = 1_100_000;

/// The lab's DR policy over the first `reals` reals, with the flood's veth as a second
/// client-facing interface.
fn policy(lab: &DrLab, reals: usize) -> String {
    let mut text = format!(
        "interfaces:\n  - name: eth0\n    xdp_mode: driver\n  - name: {FLOOD_INTERFACE}\n    xdp_mode: driver\nservices:\n  - name: dicom\n    vip: {VIP}\n    ports: [{PORT}]\n    protocol: tcp\n    forwarding: dr\n    health:\n      check: tcp\n      interval: 1s\n      timeout: 1s\n    reals:\n"
    );
    for (_, addr, _) in lab.reals.iter().take(reals) {
        text += &format!("      - address: {addr}\n");
    }
    text
}

#[test]
fn a_syn_flood_from_a_million_spoofed_sources_breaks_no_connection() -> Result<()> {
    let mut lab = DrLab::build(&LabConfig {
        reals: 3,
        ports: vec![PORT],
    })?;
    let flood = SynFlood::new(&lab.prefix, &lab.balancer.ns, VIP, PORT)?;
    lab.balancer.start(&policy(&lab, 2))?;

    let mut held = Vec::new();
    for i in 0..LONG_LIVED {
        let mut conversation = Conversation::open(&lab.client, lab.vip(PORT))
            .with_context(|| format!("long-lived connection {i}"))?;
        let real = conversation.who()?;
        held.push((conversation, real));
    }

    // Fresh connections all along, one every 50 ms, each given a few seconds.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let fresh = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let vip = lab.vip(PORT);
        lab.client.spawn(move || {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match Conversation::open_here(vip).and_then(|mut c| c.who()) {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        errors.push(format!("{e:#}"));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                std::thread::sleep(Duration::from_millis(50));
            }
            errors
        })?
    };

    // The flood, until the data plane has forwarded more spoofed SYNs than the table holds.
    let started = Instant::now();
    let generated = flood.run(Duration::from_secs(120), || {
        flood.forwarded().unwrap_or_default() >= FLOOD_SYNS
    })?;
    let flood_secs = started.elapsed().as_secs_f64();
    let forwarded = flood.forwarded()?;
    let stats = lab.balancer.stats()?;
    eprintln!(
        "flood: {generated} SYNs generated ({FLOOD_SOURCES} distinct sources in turn), {forwarded} forwarded by xdplb in {flood_secs:.1} s ({:.2} Mpps absorbed), {} left untracked",
        forwarded as f64 / flood_secs / 1e6,
        stats.untracked
    );
    ensure!(
        forwarded >= FLOOD_SYNS,
        "the flood did not get through: only {forwarded} SYNs forwarded\n{}",
        lab.balancer.log()
    );
    let entries = Maps::open_pinned(&lab.balancer.pin_dir)?
        .flows
        .keys()
        .count();
    ensure!(
        entries < 10_000,
        "the flood left {entries} entries in the connection table"
    );

    // Change the reals: a flow without its entry would now be rescheduled.
    lab.balancer.reload(&policy(&lab, 3))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !lab.balancer.all_reals_in_live_tables()? {
        ensure!(Instant::now() < deadline, "the third real never came up");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Fresh connections go on a little longer, with the third real in the table.
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let errors = fresh.join().expect("fresh connections thread");

    for (i, (conversation, real)) in held.iter_mut().enumerate() {
        let now = conversation
            .who()
            .with_context(|| format!("long-lived connection {i} (on {real}) broke"))?;
        assert_eq!(&now, real, "long-lived connection {i} moved");
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("fresh connections during the flood and the change: {ok} ok, {failed} failed");
    assert_eq!(failed, 0, "fresh connections failed: {errors:?}");
    assert!(ok >= 20, "only {ok} fresh connections were tried");
    let table = lab.balancer.status_table()?;
    assert!(
        table.contains("flood defence"),
        "status shows the defence:\n{table}"
    );
    Ok(())
}
