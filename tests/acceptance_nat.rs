//! Clinical acceptance over NAT (two-arm lab, the reals' gateway is the balancer):
//! - HL7 v2 over MLLP: python3-hl7's MLLP server on two reals behind VIP:2575, checked with
//!   `hl7-mllp`; python3-hl7's `mllp_send` is the client and every message gets its ACK.
//! - HTTPS viewers: nginx with TLS on 8443 on two reals behind VIP:443 (port translation),
//!   checked with `https`; curl from the client gets pages from both.

use std::{collections::HashMap, path::Path};

use anyhow::{Context, Result, ensure};
use xdplb_lab::lab::{Arms, Daemon, NAT_VIP, NatLab, Netns, netns::run};

const PYTHON: &str = "/usr/bin/python3";

fn policy(lab: &NatLab) -> String {
    let mut text = String::from(
        "interfaces:\n  - name: eth0\n    xdp_mode: driver\n  - name: eth1\n    xdp_mode: driver\n    role: inside\nservices:\n",
    );
    text += &format!(
        "  - name: hl7\n    vip: {NAT_VIP}\n    ports: [2575]\n    protocol: tcp\n    forwarding: nat\n    health:\n      check: hl7-mllp\n      interval: 1s\n      timeout: 500ms\n    reals:\n"
    );
    for (_, addr, _) in &lab.reals {
        text += &format!("      - address: {addr}\n");
    }
    text += &format!(
        "  - name: viewer\n    vip: {NAT_VIP}\n    ports: [443]\n    protocol: tcp\n    forwarding: nat\n    health:\n      check: https\n      host: viewer.pacs.test\n      verify_certificate: false\n      interval: 1s\n      timeout: 1s\n    reals:\n"
    );
    for (_, addr, _) in &lab.reals {
        text += &format!("      - address: {addr}\n        port: 8443\n");
    }
    text
}

/// nginx with TLS on 8443 in `ns`, answering every request with `name`.
fn viewer(ns: &Netns, dir: &Path, name: &str) -> Result<Daemon> {
    let home = dir.join(name);
    std::fs::create_dir_all(home.join("tmp"))?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let conf = home.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process off;\npid {home}/nginx.pid;\nerror_log {home}/error.log;\nevents {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {home}/tmp;\n  proxy_temp_path {home}/tmp;\n  fastcgi_temp_path {home}/tmp;\n  uwsgi_temp_path {home}/tmp;\n  scgi_temp_path {home}/tmp;\n  server {{\n    listen 8443 ssl;\n    ssl_certificate {cert};\n    ssl_certificate_key {key};\n    location / {{ return 200 \"viewer on {name}\\n\"; }}\n  }}\n}}\n",
            home = home.display(),
            cert = cert.display(),
            key = key.display(),
        ),
    )?;
    Daemon::start(
        ns,
        8443,
        "nginx",
        &[
            "-e",
            home.join("error.log").to_str().unwrap(),
            "-c",
            conf.to_str().unwrap(),
        ],
    )
}

#[test]
fn hl7_and_https_viewers_over_nat() -> Result<()> {
    let mut lab = NatLab::build(Arms::Two, 2)?;
    let dir = lab.balancer.work_dir.join("acceptance");
    std::fs::create_dir_all(&dir)?;
    run(std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=viewer.pacs.test", "-keyout"])
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem")))?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/mllp_server.py");
    let mut servers = Vec::new();
    for (ns, _, name) in &lab.reals {
        servers.push(Daemon::start(ns, 2575, PYTHON, &[script, "2575", "aa"])?);
        servers.push(viewer(ns, &dir, name)?);
    }
    lab.balancer.start(&policy(&lab))?;

    // HL7: 10 connections of 10 messages each; every message gets an AA ACK for its id.
    let mut acked = 0;
    for c in 0..10 {
        let file = dir.join(format!("batch-{c}.hl7"));
        let mut text = String::new();
        for m in 0..10 {
            text += &format!(
                "MSH|^~\\&|RIS|HOSPITAL|PACS|HOSPITAL|20261123120000||ORM^O01|MSG{c}-{m}|P|2.5\nPID|1||PAT{c}{m}^^^HOSPITAL||Test^Patient\n"
            );
        }
        std::fs::write(&file, text)?;
        let out = run(lab
            .client
            .command("mllp_send")
            .args(["--loose", "-p", "2575", "-f"])
            .arg(&file)
            .arg(NAT_VIP.to_string()))
        .with_context(|| format!("mllp_send batch {c}"))?;
        let acks = String::from_utf8_lossy(&out.stdout);
        for m in 0..10 {
            ensure!(
                acks.contains(&format!("MSA|AA|MSG{c}-{m}")),
                "no AA ACK for MSG{c}-{m}:\n{acks}"
            );
            acked += 1;
        }
    }
    ensure!(acked == 100);

    // HTTPS viewers through VIP:443 -> real:8443: pages from both.
    let mut pages: HashMap<String, usize> = HashMap::new();
    for _ in 0..30 {
        let out = run(lab
            .client
            .command("curl")
            .args(["-sfk", "--max-time", "3"])
            .arg(format!("https://{NAT_VIP}:443/")))?;
        *pages
            .entry(String::from_utf8_lossy(&out.stdout).trim().to_string())
            .or_default() += 1;
    }
    ensure!(
        pages.contains_key("viewer on real-1") && pages.contains_key("viewer on real-2"),
        "pages: {pages:?}"
    );
    eprintln!("HL7: 100 of 100 messages acknowledged; HTTPS pages: {pages:?}");
    drop(servers);
    Ok(())
}
