//! What goes over the control socket: one JSON line each way.

use serde::{Deserialize, Serialize};

use super::status::Status;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "request", rename_all = "kebab-case")]
pub enum Request {
    Status,
    /// As `Admin` with `drain` (the form earlier clients send).
    Drain {
        service: String,
        address: std::net::IpAddr,
    },
    Undrain {
        service: String,
        address: std::net::IpAddr,
    },
    /// Re-read the policy file, as SIGHUP does.
    Reload,
    /// Runtime admin state of `address` in `service` (every service that has it if none):
    /// kept in the state file until undone.
    Admin {
        service: Option<String>,
        address: std::net::IpAddr,
        change: crate::controller::admin::AdminChange,
        /// Who asks (the operator's login).
        by: String,
    },
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
