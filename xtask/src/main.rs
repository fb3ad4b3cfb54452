//! `cargo xtask <command>`: the one entry point for building, testing, demonstrating and
//! benchmarking xdplb. Every command first runs scripts/setup.sh, which installs what a fresh
//! machine lacks (Debian packages, nightly rust-src, bpf-linker) and takes about a second when
//! everything is present.

mod package;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
};

const USAGE: &str = "\
usage: cargo xtask <command>

  setup   install what building and testing need (idempotent)
  build   build everything (the XDP programs with nightly, the rest with stable)
  test    run every test: unit, packet-level (BPF_PROG_TEST_RUN) and namespace labs (root),
          the clinical acceptance labs included
  e2e     only the clinical acceptance labs: DICOM to two Orthancs over DR, HL7 MLLP and
          HTTPS viewers (nginx) over NAT
  demo    build a lab, balance real TCP connections through xdplb in DR mode, show it, tear down
          (--nat: two-arm NAT with HTTP and UDP instead)
  bench   per-packet cost of the XDP program against a bare XDP_TX floor
  package the Debian package, target/xdplb_VERSION_ARCH.deb
  lint    cargo fmt --check and clippy -D warnings on userspace and the eBPF crate";

/// The clinical acceptance test binaries (tests/acceptance_*.rs).
const ACCEPTANCE: [&str; 2] = ["acceptance_dicom", "acceptance_nat"];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let rest = &args[1..];
    let root = workspace_root();
    let result = match command.as_str() {
        "setup" => setup(&root),
        "build" => setup(&root).and_then(|_| cargo(&root, &["build", "--all-targets"])),
        "test" => setup(&root).and_then(|_| test(&root, rest)),
        "e2e" => setup(&root).and_then(|_| {
            let mut args: Vec<String> = ["-p", "xdplb-tests"]
                .into_iter()
                .chain(ACCEPTANCE.iter().flat_map(|t| ["--test", t]))
                .map(String::from)
                .collect();
            args.extend(rest.iter().cloned());
            test(&root, &args)
        }),
        "demo" => setup(&root).and_then(|_| lab(&root, "demo", rest)),
        "bench" => setup(&root).and_then(|_| lab(&root, "bench", rest)),
        "lint" => setup(&root).and_then(|_| lint(&root)),
        "package" => setup(&root).and_then(|_| package::package(&root).map(drop)),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command `{other}`\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn status(cmd: &mut Command) -> Result<(), String> {
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed ({status})"))
    }
}

fn cargo(root: &Path, args: &[&str]) -> Result<(), String> {
    status(Command::new(env!("CARGO")).current_dir(root).args(args))
}

fn setup(root: &Path) -> Result<(), String> {
    status(Command::new("bash").arg(root.join("scripts/setup.sh")))
}

fn require_root(what: &str) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { geteuid() } != 0 {
        return Err(format!(
            "{what} needs root (BPF programs, XDP, network namespaces)"
        ));
    }
    Ok(())
}

unsafe extern "C" {
    fn geteuid() -> u32;
}

fn test(root: &Path, extra: &[String]) -> Result<(), String> {
    require_root("cargo xtask test")?;
    // Build first so the lab finds the xdplb binary next to the test binaries, and the package,
    // which tests/package.rs unpacks.
    cargo(root, &["build", "--all-targets"])?;
    package::package(root)?;
    let mut args = vec!["test"];
    args.extend(extra.iter().map(String::as_str));
    // Pass the output through, and close with the total over every test binary.
    let mut child = Command::new(env!("CARGO"))
        .current_dir(root)
        .args(&args)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run cargo test: {e}"))?;
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.map_err(|e| e.to_string())?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            passed += count(rest, " passed");
            failed += count(rest, " failed");
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    println!("tests: {passed} passed, {failed} failed");
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo test failed ({status})"))
    }
}

/// The number before `label` in a `test result:` line.
fn count(line: &str, label: &str) -> u64 {
    line.split(';')
        .find_map(|part| part.trim_end().strip_suffix(label))
        .and_then(|n| n.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn lab(root: &Path, what: &str, extra: &[String]) -> Result<(), String> {
    require_root(&format!("cargo xtask {what}"))?;
    cargo(
        root,
        &["build", "--release", "-p", "xdplb", "-p", "xdplb-lab"],
    )?;
    let binary = root.join("target/release/xdplb-lab");
    status(Command::new(binary).arg(what).args(extra).current_dir(root))
}

fn lint(root: &Path) -> Result<(), String> {
    cargo(root, &["fmt", "--all", "--check"])?;
    cargo(root, &["clippy", "--all-targets", "--", "-D", "warnings"])?;
    status(Command::new("cargo").current_dir(root).args([
        "+nightly",
        "clippy",
        "-p",
        "lb-ebpf",
        "--release",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--",
        "-D",
        "warnings",
    ]))
}
