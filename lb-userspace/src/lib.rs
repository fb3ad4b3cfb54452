//! xdplb controller library: the `xdplb` binary is a thin CLI over these modules, and the
//! integration tests and xtask use them directly.

pub mod api;
pub mod controller;
pub mod dataplane;
pub mod health;
pub mod metrics;
pub mod netconf;
pub mod policy;
pub mod realserver;
