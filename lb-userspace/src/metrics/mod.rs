//! Prometheus metrics with prometheus-client, served as OpenMetrics text at `/metrics`
//! (`server`). Traffic counters are read from the data plane at each scrape; check durations,
//! state changes and reloads are recorded by the controller as they happen. Services and
//! reals are labelled as in `xdplb status --json`: `service` (name) and `real` (address, or
//! address:port for a NAT port translation, [address]:port for IPv6).

mod page;
pub mod server;

use std::fmt;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        MetricType,
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::ConstGauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::{Registry, Unit},
};

use crate::{
    api::status::{State, Status},
    policy::RealRef,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RealLabels {
    service: String,
    real: String,
}

impl RealLabels {
    fn of(real: &RealRef) -> RealLabels {
        RealLabels {
            service: real.service.clone(),
            real: real_name(real.address, real.port),
        }
    }
}

fn real_name(address: std::net::IpAddr, port: Option<u16>) -> String {
    match port {
        // [2001:2::11]:8080 for IPv6, as in URLs: the port stays apart from the address.
        Some(p) => std::net::SocketAddr::new(address, p).to_string(),
        None => address.to_string(),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    fingerprint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

type Durations = Family<RealLabels, Histogram, fn() -> Histogram>;

/// The metrics the controller records as things happen.
pub struct Metrics {
    check_duration: Durations,
    state_changes: Family<RealLabels, Counter>,
    reloads: Family<ResultLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            // 1 ms .. about 16 s.
            check_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 15))
            }),
            state_changes: Family::default(),
            reloads: Family::default(),
        }
    }
}

impl Metrics {
    pub fn observe_check(&self, real: &RealRef, latency: std::time::Duration) {
        self.check_duration
            .get_or_create(&RealLabels::of(real))
            .observe(latency.as_secs_f64());
    }

    pub fn state_changed(&self, real: &RealRef) {
        self.state_changes
            .get_or_create(&RealLabels::of(real))
            .inc();
    }

    pub fn reloaded(&self, ok: bool) {
        let result = if ok { "applied" } else { "refused" };
        self.reloads
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }

    /// The OpenMetrics text of everything, with traffic from `status`.
    pub fn render(&self, status: &Status) -> String {
        let mut registry = Registry::with_prefix("xdplb");
        registry.register_with_unit(
            "health_check_duration",
            "Duration of health checks",
            Unit::Seconds,
            self.check_duration.clone(),
        );
        registry.register(
            "real_state_changes",
            "Times a real went up or down (its first check result counts)",
            self.state_changes.clone(),
        );
        registry.register(
            "reloads",
            "Policy reloads, applied or refused",
            self.reloads.clone(),
        );
        registry.register_collector(Box::new(Traffic(status.clone())));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// Data-plane numbers of one scrape.
#[derive(Debug)]
struct Traffic(Status);

impl Collector for Traffic {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let services = &self.0.services;
        let service_rows = |f: fn(&crate::api::status::ServiceStatus) -> u64| {
            services
                .iter()
                .map(move |s| {
                    (
                        ServiceLabels {
                            service: s.name.clone(),
                        },
                        f(s),
                    )
                })
                .collect::<Vec<_>>()
        };
        let real_rows = |f: fn(&crate::api::status::RealStatus) -> u64| {
            services
                .iter()
                .flat_map(|s| {
                    s.reals.iter().map(move |r| {
                        (
                            RealLabels {
                                service: s.name.clone(),
                                real: real_name(r.address, r.port),
                            },
                            f(r),
                        )
                    })
                })
                .collect::<Vec<_>>()
        };
        counters(
            &mut encoder,
            "service_packets",
            "Packets forwarded for the service",
            None,
            service_rows(|s| s.packets),
        )?;
        counters(
            &mut encoder,
            "service_forwarded",
            "Bytes forwarded for the service (whole frames)",
            Some(&Unit::Bytes),
            service_rows(|s| s.bytes),
        )?;
        counters(
            &mut encoder,
            "service_flows_created",
            "New flows scheduled for the service",
            None,
            service_rows(|s| s.new_flows),
        )?;
        counters(
            &mut encoder,
            "real_packets",
            "Packets forwarded to or from the real",
            None,
            real_rows(|r| r.packets),
        )?;
        counters(
            &mut encoder,
            "real_forwarded",
            "Bytes forwarded to or from the real (whole frames)",
            Some(&Unit::Bytes),
            real_rows(|r| r.bytes),
        )?;
        counters(
            &mut encoder,
            "real_flows_created",
            "New flows scheduled to the real",
            None,
            real_rows(|r| r.new_flows),
        )?;
        gauges(
            &mut encoder,
            "real_up",
            "1 if the real may receive packets (passing its check, reachable), else 0",
            real_rows(|r| (r.state != State::Down) as u64),
        )?;
        gauges(
            &mut encoder,
            "real_in_table",
            "1 if the real takes new flows now, else 0 (down, drained, standing by)",
            real_rows(|r| r.in_table as u64),
        )?;
        gauges(
            &mut encoder,
            "real_active_flows",
            "Live connection-table entries of the real",
            real_rows(|r| r.flows),
        )?;
        let reasons: Vec<(ReasonLabels, u64)> = self
            .0
            .dataplane
            .iter()
            .map(|r| {
                (
                    ReasonLabels {
                        reason: r.reason.clone(),
                    },
                    r.packets,
                )
            })
            .collect();
        counters(
            &mut encoder,
            "dataplane_packets",
            "Packets the XDP program handled, by outcome: forwarded, or why it passed or dropped them",
            None,
            reasons,
        )?;
        gauges(
            &mut encoder,
            "service_vip_held",
            "1 if this node holds the service's VIP address now (the active node of a pair), else 0",
            service_rows(|s| s.vip_held as u64),
        )?;
        gauges(
            &mut encoder,
            "policy_info",
            "The running policy's fingerprint (a hash): both nodes of a pair should show the same",
            vec![(
                PolicyLabels {
                    fingerprint: self.0.policy_fingerprint.clone(),
                },
                1,
            )],
        )?;
        let flood = &self.0.flood_defence;
        let metric = encoder.encode_descriptor(
            "flood_untracked_packets",
            "Packets of new DR flows forwarded without a connection-table entry during floods",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(flood.untracked_packets).encode(metric)?;
        let metric = encoder.encode_descriptor(
            "flood_defence_active",
            "1 while the data plane defends against a flood of new flows, else 0",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(flood.active as i64).encode(metric)?;
        let metric = encoder.encode_descriptor(
            "nat_flows_adopted",
            "NAT flows taken over from a real's reply, never seen open here (a pair's failover)",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(self.0.nat_flows_adopted).encode(metric)?;
        let metric = encoder.encode_descriptor(
            "nat_firewall_dropped_packets",
            "Packets from the client side to the server side the NAT firewall dropped (nat_routing: closed)",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(self.0.nat_firewall.dropped_packets).encode(metric)?;
        let snat = &self.0.snat;
        let metric = encoder.encode_descriptor(
            "snat_flows",
            "SNAT flows holding a source port now",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(snat.flows as i64).encode(metric)?;
        let metric = encoder.encode_descriptor(
            "snat_refused_packets",
            "Packets of new SNAT flows dropped because every source port tried toward their real was held",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(snat.refused_packets).encode(metric)
    }
}

fn counters<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    rows: Vec<(L, u64)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, unit, MetricType::Counter)?;
    for (labels, value) in rows {
        ConstCounter::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauges<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: Vec<(L, u64)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in rows {
        ConstGauge::new(value as i64).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::real_name;

    #[test]
    fn a_real_is_named_as_in_status_with_ipv6_in_brackets_before_a_port() {
        let name = |a: &str, p| real_name(a.parse().unwrap(), p);
        assert_eq!(name("198.18.0.11", None), "198.18.0.11");
        assert_eq!(name("198.19.0.11", Some(8080)), "198.19.0.11:8080");
        assert_eq!(name("2001:2::11", None), "2001:2::11");
        assert_eq!(name("2001:2:0:1::11", Some(8080)), "[2001:2:0:1::11]:8080");
    }
}
