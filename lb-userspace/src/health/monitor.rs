//! Runs every real's checks concurrently, one task per real, each on its own interval and
//! bounded by its own timeout, so a real that accepts and then hangs delays nobody else. The
//! controller feeds the reports back in (`record`) and learns which reals changed state.

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result};
use tokio::{sync::mpsc, task::JoinHandle, time::MissedTickBehavior};

use super::{
    Outcome, Target,
    probe::Probe,
    state::{Change, Health},
};
use crate::policy::{HealthCheck, Policy, RealRef};

/// A finished check of one real.
#[derive(Debug)]
pub struct Report {
    pub real: RealRef,
    pub outcome: Outcome,
}

struct Watch {
    check: HealthCheck,
    target: Target,
    task: JoinHandle<()>,
}

/// One real's health as status shows it.
#[derive(Debug, Clone)]
pub struct RealHealth {
    pub real: RealRef,
    pub target: Target,
    pub health: Health,
}

pub struct Monitor {
    watches: HashMap<RealRef, Watch>,
    states: HashMap<RealRef, Health>,
    reports: mpsc::UnboundedSender<Report>,
}

impl Monitor {
    pub fn new() -> (Monitor, mpsc::UnboundedReceiver<Report>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Monitor {
                watches: HashMap::new(),
                states: HashMap::new(),
                reports: tx,
            },
            rx,
        )
    }

    /// Starts checks for reals new to the policy, restarts those whose check changed, stops
    /// those gone. A real keeps its state across a restart of its check.
    pub fn follow(&mut self, policy: &Policy) -> Result<()> {
        let mut wanted = HashSet::new();
        for service in &policy.services {
            for real in &service.reals {
                let key = RealRef::of(service, real);
                let target = Target {
                    address: real.address,
                    port: service
                        .health
                        .port
                        .or(real.port)
                        .unwrap_or(service.ports[0]),
                };
                wanted.insert(key.clone());
                if let Some(w) = self.watches.get(&key)
                    && w.check == service.health
                    && w.target == target
                {
                    continue;
                }
                let probe = Probe::new(&service.health, &service.name, target)
                    .with_context(|| format!("health check of {key}"))?;
                let task = tokio::spawn(watch(
                    probe,
                    key.clone(),
                    service.health.interval,
                    self.reports.clone(),
                ));
                if let Some(old) = self.watches.insert(
                    key,
                    Watch {
                        check: service.health.clone(),
                        target,
                        task,
                    },
                ) {
                    old.task.abort();
                }
            }
        }
        self.watches.retain(|key, w| {
            let keep = wanted.contains(key);
            if !keep {
                w.task.abort();
            }
            keep
        });
        self.states.retain(|key, _| wanted.contains(key));
        Ok(())
    }

    /// Takes a report in; returns the state change it caused, if any. Reports of reals no
    /// longer watched (a check stopped by a reload) are ignored.
    pub fn record(&mut self, report: Report) -> Option<Change> {
        let watch = self.watches.get(&report.real)?;
        let (rise, fall) = (watch.check.rise, watch.check.fall);
        self.states
            .entry(report.real)
            .or_default()
            .record(report.outcome, rise, fall)
    }

    /// Reals that must not get new flows: down, or not checked yet.
    pub fn unhealthy(&self) -> HashSet<RealRef> {
        self.watches
            .keys()
            .filter(|key| self.states.get(*key).and_then(|h| h.up) != Some(true))
            .cloned()
            .collect()
    }

    /// Whether every watched real has had its first result.
    pub fn all_decided(&self) -> bool {
        self.watches
            .keys()
            .all(|key| self.states.get(key).and_then(|h| h.up).is_some())
    }

    pub fn health(&self) -> Vec<RealHealth> {
        self.watches
            .iter()
            .map(|(real, w)| RealHealth {
                real: real.clone(),
                target: w.target,
                health: self.states.get(real).cloned().unwrap_or_default(),
            })
            .collect()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        for w in self.watches.values() {
            w.task.abort();
        }
    }
}

async fn watch(
    probe: Probe,
    real: RealRef,
    interval: std::time::Duration,
    reports: mpsc::UnboundedSender<Report>,
) {
    let mut tick = tokio::time::interval(interval);
    // A slow check delays the next one; it never makes checks pile up.
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let outcome = probe.run().await;
        if reports
            .send(Report {
                real: real.clone(),
                outcome,
            })
            .is_err()
        {
            return;
        }
    }
}
