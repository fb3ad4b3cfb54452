//! Continuous client traffic through a VIP while the lab changes underneath it: what a
//! failover costs, as clients see it.
//!
//! - Fresh connections, one started every `fresh_every` whatever the others are doing: connect
//!   (a SYN lost in a takeover is retransmitted by the kernel after 1 s, and still counts if it
//!   gets through within the connect timeout), ask `who`, read the real's name, close.
//! - Long-lived connections (an open viewer session, a DICOM association) that ask `who` every
//!   `ask_every` and must always get the same real's name back, without an error.
//! - Downloads (an image retrieval): the real streams data without end and the client reads
//!   it at a bounded rate, so the real always has data to send: after a takeover its
//!   segments (retransmissions, window probes) can reach the new active node before any
//!   packet of the client's does. A download must never stall for long or end.
//!
//! Every successful exchange's completion time goes on one timeline; the longest gap between
//! consecutive successes around an event is the takeover time a client sees.

use std::{
    collections::BTreeMap,
    fmt,
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use super::{Conversation, Netns};

#[derive(Clone, Debug)]
pub struct TrafficConfig {
    pub to: SocketAddr,
    pub fresh_every: Duration,
    pub connect_timeout: Duration,
    pub long_lived: usize,
    pub ask_every: Duration,
    pub downloads: usize,
    /// Each download reads at most this many bytes per second.
    pub download_rate: usize,
}

impl TrafficConfig {
    /// A fresh connection every 30 ms (3 s to connect and 3 s to answer), 6 long-lived ones
    /// asking every 50 ms, 2 downloads of 2 MB/s each.
    pub fn to(to: SocketAddr) -> TrafficConfig {
        TrafficConfig {
            to,
            fresh_every: Duration::from_millis(30),
            connect_timeout: Duration::from_secs(3),
            long_lived: 6,
            ask_every: Duration::from_millis(50),
            downloads: 2,
            download_rate: 2_000_000,
        }
    }
}

/// One fresh connection's outcome.
#[derive(Clone, Debug)]
pub struct Fresh {
    pub started: Instant,
    pub finished: Instant,
    /// The real's name, or what went wrong.
    pub result: Result<String, String>,
}

/// One long-lived connection's story.
#[derive(Clone, Debug, Default)]
pub struct LongLived {
    /// The client's address and port (the flow's source).
    pub local: Option<SocketAddr>,
    /// The real it answered from first.
    pub real: String,
    pub answers: usize,
    /// Answers from another real than the first, with when (since the traffic started).
    pub changes: Vec<(Duration, String)>,
    /// The error that ended it, with when; the connection is not used after an error.
    pub error: Option<(Duration, String)>,
    /// The longest time between two answers (or from the last answer to its end).
    pub longest_gap: Duration,
    /// Completion times of its answers.
    answered_at: Vec<Instant>,
}

impl LongLived {
    /// Stayed on its first real and never failed.
    pub fn intact(&self) -> bool {
        self.changes.is_empty() && self.error.is_none() && self.answers > 0
    }
}

/// Dropping it without `stop` (a test that failed half-way) tells its threads to end.
/// One download's story.
#[derive(Clone, Debug, Default)]
pub struct Download {
    /// The client's address and port (the flow's source).
    pub local: Option<SocketAddr>,
    /// The real it answered `who` from before the download began.
    pub real: String,
    pub bytes: usize,
    /// The longest time without a byte (or from the last byte to its end).
    pub longest_stall: Duration,
    /// The error that ended it, with when (since the traffic started).
    pub error: Option<(Duration, String)>,
}

impl Download {
    pub fn intact(&self) -> bool {
        self.error.is_none() && self.bytes > 0
    }
}

pub struct Traffic {
    stop: Arc<AtomicBool>,
    started: Instant,
    /// The client ends of the long-lived connections and downloads.
    locals: Vec<SocketAddr>,
    fresh: Option<JoinHandle<Vec<Fresh>>>,
    long: Vec<JoinHandle<LongLived>>,
    downloads: Vec<JoinHandle<Download>>,
}

impl Traffic {
    /// Opens the long-lived connections (each must answer once) and starts everything, on
    /// threads inside `ns`.
    pub fn start(ns: &Netns, config: TrafficConfig) -> Result<Traffic> {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let mut locals = Vec::new();
        let mut long = Vec::new();
        for i in 0..config.long_lived {
            let mut conversation = Conversation::open(ns, config.to)
                .with_context(|| format!("opening long-lived connection {i}"))?;
            locals.extend(conversation.local().ok());
            let real = conversation
                .who()
                .with_context(|| format!("first answer on long-lived connection {i}"))?;
            let (stop, every) = (stop.clone(), config.ask_every);
            long.push(std::thread::spawn(move || {
                converse(conversation, real, every, &stop, started)
            }));
        }
        let mut downloads = Vec::new();
        for i in 0..config.downloads {
            let mut conversation = Conversation::open(ns, config.to)
                .with_context(|| format!("opening download {i}"))?;
            locals.extend(conversation.local().ok());
            let real = conversation
                .who()
                .with_context(|| format!("first answer on download {i}"))?;
            let (stop, rate) = (stop.clone(), config.download_rate);
            downloads.push(std::thread::spawn(move || {
                download(conversation, real, rate, &stop, started)
            }));
        }
        let fresh = {
            let (stop, config) = (stop.clone(), config.clone());
            ns.spawn(move || dispatch(&config, &stop))?
        };
        Ok(Traffic {
            stop,
            started,
            locals,
            fresh: Some(fresh),
            long,
            downloads,
        })
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    /// The client ends (address, port) of the long-lived connections and the downloads.
    pub fn long_lived_locals(&self) -> &[SocketAddr] {
        &self.locals
    }

    /// Stops starting new exchanges, waits for those under way and reports.
    pub fn stop(mut self) -> TrafficReport {
        self.stop.store(true, Ordering::Relaxed);
        let stopped = Instant::now();
        let fresh = self
            .fresh
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default();
        let long: Vec<LongLived> = std::mem::take(&mut self.long)
            .into_iter()
            .map(|t| {
                t.join().unwrap_or_else(|_| LongLived {
                    error: Some((Duration::ZERO, "thread panicked".into())),
                    ..LongLived::default()
                })
            })
            .collect();
        let downloads: Vec<Download> = std::mem::take(&mut self.downloads)
            .into_iter()
            .map(|t| {
                t.join().unwrap_or_else(|_| Download {
                    error: Some((Duration::ZERO, "thread panicked".into())),
                    ..Download::default()
                })
            })
            .collect();
        let mut successes: Vec<Instant> = fresh
            .iter()
            .filter(|f| f.result.is_ok())
            .map(|f| f.finished)
            .chain(long.iter().flat_map(|l| l.answered_at.iter().copied()))
            .collect();
        successes.sort();
        TrafficReport {
            started: self.started,
            stopped,
            fresh,
            long,
            downloads,
            successes,
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Starts a fresh connection every `fresh_every` on its own thread (threads started here
/// inherit this thread's network namespace); returns every outcome once stopped.
fn dispatch(config: &TrafficConfig, stop: &AtomicBool) -> Vec<Fresh> {
    let results = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let (to, timeout, results) = (config.to, config.connect_timeout, results.clone());
        workers.push(std::thread::spawn(move || {
            let started = Instant::now();
            let result = fresh_exchange(to, timeout).map_err(|e| format!("{e:#}"));
            results.lock().unwrap().push(Fresh {
                started,
                finished: Instant::now(),
                result,
            });
        }));
        next += config.fresh_every;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        workers.retain(|w| !w.is_finished());
    }
    for worker in workers {
        let _ = worker.join();
    }
    let mut results = std::mem::take(&mut *results.lock().unwrap());
    results.sort_by_key(|f| f.started);
    results
}

fn fresh_exchange(to: SocketAddr, timeout: Duration) -> Result<String> {
    let stream = TcpStream::connect_timeout(&to, timeout).context("connect")?;
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut reader = BufReader::new(stream);
    writeln!(reader.get_mut(), "who")?;
    let mut answer = String::new();
    reader
        .read_line(&mut answer)
        .context("reading the answer")?;
    anyhow::ensure!(!answer.is_empty(), "closed without an answer");
    Ok(answer.trim().to_string())
}

fn converse(
    mut conversation: Conversation,
    real: String,
    every: Duration,
    stop: &AtomicBool,
    started: Instant,
) -> LongLived {
    let mut story = LongLived {
        local: conversation.local().ok(),
        real: real.clone(),
        answers: 1,
        answered_at: vec![Instant::now()],
        ..LongLived::default()
    };
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(every);
        match conversation.who() {
            Ok(name) => {
                let now = Instant::now();
                story.longest_gap = story.longest_gap.max(now - last);
                last = now;
                story.answers += 1;
                story.answered_at.push(now);
                if name != real {
                    story.changes.push((now - started, name));
                }
            }
            Err(e) => {
                story.error = Some((started.elapsed(), format!("{e:#}")));
                break;
            }
        }
    }
    story.longest_gap = story.longest_gap.max(last.elapsed());
    story
}

/// Asks the real to stream without end (`get` with a huge count) and reads at most `rate`
/// bytes per second until stopped.
fn download(
    conversation: Conversation,
    real: String,
    rate: usize,
    stop: &AtomicBool,
    started: Instant,
) -> Download {
    let mut story = Download {
        local: conversation.local().ok(),
        real,
        ..Download::default()
    };
    let mut stream = conversation.into_stream();
    if let Err(e) = writeln!(stream, "get {}", u64::MAX / 2) {
        story.error = Some((started.elapsed(), format!("asking for the download: {e}")));
        return story;
    }
    let tick = Duration::from_millis(10);
    let mut buffer = vec![0u8; (rate / 100).max(1)];
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let begun = Instant::now();
        let mut got = 0;
        while got < buffer.len() {
            match std::io::Read::read(&mut stream, &mut buffer[got..]) {
                Ok(0) => {
                    story.error = Some((started.elapsed(), "closed by the server".into()));
                    return story;
                }
                Ok(n) => {
                    got += n;
                    let now = Instant::now();
                    story.longest_stall = story.longest_stall.max(now - last);
                    last = now;
                    story.bytes += n;
                }
                Err(e) => {
                    story.error = Some((started.elapsed(), format!("{e}")));
                    return story;
                }
            }
        }
        if let Some(wait) = tick.checked_sub(begun.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    story.longest_stall = story.longest_stall.max(last.elapsed());
    story
}

pub struct TrafficReport {
    pub started: Instant,
    pub stopped: Instant,
    pub fresh: Vec<Fresh>,
    pub long: Vec<LongLived>,
    pub downloads: Vec<Download>,
    /// Completion times of every successful exchange, fresh and long-lived, in order.
    pub successes: Vec<Instant>,
}

impl TrafficReport {
    pub fn fresh_ok(&self) -> usize {
        self.fresh.iter().filter(|f| f.result.is_ok()).count()
    }

    pub fn fresh_failed(&self) -> Vec<&Fresh> {
        self.fresh.iter().filter(|f| f.result.is_err()).collect()
    }

    /// Fresh connections answered per real.
    pub fn fresh_by_real(&self) -> BTreeMap<&str, usize> {
        let mut by = BTreeMap::new();
        for f in &self.fresh {
            if let Ok(name) = &f.result {
                *by.entry(name.as_str()).or_default() += 1;
            }
        }
        by
    }

    /// The slowest successful fresh connection (connect to answer).
    pub fn slowest_fresh(&self) -> Duration {
        self.fresh
            .iter()
            .filter(|f| f.result.is_ok())
            .map(|f| f.finished - f.started)
            .max()
            .unwrap_or_default()
    }

    /// The longest time between two consecutive successful exchanges (any connection) where
    /// the later one is after `from` and the earlier one before `until`: what clients saw of
    /// whatever happened at `from`.
    pub fn longest_gap(&self, from: Instant, until: Instant) -> Duration {
        let mut longest = Duration::ZERO;
        for pair in self.successes.windows(2) {
            if pair[1] >= from && pair[0] <= until {
                longest = longest.max(pair[1] - pair[0]);
            }
        }
        // Nothing got through after `from` at all.
        if self.successes.last().is_none_or(|&last| last < from) {
            longest = longest.max(until.min(self.stopped) - from);
        }
        longest
    }

    /// The longest wait one connection saw for whatever happened at `from`: the longest gap
    /// between two answers of a long-lived connection where the later one is after `from` and
    /// the earlier one before `until` (the TCP retransmission backoff adds to the takeover).
    pub fn longest_wait(&self, from: Instant, until: Instant) -> Duration {
        self.long
            .iter()
            .flat_map(|l| l.answered_at.windows(2))
            .filter(|pair| pair[1] >= from && pair[0] <= until)
            .map(|pair| pair[1] - pair[0])
            .max()
            .unwrap_or_default()
    }

    pub fn all_long_lived_intact(&self) -> bool {
        self.long.iter().all(LongLived::intact)
    }

    pub fn all_downloads_intact(&self) -> bool {
        self.downloads.iter().all(Download::intact)
    }
}

impl fmt::Display for TrafficReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = |t: Instant| t.saturating_duration_since(self.started).as_millis();
        writeln!(
            f,
            "fresh connections: {} ok, {} failed, slowest {} ms, by real {:?}",
            self.fresh_ok(),
            self.fresh_failed().len(),
            self.slowest_fresh().as_millis(),
            self.fresh_by_real()
        )?;
        for failed in self.fresh_failed().iter().take(10) {
            writeln!(
                f,
                "  fresh started at {} ms failed after {} ms: {}",
                at(failed.started),
                (failed.finished - failed.started).as_millis(),
                failed.result.as_ref().unwrap_err()
            )?;
        }
        for (i, l) in self.long.iter().enumerate() {
            write!(
                f,
                "long-lived {i}: on {}, {} answers, longest gap {} ms",
                l.real,
                l.answers,
                l.longest_gap.as_millis()
            )?;
            for (t, name) in &l.changes {
                write!(f, "; at {} ms answered from {name}", t.as_millis())?;
            }
            if let Some((t, e)) = &l.error {
                write!(f, "; FAILED at {} ms: {e}", t.as_millis())?;
            }
            writeln!(f)?;
        }
        for (i, d) in self.downloads.iter().enumerate() {
            write!(
                f,
                "download {i}: from {}, {} kB, longest stall {} ms",
                d.real,
                d.bytes / 1000,
                d.longest_stall.as_millis()
            )?;
            if let Some((t, e)) = &d.error {
                write!(f, "; FAILED at {} ms: {e}", t.as_millis())?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}
