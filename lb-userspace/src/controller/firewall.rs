//! The NAT firewall (`nat_routing: closed`, the default): a NAT balancer is its reals' gateway
//! and has IP forwarding on, so without rules it would route anything from the client side into
//! the server network. Only the VIPs' services may reach it; replies to connections the server
//! side opened, and the server side's own traffic, pass.
//!
//! Two parts, each where it can see what it needs:
//! - nftables, a table of xdplb's own (`inet xdplb`, forward hook, both IP families), for everything the kernel
//!   routes: a new connection from the client side to the server side is dropped and counted
//!   (counter `direct`), unless it is to a NAT real's service address:port; established and
//!   related traffic, and whatever comes in on an inside interface, passes. The server side is
//!   the inside interfaces (two-arm), or the reals' own addresses (one-arm).
//! - The XDP program, for those service address:ports: the translated first packet of a VIP
//!   flow whose next hop is not resolved yet is handed to the kernel and must pass the
//!   nftables rules, and nftables cannot tell it from a client's direct connection to the same
//!   real:port. The data plane can: it drops routed frames to a NAT real's service
//!   address:port that arrive on a guarded interface (all but the inside ones) and belong to
//!   no VIP flow (`direct_to_real`), before the kernel sees them.
//!
//! - No redirects: a balancer that forwards a packet back out the interface it came in on
//!   (one-arm: clients and reals on one segment) would send its source an ICMP(v6) redirect
//!   naming the other side on-link, and a host that takes it talks to the other side directly
//!   from then on: a client straight to a real, past both parts above (seen in the one-arm
//!   IPv6 lab: once a real's own connection to the client had gone through the balancer, the
//!   client reached the real's ports directly), and a real's VIP replies would skip their
//!   translation. Linux has no send_redirects switch for IPv6, so the table's output chain
//!   drops the redirects this host would send (counter `redirects`).
//!
//! The table is replaced atomically when the policy changes and removed by `xdplb down`; the
//! controller stopping leaves it (the data plane keeps forwarding too).

use std::{io::Write, process::Stdio};

use anyhow::{Context, Result, bail};
use tracing::info;

use crate::{
    dataplane::maps::Maps,
    netconf,
    policy::{NatRouting, Policy, Role},
};

const TABLE: &str = "inet xdplb";
/// The IPv4-only table earlier versions made: removed wherever the table is written or removed.
const OLD_TABLE: &str = "ip xdplb";

#[derive(Debug, Default)]
pub struct Firewall {
    /// The ruleset as last applied (`None`: no table).
    applied: Option<Option<String>>,
}

impl Firewall {
    /// Makes the table and the interfaces' guards what `policy` asks for.
    pub fn follow(&mut self, policy: &Policy, maps: &mut Maps) -> Result<()> {
        let wanted = ruleset(policy);
        for interface in &policy.interfaces {
            let guarded = wanted.is_some() && interface.role != Role::Inside;
            let mut indexes = vec![netconf::if_index(&interface.name)?];
            for member in netconf::bond_members(&interface.name) {
                indexes.push(netconf::if_index(&member)?);
            }
            for index in indexes {
                maps.set_interface_guard(index, guarded)?;
            }
        }
        if self.applied.as_ref() == Some(&wanted) {
            return Ok(());
        }
        // Created empty (so the delete cannot fail), deleted and made anew: one transaction.
        let mut script = format!(
            "table {TABLE} {{}}\ndelete table {TABLE}\ntable {OLD_TABLE} {{}}\ndelete table {OLD_TABLE}\n"
        );
        if let Some(rules) = &wanted {
            script += rules;
        }
        nft(&script).context("writing xdplb's nftables table")?;
        match &wanted {
            Some(_) => info!(
                "NAT firewall: only the VIPs' services reach the server side (nft table `{TABLE}`)"
            ),
            None if self.applied.is_some() => info!("NAT firewall removed"),
            None => {}
        }
        self.applied = Some(wanted);
        Ok(())
    }
}

/// Removes xdplb's table, if there is one (`xdplb down`).
pub fn remove() -> Result<()> {
    nft(&format!(
        "table {TABLE} {{}}\ndelete table {TABLE}\ntable {OLD_TABLE} {{}}\ndelete table {OLD_TABLE}\n"
    ))
}

/// Packets the table dropped (`None` if there is no table or nft cannot say).
pub fn dropped_packets() -> Option<u64> {
    let out = std::process::Command::new("nft")
        .args(["-j", "list", "counter", "inet", "xdplb", "direct"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    json["nftables"]
        .as_array()?
        .iter()
        .find_map(|item| item["counter"]["packets"].as_u64())
}

/// The table's text for `policy`, or `None` when it wants none (no NAT service, or
/// `nat_routing: open`).
fn ruleset(policy: &Policy) -> Option<String> {
    let nat: Vec<_> = policy
        .services
        .iter()
        .filter(|s| s.forwarding.translates())
        .collect();
    if nat.is_empty() || policy.nat_routing == NatRouting::Open {
        return None;
    }
    // IPv4 and IPv6 elements go to sets of their own type: [0] IPv4, [1] IPv6.
    let mut services = [Vec::new(), Vec::new()];
    let mut reals = [Vec::new(), Vec::new()];
    for service in &nat {
        for real in service.members() {
            let family = usize::from(real.address.is_ipv6());
            let (services, reals) = (&mut services[family], &mut reals[family]);
            reals.push(real.address.to_string());
            for &port in &service.ports {
                let port = real.port.unwrap_or(port);
                services.push(format!(
                    "{} . {} . {port}",
                    real.address,
                    service.protocol.name()
                ));
            }
        }
    }
    for list in services.iter_mut().chain(reals.iter_mut()) {
        list.sort();
        list.dedup();
    }
    let inside: Vec<String> = policy
        .interfaces
        .iter()
        .filter(|i| i.role == Role::Inside)
        .map(|i| format!("\"{}\"", i.name))
        .collect();
    let elements = |items: &[String]| {
        if items.is_empty() {
            String::new()
        } else {
            format!("\t\telements = {{ {} }}\n", items.join(", "))
        }
    };
    let server_side = if inside.is_empty() {
        // One-arm: the server side is the reals themselves.
        "\t\tip daddr @reals counter name \"direct\" drop\n\
         \t\tip6 daddr @reals6 counter name \"direct\" drop\n"
            .to_string()
    } else {
        format!(
            "\t\tiifname {{ {0} }} accept\n\t\toifname {{ {0} }} counter name \"direct\" drop\n",
            inside.join(", ")
        )
    };
    Some(format!(
        "table {TABLE} {{\n\
         \tcounter direct {{ }}\n\
         \tset real_services {{\n\
         \t\ttype ipv4_addr . inet_proto . inet_service\n{}\
         \t}}\n\
         \tset reals {{\n\
         \t\ttype ipv4_addr\n{}\
         \t}}\n\
         \tset real_services6 {{\n\
         \t\ttype ipv6_addr . inet_proto . inet_service\n{}\
         \t}}\n\
         \tset reals6 {{\n\
         \t\ttype ipv6_addr\n{}\
         \t}}\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter; policy accept;\n\
         \t\tct state established,related accept\n\
         \t\tip daddr . meta l4proto . th dport @real_services accept\n\
         \t\tip6 daddr . meta l4proto . th dport @real_services6 accept\n\
         {server_side}\
         \t}}\n\
         \tcounter redirects {{ }}\n\
         \tchain output {{\n\
         \t\ttype filter hook output priority filter; policy accept;\n\
         \t\ticmp type redirect counter name \"redirects\" drop\n\
         \t\ticmpv6 type nd-redirect counter name \"redirects\" drop\n\
         \t}}\n\
         }}\n",
        elements(&services[0]),
        elements(&reals[0]),
        elements(&services[1]),
        elements(&reals[1]),
    ))
}

/// Runs `nft -f -` with `script`.
fn nft(script: &str) -> Result<()> {
    let mut child = std::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft (Debian package nftables)")?;
    child
        .stdin
        .take()
        .context("nft's stdin")?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("nft: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}
