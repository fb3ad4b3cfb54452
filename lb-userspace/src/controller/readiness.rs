//! Whether this node may take (or keep) mastership of a pair: `xdplb ready`, keepalived's track
//! script, reads it from the status.
//!
//! A node that can serve (every service has a real in its table) is ready once it has been
//! able to for the settle time. A node cut off from the servers (its cable pulled) has marked
//! every real down; when it is reconnected, its checks bring the reals back one by one. Were
//! it ready at the first, it would take mastership back with a table of one real and move
//! most flows. Waiting until the slowest check could have risen (`rise` × `interval` +
//! `timeout`) since it could serve again gives every reachable real the time to come back, so
//! its tables equal its peer's. A node that has kept serving all along (the usual active one)
//! is not affected by reals going down or up.

use std::time::{Duration, Instant};

use crate::{
    api::status::Readiness,
    dataplane::sync::RealView,
    policy::{CheckKind, Policy},
};

#[derive(Debug, Default)]
pub struct Serving {
    /// Since when every service has had a real in its table, continuously.
    since: Option<Instant>,
}

impl Serving {
    /// Follows the tables as the last apply left them (`reals`).
    pub fn update(&mut self, policy: &Policy, reals: &[RealView]) {
        let serving = policy
            .services
            .iter()
            .all(|s| reals.iter().any(|r| r.service == s.name && r.in_table));
        match (serving, self.since) {
            (true, None) => self.since = Some(Instant::now()),
            (false, Some(_)) => self.since = None,
            _ => {}
        }
    }

    pub fn readiness(&self, policy: &Policy) -> Readiness {
        Readiness {
            serving_for_ms: self.since.map(|s| s.elapsed().as_millis() as u64),
            settle_ms: settle_time(policy).as_millis() as u64,
        }
    }
}

/// How long the slowest health check takes to bring a real up from its first success.
pub fn settle_time(policy: &Policy) -> Duration {
    policy
        .services
        .iter()
        .filter(|s| s.health.kind != CheckKind::None)
        .map(|s| s.health.interval * s.health.rise.max(1) + s.health.timeout)
        .max()
        .unwrap_or_default()
}
