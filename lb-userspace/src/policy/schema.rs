//! The policy file as written, typed. It is read only after `shape` found the file's keys and
//! values well formed (xdplb.yaml(5)); values that need cross-checks keep their position.

use std::net::IpAddr;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::duration::DurationSpec;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    #[serde(default)]
    pub vip_announcement: Option<Spanned<VipAnnouncementSpec>>,
    #[serde(default)]
    pub nat_routing: Option<NatRoutingSpec>,
    pub interfaces: Spanned<Vec<Spanned<InterfaceSpec>>>,
    #[serde(default)]
    pub services: Vec<Spanned<ServiceSpec>>,
}

/// Who puts the VIP addresses on this host.
#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum VipAnnouncementSpec {
    Arp,
    None,
    Bgp,
}

/// Whether a NAT balancer routes between the client side and the server side beyond the VIPs.
#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum NatRoutingSpec {
    Closed,
    Open,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceSpec {
    pub name: Spanned<String>,
    #[serde(default)]
    pub xdp_mode: Option<XdpModeSpec>,
    #[serde(default)]
    pub role: Option<RoleSpec>,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum XdpModeSpec {
    Driver,
    Skb,
    Auto,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum RoleSpec {
    Outside,
    Inside,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub name: Spanned<String>,
    pub vip: Spanned<IpAddr>,
    pub ports: Spanned<Vec<Spanned<u16>>>,
    pub protocol: ProtocolSpec,
    pub forwarding: ForwardingSpec,
    #[serde(default)]
    pub snat_address: Option<Spanned<IpAddr>>,
    #[serde(default)]
    pub scheduler: Option<SchedulerSpec>,
    #[serde(default)]
    pub persistence: Option<Spanned<PersistenceSpec>>,
    #[serde(default)]
    pub health: Option<Spanned<HealthSpec>>,
    #[serde(default)]
    /// `ADDRESS` or `ADDRESS:PORT`.
    pub fallback: Option<Spanned<String>>,
    #[serde(default)]
    pub timeouts: Option<Spanned<TimeoutsSpec>>,
    pub reals: Vec<Spanned<RealSpec>>,
}

/// Connection-table timeouts (an xdplb extension of the documented policy).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsSpec {
    #[serde(default)]
    pub idle: Option<Spanned<DurationSpec>>,
    #[serde(default)]
    pub closing: Option<Spanned<DurationSpec>>,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum ProtocolSpec {
    Tcp,
    Udp,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum ForwardingSpec {
    Dr,
    Nat,
    Snat,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
pub enum SchedulerSpec {
    Maglev,
    SourceHash,
    Failover,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistenceSpec {
    pub timeout: DurationSpec,
    #[serde(default)]
    pub netmask: Option<Spanned<u8>>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum CheckSpec {
    Tcp,
    Http,
    Https,
    DicomEcho,
    Hl7Mllp,
    Exec,
    None,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSpec {
    pub check: Spanned<CheckSpec>,
    #[serde(default)]
    pub port: Option<Spanned<u16>>,
    #[serde(default)]
    pub interval: Option<Spanned<DurationSpec>>,
    #[serde(default)]
    pub timeout: Option<Spanned<DurationSpec>>,
    #[serde(default)]
    pub rise: Option<Spanned<u32>>,
    #[serde(default)]
    pub fall: Option<Spanned<u32>>,
    #[serde(default)]
    pub called_ae: Option<Spanned<String>>,
    #[serde(default)]
    pub calling_ae: Option<Spanned<String>>,
    #[serde(default)]
    pub path: Option<Spanned<String>>,
    #[serde(default)]
    pub host: Option<Spanned<String>>,
    #[serde(default)]
    pub expect_status: Option<Spanned<String>>,
    #[serde(default)]
    pub expect_body: Option<Spanned<String>>,
    #[serde(default)]
    pub verify_certificate: Option<Spanned<bool>>,
    #[serde(default)]
    pub command: Option<Spanned<Vec<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealSpec {
    pub address: Spanned<IpAddr>,
    #[serde(default)]
    pub weight: Option<u16>,
    #[serde(default)]
    pub port: Option<Spanned<u16>>,
    #[serde(default)]
    pub backup: Option<bool>,
}
