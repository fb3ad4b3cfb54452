//! Operating a running balancer: `xdplb status` (table and JSON), drain/undrain, reload over
//! the control socket, a metrics scrape read by the Prometheus project's own parser, and,
//! under continuous client traffic, reloads that add and remove reals, a drain and a
//! `kill -9` + restart of the controller without a single failed connection.

use std::{
    io::Write,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use xdplb_lab::lab::{Conversation, DrLab, LabConfig, VIP, who};

const PYTHON: &str = "/usr/bin/python3";

/// A DR service on port 104 over the lab reals `indices`, checked every 500 ms.
fn policy(lab: &DrLab, indices: &[usize]) -> String {
    let mut text = format!(
        "interfaces:\n  - name: eth0\n    xdp_mode: driver\nservices:\n  - name: dicom\n    vip: {VIP}\n    ports: [104]\n    protocol: tcp\n    forwarding: dr\n    health:\n      check: tcp\n      interval: 500ms\n      timeout: 300ms\n    reals:\n"
    );
    for &i in indices {
        text += &format!("      - address: {}\n", lab.reals[i].1);
    }
    text
}

fn ctl(lab: &DrLab, args: &[&str]) -> Result<String> {
    let out = lab.balancer.ctl(args)?;
    ensure!(
        out.status.success(),
        "xdplb {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn status(lab: &DrLab) -> Result<Value> {
    Ok(serde_json::from_str(&ctl(lab, &["status", "--json"])?)?)
}

fn real<'a>(status: &'a Value, address: &str) -> &'a Value {
    status["services"][0]["reals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["address"] == address)
        .unwrap_or_else(|| panic!("no real {address} in {status}"))
}

/// GETs `path` from the metrics listener inside the balancer namespace.
fn http_get(lab: &DrLab, path: &str) -> Result<String> {
    let out = lab
        .balancer
        .ns
        .command("curl")
        .args(["-sf", &format!("http://127.0.0.1:9475{path}")])
        .output()?;
    anyhow::ensure!(out.status.success(), "GET {path} failed");
    Ok(String::from_utf8(out.stdout)?)
}

/// Scrapes /metrics inside the balancer namespace and parses it with prometheus_client.
fn scrape(lab: &DrLab) -> Result<Vec<(String, Value, f64)>> {
    let text = lab
        .balancer
        .ns
        .command("curl")
        .args(["-sf", "http://127.0.0.1:9475/metrics"])
        .output()?;
    ensure!(text.status.success(), "scrape failed");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/parse_metrics.py");
    let mut parser = Command::new(PYTHON)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    parser.stdin.take().unwrap().write_all(&text.stdout)?;
    let out = parser.wait_with_output()?;
    ensure!(
        out.status.success(),
        "the Prometheus parser rejected the scrape: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&text.stdout)
    );
    let samples: Vec<(String, Value, f64)> = serde_json::from_slice(&out.stdout)?;
    Ok(samples)
}

fn sample(samples: &[(String, Value, f64)], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l[*k] == *v))
        .map(|(_, _, v)| *v)
}

#[test]
fn status_drain_reload_and_metrics() -> Result<()> {
    let mut lab = DrLab::build(&LabConfig {
        reals: 2,
        ports: vec![104],
    })?;
    lab.balancer.metrics_listen = "127.0.0.1:9475".into();
    lab.balancer.start(&policy(&lab, &[0, 1]))?;
    let mut held = Vec::new();
    while held.len() < 2 || !held.iter().any(|(n, _)| n == "real-1") {
        let mut c = Conversation::open(&lab.client, lab.vip(104))?;
        held.push((c.who()?, c));
    }

    // Status: JSON for scripts, a table for people.
    let s = status(&lab)?;
    assert_eq!(s["services"][0]["name"], "dicom");
    let r1 = real(&s, "198.18.0.11");
    assert_eq!(r1["state"], "up");
    assert_eq!(r1["check"]["kind"], "tcp");
    assert_eq!(r1["check"]["up"], true);
    assert!(r1["flows"].as_u64().unwrap() >= 1, "{r1}");
    assert!(r1["packets"].as_u64().unwrap() >= 1, "{r1}");
    let table = ctl(&lab, &["status"])?;
    // The table, then after a blank line what concerns the whole node.
    let lines: Vec<&str> = table.lines().take_while(|l| !l.is_empty()).collect();
    assert!(
        table.contains("\npolicy fingerprint "),
        "the fingerprint follows the table: {table}"
    );
    assert!(
        lines[0].starts_with("SERVICE") && lines[0].contains("STATE"),
        "{table}"
    );
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        lines[1].contains("198.18.0.11") && lines[1].contains(" up "),
        "{table}"
    );

    // Drain real-1: it says so, takes no new connections, keeps its established one; the
    // drain survives a reload.
    ctl(&lab, &["drain", "dicom", "198.18.0.11"])?;
    ctl(&lab, &["reload"])?;
    let s = status(&lab)?;
    assert_eq!(real(&s, "198.18.0.11")["state"], "drained");
    assert!(
        real(&s, "198.18.0.11")["reason"]
            .as_str()
            .unwrap()
            .contains("operator")
    );
    for _ in 0..20 {
        assert_eq!(who(&lab.client, lab.vip(104))?, "real-2");
    }
    for (name, c) in &mut held {
        assert_eq!(c.who()?, *name, "an established flow moved");
    }
    // The status page on the metrics listener: one self-contained document, and its data, the
    // same status (real-1 drained).
    let page = http_get(&lab, "/")?;
    assert!(
        page.starts_with("<!doctype html>") && page.contains("status.json"),
        "{page}"
    );
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "the page must load nothing from elsewhere"
    );
    let data: serde_json::Value = serde_json::from_str(&http_get(&lab, "/status.json")?)?;
    assert_eq!(real(&data, "198.18.0.11")["state"], "drained");
    ctl(&lab, &["undrain", "dicom", "198.18.0.11"])?;
    assert_eq!(real(&status(&lab)?, "198.18.0.11")["state"], "up");

    // A reload of a broken policy is refused with its position; nothing running changes.
    let file = lab.balancer.work_dir.join("policy.yaml");
    let good = std::fs::read_to_string(&file)?;
    std::fs::write(&file, good.replace("ports: [104]", "ports: [104, 104]"))?;
    let out = lab.balancer.ctl(&["reload"])?;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("policy.yaml:") && err.contains("twice"),
        "{err}"
    );
    std::fs::write(&file, good)?;
    assert_eq!(
        status(&lab)?["services"][0]["reals"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    who(&lab.client, lab.vip(104))?;

    // Metrics, read by Prometheus' own parser.
    let m = scrape(&lab)?;
    // Every metric the packaged Grafana dashboard queries exists in a real scrape.
    let dashboard = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../packaging/grafana/xdplb-dashboard.json"
    );
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(dashboard)?)?;
    let mut queried = Vec::new();
    for panel in dashboard["panels"].as_array().context("panels")? {
        for target in panel["targets"].as_array().context("targets")? {
            let expr = target["expr"].as_str().context("expr")?;
            for (i, _) in expr.match_indices("xdplb_") {
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                queried.push(name);
            }
        }
    }
    assert!(queried.len() >= 10, "{queried:?}");
    for name in &queried {
        assert!(
            m.iter().any(|(sample, _, _)| sample == name),
            "the dashboard queries {name}, which no scrape has"
        );
    }
    let r1 = [("service", "dicom"), ("real", "198.18.0.11")];
    assert!(sample(&m, "xdplb_real_packets_total", &r1).unwrap() >= 1.0);
    assert_eq!(sample(&m, "xdplb_real_up", &r1), Some(1.0));
    assert!(sample(&m, "xdplb_health_check_duration_seconds_count", &r1).unwrap() >= 1.0);
    assert!(
        sample(
            &m,
            "xdplb_service_forwarded_bytes_total",
            &[("service", "dicom")]
        )
        .unwrap()
            > 0.0
    );
    assert_eq!(
        sample(&m, "xdplb_reloads_total", &[("result", "refused")]),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, "xdplb_reloads_total", &[("result", "applied")]),
        Some(1.0)
    );
    assert!(
        sample(
            &m,
            "xdplb_dataplane_packets_total",
            &[("reason", "forwarded")]
        )
        .unwrap()
            > 0.0
    );
    Ok(())
}

/// One short connection from the calling thread's namespace: connect, ask, close.
fn ask_who(vip: std::net::SocketAddr) -> Result<String> {
    use std::io::{BufRead, BufReader};
    let stream = std::net::TcpStream::connect_timeout(&vip, Duration::from_secs(3))?;
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    writeln!(&stream, "who")?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    ensure!(!answer.is_empty(), "closed without an answer");
    Ok(answer.trim().to_string())
}

/// Short connections in a loop plus long-lived ones asked every 100 ms, until stopped.
struct Traffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<std::sync::Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(lab: &DrLab) -> Result<Traffic> {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        let vip = lab.vip(104);
        let mut held = Vec::new();
        for _ in 0..6 {
            let mut c = Conversation::open(&lab.client, vip)?;
            held.push((c.who()?, c));
        }
        eprintln!(
            "long-lived connections on: {:?}",
            held.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>()
        );
        // Short connections from a thread inside the client namespace.
        {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            threads.push(lab.client.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match ask_who(vip) {
                        Ok(_) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => failed.lock().unwrap().push(format!("short: {e:#}")),
                    }
                }
            })?);
        }
        // Long-lived connections, asked every 100 ms.
        {
            let (stop, failed) = (stop.clone(), failed.clone());
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for (name, c) in &mut held {
                        match c.who() {
                            Ok(now) if now == *name => {}
                            Ok(now) => failed
                                .lock()
                                .unwrap()
                                .push(format!("long-lived on {name}: moved to {now}")),
                            Err(e) => failed
                                .lock()
                                .unwrap()
                                .push(format!("long-lived on {name}: {e:#}")),
                        }
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }));
        }
        Ok(Traffic {
            stop,
            ok,
            failed,
            threads,
        })
    }

    /// Stops; returns (connections that succeeded, failures).
    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.lock().unwrap().clone(),
        )
    }
}

#[test]
fn no_connection_fails_through_reloads_a_drain_and_a_controller_restart() -> Result<()> {
    let mut lab = DrLab::build(&LabConfig {
        reals: 3,
        ports: vec![104],
    })?;
    lab.balancer.start(&policy(&lab, &[0, 1]))?;
    let traffic = Traffic::start(&lab)?;
    let pause = || std::thread::sleep(Duration::from_millis(1500));
    let started = Instant::now();

    pause();
    lab.balancer
        .reload(&policy(&lab, &[0, 1, 2]))
        .context("adding real-3")?;
    pause();
    lab.balancer
        .reload(&policy(&lab, &[1, 2]))
        .context("removing real-1")?;
    pause();
    ctl(&lab, &["drain", "dicom", "198.18.0.12"])?;
    pause();
    lab.balancer.kill()?;
    pause();
    lab.balancer
        .start(&policy(&lab, &[1, 2]))
        .context("restart after kill -9")?;
    pause();

    let (ok, failed) = traffic.finish();
    eprintln!(
        "{ok} short connections in {:?} through two reloads, a drain and a kill -9 + restart; {} failed",
        started.elapsed(),
        failed.len()
    );
    ensure!(
        failed.is_empty(),
        "failures: {failed:#?}\nlog:\n{}",
        lab.balancer.log()
    );
    ensure!(ok > 500, "too little traffic to prove anything: {ok}");
    Ok(())
}

/// `vip_announcement: none` (an active/standby pair): xdplb never adds or removes the VIP;
/// whoever holds it (keepalived) decides which node serves, and status says which.
#[test]
fn with_vip_announcement_none_the_vip_is_left_to_keepalived() -> Result<()> {
    let mut lab = DrLab::build(&LabConfig {
        reals: 2,
        ports: vec![104],
    })?;
    let pair_policy = format!("vip_announcement: none\n{}", policy(&lab, &[0, 1]));
    lab.balancer.start(&pair_policy)?;
    let has_vip = |lab: &DrLab| -> Result<bool> {
        Ok(lab
            .balancer
            .ns
            .ip(&["-o", "addr", "show", "dev", "eth0"])?
            .contains(&format!("{VIP}/32")))
    };
    ensure!(!has_vip(&lab)?, "xdplb added the VIP itself");
    let standby = status(&lab)?;
    assert_eq!(standby["services"][0]["vip_held"], false, "{standby}");
    let fingerprint = standby["policy_fingerprint"].as_str().unwrap().to_string();
    assert_eq!(fingerprint.len(), 16, "{standby}");
    assert!(
        lab.balancer
            .status_table()?
            .contains("(VIP not on this node)")
    );
    // The standby does not answer for the VIP: no connection gets through.
    ensure!(
        who(&lab.client, lab.vip(104)).is_err(),
        "the standby answered for a VIP it does not hold"
    );

    // keepalived makes this node active: it adds the VIP (and sends gratuitous ARP, which
    // the client's forgetting its failed lookup stands in for); traffic flows.
    lab.balancer
        .ns
        .ip(&["addr", "add", &format!("{VIP}/32"), "dev", "eth0"])?;
    lab.client.ip(&["neigh", "flush", "to", &VIP.to_string()])?;
    let active = status(&lab)?;
    assert_eq!(active["services"][0]["vip_held"], true, "{active}");
    assert_eq!(active["policy_fingerprint"], fingerprint.as_str());
    who(&lab.client, lab.vip(104)).context("through the active node")?;
    // A reload of the same policy, written differently, keeps the fingerprint and the VIP.
    lab.balancer
        .reload(&format!("# the pair's policy\n{pair_policy}"))?;
    assert_eq!(status(&lab)?["policy_fingerprint"], fingerprint.as_str());
    ensure!(has_vip(&lab)?, "a reload removed keepalived's VIP");
    // keepalived's track script: ready while every service has a real in its table.
    let ready = |lab: &DrLab| -> Result<(bool, String)> {
        let pins = lab.balancer.pin_dir.to_string_lossy().to_string();
        let out = lab.balancer.ctl(&["ready", "--pin-dir", &pins])?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        ))
    };
    // Ready once the node has served for the settle time (rise x interval + timeout).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (ok, said) = ready(&lab)?;
        if ok {
            ensure!(said.contains(&fingerprint), "{said}");
            break;
        }
        ensure!(
            said.contains("serving for") && Instant::now() < deadline,
            "not ready: {said}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A node whose checks see no real (cut off from the servers) is not.
    lab.stop_service(0);
    lab.stop_service(1);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (ok, said) = ready(&lab)?;
        if !ok {
            ensure!(said.contains("no real in the table of dicom"), "{said}");
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "still ready with every real down"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // When the reals come back, the node first waits for the slower checks to rise too
    // (settling), then is ready.
    lab.start_service(0)?;
    lab.start_service(1)?;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut settled = false;
    loop {
        let (ok, said) = ready(&lab)?;
        if ok {
            break;
        }
        settled |= said.contains("serving for");
        ensure!(
            Instant::now() < deadline,
            "not ready again after the reals came back: {said}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    ensure!(
        settled,
        "ready at once, without letting the other checks rise"
    );
    // Nor is a node whose controller is gone, even though its data plane still forwards.
    lab.balancer.kill()?;
    let (ok, said) = ready(&lab)?;
    ensure!(!ok && said.contains("no controller"), "{said}");
    // Restarted over its serving data plane, it is ready at once: a restart (or the unit's
    // Restart=always after a crash) must not hand the VIPs to the peer.
    lab.balancer.start(&pair_policy)?;
    let (ok, said) = ready(&lab)?;
    ensure!(ok, "not ready right after a restart: {said}");
    // `xdplb down` on the node holding keepalived's VIP is refused: its kernel would reset
    // the VIP's connections until keepalived moved it. Nothing is detached.
    let pins = lab.balancer.pin_dir.to_string_lossy().to_string();
    let out = lab.balancer.ctl(&["down", "--pin-dir", &pins])?;
    let said = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success()
            && said.contains(&VIP.to_string())
            && said.contains("Stop keepalived first"),
        "down on the active node: {said}"
    );
    ensure!(ready(&lab)?.0, "a refused `xdplb down` changed something");
    // Forced, it goes down, and leaves keepalived's address alone.
    let out = lab.balancer.ctl(&["down", "--force", "--pin-dir", &pins])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(has_vip(&lab)?, "`xdplb down` removed keepalived's VIP");
    let (_, said) = ready(&lab)?;
    ensure!(said.contains("no data plane attached"), "{said}");
    Ok(())
}

/// Operators' drains, halts and runtime weights are kept in the state file: they last across
/// reloads and a controller restart until undone, status says who and when, and the messages
/// say what the real does now.
#[test]
fn admin_state_lasts_across_restarts_until_undone() -> Result<()> {
    let mut lab = DrLab::build(&LabConfig {
        reals: 2,
        ports: vec![104],
    })?;
    // real-1 also serves a second service, for `--all`.
    let two = format!(
        "{}  - name: viewer\n    vip: 198.18.0.101\n    ports: [104]\n    protocol: tcp\n    forwarding: dr\n    reals:\n      - address: {}\n      - address: {}\n",
        policy(&lab, &[0, 1]),
        lab.reals[0].1,
        lab.reals[1].1
    );
    lab.balancer.start(&two)?;
    let (r1, r2) = (lab.reals[0].1.to_string(), lab.reals[1].1.to_string());
    let state_of = |lab: &DrLab, service: usize, address: &str| -> Result<(String, String)> {
        let s = status(lab)?;
        let real = s["services"][service]["reals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["address"] == address)
            .cloned()
            .context("no such real")?;
        Ok((
            real["state"].as_str().unwrap_or_default().to_string(),
            real["reason"].as_str().unwrap_or_default().to_string(),
        ))
    };

    // A connection on real-1, then real-1 drained in every service it serves.
    let mut held = loop {
        let mut c = Conversation::open(&lab.client, lab.vip(104))?;
        if c.who()? == "real-1" {
            break c;
        }
    };
    let said = ctl(&lab, &["drain", "--all", &r1])?;
    ensure!(
        said.contains("dicom/") && said.contains("viewer/") && said.contains("drained"),
        "{said}"
    );
    // Halt real-2 in viewer; weight 7 for real-2 in dicom.
    ctl(&lab, &["halt", "viewer", &r2])?;
    let said = ctl(&lab, &["weight", "dicom", &r2, "7"])?;
    ensure!(said.contains("weight 7"), "{said}");

    // A controller restart (kill -9 and start) keeps all of it.
    lab.balancer.kill()?;
    lab.balancer.start_synced(&two)?;
    let (state, reason) = state_of(&lab, 0, &r1)?;
    ensure!(
        state == "drained" && reason.contains("by operator"),
        "{state}: {reason}"
    );
    ensure!(state_of(&lab, 1, &r1)?.0 == "drained");
    let (state, reason) = state_of(&lab, 1, &r2)?;
    ensure!(
        state == "halted" && reason.contains("unhalt"),
        "{state}: {reason}"
    );
    let s = status(&lab)?;
    ensure!(real(&s, &r2)["weight"] == 7, "{s}");
    // The drained real keeps its connection; new ones go to real-2.
    ensure!(
        held.who()? == "real-1",
        "the drained real's connection moved"
    );
    for _ in 0..10 {
        ensure!(who(&lab.client, lab.vip(104))? == "real-2");
    }
    // A reload keeps it too.
    lab.balancer.reload(&format!("# reloaded\n{two}"))?;
    ensure!(state_of(&lab, 0, &r1)?.0 == "drained");

    // Undone: the messages say the truth.
    let said = ctl(&lab, &["undrain", "dicom", &r1])?;
    ensure!(said.contains("takes new flows"), "{said}");
    let said = ctl(&lab, &["unhalt", "viewer", &r2])?;
    ensure!(!said.contains("halted"), "{said}");
    ctl(&lab, &["weight", "dicom", &r2, "policy"])?;
    let s = status(&lab)?;
    ensure!(real(&s, &r2)["weight"] == 100, "{s}");
    // Mistakes are refused in the command's words.
    let out = lab.balancer.ctl(&["weight", "dicom", &r2, "70000"])?;
    ensure!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("whole number from 0 to 65535")
    );
    let out = lab.balancer.ctl(&["drain", "--all", "dicom", &r1])?;
    ensure!(!out.status.success());
    let state_file = lab.balancer.work_dir.join("admin-state.json");
    let kept: Value = serde_json::from_slice(&std::fs::read(&state_file)?)?;
    ensure!(
        kept["reals"].as_array().map(|a| a.len()) == Some(1),
        "only viewer/{r1}'s drain is left: {kept}"
    );
    Ok(())
}
