//! Rules that span keys, checked on a file whose every value is already well formed (`shape`):
//! what would be ambiguous, loop, or silently check nothing. Every problem is collected, each
//! at the value it is about, and the model is built alongside.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

use lb_common::maps::{MAX_REALS, MAX_SERVICES, MAX_VIP_PORTS};
use serde_saphyr::{Location, Spanned};

use super::{model::*, schema::*, shape::parse_status_range};

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

/// The model of a policy, or everything wrong with it.
pub fn validate(raw: PolicyFile) -> Result<Policy, Vec<Invalid>> {
    let mut problems = Vec::new();
    let vip_announcement = match &raw.vip_announcement {
        None => VipAnnouncement::Arp,
        Some(spec) => match spec.value {
            VipAnnouncementSpec::Arp => VipAnnouncement::Arp,
            VipAnnouncementSpec::None => VipAnnouncement::Unmanaged,
            VipAnnouncementSpec::Bgp => VipAnnouncement::Bgp,
        },
    };
    let interfaces = interfaces(&raw.interfaces, &mut problems);
    let services = services(&raw.services, &mut problems);
    let nat_routing = match raw.nat_routing {
        None | Some(NatRoutingSpec::Closed) => NatRouting::Closed,
        Some(NatRoutingSpec::Open) => NatRouting::Open,
    };
    if !problems.is_empty() {
        problems.sort_by_key(|p| (p.line, p.column));
        return Err(problems);
    }
    Ok(Policy {
        vip_announcement,
        nat_routing,
        interfaces,
        services,
    })
}

fn interfaces(
    raw: &Spanned<Vec<Spanned<InterfaceSpec>>>,
    out: &mut Vec<Invalid>,
) -> Vec<Interface> {
    let mut seen = HashSet::new();
    let mut interfaces = Vec::new();
    for spec in &raw.value {
        let name = &spec.value.name;
        if !seen.insert(name.value.clone()) {
            out.push(at(
                name,
                format!("interface `{}` is listed twice", name.value),
            ));
        }
        interfaces.push(Interface {
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
    if !interfaces.iter().any(|i| i.role == Role::Outside) {
        out.push(at(
            raw,
            "one interface must be client-facing (role: outside, the default)",
        ));
    }
    interfaces
}

/// Each service on its own, then what services must not share.
fn services(raw: &[Spanned<ServiceSpec>], out: &mut Vec<Invalid>) -> Vec<Service> {
    if raw.len() > MAX_SERVICES as usize {
        out.push(at(
            &raw[MAX_SERVICES as usize],
            format!("at most {MAX_SERVICES} services are supported"),
        ));
    }
    let services: Vec<Service> = raw.iter().map(|spec| service(&spec.value, out)).collect();

    let mut names = HashSet::new();
    let mut vip_ports: HashMap<(IpAddr, u16, Protocol), &str> = HashMap::new();
    let mut total_reals = 0usize;
    for (spec, service) in raw.iter().zip(&services) {
        if !names.insert(service.name.as_str()) {
            out.push(at(
                &spec.value.name,
                format!("duplicate service name `{}`", service.name),
            ));
        }
        for port in &spec.value.ports.value {
            let key = (service.vip, port.value, service.protocol);
            if let Some(other) = vip_ports.insert(key, &service.name) {
                out.push(at(
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
            out.push(at(
                &spec.value.ports,
                format!("at most {MAX_VIP_PORTS} VIP:port entries are supported"),
            ));
        }
        let before = total_reals;
        total_reals += service.reals.len();
        if before <= MAX_REALS as usize && total_reals > MAX_REALS as usize {
            out.push(at(
                spec,
                format!("at most {MAX_REALS} reals (over all services) are supported"),
            ));
        }
    }
    // A real or fallback that is another service's VIP would send that service's traffic round
    // again.
    let vips: HashSet<IpAddr> = services.iter().map(|s| s.vip).collect();
    for (spec, service) in raw.iter().zip(&services) {
        if let (Some(fallback), Some(given)) = (service.fallback, &spec.value.fallback)
            && fallback.address != service.vip
            && vips.contains(&fallback.address)
        {
            out.push(at(
                given,
                format!(
                    "fallback {} of `{}` is a VIP of this balancer: its packets would be balanced again",
                    fallback.address, service.name
                ),
            ));
        }
        for real in &spec.value.reals {
            let address = real.value.address.value;
            if address != service.vip && vips.contains(&address) {
                out.push(at(
                    &real.value.address,
                    format!(
                        "real {address} of `{}` is a VIP of this balancer: its packets would be balanced again",
                        service.name
                    ),
                ));
            }
        }
    }
    services
}

fn service(spec: &ServiceSpec, out: &mut Vec<Invalid>) -> Service {
    let forwarding = match spec.forwarding {
        ForwardingSpec::Dr => Forwarding::Dr,
        ForwardingSpec::Nat => Forwarding::Nat,
        ForwardingSpec::Snat => Forwarding::Snat,
    };
    if let Some(snat_address) = &spec.snat_address {
        if forwarding != Forwarding::Snat {
            out.push(at(
                snat_address,
                "`snat_address` needs `forwarding: snat` (only SNAT rewrites the source)",
            ));
        } else if snat_address.value == spec.vip.value {
            out.push(at(
                snat_address,
                "`snat_address` cannot be the service's VIP: replies to it would look like new connections to the VIP",
            ));
        } else if snat_address.value.is_ipv6() != spec.vip.value.is_ipv6() {
            out.push(at(
                snat_address,
                format!(
                    "`snat_address` {} is {} but the VIP is {}: the reals are reached in the VIP's family",
                    snat_address.value,
                    family(snat_address.value),
                    family(spec.vip.value)
                ),
            ));
        }
    }
    if let Some(persistence) = &spec.persistence
        && let Some(netmask) = &persistence.value.netmask
        && spec.vip.value.is_ipv4()
        && netmask.value > 32
    {
        out.push(at(
            netmask,
            format!(
                "`netmask` of an IPv4 service must be 0 to 32, not {} (128 is for IPv6 services)",
                netmask.value
            ),
        ));
    }
    let protocol = match spec.protocol {
        ProtocolSpec::Tcp => Protocol::Tcp,
        ProtocolSpec::Udp => Protocol::Udp,
    };
    let reals = reals(spec, forwarding, out);
    let mut timeouts = Timeouts::default_for(protocol);
    if let Some(t) = &spec.timeouts {
        if let Some(idle) = &t.value.idle {
            timeouts.idle = idle.value.0;
        }
        if let Some(closing) = &t.value.closing {
            timeouts.closing = closing.value.0;
        }
    }
    Service {
        name: spec.name.value.clone(),
        vip: spec.vip.value,
        ports: spec.ports.value.iter().map(|p| p.value).collect(),
        protocol,
        forwarding,
        snat_address: spec.snat_address.as_ref().map(|a| a.value),
        scheduler: match spec.scheduler.unwrap_or(SchedulerSpec::Maglev) {
            SchedulerSpec::Maglev => Scheduler::Maglev,
            SchedulerSpec::SourceHash => Scheduler::SourceHash,
            SchedulerSpec::Failover => Scheduler::Failover,
        },
        persistence: spec.persistence.as_ref().map(|p| Persistence {
            timeout: p.value.timeout.0,
            netmask: p
                .value
                .netmask
                .as_ref()
                .map_or(if spec.vip.value.is_ipv6() { 128 } else { 32 }, |n| n.value),
        }),
        health: match &spec.health {
            // UDP has no handshake a connect could probe: without a configured check, UDP
            // reals count as up while reachable.
            None if protocol == Protocol::Udp => HealthCheck {
                kind: CheckKind::None,
                ..HealthCheck::default()
            },
            None => HealthCheck::default(),
            Some(h) => health(h, out),
        },
        fallback: spec
            .fallback
            .as_ref()
            .and_then(|f| fallback(f, forwarding, &reals, spec.vip.value, out)),
        timeouts,
        reals,
    }
}

fn reals(spec: &ServiceSpec, forwarding: Forwarding, out: &mut Vec<Invalid>) -> Vec<Real> {
    let mut reals = Vec::new();
    let mut seen = HashSet::new();
    for real in &spec.reals {
        let r = &real.value;
        if let Some(port) = &r.port
            && forwarding == Forwarding::Dr
        {
            out.push(at(
                port,
                "a real's port (port translation) needs `forwarding: nat` or `snat`; DR forwards the packet unchanged",
            ));
        }
        if let Some(snat_address) = &spec.snat_address
            && snat_address.value == r.address.value
        {
            out.push(at(
                snat_address,
                format!(
                    "`snat_address` {} is a real of this service",
                    r.address.value
                ),
            ));
        }
        if r.address.value == spec.vip.value {
            out.push(at(
                &r.address,
                format!(
                    "real {} is the service's own VIP: packets would loop",
                    r.address.value
                ),
            ));
        }
        if r.address.value.is_ipv6() != spec.vip.value.is_ipv6() {
            out.push(at(
                &r.address,
                format!(
                    "real {} is {} but the VIP {} is {}: a service is of one family (give the {} reals a service of their own, with an {} VIP)",
                    r.address.value,
                    family(r.address.value),
                    spec.vip.value,
                    family(spec.vip.value),
                    family(r.address.value),
                    family(r.address.value),
                ),
            ));
        }
        if !seen.insert((r.address.value, r.port.as_ref().map(|p| p.value))) {
            out.push(at(
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
    reals
}

/// `fallback: ADDRESS` or `ADDRESS:PORT` (NAT only: DR cannot change a port). The notation is
/// checked by `shape`; this is what the address may not be.
fn fallback(
    f: &Spanned<String>,
    forwarding: Forwarding,
    reals: &[Real],
    vip: IpAddr,
    out: &mut Vec<Invalid>,
) -> Option<Fallback> {
    let text = f.value.trim();
    let (address, port) = match super::shape::split_address_port(text) {
        Some((address, port)) => (address, port.parse::<u16>().ok()),
        None => (text, None),
    };
    let address: IpAddr = address.parse().ok()?;
    if address.is_ipv6() != vip.is_ipv6() {
        out.push(at(
            f,
            format!(
                "fallback {address} is {} but the VIP {vip} is {}: a service is of one family",
                family(address),
                family(vip)
            ),
        ));
    }
    if port.is_some() && !forwarding.translates() {
        out.push(at(
            f,
            "a fallback port needs `forwarding: nat` or `snat` (DR forwards to the same port; give the address alone)",
        ));
    }
    if reals.iter().any(|r| r.address == address) {
        out.push(at(
            f,
            format!("fallback {address} is also a real of this service"),
        ));
    }
    if address == vip {
        out.push(at(
            f,
            format!("{address} cannot be a fallback: it is the service's own VIP"),
        ));
    }
    Some(Fallback { address, port })
}

/// Options that belong to another kind of check are refused: silently ignored, they would
/// make the operator believe something is checked that is not.
fn refuse_options_of_other_checks(h: &HealthSpec, out: &mut Vec<Invalid>) {
    let kind = match h.check.value {
        CheckSpec::Tcp => "tcp",
        CheckSpec::Http => "http",
        CheckSpec::Https => "https",
        CheckSpec::DicomEcho => "dicom-echo",
        CheckSpec::Hl7Mllp => "hl7-mllp",
        CheckSpec::Exec => "exec",
        CheckSpec::None => "none",
    };
    let http: &[&str] = &["http", "https"];
    let location = |o: Option<&Location>| o.copied();
    let options: [(&str, Option<Location>, &[&str]); 8] = [
        (
            "called_ae",
            location(h.called_ae.as_ref().map(|s| &s.referenced)),
            &["dicom-echo"],
        ),
        (
            "calling_ae",
            location(h.calling_ae.as_ref().map(|s| &s.referenced)),
            &["dicom-echo"],
        ),
        (
            "path",
            location(h.path.as_ref().map(|s| &s.referenced)),
            http,
        ),
        (
            "host",
            location(h.host.as_ref().map(|s| &s.referenced)),
            http,
        ),
        (
            "expect_status",
            location(h.expect_status.as_ref().map(|s| &s.referenced)),
            http,
        ),
        (
            "expect_body",
            location(h.expect_body.as_ref().map(|s| &s.referenced)),
            http,
        ),
        (
            "verify_certificate",
            location(h.verify_certificate.as_ref().map(|s| &s.referenced)),
            &["https"],
        ),
        (
            "command",
            location(h.command.as_ref().map(|s| &s.referenced)),
            &["exec"],
        ),
    ];
    for (option, given, kinds) in options {
        if let Some(location) = given
            && !kinds.contains(&kind)
        {
            out.push(at_location(
                &location,
                format!(
                    "`{option}` applies to `check: {}` only; this check is `{kind}`",
                    kinds.join("` or `check: ")
                ),
            ));
        }
    }
    if kind == "none" {
        for (option, given) in [
            ("port", h.port.as_ref().map(|s| s.referenced)),
            ("interval", h.interval.as_ref().map(|s| s.referenced)),
            ("timeout", h.timeout.as_ref().map(|s| s.referenced)),
            ("rise", h.rise.as_ref().map(|s| s.referenced)),
            ("fall", h.fall.as_ref().map(|s| s.referenced)),
        ] {
            if let Some(location) = given {
                out.push(at_location(
                    &location,
                    format!("`check: none` runs no check: `{option}` does not apply"),
                ));
            }
        }
    }
}

fn health(spec: &Spanned<HealthSpec>, out: &mut Vec<Invalid>) -> HealthCheck {
    let h = &spec.value;
    refuse_options_of_other_checks(h, out);
    let defaults = HealthCheck::default();
    let check = HealthCheck {
        kind: match h.check.value {
            CheckSpec::Tcp => CheckKind::Tcp,
            CheckSpec::Http => CheckKind::Http,
            CheckSpec::Https => CheckKind::Https,
            CheckSpec::DicomEcho => CheckKind::DicomEcho,
            CheckSpec::Hl7Mllp => CheckKind::Hl7Mllp,
            CheckSpec::Exec => CheckKind::Exec,
            CheckSpec::None => CheckKind::None,
        },
        port: h.port.as_ref().map(|p| p.value),
        interval: h.interval.as_ref().map_or(defaults.interval, |i| i.value.0),
        timeout: h.timeout.as_ref().map_or(defaults.timeout, |t| t.value.0),
        rise: h.rise.as_ref().map_or(defaults.rise, |r| r.value),
        fall: h.fall.as_ref().map_or(defaults.fall, |f| f.value),
        called_ae: h
            .called_ae
            .as_ref()
            .map_or(defaults.called_ae, |ae| ae.value.trim().to_string()),
        calling_ae: h
            .calling_ae
            .as_ref()
            .map_or(defaults.calling_ae, |ae| ae.value.trim().to_string()),
        path: h.path.as_ref().map_or(defaults.path, |p| p.value.clone()),
        host: h.host.as_ref().map(|host| host.value.clone()),
        expect_status: h
            .expect_status
            .as_ref()
            .and_then(|s| parse_status_range(&s.value))
            .unwrap_or(defaults.expect_status),
        expect_body: h.expect_body.as_ref().map(|b| b.value.clone()),
        verify_certificate: h.verify_certificate.as_ref().is_none_or(|v| v.value),
        command: h
            .command
            .as_ref()
            .map(|c| c.value.clone())
            .unwrap_or_default(),
    };
    if check.timeout > check.interval {
        // At the timeout if given, else at the interval that made the default too long.
        let location = h
            .timeout
            .as_ref()
            .or(h.interval.as_ref())
            .map_or(spec.referenced, |s| s.referenced);
        out.push(at_location(
            &location,
            format!(
                "the health timeout ({}) must be no longer than its interval ({})",
                super::duration::show(check.timeout),
                super::duration::show(check.interval)
            ),
        ));
    }
    if check.kind == CheckKind::Exec && check.command.is_empty() {
        out.push(at(
            &h.check,
            "an exec check needs `command: [program, args...]`",
        ));
    }
    check
}

/// "IPv4" or "IPv6", for messages.
fn family(address: IpAddr) -> &'static str {
    if address.is_ipv4() { "IPv4" } else { "IPv6" }
}
