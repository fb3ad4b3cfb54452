//! DICOM test material for the labs, with dcmtk's tools: instances to send (dump2dcm) and the
//! instances a dcmtk storescp stored (dcmdump).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};

use super::netns::run;

/// Writes `n` Secondary Capture instances of study `study` into `dir` with dcmtk's dump2dcm;
/// returns (path, SOP Instance UID) pairs.
pub fn instances(dir: &Path, study: u32, n: u32) -> Result<Vec<(PathBuf, String)>> {
    let mut out = Vec::new();
    for i in 1..=n {
        let uid = format!("1.2.826.0.1.3680043.9.7777.{study}.{i}");
        let dump = dir.join(format!("s{study}-{i}.dump"));
        let file = dir.join(format!("s{study}-{i}.dcm"));
        std::fs::write(
            &dump,
            format!(
                "(0008,0016) UI =SecondaryCaptureImageStorage\n(0008,0018) UI [{uid}]\n(0008,0060) CS [OT]\n(0010,0010) PN [Test^Patient{study}]\n(0010,0020) LO [XDPLB-{study}]\n(0020,000d) UI [1.2.826.0.1.3680043.9.7777.{study}.0.1]\n(0020,000e) UI [1.2.826.0.1.3680043.9.7777.{study}.0.2]\n(0028,0002) US 1\n(0028,0004) CS [MONOCHROME2]\n(0028,0010) US 2\n(0028,0011) US 2\n(0028,0100) US 8\n(0028,0101) US 8\n(0028,0102) US 7\n(0028,0103) US 0\n(7fe0,0010) OB 00\\01\\02\\03\n"
            ),
        )?;
        run(Command::new("dump2dcm").arg("+te").arg(&dump).arg(&file))?;
        out.push((file, uid));
    }
    Ok(out)
}

/// Counts, into `counts`, the SOP Instance UIDs of the files a storescp wrote into `dir` (with
/// `+uf`, an instance stored twice leaves two files).
pub fn stored_uids(dir: &Path, counts: &mut HashMap<String, usize>) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let out = run(Command::new("dcmdump")
            .args(["-q", "-s", "+P", "0008,0018"])
            .arg(&path))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let uid = text
            .split('[')
            .nth(1)
            .and_then(|s| s.split(']').next())
            .with_context(|| format!("no SOP Instance UID in {}: {text}", path.display()))?;
        *counts.entry(uid.to_string()).or_default() += 1;
    }
    Ok(())
}
