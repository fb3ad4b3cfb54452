//! Builds what `xdplb status` and the metrics show from the controller's state and the maps.

use std::collections::HashMap;

use anyhow::Result;
use lb_common::service::Real;

use crate::{
    api::status::{
        CheckStatus, FloodDefence, NatFirewall, Readiness, RealStatus, ReasonCount, ServiceStatus,
        Snat, State, Status,
    },
    dataplane::{
        counters,
        maps::Maps,
        sync::{Observed, Sync, snat_source},
    },
    health::monitor::Monitor,
    policy::{CheckKind, Forwarding, Policy, RealRef, Scheduler},
};

use lb_common::flow::entry_alive;

/// `held`: the addresses on this host's interfaces now.
#[allow(clippy::too_many_arguments)]
pub fn build(
    held: &std::collections::HashSet<std::net::IpAddr>,
    policy: &Policy,
    sync: &Sync,
    observed: &Observed,
    monitor: &Monitor,
    admin: &super::admin::AdminState,
    maps: &Maps,
    now: u32,
) -> Result<Status> {
    let snapshot = counters::snapshot(maps)?;
    let flows = live_flows(maps, now)?;
    let health: HashMap<RealRef, _> = monitor
        .health()
        .into_iter()
        .map(|h| (h.real.clone(), h))
        .collect();
    let mut services = Vec::new();
    for service in &policy.services {
        let id = sync.service_id(&service.name);
        let traffic = id
            .and_then(|id| snapshot.services.iter().find(|(s, _)| *s == id))
            .map(|(_, c)| *c)
            .unwrap_or_default();
        let mut reals = Vec::new();
        for view in sync.reals_view.iter().filter(|v| v.service == service.name) {
            let key = RealRef {
                service: service.name.clone(),
                address: view.address,
                port: view.port,
            };
            let last = health.get(&key).and_then(|h| h.health.last.clone());
            let policy_real = service
                .reals
                .iter()
                .find(|r| r.address == view.address && r.port == view.port);
            let backup = policy_real.is_some_and(|r| r.backup);
            let operator = admin.entry(&service.name, view.address);
            let (state, reason) = if operator.is_some_and(|a| a.halted) {
                (
                    State::Halted,
                    format!(
                        "{} (`xdplb unhalt` ends it)",
                        operator.map(|a| a.describe()).unwrap_or_default()
                    ),
                )
            } else if !view.up {
                let why = match &last {
                    Some(outcome) if !outcome.up => outcome.reason.clone(),
                    Some(_) | None if service.forwarding == Forwarding::Dr => {
                        if view.address.is_ipv6() {
                            "MAC address unknown (no neighbour advertisement)".into()
                        } else {
                            "MAC address unknown (no ARP answer)".into()
                        }
                    }
                    _ => "not checked yet".into(),
                };
                (State::Down, why)
            } else if operator.is_some_and(|a| a.drained) {
                (
                    State::Drained,
                    format!(
                        "{} (`xdplb undrain` ends it)",
                        operator.map(|a| a.describe()).unwrap_or_default()
                    ),
                )
            } else if !view.fallback && view.weight == 0 {
                let why = match operator {
                    Some(a) if a.weight.is_some() => a.describe(),
                    _ => "weight 0 in the policy".into(),
                };
                (State::Drained, why)
            } else if !view.in_table {
                let why = if view.fallback {
                    "fallback: takes new flows only when no real is up"
                } else if backup {
                    "backup: standing by while a non-backup real is up"
                } else if service.scheduler == Scheduler::Failover {
                    "failover: standing by behind an earlier real"
                } else {
                    "not in the table"
                };
                (State::Up, why.into())
            } else {
                (
                    State::Up,
                    last.as_ref().map(|o| o.reason.clone()).unwrap_or_default(),
                )
            };
            let traffic = snapshot
                .reals
                .iter()
                .find(|r| r.id == view.id)
                .map(|r| r.counters)
                .unwrap_or_default();
            reals.push(RealStatus {
                address: view.address,
                port: view.port,
                snat_address: policy_real.and_then(|r| snat_source(service, r, observed)),
                role: if view.fallback {
                    "fallback"
                } else if backup {
                    "backup"
                } else {
                    "real"
                }
                .into(),
                state,
                reason,
                in_table: view.in_table,
                weight: view.weight,
                flows: flows.get(&view.id).copied().unwrap_or(0),
                packets: traffic.packets,
                bytes: traffic.bytes,
                new_flows: traffic.new_flows,
                check: last.map(|o| CheckStatus {
                    kind: check_name(service.health.kind).into(),
                    up: o.up,
                    result: o.reason,
                    latency_ms: o.latency.as_secs_f64() * 1000.0,
                }),
            });
        }
        services.push(ServiceStatus {
            name: service.name.clone(),
            vip: service.vip,
            ports: service.ports.clone(),
            protocol: service.protocol.name().into(),
            forwarding: service.forwarding.name().into(),
            scheduler: match service.scheduler {
                Scheduler::Maglev => "maglev",
                Scheduler::SourceHash => "source-hash",
                Scheduler::Failover => "failover",
            }
            .into(),
            vip_held: held.contains(&service.vip),
            packets: traffic.packets,
            bytes: traffic.bytes,
            new_flows: traffic.new_flows,
            reals,
        });
    }
    let dataplane = snapshot
        .reasons
        .iter()
        .map(|(reason, packets)| ReasonCount {
            reason: reason.name().into(),
            packets: *packets,
        })
        .collect();
    Ok(Status {
        services,
        dataplane,
        flood_defence: FloodDefence {
            active: snapshot.flood_active(now),
            untracked_packets: snapshot.untracked,
        },
        policy_fingerprint: crate::policy::fingerprint(policy),
        nat_flows_adopted: snapshot.nat_adopted,
        // The controller fills it in (controller/readiness.rs).
        readiness: Readiness::default(),
        nat_firewall: nat_firewall(policy, &snapshot),
        snat: snat(policy, &snapshot, maps),
    })
}

fn snat(policy: &Policy, snapshot: &counters::Snapshot, maps: &Maps) -> Snat {
    if !policy
        .services
        .iter()
        .any(|s| s.forwarding == Forwarding::Snat)
    {
        return Snat::default();
    }
    let reason = |wanted: lb_common::counters::Reason| {
        snapshot
            .reasons
            .iter()
            .find(|(r, _)| *r == wanted)
            .map_or(0, |(_, n)| *n)
    };
    let first = lb_common::maps::SNAT_PORT_FIRST;
    Snat {
        active: true,
        ports: format!("{first}-{}", first + (lb_common::maps::SNAT_PORT_COUNT - 1)),
        flows: maps.snat_reverse.keys().filter(|k| k.is_ok()).count() as u64,
        refused_packets: reason(lb_common::counters::Reason::SnatPortsExhausted),
        unknown_dropped: reason(lb_common::counters::Reason::SnatUnknown),
    }
}

fn nat_firewall(policy: &Policy, snapshot: &counters::Snapshot) -> NatFirewall {
    let active = policy.nat_routing == crate::policy::NatRouting::Closed
        && policy.services.iter().any(|s| s.forwarding.translates());
    if !active {
        return NatFirewall::default();
    }
    let in_xdp = snapshot
        .reasons
        .iter()
        .find(|(r, _)| *r == lb_common::counters::Reason::DirectToReal)
        .map_or(0, |(_, n)| *n);
    NatFirewall {
        active,
        dropped_packets: in_xdp + super::firewall::dropped_packets().unwrap_or(0),
    }
}

fn check_name(kind: CheckKind) -> &'static str {
    match kind {
        CheckKind::Tcp => "tcp",
        CheckKind::Http => "http",
        CheckKind::Https => "https",
        CheckKind::DicomEcho => "dicom-echo",
        CheckKind::Hl7Mllp => "hl7-mllp",
        CheckKind::Exec => "exec",
        CheckKind::None => "none",
    }
}

/// Live (not expired at clock tick `now`) connection-table entries per real id. Walks the whole table: cheap for
/// thousands of flows, about a second per million.
fn live_flows(maps: &Maps, now: u32) -> Result<HashMap<u32, u64>> {
    let mut reals: HashMap<u32, Option<Real>> = HashMap::new();
    let mut counts = HashMap::new();
    for entry in maps.flows.iter() {
        let Ok((_, flow)) = entry else { continue };
        let real = *reals
            .entry(flow.real)
            .or_insert_with(|| maps.reals.get(&flow.real, 0).ok());
        let Some(real) = real else { continue };
        if real.generation != flow.generation {
            continue;
        }
        if entry_alive(flow.seen, flow.flags, &real, now) {
            *counts.entry(flow.real).or_insert(0) += 1;
        }
    }
    Ok(counts)
}
