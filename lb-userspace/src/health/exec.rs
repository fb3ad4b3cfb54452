//! `check: exec`: run a command with the real in its environment; exit status 0 is up. The
//! command runs in its own process group, killed as a whole when the check times out (a
//! shell script's children included).

use std::process::Stdio;

use tokio::{io::AsyncReadExt, process::Command};

use super::{Target, Verdict};

/// Kills the command's process group unless it finished.
struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

pub async fn check(command: &[String], service: &str, target: Target) -> Verdict {
    let (program, args) = command.split_first().ok_or("no command")?;
    let mut child = Command::new(program)
        .args(args)
        .env("XDPLB_REAL_ADDRESS", target.address.to_string())
        .env("XDPLB_REAL_PORT", target.port.to_string())
        .env("XDPLB_SERVICE", service)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run `{program}`: {e}"))?;
    let mut guard = GroupGuard(child.id().map(|p| p as i32));
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = (&mut pipe).take(4096).read_to_string(&mut stderr).await;
    }
    let status = child.wait().await.map_err(|e| format!("waiting: {e}"))?;
    guard.0 = None;
    if status.success() {
        Ok("exit 0".into())
    } else {
        let said = stderr.lines().next().unwrap_or("").trim();
        let how = match status.code() {
            Some(code) => format!("exit {code}"),
            None => "killed by a signal".into(),
        };
        Err(if said.is_empty() {
            how
        } else {
            format!("{how}: {said}")
        })
    }
}
