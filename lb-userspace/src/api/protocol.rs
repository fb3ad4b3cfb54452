//! What goes over the control socket: one JSON line each way.

use serde::{Deserialize, Serialize};

use super::status::Status;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "request", rename_all = "kebab-case")]
pub enum Request {
    Status,
    /// Runtime admin state: no new flows or clients for this real, until `undrain`; it
    /// survives reloads (not controller restarts).
    Drain {
        service: String,
        address: std::net::Ipv4Addr,
    },
    Undrain {
        service: String,
        address: std::net::Ipv4Addr,
    },
    /// Re-read the policy file, as SIGHUP does.
    Reload,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "kebab-case")]
pub enum Response {
    Status(Status),
    Done {
        message: String,
    },
    /// The policy file does not validate: `FILE:LINE:COLUMN: message`.
    Invalid {
        message: String,
    },
    Error {
        message: String,
    },
}
