//! Runtime admin state: `xdplb drain|undrain` (no new flows or clients, its flows continue),
//! `halt|unhalt` (out of the table now, its flows moved, as if its check failed) and `weight`
//! (a runtime weight instead of the policy's). Kept in a state file (`--state-file`, default
//! /var/lib/xdplb/admin-state.json), written atomically at each change, so it lasts across
//! reloads and controller restarts until undone; who did it and when is kept with it. A real
//! that leaves the policy takes its admin state with it.

use std::{
    collections::HashSet,
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::policy::{Policy, RealRef};

pub const DEFAULT_STATE_FILE: &str = "/var/lib/xdplb/admin-state.json";

/// What an operator asked for one address of one service (every port of it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AdminEntry {
    pub service: String,
    pub address: IpAddr,
    #[serde(default)]
    pub drained: bool,
    #[serde(default)]
    pub halted: bool,
    /// A runtime weight instead of the policy's.
    #[serde(default)]
    pub weight: Option<u16>,
    /// Who made the last change, and when (RFC 3339).
    pub by: String,
    pub at: String,
}

impl AdminEntry {
    fn is_neutral(&self) -> bool {
        !self.drained && !self.halted && self.weight.is_none()
    }

    /// What `status` says of it.
    pub fn describe(&self) -> String {
        let mut what = Vec::new();
        if self.halted {
            what.push("halted".to_string());
        }
        if self.drained {
            what.push("drained".to_string());
        }
        if let Some(weight) = self.weight {
            what.push(format!("weight {weight}"));
        }
        format!("{} by operator {} at {}", what.join(", "), self.by, self.at)
    }
}

/// One admin change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdminChange {
    Drain,
    Undrain,
    Halt,
    Unhalt,
    /// A runtime weight; `None` goes back to the policy's.
    Weight(Option<u16>),
}

#[derive(Debug, Default)]
pub struct AdminState {
    entries: Vec<AdminEntry>,
    path: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    reals: Vec<AdminEntry>,
}

impl AdminState {
    /// Reads the state file at `path` (none yet: nothing to restore). A file that cannot be
    /// read is an error: starting without it would silently undo an operator's drains.
    pub fn load(path: &Path) -> Result<AdminState> {
        let entries = match std::fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice::<StateFile>(&bytes)
                    .with_context(|| {
                        format!(
                            "the admin state file {} is damaged (move it away to start without \
                             the drains, halts and weights it kept)",
                            path.display()
                        )
                    })?
                    .reals
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(e).with_context(|| format!("reading {}", path.display()));
            }
        };
        Ok(AdminState {
            entries,
            path: path.to_path_buf(),
        })
    }

    fn save(&self) -> Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let tmp = self.path.with_extension("json.new");
        let text = serde_json::to_string_pretty(&StateFile {
            reals: self.entries.clone(),
        })?;
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("replacing {}", self.path.display()))
    }

    /// Applies `change` to `address` in `service`, by `by`; saved before it returns.
    pub fn change(
        &mut self,
        service: &str,
        address: IpAddr,
        change: AdminChange,
        by: &str,
    ) -> Result<()> {
        let at = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let index = match self
            .entries
            .iter()
            .position(|e| e.service == service && e.address == address)
        {
            Some(i) => i,
            None => {
                self.entries.push(AdminEntry {
                    service: service.to_string(),
                    address,
                    drained: false,
                    halted: false,
                    weight: None,
                    by: String::new(),
                    at: String::new(),
                });
                self.entries.len() - 1
            }
        };
        let entry = &mut self.entries[index];
        match change {
            AdminChange::Drain => entry.drained = true,
            AdminChange::Undrain => entry.drained = false,
            AdminChange::Halt => entry.halted = true,
            AdminChange::Unhalt => entry.halted = false,
            AdminChange::Weight(weight) => entry.weight = weight,
        }
        entry.by = by.to_string();
        entry.at = at;
        if entry.is_neutral() {
            self.entries.remove(index);
        }
        self.save()
    }

    /// Forgets what was said of reals that left the policy; saves if anything went.
    pub fn prune(&mut self, policy: &Policy) -> Result<()> {
        let before = self.entries.len();
        self.entries.retain(|e| {
            policy
                .services
                .iter()
                .any(|s| s.name == e.service && s.reals.iter().any(|r| r.address == e.address))
        });
        if self.entries.len() != before {
            self.save()?;
        }
        Ok(())
    }

    pub fn entry(&self, service: &str, address: IpAddr) -> Option<&AdminEntry> {
        self.entries
            .iter()
            .find(|e| e.service == service && e.address == address)
    }

    /// The reals drained, and those halted.
    pub fn drained_and_halted(&self, policy: &Policy) -> (HashSet<RealRef>, HashSet<RealRef>) {
        let (mut drained, mut halted) = (HashSet::new(), HashSet::new());
        for service in &policy.services {
            for real in &service.reals {
                if let Some(entry) = self.entry(&service.name, real.address) {
                    if entry.drained {
                        drained.insert(RealRef::of(service, real));
                    }
                    if entry.halted {
                        halted.insert(RealRef::of(service, real));
                    }
                }
            }
        }
        (drained, halted)
    }

    /// `policy` with the runtime weights in place of its own.
    pub fn effective(&self, policy: &Policy) -> Policy {
        let mut effective = policy.clone();
        for service in &mut effective.services {
            for real in &mut service.reals {
                if let Some(weight) = self
                    .entry(&service.name, real.address)
                    .and_then(|e| e.weight)
                {
                    real.weight = weight;
                }
            }
        }
        effective
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = "interfaces:\n  - name: eth0\nservices:\n  - name: dicom\n    vip: 198.18.0.100\n    ports: [104]\n    protocol: tcp\n    forwarding: dr\n    reals:\n      - address: 198.18.0.11\n      - address: 198.18.0.12\n";

    fn file(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("xdplb-admin-{}-{name}.json", std::process::id()))
    }

    #[test]
    fn changes_are_kept_in_the_file_and_undone_entries_leave_it() {
        let path = file("kept");
        let _ = std::fs::remove_file(&path);
        let policy = crate::policy::parse("p.yaml", POLICY).unwrap();
        let a: IpAddr = "198.18.0.11".parse().unwrap();
        let b: IpAddr = "198.18.0.12".parse().unwrap();
        let mut state = AdminState::load(&path).unwrap();
        state
            .change("dicom", a, AdminChange::Drain, "alice")
            .unwrap();
        state
            .change("dicom", b, AdminChange::Weight(Some(7)), "bob")
            .unwrap();
        state.change("dicom", b, AdminChange::Halt, "bob").unwrap();

        let again = AdminState::load(&path).unwrap();
        let (drained, halted) = again.drained_and_halted(&policy);
        assert_eq!((drained.len(), halted.len()), (1, 1));
        assert_eq!(again.effective(&policy).services[0].reals[1].weight, 7);
        assert!(
            again
                .entry("dicom", a)
                .unwrap()
                .describe()
                .starts_with("drained by operator alice at ")
        );

        let mut again = again;
        again
            .change("dicom", b, AdminChange::Unhalt, "bob")
            .unwrap();
        again
            .change("dicom", b, AdminChange::Weight(None), "bob")
            .unwrap();
        assert!(
            again.entry("dicom", b).is_none(),
            "nothing left to say of it"
        );
        // A real that left the policy takes its state with it.
        let without_a = crate::policy::parse(
            "p.yaml",
            &POLICY.replace("      - address: 198.18.0.11\n", ""),
        )
        .unwrap();
        again.prune(&without_a).unwrap();
        assert!(AdminState::load(&path).unwrap().entry("dicom", a).is_none());
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_damaged_file_is_an_error_not_a_silent_undo() {
        let path = file("damaged");
        std::fs::write(&path, "{ not json").unwrap();
        let e = AdminState::load(&path).unwrap_err();
        assert!(format!("{e:#}").contains("damaged"), "{e:#}");
        let _ = std::fs::remove_file(&path);
    }
}
