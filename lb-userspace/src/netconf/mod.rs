//! Kernel network state the controller reads and sets over rtnetlink and /proc/sys.

pub mod address;
pub mod neighbour;
pub mod sysctl;

use anyhow::{Context, Result};

/// Opens an rtnetlink connection on the current tokio runtime.
pub fn connect() -> Result<rtnetlink::Handle> {
    let (connection, handle, _) = rtnetlink::new_connection().context("opening rtnetlink")?;
    tokio::spawn(connection);
    Ok(handle)
}

/// Interface index by name, or a clear error.
pub fn if_index(name: &str) -> Result<u32> {
    nix::net::if_::if_nametoindex(name)
        .with_context(|| format!("no network interface named `{name}`"))
}
