//! `check: tcp`: a TCP connection is accepted, then closed.

use tokio::net::TcpStream;

use super::{Target, Verdict};

pub async fn check(target: Target) -> Verdict {
    match TcpStream::connect((target.address, target.port)).await {
        Ok(stream) => {
            drop(stream);
            Ok("connected".into())
        }
        Err(e) => Err(format!("connect: {e}")),
    }
}
