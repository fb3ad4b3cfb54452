//! The status page as an administrator sees it: a real headless browser (Debian's chromium)
//! opens `/` on the balancer's metrics listener while one real is down, runs the page's script
//! and renders it. The rendered page must show that real as down, with its check's reason, and
//! the other as up; a screenshot is kept (target/status-page.png) for a person to look at.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use serde_json::Value;
use xdplb_lab::lab::{DrLab, LabConfig, Netns, dr_policy};

const PAGE: &str = "http://127.0.0.1:9475/";

fn chromium(ns: &Netns, args: &[&str]) -> Result<String> {
    let out = ns
        .command("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            // Lets the page's script fetch its data and render before the capture.
            "--virtual-time-budget=4000",
            "--window-size=900,700",
        ])
        .args(args)
        .output()?;
    ensure!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn real_state(lab: &DrLab, address: &str) -> Result<String> {
    let out = lab.balancer.ctl(&["status", "--json"])?;
    let status: Value = serde_json::from_slice(&out.stdout)?;
    Ok(status["services"][0]["reals"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["address"] == address)
        .map(|r| r["state"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default())
}

#[test]
fn the_status_page_shows_a_real_that_is_down_as_down() -> Result<()> {
    let mut lab = DrLab::build(&LabConfig {
        reals: 2,
        ports: vec![104],
    })?;
    lab.balancer.metrics_listen = "127.0.0.1:9475".into();
    lab.balancer.start(&dr_policy(&lab, &[104]))?;
    // real-2's service stops: its TCP check fails and it goes down.
    lab.stop_service(1);
    let start = Instant::now();
    while real_state(&lab, "198.18.0.12")? != "down" {
        ensure!(
            start.elapsed() < Duration::from_secs(15),
            "real-2 never went down"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The page as the browser rendered it, its script run.
    let dom = chromium(&lab.balancer.ns, &["--dump-dom", PAGE])?;
    let row = |address: &str| -> String {
        dom.split("<tr>")
            .find(|r| r.contains(address))
            .unwrap_or_default()
            .to_string()
    };
    let down = row("198.18.0.12");
    ensure!(
        down.contains("state down") && down.contains("connect"),
        "real-2's row does not say down and why:\n{down}\n--- page:\n{dom}"
    );
    ensure!(
        row("198.18.0.11").contains("state up"),
        "real-1's row does not say up:\n{dom}"
    );
    ensure!(dom.contains("dicom"), "the service is not named:\n{dom}");

    // A picture for people.
    let shot = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target"))
        .join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        &lab.balancer.ns,
        &[&format!("--screenshot={}", shot.display()), PAGE],
    )?;
    let size = std::fs::metadata(&shot)?.len();
    ensure!(size > 5_000, "the screenshot is {size} bytes");
    Ok(())
}
