//! Policies that are valid but probably not what the operator wants: `xdplb validate` prints
//! them, `xdplb run` and reloads log them.

use super::model::{CheckKind, Forwarding, NatRouting, Policy, Protocol, VipAnnouncement};

/// One line per suspicious setting, in the policy's own words.
pub fn warnings(policy: &Policy) -> Vec<String> {
    let mut out = Vec::new();
    let nat = policy.services.iter().any(|s| s.forwarding.translates());
    if nat && policy.nat_routing == NatRouting::Open {
        out.push(
            "nat_routing: open: this balancer routes anything from the client side to the server \
             side, so every port of every real (and of any host behind it) is reachable by whoever \
             can route through it; `closed` (the default) lets through only the VIPs' services and \
             replies to connections the server side opened"
                .to_string(),
        );
    }
    for service in &policy.services {
        if policy.vip_announcement == VipAnnouncement::Bgp {
            if service.forwarding == Forwarding::Nat {
                out.push(format!(
                    "service `{}`: NAT behind several active balancers: a real's replies go to \
                     its gateway, which is not the balancer each flow came through; use DR, or \
                     SNAT (each balancer its own source address)",
                    service.name
                ));
            }
            if service.forwarding == Forwarding::Snat && service.snat_address.is_some() {
                out.push(format!(
                    "service `{}`: `snat_address` with vip_announcement: bgp: every active \
                     balancer would give its flows that one source, and the reals' replies \
                     would reach only the balancer holding it; leave it out (each balancer \
                     then uses its own address)",
                    service.name
                ));
            }
        }
        let check = service.health.kind;
        if service.protocol == Protocol::Tcp && check == CheckKind::None {
            out.push(format!(
                "service `{}`: `check: none`: every real counts as up, a dead one too, and gets \
                 new connections",
                service.name
            ));
        }
        if service.protocol == Protocol::Udp
            && service.health.port.is_none()
            && !matches!(check, CheckKind::None | CheckKind::Exec)
        {
            out.push(format!(
                "service `{}` is UDP, but its check connects over TCP to the service port, where \
                 nothing may listen: give the check the `port:` of a TCP service of the real",
                service.name
            ));
        }
        if service.reals.iter().all(|r| r.weight == 0) {
            out.push(format!(
                "service `{}`: every real has weight 0, so no real takes new flows{}",
                service.name,
                if service.fallback.is_some() {
                    " (only the fallback does, while no real is up)"
                } else {
                    ": new connections to it fail"
                }
            ));
        }
    }
    out
}
