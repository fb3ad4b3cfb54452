//! Policies as a tired operator, a bad copy-paste or a broken editor write them: thousands of
//! seeded mutations of a good policy, judged by what the README promises of `validate`. A policy
//! that is accepted is safe to run; one that is refused is refused with positions inside the
//! file, in file order, in the policy's words rather than the parser's.

use std::net::IpAddr;

use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64;
use xdplb::policy::{self, CheckKind, Policy};

const GOOD: &str = "\
vip_announcement: arp
interfaces:
  - name: eth0
    xdp_mode: driver
  - name: eth1
    role: inside
services:
  - name: dicom
    vip: 198.18.0.100
    ports: [104, 11112]
    protocol: tcp
    forwarding: dr
    scheduler: source-hash
    persistence:
      timeout: 1h
      netmask: 24
    health:
      check: dicom-echo
      port: 104
      interval: 2s
      timeout: 1s
      rise: 2
      fall: 3
      called_ae: ORTHANC
      calling_ae: XDPLB
    fallback: 198.18.0.99
    reals:
      - address: 198.18.0.11
        weight: 100
      - address: 198.18.0.12
        weight: 50
        backup: true
  - name: viewer
    vip: 198.18.0.101
    ports: [443]
    protocol: tcp
    forwarding: nat
    health:
      check: https
      path: /healthz
      expect_status: 200-299
      verify_certificate: false
    timeouts:
      idle: 2h
      closing: 10s
    reals:
      - address: 198.19.0.11
        port: 8443
      - address: 198.19.0.12
        port: 8443
";

/// Values an operator or an editor might leave where another belongs.
const VALUES: &[&str] = &[
    "",
    "~",
    "0",
    "-1",
    "1.5",
    "70000",
    "4294967295",
    "99999999999999999999",
    "\"104\"",
    "0x68",
    "true",
    "yes",
    "[]",
    "[1, 2]",
    "{a: 1}",
    "2001:2::1",
    "pacs.example",
    "198.18.0.0/24",
    "198.18.0.11:104",
    "127.0.0.1",
    "0.0.0.0",
    "255.255.255.255",
    "224.0.0.1",
    "198.18.0.100",
    "198.18.0.312",
    "0.1.2.3",
    "240.0.0.1",
    "\"x\\ny\"",
    "\"/a b\"",
    "2s",
    "2",
    "1ms",
    "720h",
    "0s",
    "dr",
    "nat",
    "snat",
    "tcp",
    "sctp",
    "none",
    "exec",
    "maglev",
    "ÿ",
    "'unclosed",
    "\"unclosed",
    "[unclosed",
    "*alias",
    "&anchor x",
    "!!binary aGk=",
    "a: b",
    "- x",
    "#",
    "|",
    ">",
];

fn mutate(rng: &mut Pcg64, text: &str) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for _ in 0..rng.random_range(1..=3) {
        let i = rng.random_range(0..lines.len());
        match rng.random_range(0..8) {
            // A value replaced.
            0..=2 => {
                if let Some(colon) = lines[i].find(": ") {
                    let v = VALUES[rng.random_range(0..VALUES.len())];
                    lines[i] = format!("{}: {v}", &lines[i][..colon]);
                } else if let Some(dash) = lines[i].find("- ") {
                    let v = VALUES[rng.random_range(0..VALUES.len())];
                    lines[i] = format!("{}- {v}", &lines[i][..dash]);
                }
            }
            // A key mistyped: two letters swapped.
            3 => {
                let line = &lines[i];
                let start = line.len() - line.trim_start_matches([' ', '-']).len();
                let key_end = line.find(':').unwrap_or(line.len());
                if key_end > start + 2 {
                    let mut bytes = line.as_bytes().to_vec();
                    let j = rng.random_range(start..key_end - 1);
                    bytes.swap(j, j + 1);
                    lines[i] = String::from_utf8(bytes).unwrap();
                }
            }
            4 => {
                lines.remove(i);
            }
            5 => {
                let copy = lines[i].clone();
                lines.insert(i, copy);
            }
            // Indentation off by two, or a tab.
            6 => {
                if lines[i].starts_with("  ") && rng.random_bool(0.5) {
                    lines[i].replace_range(0..2, "");
                } else if rng.random_bool(0.5) {
                    lines[i].insert_str(0, "  ");
                } else {
                    lines[i].insert(0, '\t');
                }
            }
            // A line from elsewhere in the file.
            _ => {
                let from = rng.random_range(0..lines.len());
                lines[i] = lines[from].clone();
            }
        }
        if lines.is_empty() {
            lines.push(String::new());
        }
    }
    lines.join("\n") + "\n"
}

/// What a policy that validates must never contain (README, "Validate").
fn assert_safe(policy: &Policy, text: &str) {
    let vips: Vec<IpAddr> = policy.services.iter().map(|s| s.vip).collect();
    let usable = |a: IpAddr| match a {
        IpAddr::V4(a) => {
            let first = a.octets()[0];
            !(a.is_loopback() || a.is_broadcast() || a.is_multicast() || first == 0 || first >= 240)
        }
        IpAddr::V6(a) => {
            !(a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || a.is_unicast_link_local()
                || a.to_ipv4_mapped().is_some())
        }
    };
    // A service is of one family.
    let same_family = |a: IpAddr, b: IpAddr| a.is_ipv4() == b.is_ipv4();
    for s in &policy.services {
        assert!(!s.reals.is_empty(), "{} has no reals:\n{text}", s.name);
        assert!(
            !s.name.chars().any(char::is_control),
            "name {:?}:\n{text}",
            s.name
        );
        assert!(
            !s.health.path.contains(char::is_whitespace),
            "path:\n{text}"
        );
        assert!(
            !s.ports.is_empty() && !s.ports.contains(&0),
            "ports:\n{text}"
        );
        assert!(usable(s.vip), "vip {}:\n{text}", s.vip);
        for r in &s.reals {
            assert!(
                usable(r.address) && !vips.contains(&r.address) && same_family(r.address, s.vip),
                "real {}:\n{text}",
                r.address
            );
        }
        if let Some(f) = s.fallback {
            assert!(
                usable(f.address) && f.address != s.vip && same_family(f.address, s.vip),
                "fallback:\n{text}"
            );
        }
        let h = &s.health;
        if h.kind != CheckKind::None {
            assert!(
                h.interval.as_millis() >= 100 && h.interval.as_secs() <= 3600,
                "{text}"
            );
            assert!(!h.timeout.is_zero() && h.timeout <= h.interval, "{text}");
        }
        assert!(
            (1..=100).contains(&h.rise) && (1..=100).contains(&h.fall),
            "{text}"
        );
        assert!(h.port != Some(0), "{text}");
        if let Some(p) = s.persistence {
            assert!(p.netmask <= 32 && !p.timeout.is_zero(), "{text}");
            assert!(p.timeout.as_secs() <= 7 * 86400, "{text}");
        }
    }
}

/// Words of the parser and of Rust, which mean nothing to the operator.
const FOREIGN_WORDS: &[&str] = &[
    "invalid type",
    "invalid value",
    "u8",
    "u16",
    "u32",
    "u64",
    "i64",
    "Option<",
    "DuplicateKeyPolicy",
    "unknown field",
    "unknown variant",
    "newtype",
    "struct",
    "sequence",
    "serde",
];

#[test]
fn mutated_policies_are_refused_in_the_policys_words_or_accepted_safe() {
    let seed = std::env::var("XDPLB_POLICY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261128u64);
    let mut rng = Pcg64::seed_from_u64(seed);
    policy::parse("good.yaml", GOOD).expect("the base policy is valid");
    let (mut accepted, mut refused) = (0, 0);
    for round in 0..4000 {
        let text = mutate(&mut rng, GOOD);
        let lines = text.lines().count() as u64;
        match policy::parse("p.yaml", &text) {
            Ok(p) => {
                accepted += 1;
                assert_safe(&p, &text);
            }
            Err(errors) => {
                refused += 1;
                let mut previous = (0, 0);
                for e in &errors.0 {
                    let context = || format!("round {round} (seed {seed}): {e}\n--- file:\n{text}");
                    assert!(!e.message.trim().is_empty(), "{}", context());
                    assert!(
                        (1..=lines + 1).contains(&e.line) && e.column >= 1,
                        "position outside the file: {}",
                        context()
                    );
                    assert!(
                        (e.line, e.column) >= previous,
                        "not in file order: {}",
                        context()
                    );
                    previous = (e.line, e.column);
                    // The YAML grammar's own words are the right ones for a syntax error.
                    if e.message.starts_with("not valid YAML: ") {
                        continue;
                    }
                    for word in FOREIGN_WORDS {
                        assert!(!e.message.contains(word), "`{word}`: {}", context());
                    }
                }
            }
        }
    }
    eprintln!("accepted {accepted}, refused {refused}");
    // The mutations must exercise both outcomes, or the test judges nothing.
    assert!(
        accepted > 200 && refused > 2000,
        "accepted {accepted}, refused {refused}"
    );
}
