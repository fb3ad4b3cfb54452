//! From check results to up/down. The first result decides at once (a starting balancer must
//! not send flows to a dead server, nor hold back a live one); after that, `fall` failures in a
//! row take an up real down and `rise` successes in a row bring a down real up.

use super::Outcome;

#[derive(Debug, Clone, Default)]
pub struct Health {
    /// None until the first result.
    pub up: Option<bool>,
    /// Results in a row that disagree with the current state.
    streak: u32,
    pub last: Option<Outcome>,
    /// When the state last changed, for status.
    pub changed_at: Option<std::time::SystemTime>,
    /// State changes so far (the first result counts as one), for metrics.
    pub changes: u64,
}

/// A state change and the result that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub up: bool,
    pub reason: String,
}

impl Health {
    pub fn record(&mut self, outcome: Outcome, rise: u32, fall: u32) -> Option<Change> {
        let change = match self.up {
            None => Some(outcome.up),
            Some(up) if up == outcome.up => {
                self.streak = 0;
                None
            }
            Some(up) => {
                self.streak += 1;
                let needed = if up { fall } else { rise };
                (self.streak >= needed).then_some(outcome.up)
            }
        };
        let reason = outcome.reason.clone();
        self.last = Some(outcome);
        let up = change?;
        self.up = Some(up);
        self.streak = 0;
        self.changed_at = Some(std::time::SystemTime::now());
        self.changes += 1;
        Some(Change { up, reason })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn result(up: bool) -> Outcome {
        Outcome {
            up,
            reason: if up { "ok" } else { "refused" }.into(),
            latency: Duration::from_millis(1),
        }
    }

    #[test]
    fn first_result_decides_then_rise_and_fall_count_in_a_row() {
        let mut h = Health::default();
        assert_eq!(
            h.record(result(true), 2, 3),
            Some(Change {
                up: true,
                reason: "ok".into()
            })
        );
        // Two failures, a success in between resets the count.
        assert_eq!(h.record(result(false), 2, 3), None);
        assert_eq!(h.record(result(false), 2, 3), None);
        assert_eq!(h.record(result(true), 2, 3), None);
        assert_eq!(h.record(result(false), 2, 3), None);
        assert_eq!(h.record(result(false), 2, 3), None);
        assert_eq!(
            h.record(result(false), 2, 3).map(|c| c.up),
            Some(false),
            "third failure in a row"
        );
        assert_eq!(h.record(result(true), 2, 3), None);
        assert_eq!(h.record(result(true), 2, 3).map(|c| c.up), Some(true));
        assert_eq!(h.last.as_ref().map(|o| o.up), Some(true));
        assert_eq!(h.changes, 3);
    }

    #[test]
    fn a_first_failure_is_down_at_once() {
        let mut h = Health::default();
        assert_eq!(h.record(result(false), 2, 2).map(|c| c.up), Some(false));
        assert_eq!(h.up, Some(false));
    }
}
