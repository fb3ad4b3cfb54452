//! What a run reports: a broken promise (`Problem`) and its class, the failures counted by
//! class with the first frame of each (the line that replays it, how it was made, both frames
//! in hex), and the summary of expected outcomes and actions; frames, MACs and XDP actions as
//! text.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use xdplb_tests::fixture::{XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX};

use crate::{Outcome, generate::Case, oracle::Verdict};

/// A broken promise: its class (failures are counted by class) and the particulars.
pub(crate) struct Problem {
    pub(crate) class: String,
    pub(crate) detail: String,
}

pub(crate) fn problem(class: impl Into<String>, detail: impl Into<String>) -> Problem {
    Problem {
        class: class.into(),
        detail: detail.into(),
    }
}

#[derive(Default)]
pub(crate) struct Failures {
    /// Class -> (count, first example).
    pub(crate) classes: BTreeMap<String, (u64, String)>,
}

impl Failures {
    pub(crate) fn record(&mut self, class: String, example: impl FnOnce() -> String) {
        self.classes
            .entry(class)
            .and_modify(|(n, _)| *n += 1)
            .or_insert_with(|| (1, example()));
    }

    pub(crate) fn total(&self) -> u64 {
        self.classes.values().map(|(n, _)| n).sum()
    }
}

/// The first example of a failure class: the frame's index and the line that replays the run
/// up to it, how the frame was made, what was expected and what came out, both frames in hex.
pub(crate) fn failure_example(
    seed: u64,
    index: u64,
    case: &Case,
    verdict: &Verdict,
    out: &Outcome,
    problem: &Problem,
) -> String {
    let Problem { class, detail } = problem;
    format!(
        "frame #{index} (replay: XDPLB_FUZZ_SEED={seed:#x} XDPLB_FUZZ_FRAMES={})\n  \
         made: {}\n  expected: {}\n  got: {}, {} bytes\n  promise broken: {class}\n  \
         {detail}\n  input ({} bytes, arrived on {}):\n{}  output:\n{}",
        index + 1,
        case.made,
        verdict.label(),
        action_name(out.action),
        out.frame.len(),
        case.frame.len(),
        case.side.name(),
        hex_dump(&case.frame),
        hex_dump(&out.frame),
    )
}

pub(crate) struct Report {
    pub(crate) frames: u64,
    /// Verdict label -> count.
    pub(crate) verdicts: BTreeMap<String, u64>,
    /// Action -> count.
    pub(crate) actions: BTreeMap<String, u64>,
    pub(crate) failures: Failures,
    pub(crate) open_nat_flows: usize,
}

impl Report {
    pub(crate) fn new(frames: u64) -> Self {
        Report {
            frames,
            verdicts: BTreeMap::new(),
            actions: BTreeMap::new(),
            failures: Failures::default(),
            open_nat_flows: 0,
        }
    }

    /// Prints the summary of a run that took `elapsed`: the expected outcomes and the actions
    /// by count, and the failures by class with the first frame of each.
    pub(crate) fn print(&self, seed: u64, elapsed: Duration) {
        println!(
            "packet_fuzz: {} frames in {:.1} s ({:.1} µs each), {} NAT flows opened",
            self.frames,
            elapsed.as_secs_f64(),
            elapsed.as_secs_f64() * 1e6 / self.frames.max(1) as f64,
            self.open_nat_flows
        );
        println!("packet_fuzz: expected outcomes:");
        for (label, n) in &self.verdicts {
            println!("  {n:>7}  {label}");
        }
        println!("packet_fuzz: actions:");
        for (action, n) in &self.actions {
            println!("  {n:>7}  {action}");
        }
        let failures = &self.failures;
        if failures.total() > 0 {
            println!(
                "packet_fuzz: {} failures in {} classes (seed {seed:#x}):",
                failures.total(),
                failures.classes.len()
            );
            for (class, (n, _)) in &failures.classes {
                println!("  {n:>7}  {class}");
            }
            println!("packet_fuzz: the first frame of each class:");
            for (class, (_, example)) in &failures.classes {
                println!("--- {class}\n{example}");
            }
        }
    }
}

pub(crate) fn mac_text(m: &[u8]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn hex_dump(f: &[u8]) -> String {
    let mut s = String::new();
    for (i, chunk) in f.chunks(16).enumerate() {
        let _ = write!(s, "    {:04x} ", i * 16);
        for (j, b) in chunk.iter().enumerate() {
            let _ = write!(s, "{}{b:02x}", if j == 8 { "  " } else { " " });
        }
        s.push('\n');
    }
    s
}

pub(crate) fn action_name(action: u32) -> String {
    match action {
        0 => "XDP_ABORTED".into(),
        XDP_DROP => "XDP_DROP".into(),
        XDP_PASS => "XDP_PASS".into(),
        XDP_TX => "XDP_TX".into(),
        XDP_REDIRECT => "XDP_REDIRECT".into(),
        n => format!("action {n}"),
    }
}

/// What happened to a frame, in a few words: the action, and for a PASS whether it changed.
pub(crate) fn got(input: &[u8], out: &Outcome) -> String {
    if out.action == XDP_PASS {
        if out.frame == input {
            "XDP_PASS unchanged".into()
        } else {
            "XDP_PASS with the frame changed".into()
        }
    } else {
        action_name(out.action)
    }
}
