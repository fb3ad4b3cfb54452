//! Labs of network namespaces with real TCP/UDP servers and clients, and the real `xdplb`.
//!
//! Everything is named with a per-run prefix (`xdplb-PID-N-`), so parallel runs never collide,
//! and deleted when the lab drops, also when a test panics. Namespaces and pins left by a run
//! that was killed are swept when the next lab starts (their PID is dead), and so are its
//! keepalived and BIRD processes.

mod arms;
mod balancer;
mod bird;
mod daemon;
pub mod dicom;
mod dr;
mod flood;
mod keepalived;
mod nat;
pub mod netns;
mod pair;
mod remote;
mod router;
mod scaleout;
mod snat;
mod switch;
mod tcp;
mod traffic;

pub use arms::{Arms, Ipv6Plan, NAT_VIP, NAT_VIP6, Topology};
pub use balancer::{Balancer, xdplb_binary};
pub use bird::{
    BALANCER_AS, BFD_INTERVAL_MS, BFD_MULTIPLIER, BalancerBird, Bird, BirdLog, BirdProtocol,
    ROUTER_AS, RouterBird, balancer_protocol,
};
pub use daemon::Daemon;
pub use dr::{
    BALANCER, BALANCER6, CLIENT, CLIENT6, DR_UDP_PORT, DrLab, LabConfig, VIP, VIP6, dr_policy,
    real_address, real_address6,
};
pub use flood::{FLOOD_INTERFACE, FLOOD_SOURCES, SynFlood};
pub use keepalived::{
    ADVERT_INT, Keepalived, KeepalivedConfig, NOT_READY_WEIGHT, Node, PREEMPT_DELAY_S,
    PRIORITY_PREFERRED, PRIORITY_STANDBY, VrrpInstance, XdplbPaths,
};
pub use nat::{CLIENT_PORT, NatLab};
pub use netns::{Netns, mac_text};
pub use pair::{
    CHECK_INTERVAL_MS, NAT_REAL_PORT, PAIR_CLIENT, PAIR_GATEWAY, PAIR_VIP, PairLab, PairMode,
};
pub use remote::{REMOTE_CLIENT, ROUTER, RemoteClient};
pub use router::{FibRouter, RunResult, in_netns, test_run_in, xdp_md};
pub use scaleout::{
    SCALEOUT_PORT, SCALEOUT_VIP, SCALEOUT_VIPS, SECOND_VIP, ScaleoutLab, scaleout_balancer_address,
};
pub use snat::{SNAT_DICOM_PORT, SnatLab};
pub use switch::Switch;
pub use tcp::{
    Conversation, EchoServer, UdpNameServer, download, established_peers, http_get, http_get_path,
    http_keep_alive, udp_ask, udp_ask_here, udp_who, who,
};
pub use traffic::{Download, Fresh, LongLived, Traffic, TrafficConfig, TrafficReport};
