//! Policy parsing and every rejection the contract names, with positions.

use std::{
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use super::*;

const GOOD: &str = "\
interfaces:
  - name: eth0
    xdp_mode: driver
services:
  - name: dicom
    vip: 198.18.0.100
    ports: [104, 11112]
    protocol: tcp
    forwarding: dr
    scheduler: maglev
    persistence:
      timeout: 3600s
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
        weight: 0
  - name: viewer
    vip: 198.18.0.100
    ports: [443]
    protocol: tcp
    forwarding: nat
    reals:
      - address: 198.19.0.11
        port: 8443
        backup: true
";

/// The first problem found in `text`.
fn error(text: &str) -> PolicyError {
    errors(text).first().clone()
}

fn errors(text: &str) -> PolicyErrors {
    parse("p.yaml", text).expect_err("policy must be rejected")
}

#[test]
fn full_example_parses() {
    let p = parse("p.yaml", GOOD).unwrap();
    assert_eq!(
        p.interfaces,
        vec![Interface {
            name: "eth0".into(),
            xdp_mode: XdpMode::Driver,
            role: Role::Outside
        }]
    );
    let dicom = &p.services[0];
    assert_eq!(
        (dicom.vip, dicom.ports.clone()),
        (Ipv4Addr::new(198, 18, 0, 100).into(), vec![104, 11112])
    );
    assert_eq!(
        dicom.persistence,
        Some(Persistence {
            timeout: Duration::from_secs(3600),
            netmask: 24
        })
    );
    assert_eq!(dicom.health.kind, CheckKind::DicomEcho);
    assert_eq!(
        (dicom.health.called_ae.as_str(), dicom.health.fall),
        ("ORTHANC", 3)
    );
    assert_eq!(dicom.reals[1].weight, 0);
    assert_eq!(
        dicom.fallback,
        Some(Fallback {
            address: Ipv4Addr::new(198, 18, 0, 99).into(),
            port: None
        })
    );
    let viewer = &p.services[1];
    assert_eq!(
        (
            viewer.forwarding,
            viewer.reals[0].port,
            viewer.reals[0].backup
        ),
        (Forwarding::Nat, Some(8443), true)
    );
    assert_eq!(viewer.health, HealthCheck::default());
}

#[test]
fn unknown_key_is_rejected_with_its_position() {
    let e = error(&GOOD.replace("    scheduler: maglev\n", "    schedular: maglev\n"));
    assert_eq!((e.line, e.file.as_str()), (10, "p.yaml"));
    assert!(e.message.contains("schedular"), "{e}");
    assert!(e.to_string().starts_with("p.yaml:10:5: "), "{e}");
    assert!(
        !e.message.contains("line"),
        "position must not be repeated: {e}"
    );
}

#[test]
fn duplicate_vip_port_protocol_is_rejected_at_the_second_port() {
    let e = error(&GOOD.replace("ports: [443]", "ports: [443, 11112]"));
    assert_eq!(e.line, 31);
    assert!(
        e.message.contains("duplicate 198.18.0.100:11112/tcp"),
        "{e}"
    );
    assert!(e.message.contains("dicom"), "{e}");
}

#[test]
fn same_port_on_another_protocol_is_fine() {
    let text = GOOD.replace("ports: [443]", "ports: [104]").replace(
        "protocol: tcp\n    forwarding: nat",
        "protocol: udp\n    forwarding: nat",
    );
    parse("p.yaml", &text).unwrap();
}

#[test]
fn port_translation_in_dr_is_rejected() {
    let e = error(&GOOD.replace(
        "        weight: 0\n",
        "        weight: 0\n        port: 8104\n",
    ));
    assert_eq!(e.line, 29);
    assert!(e.message.contains("forwarding: nat"), "{e}");
}

#[test]
fn an_address_that_is_not_an_address_is_rejected() {
    let e = error(&GOOD.replace("address: 198.18.0.12", "address: 198.18.0.312"));
    assert_eq!(e.line, 27);
    let e = error(&GOOD.replace(
        "vip: 198.18.0.100\n    ports: [104",
        "vip: pacs.example\n    ports: [104",
    ));
    assert_eq!(e.line, 6);
}

#[test]
fn other_rejections() {
    for (from, to, line, needle) in [
        ("weight: 100", "weight: 70000", 26, "from 0 to 65535"),
        ("netmask: 24", "netmask: 40", 13, "netmask"),
        ("interval: 2s", "interval: 2 fortnights", 17, "duration"),
        (
            "called_ae: ORTHANC",
            "called_ae: THIS-AE-TITLE-IS-TOO-LONG",
            21,
            "AE title",
        ),
        (
            "protocol: tcp\n    forwarding: dr",
            "protocol: sctp\n    forwarding: dr",
            8,
            "",
        ),
        ("ports: [104, 11112]", "ports: [104, 104]", 7, "twice"),
        ("ports: [104, 11112]", "ports: []", 7, "at least one port"),
        (
            "  - name: viewer",
            "  - name: dicom",
            29,
            "duplicate service name",
        ),
        (
            "      - address: 198.18.0.12",
            "      - address: 198.18.0.11",
            27,
            "listed twice",
        ),
        (
            "check: dicom-echo",
            "check: exec",
            21,
            "`called_ae` applies to `check: dicom-echo`",
        ),
    ] {
        assert!(GOOD.contains(from), "{from}");
        let all = errors(&GOOD.replacen(from, to, 1));
        let e = all
            .0
            .iter()
            .find(|e| e.message.contains(needle))
            .unwrap_or_else(|| panic!("{from} -> {to}: {all}"));
        assert_eq!(e.line, line, "{from} -> {to}: {e}");
    }
}

#[test]
fn no_interface_is_rejected() {
    let e = error("interfaces: []\nservices: []\n");
    assert!(
        e.message.contains("`interfaces` needs at least one entry"),
        "{e}"
    );
}

#[test]
fn syntax_errors_have_positions() {
    let e = error("interfaces:\n  - name: eth0\nservices:\n  - name: [unclosed\n");
    assert!(e.line >= 4, "{e}");
}

#[test]
fn durations() {
    use super::duration::parse_duration;
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
    assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
    assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    assert!(parse_duration("2").is_err());
    assert!(parse_duration("s").is_err());
}

#[test]
fn connection_timeouts_default_per_protocol_and_can_be_set() {
    let p = parse("p.yaml", GOOD).unwrap();
    assert_eq!(p.services[0].timeouts, Timeouts::default_for(Protocol::Tcp));
    assert_eq!(
        Timeouts::default_for(Protocol::Udp).idle,
        Duration::from_secs(300)
    );
    let with = GOOD.replacen(
        "    fallback: 198.18.0.99\n",
        "    fallback: 198.18.0.99\n    timeouts:\n      idle: 2h\n      closing: 30s\n",
        1,
    );
    let p = parse("p.yaml", &with).unwrap();
    assert_eq!(
        p.services[0].timeouts,
        Timeouts {
            idle: Duration::from_secs(7200),
            closing: Duration::from_secs(30)
        }
    );
    for (from, to, needle) in [
        ("closing: 30s", "closing: 0s", "from 1s to 7d"),
        ("idle: 2h", "idle: 1500ms", "whole seconds"),
        ("idle: 2h", "idle: 200h", "from 1s to 7d"),
    ] {
        let text = with.replacen(from, to, 1);
        let line = text.lines().position(|l| l.contains(to)).unwrap() as u64 + 1;
        let e = error(&text);
        assert!(e.message.contains(needle), "{to}: {e}");
        assert_eq!(e.line, line, "{to}: {e}");
    }
}

#[test]
fn vip_announcement_says_who_holds_the_vips() {
    assert_eq!(
        parse("p.yaml", GOOD).unwrap().vip_announcement,
        VipAnnouncement::Arp,
        "arp by default: a balancer on its own"
    );
    let pair = parse("p.yaml", &format!("vip_announcement: none\n{GOOD}")).unwrap();
    assert_eq!(pair.vip_announcement, VipAnnouncement::Unmanaged);
    let explicit = parse("p.yaml", &format!("vip_announcement: arp\n{GOOD}")).unwrap();
    assert_eq!(explicit.vip_announcement, VipAnnouncement::Arp);

    let scale_out = parse("p.yaml", &format!("vip_announcement: bgp\n{GOOD}")).unwrap();
    assert_eq!(scale_out.vip_announcement, VipAnnouncement::Bgp);
    let e = error(&format!("vip_announcement: vrrp\n{GOOD}"));
    assert_eq!(e.line, 1, "{e}");
}

#[test]
fn nat_routing_is_closed_unless_opened_and_open_is_warned_about() {
    let nat = GOOD.replace("forwarding: dr", "forwarding: nat");
    let closed = parse("p.yaml", &nat).unwrap();
    assert_eq!(closed.nat_routing, NatRouting::Closed);
    assert!(crate::policy::warnings(&closed).is_empty());
    let open = parse("p.yaml", &format!("nat_routing: open\n{nat}")).unwrap();
    assert_eq!(open.nat_routing, NatRouting::Open);
    let warnings = crate::policy::warnings(&open);
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].starts_with("nat_routing: open"), "{warnings:?}");
    let e = error(&format!("nat_routing: firewalled\n{GOOD}"));
    assert_eq!(e.line, 1, "{e}");
}

#[test]
fn a_fallback_may_have_a_port_in_nat() {
    let nat = GOOD.replace("forwarding: dr", "forwarding: nat");
    let p = parse(
        "p.yaml",
        &nat.replace("fallback: 198.18.0.99", "fallback: 198.18.0.99:8443"),
    )
    .unwrap();
    let fallback = p.services[0].fallback.unwrap();
    assert_eq!(fallback.port, Some(8443));
    let member = p.services[0].members().pop().unwrap();
    assert!(p.services[0].is_fallback(&member) && member.port == Some(8443));
    // DR cannot change a port; a port must be a port; an address must be an address.
    let e = error(&GOOD.replace("fallback: 198.18.0.99", "fallback: 198.18.0.99:8443"));
    assert!(e.message.contains("needs `forwarding: nat`"), "{e}");
    let line = GOOD.lines().position(|l| l.contains("fallback")).unwrap() + 1;
    assert_eq!(e.line as usize, line, "{e}");
    let e = error(&nat.replace("fallback: 198.18.0.99", "fallback: 198.18.0.99:99999"));
    assert!(e.message.contains("from 1 to 65535"), "{e}");
    let e = error(&nat.replace("fallback: 198.18.0.99", "fallback: sorry.example"));
    assert!(e.message.contains("ADDRESS or ADDRESS:PORT"), "{e}");
}

/// What `validate` used to accept although it takes a service down or checks nothing.
#[test]
fn policies_that_would_take_a_service_down_are_refused() {
    let line_of = |text: &str, needle: &str| {
        text.lines().position(|l| l.contains(needle)).unwrap() as u64 + 1
    };
    for (from, to, at, needle) in [
        (
            "      port: 104",
            "      port: 0",
            "port: 0",
            "from 1 to 65535",
        ),
        (
            "      interval: 2s",
            "      interval: 1ms",
            "interval: 1ms",
            "from 100ms to 1h",
        ),
        (
            "      timeout: 1s",
            "      timeout: 5s",
            "timeout: 5s",
            "no longer than its interval",
        ),
        (
            "      rise: 2",
            "      rise: 4294967295",
            "rise: 4294967295",
            "from 1 to 100",
        ),
        (
            "      - address: 198.18.0.11",
            "      - address: 198.18.0.100",
            "198.18.0.100\n",
            "own VIP",
        ),
        (
            "      - address: 198.18.0.11",
            "      - address: 127.0.0.1",
            "127.0.0.1",
            "loopback address; the `address` of a real must be",
        ),
        (
            "    vip: 198.18.0.100",
            "    vip: 127.0.0.1",
            "127.0.0.1",
            "loopback address; the `vip` of a service must be",
        ),
        (
            "    fallback: 198.18.0.99",
            "    fallback: 198.18.0.100",
            "fallback:",
            "cannot be a fallback",
        ),
        (
            "      timeout: 3600s",
            "      timeout: 720h",
            "timeout: 720h",
            "from 1s to 7d",
        ),
    ] {
        assert!(GOOD.contains(from), "{from}");
        let bad = GOOD.replacen(from, to, 1);
        let e = error(&bad);
        assert!(e.message.contains(needle), "{from} -> {to}: {e}");
        let expected = if at.ends_with('\n') {
            // The real's line, not the VIP's.
            line_of(&bad, &format!("- address: {}", at.trim_end()))
        } else {
            line_of(&bad, at)
        };
        assert_eq!(e.line, expected, "{from} -> {to}: {e}");
    }
    // Options of another check are not silently ignored.
    let e = error(&GOOD.replace("check: dicom-echo", "check: tcp"));
    assert!(
        e.message
            .contains("`called_ae` applies to `check: dicom-echo` only; this check is `tcp`"),
        "{e}"
    );
    // A service without reals, and a real that is another service's VIP.
    let single = "interfaces:\n  - name: eth0\nservices:\n  - name: a\n    vip: 198.18.0.100\n    ports: [80]\n    protocol: tcp\n    forwarding: dr\n    reals: []\n";
    let e = error(single);
    assert!(
        e.message.contains("`reals` needs at least one entry"),
        "{e}"
    );
    assert_eq!((e.line, e.column), (9, 12), "at the empty list: {e}");
    let looped = format!(
        "{}    reals:\n      - address: 198.18.0.101\n  - name: b\n    vip: 198.18.0.101\n    ports: [80]\n    protocol: tcp\n    forwarding: dr\n    reals:\n      - address: 198.18.0.11\n",
        single.replace("    reals: []\n", "")
    );
    let e = error(&looped);
    assert!(e.message.contains("is a VIP of this balancer"), "{e}");
    assert_eq!(e.line, 10, "{e}");
    // Legal but suspicious: a warning.
    let all_zero = GOOD.replacen(
        "      - address: 198.18.0.11\n        weight: 100\n",
        "      - address: 198.18.0.11\n        weight: 0\n",
        1,
    );
    let p = parse("p.yaml", &all_zero).unwrap();
    assert!(
        crate::policy::warnings(&p)
            .iter()
            .any(|w| w.contains("every real has weight 0"))
    );
}

/// What an adversarial trial of `validate` found accepted or explained badly.
#[test]
fn unsafe_values_are_refused_and_explained_as_written() {
    let nat = GOOD.replace("forwarding: dr", "forwarding: nat");
    // (replace, with, message needle, the line the problem is on)
    let cases: &[(&str, &str, &str)] = &[
        (
            "    vip: 198.18.0.100\n    ports: [104",
            "    vip: 0.1.2.3\n    ports: [104",
            "in 0.0.0.0/8",
        ),
        (
            "address: 198.18.0.11",
            "address: 240.0.0.1",
            "in 240.0.0.0/4",
        ),
        (
            "fallback: 198.18.0.99",
            "fallback: 255.255.255.254",
            "in 240.0.0.0/4",
        ),
        (
            "  - name: viewer",
            "  - name: \"view\\ner\"",
            "printable, on one line",
        ),
        ("weight: 100", "weight: 1e3", "not `1e3`"),
        (
            "address: 198.18.0.11",
            "address: 10.1",
            "`10.1` is not an IPv4 address",
        ),
        (
            "address: 198.18.0.11",
            "address: \"198.18.0.11 \"",
            "has spaces around it",
        ),
        (
            "address: 198.18.0.11",
            "address: '[2001:2::11]:80'",
            "`[2001:2::11]:80` has a port",
        ),
        (
            "address: 198.18.0.11",
            "address: '[2001:2::11]'",
            "without brackets",
        ),
        (
            "address: 198.18.0.11",
            "address: ::1",
            "::1 is the loopback address",
        ),
        ("address: 198.18.0.11", "address: fe80::11", "link-local"),
        (
            "address: 198.18.0.11",
            "address: ::ffff:198.18.0.11",
            "write the IPv4 address itself (198.18.0.11)",
        ),
        (
            "address: 198.18.0.11",
            "address: 2001:2::g",
            "is not an IPv6 address",
        ),
        ("      rise: 2", "      rise: 1.0", "not `1.0`"),
    ];
    for (from, to, needle) in cases {
        assert!(nat.contains(from), "{from}");
        let text = nat.replacen(from, to, 1);
        let first_to_line = to.lines().next().unwrap();
        let line = text
            .lines()
            .position(|l| l.contains(first_to_line.trim()))
            .unwrap() as u64
            + 1;
        let all = errors(&text);
        let e = all
            .0
            .iter()
            .find(|e| e.message.contains(needle))
            .unwrap_or_else(|| panic!("{to}: no `{needle}` in\n{all}"));
        assert_eq!(e.line, line, "{to}: {e}");
        assert!(!e.message.contains("not valid YAML"), "{to}: {e}");
    }
    // HTTP values that would inject headers or break the request line.
    let http = GOOD.replacen(
        "      check: dicom-echo\n      port: 104\n",
        "      check: http\n      port: 104\n      host: \"pacs\\r\\nX-Evil: 1\"\n      path: /a b\n      expect_status: [200, 204]\n      expect_body: \"(\"\n",
        1,
    )
    .replace("      called_ae: ORTHANC\n      calling_ae: XDPLB\n", "");
    let all = errors(&http);
    for needle in [
        "`host` is a host name",
        "`path` must have no spaces",
        "`expect_status` is an HTTP status or a range like 200-399, not a list",
        "`expect_body` is not a valid regular expression",
    ] {
        assert!(
            all.0.iter().any(|e| e.message.contains(needle)),
            "{needle}:\n{all}"
        );
    }
    assert!(
        all.0.iter().all(|e| !e.message.contains('\n')),
        "one line each:\n{all}"
    );
    // A fallback that is another service's VIP; `check: none` with rise and fall.
    let e = error(
        &GOOD
            .replace("fallback: 198.18.0.99", "fallback: 198.18.0.100")
            .replacen(
                "    vip: 198.18.0.100\n    ports: [104",
                "    vip: 198.18.0.101\n    ports: [104",
                1,
            ),
    );
    assert!(e.message.contains("is a VIP of this balancer"), "{e}");
    let none = GOOD
        .replacen(
            "      check: dicom-echo\n      port: 104\n      interval: 2s\n      timeout: 1s\n",
            "      check: none\n",
            1,
        )
        .replace("      called_ae: ORTHANC\n      calling_ae: XDPLB\n", "");
    let all = errors(&none);
    assert!(
        all.0
            .iter()
            .any(|e| e.message.contains("`rise` does not apply")),
        "{all}"
    );
    assert!(
        all.0
            .iter()
            .any(|e| e.message.contains("`fall` does not apply")),
        "{all}"
    );
}

#[test]
fn structure_mistakes_are_reported_once_where_they_are() {
    // A mistyped required key: "did you mean", not also "needs `protocol`".
    let all = errors(&GOOD.replacen("    protocol: tcp", "    protocl: tcp", 1));
    assert_eq!(all.0.len(), 1, "{all}");
    assert!(
        all.first().message.contains("did you mean `protocol`"),
        "{all}"
    );
    // An empty required key is not told it may be left out.
    let e = error(&GOOD.replacen("    vip: 198.18.0.100", "    vip:", 1));
    assert!(e.message.contains("`vip` needs a value"), "{e}");
    // A second document, at its `---`.
    let e = error(&format!("{GOOD}---\ninterfaces: []\n"));
    let line = GOOD.lines().count() as u64 + 1;
    assert_eq!((e.line, e.column), (line, 1), "{e}");
    assert!(e.message.contains("one document"), "{e}");
    // A file of comments: empty, at a line it has.
    let e = error("# nothing yet\n# really\n");
    assert_eq!(e.line, 1, "{e}");
    // Parser words for common slips are replaced.
    let e = error(&GOOD.replacen("ports: [104, 11112]", "ports:[104, 11112]", 1));
    assert!(!e.message.contains("simple key"), "{e}");
}

#[test]
fn suspicious_checks_are_warned_about() {
    let none = GOOD.replacen("      check: dicom-echo\n      port: 104\n      interval: 2s\n      timeout: 1s\n      rise: 2\n      fall: 3\n", "      check: none\n", 1)
        .replace("      called_ae: ORTHANC\n      calling_ae: XDPLB\n", "");
    let warnings = crate::policy::warnings(&parse("p.yaml", &none).unwrap());
    assert!(
        warnings.iter().any(|w| w.contains("`check: none`")),
        "{warnings:?}"
    );
    let udp = GOOD
        .replacen(
            "protocol: tcp\n    forwarding: dr",
            "protocol: udp\n    forwarding: dr",
            1,
        )
        .replacen(
            "      check: dicom-echo\n      port: 104\n",
            "      check: dicom-echo\n",
            1,
        );
    let warnings = crate::policy::warnings(&parse("p.yaml", &udp).unwrap());
    assert!(
        warnings.iter().any(|w| w.contains("is UDP")),
        "{warnings:?}"
    );
}

#[test]
fn snat_takes_a_source_address_and_port_translation() {
    let snat = GOOD
        .replace("forwarding: dr", "forwarding: snat")
        .replace("forwarding: nat", "forwarding: snat");
    let p = parse("p.yaml", &snat).unwrap();
    assert_eq!(p.services[0].forwarding, Forwarding::Snat);
    assert_eq!(
        p.services[0].snat_address, None,
        "this host's own address by default"
    );
    assert_eq!(
        p.services[1].reals[0].port,
        Some(8443),
        "port translation as in NAT"
    );
    let with = snat.replacen(
        "    forwarding: snat\n",
        "    forwarding: snat\n    snat_address: 198.19.0.1\n",
        1,
    );
    let p = parse("p.yaml", &with).unwrap();
    assert_eq!(
        p.services[0].snat_address,
        Some(Ipv4Addr::new(198, 19, 0, 1).into())
    );
    let p = parse(
        "p.yaml",
        &snat.replace("fallback: 198.18.0.99", "fallback: 198.18.0.99:8443"),
    )
    .unwrap();
    assert_eq!(p.services[0].fallback.unwrap().port, Some(8443));
    // Only SNAT has a source to set; it cannot be the VIP or a real.
    for (text, needle) in [
        (
            GOOD.replacen(
                "    forwarding: dr\n",
                "    forwarding: dr\n    snat_address: 198.19.0.1\n",
                1,
            ),
            "needs `forwarding: snat`",
        ),
        (
            snat.replacen(
                "    forwarding: snat\n",
                "    forwarding: snat\n    snat_address: 198.18.0.100\n",
                1,
            ),
            "cannot be the service's VIP",
        ),
        (
            snat.replacen(
                "    forwarding: snat\n",
                "    forwarding: snat\n    snat_address: 198.18.0.11\n",
                1,
            ),
            "is a real of this service",
        ),
        (
            snat.replacen(
                "    forwarding: snat\n",
                "    forwarding: snat\n    snat_address: 2001:2::1\n",
                1,
            ),
            "is IPv6 but the VIP is IPv4",
        ),
    ] {
        let all = errors(&text);
        assert!(
            all.0.iter().any(|e| e.message.contains(needle)),
            "{needle}:\n{all}"
        );
        let line = text
            .lines()
            .position(|l| l.contains("snat_address"))
            .unwrap() as u64
            + 1;
        assert!(
            all.0.iter().any(|e| e.line == line),
            "at snat_address:\n{all}"
        );
    }
}

#[test]
fn nat_and_a_shared_snat_address_behind_several_balancers_are_warned_about() {
    let bgp = format!("vip_announcement: bgp\n{GOOD}");
    let warnings = crate::policy::warnings(&parse("p.yaml", &bgp).unwrap());
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("`viewer`: NAT behind several")),
        "{warnings:?}"
    );
    let snat = bgp.replace(
        "forwarding: nat",
        "forwarding: snat\n    snat_address: 198.19.0.1",
    );
    let warnings = crate::policy::warnings(&parse("p.yaml", &snat).unwrap());
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("`snat_address` with vip_announcement: bgp"))
    );
    // DR, and SNAT from each balancer's own address, are what several balancers do well.
    let fine = bgp.replace("forwarding: nat", "forwarding: snat");
    assert!(crate::policy::warnings(&parse("p.yaml", &fine).unwrap()).is_empty());
}

#[test]
fn ipv6_services_are_one_family_each() {
    let text = "
interfaces:
  - name: eth0
services:
  - name: viewer6
    vip: 2001:2::100
    ports: [443]
    protocol: tcp
    forwarding: nat
    persistence:
      timeout: 1h
      netmask: 64
    fallback: '[2001:2::99]:8080'
    reals:
      - address: 2001:2:0:1::11
        port: 8443
  - name: viewer4
    vip: 198.18.0.100
    ports: [443]
    protocol: tcp
    forwarding: dr
    reals:
      - address: 198.18.0.11
";
    let policy = parse("p.yaml", text).expect("a dual-stack policy is valid");
    let v6 = &policy.services[0];
    assert_eq!(v6.vip, "2001:2::100".parse::<IpAddr>().unwrap());
    assert_eq!(v6.persistence.unwrap().netmask, 64);
    let fallback = v6.fallback.unwrap();
    assert_eq!(
        (fallback.address, fallback.port),
        ("2001:2::99".parse().unwrap(), Some(8080))
    );
    assert_eq!(
        RealRef::of(v6, &v6.reals[0]).to_string(),
        "viewer6/[2001:2:0:1::11]:8443"
    );
    // Without a netmask an IPv6 client is its whole address.
    let whole = text.replace("      netmask: 64\n", "");
    assert_eq!(
        parse("p.yaml", &whole).unwrap().services[0]
            .persistence
            .unwrap()
            .netmask,
        128
    );

    for (from, to, needle) in [
        (
            "      - address: 2001:2:0:1::11",
            "      - address: 198.19.0.11",
            "real 198.19.0.11 is IPv4 but the VIP 2001:2::100 is IPv6: a service is of one family",
        ),
        (
            "    fallback: '[2001:2::99]:8080'",
            "    fallback: 198.18.0.99:8080",
            "fallback 198.18.0.99 is IPv4 but the VIP 2001:2::100 is IPv6",
        ),
        (
            "      - address: 198.18.0.11",
            "      - address: 2001:2::11",
            "real 2001:2::11 is IPv6 but the VIP 198.18.0.100 is IPv4",
        ),
    ] {
        assert!(text.contains(from), "{from}");
        let all = errors(&text.replacen(from, to, 1));
        assert!(
            all.0.iter().any(|e| e.message.contains(needle)),
            "{needle}:\n{all}"
        );
    }
    // An IPv4 service's netmask stays within 32.
    let wide = text.replacen(
        "    forwarding: dr\n",
        "    forwarding: dr\n    persistence:\n      timeout: 1h\n      netmask: 64\n",
        1,
    );
    let all = errors(&wide);
    assert!(
        all.0.iter().any(|e| e
            .message
            .contains("`netmask` of an IPv4 service must be 0 to 32, not 64")),
        "{all}"
    );
}
