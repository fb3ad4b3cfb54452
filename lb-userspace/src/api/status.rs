//! What `xdplb status` shows: every service and real with its state and why, weight, flows,
//! traffic and last check. The JSON form (`--json`) is stable for scripts: fields are only
//! ever added. The table form is for a person to read at a glance.

use std::{
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub services: Vec<ServiceStatus>,
    /// Packets the data plane passed or dropped, per reason (and `forwarded`).
    pub dataplane: Vec<ReasonCount>,
    /// The flood defence (absent from a controller older than it: all zero).
    #[serde(default)]
    pub flood_defence: FloodDefence,
    /// A hash of the running policy (`policy::fingerprint`): the two nodes of a pair show the
    /// same one when they run the same policy.
    #[serde(default)]
    pub policy_fingerprint: String,
    /// NAT flows this node adopted from a real's reply since the data plane was loaded:
    /// flows it never saw open (a pair peer scheduled them before a takeover).
    #[serde(default)]
    pub nat_flows_adopted: u64,
    /// Whether this node may take mastership of a pair (`xdplb ready`).
    #[serde(default)]
    pub readiness: Readiness,
    /// The NAT firewall (`nat_routing: closed` with NAT services).
    #[serde(default)]
    pub nat_firewall: NatFirewall,
    /// SNAT's source ports (with SNAT services).
    #[serde(default)]
    pub snat: Snat,
}

/// SNAT's source ports: how many flows hold one, and what was refused or dropped.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Snat {
    pub active: bool,
    /// The range flows are given ports from, reserved in the kernel (`40960-57343`).
    pub ports: String,
    /// Flows holding a port now (their ports are freed a second or so after both directions
    /// expire).
    pub flows: u64,
    /// Packets of new flows dropped because every port tried toward their real was held
    /// (`snat_ports_exhausted`; a client's retransmissions count each time).
    pub refused_packets: u64,
    /// Packets to a SNAT port that belonged to no flow, dropped (`snat_unknown`).
    pub unknown_dropped: u64,
}

/// What the NAT firewall keeps out of the server side (controller/firewall.rs).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct NatFirewall {
    pub active: bool,
    /// Packets from the client side to the server side dropped: by the nftables table, and
    /// by the data plane for the reals' service ports (`direct_to_real`).
    pub dropped_packets: u64,
}

/// How long this node has been able to serve, against how long it must have been before
/// `xdplb ready` says yes (controller/readiness.rs).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Readiness {
    /// Milliseconds since every service has had a real in its table; absent while one has not.
    pub serving_for_ms: Option<u64>,
    /// Milliseconds the slowest health check needs to bring a real up (`rise` × `interval` +
    /// `timeout`).
    pub settle_ms: u64,
    /// Why this node may not take mastership now; absent when it may.
    #[serde(default)]
    pub not_ready: Option<String>,
}

/// The flood defence: while a CPU schedules more new flows per second than it allows, new DR
/// flows are forwarded without a connection-table entry, so spoofed sources cannot evict live
/// flows (README, "Floods").
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FloodDefence {
    /// Defending now (a CPU was over the limit in the last second or so).
    pub active: bool,
    /// Packets of new flows forwarded without an entry since the data plane was loaded.
    pub untracked_packets: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReasonCount {
    pub reason: String,
    pub packets: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServiceStatus {
    pub name: String,
    pub vip: IpAddr,
    pub ports: Vec<u16>,
    pub protocol: String,
    pub forwarding: String,
    pub scheduler: String,
    /// This node holds the VIP address now (with `vip_announcement: none`, keepalived decides:
    /// the active node holds it, the standby does not).
    #[serde(default)]
    pub vip_held: bool,
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
    pub reals: Vec<RealStatus>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Takes new flows (or stands by, for a backup or the fallback: see `reason`).
    Up,
    /// Failing its health check or unreachable: no flows.
    Down,
    /// Weight 0 or drained by an operator: keeps its flows, takes no new ones.
    Drained,
    /// Halted by an operator: out of the table, its flows moved to other reals.
    Halted,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Up => "up",
            State::Down => "down",
            State::Drained => "drained",
            State::Halted => "halted",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RealStatus {
    pub address: IpAddr,
    /// NAT port translation, if any.
    pub port: Option<u16>,
    /// SNAT: the source address the real sees (absent until a route to it is known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snat_address: Option<IpAddr>,
    /// `real`, `backup` or `fallback`.
    pub role: String,
    pub state: State,
    /// Why it is in that state.
    pub reason: String,
    /// Takes new flows now (in the service's live table).
    pub in_table: bool,
    pub weight: u16,
    /// Live connection-table entries pointing at it.
    pub flows: u64,
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
    pub check: Option<CheckStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckStatus {
    pub kind: String,
    pub up: bool,
    /// What the last check saw, or why it failed.
    pub result: String,
    pub latency_ms: f64,
}

impl Status {
    /// An aligned table, one line per real, grouped by service.
    pub fn table(&self) -> String {
        let mut rows = vec![
            [
                "SERVICE", "VIP", "REAL", "STATE", "WEIGHT", "FLOWS", "PACKETS", "BYTES", "CHECK",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for s in &self.services {
            let ports = s
                .ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(",");
            // An IPv6 VIP in brackets, so its ports stay apart from it: [2001:2::100]:104.
            let vip_text = match s.vip {
                IpAddr::V4(v4) => v4.to_string(),
                IpAddr::V6(v6) => format!("[{v6}]"),
            };
            let mut vip = format!("{vip_text}:{ports}/{} {}", s.protocol, s.forwarding);
            if !s.vip_held {
                vip += " (VIP not on this node)";
            }
            if s.reals.is_empty() {
                rows.push(vec![s.name.clone(), vip.clone(), "(no reals)".into()]);
            }
            for (i, r) in s.reals.iter().enumerate() {
                let real = match r.port {
                    Some(p) => SocketAddr::new(r.address, p).to_string(),
                    None => r.address.to_string(),
                };
                let real = if r.role == "real" {
                    real
                } else {
                    format!("{real} ({})", r.role)
                };
                let check = match &r.check {
                    Some(c) => format!(
                        "{} {} {:.0}ms {}",
                        c.kind,
                        if c.up { "ok" } else { "FAIL" },
                        c.latency_ms,
                        c.result
                    ),
                    None => String::from("-"),
                };
                let state = if r.state == State::Up && r.in_table {
                    "up".to_string()
                } else {
                    format!("{} ({})", r.state.name(), r.reason)
                };
                rows.push(vec![
                    if i == 0 {
                        s.name.clone()
                    } else {
                        String::new()
                    },
                    if i == 0 { vip.clone() } else { String::new() },
                    real,
                    state,
                    r.weight.to_string(),
                    r.flows.to_string(),
                    r.packets.to_string(),
                    human_bytes(r.bytes),
                    check,
                ]);
            }
        }
        let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                rows.iter()
                    .filter_map(|r| r.get(c))
                    .map(|v| v.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in rows {
            let mut line = String::new();
            for (c, value) in row.iter().enumerate() {
                if c + 1 == row.len() {
                    line.push_str(value);
                } else {
                    let _ = write!(line, "{value:<w$}  ", w = widths[c]);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        if !self.policy_fingerprint.is_empty() {
            let _ = writeln!(out, "\npolicy fingerprint {}", self.policy_fingerprint);
        }
        let flood = &self.flood_defence;
        if flood.active || flood.untracked_packets > 0 {
            let _ = writeln!(
                out,
                "\nflood defence: {}; {} packets of new flows forwarded without a connection-table entry",
                if flood.active { "ACTIVE now" } else { "idle" },
                flood.untracked_packets
            );
        }
        if self.nat_firewall.active {
            let _ = writeln!(
                out,
                "\nNAT firewall: only the VIPs' services reach the server side; {} packets dropped",
                self.nat_firewall.dropped_packets
            );
        }
        if self.nat_flows_adopted > 0 {
            let _ = writeln!(
                out,
                "\nNAT flows taken over from a real's reply (opened by another balancer): {}",
                self.nat_flows_adopted
            );
        }
        out
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn real(address: [u8; 4], state: State, reason: &str) -> RealStatus {
        RealStatus {
            address: address.into(),
            port: None,
            snat_address: None,
            role: "real".into(),
            state,
            reason: reason.into(),
            in_table: state == State::Up,
            weight: 100,
            flows: 3,
            packets: 1234,
            bytes: 5 * 1024 * 1024,
            new_flows: 7,
            check: Some(CheckStatus {
                kind: "dicom-echo".into(),
                up: state != State::Down,
                result: reason.into(),
                latency_ms: 2.4,
            }),
        }
    }

    #[test]
    fn the_table_is_aligned_and_says_why() {
        let status = Status {
            services: vec![ServiceStatus {
                name: "dicom".into(),
                vip: [198, 18, 0, 100].into(),
                ports: vec![104, 11112],
                protocol: "tcp".into(),
                forwarding: "dr".into(),
                scheduler: "maglev".into(),
                vip_held: true,
                packets: 0,
                bytes: 0,
                new_flows: 0,
                reals: vec![
                    real([198, 18, 0, 11], State::Up, "C-ECHO status 0x0000"),
                    real(
                        [198, 18, 0, 12],
                        State::Down,
                        "association rejected: called AE title not recognized",
                    ),
                ],
            }],
            dataplane: vec![],
            flood_defence: FloodDefence::default(),
            policy_fingerprint: String::new(),
            nat_flows_adopted: 0,
            readiness: Readiness::default(),
            nat_firewall: NatFirewall::default(),
            snat: Snat::default(),
        };
        let table = status.table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        let column = |line: &str, word: &str| line.find(word).unwrap();
        assert_eq!(column(lines[0], "STATE"), column(lines[1], "up"));
        assert_eq!(column(lines[0], "STATE"), column(lines[2], "down"));
        assert!(lines[2].contains("down (association rejected: called AE title not recognized)"));
        assert!(lines[1].contains("5.0 MiB"));
        assert!(lines[1].starts_with("dicom "));
        assert!(lines[2].starts_with(' '));
        let json = serde_json::to_string(&status).unwrap();
        assert!(json.contains("\"state\":\"down\""));
        assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), status);
    }

    #[test]
    fn ipv6_addresses_are_bracketed_before_a_port() {
        let v6 = |text: &str| text.parse::<IpAddr>().unwrap();
        let mut translated = real([0; 4], State::Up, "connect ok");
        translated.address = v6("2001:2:0:1::11");
        translated.port = Some(8080);
        let mut plain = real([0; 4], State::Up, "connect ok");
        plain.address = v6("2001:2:0:1::12");
        let status = Status {
            services: vec![ServiceStatus {
                name: "viewer6".into(),
                vip: v6("2001:2::100"),
                ports: vec![80, 443],
                protocol: "tcp".into(),
                forwarding: "nat".into(),
                scheduler: "maglev".into(),
                vip_held: true,
                packets: 0,
                bytes: 0,
                new_flows: 0,
                reals: vec![translated, plain],
            }],
            dataplane: vec![],
            flood_defence: FloodDefence::default(),
            policy_fingerprint: String::new(),
            nat_flows_adopted: 0,
            readiness: Readiness::default(),
            nat_firewall: NatFirewall::default(),
            snat: Snat::default(),
        };
        let table = status.table();
        assert!(table.contains(" [2001:2::100]:80,443/tcp nat "), "{table}");
        assert!(table.contains(" [2001:2:0:1::11]:8080 "), "{table}");
        assert!(table.contains(" 2001:2:0:1::12 "), "{table}");
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["services"][0]["reals"][0]["address"], "2001:2:0:1::11");
        assert_eq!(json["services"][0]["reals"][0]["port"], 8080);
    }
}
