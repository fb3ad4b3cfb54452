//! The `xdplb run` daemon and `xdplb down`.

mod announce;
pub mod lock;
mod run;

pub use run::{down, run};
