//! SNAT end to end in namespace labs (lab/snat.rs), one-arm and two-arm: reals that xdplb
//! never touched, with no route to the client, serve HTTP (fresh connections and keep-alive),
//! UDP and DICOM (dcmtk's storescu to storescp) through SNAT VIPs with the real `xdplb run`.
//! The reals see every VIP connection come from the balancer's address and a port of xdplb's
//! range; the balancer host's own connections to the reals, from ports outside it (they are
//! reserved while SNAT runs), keep working before, during and after.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    ops::RangeInclusive,
    process::{Child, Stdio},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use lb_common::maps::{SNAT_PORT_COUNT, SNAT_PORT_FIRST};
use serde_json::Value;
use xdplb_lab::lab::{
    Arms, Conversation, NAT_VIP, Netns, SNAT_DICOM_PORT, SnatLab, dicom, established_peers,
    http_get, http_get_path, http_keep_alive, udp_ask, udp_ask_here, udp_who, who,
};

/// One lab at a time, even when the harness runs both tests at once: on a small machine two
/// labs would stretch each other's timeouts.
static ONE_LAB: Mutex<()> = Mutex::new(());

fn one_lab() -> MutexGuard<'static, ()> {
    ONE_LAB
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// xdplb's SNAT source ports.
const SNAT_PORTS: RangeInclusive<u16> = SNAT_PORT_FIRST..=SNAT_PORT_FIRST + (SNAT_PORT_COUNT - 1);

/// The DICOM associations sent at once, and the instances each carries.
const ASSOCIATIONS: usize = 4;
const PER_ASSOCIATION: usize = 2;

/// What a failure shows besides its message: the counters, the status and the controller's log.
fn diagnosis(lab: &SnatLab) -> String {
    let status = lab
        .balancer
        .status_table()
        .unwrap_or_else(|e| format!("(status: {e:#})"));
    let stats = lab
        .balancer
        .stats_table()
        .unwrap_or_else(|e| format!("(stats: {e:#})"));
    format!(
        "\n--- xdplb status\n{status}--- xdplb stats\n{stats}--- xdplb log\n{}",
        lab.balancer.log()
    )
}

/// A real saw `peer` for a VIP flow: it must be the balancer's address and a port of the range.
fn ensure_snat_peer(lab: &SnatLab, peer: SocketAddr, what: &str) -> Result<()> {
    ensure!(
        peer.ip() == IpAddr::V4(lab.snat_source) && SNAT_PORTS.contains(&peer.port()),
        "{what}: the real saw the connection come from {peer}, not from {}:{}-{}",
        lab.snat_source,
        SNAT_PORTS.start(),
        SNAT_PORTS.end()
    );
    Ok(())
}

/// A real saw `peer` for the balancer host's own connection: the balancer's address and a port
/// outside the range (reserved while SNAT runs).
fn ensure_host_peer(lab: &SnatLab, peer: SocketAddr, what: &str) -> Result<()> {
    ensure!(
        peer.ip() == IpAddr::V4(lab.snat_source) && !SNAT_PORTS.contains(&peer.port()),
        "{what}: the balancer's own connection came from {peer}: expected {} and a port outside {}-{}",
        lab.snat_source,
        SNAT_PORTS.start(),
        SNAT_PORTS.end()
    );
    Ok(())
}

/// `real-N 198.19.0.1:41234` (a `GET /peer` body): the real's name and the peer it saw.
fn name_and_peer(body: &str) -> Result<(String, SocketAddr)> {
    let (name, peer) = body
        .split_once(' ')
        .with_context(|| format!("GET /peer answered {body:?}"))?;
    Ok((name.to_string(), peer.parse()?))
}

/// `net.ipv4.ip_local_reserved_ports` in `ns`.
fn reserved_ports(ns: &Netns) -> Result<String> {
    Ok(ns
        .within(|| std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_reserved_ports"))??
        .trim()
        .to_string())
}

/// Whether the sysctl's value (`40960-57343,60000`) reserves every port of the range.
fn reserves_snat_ports(reserved: &str) -> Result<bool> {
    let mut ranges = Vec::new();
    for item in reserved.split(',').filter(|i| !i.is_empty()) {
        let (first, last) = item.split_once('-').unwrap_or((item, item));
        ranges.push(first.trim().parse::<u16>()?..=last.trim().parse::<u16>()?);
    }
    Ok(SNAT_PORTS
        .clone()
        .all(|port| ranges.iter().any(|r| r.contains(&port))))
}

fn status(lab: &SnatLab) -> Result<Value> {
    let out = lab.balancer.ctl(&["status", "--json"])?;
    ensure!(
        out.status.success(),
        "xdplb status --json: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The reals got nothing from xdplb (no VIP, no address or route but their own subnet) and
/// cannot reach the client: without SNAT, no reply could find its way back.
fn ensure_reals_untouched(lab: &SnatLab) -> Result<()> {
    let client = lab.client_addr.to_string();
    for (ns, addr, name) in &lab.reals {
        let addresses = ns.ip(&["-4", "-o", "addr", "show"])?;
        let mut inet: Vec<&str> = addresses
            .lines()
            .filter_map(|l| l.split(" inet ").nth(1)?.split_whitespace().next())
            .collect();
        inet.sort();
        ensure!(
            inet == ["127.0.0.1/8", &format!("{addr}/24")],
            "{name} has addresses {inet:?}"
        );
        // Every table, but the kernel's own local and broadcast routes.
        let routes = ns.ip(&["-4", "route", "show", "table", "all"])?;
        let routes: Vec<&str> = routes
            .lines()
            .map(str::trim)
            .filter(|r| !r.starts_with("local ") && !r.starts_with("broadcast "))
            .collect();
        let [a, b, c, _] = addr.octets();
        let subnet = format!("{a}.{b}.{c}.0/24 dev eth0 proto kernel scope link src {addr}");
        ensure!(
            routes == [subnet.as_str()],
            "{name} has routes {routes:?}: only its own subnet's was expected"
        );
        ensure!(
            ns.ip(&["route", "get", &client]).is_err(),
            "{name} has a route to the client {client}"
        );
    }
    Ok(())
}

/// One exchange of the balancer host's own: what it was, and the peer the real saw (or what
/// went wrong).
type HostExchange = (String, Result<SocketAddr, String>);

/// The balancer host's own traffic to the reals, from its namespace, all along: a TCP `peer`
/// question to each real's 8080 and a UDP one to its 53, every 50 ms.
struct HostTraffic {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<HostExchange>>>,
}

impl HostTraffic {
    fn start(lab: &SnatLab) -> Result<HostTraffic> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let reals: Vec<(std::net::Ipv4Addr, String)> = lab
            .reals
            .iter()
            .map(|(_, addr, name)| (*addr, name.clone()))
            .collect();
        let thread = lab.balancer.ns.spawn(move || {
            let mut seen = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                for (addr, name) in &reals {
                    let tcp = Conversation::open_here(SocketAddr::from((*addr, 8080)))
                        .and_then(|mut c| c.peer());
                    seen.push((format!("TCP to {name}"), tcp.map_err(|e| format!("{e:#}"))));
                    let udp = udp_ask_here(SocketAddr::from((*addr, 53)), "peer")
                        .and_then(|answer| Ok(answer.parse::<SocketAddr>()?));
                    seen.push((format!("UDP to {name}"), udp.map_err(|e| format!("{e:#}"))));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            seen
        })?;
        Ok(HostTraffic {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops it; returns what each exchange's real saw (or what went wrong).
    fn finish(mut self) -> Result<Vec<HostExchange>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .context("finished twice")?
            .join()
            .map_err(|_| anyhow::anyhow!("the host traffic thread panicked"))
    }
}

impl Drop for HostTraffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `storescu` from the client to the DICOM VIP, one association carrying `files`.
fn storescu(lab: &SnatLab, files: &[(std::path::PathBuf, String)]) -> Result<Child> {
    Ok(lab
        .client
        .command("storescu")
        .args([
            "-aec", "STORESCP", "-aet", "MODALITY", "-to", "5", "-ta", "5", "-td", "10",
        ])
        .arg(NAT_VIP.to_string())
        .arg(SNAT_DICOM_PORT.to_string())
        .args(files.iter().map(|(f, _)| f))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?)
}

/// DICOM through the VIP: `ASSOCIATIONS` storescu associations at once, each of
/// `PER_ASSOCIATION` instances; every instance is stored exactly once, and every connection
/// the reals' storescp had on 104 while they ran (seen with `ss` every 100 ms) came from the
/// balancer and a port of the range, one port per association.
fn dicom_through_the_vip(lab: &SnatLab) -> Result<()> {
    let dir = lab.balancer.work_dir.join("dicom-send");
    std::fs::create_dir_all(&dir)?;
    let sent = dicom::instances(&dir, 51, (ASSOCIATIONS * PER_ASSOCIATION) as u32)?;
    let mut senders = sent
        .chunks(PER_ASSOCIATION)
        .map(|files| storescu(lab, files))
        .collect::<Result<Vec<_>>>()?;
    let mut peers: HashSet<(String, SocketAddr)> = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut running = senders.len();
    while running > 0 {
        for (ns, _, name) in &lab.reals {
            for peer in established_peers(ns, SNAT_DICOM_PORT)? {
                peers.insert((name.clone(), peer));
            }
        }
        running = 0;
        for sender in &mut senders {
            if sender.try_wait()?.is_none() {
                running += 1;
            }
        }
        if Instant::now() > deadline {
            for sender in &mut senders {
                let _ = sender.kill();
            }
            bail!("storescu did not finish within 30 s{}", diagnosis(lab));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for (i, sender) in senders.into_iter().enumerate() {
        let out = sender.wait_with_output()?;
        ensure!(
            out.status.success(),
            "storescu association {i} through the SNAT VIP failed ({}):\n{}{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            diagnosis(lab)
        );
    }
    let mut counts = HashMap::new();
    for dir in &lab.dicom_dirs {
        dicom::stored_uids(dir, &mut counts)?;
    }
    for (_, uid) in &sent {
        let n = counts.get(uid).copied().unwrap_or(0);
        ensure!(n == 1, "instance {uid} stored {n} times: {counts:?}");
    }
    ensure!(
        counts.len() == sent.len(),
        "unexpected instances: {counts:?}"
    );
    for (name, peer) in &peers {
        ensure_snat_peer(lab, *peer, &format!("DICOM association on {name}"))?;
    }
    ensure!(
        peers.len() == ASSOCIATIONS,
        "the reals' storescp saw {} connections from the balancer for {ASSOCIATIONS} \
         associations: {peers:?}",
        peers.len()
    );
    eprintln!(
        "snat: {} instances in {ASSOCIATIONS} DICOM associations, each stored once; the reals \
         saw {peers:?}",
        sent.len()
    );
    Ok(())
}

/// `xdplb status`: every service is `snat`, each real's SNAT source is the balancer's address
/// toward it, and the port range is xdplb's.
fn ensure_status_shows_snat(lab: &SnatLab) -> Result<()> {
    let status = status(lab)?;
    let services = status["services"].as_array().context("services")?;
    ensure!(services.len() == 3, "status: {status}");
    for service in services {
        ensure!(
            service["forwarding"] == "snat",
            "service {} shows forwarding {}",
            service["name"],
            service["forwarding"]
        );
        for real in service["reals"].as_array().context("reals")? {
            ensure!(
                real["snat_address"] == lab.snat_source.to_string(),
                "service {} real {} shows snat_address {}, not {}",
                service["name"],
                real["address"],
                real["snat_address"],
                lab.snat_source
            );
        }
    }
    ensure!(
        status["snat"]["active"] == true
            && status["snat"]["ports"] == format!("{}-{}", SNAT_PORTS.start(), SNAT_PORTS.end()),
        "status snat: {}",
        status["snat"]
    );
    let table = lab.balancer.status_table()?;
    for port in ["80/tcp", "53/udp", "104/tcp"] {
        ensure!(
            table.contains(&format!("{NAT_VIP}:{port} snat")),
            "`xdplb status` does not show {NAT_VIP}:{port} as snat:\n{table}"
        );
    }
    Ok(())
}

/// HTTP through VIP:80 (served on real:8080, which answers `GET /peer` with the peer it sees):
/// 60 fresh connections (curl), then three curls of five requests each on one kept-alive
/// connection. Every peer is SNAT's, and no two live connections to one real share it (`live`
/// holds those seen before). Returns each real's share of the fresh connections.
fn http_through_the_vip(
    lab: &SnatLab,
    live: &mut HashSet<(String, SocketAddr)>,
) -> Result<HashMap<String, usize>> {
    let mut shares: HashMap<String, usize> = HashMap::new();
    for i in 0..60 {
        let body = http_get_path(&lab.client, lab.vip(80), "/peer")
            .with_context(|| format!("HTTP request {i} through the SNAT VIP{}", diagnosis(lab)))?;
        let (name, peer) = name_and_peer(&body)?;
        ensure_snat_peer(lab, peer, &format!("HTTP request {i}"))?;
        ensure!(
            live.insert((name.clone(), peer)),
            "HTTP request {i}: {name} saw {peer} on another live connection too"
        );
        *shares.entry(name).or_default() += 1;
    }
    ensure!(
        http_get(&lab.client, lab.vip(80))?.starts_with("real-"),
        "GET / through the VIP"
    );
    // Keep-alive: curl opened one connection for five requests, and the real saw one peer.
    for round in 0..3 {
        let answers = http_keep_alive(&lab.client, lab.vip(80), "/peer", 5)
            .with_context(|| format!("keep-alive round {round}{}", diagnosis(lab)))?;
        let connects: Vec<u32> = answers.iter().map(|(_, c)| *c).collect();
        ensure!(
            connects == [1, 0, 0, 0, 0],
            "keep-alive round {round}: curl opened connections {connects:?} for 5 requests"
        );
        ensure!(
            answers.iter().all(|(body, _)| *body == answers[0].0),
            "keep-alive round {round}: the answers differ: {answers:?}"
        );
        let (name, peer) = name_and_peer(&answers[0].0)?;
        ensure_snat_peer(lab, peer, &format!("keep-alive round {round}"))?;
        ensure!(
            live.insert((name.clone(), peer)),
            "keep-alive round {round}: {name} saw {peer} on another live connection too"
        );
    }
    Ok(shares)
}

/// UDP through VIP:53: 60 requests whose answers must come from VIP:53 (the client's socket
/// is connected to it), then 20 asking the peer the real sees, each a flow of its own. Returns
/// each real's share and the peers seen.
fn udp_through_the_vip(lab: &SnatLab) -> Result<(HashMap<String, usize>, HashSet<SocketAddr>)> {
    let mut shares: HashMap<String, usize> = HashMap::new();
    for i in 0..60 {
        let name = udp_who(&lab.client, lab.vip(53))
            .with_context(|| format!("UDP request {i} through the SNAT VIP{}", diagnosis(lab)))?;
        *shares.entry(name).or_default() += 1;
    }
    let mut peers = HashSet::new();
    for i in 0..20 {
        let answer = udp_ask(&lab.client, lab.vip(53), "peer")
            .with_context(|| format!("UDP peer request {i}{}", diagnosis(lab)))?;
        let peer: SocketAddr = answer.parse().context(answer)?;
        ensure_snat_peer(lab, peer, &format!("UDP request {i}"))?;
        peers.insert(peer);
    }
    Ok((shares, peers))
}

/// Every exchange of the host's own traffic worked, from the balancer's address and a port
/// outside the range; returns how many there were.
fn ensure_host_traffic_worked(lab: &SnatLab, seen: &[HostExchange]) -> Result<usize> {
    for (what, result) in seen {
        match result {
            Ok(peer) => ensure_host_peer(lab, *peer, what)?,
            Err(e) => bail!(
                "the balancer's own {what} failed during SNAT traffic: {e}{}",
                diagnosis(lab)
            ),
        }
    }
    ensure!(seen.len() >= 40, "only {} host exchanges", seen.len());
    Ok(seen.len())
}

fn snat_end_to_end(arms: Arms) -> Result<()> {
    let _one = one_lab();
    let started = Instant::now();
    let mut lab = SnatLab::build(arms, 2)?;

    // Nothing on the reals, no way back to the client; nothing reserved yet.
    ensure_reals_untouched(&lab)?;
    ensure!(
        !reserves_snat_ports(&reserved_ports(&lab.balancer.ns)?)?,
        "the SNAT range is reserved before xdplb runs"
    );

    lab.balancer.start(&lab.policy())?;

    // The range is reserved in the balancer's namespace; status shows SNAT.
    let reserved = reserved_ports(&lab.balancer.ns)?;
    ensure!(
        reserves_snat_ports(&reserved)?,
        "ip_local_reserved_ports is {reserved:?} while SNAT runs{}",
        diagnosis(&lab)
    );
    ensure_status_shows_snat(&lab)?;

    // The balancer host's own connections: one held from before the VIP traffic to after it,
    // and fresh ones all along.
    let (_, real1, real1_name) = &lab.reals[0];
    let mut host_held = Conversation::open(&lab.balancer.ns, SocketAddr::from((*real1, 8080)))
        .context("the balancer's own connection to a real")?;
    ensure!(host_held.who()? == *real1_name);
    ensure_host_peer(&lab, host_held.peer()?, "held host connection")?;
    let host_traffic = HostTraffic::start(&lab)?;

    // A long-lived VIP connection, held across everything below.
    let mut held = Conversation::open(&lab.client, lab.vip(80))
        .with_context(|| format!("held VIP connection{}", diagnosis(&lab)))?;
    let held_real = held.who()?;
    let held_peer = held.peer()?;
    ensure_snat_peer(&lab, held_peer, "held VIP connection")?;
    let mut http_peers = HashSet::from([(held_real.clone(), held_peer)]);

    let http_shares = http_through_the_vip(&lab, &mut http_peers)?;
    let (udp_shares, udp_peers) = udp_through_the_vip(&lab)?;
    for (_, _, name) in &lab.reals {
        ensure!(
            http_shares.get(name).copied().unwrap_or(0) >= 10,
            "HTTP shares {http_shares:?}"
        );
        ensure!(
            udp_shares.get(name).copied().unwrap_or(0) >= 10,
            "UDP shares {udp_shares:?}"
        );
    }
    dicom_through_the_vip(&lab)?;

    // The held VIP connection kept its real and its port.
    ensure!(held.who()? == held_real, "the held connection changed real");
    ensure!(
        held.peer()? == held_peer,
        "the held connection's source changed"
    );

    // The host's own connections all worked and never used a SNAT port; they still do.
    let host_exchanges = ensure_host_traffic_worked(&lab, &host_traffic.finish()?)?;
    ensure!(host_held.who()? == *real1_name, "the held host connection");
    ensure_host_peer(&lab, host_held.peer()?, "held host connection, after")?;
    for (_, addr, name) in &lab.reals {
        let service = SocketAddr::from((*addr, 8080));
        ensure!(who(&lab.balancer.ns, service)? == *name);
        ensure!(
            http_get(&lab.balancer.ns, service)? == *name,
            "curl from the balancer"
        );
        ensure!(udp_who(&lab.balancer.ns, SocketAddr::from((*addr, 53)))? == *name);
    }

    // Still nothing on the reals.
    ensure_reals_untouched(&lab)?;

    // Nothing refused or dropped, and XDP did the work.
    let status = self::status(&lab)?;
    ensure!(
        status["snat"]["refused_packets"] == 0 && status["snat"]["unknown_dropped"] == 0,
        "status snat: {}{}",
        status["snat"],
        diagnosis(&lab)
    );
    let forwarded = lab
        .balancer
        .stats()?
        .reals
        .iter()
        .map(|r| r.counters.packets)
        .sum::<u64>();
    ensure!(forwarded > 600, "XDP forwarded only {forwarded} packets");
    eprintln!(
        "snat {arms:?}: HTTP shares {http_shares:?}, UDP shares {udp_shares:?}, {} HTTP and {} \
         UDP sources seen by the reals, {host_exchanges} host exchanges, {forwarded} packets \
         forwarded, status snat {}",
        http_peers.len(),
        udp_peers.len(),
        status["snat"]
    );
    drop(held);
    drop(host_held);

    // `xdplb down` gives the ports back.
    lab.balancer.stop();
    let reserved = reserved_ports(&lab.balancer.ns)?;
    ensure!(
        !reserves_snat_ports(&reserved)?,
        "ip_local_reserved_ports is still {reserved:?} after xdplb down"
    );
    eprintln!("snat {arms:?}: {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

#[test]
fn two_arm_snat_http_udp_dicom_with_untouched_reals() -> Result<()> {
    snat_end_to_end(Arms::Two)
}

#[test]
fn one_arm_snat_http_udp_dicom_with_untouched_reals() -> Result<()> {
    snat_end_to_end(Arms::One)
}
