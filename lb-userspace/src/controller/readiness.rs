//! Whether this node may take (or keep) mastership of a pair: `xdplb ready`, keepalived's track
//! script, asks the controller, which decides here.
//!
//! A node that can serve (every service has a real in its table) is ready once it has been
//! able to for the settle time. A node cut off from the servers (its cable pulled) has marked
//! every real down; when it is reconnected, its checks bring the reals back one by one. Were
//! it ready at the first, it would take mastership back with a table of one real and move
//! most flows. Waiting until the slowest check could have risen (`rise` x `interval` +
//! `timeout`) since it could serve again gives every reachable real the time to come back, so
//! its tables equal its peer's.
//!
//! A node that keeps serving (the usual active one) is not affected by reals going down or
//! up. A restarted controller that finds a serving data plane in the pins (its first checks
//! ran before it wrote anything) is ready at once: a restart must not move the VIPs. A
//! service added by a reload has the settle time to get its first real before its absence
//! counts: reloading the active node first must not hand the VIPs to a peer that does not
//! have the service yet.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use crate::{
    api::status::Readiness,
    dataplane::sync::RealView,
    policy::{CheckKind, Policy},
};

#[derive(Debug, Default)]
pub struct Serving {
    /// Since when every service that has served has had a real in its table, continuously.
    since: Option<Instant>,
    /// Services that have had a real in their table (since this controller started).
    served: HashSet<String>,
    /// Services that never have, and since when they are in the policy.
    pending: HashMap<String, Instant>,
    /// Taken as already settled when it first serves: a restart over a serving data plane.
    settled_at_start: bool,
}

impl Serving {
    /// `restarted`: the controller adopted a data plane that was already serving.
    pub fn new(restarted: bool) -> Serving {
        Serving {
            settled_at_start: restarted,
            ..Default::default()
        }
    }

    /// Follows the tables as the last apply left them (`reals`).
    pub fn update(&mut self, policy: &Policy, reals: &[RealView]) {
        let now = Instant::now();
        let serving: HashSet<&str> = reals
            .iter()
            .filter(|r| r.in_table)
            .map(|r| r.service.as_str())
            .collect();
        let names: HashSet<&str> = policy.services.iter().map(|s| s.name.as_str()).collect();
        self.served.retain(|s| names.contains(s.as_str()));
        self.pending.retain(|s, _| names.contains(s.as_str()));
        for name in &names {
            if serving.contains(name) {
                self.served.insert(name.to_string());
                self.pending.remove(*name);
            } else if !self.served.contains(*name) {
                self.pending.entry(name.to_string()).or_insert(now);
            }
        }
        let lost = self.served.iter().any(|s| !serving.contains(s.as_str()));
        if lost || self.served.is_empty() {
            self.since = None;
            self.settled_at_start = false;
        } else if self.since.is_none() {
            let credit = if self.settled_at_start {
                settle_time(policy)
            } else {
                Duration::ZERO
            };
            self.since = Some(now.checked_sub(credit).unwrap_or(now));
            self.settled_at_start = false;
        }
    }

    pub fn readiness(&self, policy: &Policy) -> Readiness {
        let settle = settle_time(policy);
        let serving_for = self.since.map(|s| s.elapsed());
        let not_ready = match serving_for {
            None => {
                let mut empty: Vec<&str> = policy
                    .services
                    .iter()
                    .map(|s| s.name.as_str())
                    .filter(|s| !self.served.contains(*s) || self.pending.contains_key(*s))
                    .collect();
                if empty.is_empty() {
                    empty = self.served.iter().map(String::as_str).collect();
                }
                empty.sort();
                Some(format!("no real in the table of {}", empty.join(", ")))
            }
            Some(for_) if for_ < settle => Some(format!(
                "serving for {:.1} s only: the checks of reals still coming back need {:.1} s \
                 (rise x interval + timeout) before this node's tables can be trusted",
                for_.as_secs_f64(),
                settle.as_secs_f64()
            )),
            Some(_) => {
                let mut late: Vec<String> = self
                    .pending
                    .iter()
                    .filter(|(_, since)| since.elapsed() >= settle)
                    .map(|(name, since)| {
                        format!("{name} (in the policy for {} s)", since.elapsed().as_secs())
                    })
                    .collect();
                late.sort();
                (!late.is_empty()).then(|| format!("no real in the table of {}", late.join(", ")))
            }
        };
        Readiness {
            serving_for_ms: serving_for.map(|d| d.as_millis() as u64),
            settle_ms: settle.as_millis() as u64,
            not_ready,
        }
    }
}

/// How long the slowest health check takes to bring a real up from its first success.
pub fn settle_time(policy: &Policy) -> Duration {
    policy
        .services
        .iter()
        .filter(|s| s.health.kind != CheckKind::None)
        .map(|s| {
            s.health
                .interval
                .saturating_mul(s.health.rise.max(1))
                .saturating_add(s.health.timeout)
        })
        .max()
        .unwrap_or_default()
}
