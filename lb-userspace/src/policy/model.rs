//! The validated policy: plain values the controller works with.

use std::{net::IpAddr, time::Duration};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub vip_announcement: VipAnnouncement,
    pub nat_routing: NatRouting,
    pub interfaces: Vec<Interface>,
    pub services: Vec<Service>,
}

/// Who puts the VIP addresses on this host (`vip_announcement`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VipAnnouncement {
    /// `arp` (default): xdplb puts each VIP/32 on the client-facing interface, so this host
    /// answers ARP for it: a balancer on its own.
    #[default]
    Arp,
    /// `none`: xdplb never adds or removes a VIP address; keepalived (VRRP) moves them between
    /// the two balancers of a pair.
    Unmanaged,
    /// `bgp`: xdplb keeps each VIP/32 on `lo` while this balancer can serve it, for BIRD's
    /// `protocol direct` to announce to an ECMP router: several active balancers.
    Bgp,
}

/// What a NAT balancer lets through from the client side to the server side (`nat_routing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NatRouting {
    /// `closed` (default): only the VIPs' services; anything else from the client side to the
    /// server network (reals' own addresses, any port) is dropped, replies to connections the
    /// inside opened excepted (controller/firewall.rs).
    #[default]
    Closed,
    /// `open`: this host routes between the sides like a plain router.
    Open,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub xdp_mode: XdpMode,
    pub role: Role,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    /// Native driver mode; fails if the driver has no XDP support.
    Driver,
    /// Generic (skb) mode: works everywhere, slower.
    Skb,
    /// Driver mode if the driver supports it, else skb.
    Auto,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Client-facing: the VIPs live here.
    Outside,
    /// Server-facing side of a two-arm NAT.
    Inside,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => lb_common::IPPROTO_TCP,
            Protocol::Udp => lb_common::IPPROTO_UDP,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarding {
    Dr,
    Nat,
    /// NAT with the source rewritten too (to `Service::snat_address` or this host's own
    /// address toward the real): nothing is configured on the reals.
    Snat,
}

impl Forwarding {
    /// Whether packets are translated (NAT and SNAT): the reals' replies come back through the
    /// balancer, which routes them, so reals are reached through the FIB, not by MAC.
    pub fn translates(self) -> bool {
        matches!(self, Forwarding::Nat | Forwarding::Snat)
    }

    pub fn name(self) -> &'static str {
        match self {
            Forwarding::Dr => "dr",
            Forwarding::Nat => "nat",
            Forwarding::Snat => "snat",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduler {
    Maglev,
    SourceHash,
    Failover,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub vip: IpAddr,
    pub ports: Vec<u16>,
    pub protocol: Protocol,
    pub forwarding: Forwarding,
    /// SNAT: the source address the reals see; `None`: this host's own address toward each
    /// real (the one the kernel picks, as for the health checks).
    pub snat_address: Option<IpAddr>,
    pub scheduler: Scheduler,
    pub persistence: Option<Persistence>,
    pub health: HealthCheck,
    pub fallback: Option<Fallback>,
    pub timeouts: Timeouts,
    pub reals: Vec<Real>,
}

impl Service {
    /// The reals the data plane holds for this service: the policy's, then the fallback
    /// server (if any) as a real of weight 1 that takes new flows only when no real is up.
    pub fn members(&self) -> Vec<Real> {
        let mut members = self.reals.clone();
        if let Some(fallback) = self.fallback {
            members.push(Real {
                address: fallback.address,
                weight: 1,
                port: fallback.port,
                backup: true,
            });
        }
        members
    }

    pub fn is_fallback(&self, real: &Real) -> bool {
        self.fallback
            .is_some_and(|f| f.address == real.address && f.port == real.port)
    }
}

/// The "sorry server" (`fallback: ADDRESS` or `ADDRESS:PORT`): takes new flows only when no
/// real is up. A port (NAT only) translates the destination port, as a real's `port` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fallback {
    pub address: IpAddr,
    pub port: Option<u16>,
}

/// How long the connection table remembers a flow without packets. Defaults are those of
/// IPVS: 900 s for TCP, 300 s for UDP; 10 s once a TCP FIN or RST was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub idle: Duration,
    /// TCP after a FIN or RST in either direction.
    pub closing: Duration,
}

impl Timeouts {
    pub fn default_for(protocol: Protocol) -> Timeouts {
        Timeouts {
            idle: Duration::from_secs(match protocol {
                Protocol::Tcp => 900,
                Protocol::Udp => 300,
            }),
            closing: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Persistence {
    pub timeout: Duration,
    pub netmask: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckKind {
    Tcp,
    Http,
    Https,
    DicomEcho,
    Hl7Mllp,
    Exec,
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub kind: CheckKind,
    /// Port to check; `None` means the real's service port.
    pub port: Option<u16>,
    pub interval: Duration,
    pub timeout: Duration,
    /// Successes in a row that bring a down real up.
    pub rise: u32,
    /// Failures in a row that take an up real down.
    pub fall: u32,
    pub called_ae: String,
    pub calling_ae: String,
    pub path: String,
    pub host: Option<String>,
    /// Inclusive range of HTTP statuses that count as up.
    pub expect_status: (u16, u16),
    pub expect_body: Option<String>,
    pub verify_certificate: bool,
    pub command: Vec<String>,
}

impl Default for HealthCheck {
    /// A TCP connect to the real's service port every 2 s, as the policy documents.
    fn default() -> Self {
        HealthCheck {
            kind: CheckKind::Tcp,
            port: None,
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 2,
            called_ae: "ANY-SCP".into(),
            calling_ae: "XDPLB".into(),
            path: "/".into(),
            host: None,
            expect_status: (200, 399),
            expect_body: None,
            verify_certificate: true,
            command: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Real {
    pub address: IpAddr,
    /// 0 = drained: no new flows.
    pub weight: u16,
    /// NAT only: translate the destination port to this.
    pub port: Option<u16>,
    /// Failover: used only when every non-backup real is down.
    pub backup: bool,
}

/// A real server as the policy names it: service, address and (NAT) translated port. Health,
/// status and metrics use this to name a real.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RealRef {
    pub service: String,
    pub address: IpAddr,
    pub port: Option<u16>,
}

impl RealRef {
    pub fn of(service: &Service, real: &Real) -> RealRef {
        RealRef {
            service: service.name.clone(),
            address: real.address,
            port: real.port,
        }
    }
}

impl std::fmt::Display for RealRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.port {
            // An IPv6 address with a port goes in brackets, as in a URL.
            Some(port) if self.address.is_ipv6() => {
                write!(f, "{}/[{}]:{port}", self.service, self.address)
            }
            Some(port) => write!(f, "{}/{}:{port}", self.service, self.address),
            None => write!(f, "{}/{}", self.service, self.address),
        }
    }
}
