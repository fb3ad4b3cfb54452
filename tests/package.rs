//! The Debian package as a hospital's administrator gets it: `cargo xtask test` builds it
//! (`cargo xtask package`) before the tests run. Unpacked, it holds the binary with its XDP
//! object, the unit, every man page, completions and the examples, and depends on what the
//! binary links to; the packaged binary validates the packaged examples.

use std::{path::PathBuf, process::Command};

use anyhow::{Context, Result, ensure};

/// The newest `target/xdplb_*.deb`.
fn package() -> Result<PathBuf> {
    let target = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target"));
    let mut debs: Vec<PathBuf> = std::fs::read_dir(&target)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("xdplb_") && n.ends_with(".deb"))
        })
        .collect();
    debs.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    debs.pop()
        .context("no target/xdplb_*.deb: run `cargo xtask package` (cargo xtask test does)")
}

fn dpkg_deb(args: &[&str], deb: &PathBuf) -> Result<String> {
    let out = Command::new("dpkg-deb").args(args).arg(deb).output()?;
    ensure!(
        out.status.success(),
        "dpkg-deb {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn the_package_holds_what_an_administrator_needs_and_its_binary_works() -> Result<()> {
    let deb = package()?;
    let control = dpkg_deb(&["--field"], &deb)?;
    assert!(control.contains("Package: xdplb"), "{control}");
    assert!(
        control.contains("Depends: ") && control.contains("libc6"),
        "Depends from the binary's libraries: {control}"
    );
    let contents = dpkg_deb(&["--contents"], &deb)?;
    for path in [
        "./usr/sbin/xdplb",
        "./lib/systemd/system/xdplb.service",
        "./usr/share/man/man1/xdplb.1.gz",
        "./usr/share/man/man1/xdplb-run.1.gz",
        "./usr/share/man/man1/xdplb-validate.1.gz",
        "./usr/share/man/man5/xdplb.yaml.5.gz",
        "./usr/share/bash-completion/completions/xdplb",
        "./usr/share/zsh/vendor-completions/_xdplb",
        "./usr/share/doc/xdplb/examples/dicom.yaml",
        "./usr/share/doc/xdplb/examples/hl7.yaml",
        "./usr/share/doc/xdplb/examples/dual-stack.yaml",
        "./usr/share/doc/xdplb/keepalived/keepalived-dr.conf",
        "./usr/share/doc/xdplb/grafana/xdplb-dashboard.json",
        "./usr/share/doc/xdplb/policy.md",
        "./usr/share/doc/xdplb/copyright",
    ] {
        assert!(
            contents.contains(path),
            "{path} missing from the package:\n{contents}"
        );
    }
    assert!(
        contents
            .lines()
            .filter(|l| l.contains("/usr/") || l.contains("/lib/"))
            .all(|l| l.contains("root/root")),
        "files belong to root:\n{contents}"
    );

    // Unpacked, the binary (its XDP object inside) validates every packaged example.
    let dir = std::env::temp_dir().join(format!("xdplb-package-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new("dpkg-deb")
        .arg("--extract")
        .arg(&deb)
        .arg(&dir)
        .output()?;
    ensure!(
        out.status.success(),
        "extract: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let binary = dir.join("usr/sbin/xdplb");
    let examples = dir.join("usr/share/doc/xdplb/examples");
    let mut validated = 0;
    for example in std::fs::read_dir(&examples)? {
        let example = example?.path();
        let out = Command::new(&binary)
            .args(["validate", "--config"])
            .arg(&example)
            .output()?;
        ensure!(
            out.status.success(),
            "{} does not validate: {}",
            example.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        validated += 1;
    }
    ensure!(validated >= 4, "only {validated} examples");
    // The man page of the policy file reads as one.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "zcat {}/usr/share/man/man5/xdplb.yaml.5.gz",
            dir.display()
        ))
        .output()?;
    let page = String::from_utf8_lossy(&out.stdout);
    ensure!(
        page.contains(".TH XDPLB.YAML 5") && page.contains("vip_announcement"),
        "{page}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
