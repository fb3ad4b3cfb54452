//! One controller per pin directory: an exclusive lock in /run/xdplb, holding its pid.

use std::{
    fs::{self, File, OpenOptions},
    io::{Read, Seek, Write},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use nix::fcntl::{Flock, FlockArg};

pub struct RunLock {
    _file: Flock<File>,
}

pub fn path_for(pin_dir: &Path) -> PathBuf {
    let key: String = pin_dir
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    PathBuf::from(format!("/run/xdplb/run{key}.lock"))
}

/// Takes the lock for `pin_dir`, or says which process holds it.
pub fn acquire(pin_dir: &Path) -> Result<RunLock> {
    let path = path_for(pin_dir);
    fs::create_dir_all(path.parent().unwrap())?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((_, _)) => {
            let holder = holder(pin_dir)
                .map(|p| format!(" (pid {p})"))
                .unwrap_or_default();
            bail!(
                "another `xdplb run` is already active for pin directory {}{holder}; stop it first, or use --pin-dir and --socket for a second balancer",
                pin_dir.display()
            );
        }
    };
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    Ok(RunLock { _file: file })
}

/// Pid of the controller holding the lock for `pin_dir`, if one does.
pub fn holder(pin_dir: &Path) -> Option<i32> {
    let path = path_for(pin_dir);
    let file = File::open(&path).ok()?;
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_) => None, // nobody holds it
        Err((mut file, _)) => {
            let mut text = String::new();
            file.read_to_string(&mut text).ok()?;
            text.trim().parse().ok()
        }
    }
}
