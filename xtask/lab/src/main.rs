//! `xdplb-lab demo [--nat] | bench | bench-packet | bench-ab BASELINE | bench-e2e | bench-conns`, run by `cargo xtask demo` and `cargo xtask bench` (as root).

use std::process::ExitCode;

fn main() -> ExitCode {
    let command = std::env::args().nth(1).unwrap_or_default();
    let result = match command.as_str() {
        "demo" if std::env::args().any(|a| a == "--nat") => xdplb_lab::demo::run_nat(),
        "demo" => xdplb_lab::demo::run(),
        "bench" => xdplb_lab::bench::run()
            .and_then(|()| xdplb_lab::bench_e2e::run())
            .and_then(|()| xdplb_lab::bench_conns::run()),
        "bench-packet" => xdplb_lab::bench::run(),
        "bench-ab" => match std::env::args().nth(2) {
            Some(baseline) => xdplb_lab::bench::run_ab(std::path::Path::new(&baseline)),
            None => Err(anyhow::anyhow!("usage: xdplb-lab bench-ab BASELINE_OBJECT")),
        },
        "bench-conns" => xdplb_lab::bench_conns::run(),
        "bench-e2e" => xdplb_lab::bench_e2e::run(),
        _ => {
            eprintln!(
                "usage: xdplb-lab demo [--nat] | bench | bench-packet | bench-ab BASELINE | bench-e2e | bench-conns"
            );
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
