//! Clinical acceptance, DICOM over DR: two Orthanc archives (Debian's orthanc) behind one VIP on
//! 104 and 11112, checked with dicom-echo; dcmtk's echoscu and storescu as the modality. Every
//! instance is counted through each Orthanc's REST API. Then one Orthanc stops in the middle of
//! a run: sends after detection all succeed on the other, and every instance the client saw
//! acknowledged is stored.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use xdplb_lab::lab::{Daemon, DrLab, LabConfig, Netns, VIP, dicom, netns::run};

const INTERVAL_MS: u64 = 500;
const FALL: u64 = 2;

/// One Orthanc in a real's namespace: DICOM on 104 (11112 redirected to it), REST on 8042,
/// storage in the lab's scratch directory (kept across a restart).
struct Archive {
    daemon: Option<Daemon>,
    config: PathBuf,
}

impl Archive {
    fn start(ns: &Netns, dir: &Path, name: &str) -> Result<Archive> {
        let storage = dir.join(name);
        std::fs::create_dir_all(&storage)?;
        let config = dir.join(format!("{name}.json"));
        std::fs::write(
            &config,
            serde_json::json!({
                "Name": name,
                "StorageDirectory": storage,
                "IndexDirectory": storage,
                "DicomAet": "ORTHANC",
                "DicomPort": 104,
                "HttpPort": 8042,
                "RemoteAccessAllowed": true,
                "AuthenticationEnabled": false,
                "DicomCheckCalledAet": false,
                "DicomAlwaysAllowEcho": true,
                "DicomAlwaysAllowStore": true,
                "Plugins": [],
            })
            .to_string(),
        )?;
        // The VIP's second port reaches the same archive (a real's port mapping; DR cannot
        // translate ports).
        run(ns
            .command("nft")
            .arg("add table ip xdplb_lab; add chain ip xdplb_lab pre { type nat hook prerouting priority -100; }; add rule ip xdplb_lab pre tcp dport 11112 redirect to :104"))?;
        let mut archive = Archive {
            daemon: None,
            config,
        };
        archive.restart(ns)?;
        Ok(archive)
    }

    fn restart(&mut self, ns: &Netns) -> Result<()> {
        self.daemon = Some(Daemon::start(
            ns,
            104,
            "/usr/sbin/Orthanc",
            &[self.config.to_str().unwrap()],
        )?);
        Ok(())
    }

    fn stop(&mut self) {
        self.daemon = None;
    }
}

/// SOP Instance UIDs stored in the Orthanc of `ns`, through its REST API.
fn stored(ns: &Netns) -> Result<HashSet<String>> {
    let out = run(ns
        .command("curl")
        .args(["-sf", "http://127.0.0.1:8042/instances?expand"]))?;
    let instances: Value = serde_json::from_slice(&out.stdout)?;
    Ok(instances
        .as_array()
        .context("instances")?
        .iter()
        .filter_map(|i| {
            i["MainDicomTags"]["SOPInstanceUID"]
                .as_str()
                .map(String::from)
        })
        .collect())
}

/// storescu from the client through the VIP, one association; true if every file was
/// acknowledged (dcmtk exits non-zero otherwise).
fn store(lab: &DrLab, port: u16, files: &[(PathBuf, String)]) -> Result<bool> {
    let out = lab
        .client
        .command("storescu")
        .args([
            "-aec", "ORTHANC", "-aet", "MODALITY", "-to", "5", "-ta", "5", "-td", "5",
        ])
        .arg(VIP.to_string())
        .arg(port.to_string())
        .args(files.iter().map(|(f, _)| f))
        .output()?;
    Ok(out.status.success())
}

#[test]
fn dicom_over_dr_to_two_orthancs_and_one_stops_mid_run() -> Result<()> {
    let mut lab = DrLab::build(&LabConfig {
        reals: 2,
        ports: vec![],
    })?;
    let dir = lab.balancer.work_dir.join("dicom");
    std::fs::create_dir_all(&dir)?;
    let mut archives = Vec::new();
    for (i, (ns, _, _)) in lab.reals.iter().enumerate() {
        archives.push(Archive::start(ns, &dir, &format!("pacs-{}", i + 1))?);
    }
    let mut policy = format!(
        "interfaces:\n  - name: eth0\n    xdp_mode: driver\nservices:\n  - name: dicom\n    vip: {VIP}\n    ports: [104, 11112]\n    protocol: tcp\n    forwarding: dr\n    health:\n      check: dicom-echo\n      called_ae: ORTHANC\n      calling_ae: XDPLB\n      interval: {INTERVAL_MS}ms\n      timeout: 400ms\n      rise: 2\n      fall: {FALL}\n    reals:\n"
    );
    for (_, addr, _) in &lab.reals {
        policy += &format!("      - address: {addr}\n");
    }
    lab.balancer.start(&policy)?;

    // C-ECHO through the VIP on both ports.
    for port in ["104", "11112"] {
        run(lab
            .client
            .command("echoscu")
            .args(["-aec", "ORTHANC", &VIP.to_string(), port]))
        .with_context(|| format!("echoscu through the VIP on {port}"))?;
    }

    // 200 instances in 40 associations over both ports: each stored exactly once, on both.
    let first = dicom::instances(&dir, 1, 200)?;
    for (i, batch) in first.chunks(5).enumerate() {
        let port = if i % 2 == 0 { 104 } else { 11112 };
        ensure!(store(&lab, port, batch)?, "storescu batch {i} failed");
    }
    let on: Vec<HashSet<String>> = lab
        .reals
        .iter()
        .map(|(ns, _, _)| stored(ns))
        .collect::<Result<_>>()?;
    let sent: HashSet<String> = first.iter().map(|(_, uid)| uid.clone()).collect();
    ensure!(on[0].is_disjoint(&on[1]), "an instance was stored twice");
    ensure!(
        on[0].union(&on[1]).cloned().collect::<HashSet<_>>() == sent,
        "stored {} + {} of 200",
        on[0].len(),
        on[1].len()
    );
    ensure!(
        !on[0].is_empty() && !on[1].is_empty(),
        "both archives got a share"
    );
    eprintln!(
        "200 instances through the VIP: {} on pacs-1, {} on pacs-2",
        on[0].len(),
        on[1].len()
    );

    // A second run; pacs-1 stops in the middle.
    let second = dicom::instances(&dir, 2, 200)?;
    let mut acknowledged = Vec::new();
    let mut stopped_at = None;
    let mut failed_after_detection = Vec::new();
    for (i, batch) in second.chunks(5).enumerate() {
        if i == 12 {
            archives[0].stop();
            stopped_at = Some(Instant::now());
        }
        let started = Instant::now();
        let port = if i % 2 == 0 { 104 } else { 11112 };
        if store(&lab, port, batch)? {
            acknowledged.extend(batch.iter().map(|(_, uid)| uid.clone()));
        } else if let Some(t) = stopped_at
            && started.duration_since(t) > Duration::from_millis(INTERVAL_MS * FALL + 1000)
        {
            failed_after_detection.push(i);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    ensure!(
        failed_after_detection.is_empty(),
        "batches failed after detection: {failed_after_detection:?}"
    );
    archives[0].restart(&lab.reals[0].0)?;
    let on: HashSet<String> = stored(&lab.reals[0].0)?
        .union(&stored(&lab.reals[1].0)?)
        .cloned()
        .collect();
    let lost: Vec<&String> = acknowledged.iter().filter(|u| !on.contains(*u)).collect();
    ensure!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
    eprintln!(
        "with pacs-1 stopped mid-run: {} of 200 acknowledged, all stored",
        acknowledged.len()
    );
    Ok(())
}
