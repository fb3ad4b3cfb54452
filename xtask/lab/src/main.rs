//! `xdplb-lab demo [--nat] | bench`, run by `cargo xtask demo` and `cargo xtask bench` (as root).

use std::process::ExitCode;

fn main() -> ExitCode {
    let command = std::env::args().nth(1).unwrap_or_default();
    let result = match command.as_str() {
        "demo" if std::env::args().any(|a| a == "--nat") => xdplb_lab::demo::run_nat(),
        "demo" => xdplb_lab::demo::run(),
        "bench" => xdplb_lab::bench::run(),
        _ => {
            eprintln!("usage: xdplb-lab demo [--nat] | bench");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xdplb-lab {command}: {e:#}");
            ExitCode::FAILURE
        }
    }
}
