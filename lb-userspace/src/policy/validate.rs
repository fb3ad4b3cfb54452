//! Checks a parsed policy file and turns it into the model. Rejects what would be ambiguous or
//! impossible at run time, pointing at the offending value.

use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
};

use lb_common::maps::{MAX_REALS, MAX_SERVICES, MAX_VIP_PORTS};
use serde_saphyr::{Location, Spanned};

use super::{model::*, schema::*};

/// Longest connection-table timeout: a week, well inside the data plane's clock range.
const MAX_FLOW_TIMEOUT_SECS: u64 = 7 * 24 * 3600;

pub struct Invalid {
    pub line: u64,
    pub column: u64,
    pub message: String,
}

fn at<T>(spanned: &Spanned<T>, message: impl Into<String>) -> Invalid {
    at_location(&spanned.referenced, message)
}

fn at_location(location: &Location, message: impl Into<String>) -> Invalid {
    Invalid {
        line: location.line(),
        column: location.column(),
        message: message.into(),
    }
}

pub fn validate(raw: PolicyFile) -> Result<Policy, Invalid> {
    let vip_announcement = match &raw.vip_announcement {
        None => VipAnnouncement::Arp,
        Some(spec) => match spec.value {
            VipAnnouncementSpec::Arp => VipAnnouncement::Arp,
            VipAnnouncementSpec::None => VipAnnouncement::Unmanaged,
            VipAnnouncementSpec::Bgp => {
                return Err(at(
                    spec,
                    "`vip_announcement: bgp` (several active balancers announcing the VIPs over BGP) is not available yet; use `arp` (a balancer on its own) or `none` (an active/standby pair: keepalived owns the VIPs)",
                ));
            }
        },
    };
    let interfaces = validate_interfaces(&raw.interfaces)?;
    if raw.services.len() > MAX_SERVICES as usize {
        return Err(at(
            &raw.services[MAX_SERVICES as usize],
            format!("at most {MAX_SERVICES} services are supported"),
        ));
    }

    let mut names = HashSet::new();
    let mut vip_ports: HashMap<(std::net::Ipv4Addr, u16, Protocol), String> = HashMap::new();
    let mut total_reals = 0usize;
    let mut services = Vec::with_capacity(raw.services.len());
    for spec in &raw.services {
        let service = validate_service(&spec.value)?;
        if service.name.is_empty() {
            return Err(at(&spec.value.name, "a service name must not be empty"));
        }
        if !names.insert(service.name.clone()) {
            return Err(at(
                &spec.value.name,
                format!("duplicate service name `{}`", service.name),
            ));
        }
        for port in &spec.value.ports.value {
            let key = (service.vip, port.value, service.protocol);
            if let Some(other) = vip_ports.insert(key, service.name.clone()) {
                return Err(at(
                    port,
                    format!(
                        "duplicate {}:{}/{}: already used by service `{other}`",
                        service.vip,
                        port.value,
                        service.protocol.name()
                    ),
                ));
            }
        }
        if vip_ports.len() > MAX_VIP_PORTS as usize {
            return Err(at(
                &spec.value.ports,
                format!("at most {MAX_VIP_PORTS} VIP:port entries are supported"),
            ));
        }
        total_reals += service.reals.len();
        if total_reals > MAX_REALS as usize {
            return Err(at(
                spec,
                format!("at most {MAX_REALS} reals (over all services) are supported"),
            ));
        }
        services.push(service);
    }
    // A real that is another service's VIP would send that service's traffic round again.
    let vips: HashSet<std::net::Ipv4Addr> = services.iter().map(|s| s.vip).collect();
    for (spec, service) in raw.services.iter().zip(&services) {
        for real in &spec.value.reals {
            if vips.contains(&real.value.address.value) {
                return Err(at(
                    &real.value.address,
                    format!(
                        "real {} of `{}` is a VIP of this balancer: its packets would be balanced again",
                        real.value.address.value, service.name
                    ),
                ));
            }
        }
    }
    let nat_routing = match raw.nat_routing {
        None | Some(NatRoutingSpec::Closed) => NatRouting::Closed,
        Some(NatRoutingSpec::Open) => NatRouting::Open,
    };
    Ok(Policy {
        vip_announcement,
        nat_routing,
        interfaces,
        services,
    })
}

fn validate_interfaces(
    raw: &Spanned<Vec<Spanned<InterfaceSpec>>>,
) -> Result<Vec<Interface>, Invalid> {
    if raw.value.is_empty() {
        return Err(at(
            raw,
            "at least one interface is needed: the one the XDP program attaches to",
        ));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for spec in &raw.value {
        let name = &spec.value.name;
        if name.value.is_empty() || name.value.len() >= libc::IFNAMSIZ {
            return Err(at(
                name,
                format!("`{}` is not a valid interface name", name.value),
            ));
        }
        if !seen.insert(name.value.clone()) {
            return Err(at(
                name,
                format!("interface `{}` is listed twice", name.value),
            ));
        }
        out.push(Interface {
            name: name.value.clone(),
            xdp_mode: match spec.value.xdp_mode.unwrap_or(XdpModeSpec::Auto) {
                XdpModeSpec::Driver => XdpMode::Driver,
                XdpModeSpec::Skb => XdpMode::Skb,
                XdpModeSpec::Auto => XdpMode::Auto,
            },
            role: match spec.value.role.unwrap_or(RoleSpec::Outside) {
                RoleSpec::Outside => Role::Outside,
                RoleSpec::Inside => Role::Inside,
            },
        });
    }
    if !out.iter().any(|i| i.role == Role::Outside) {
        return Err(at(
            raw,
            "one interface must be client-facing (role: outside, the default)",
        ));
    }
    Ok(out)
}

fn validate_service(spec: &ServiceSpec) -> Result<Service, Invalid> {
    let forwarding = match spec.forwarding {
        ForwardingSpec::Dr => Forwarding::Dr,
        ForwardingSpec::Nat => Forwarding::Nat,
    };
    if spec.ports.value.is_empty() {
        return Err(at(&spec.ports, "a service needs at least one port"));
    }
    let mut ports = Vec::new();
    for port in &spec.ports.value {
        if port.value == 0 {
            return Err(at(port, "port 0 is not a valid service port"));
        }
        if ports.contains(&port.value) {
            return Err(at(port, format!("port {} is listed twice", port.value)));
        }
        ports.push(port.value);
    }
    if spec.vip.value.is_unspecified()
        || spec.vip.value.is_broadcast()
        || spec.vip.value.is_multicast()
        || spec.vip.value.is_loopback()
    {
        return Err(at(&spec.vip, format!("{} cannot be a VIP", spec.vip.value)));
    }
    if spec.reals.is_empty() {
        return Err(at(
            &spec.name,
            "a service needs at least one real (`reals:` with an `address:` each)",
        ));
    }

    let mut reals = Vec::new();
    let mut seen = HashSet::new();
    for real in &spec.reals {
        let r = &real.value;
        if let Some(port) = &r.port {
            if forwarding == Forwarding::Dr {
                return Err(at(
                    port,
                    "a real's port (port translation) needs `forwarding: nat`; DR forwards the packet unchanged",
                ));
            }
            if port.value == 0 {
                return Err(at(port, "port 0 is not a valid real port"));
            }
        }
        if r.address.value.is_unspecified()
            || r.address.value.is_broadcast()
            || r.address.value.is_multicast()
            || r.address.value.is_loopback()
        {
            return Err(at(
                &r.address,
                format!("{} cannot be a real server address", r.address.value),
            ));
        }
        if r.address.value == spec.vip.value {
            return Err(at(
                &r.address,
                format!(
                    "real {} is the service's own VIP: packets would loop",
                    r.address.value
                ),
            ));
        }
        if !seen.insert((r.address.value, r.port.as_ref().map(|p| p.value))) {
            return Err(at(
                &r.address,
                format!("real {} is listed twice in this service", r.address.value),
            ));
        }
        reals.push(Real {
            address: r.address.value,
            weight: r.weight.unwrap_or(100),
            port: r.port.as_ref().map(|p| p.value),
            backup: r.backup.unwrap_or(false),
        });
    }

    let persistence = match &spec.persistence {
        None => None,
        Some(p) => {
            let netmask = match &p.value.netmask {
                Some(n) if n.value > 32 => return Err(at(n, "persistence netmask must be 0..=32")),
                Some(n) => n.value,
                None => 32,
            };
            if p.value.timeout.0.is_zero() {
                return Err(at(p, "persistence timeout must be longer than 0"));
            }
            if p.value.timeout.0.as_secs() > MAX_FLOW_TIMEOUT_SECS {
                return Err(at(p, "persistence timeout is at most 7 days"));
            }
            Some(Persistence {
                timeout: p.value.timeout.0,
                netmask,
            })
        }
    };

    let protocol = match spec.protocol {
        ProtocolSpec::Tcp => Protocol::Tcp,
        ProtocolSpec::Udp => Protocol::Udp,
    };
    let mut timeouts = Timeouts::default_for(protocol);
    if let Some(t) = &spec.timeouts {
        for (given, slot) in [
            (&t.value.idle, &mut timeouts.idle),
            (&t.value.closing, &mut timeouts.closing),
        ] {
            if let Some(given) = given {
                let d = given.value.0;
                if d.as_secs() < 1 || d.subsec_nanos() != 0 {
                    return Err(at(
                        given,
                        "connection timeouts are whole seconds, at least 1s",
                    ));
                }
                if d.as_secs() > MAX_FLOW_TIMEOUT_SECS {
                    return Err(at(given, "connection timeouts are at most 7 days"));
                }
                *slot = d;
            }
        }
    }

    Ok(Service {
        name: spec.name.value.clone(),
        vip: spec.vip.value,
        ports,
        protocol,
        forwarding,
        scheduler: match spec.scheduler.unwrap_or(SchedulerSpec::Maglev) {
            SchedulerSpec::Maglev => Scheduler::Maglev,
            SchedulerSpec::SourceHash => Scheduler::SourceHash,
            SchedulerSpec::Failover => Scheduler::Failover,
        },
        persistence,
        health: match &spec.health {
            // UDP has no handshake a connect could probe: without a configured check, UDP
            // reals count as up while reachable.
            None if protocol == Protocol::Udp => HealthCheck {
                kind: CheckKind::None,
                ..HealthCheck::default()
            },
            None => HealthCheck::default(),
            Some(h) => validate_health(h)?,
        },
        fallback: match &spec.fallback {
            None => None,
            Some(f) => Some(validate_fallback(f, forwarding, &reals, spec.vip.value)?),
        },
        timeouts,
        reals,
    })
}

/// `fallback: ADDRESS` or `ADDRESS:PORT` (NAT only: DR cannot change a port).
fn validate_fallback(
    f: &Spanned<String>,
    forwarding: Forwarding,
    reals: &[Real],
    vip: Ipv4Addr,
) -> Result<Fallback, Invalid> {
    let text = f.value.trim();
    let (address, port) = match text.split_once(':') {
        Some((address, port)) => (address, Some(port)),
        None => (text, None),
    };
    let address: Ipv4Addr = address.parse().map_err(|_| {
        at(
            f,
            format!("fallback `{text}` is not ADDRESS or ADDRESS:PORT (e.g. 198.18.0.99:8080)"),
        )
    })?;
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(port) if port > 0 => Some(port),
            _ => {
                return Err(at(
                    f,
                    format!(
                        "the fallback's port must be a whole number from 1 to 65535; got `{p}`"
                    ),
                ));
            }
        },
    };
    if port.is_some() && forwarding != Forwarding::Nat {
        return Err(at(
            f,
            "a fallback port needs `forwarding: nat` (DR forwards to the same port; give the address alone)",
        ));
    }
    if reals.iter().any(|r| r.address == address) {
        return Err(at(
            f,
            format!("fallback {address} is also a real of this service"),
        ));
    }
    if address.is_unspecified()
        || address.is_broadcast()
        || address.is_multicast()
        || address.is_loopback()
        || address == vip
    {
        return Err(at(f, format!("{address} cannot be a fallback address")));
    }
    Ok(Fallback { address, port })
}

const MIN_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);
const MAX_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);
const MAX_RISE_FALL: u32 = 100;

/// Options that belong to another kind of check are refused: silently ignored, they would
/// make the operator believe something is checked that is not.
fn refuse_options_of_other_checks(spec: &Spanned<HealthSpec>) -> Result<(), Invalid> {
    let h = &spec.value;
    let kind = match h.check {
        CheckSpec::Tcp => "tcp",
        CheckSpec::Http => "http",
        CheckSpec::Https => "https",
        CheckSpec::DicomEcho => "dicom-echo",
        CheckSpec::Hl7Mllp => "hl7-mllp",
        CheckSpec::Exec => "exec",
        CheckSpec::None => "none",
    };
    let http = ["http", "https"];
    let options: [(&str, bool, &[&str]); 8] = [
        ("called_ae", h.called_ae.is_some(), &["dicom-echo"]),
        ("calling_ae", h.calling_ae.is_some(), &["dicom-echo"]),
        ("path", h.path.is_some(), &http),
        ("host", h.host.is_some(), &http),
        ("expect_status", h.expect_status.is_some(), &http),
        ("expect_body", h.expect_body.is_some(), &http),
        (
            "verify_certificate",
            h.verify_certificate.is_some(),
            &["https"],
        ),
        ("command", h.command.is_some(), &["exec"]),
    ];
    for (option, given, kinds) in options {
        if given && !kinds.contains(&kind) {
            return Err(at(
                spec,
                format!(
                    "`{option}` applies to `check: {}` only; this check is `{kind}`",
                    kinds.join("` or `check: ")
                ),
            ));
        }
    }
    if kind == "none" && (h.port.is_some() || h.interval.is_some() || h.timeout.is_some()) {
        return Err(at(
            spec,
            "`check: none` runs no check: port, interval and timeout do not apply",
        ));
    }
    Ok(())
}

fn validate_health(spec: &Spanned<HealthSpec>) -> Result<HealthCheck, Invalid> {
    let h = &spec.value;
    let mut check = HealthCheck {
        kind: match h.check {
            CheckSpec::Tcp => CheckKind::Tcp,
            CheckSpec::Http => CheckKind::Http,
            CheckSpec::Https => CheckKind::Https,
            CheckSpec::DicomEcho => CheckKind::DicomEcho,
            CheckSpec::Hl7Mllp => CheckKind::Hl7Mllp,
            CheckSpec::Exec => CheckKind::Exec,
            CheckSpec::None => CheckKind::None,
        },
        port: h.port.as_ref().map(|p| p.value),
        ..HealthCheck::default()
    };
    if let Some(port) = &h.port
        && port.value == 0
    {
        return Err(at(
            port,
            "health port must be a whole number from 1 to 65535",
        ));
    }
    refuse_options_of_other_checks(spec)?;
    if let Some(i) = h.interval {
        check.interval = i.0;
    }
    if let Some(t) = h.timeout {
        check.timeout = t.0;
    }
    if check.interval < MIN_CHECK_INTERVAL || check.interval > MAX_CHECK_INTERVAL {
        return Err(at(
            spec,
            "health interval must be from 100ms to 1h (a check every few milliseconds would flood the reals)",
        ));
    }
    if check.timeout.is_zero() || check.timeout > check.interval {
        return Err(at(
            spec,
            format!(
                "health timeout must be longer than 0 and no longer than its interval ({:?})",
                check.interval
            ),
        ));
    }
    check.rise = h.rise.unwrap_or(check.rise);
    check.fall = h.fall.unwrap_or(check.fall);
    if !(1..=MAX_RISE_FALL).contains(&check.rise) || !(1..=MAX_RISE_FALL).contains(&check.fall) {
        return Err(at(
            spec,
            format!("health rise and fall must be whole numbers from 1 to {MAX_RISE_FALL}"),
        ));
    }
    for (ae, slot) in [
        (&h.called_ae, &mut check.called_ae),
        (&h.calling_ae, &mut check.calling_ae),
    ] {
        if let Some(ae) = ae {
            let v = ae.value.trim();
            if v.is_empty()
                || v.len() > 16
                || !v.chars().all(|c| c.is_ascii_graphic() || c == ' ')
                || v.contains('\\')
            {
                return Err(at(
                    ae,
                    format!(
                        "`{}` is not a DICOM AE title (1 to 16 printable ASCII characters, no backslash)",
                        ae.value
                    ),
                ));
            }
            *slot = v.to_string();
        }
    }
    if let Some(path) = &h.path {
        if !path.starts_with('/') {
            return Err(at(spec, format!("health path `{path}` must start with /")));
        }
        check.path = path.clone();
    }
    check.host = h.host.clone();
    if let Some(range) = &h.expect_status {
        check.expect_status = parse_status_range(range).ok_or_else(|| {
            at(
                spec,
                format!("expect_status `{range}` is not a status or range like 200-399"),
            )
        })?;
    }
    if let Some(re) = &h.expect_body
        && let Err(e) = regex::Regex::new(re)
    {
        return Err(at(spec, format!("expect_body is not a valid regex: {e}")));
    }
    check.expect_body = h.expect_body.clone();
    check.verify_certificate = h.verify_certificate.unwrap_or(true);
    check.command = h.command.clone().unwrap_or_default();
    if check.kind == CheckKind::Exec && check.command.is_empty() {
        return Err(at(
            spec,
            "an exec check needs `command: [program, args...]`",
        ));
    }
    Ok(check)
}

fn parse_status_range(text: &str) -> Option<(u16, u16)> {
    let (lo, hi) = match text.split_once('-') {
        Some((lo, hi)) => (lo.trim().parse().ok()?, hi.trim().parse().ok()?),
        None => {
            let s = text.trim().parse().ok()?;
            (s, s)
        }
    };
    (100..=599).contains(&lo).then_some(())?;
    (lo..=599).contains(&hi).then_some((lo, hi))
}
