//! Loading the XDP program, attaching it, and pinning so the data plane outlives the
//! controller: maps are pinned by name under the pin directory, and each interface's XDP link
//! as `link-IFNAME`. A controller that starts while pins exist reuses the maps (connection
//! table included) and swaps its program into the existing link atomically, so forwarding
//! never stops.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, Map, MapData, ProgramArray},
    programs::{
        Xdp, XdpMode as AyaXdpMode,
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
};
use lb_common::{
    LAYOUT_VERSION,
    maps::{CLOCK_PROGRAM, MAP_META, MAP_PROGRAMS, MAP_SERVICES, PROGRAM_NAME, TAIL_CALLED},
};
use tracing::{debug, info};

use super::{clock, maps::Maps, object};
use crate::{netconf, policy::XdpMode};

pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/xdplb";

/// A loaded data plane: the object (keeps the program alive) and its maps.
pub struct Loaded {
    pub ebpf: Ebpf,
    pub maps: Maps,
    pub pin_dir: PathBuf,
    /// The kernel's jiffies per second (measured at load), for `Sync::adopt`.
    pub hz: u32,
}

fn link_pin(pin_dir: &Path, interface: &str) -> PathBuf {
    pin_dir.join(format!("link-{interface}"))
}

/// How long the pins must live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pins {
    /// Beyond this process: a restarted controller adopts them, forwarding never stops.
    OutliveProcess,
    /// They may die with this process (`xdplb run --ephemeral-pins`).
    MayDieWithProcess,
}

/// Loads the program with its maps pinned under `pin_dir` (reusing pinned maps if present).
pub fn load(pin_dir: &Path) -> Result<Loaded> {
    load_with(pin_dir, Pins::OutliveProcess)
}

/// As `load`; refuses pins that cannot outlive this process unless `pins` allows it.
pub fn load_with(pin_dir: &Path, pins: Pins) -> Result<Loaded> {
    ensure_bpffs(pin_dir, pins)?;
    fs::create_dir_all(pin_dir)
        .with_context(|| format!("cannot create pin directory {}", pin_dir.display()))?;
    check_pinned_layout(pin_dir)?;
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(pin_dir)
        .load(object::XDPLB)
        .context(
            "loading the XDP object (maps pinned with another layout? run `xdplb down` first)",
        )?;
    let program: &mut Xdp = program_mut(&mut ebpf)?;
    program
        .load()
        .context("the kernel verifier rejected the XDP program")?;
    load_tail_calls(&mut ebpf)?;
    let clock: &mut Xdp = ebpf
        .program_mut(CLOCK_PROGRAM)
        .context("clock program missing from object")?
        .try_into()?;
    clock
        .load()
        .context("the kernel verifier rejected the clock program")?;
    let mut maps = Maps::take(&mut ebpf)?;
    maps.meta
        .set(0, LAYOUT_VERSION, 0)
        .context("recording the map layout version")?;
    let mut loaded = Loaded {
        ebpf,
        maps,
        pin_dir: pin_dir.to_path_buf(),
        hz: 0,
    };
    loaded.hz = clock::measure_hz(loaded.clock_program()?, &loaded.maps.clock)?;
    debug!(hz = loaded.hz, "measured the kernel's jiffies per second");
    Ok(loaded)
}

/// Loads the programs the main one tail-calls and puts them in its `PROGRAMS` map, before the
/// main program is attached: a missing entry would leave that traffic to the kernel.
fn load_tail_calls(ebpf: &mut Ebpf) -> Result<()> {
    let mut fds = Vec::new();
    for (what, slot) in TAIL_CALLED {
        let program: &mut Xdp = ebpf
            .program_mut(what)
            .with_context(|| format!("program {what} missing from object"))?
            .try_into()?;
        program
            .load()
            .with_context(|| format!("the kernel verifier rejected the program {what}"))?;
        fds.push((slot, program.fd()?.try_clone()?, what));
    }
    let mut programs: ProgramArray<MapData> = ProgramArray::try_from(
        ebpf.take_map(MAP_PROGRAMS)
            .context("map PROGRAMS missing from the program")?,
    )?;
    for (slot, fd, what) in &fds {
        programs
            .set(*slot, fd, 0)
            .with_context(|| format!("registering the program {what}"))?;
    }
    // The map is pinned: its entries outlive this process, as the attached program does.
    Ok(())
}

/// Pinned maps are adopted only if this build wrote them with the same layout: another
/// layout would be misread (or rejected by the verifier halfway through a takeover).
fn check_pinned_layout(pin_dir: &Path) -> Result<()> {
    let meta = pin_dir.join(MAP_META);
    let pinned: Option<u32> = if meta.exists() {
        let data =
            MapData::from_pin(&meta).with_context(|| format!("opening {}", meta.display()))?;
        let array: Array<MapData, u32> = Array::try_from(Map::from_map_data(data)?)?;
        Some(array.get(&0, 0)?)
    } else if pin_dir.join(MAP_SERVICES).exists() {
        None // pinned by a build from before layouts were versioned
    } else {
        return Ok(()); // nothing pinned yet
    };
    if pinned == Some(LAYOUT_VERSION) {
        return Ok(());
    }
    let theirs = pinned.map_or("an unversioned layout".to_string(), |v| {
        format!("layout {v}")
    });
    bail!(
        "the data plane pinned at {dir} was created with map {theirs}; this xdplb build uses layout {LAYOUT_VERSION} and cannot adopt it. \
         Either run the xdplb build that matches, or remove the old data plane with \
         `xdplb down --pin-dir {dir}` (this drops established flows) and start again.",
        dir = pin_dir.display()
    )
}

fn program_mut(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    Ok(ebpf
        .program_mut(PROGRAM_NAME)
        .context("program missing from object")?
        .try_into()?)
}

impl Loaded {
    fn clock_program(&self) -> Result<&Xdp> {
        Ok(self
            .ebpf
            .program(CLOCK_PROGRAM)
            .context("clock program missing from object")?
            .try_into()?)
    }

    /// The data plane's current clock tick.
    pub fn now_tick(&self) -> Result<u32> {
        clock::now_tick(self.clock_program()?, &self.maps.clock)
    }

    /// Attaches to `interface`, or replaces the program in an existing pinned link. The
    /// interface's MAC is recorded first: the program forwards only frames addressed to it.
    pub fn attach(&mut self, interface: &str, mode: XdpMode) -> Result<()> {
        self.record_interface_mac(interface)?;
        let pin = link_pin(&self.pin_dir, interface);
        let program = program_mut(&mut self.ebpf)?;
        if pin.exists() {
            let pinned = PinnedLink::from_pin(&pin)
                .with_context(|| format!("opening pinned link {}", pin.display()))?;
            let link = XdpLink::try_from(FdLink::from(pinned))?;
            program
                .attach_to_link(link)
                .with_context(|| format!("updating the XDP program on {interface}"))?;
            info!(
                interface,
                "took over the pinned XDP link; forwarding never stopped"
            );
            return Ok(());
        }
        let attach = |program: &mut Xdp, mode| program.attach(interface, mode);
        let id = match mode {
            XdpMode::Driver => attach(program, AyaXdpMode::Driver),
            XdpMode::Skb => attach(program, AyaXdpMode::Skb),
            XdpMode::Auto => attach(program, AyaXdpMode::Driver).or_else(|e| {
                info!(interface, error = %e, "driver mode unavailable, attaching in skb mode");
                attach(program, AyaXdpMode::Skb)
            }),
        }
        .with_context(|| format!("attaching XDP to {interface}"))?;
        let link = program.take_link(id)?;
        let fd_link =
            FdLink::try_from(link).context("the kernel gave no bpf_link for XDP; cannot pin it")?;
        fd_link
            .pin(&pin)
            .with_context(|| format!("pinning the XDP link at {}", pin.display()))?;
        info!(interface, ?mode, "XDP program attached");
        Ok(())
    }
}

impl Loaded {
    /// Records (again) the own MAC of an attached interface, and of a bond's members (native
    /// XDP on a bond runs in each member's driver, and the frame arrives on the member's
    /// index): called at attach, and by the controller every second, so an interface whose
    /// MAC changed keeps forwarding. Returns the interface indexes recorded.
    pub fn record_interface_mac(&mut self, interface: &str) -> Result<Vec<u32>> {
        let (ifindex, mac) = netconf::if_mac(interface)?;
        let mut recorded = vec![ifindex];
        for member in netconf::bond_members(interface) {
            recorded.push(netconf::if_index(&member)?);
        }
        for index in &recorded {
            self.maps
                .set_interface_mac(*index, mac)
                .with_context(|| format!("interface {interface}"))?;
        }
        Ok(recorded)
    }
}

/// Detaches every pinned link and removes every pin under `pin_dir`.
pub fn remove_pins(pin_dir: &Path) -> Result<()> {
    let entries = match fs::read_dir(pin_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", pin_dir.display())),
    };
    for entry in entries {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with("link-") {
            // Unpinning drops the last reference to the link: the program detaches.
            if let Ok(link) = PinnedLink::from_pin(&path) {
                link.unpin()
                    .with_context(|| format!("unpinning {}", path.display()))?;
                info!(link = %path.display(), "XDP program detached");
                continue;
            }
        }
        fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    fs::remove_dir(pin_dir).with_context(|| format!("removing {}", pin_dir.display()))?;
    Ok(())
}

/// The pin directory must be on a BPF filesystem; mount one at /sys/fs/bpf if none is there.
fn ensure_bpffs(pin_dir: &Path, pins: Pins) -> Result<()> {
    const BPF_FS_MAGIC: i64 = 0xcafe4a11;
    let root = Path::new("/sys/fs/bpf");
    if !pin_dir.starts_with(root) {
        return Ok(()); // an operator's own bpffs mount
    }
    let is_bpffs = nix::sys::statfs::statfs(root)
        .map(|s| s.filesystem_type().0 == BPF_FS_MAGIC)
        .unwrap_or(false);
    if !is_bpffs && pins == Pins::OutliveProcess && in_private_mount_namespace() {
        bail!(
            "/sys/fs/bpf here is not the host's BPF filesystem: this process runs in a mount \
             namespace of its own (`ip netns exec` makes one and remounts /sys), so pins made here \
             would die with it, and a crash or restart of the controller would detach the data \
             plane and drop every flow. Start it with `nsenter --net=/run/netns/NAME xdplb run ...` \
             (which keeps the host's mounts), or mount bpffs on /sys/fs/bpf in this namespace in a \
             way that outlives the process; or pass --ephemeral-pins to accept that the data plane \
             stops with this process"
        );
    }
    if !is_bpffs {
        let status = std::process::Command::new("mount")
            .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
            .status()?;
        if !status.success() {
            bail!("/sys/fs/bpf is not a BPF filesystem and mounting one failed");
        }
    }
    Ok(())
}

/// Whether this process runs in a mount namespace of its own: not its parent's, nor PID 1's
/// (where readable). A BPF filesystem it mounts would be private to it, and gone with it.
/// `ip netns exec` makes such a namespace for the command it runs.
fn in_private_mount_namespace() -> bool {
    let Ok(own) = fs::read_link("/proc/self/ns/mnt") else {
        return false;
    };
    let parent = nix::unistd::getppid();
    [
        format!("/proc/{parent}/ns/mnt"),
        "/proc/1/ns/mnt".to_string(),
    ]
    .iter()
    .filter_map(|other| fs::read_link(other).ok())
    .any(|other| other != own)
}
