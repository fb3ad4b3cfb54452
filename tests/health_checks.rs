//! Every health checker against real peers that nobody here wrote, started by the test in a
//! namespace of its own: dcmtk's storescp (DICOM), python3-hl7's MLLP server, python's
//! http.server, openssl's TLS server; plus a server that accepts and never answers, and a
//! closed port. Each check runs from inside the namespace, as the controller's would.

use std::{
    net::{Ipv4Addr, TcpListener},
    path::PathBuf,
    time::{Duration, Instant},
};

use xdplb::{
    health::{Outcome, Target, probe::Probe},
    policy::{self, HealthCheck},
};
use xdplb_lab::lab::{Daemon, Netns, netns::unique_prefix};

const PYTHON: &str = "/usr/bin/python3";

/// A namespace for the peers and a scratch directory, both removed on drop.
struct Peers {
    ns: Netns,
    dir: PathBuf,
}

impl Peers {
    fn new() -> Peers {
        let prefix = unique_prefix();
        let dir = std::env::temp_dir().join(&prefix);
        std::fs::create_dir_all(&dir).unwrap();
        Peers {
            ns: Netns::create(format!("{prefix}-peers")).unwrap(),
            dir,
        }
    }

    /// Runs one check of `health` (the policy's `health:` block, indented by 6) to `port`.
    fn check(&self, health: &str, port: u16) -> Outcome {
        let check = health_check(health);
        self.ns
            .within(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let target = Target {
                    address: Ipv4Addr::LOCALHOST.into(),
                    port,
                };
                rt.block_on(async {
                    Probe::new(&check, "pacs", target)
                        .expect("probe")
                        .run()
                        .await
                })
            })
            .unwrap()
    }

    /// A listener that completes TCP handshakes and never says a word.
    fn silent_listener(&self, port: u16) -> TcpListener {
        self.ns
            .within(move || TcpListener::bind(("127.0.0.1", port)))
            .unwrap()
            .unwrap()
    }
}

/// A listener that answers every connection with `banner` and closes it: what a check meets
/// when the port belongs to another protocol.
fn banner_server(ns: &Netns, port: u16, banner: &'static [u8]) {
    let listener = ns
        .within(move || TcpListener::bind(("127.0.0.1", port)))
        .unwrap()
        .unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = std::io::Write::write_all(&mut stream, banner);
        }
    });
}

impl Drop for Peers {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn health_check(health: &str) -> HealthCheck {
    let text = format!(
        "interfaces:\n  - name: lo\nservices:\n  - name: pacs\n    vip: 198.18.0.100\n    ports: [104]\n    protocol: tcp\n    forwarding: dr\n    health:\n{health}    reals:\n      - address: 198.18.0.11\n"
    );
    policy::parse("test.yaml", &text)
        .unwrap_or_else(|e| panic!("{e}"))
        .services[0]
        .health
        .clone()
}

fn assert_up(outcome: &Outcome, seen: &str) {
    assert!(outcome.up, "expected up, got {outcome:?}");
    assert!(outcome.reason.contains(seen), "{outcome:?}");
}

fn assert_down(outcome: &Outcome, why: &str) {
    eprintln!("down as expected: {}", outcome.reason);
    assert!(!outcome.up, "expected down, got {outcome:?}");
    assert!(
        outcome.reason.to_lowercase().contains(&why.to_lowercase()),
        "expected a reason with `{why}`, got {outcome:?}"
    );
}

#[test]
fn tcp_connect() {
    let peers = Peers::new();
    let _listener = peers.silent_listener(2104);
    let tcp = "      check: tcp\n      timeout: 1s\n";
    assert_up(&peers.check(tcp, 2104), "connected");
    assert_down(&peers.check(tcp, 2105), "refused");
}

#[test]
fn dicom_echo_against_dcmtk_storescp() {
    let peers = Peers::new();
    let _archive = Daemon::start_in(
        &peers.ns,
        11112,
        "storescp",
        &["--aetitle", "ORTHANC", "11112"],
        Some(&peers.dir),
    )
    .unwrap();
    let _refusing = Daemon::start_in(
        &peers.ns,
        11113,
        "storescp",
        &["--refuse", "11113"],
        Some(&peers.dir),
    )
    .unwrap();
    banner_server(&peers.ns, 2222, b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n");
    let _silent = peers.silent_listener(11114);
    let echo = "      check: dicom-echo\n      timeout: 1s\n      called_ae: ORTHANC\n      calling_ae: XDPLB\n";

    assert_up(&peers.check(echo, 11112), "C-ECHO status 0x0000");
    assert_down(&peers.check(echo, 11113), "association rejected");
    assert_down(&peers.check(echo, 2222), "association failed"); // not a PDU
    let started = Instant::now();
    assert_down(&peers.check(echo, 11114), "no answer within 1000 ms");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_down(&peers.check(echo, 11115), "refused");
}

#[test]
fn hl7_mllp_against_python_hl7() {
    let peers = Peers::new();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/mllp_server.py");
    let mut servers = Vec::new();
    for (port, mode) in [
        (2575, "aa"),
        (2576, "ae"),
        (2577, "wrong-id"),
        (2578, "silent"),
    ] {
        let port_text = port.to_string();
        servers.push(Daemon::start(&peers.ns, port, PYTHON, &[script, &port_text, mode]).unwrap());
    }
    let mllp = "      check: hl7-mllp\n      timeout: 1s\n";
    assert_up(&peers.check(mllp, 2575), "ACK AA");
    assert_down(&peers.check(mllp, 2576), "ACK AE");
    assert_down(&peers.check(mllp, 2577), "control ID");
    assert_down(&peers.check(mllp, 2578), "no answer within");
    assert_down(&peers.check(mllp, 2579), "refused");
}

#[test]
fn http_status_and_body_against_python_http_server() {
    let peers = Peers::new();
    std::fs::write(peers.dir.join("health.html"), "PACS viewer OK\n").unwrap();
    let _web = Daemon::start_in(
        &peers.ns,
        8080,
        PYTHON,
        &["-m", "http.server", "8080"],
        Some(&peers.dir),
    )
    .unwrap();
    let _silent = peers.silent_listener(8081);
    let http = |path: &str, body: &str| {
        format!(
            "      check: http\n      timeout: 1s\n      path: {path}\n      expect_body: \"{body}\"\n"
        )
    };
    assert_up(
        &peers.check(&http("/health.html", "viewer OK"), 8080),
        "HTTP 200",
    );
    assert_down(
        &peers.check(&http("/health.html", "^DOWN"), 8080),
        "body does not match",
    );
    assert_down(&peers.check(&http("/missing", "."), 8080), "HTTP 404");
    assert_down(&peers.check(&http("/", "."), 8081), "no answer within");
}

#[test]
fn https_verifies_certificates_unless_told_not_to() {
    let peers = Peers::new();
    let (cert, key) = (peers.dir.join("cert.pem"), peers.dir.join("key.pem"));
    let status = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=viewer.pacs.test", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let _tls = Daemon::start(
        &peers.ns,
        8443,
        "openssl",
        &[
            "s_server",
            "-quiet",
            "-www",
            "-accept",
            "8443",
            "-cert",
            cert.to_str().unwrap(),
            "-key",
            key.to_str().unwrap(),
        ],
    )
    .unwrap();
    let https = |verify: bool| {
        format!(
            "      check: https\n      timeout: 2s\n      host: viewer.pacs.test\n      verify_certificate: {verify}\n"
        )
    };
    assert_up(&peers.check(&https(false), 8443), "HTTP 200");
    assert_down(&peers.check(&https(true), 8443), "certificate");
}

#[test]
fn exec_runs_the_command_with_the_real_and_kills_it_at_the_timeout() {
    let peers = Peers::new();
    let exec = |script: &str| {
        format!("      check: exec\n      timeout: 500ms\n      command: [sh, -c, '{script}']\n")
    };
    assert_up(
        &peers.check(
            &exec("test \"$XDPLB_REAL_ADDRESS:$XDPLB_REAL_PORT\" = 127.0.0.1:2575"),
            2575,
        ),
        "exit 0",
    );
    assert_down(
        &peers.check(&exec("echo archive full >&2; exit 3"), 2575),
        "exit 3: archive full",
    );
    // A hung command and its children are killed at the timeout.
    let marker = peers.dir.join("still-running");
    let script = format!("(sleep 1.5; touch {}) & wait", marker.display());
    let started = Instant::now();
    assert_down(
        &peers.check(&exec(&script), 2575),
        "no answer within 500 ms",
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !marker.exists(),
        "the command's children must be killed too"
    );
}

#[test]
fn none_is_always_up() {
    let peers = Peers::new();
    assert_up(&peers.check("      check: none\n", 9), "not checked");
}
