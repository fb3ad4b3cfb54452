//! The `xdplb` command line as a user meets it.

use std::process::Command;

use xdplb_lab::lab::xdplb_binary;

fn validate(text: &str) -> std::process::Output {
    validate_with(text, &[])
}

fn validate_with(text: &str, flags: &[&str]) -> std::process::Output {
    // A directory per call: tests run in parallel.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("xdplb-cli-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("policy.yaml");
    std::fs::write(&file, text).unwrap();
    let out = Command::new(xdplb_binary().unwrap())
        .arg("validate")
        .arg("--config")
        .arg(&file)
        .args(flags)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    out
}

const GOOD: &str = "interfaces:\n  - name: eth0\nservices:\n  - name: hl7\n    vip: 198.18.0.100\n    ports: [2575]\n    protocol: tcp\n    forwarding: dr\n    reals:\n      - address: 198.18.0.11\n";

#[test]
fn validate_accepts_a_good_policy() {
    let out = validate(GOOD);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 services, 1 reals)"));
}

#[test]
fn validate_rejects_a_bad_policy_with_position_and_exit_status_2() {
    let out = validate(&GOOD.replace("198.18.0.11", "198.18.0.311"));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.contains(".yaml:10:18: "),
        "expected FILE:LINE:COLUMN: message, got {stderr}"
    );
}

#[test]
fn every_example_policy_validates() {
    let dir = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../packaging/examples"
    ));
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let out = Command::new(xdplb_binary().unwrap())
            .args(["validate", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        seen += 1;
    }
    assert!(seen >= 4, "examples for DICOM, HL7, HTTPS viewers and XDS");
}

#[test]
fn man_page_and_completions_are_generated_from_the_cli() {
    let run = |args: &[&str]| {
        let out = Command::new(xdplb_binary().unwrap())
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let man = run(&["generate", "man"]);
    assert!(man.contains(".TH xdplb 1"), "{man}");
    for subcommand in ["status", "drain", "reload", "realserver"] {
        assert!(man.contains(subcommand), "man page lacks {subcommand}");
    }
    let bash = run(&["generate", "completions", "bash"]);
    assert!(bash.contains("complete") && bash.contains("undrain"));
}

/// `ip netns exec` gives the command a mount namespace of its own and remounts /sys: a BPF
/// filesystem mounted there dies with the controller, and with it the data plane. `xdplb run`
/// says so and what to do, instead of silently losing its restart guarantee.
#[test]
fn run_under_ip_netns_exec_refuses_pins_that_would_die_with_it() {
    struct Namespace(String);
    impl Drop for Namespace {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    let ns = Namespace(format!("xdplb-cli-{}", std::process::id()));
    assert!(
        Command::new("ip")
            .args(["netns", "add", &ns.0])
            .status()
            .unwrap()
            .success()
    );
    let dir = std::env::temp_dir().join(&ns.0);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("policy.yaml");
    std::fs::write(&file, GOOD.replace("eth0", "lo")).unwrap();
    // `timeout`: were it not refused, it would run until killed.
    let out = Command::new("timeout")
        .args(["20", "ip", "netns", "exec", &ns.0])
        .arg(xdplb_binary().unwrap())
        .args(["run", "--metrics-listen", "off", "--config"])
        .arg(&file)
        .arg("--pin-dir")
        .arg(format!("/sys/fs/bpf/{}", ns.0))
        .arg("--socket")
        .arg(dir.join("xdplb.sock"))
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it ran: {said}");
    assert!(
        said.contains("ip netns exec")
            && said.contains("nsenter --net")
            && said.contains("--ephemeral-pins"),
        "{said}"
    );
}

/// Files that are not a policy are refused before anything is parsed: a device, a missing
/// file (no made-up position), text that is not UTF-8 (at the byte's line).
#[test]
fn validate_refuses_what_is_no_policy_file_and_says_where() {
    let run = |path: &std::path::Path| {
        let out = Command::new(xdplb_binary().unwrap())
            .args(["validate", "--config"])
            .arg(path)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, said) = run(std::path::Path::new("/dev/zero"));
    assert_eq!(code, Some(2), "{said}");
    assert!(
        said.contains("/dev/zero: the policy must be a regular file"),
        "{said}"
    );
    let (code, said) = run(std::path::Path::new("/nonexistent/policy.yaml"));
    assert_eq!(code, Some(2), "{said}");
    assert!(
        said.contains("/nonexistent/policy.yaml: cannot read") && !said.contains(":0:0"),
        "{said}"
    );
    let file = std::env::temp_dir().join(format!("xdplb-cli-latin1-{}.yaml", std::process::id()));
    let mut bytes = GOOD.as_bytes().to_vec();
    // A Latin-1 "é" in a comment on line 3.
    let line3 = GOOD.lines().take(2).map(|l| l.len() + 1).sum::<usize>();
    bytes.splice(line3..line3, b"# caf\xe9\n".iter().copied());
    std::fs::write(&file, &bytes).unwrap();
    let (code, said) = run(&file);
    let _ = std::fs::remove_file(&file);
    assert_eq!(code, Some(2), "{said}");
    assert!(said.contains(":3:6: not UTF-8"), "{said}");
}

/// The man pages a package installs: xdplb(1) and a page for every subcommand it refers to.
#[test]
fn every_man_page_the_main_one_refers_to_is_generated() {
    let dir = std::env::temp_dir().join(format!("xdplb-man-{}", std::process::id()));
    let out = Command::new(xdplb_binary().unwrap())
        .args(["generate", "man", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let main = std::fs::read_to_string(dir.join("xdplb.1")).unwrap();
    // The policy reference the validate and run pages point at, with every key in it.
    assert!(
        main.contains("xdplb.yaml(5)"),
        "xdplb(1) names the policy page"
    );
    let policy_page = std::fs::read_to_string(dir.join("xdplb.yaml.5")).unwrap();
    assert!(policy_page.contains("\n.TH XDPLB.YAML 5"), "{policy_page}");
    for key in [
        "vip_announcement",
        "forwarding",
        "called_ae",
        "expect_status",
        "backup",
    ] {
        assert!(policy_page.contains(key), "xdplb.yaml(5) lacks {key}");
    }
    let mut referred = 0;
    for word in main.split_whitespace() {
        if let Some(name) = word
            .strip_prefix("xdplb\\-")
            .and_then(|w| w.strip_suffix("(1)"))
        {
            referred += 1;
            let page = dir.join(format!("xdplb-{name}.1"));
            assert!(
                page.is_file(),
                "xdplb(1) refers to xdplb-{name}(1), not generated"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        referred >= 10,
        "only {referred} subcommand pages referred to"
    );
}

/// A tired operator's file: every problem at once, at its key or value, in the policy's words.
#[test]
fn validate_reports_every_problem_at_once_in_the_policys_words() {
    let bad = "\
interfaces:
  - name: eth0
    xdp_mod: driver
services:
  - name: dicom
    vip: '[2001:2::1]'
    ports: 104
    protocol: tcp
    forwarding: dsr
    health:
      check: dicom-echo
      interval: 2
    reals:
      - address: pacs1.example
        weight: 70000
      - address: 198.18.0.12
        weight: 1
        weight: 2
";
    let out = validate(bad);
    assert_eq!(out.status.code(), Some(2));
    let said = String::from_utf8_lossy(&out.stderr);
    let expected = [
        (":3:5: ", "did you mean `xdp_mode`?"),
        (":6:10: ", "without brackets"),
        (":7:12: ", "`ports` is a list: `ports: [104]`"),
        (":9:17: ", "did you mean `dr`?"),
        (":12:17: ", "`interval` needs a unit: `2s`"),
        (":14:18: ", "host names are not resolved"),
        (
            ":15:17: ",
            "`weight` must be a whole number from 0 to 65535",
        ),
        (
            ":18:9: ",
            "`weight` is given twice in a real (first on line 17)",
        ),
    ];
    for (position, words) in expected {
        assert!(
            said.lines()
                .any(|l| l.contains(position) && l.contains(words)),
            "missing {position}{words} in:\n{said}"
        );
    }
    assert_eq!(said.lines().count(), expected.len(), "{said}");
    for serde_words in [
        "invalid type",
        "u16",
        "expected",
        "Option<",
        "DuplicateKeyPolicy",
    ] {
        assert!(!said.contains(serde_words), "{serde_words} in:\n{said}");
    }
}

/// Legal but suspicious: a warning, exit 0; with --strict, refused with exit status 2.
#[test]
fn strict_validation_refuses_warnings() {
    let drained = GOOD.replace(
        "      - address: 198.18.0.11\n",
        "      - address: 198.18.0.11\n        weight: 0\n",
    );
    let out = validate(&drained);
    assert!(out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("warning: ") && said.contains("weight 0"),
        "{said}"
    );
    let out = validate_with(&drained, &["--strict"]);
    assert_eq!(out.status.code(), Some(2));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("error: ") && said.contains("weight 0"),
        "{said}"
    );
    assert!(validate_with(GOOD, &["--strict"]).status.success());
}
