//! The controller's main loop: load and attach, keep the maps in line with the policy and with
//! the real servers' reachability, reload on SIGHUP. Stopping the controller leaves the data
//! plane attached and forwarding; `xdplb down` removes it.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};
use tracing::{error, info, warn};

use super::{
    admin::{AdminChange, AdminState},
    adoption::AdoptionWindow,
    announce,
    firewall::Firewall,
    kernel, lock,
    readiness::{self, Serving},
    snat, status,
};
use crate::{
    api::{
        self,
        protocol::{Request, Response},
        server::Call,
    },
    dataplane::{
        loader,
        maps::{Maps, VIP_ADDR_ADDED, VIP_ADDR_BGP, VIP_ADDR_KEEPALIVED},
        snat_sweep,
        sync::{Observed, Sync},
    },
    health::monitor::{Monitor, Report},
    metrics::{self, Metrics, server::Scrape},
    netconf::{self, neighbour},
    policy::{self, Forwarding, Policy, Role, VipAnnouncement},
};

/// How often reals' MACs are re-read from the neighbour table.
const REFRESH: Duration = Duration::from_secs(1);

/// Where `xdplb run` serves what it knows.
pub struct Endpoints {
    pub socket: PathBuf,
    /// None: metrics off.
    pub metrics: Option<SocketAddr>,
    /// Whether the pins may die with this process (`--ephemeral-pins`).
    pub pins: loader::Pins,
    /// Where operators' admin state is kept (`--state-file`).
    pub state_file: PathBuf,
}

pub async fn run(config: &Path, pin_dir: &Path, endpoints: &Endpoints) -> Result<()> {
    let policy = policy::load(config)?;
    for warning in policy::warnings(&policy) {
        warn!("{warning}");
    }
    let _lock = lock::acquire(pin_dir)?;
    let mut loaded = loader::load_with(pin_dir, endpoints.pins)?;
    for interface in &policy.interfaces {
        loaded.attach(&interface.name, interface.xdp_mode)?;
    }
    let handle = netconf::connect()?;
    let outside = outside_interface(&policy)?;
    kernel::prepare(&policy)?;
    let sync = Sync::adopt(&loaded.maps, loaded.hz)?;
    let mut admin = AdminState::load(&endpoints.state_file)?;
    admin.prune(&policy)?;
    // A serving data plane in the pins: this is a restart (its first checks run before the
    // maps are written), and keepalived must not see it as a node coming back.
    let restarted = sync.found_services();
    let previously = owned_vips(&loaded.maps)?;
    // BGP: nothing is announced or withdrawn until the maps are filled (below); a restart
    // keeps what the previous controller announced.
    let announced_vips = if policy.vip_announcement == VipAnnouncement::Bgp {
        previously.clone()
    } else {
        announce::follow(&handle, &policy, &previously, &HashSet::new()).await?
    };
    let observed = Observed {
        announced_vips,
        ..Default::default()
    };
    let (monitor, mut reports) = Monitor::new();
    let mut c = Controller {
        config: config.to_path_buf(),
        policy,
        loaded,
        handle,
        outside,
        sync,
        observed,
        monitor,
        metrics: Metrics::default(),
        interface_problems: HashMap::new(),
        serving: Serving::new(restarted),
        adoption: AdoptionWindow::default(),
        firewall: Firewall::default(),
        admin,
        serving_since: HashMap::new(),
    };

    // First resolution: ask for every real, and run every health check once, so the first
    // maps already hold only working reals (a restart must not mark live reals down).
    c.monitor.follow(&c.policy)?;
    c.observed.snat_sources = snat::sources(&c.policy);
    snat::log_source_changes(&c.policy, None, &c.observed.snat_sources);
    c.refresh_macs().await?;
    first_checks(&mut c, &mut reports).await;
    c.refresh_macs().await?;
    c.apply()?;
    c.follow_announcement().await?;
    c.follow_adoption_window();

    let (calls_tx, mut calls) = mpsc::channel::<Call>(16);
    let _api = api::server::serve(&endpoints.socket, calls_tx)?;
    let (scrapes_tx, mut scrapes) = mpsc::channel::<Scrape>(4);
    let _metrics = match endpoints.metrics {
        Some(listen) => Some(metrics::server::serve(listen, scrapes_tx).await?),
        None => None,
    };
    info!(config = %config.display(), pin_dir = %pin_dir.display(), socket = %endpoints.socket.display(), "xdplb running");

    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut tick = tokio::time::interval(REFRESH);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let before = (c.observed.macs.clone(), c.observed.snat_sources.clone());
                c.refresh_interface_macs();
                c.follow_adoption_window();
                c.refresh_macs().await?;
                c.observed.snat_sources = snat::sources(&c.policy);
                snat::log_source_changes(&c.policy, Some(&before.1), &c.observed.snat_sources);
                let now = c.loaded.now_tick()?;
                let retired = c.sync.retire_idle(&mut c.loaded.maps, now)?;
                for (real, after) in &retired {
                    info!(real = %real, after_s = after.as_secs(), "removed real retired: its last flow ended");
                }
                snat_sweep::sweep(&mut c.loaded.maps, now, c.loaded.hz)?;
                if (&c.observed.macs, &c.observed.snat_sources) != (&before.0, &before.1)
                    || !retired.is_empty()
                {
                    c.apply()?;
                }
                c.follow_announcement().await?;
            }
            Some(report) = reports.recv() => {
                if c.record(report) {
                    c.observed.unhealthy = c.monitor.unhealthy();
                    c.apply()?;
                }
            }
            Some((request, reply)) = calls.recv() => {
                let _ = reply.send(c.answer(request).await);
            }
            Some(scrape) = scrapes.recv() => match scrape {
                Scrape::Metrics(reply) => {
                    let text = match c.status() {
                        Ok(status) => c.metrics.render(&status),
                        Err(e) => format!("# reading the data plane failed: {e}\n"),
                    };
                    let _ = reply.send(text);
                }
                Scrape::Status(reply) => {
                    let json = c
                        .status()
                        .and_then(|status| Ok(serde_json::to_string(&status)?))
                        .unwrap_or_else(|e| {
                            serde_json::json!({ "error": format!("{e:#}") }).to_string()
                        });
                    let _ = reply.send(json);
                }
            },
            _ = hangup.recv() => {
                let _ = c.reload().await;
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    let _ = std::fs::remove_file(&endpoints.socket);
    info!(
        "controller stopping; the data plane stays attached and keeps forwarding (`xdplb down` removes it)"
    );
    Ok(())
}

/// Everything the running controller holds.
struct Controller {
    config: PathBuf,
    policy: Policy,
    loaded: loader::Loaded,
    handle: rtnetlink::Handle,
    outside: String,
    sync: Sync,
    observed: Observed,
    monitor: Monitor,
    metrics: Metrics,
    /// Attached interfaces whose MAC could not be read, and why (logged once).
    interface_problems: HashMap<String, String>,
    /// Since when this node can serve (`xdplb ready`).
    serving: Serving,
    /// When this node adopts NAT flows from the reals' replies.
    adoption: AdoptionWindow,
    /// The NAT firewall (nftables table and interface guards).
    firewall: Firewall,
    /// Operators' drains, halts and weights (kept in the state file).
    admin: AdminState,
    /// BGP: since when each service has had a real in its table, continuously.
    serving_since: HashMap<String, Instant>,
}

impl Controller {
    /// Writes the maps from the policy and what was observed; logs the reals.
    fn apply(&mut self) -> Result<()> {
        (self.observed.drained, self.observed.halted) = self.admin.drained_and_halted(&self.policy);
        let effective = self.admin.effective(&self.policy);
        self.sync
            .apply(&mut self.loaded.maps, &effective, &self.observed)?;
        self.serving.update(&self.policy, &self.sync.reals_view);
        self.firewall.follow(&self.policy, &mut self.loaded.maps)?;
        report_reals(&self.sync);
        Ok(())
    }

    /// The VIPs this balancer may announce now: a service of theirs has a real in its table,
    /// and, for a VIP not announced yet, has had one for the settle time (the slowest check's
    /// rise x interval + timeout, as for `xdplb ready`). A balancer coming back (its cable,
    /// its reals) would otherwise take its share of flows with a table of the first real to
    /// return, and move the flows of the others.
    fn servable(&mut self) -> HashSet<IpAddr> {
        let serving: HashSet<String> = self
            .sync
            .reals_view
            .iter()
            .filter(|r| r.in_table)
            .map(|r| r.service.clone())
            .collect();
        let now = Instant::now();
        self.serving_since.retain(|s, _| serving.contains(s));
        for service in &serving {
            self.serving_since.entry(service.clone()).or_insert(now);
        }
        let settle = readiness::settle_time(&self.policy);
        self.policy
            .services
            .iter()
            .filter(|s| {
                self.serving_since.get(&s.name).is_some_and(|since| {
                    self.observed.announced_vips.contains(&s.vip) || since.elapsed() >= settle
                })
            })
            .map(|s| s.vip)
            .collect()
    }

    /// BGP: announces the VIPs this balancer can serve and withdraws the others (within a
    /// second of a change), once the maps hold what it serves.
    async fn follow_announcement(&mut self) -> Result<()> {
        if self.policy.vip_announcement != VipAnnouncement::Bgp {
            return Ok(());
        }
        let servable = self.servable();
        let announced = announce::follow(
            &self.handle,
            &self.policy,
            &self.observed.announced_vips,
            &servable,
        )
        .await?;
        if announced != self.observed.announced_vips {
            self.observed.announced_vips = announced;
            self.apply()?;
        }
        Ok(())
    }

    /// Opens or closes NAT flow adoption as this node's VIPs come and go (controller/adoption.rs).
    /// A failure is logged, not fatal: adoption only matters at a pair's takeover.
    fn follow_adoption_window(&mut self) {
        let held = match netconf::address::local_addresses() {
            Ok(held) => held,
            Err(e) => {
                warn!(error = %format!("{e:#}"), "cannot read this host's addresses");
                return;
            }
        };
        let result = self.loaded.now_tick().and_then(|now| {
            self.adoption.follow(
                &mut self.loaded.maps,
                &self.policy,
                &held,
                now,
                self.loaded.hz,
            )
        });
        if let Err(e) = result {
            warn!(error = %format!("{e:#}"), "cannot set the NAT adoption window");
        }
    }

    /// Follows a change of an attached interface's own MAC or bond members (the data plane
    /// forwards only frames addressed to it), and forgets interfaces no longer attached. A
    /// problem is logged when it starts and when it ends, not every second.
    fn refresh_interface_macs(&mut self) {
        let mut attached = Vec::new();
        for interface in &self.policy.interfaces {
            let problem = match self.loaded.record_interface_mac(&interface.name) {
                Ok(indexes) => {
                    attached.extend(indexes);
                    None
                }
                Err(e) => Some(format!("{e:#}")),
            };
            let before = self.interface_problems.get(&interface.name).cloned();
            if problem != before {
                match &problem {
                    Some(e) => {
                        warn!(interface = %interface.name, error = %e, "cannot read the interface's MAC address: frames arriving on it are not forwarded");
                    }
                    None => {
                        info!(interface = %interface.name, "interface's MAC address read again")
                    }
                }
            }
            match problem {
                Some(e) => self.interface_problems.insert(interface.name.clone(), e),
                None => self.interface_problems.remove(&interface.name),
            };
        }
        if let Err(e) = self.loaded.maps.keep_interfaces(&attached) {
            warn!(error = %format!("{e:#}"), "cannot forget interfaces no longer attached");
        }
    }

    async fn refresh_macs(&mut self) -> Result<()> {
        refresh_macs(
            &self.handle,
            &self.outside,
            &self.policy,
            &mut self.observed,
        )
        .await
    }

    /// Takes a check result in; true when the real's state changed (logged and counted).
    fn record(&mut self, report: Report) -> bool {
        let real = report.real.clone();
        let latency = report.outcome.latency;
        self.metrics.observe_check(&real, latency);
        let Some(change) = self.monitor.record(report) else {
            return false;
        };
        self.metrics.state_changed(&real);
        let latency_ms = latency.as_millis() as u64;
        if change.up {
            info!(real = %real, reason = %change.reason, latency_ms, "real is up");
        } else {
            warn!(real = %real, reason = %change.reason, latency_ms, "real is down");
        }
        true
    }

    /// Re-reads the policy and applies only the difference. A policy that does not validate
    /// is refused and the running configuration stays.
    async fn reload(&mut self) -> Response {
        let result = self.try_reload().await;
        self.metrics
            .reloaded(matches!(result, Response::Done { .. }));
        match &result {
            Response::Done { message } => info!("{message}"),
            Response::Invalid { message } | Response::Error { message } => {
                error!("reload refused, the running configuration stays: {message}")
            }
            Response::Status(_) => {}
        }
        result
    }

    async fn try_reload(&mut self) -> Response {
        let new = match policy::load(&self.config) {
            Ok(new) => {
                for warning in policy::warnings(&new) {
                    warn!("{warning}");
                }
                new
            }
            Err(e) => {
                return Response::Invalid {
                    message: e.to_string(),
                };
            }
        };
        let step = async {
            for interface in new
                .interfaces
                .iter()
                .filter(|i| !self.policy.interfaces.iter().any(|o| o.name == i.name))
            {
                self.loaded.attach(&interface.name, interface.xdp_mode)?;
            }
            let servable = self.servable();
            self.observed.announced_vips =
                announce::follow(&self.handle, &new, &self.observed.announced_vips, &servable)
                    .await?;
            kernel::prepare(&new)?;
            self.monitor.follow(&new)?;
            self.observed.unhealthy = self.monitor.unhealthy();
            // Admin state of reals that left the policy ends with them.
            self.admin.prune(&new)?;
            let snat = |p: &Policy| p.services.iter().any(|s| s.forwarding == Forwarding::Snat);
            if snat(&self.policy) && !snat(&new) {
                snat::release_ports()?;
            }
            self.policy = new;
            self.observed.snat_sources = snat::sources(&self.policy);
            self.refresh_macs().await?;
            self.apply()?;
            self.follow_announcement().await?;
            anyhow::Ok(())
        };
        match step.await {
            Ok(()) => Response::Done {
                message: "policy reloaded".into(),
            },
            Err(e) => Response::Error {
                message: format!("{e:#}"),
            },
        }
    }

    fn status(&self) -> Result<crate::api::status::Status> {
        let mut status = status::build(
            &netconf::address::local_addresses()?,
            &self.policy,
            &self.sync,
            &self.observed,
            &self.monitor,
            &self.admin,
            &self.loaded.maps,
            self.loaded.now_tick()?,
        )?;
        status.readiness = self.serving.readiness(&self.policy);
        Ok(status)
    }

    async fn answer(&mut self, request: Request) -> Response {
        match request {
            Request::Status => match self.status() {
                Ok(status) => Response::Status(status),
                Err(e) => Response::Error {
                    message: format!("reading the data plane: {e:#}"),
                },
            },
            Request::Reload => self.reload().await,
            Request::Drain { service, address } => {
                self.admin(Some(&service), address, AdminChange::Drain, "unknown")
            }
            Request::Undrain { service, address } => {
                self.admin(Some(&service), address, AdminChange::Undrain, "unknown")
            }
            Request::Admin {
                service,
                address,
                change,
                by,
            } => self.admin(service.as_deref(), address, change, &by),
        }
    }

    /// An operator's admin change to `address` in `service` (every service that has it, if
    /// none); says what the real does now.
    fn admin(
        &mut self,
        service: Option<&str>,
        address: IpAddr,
        change: AdminChange,
        by: &str,
    ) -> Response {
        let services: Vec<String> = match service {
            Some(name) => {
                let Some(s) = self.policy.services.iter().find(|s| s.name == name) else {
                    return Response::Error {
                        message: format!("no service `{name}` in the policy"),
                    };
                };
                if !s.reals.iter().any(|r| r.address == address) {
                    return Response::Error {
                        message: format!("service `{name}` has no real {address}"),
                    };
                }
                vec![name.to_string()]
            }
            None => self
                .policy
                .services
                .iter()
                .filter(|s| s.reals.iter().any(|r| r.address == address))
                .map(|s| s.name.clone())
                .collect(),
        };
        if services.is_empty() {
            return Response::Error {
                message: format!("no service has a real {address}"),
            };
        }
        for name in &services {
            if let Err(e) = self.admin.change(name, address, change, by) {
                return Response::Error {
                    message: format!("{e:#}"),
                };
            }
        }
        if let Err(e) = self.apply() {
            return Response::Error {
                message: format!("writing the maps: {e:#}"),
            };
        }
        let lines: Vec<String> = services
            .iter()
            .map(|name| format!("{name}/{address}: {}", self.real_now(name, address)))
            .collect();
        let message = lines.join("\n");
        info!(by, change = ?change, "{}", lines.join("; "));
        Response::Done { message }
    }

    /// What a real does now, in words (after an admin change).
    fn real_now(&self, service: &str, address: IpAddr) -> String {
        let Some(view) = self
            .sync
            .reals_view
            .iter()
            .find(|v| v.service == service && v.address == address)
        else {
            return "not in the data plane".into();
        };
        let admin = self.admin.entry(service, address);
        if !view.up {
            if admin.is_some_and(|a| a.halted) {
                "halted: out of the table, its flows moved to other reals (`xdplb unhalt` ends it)"
                    .into()
            } else {
                "down (its health check fails, or it is unreachable): takes no flows".into()
            }
        } else if view.in_table {
            format!("up, weight {}: takes new flows", view.weight)
        } else if admin.is_some_and(|a| a.drained) {
            "drained: no new flows or clients; its flows continue (`xdplb undrain` ends it)".into()
        } else if view.weight == 0 {
            "weight 0: takes no new flows; its flows continue".into()
        } else {
            "up, standing by (backup, or behind an earlier real with `failover`)".into()
        }
    }
}

fn outside_interface(policy: &Policy) -> Result<String> {
    policy
        .interfaces
        .iter()
        .find(|i| i.role == Role::Outside)
        .map(|i| i.name.clone())
        .context("the policy has no client-facing interface")
}

/// Fails while this host holds a VIP that the pinned data plane's policy leaves to keepalived:
/// the active node of a pair, whose kernel would answer those VIPs' connections with resets
/// once the data plane is gone, until keepalived moved them.
fn refuse_on_the_active_node(pin_dir: &Path) -> Result<()> {
    let vip_addrs = Maps::pinned_vip_addrs(pin_dir).context(
        "cannot tell whether this node holds a pair's VIPs (`xdplb down --force` takes it down anyway)",
    )?;
    let held = netconf::address::local_addresses()?;
    let mut active = Vec::new();
    for (vip, flags) in vip_addrs {
        if flags & VIP_ADDR_KEEPALIVED != 0 && held.contains(&vip) {
            active.push(vip);
        }
    }
    active.sort();
    if !active.is_empty() {
        let list = active
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        bail!(
            "this node holds {list}, which keepalived moves (vip_announcement: none): it is the \
             active node of a pair. Taken down now, its kernel would answer those VIPs' \
             connections with resets until keepalived moved them. Stop keepalived first (the \
             peer takes over at once), then run `xdplb down`; or `xdplb down --force`"
        );
    }
    Ok(())
}

/// How long `xdplb down` keeps forwarding after withdrawing BGP-announced VIPs: BIRD sends the
/// withdrawal as soon as the address leaves `lo` (milliseconds), and the router drops this
/// next hop when it processes the update, well within a second; two seconds leave room for a
/// loaded router.
const WITHDRAW_GRACE: Duration = Duration::from_secs(2);

/// Whether the pinned data plane's VIPs were announced over BGP.
fn announced_over_bgp(maps: &Maps) -> bool {
    maps.vip_addrs
        .iter()
        .filter_map(|e| e.ok())
        .any(|(_, flags)| flags & VIP_ADDR_BGP != 0)
}

fn owned_vips(maps: &Maps) -> Result<HashSet<IpAddr>> {
    let mut out = HashSet::new();
    for entry in maps.vip_addrs.iter() {
        let (addr, flags) = entry?;
        if flags & VIP_ADDR_ADDED != 0 {
            out.insert(IpAddr::from(addr));
        }
    }
    Ok(out)
}

/// Reads the reals' MACs; provokes ARP for those missing. A real whose entry vanished keeps
/// its last MAC (the kernel garbage-collects idle entries; XDP traffic does not refresh them).
async fn refresh_macs(
    handle: &rtnetlink::Handle,
    outside: &str,
    policy: &Policy,
    observed: &mut Observed,
) -> Result<()> {
    let if_index = netconf::if_index(outside)?;
    let table = neighbour::table(handle, if_index).await?;
    let mut macs = HashMap::new();
    // Only DR sends to reals by MAC; NAT finds its next hop in the kernel's FIB.
    for service in policy
        .services
        .iter()
        .filter(|s| s.forwarding == Forwarding::Dr)
    {
        for real in &service.members() {
            if let Some(mac) = table
                .get(&real.address)
                .or_else(|| observed.macs.get(&real.address))
            {
                if observed
                    .macs
                    .get(&real.address)
                    .is_some_and(|old| old != mac)
                {
                    warn!(real = %real.address, "real server's MAC changed; following it");
                }
                macs.insert(real.address, *mac);
            }
            if !table.contains_key(&real.address) {
                neighbour::provoke(outside, real.address);
            }
        }
    }
    observed.macs = macs;
    Ok(())
}

/// Waits for every real's first check result (each check is bounded by its timeout), so
/// the first map contents reflect the reals' health.
async fn first_checks(c: &mut Controller, reports: &mut mpsc::UnboundedReceiver<Report>) {
    let longest = c
        .policy
        .services
        .iter()
        .map(|s| s.health.timeout)
        .max()
        .unwrap_or_default();
    let deadline = tokio::time::Instant::now() + longest + Duration::from_millis(500);
    while !c.monitor.all_decided() {
        match tokio::time::timeout_at(deadline, reports.recv()).await {
            Ok(Some(report)) => {
                c.record(report);
            }
            _ => break,
        }
    }
    c.observed.unhealthy = c.monitor.unhealthy();
}

fn report_reals(sync: &Sync) {
    for real in &sync.reals_view {
        info!(service = %real.service, real = %real.address, id = real.id, up = real.up, weight = real.weight, "real");
    }
}

/// `xdplb down`: stop a running controller, remove the VIPs it added, detach, unpin. Refused
/// (unless `force`) while this host holds a VIP the policy leaves to keepalived.
pub async fn down(pin_dir: &Path, force: bool) -> Result<()> {
    if !force && pin_dir.exists() {
        refuse_on_the_active_node(pin_dir)?;
    }
    if let Some(pid) = lock::holder(pin_dir) {
        println!("stopping the running controller (pid {pid})");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
        for _ in 0..50 {
            if lock::holder(pin_dir).is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    if !pin_dir.exists() {
        println!("nothing pinned at {}: already down", pin_dir.display());
        return Ok(());
    }
    if let Ok(maps) = Maps::open_pinned(pin_dir) {
        let handle = netconf::connect()?;
        for vip in owned_vips(&maps)? {
            if netconf::address::remove(&handle, None, vip).await? {
                println!("removed VIP {vip}");
            }
        }
        // BGP: the routers still send this balancer its VIPs' packets until the withdrawal
        // reaches them; it keeps forwarding them meanwhile.
        if announced_over_bgp(&maps) {
            println!(
                "VIPs withdrawn from BGP: forwarding {} s more while the routers converge",
                WITHDRAW_GRACE.as_secs()
            );
            tokio::time::sleep(WITHDRAW_GRACE).await;
        }
    }
    // Only a data plane that had SNAT addresses reserved the range (a DR balancer leaves an
    // operator's own reservations alone).
    let had_snat = Maps::open_pinned(pin_dir)
        .map(|maps| maps.snat_addrs.keys().next().is_some())
        .unwrap_or(false);
    if had_snat && let Err(e) = snat::release_ports() {
        warn!(error = %format!("{e:#}"), "cannot release SNAT's reserved ports");
    }
    if let Err(e) = super::firewall::remove() {
        warn!(error = %format!("{e:#}"), "could not remove the NAT firewall's nftables table");
    }
    loader::remove_pins(pin_dir)?;
    let _ = std::fs::remove_file(lock::path_for(pin_dir));
    println!(
        "xdplb is down: XDP detached, pins under {} removed",
        pin_dir.display()
    );
    Ok(())
}
