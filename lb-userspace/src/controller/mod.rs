//! The `xdplb run` daemon and `xdplb down`.

pub mod admin;
mod adoption;
mod announce;
mod firewall;
mod kernel;
pub mod lock;
mod readiness;
mod run;
mod snat;
mod status;

pub use run::{Endpoints, down, run};
