//! Every key of the policy file: its kind, default, limits and meaning. `shape` checks a file
//! against this table and `reference` renders it as xdplb.yaml(5), so the checks and the
//! documentation cannot drift apart.

use std::time::Duration;

/// A block of keys: the top level, an interface, a service, a health check, ...
pub struct Section {
    /// How messages and the reference name one of these ("a service", "the health check").
    pub noun: &'static str,
    /// Where it sits, as the reference shows it (`services[].health`).
    pub path: &'static str,
    pub doc: &'static str,
    pub keys: &'static [Key],
}

pub struct Key {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
    /// The default, in the file's own notation; empty when there is none to state.
    pub default: &'static str,
    pub doc: &'static str,
}

pub enum Kind {
    /// Free text.
    Text,
    /// A non-empty name other keys and commands refer to.
    Name,
    /// A network interface name.
    Interface,
    /// An IPv4 or IPv6 address other hosts can reach (not unspecified, broadcast, multicast,
    /// loopback or link-local).
    Address,
    /// `ADDRESS` or `ADDRESS:PORT` (IPv6: `[ADDRESS]:PORT`).
    AddressPort,
    /// A TCP/UDP port, 1 to 65535.
    Port,
    /// A list of ports, at least one, none twice.
    Ports,
    Whole {
        min: u64,
        max: u64,
    },
    Duration {
        min: Duration,
        max: Duration,
        whole_seconds: bool,
    },
    Choice(&'static [Choice]),
    Flag,
    /// A DICOM application entity title: 1 to 16 printable ASCII characters, no backslash.
    AeTitle,
    /// An HTTP request path, starting with `/`.
    UrlPath,
    /// An HTTP status or a range of them: `200` or `200-399`.
    StatusRange,
    /// A regular expression.
    Pattern,
    /// A host name for an HTTP Host header: not empty, no spaces or control characters.
    Host,
    /// A program and its arguments, as a list.
    Command,
    Section(&'static Section),
    Sections(&'static Section),
}

pub struct Choice {
    pub value: &'static str,
    pub doc: &'static str,
}

const fn key(name: &'static str, kind: Kind, default: &'static str, doc: &'static str) -> Key {
    Key {
        name,
        kind,
        required: false,
        default,
        doc,
    }
}

const fn required(name: &'static str, kind: Kind, doc: &'static str) -> Key {
    Key {
        name,
        kind,
        required: true,
        default: "",
        doc,
    }
}

const fn choice(value: &'static str, doc: &'static str) -> Choice {
    Choice { value, doc }
}

/// Longest connection-table and persistence timeout: a week, inside the data plane's clock.
pub const MAX_FLOW_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

pub static POLICY: Section = Section {
    noun: "the policy",
    path: "",
    doc: "The top level of the file.",
    keys: &[
        key(
            "vip_announcement",
            Kind::Choice(&[
                choice(
                    "arp",
                    "xdplb puts each VIP/32 on the client-facing interface and the balancer answers ARP for it: a balancer on its own.",
                ),
                choice(
                    "none",
                    "xdplb never adds or removes VIP addresses; keepalived (or the operator) owns them: an active/standby pair.",
                ),
                choice(
                    "bgp",
                    "xdplb keeps each VIP/32 on `lo` while this balancer can serve it (its data plane filled, a real of one of the VIP's services in the table) and removes it otherwise, for BIRD's `protocol direct` to announce over BGP: several active balancers behind an ECMP router. The balancer answers no ARP for VIPs.",
                ),
            ]),
            "arp",
            "Who puts the VIP addresses on this host.",
        ),
        key(
            "nat_routing",
            Kind::Choice(&[
                choice(
                    "closed",
                    "a NAT balancer forwards nothing to the reals but VIP traffic: direct packets to a real's service ports are dropped.",
                ),
                choice(
                    "open",
                    "the balancer also routes other traffic to the reals as an ordinary router (warned about).",
                ),
            ]),
            "closed",
            "Whether a NAT balancer lets client-side hosts reach the reals directly.",
        ),
        required(
            "interfaces",
            Kind::Sections(&INTERFACE),
            "The interfaces the XDP program attaches to; at least one client-facing.",
        ),
        key(
            "services",
            Kind::Sections(&SERVICE),
            "no services",
            "The virtual services: at most 64, with at most 4096 VIP:port pairs and 4096 reals in all.",
        ),
    ],
};

pub static INTERFACE: Section = Section {
    noun: "an interface",
    path: "interfaces[]",
    doc: "An interface the XDP program attaches to.",
    keys: &[
        required("name", Kind::Interface, "The interface name, e.g. `eth0`."),
        key(
            "xdp_mode",
            Kind::Choice(&[
                choice(
                    "driver",
                    "native XDP in the NIC driver (fastest; refused if the driver lacks it).",
                ),
                choice("skb", "generic XDP (works on any interface, slower)."),
                choice("auto", "driver if the driver supports it, else skb."),
            ]),
            "auto",
            "How the program attaches.",
        ),
        key(
            "role",
            Kind::Choice(&[
                choice("outside", "client-facing: VIP traffic arrives here."),
                choice(
                    "inside",
                    "server-facing side of a two-arm NAT balancer: replies from the reals arrive here.",
                ),
            ]),
            "outside",
            "Which side of the balancer the interface is on.",
        ),
    ],
};

pub static SERVICE: Section = Section {
    noun: "a service",
    path: "services[]",
    doc: "A virtual service: a VIP, its ports, and the reals that serve it.",
    keys: &[
        required(
            "name",
            Kind::Name,
            "A unique name; `status`, the metrics and `drain` use it.",
        ),
        required(
            "vip",
            Kind::Address,
            "The virtual address clients connect to, IPv4 or IPv6. A service is of one family: its reals, fallback and `snat_address` are of the VIP's.",
        ),
        required(
            "ports",
            Kind::Ports,
            "The service's ports, as a list: `ports: [104, 11112]`.",
        ),
        required(
            "protocol",
            Kind::Choice(&[choice("tcp", ""), choice("udp", "")]),
            "The transport protocol.",
        ),
        required(
            "forwarding",
            Kind::Choice(&[
                choice(
                    "dr",
                    "direct routing: only the destination MAC is rewritten; the reals hold the VIP on loopback (`xdplb realserver up`) and answer clients directly.",
                ),
                choice(
                    "nat",
                    "the destination address (and port) is rewritten; the reals' replies come back through the balancer, their gateway.",
                ),
                choice(
                    "snat",
                    "as nat, and the source is rewritten too, to `snat_address` and a port of xdplb's range (40960-57343, reserved in the kernel while SNAT services exist): the reals need no configuration at all, and see every connection come from the balancer.",
                ),
            ]),
            "How packets reach the reals.",
        ),
        key(
            "snat_address",
            Kind::Address,
            "this host's own address toward each real",
            "`forwarding: snat` only: the source address the reals see. Set it to an address keepalived moves with the VIPs for an active/standby pair, so a connection survives a takeover.",
        ),
        key(
            "scheduler",
            Kind::Choice(&[
                choice(
                    "maglev",
                    "weighted consistent hashing: adding or removing a real moves few clients.",
                ),
                choice(
                    "source-hash",
                    "by the client's address alone: all of a client's connections go to one real.",
                ),
                choice(
                    "failover",
                    "every connection to the first real that is up, in file order; `backup` reals only when no other is up.",
                ),
            ]),
            "maglev",
            "How a new connection picks its real. Established connections keep their real whatever the scheduler.",
        ),
        key(
            "persistence",
            Kind::Section(&PERSISTENCE),
            "no persistence",
            "Source-IP affinity: a client returns to the same real while it keeps coming back.",
        ),
        key(
            "health",
            Kind::Section(&HEALTH),
            "a TCP connect to each real's service port (UDP: no check)",
            "How the reals are checked.",
        ),
        key(
            "fallback",
            Kind::AddressPort,
            "no fallback",
            "A server used only while no real is up (a sorry server): `ADDRESS`, or with `forwarding: nat` or `snat` `ADDRESS:PORT` (IPv6: `[ADDRESS]:PORT`).",
        ),
        key(
            "timeouts",
            Kind::Section(&TIMEOUTS),
            "",
            "How long the connection table remembers a flow.",
        ),
        required(
            "reals",
            Kind::Sections(&REAL),
            "The real servers; at least one.",
        ),
    ],
};

pub static PERSISTENCE: Section = Section {
    noun: "persistence",
    path: "services[].persistence",
    doc: "Source-IP affinity.",
    keys: &[
        required(
            "timeout",
            Kind::Duration {
                min: Duration::from_secs(1),
                max: MAX_FLOW_TIMEOUT,
                whole_seconds: false,
            },
            "How long after a client's last packet it is still sent to the same real.",
        ),
        key(
            "netmask",
            Kind::Whole { min: 0, max: 128 },
            "32 (IPv6: 128)",
            "Prefix length of the client addresses that count as one client (24: a whole /24 goes to one real). IPv4 services take 0 to 32, IPv6 services 0 to 128 (64: a whole /64, one site's hosts, goes to one real).",
        ),
    ],
};

pub static HEALTH: Section = Section {
    noun: "the health check",
    path: "services[].health",
    doc: "How each real is checked. A real is up after `rise` successes in a row and down after `fall` failures in a row.",
    keys: &[
        required(
            "check",
            Kind::Choice(&[
                choice("tcp", "a TCP connect."),
                choice(
                    "http",
                    "an HTTP GET of `path`; the status must be in `expect_status` and the body match `expect_body`.",
                ),
                choice("https", "as http, over TLS."),
                choice(
                    "dicom-echo",
                    "a DICOM association and C-ECHO (verification), from `calling_ae` to `called_ae`.",
                ),
                choice(
                    "hl7-mllp",
                    "an HL7 v2 message over MLLP, answered by an ACK (AA or CA).",
                ),
                choice(
                    "exec",
                    "runs `command`; exit status 0 is up. The real's address and port are in XDPLB_REAL_ADDRESS and XDPLB_REAL_PORT.",
                ),
                choice("none", "no check: every real counts as up."),
            ]),
            "The kind of check.",
        ),
        key(
            "port",
            Kind::Port,
            "the real's service port",
            "The port checked, when not the service's.",
        ),
        key(
            "interval",
            Kind::Duration {
                min: Duration::from_millis(100),
                max: Duration::from_secs(3600),
                whole_seconds: false,
            },
            "2s",
            "Time between checks of one real.",
        ),
        key(
            "timeout",
            Kind::Duration {
                min: Duration::from_millis(1),
                max: Duration::from_secs(3600),
                whole_seconds: false,
            },
            "1s",
            "How long one check may take; no longer than `interval`.",
        ),
        key(
            "rise",
            Kind::Whole { min: 1, max: 100 },
            "2",
            "Successes in a row that bring a real up.",
        ),
        key(
            "fall",
            Kind::Whole { min: 1, max: 100 },
            "2",
            "Failures in a row that take a real down.",
        ),
        key(
            "called_ae",
            Kind::AeTitle,
            "ANY-SCP",
            "dicom-echo: the AE title of the real (the archive).",
        ),
        key(
            "calling_ae",
            Kind::AeTitle,
            "XDPLB",
            "dicom-echo: the AE title xdplb calls from; the archive may have to know it.",
        ),
        key(
            "path",
            Kind::UrlPath,
            "/",
            "http, https: the path requested.",
        ),
        key(
            "host",
            Kind::Host,
            "the real's address",
            "http, https: the Host header (and TLS server name).",
        ),
        key(
            "expect_status",
            Kind::StatusRange,
            "200-399",
            "http, https: the statuses that count as up: `200` or a range `200-399`.",
        ),
        key(
            "expect_body",
            Kind::Pattern,
            "any body",
            "http, https: a regular expression the body must match.",
        ),
        key(
            "verify_certificate",
            Kind::Flag,
            "true",
            "https: whether the real's certificate must be valid.",
        ),
        key(
            "command",
            Kind::Command,
            "",
            "exec: the program and its arguments, as a list: `command: [/usr/local/bin/check-pacs, --quick]`.",
        ),
    ],
};

pub static TIMEOUTS: Section = Section {
    noun: "the timeouts",
    path: "services[].timeouts",
    doc: "How long a flow stays in the connection table without packets.",
    keys: &[
        key(
            "idle",
            Kind::Duration {
                min: Duration::from_secs(1),
                max: MAX_FLOW_TIMEOUT,
                whole_seconds: true,
            },
            "900s for tcp, 300s for udp",
            "An established flow with no packets for this long is forgotten.",
        ),
        key(
            "closing",
            Kind::Duration {
                min: Duration::from_secs(1),
                max: MAX_FLOW_TIMEOUT,
                whole_seconds: true,
            },
            "10s",
            "A TCP flow after FIN or RST is forgotten this long after its last packet.",
        ),
    ],
};

pub static REAL: Section = Section {
    noun: "a real",
    path: "services[].reals[]",
    doc: "A real server.",
    keys: &[
        required(
            "address",
            Kind::Address,
            "The real's address, of its service's VIP's family.",
        ),
        key(
            "weight",
            Kind::Whole { min: 0, max: 65535 },
            "100",
            "Its share of new connections relative to the others; 0 takes no new connections (drained).",
        ),
        key(
            "port",
            Kind::Port,
            "the service port",
            "`forwarding: nat` or `snat` only: the port the real listens on (port translation).",
        ),
        key(
            "backup",
            Kind::Flag,
            "false",
            "Used only while no real without `backup` is up.",
        ),
    ],
};

/// Every section, for the reference and for "this key belongs elsewhere" hints.
pub static SECTIONS: [&Section; 7] = [
    &POLICY,
    &INTERFACE,
    &SERVICE,
    &PERSISTENCE,
    &HEALTH,
    &TIMEOUTS,
    &REAL,
];

#[cfg(test)]
mod tests {
    use lb_common::maps::{MAX_REALS, MAX_SERVICES, MAX_VIP_PORTS};

    /// The limits the reference states are the data plane's.
    #[test]
    fn stated_limits_are_the_maps_limits() {
        let services = super::POLICY
            .keys
            .iter()
            .find(|k| k.name == "services")
            .unwrap();
        assert!(services.doc.contains(&format!("at most {MAX_SERVICES},")));
        assert!(
            services
                .doc
                .contains(&format!("{MAX_VIP_PORTS} VIP:port pairs"))
        );
        assert!(services.doc.contains(&format!("{MAX_REALS} reals")));
    }
}
