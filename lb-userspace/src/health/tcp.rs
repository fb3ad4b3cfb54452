//! `check: tcp`: a TCP connection is accepted, then closed.

use super::{Target, Verdict, connect};

pub async fn check(target: Target) -> Verdict {
    match connect(target).await {
        Ok(stream) => {
            drop(stream);
            Ok("connected".into())
        }
        Err(e) => Err(format!("connect: {e}")),
    }
}
