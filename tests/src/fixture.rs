//! A data plane loaded (not attached) with a policy, its maps pinned under a private directory
//! that is removed when the fixture drops, so tests run side by side and leave nothing behind.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

use aya::programs::{ProgramError, TestRun, TestRunOptions, Xdp};
use lb_common::maps::PROGRAM_NAME;
use xdplb::{
    dataplane::{
        loader::{self, Loaded},
        sync::{Observed, Sync},
    },
    policy::{self, Policy},
};

pub struct Dataplane {
    pub loaded: Loaded,
    pub sync: Sync,
    pub policy: Policy,
    pub observed: Observed,
    pin_dir: PathBuf,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// What the program did with one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub action: u32,
    pub frame: Vec<u8>,
}

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

impl Dataplane {
    /// Loads the program and applies `policy_yaml`, with `macs` as the reachable reals.
    pub fn new(policy_yaml: &str, macs: &[(Ipv4Addr, [u8; 6])]) -> Dataplane {
        let macs: Vec<(IpAddr, [u8; 6])> = macs.iter().map(|(a, m)| ((*a).into(), *m)).collect();
        Dataplane::with_macs(policy_yaml, &macs)
    }

    /// `new` with reals of either family.
    pub fn with_macs(policy_yaml: &str, macs: &[(IpAddr, [u8; 6])]) -> Dataplane {
        let pin_dir = PathBuf::from(format!(
            "/sys/fs/bpf/xdplb-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let policy = policy::parse("test.yaml", policy_yaml).expect("test policy is valid");
        let loaded = match loader::load(&pin_dir) {
            Ok(loaded) => loaded,
            Err(e) => {
                let _ = loader::remove_pins(&pin_dir);
                panic!("load the XDP program: {e:?}");
            }
        };
        let mut dp = Dataplane {
            sync: Sync::adopt(&loaded.maps, loaded.hz).expect("adopt"),
            loaded,
            policy,
            observed: Observed {
                macs: macs.iter().copied().collect::<HashMap<_, _>>(),
                ..Default::default()
            },
            pin_dir,
        };
        // Frames run with `run` arrive on the namespace's loopback (ifindex 1), addressed to
        // LB_MAC.
        dp.loaded
            .maps
            .set_interface_mac(1, crate::frames::LB_MAC)
            .expect("record the interface MAC");
        dp.apply();
        dp
    }

    pub fn apply(&mut self) {
        self.sync
            .apply(&mut self.loaded.maps, &self.policy, &self.observed)
            .expect("sync maps");
    }

    fn program(&self) -> &Xdp {
        self.loaded
            .ebpf
            .program(PROGRAM_NAME)
            .unwrap()
            .try_into()
            .unwrap()
    }

    /// Runs the program once on `frame`.
    pub fn run(&self, frame: &[u8]) -> Result<Outcome, ProgramError> {
        let mut out = vec![0u8; frame.len() + 256];
        let result = self.program().test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..TestRunOptions::new()
        })?;
        out.truncate(result.data_size_out as usize);
        Ok(Outcome {
            action: result.return_value,
            frame: out,
        })
    }

    /// Runs the program once on `frame` as if it arrived on `interface` of namespace `ns`, so
    /// helpers such as bpf_fib_lookup see that namespace's routes and neighbours.
    /// `interface` must have been registered (`register_interface`).
    pub fn run_in(&self, ns: &xdplb_lab::lab::Netns, interface: &str, frame: &[u8]) -> Outcome {
        let r =
            xdplb_lab::lab::test_run_in(ns, interface, self.program(), frame, 1).expect("test run");
        Outcome {
            action: r.action,
            frame: r.frame,
        }
    }

    /// Loads the program with `policy_yaml`, `macs` as the reachable reals, as if attached to
    /// `router`'s `out0` and `in0` (and loopback, for `run`).
    pub fn on_router(
        policy_yaml: &str,
        macs: &[(Ipv4Addr, [u8; 6])],
        router: &xdplb_lab::lab::FibRouter,
    ) -> Dataplane {
        let macs: Vec<(IpAddr, [u8; 6])> = macs.iter().map(|(a, m)| ((*a).into(), *m)).collect();
        Dataplane::on_router_with(policy_yaml, &macs, router)
    }

    /// `on_router` with reals of either family.
    pub fn on_router_with(
        policy_yaml: &str,
        macs: &[(IpAddr, [u8; 6])],
        router: &xdplb_lab::lab::FibRouter,
    ) -> Dataplane {
        let mut dp = Dataplane::with_macs(policy_yaml, macs);
        dp.register_interface(&router.ns, "out0");
        dp.register_interface(&router.ns, "in0");
        dp
    }

    /// Opens NAT flow adoption (closed unless a controller opens it: a pair's standby, and
    /// just after a takeover), or closes it again.
    pub fn set_nat_adoption(&mut self, open: bool) {
        let until = if open {
            lb_common::maps::NAT_ADOPT_ALWAYS
        } else {
            0
        };
        self.loaded
            .maps
            .nat_adopt_until
            .set(0, until, 0)
            .expect("write the adoption window");
    }

    /// NAT flows adopted from a real's reply so far.
    pub fn adopted(&self) -> u64 {
        xdplb::dataplane::counters::snapshot(self.maps())
            .expect("read the counters")
            .nat_adopted
    }

    /// Packets the program counted under `reason` so far.
    pub fn reason_count(&self, reason: lb_common::counters::Reason) -> u64 {
        xdplb::dataplane::counters::snapshot(self.maps())
            .expect("read the counters")
            .reasons
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, count)| *count)
    }

    /// Records `interface` of `ns` (its index and own MAC) as an attached interface: the
    /// program forwards only frames addressed to the interface they arrived on.
    pub fn register_interface(&mut self, ns: &xdplb_lab::lab::Netns, interface: &str) {
        let (ifindex, mac) = {
            let name = interface.to_string();
            xdplb_lab::lab::in_netns(ns, || xdplb::netconf::if_mac(&name))
                .expect("read the interface's index and MAC")
        };
        self.loaded
            .maps
            .set_interface_mac(ifindex, mac)
            .expect("record the interface MAC");
    }

    pub fn pin_dir(&self) -> &std::path::Path {
        &self.pin_dir
    }

    pub fn maps(&self) -> &xdplb::dataplane::maps::Maps {
        &self.loaded.maps
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        let _ = loader::remove_pins(&self.pin_dir);
    }
}
