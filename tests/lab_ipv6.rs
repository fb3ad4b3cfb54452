//! IPv6 end to end in dual-stack namespace labs: real TCP and UDP over IPv6 (beside IPv4)
//! through the real XDP program attached by the real `xdplb run`, DR to reals prepared by the
//! real `xdplb realserver up`, NAT to reals whose IPv6 gateway is the balancer, health checks
//! over IPv6, and IPv6 reals as `xdplb status` and `/metrics` name them.
//!
//! Addresses: IPv6 from 2001:2::/48 only (clients 2001:2::/64, NAT reals 2001:2:0:1::/64,
//! VIP6 2001:2::100), IPv4 from 198.18.0.0/15 as in the other labs.

use std::{
    collections::HashMap,
    io::Write,
    net::{IpAddr, SocketAddr, TcpStream},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use lb_common::counters::Reason;
use serde_json::Value;
use xdplb_lab::lab::{
    Arms, CLIENT_PORT, CLIENT6, Conversation, DR_UDP_PORT, DrLab, EchoServer, LabConfig, NatLab,
    Netns, VIP, VIP6, http_get, udp_who, who, xdplb_binary,
};

const PYTHON: &str = "/usr/bin/python3";
/// Health checks of the policies here: every 500 ms, down after 2 failures, up after 2 passes.
const INTERVAL_MS: u64 = 500;
const FALL: u64 = 2;

/// `xdplb ARGS` in `ns`: (success, stdout).
fn xdplb_in(ns: &Netns, args: &[&str]) -> Result<(bool, String)> {
    let out = ns
        .command(xdplb_binary()?.to_str().context("xdplb path")?)
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

/// One IPv6 (or IPv4) ping from the client: it makes the client solicit `address`'s MAC.
fn probe(lab: &DrLab, address: IpAddr) {
    let _ = lab
        .client
        .command("ping")
        .args(["-c", "1", "-W", "1", &address.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Forgets the client's neighbour entries, so the next packet solicits anew.
fn flush_client_neighbours(lab: &DrLab) -> Result<()> {
    lab.client.ip(&["neigh", "flush", "dev", "eth0"])?;
    Ok(())
}

/// The MAC the client learns for `address` within `wait`, probing it every half second.
fn resolved_mac(lab: &DrLab, address: IpAddr, wait: Duration) -> Result<Option<String>> {
    let start = Instant::now();
    loop {
        probe(lab, address);
        if let Some(mac) = lab.client_mac_for(address)? {
            return Ok(Some(mac));
        }
        if start.elapsed() >= wait {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn status_json(balancer: &xdplb_lab::lab::Balancer) -> Result<Value> {
    let out = balancer.ctl(&["status", "--json"])?;
    ensure!(
        out.status.success(),
        "xdplb status --json: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn service<'a>(status: &'a Value, name: &str) -> Result<&'a Value> {
    status["services"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == name)
        .with_context(|| format!("no service {name} in {status}"))
}

fn real_in<'a>(status: &'a Value, service_name: &str, address: &str) -> Result<&'a Value> {
    service(status, service_name)?["reals"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["address"] == address)
        .with_context(|| format!("no real {address} in {service_name}: {status}"))
}

/// Scrapes /metrics from `url` inside `ns` and parses it with the Prometheus project's own
/// parser: (name, labels, value) per sample.
fn scrape(ns: &Netns, url: &str) -> Result<Vec<(String, Value, f64)>> {
    let text = ns.command("curl").args(["-sfg", url]).output()?;
    ensure!(text.status.success(), "scraping {url} failed");
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
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn sample(samples: &[(String, Value, f64)], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l[*k] == *v))
        .map(|(_, _, v)| *v)
}

/// The dual-stack DR policy: `dicom` (IPv4) and `dicom6` (IPv6) on port 104 and `dns6` (UDP
/// over IPv6) on 53, all over the same reals; `health` (indented by 4) for the TCP services.
fn dr_dual_policy(lab: &DrLab, health: &str) -> String {
    let mut text = String::from("interfaces:\n  - name: eth0\n    xdp_mode: driver\nservices:\n");
    let services: [(&str, IpAddr, u16, &str, &str); 3] = [
        ("dicom", VIP.into(), 104, "tcp", health),
        ("dicom6", VIP6.into(), 104, "tcp", health),
        ("dns6", VIP6.into(), DR_UDP_PORT, "udp", ""),
    ];
    for (name, vip, port, protocol, health) in services {
        text += &format!(
            "  - name: {name}\n    vip: {vip}\n    ports: [{port}]\n    protocol: {protocol}\n    forwarding: dr\n{health}    reals:\n"
        );
        for (i, (_, v4, _)) in lab.reals.iter().enumerate() {
            let address: IpAddr = if vip.is_ipv6() {
                lab.real6(i).into()
            } else {
                (*v4).into()
            };
            text += &format!("      - address: {address}\n");
        }
    }
    text
}

fn count(answers: &mut HashMap<String, usize>, name: String) {
    *answers.entry(name).or_default() += 1;
}

#[test]
fn dual_stack_dr_balances_tcp_and_udp_over_ipv6_beside_ipv4() -> Result<()> {
    let started = Instant::now();
    let mut lab = DrLab::build_dual_stack(&LabConfig {
        reals: 3,
        ports: vec![104],
    })?;

    // Before any balancer holds VIP6 nothing answers the client's neighbour solicitations for
    // it: the reals hold it on lo only.
    ensure!(
        resolved_mac(&lab, VIP6.into(), Duration::from_millis(1500))?.is_none(),
        "a real answered neighbour solicitations for VIP6: {}",
        lab.client.ip(&["-6", "neigh", "show"])?
    );
    for (ns, _, name) in &lab.reals {
        let (ok, report) = xdplb_in(
            ns,
            &[
                "realserver",
                "check",
                "--vip",
                &VIP6.to_string(),
                "--interface",
                "eth0",
            ],
        )?;
        ensure!(ok, "realserver check for VIP6 on {name}: {report}");
        ensure!(
            report.contains("ok") && report.contains("neighbour solicitation"),
            "{name}: {report}"
        );
        ensure!(
            !report.contains("ARP"),
            "{name}: ARP text for an IPv6 VIP: {report}"
        );
    }
    flush_client_neighbours(&lab)?;

    lab.balancer.metrics_listen = "[::1]:9475".into();
    lab.balancer.start(&dr_dual_policy(&lab, ""))?;
    let fail = |what: String, e: anyhow::Error, lab: &DrLab| {
        anyhow::anyhow!(
            "{what}: {e:#}\nstats:\n{}\nlog:\n{}",
            lab.balancer.stats_table().unwrap_or_default(),
            lab.balancer.log()
        )
    };

    // A long-lived IPv6 connection (a study transfer) held for the whole test.
    let mut held = Conversation::open(&lab.client, lab.vip6(104))
        .map_err(|e| fail("the held IPv6 connection".into(), e, &lab))?;
    let held_real = held.who()?;
    ensure!(
        held.local()?.ip() == IpAddr::from(CLIENT6),
        "the held connection is not IPv6 from the client: {:?}",
        held.local()
    );

    // New connections over both families, to the same reals.
    let (mut v6, mut v4) = (HashMap::new(), HashMap::new());
    for i in 0..240 {
        if i % 2 == 0 {
            let name = who(&lab.client, lab.vip6(104))
                .map_err(|e| fail(format!("IPv6 connection {i}"), e, &lab))?;
            count(&mut v6, name);
        } else {
            let name = who(&lab.client, lab.vip(104))
                .map_err(|e| fail(format!("IPv4 connection {i}"), e, &lab))?;
            count(&mut v4, name);
        }
        if i % 60 == 0 {
            ensure!(held.who()? == held_real, "the held IPv6 connection moved");
        }
    }
    // UDP over IPv6: each answer must come from VIP6:53 (the client's socket is connected).
    let mut udp = HashMap::new();
    for i in 0..90 {
        let name = udp_who(&lab.client, lab.vip6(DR_UDP_PORT))
            .map_err(|e| fail(format!("IPv6 UDP request {i}"), e, &lab))?;
        count(&mut udp, name);
    }
    for (_, _, name) in &lab.reals {
        // Of 120 TCP connections per family and 90 datagrams, each real's fair share is 40 and
        // 30; Maglev's spread of this few is wide (26 to 54 seen), a real left out gets none.
        let shares = [("IPv6", &v6, 15), ("IPv4", &v4, 15), ("UDP6", &udp, 12)];
        for (family, answers, least) in shares {
            let got = answers.get(name).copied().unwrap_or(0);
            ensure!(got >= least, "{family}: {name} answered {got}: {answers:?}");
        }
    }
    ensure!(
        held.who()? == held_real,
        "the held IPv6 connection kept its real to the end"
    );

    // The client reached both VIPs through the balancer's MAC: no real ever answered a
    // neighbour solicitation (or ARP) for them.
    let balancer_mac = lab.balancer.mac("eth0")?;
    ensure!(
        lab.client_mac_for(VIP6.into())? == Some(balancer_mac.clone()),
        "the client's neighbour entry for VIP6: {}",
        lab.client.ip(&["-6", "neigh", "show"])?
    );
    ensure!(lab.client_mac_for(VIP.into())? == Some(balancer_mac));

    // Each IPv6 real was handed its flows by XDP.
    let stats = lab.balancer.stats()?;
    for i in 0..lab.reals.len() {
        let address = IpAddr::from(lab.real6(i));
        let flows: u64 = stats
            .reals
            .iter()
            .filter(|r| r.address == address)
            .map(|r| r.counters.new_flows)
            .sum();
        ensure!(
            flows >= 15,
            "{address}: {flows} new flows in the data plane's counters"
        );
    }

    // `xdplb status`, its JSON and /metrics name the IPv6 reals by their addresses.
    let status = status_json(&lab.balancer)?;
    ensure!(service(&status, "dicom6")?["vip"] == VIP6.to_string());
    for i in 0..lab.reals.len() {
        let address = lab.real6(i).to_string();
        for name in ["dicom6", "dns6"] {
            let real = real_in(&status, name, &address)?;
            ensure!(real["state"] == "up", "{name} {address}: {real}");
        }
    }
    let table = lab.balancer.status_table()?;
    ensure!(
        table.contains("[2001:2::100]:104/tcp dr") && table.contains("[2001:2::100]:53/udp dr"),
        "{table}"
    );
    for i in 0..lab.reals.len() {
        ensure!(table.contains(&format!(" {} ", lab.real6(i))), "{table}");
    }
    let metrics = scrape(&lab.balancer.ns, "http://[::1]:9475/metrics")?;
    for i in 0..lab.reals.len() {
        let address = lab.real6(i).to_string();
        let labels = [("service", "dicom6"), ("real", address.as_str())];
        ensure!(
            sample(&metrics, "xdplb_real_up", &labels) == Some(1.0),
            "xdplb_real_up for {address}"
        );
        ensure!(
            sample(&metrics, "xdplb_real_flows_created_total", &labels).unwrap_or(0.0) >= 15.0,
            "xdplb_real_flows_created_total for {address}"
        );
    }
    eprintln!(
        "dual-stack DR: IPv6 {v6:?}, IPv4 {v4:?}, UDP over IPv6 {udp:?}; {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[test]
fn a_real_answers_no_neighbour_solicitation_for_an_ipv6_vip_and_check_says_when_it_would()
-> Result<()> {
    let started = Instant::now();
    // No balancer runs: whatever answers for VIP6 is a real.
    let lab = DrLab::build_dual_stack(&LabConfig {
        reals: 1,
        ports: vec![],
    })?;
    let (real, _, _) = &lab.reals[0];
    let real_mac = xdplb_lab::lab::mac_text(&real.mac("eth0")?);
    let vip6 = VIP6.to_string();
    let check = || {
        xdplb_in(
            real,
            &["realserver", "check", "--vip", &vip6, "--interface", "eth0"],
        )
    };
    let sysctl = |setting: &str| -> Result<()> {
        ensure!(
            real.command("sysctl")
                .args(["-qw", setting])
                .status()?
                .success(),
            "sysctl {setting}"
        );
        Ok(())
    };
    let nobody_answers = |why: &str| -> Result<()> {
        flush_client_neighbours(&lab)?;
        let mac = resolved_mac(&lab, VIP6.into(), Duration::from_millis(1500))?;
        ensure!(mac.is_none(), "{why}: the client resolved VIP6 to {mac:?}");
        Ok(())
    };
    let the_real_answers_for = |address: IpAddr, why: &str| -> Result<()> {
        flush_client_neighbours(&lab)?;
        // A proxy's or an anycast answer waits up to proxy_delay (0.8 s).
        let mac = resolved_mac(&lab, address, Duration::from_secs(5))?;
        ensure!(
            mac.as_deref() == Some(real_mac.as_str()),
            "{why}: the client resolved {address} to {mac:?}, not the real's {real_mac}"
        );
        Ok(())
    };
    let the_real_answers = |why: &str| the_real_answers_for(VIP6.into(), why);

    // VIP6 on lo only: no answer, and check is happy.
    let (ok, report) = check()?;
    ensure!(ok, "{report}");
    nobody_answers("VIP6 on lo")?;

    // proxy_ndp alone, even on a forwarding host, answers nothing: it needs a proxy entry.
    sysctl("net.ipv6.conf.all.forwarding=1")?;
    sysctl("net.ipv6.conf.eth0.proxy_ndp=1")?;
    let (ok, report) = check()?;
    ensure!(ok, "proxy_ndp without an entry: {report}");
    nobody_answers("proxy_ndp=1 and forwarding=1 without a proxy entry")?;

    // With a proxy entry for VIP6 the real answers for it, and check says so and how to fix it.
    real.ip(&["-6", "neigh", "add", "proxy", &vip6, "dev", "eth0"])?;
    let (ok, report) = check()?;
    ensure!(!ok, "a proxy entry for VIP6 must fail the check: {report}");
    ensure!(
        report.contains("PROBLEM")
            && report.contains("proxy")
            && report.contains(&format!("ip -6 neigh del proxy {vip6} dev eth0")),
        "{report}"
    );
    the_real_answers("a proxy entry with proxy_ndp=1 and forwarding=1")?;

    // The entry stays, proxy_ndp goes: no answer, and check only notes the entry.
    sysctl("net.ipv6.conf.eth0.proxy_ndp=0")?;
    let (ok, report) = check()?;
    ensure!(
        ok && report.contains("note"),
        "a proxy entry without proxy_ndp: {report}"
    );
    nobody_answers("a proxy entry with proxy_ndp=0")?;
    real.ip(&["-6", "neigh", "del", "proxy", &vip6, "dev", "eth0"])?;

    // A forwarding host joins its prefixes' subnet-router anycast addresses and answers for
    // them: a VIP that is one (2001:2::, the prefix itself) would be answered for; check says so.
    let anycast = "2001:2::";
    let (ok, report) = xdplb_in(
        real,
        &[
            "realserver",
            "check",
            "--vip",
            anycast,
            "--interface",
            "eth0",
        ],
    )?;
    ensure!(
        !ok && report.contains("anycast"),
        "a VIP that is an anycast address of eth0: {report}"
    );
    the_real_answers_for(anycast.parse()?, "a subnet-router anycast address")?;
    sysctl("net.ipv6.conf.all.forwarding=0")?;

    // VIP6 on the real's own interface (an operator's slip): it answers, check says so.
    real.add_ipv6("eth0", VIP6, 128)?;
    let (ok, report) = check()?;
    ensure!(
        !ok && report.contains("address of eth0"),
        "VIP6 on eth0: {report}"
    );
    the_real_answers("VIP6 on eth0")?;
    real.ip(&["-6", "addr", "del", &format!("{vip6}/128"), "dev", "eth0"])?;
    let (ok, report) = check()?;
    ensure!(ok, "VIP6 back on lo only: {report}");

    // `down` and `up` for an IPv6 VIP alone: the address on lo, no ARP setting touched.
    let (ok, out) = xdplb_in(
        real,
        &["realserver", "down", "--vip", &VIP.to_string(), &vip6],
    )?;
    ensure!(ok, "realserver down: {out}");
    let (ok, report) = check()?;
    ensure!(
        !ok && report.contains("NOT on lo") && report.contains("fix: xdplb realserver up"),
        "VIP6 gone from lo: {report}"
    );
    let (ok, out) = xdplb_in(
        real,
        &["realserver", "up", "--vip", &vip6, "--interface", "eth0"],
    )?;
    ensure!(
        ok && out.contains(&format!("added {vip6}/128 to lo")),
        "{out}"
    );
    ensure!(
        !out.contains("arp_"),
        "up for an IPv6 VIP set ARP sysctls: {out}"
    );
    let arp_ignore = real
        .command("sysctl")
        .args(["-n", "net.ipv4.conf.eth0.arp_ignore"])
        .output()?;
    ensure!(String::from_utf8_lossy(&arp_ignore.stdout).trim() == "0");
    ensure!(
        real.ip(&["-6", "addr", "show", "dev", "lo"])?
            .contains(&format!("{vip6}/128"))
    );
    let (ok, report) = check()?;
    ensure!(ok, "after up for VIP6 alone: {report}");
    nobody_answers("VIP6 on lo again")?;
    // `up` twice changes nothing; `down` takes the address away again.
    let (ok, out) = xdplb_in(real, &["realserver", "up", "--vip", &vip6])?;
    ensure!(ok && out.contains("already on lo"), "{out}");
    let (ok, out) = xdplb_in(real, &["realserver", "down", "--vip", &vip6])?;
    ensure!(
        ok && out.contains(&format!("removed {vip6}/128 from lo")),
        "{out}"
    );
    ensure!(
        !real
            .ip(&["-6", "addr", "show", "dev", "lo"])?
            .contains(&vip6)
    );
    eprintln!(
        "neighbour solicitations: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn nat_over_ipv6(arms: Arms) -> Result<()> {
    let started = Instant::now();
    let mut lab = NatLab::build_dual_stack(arms, 2)?;
    let plan = lab.ipv6.clone().context("dual stack")?;
    lab.balancer.metrics_listen = "127.0.0.1:9475".into();
    lab.balancer.start(&lab.dual_stack_policy()?)?;
    let fail = |what: String, e: anyhow::Error, lab: &NatLab| {
        anyhow::anyhow!(
            "{what}: {e:#}\nstats:\n{}\nlog:\n{}",
            lab.balancer.stats_table().unwrap_or_default(),
            lab.balancer.log()
        )
    };
    let forwarding = lab
        .balancer
        .ns
        .command("sysctl")
        .args(["-n", "net.ipv6.conf.all.forwarding"])
        .output()?;
    ensure!(
        String::from_utf8_lossy(&forwarding.stdout).trim() == "1",
        "IPv6 NAT did not turn IPv6 forwarding on"
    );

    // The balancer is the reals' IPv6 gateway for their own traffic too (routed by the
    // kernel, through the NAT firewall's IPv6 rules).
    let client_service = SocketAddr::from((plan.client, CLIENT_PORT));
    for (ns, _, name) in &lab.reals {
        let answer =
            who(ns, client_service).map_err(|e| fail(format!("{name} -> client"), e, &lab))?;
        ensure!(answer == "client");
    }

    // A long-lived connection through VIP6:80 -> [real]:8080, held for the whole test; the
    // real sees the client's own address (NAT keeps it).
    let mut held = Conversation::open(&lab.client, lab.vip6(80))
        .map_err(|e| fail("the held IPv6 connection".into(), e, &lab))?;
    let held_real = held.who()?;
    let seen = held.peer()?;
    ensure!(
        seen == held.local()? && seen.ip() == IpAddr::from(plan.client),
        "the real saw the connection come from {seen}"
    );

    // HTTP with port translation over IPv6 (curl to [VIP6]:80, served on [real]:8080), and UDP
    // whose answers must come from [VIP6]:53.
    let (mut http, mut udp) = (HashMap::new(), HashMap::new());
    for i in 0..60 {
        let body = http_get(&lab.client, lab.vip6(80))
            .map_err(|e| fail(format!("IPv6 HTTP request {i}"), e, &lab))?;
        count(&mut http, body);
        let name = udp_who(&lab.client, lab.vip6(53))
            .map_err(|e| fail(format!("IPv6 UDP request {i}"), e, &lab))?;
        count(&mut udp, name);
    }
    for (_, _, name) in &lab.reals {
        ensure!(http.get(name).copied().unwrap_or(0) >= 10, "HTTP {http:?}");
        ensure!(udp.get(name).copied().unwrap_or(0) >= 10, "UDP {udp:?}");
    }
    // IPv4 in the same policy still works.
    for i in 0..10 {
        http_get(&lab.client, lab.vip(80))
            .map_err(|e| fail(format!("IPv4 HTTP request {i}"), e, &lab))?;
    }
    ensure!(
        held.who()? == held_real,
        "the held IPv6 connection kept its real"
    );

    // The balancer has forgotten the client's MAC (as a node that has just taken over a pair's
    // VIPs has never learnt it): the translated replies, their source the VIP, go through the
    // kernel, which resolves the client and forwards them. A lost reply would show as a TCP
    // retransmission, a second or more.
    let no_neighbour = |lab: &NatLab| -> Result<u64> {
        Ok(lab
            .balancer
            .stats()?
            .reasons
            .iter()
            .find(|(r, _)| *r == Reason::NoNeighbour)
            .map_or(0, |(_, n)| *n))
    };
    let before = no_neighbour(&lab)?;
    lab.balancer.ns.ip(&[
        "-6",
        "neigh",
        "del",
        &plan.client.to_string(),
        "dev",
        "eth0",
    ])?;
    let asked = Instant::now();
    let name = http_get(&lab.client, lab.vip6(80))
        .map_err(|e| fail("IPv6 HTTP with the client's MAC unknown".into(), e, &lab))?;
    let took = asked.elapsed();
    ensure!(
        took < Duration::from_millis(700),
        "a request while the balancer had no neighbour entry for the client took {took:?}"
    );
    ensure!(
        no_neighbour(&lab)? > before,
        "no reply went through the kernel for want of the client's MAC"
    );
    count(&mut http, name);

    // Status, its JSON and /metrics name the IPv6 reals with their port as [address]:port.
    let status = status_json(&lab.balancer)?;
    for address in &plan.reals {
        let real = real_in(&status, "viewer6", &address.to_string())?;
        ensure!(real["port"] == 8080 && real["state"] == "up", "{real}");
        ensure!(real["new_flows"].as_u64().unwrap_or(0) >= 10, "{real}");
    }
    let table = lab.balancer.status_table()?;
    ensure!(table.contains("[2001:2::100]:80/tcp nat"), "{table}");
    for address in &plan.reals {
        ensure!(table.contains(&format!(" [{address}]:8080 ")), "{table}");
    }
    let metrics = scrape(&lab.balancer.ns, "http://127.0.0.1:9475/metrics")?;
    for address in &plan.reals {
        let name = format!("[{address}]:8080");
        let labels = [("service", "viewer6"), ("real", name.as_str())];
        ensure!(
            sample(&metrics, "xdplb_real_up", &labels) == Some(1.0),
            "xdplb_real_up for {name}"
        );
        ensure!(
            sample(&metrics, "xdplb_real_flows_created_total", &labels).unwrap_or(0.0) >= 10.0,
            "xdplb_real_flows_created_total for {name}"
        );
    }

    // The NAT firewall closes the IPv6 server side as the IPv4 one: straight through the
    // balancer the client reaches neither a real's service port (the data plane drops it,
    // `direct_to_real`) nor another port of it (nftables' IPv6 rules).
    let connects = |lab: &NatLab, to: SocketAddr| -> Result<bool> {
        lab.client
            .within(move || TcpStream::connect_timeout(&to, Duration::from_secs(1)).is_ok())
    };
    // By now the reals' own connections to the client went through the balancer; in one-arm it
    // forwarded them back out the interface they came in on, and an ICMPv6 redirect would
    // have sent the client straight to the reals. None was sent: the client still goes
    // through the balancer.
    let route = lab
        .client
        .ip(&["-6", "route", "get", &plan.reals[0].to_string()])?;
    ensure!(
        route.contains(" via "),
        "the client's route to a real: {route}"
    );
    let (real_ns, _, _) = &lab.reals[0];
    let _other = EchoServer::start(real_ns, 2222, "real-1-other")?;
    let service_port = SocketAddr::from((plan.reals[0], 8080));
    let other_port = SocketAddr::from((plan.reals[0], 2222));
    ensure!(
        !connects(&lab, service_port)?,
        "reached {service_port} directly"
    );
    ensure!(
        !connects(&lab, other_port)?,
        "reached {other_port} directly"
    );
    let direct = lab
        .balancer
        .stats()?
        .reasons
        .iter()
        .find(|(r, _)| *r == Reason::DirectToReal)
        .map_or(0, |(_, n)| *n);
    ensure!(
        direct > 0,
        "the data plane dropped nothing for {service_port}"
    );
    // With `nat_routing: open` the balancer routes it: the firewall was what stopped it.
    lab.balancer
        .reload(&format!("nat_routing: open\n{}", lab.dual_stack_policy()?))?;
    ensure!(
        connects(&lab, other_port)?,
        "{other_port} unreachable with nat_routing: open"
    );
    eprintln!(
        "IPv6 NAT {arms:?}: HTTP {http:?}, UDP {udp:?}; {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[test]
fn two_arm_nat_over_ipv6_tcp_and_udp() -> Result<()> {
    nat_over_ipv6(Arms::Two)
}

#[test]
fn one_arm_nat_over_ipv6_tcp_and_udp() -> Result<()> {
    nat_over_ipv6(Arms::One)
}

#[test]
fn an_ipv6_real_whose_service_stops_goes_down_and_comes_back() -> Result<()> {
    let started = Instant::now();
    let mut lab = DrLab::build_dual_stack(&LabConfig {
        reals: 3,
        ports: vec![104],
    })?;
    let health = format!(
        "    health:\n      check: tcp\n      interval: {INTERVAL_MS}ms\n      timeout: 300ms\n      rise: 2\n      fall: {FALL}\n"
    );
    lab.balancer.start(&dr_dual_policy(&lab, &health))?;
    let real1 = lab.real6(0).to_string();
    let state = |lab: &DrLab| -> Result<String> {
        let status = status_json(&lab.balancer)?;
        Ok(real_in(&status, "dicom6", &real1)?["state"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    };
    let spread = |lab: &DrLab, n: usize| -> HashMap<String, usize> {
        let mut seen = HashMap::new();
        for _ in 0..n {
            let name = who(&lab.client, lab.vip6(104)).unwrap_or_else(|e| format!("failed: {e}"));
            count(&mut seen, name);
        }
        seen
    };
    ensure!(state(&lab)? == "up");
    // An established IPv6 flow on real-2 must not notice any of this.
    let mut held = None;
    for _ in 0..60 {
        let mut c = Conversation::open(&lab.client, lab.vip6(104))?;
        if c.who()? == "real-2" {
            held = Some(c);
            break;
        }
    }
    let mut held = held.context("no connection to real-2 in 60")?;

    // real-1's service stops: its IPv6 real goes down within interval × fall (+ a check's
    // timeout and a second of slack), and new IPv6 connections avoid it.
    lab.stop_service(0);
    let stopped = Instant::now();
    let limit = Duration::from_millis(INTERVAL_MS * FALL + 1300);
    while state(&lab)? != "down" {
        ensure!(
            stopped.elapsed() < limit + Duration::from_secs(5),
            "{real1} never went down:\n{}",
            lab.balancer.status_table()?
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let detected = stopped.elapsed();
    ensure!(
        detected <= limit,
        "{real1} went down after {detected:?} (limit {limit:?})"
    );
    let status = status_json(&lab.balancer)?;
    let down = real_in(&status, "dicom6", &real1)?;
    ensure!(
        down["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("connect"),
        "why {real1} is down: {down}"
    );
    let row = lab
        .balancer
        .status_table()?
        .lines()
        .find(|l| l.contains(&format!(" {real1} ")))
        .map(str::to_string)
        .unwrap_or_default();
    ensure!(row.contains("down"), "status row of {real1}: {row:?}");
    let after = spread(&lab, 60);
    ensure!(
        after.keys().all(|k| k == "real-2" || k == "real-3"),
        "with {real1} down: {after:?}"
    );
    ensure!(held.who()? == "real-2", "the flow on real-2 moved");

    // Its service is back: up again after `rise` passing checks, and it gets new connections.
    lab.start_service(0)?;
    let restarted = Instant::now();
    while state(&lab)? != "up" {
        ensure!(
            restarted.elapsed() < Duration::from_secs(10),
            "{real1} never came back:\n{}",
            lab.balancer.status_table()?
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let back = restarted.elapsed();
    let again = spread(&lab, 60);
    ensure!(
        again.get("real-1").copied().unwrap_or(0) >= 8
            && !again.keys().any(|k| k.starts_with("failed")),
        "after {real1} came back: {again:?}"
    );
    ensure!(held.who()? == "real-2", "the flow on real-2 moved");
    eprintln!(
        "IPv6 health: down after {detected:?}, up {back:?} after the restart; {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
