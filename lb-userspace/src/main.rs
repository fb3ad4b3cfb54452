//! `xdplb`: the command line (the README and xdplb(1) describe it).

use std::{net::IpAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use xdplb::{
    api::{
        client,
        protocol::{Request, Response},
    },
    controller::{self, admin::AdminChange},
    dataplane::{
        counters,
        loader::{DEFAULT_PIN_DIR, Pins},
        maps::Maps,
    },
    policy::{self, PolicyErrors},
    realserver,
};

#[derive(Parser)]
#[command(
    name = "xdplb",
    version,
    about = "XDP Layer 4 load balancer (DR and NAT) for TCP and UDP services"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct Common {
    /// Where the data plane's maps and links are pinned.
    #[arg(long, default_value = DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
    /// The controller's control socket.
    #[arg(long, default_value = "/run/xdplb/xdplb.sock")]
    socket: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Load and attach the data plane, fill its maps from the policy, keep them current.
    Run {
        #[arg(long)]
        config: PathBuf,
        /// Prometheus metrics listen address, or `off`.
        #[arg(long, default_value = "127.0.0.1:9475")]
        metrics_listen: String,
        /// Where operators' drains, halts and weights are kept across restarts.
        #[arg(long, default_value = xdplb::controller::admin::DEFAULT_STATE_FILE)]
        state_file: PathBuf,
        /// Accept pins that die with this process (a BPF filesystem private to its mount
        /// namespace, as under `ip netns exec`): the data plane then stops with the controller.
        #[arg(long)]
        ephemeral_pins: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Check a policy file without touching the system. The policy file's keys are in
    /// xdplb.yaml(5).
    Validate {
        #[arg(long)]
        config: PathBuf,
        /// Refuse the policy for warnings too (legal but probably not meant), exit status 2.
        #[arg(long)]
        strict: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Every service and real of the running controller: state and why, weight, flows,
    /// traffic, last check.
    Status {
        /// Machine-readable output (stable: fields are only ever added).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Whether this node can serve, for keepalived's `track_script` (exit 0) or not (exit 1,
    /// saying why): its data plane is attached, its controller answers, and every service has
    /// had a real in its table for as long as the slowest health check takes to rise. A node
    /// that just reconnected is not ready until its checks could have brought every reachable
    /// real back, so it does not take mastership back with tables unlike its peer's.
    Ready {
        #[command(flatten)]
        common: Common,
    },
    /// Take a real out of service for maintenance: no new flows or clients, established flows
    /// continue. Kept in the state file: lasts across reloads and restarts until `undrain`.
    /// `drain SERVICE ADDRESS`, or `drain --all ADDRESS` for every service it serves.
    Drain(AdminTarget),
    /// Put a drained real back into service.
    Undrain(AdminTarget),
    /// Take a real out of its table now, its established flows moved to other reals (as if its
    /// health check failed). Kept until `unhalt`.
    Halt(AdminTarget),
    /// End a halt.
    Unhalt(AdminTarget),
    /// Set a real's weight at run time (`weight SERVICE ADDRESS N`, 0 to 65535), or go back to
    /// the policy's (`weight SERVICE ADDRESS policy`). Kept until changed.
    Weight {
        service: String,
        address: IpAddr,
        /// A whole number from 0 to 65535, or `policy`.
        weight: String,
        #[command(flatten)]
        common: Common,
    },
    /// Make the running controller re-read its policy file (as SIGHUP does).
    Reload {
        #[command(flatten)]
        common: Common,
    },
    /// Counters of the pinned data plane, per real and per pass/drop reason (works without a
    /// running controller).
    Stats {
        #[command(flatten)]
        common: Common,
    },
    /// Detach the data plane and remove its pinned state. Refused while this node holds a
    /// VIP someone else put here (keepalived: the active node of a pair), because its kernel
    /// would answer that VIP's flows with resets until the VIP moves: stop keepalived first.
    Down {
        /// Detach even while this node holds a VIP it did not add.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Set up a DR real server: VIPs on lo, ARP for them suppressed.
    Realserver {
        #[command(subcommand)]
        action: RealserverAction,
    },
    /// Write packaging files generated from these definitions to stdout.
    #[command(hide = true)]
    Generate {
        #[command(subcommand)]
        what: Generate,
    },
}

#[derive(Subcommand)]
enum Generate {
    /// The xdplb(1) man page (roff) on standard output; with `--dir DIR`, it and a page for
    /// every subcommand (xdplb-run(1), ...) and the policy reference xdplb.yaml(5) written
    /// into DIR.
    Man {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// The policy file reference, xdplb.yaml(5), as roff on standard output (`--markdown`:
    /// as Markdown, as in docs/policy.md).
    PolicyReference {
        #[arg(long)]
        markdown: bool,
    },
    /// Shell completions.
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
enum RealserverAction {
    /// Suppress ARP for IPv4 VIPs (arp_ignore=1, arp_announce=2), then add each VIP/32 (IPv6:
    /// /128, nothing else needed) to lo.
    Up(RealserverArgs),
    /// Undo what `up` changed.
    Down(RealserverArgs),
    /// Report whether this host would answer ARP (IPv6: neighbour solicitations) for a VIP,
    /// and why.
    Check(RealserverArgs),
}

/// `SERVICE ADDRESS`, or `--all ADDRESS`.
#[derive(clap::Args)]
struct AdminTarget {
    /// Every service that has ADDRESS as a real.
    #[arg(long)]
    all: bool,
    /// SERVICE ADDRESS (or ADDRESS with --all).
    #[arg(required = true, num_args = 1..=2)]
    target: Vec<String>,
    #[command(flatten)]
    common: Common,
}

impl AdminTarget {
    /// (service, address), or an error in the command's words.
    fn parse(&self) -> anyhow::Result<(Option<String>, IpAddr)> {
        let address = |text: &str| {
            text.parse::<IpAddr>()
                .map_err(|_| anyhow::anyhow!("`{text}` is not an IP address"))
        };
        match (self.all, self.target.as_slice()) {
            (true, [a]) => Ok((None, address(a)?)),
            (false, [service, a]) => Ok((Some(service.clone()), address(a)?)),
            (true, _) => anyhow::bail!("with --all, give the real's address alone"),
            (false, _) => anyhow::bail!("give SERVICE ADDRESS, or --all ADDRESS"),
        }
    }
}

/// Who runs this command, for the admin state's record.
fn operator() -> String {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "an operator".to_string())
}

#[derive(clap::Args)]
struct RealserverArgs {
    #[arg(long, num_args = 1.., required = true)]
    vip: Vec<IpAddr>,
    /// The interface facing the balancer (default: every interface).
    #[arg(long)]
    interface: Option<String>,
    #[command(flatten)]
    common: Common,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("XDPLB_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            // A bad policy is the user's input: exit 2 with FILE:LINE:COLUMN, as validate does.
            if let Some(policy_error) = e.downcast_ref::<PolicyErrors>() {
                eprintln!("{policy_error}");
                return ExitCode::from(2);
            }
            eprintln!("xdplb: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Sends an admin change for `target` to the controller.
async fn admin(target: &AdminTarget, change: AdminChange) -> anyhow::Result<ExitCode> {
    let (service, address) = target.parse()?;
    let request = Request::Admin {
        service,
        address,
        change,
        by: operator(),
    };
    answer(client::ask(&target.common.socket, &request).await?)
}

/// Prints a controller's answer; failure exit status for an error.
/// `xdplb ready`: exit 0 when this node can serve, else 1 with the reason on stderr.
async fn ready(common: &Common) -> anyhow::Result<ExitCode> {
    let not_ready = |why: String| {
        eprintln!("not ready: {why}");
        Ok(ExitCode::FAILURE)
    };
    let attached = std::fs::read_dir(&common.pin_dir)
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().starts_with("link-"))
        })
        .unwrap_or(false);
    if !attached {
        return not_ready(format!(
            "no data plane attached under {}",
            common.pin_dir.display()
        ));
    }
    let status = match client::ask(&common.socket, &Request::Status).await {
        Ok(Response::Status(status)) => status,
        Ok(other) => return not_ready(format!("the controller answered {other:?}")),
        Err(e) => return not_ready(format!("no controller answers: {e:#}")),
    };
    if let Some(why) = &status.readiness.not_ready {
        return not_ready(why.clone());
    }
    println!(
        "ready: {} services, each with a real in its table; policy fingerprint {}",
        status.services.len(),
        status.policy_fingerprint
    );
    Ok(ExitCode::SUCCESS)
}

fn answer(response: Response) -> anyhow::Result<ExitCode> {
    match response {
        Response::Done { message } => {
            println!("{message}");
            Ok(ExitCode::SUCCESS)
        }
        Response::Invalid { message } => {
            // As `validate` reports it; nothing running changed.
            eprintln!("{message}");
            Ok(ExitCode::from(2))
        }
        Response::Error { message } => {
            eprintln!("xdplb: {message}");
            Ok(ExitCode::FAILURE)
        }
        Response::Status(_) => Ok(ExitCode::SUCCESS),
    }
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run {
            config,
            metrics_listen,
            ephemeral_pins,
            state_file,
            common,
        } => {
            let metrics = match metrics_listen.as_str() {
                "off" => None,
                text => Some(text.parse().map_err(|_| {
                    anyhow::anyhow!("--metrics-listen `{text}` is not ADDRESS:PORT or `off`")
                })?),
            };
            let endpoints = controller::Endpoints {
                socket: common.socket,
                metrics,
                pins: if ephemeral_pins {
                    Pins::MayDieWithProcess
                } else {
                    Pins::OutliveProcess
                },
                state_file,
            };
            controller::run(&config, &common.pin_dir, &endpoints).await?;
        }
        Command::Status { json, common } => {
            match client::ask(&common.socket, &Request::Status).await? {
                Response::Status(status) if json => {
                    println!("{}", serde_json::to_string_pretty(&status)?)
                }
                Response::Status(status) => print!("{}", status.table()),
                other => return answer(other),
            }
        }
        Command::Ready { common } => return ready(&common).await,
        Command::Drain(target) => return admin(&target, AdminChange::Drain).await,
        Command::Undrain(target) => return admin(&target, AdminChange::Undrain).await,
        Command::Halt(target) => return admin(&target, AdminChange::Halt).await,
        Command::Unhalt(target) => return admin(&target, AdminChange::Unhalt).await,
        Command::Weight {
            service,
            address,
            weight,
            common,
        } => {
            let weight = match weight.as_str() {
                "policy" => None,
                n => Some(n.parse::<u16>().map_err(|_| {
                    anyhow::anyhow!(
                        "weight must be a whole number from 0 to 65535, or `policy`; got `{n}`"
                    )
                })?),
            };
            let request = Request::Admin {
                service: Some(service),
                address,
                change: AdminChange::Weight(weight),
                by: operator(),
            };
            return answer(client::ask(&common.socket, &request).await?);
        }
        Command::Reload { common } => {
            return answer(client::ask(&common.socket, &Request::Reload).await?);
        }
        Command::Validate {
            config,
            strict,
            common: _,
        } => {
            let policy = policy::load(&config)?;
            let warnings = policy::warnings(&policy);
            let label = if strict { "error" } else { "warning" };
            for warning in &warnings {
                eprintln!("{}: {label}: {warning}", config.display());
            }
            if strict && !warnings.is_empty() {
                return Ok(ExitCode::from(2));
            }
            let reals: usize = policy.services.iter().map(|s| s.reals.len()).sum();
            println!(
                "{}: ok ({} services, {} reals)",
                config.display(),
                policy.services.len(),
                reals
            );
        }
        Command::Stats { common } => print_stats(&common.pin_dir)?,
        Command::Down { force, common } => controller::down(&common.pin_dir, force).await?,
        Command::Generate { what } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut out = std::io::stdout();
            match what {
                Generate::Man { dir: None } => clap_mangen::Man::new(command).render(&mut out)?,
                Generate::Man { dir: Some(dir) } => {
                    std::fs::create_dir_all(&dir)?;
                    clap_mangen::generate_to(command, &dir)?;
                    std::fs::write(dir.join("xdplb.yaml.5"), policy::reference::man_page())?;
                }
                Generate::PolicyReference { markdown: false } => {
                    print!("{}", policy::reference::man_page())
                }
                Generate::PolicyReference { markdown: true } => {
                    print!("{}", policy::reference::markdown())
                }
                Generate::Completions { shell } => {
                    clap_complete::generate(shell, &mut command, "xdplb", &mut out)
                }
            }
        }
        Command::Realserver { action } => match action {
            RealserverAction::Up(a) => realserver::up(&a.vip, a.interface.as_deref()).await?,
            RealserverAction::Down(a) => realserver::down(&a.vip).await?,
            RealserverAction::Check(a) => {
                if !realserver::check(&a.vip, a.interface.as_deref()).await? {
                    return Ok(ExitCode::FAILURE);
                }
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}

/// Counters straight from the pinned maps (works with or without a running controller).
/// Services are shown by id: names live in the policy, not in the data plane.
fn print_stats(pin_dir: &std::path::Path) -> anyhow::Result<()> {
    let maps = Maps::open_pinned(pin_dir)?;
    let snapshot = counters::snapshot(&maps)?;
    // As wide as the longest address (an IPv6 one takes up to 39 characters).
    let width = snapshot
        .reals
        .iter()
        .map(|r| r.address.to_string().len())
        .max()
        .unwrap_or(0)
        .max(16);
    let row = |service: &dyn std::fmt::Display,
               real: &dyn std::fmt::Display,
               state: &str,
               c: &lb_common::counters::TrafficCounters| {
        println!(
            "{:<8} {:<width$} {:<5} {:>12} {:>14} {:>10}",
            service.to_string(),
            real.to_string(),
            state,
            c.packets,
            c.bytes,
            c.new_flows
        )
    };
    println!(
        "{:<8} {:<width$} {:<5} {:>12} {:>14} {:>10}",
        "SERVICE", "REAL", "STATE", "PACKETS", "BYTES", "NEW FLOWS"
    );
    for (id, total) in &snapshot.services {
        row(id, &"(all reals)", "", total);
        for r in snapshot.reals.iter().filter(|r| r.service_id == *id) {
            row(
                id,
                &r.address,
                if r.up { "up" } else { "down" },
                &r.counters,
            );
        }
    }
    println!();
    for (reason, count) in &snapshot.reasons {
        println!("{:<22} {count}", reason.name());
    }
    println!(
        "{:<22} {} (packets of new flows forwarded without a table entry during floods)",
        "untracked", snapshot.untracked
    );
    println!(
        "{:<22} {} (NAT flows taken over from a real's reply, e.g. after a pair's failover)",
        "nat_adopted", snapshot.nat_adopted
    );
    Ok(())
}
