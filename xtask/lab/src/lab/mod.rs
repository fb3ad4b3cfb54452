//! A lab of network namespaces joined by a bridge, with real TCP servers and clients.
//!
//! Everything is named with a per-run prefix (`xdplb-PID-N-`), so parallel runs never collide,
//! and deleted when the lab drops, also when a test panics. Namespaces left by a run that was
//! killed are swept when the next lab starts (their PID is dead).
//!
//! Two veth facts shape the lab (found by trial, see ../shared/DESIGN.md): a frame sent out of a
//! veth with XDP_TX reaches the peer only if the peer runs an XDP program, so every bridge port
//! gets the `lab_pass` program; and a namespace's packets carry a partial checksum that an
//! XDP_TX loses, so every host turns transmit checksum offload off.

mod dr;
pub mod netns;
mod tcp;

pub use dr::{BALANCER, CLIENT, DrLab, LabConfig, VIP, dr_policy, real_address, xdplb_binary};
pub use netns::{Netns, mac_text};
pub use tcp::{Conversation, EchoServer, who};
