//! The `xdplb run` daemon and `xdplb down`.

pub mod admin;
mod adoption;
mod announce;
mod firewall;
pub mod lock;
mod readiness;
mod run;
mod status;

pub use run::{Endpoints, down, run};
