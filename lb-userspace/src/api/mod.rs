//! The control socket: a root-only unix socket (mode 0600) on which `xdplb status`, `drain`,
//! `undrain` and `reload` talk to the running controller, one JSON request and one JSON answer
//! per connection. The controller's main loop answers, so every answer is a consistent view.

pub mod client;
pub mod protocol;
pub mod server;
pub mod status;
