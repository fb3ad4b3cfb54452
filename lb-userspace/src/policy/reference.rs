//! The policy reference, xdplb.yaml(5), rendered from the key table the checker uses: as a man
//! page (`xdplb generate man`) and as Markdown (docs/policy.md, which the README links).

use std::time::Duration;

use roff::{Roff, bold, roman};

use super::{
    duration::show,
    keys::{Key, Kind, SECTIONS, Section},
};

const SUMMARY: &str = "The policy file of xdplb, an XDP layer 4 load balancer: which virtual services to balance, over which real servers, and how.";

const INTRODUCTION: &[&str] = &[
    "The policy is a YAML file, usually `/etc/xdplb/policy.yaml`. `xdplb validate --config FILE` checks it without touching the system; `xdplb run` loads it, and `xdplb reload` (or SIGHUP) applies a changed file, leaving established connections where they are.",
    "A file that is not right is refused as a whole, and the running configuration stays. Every problem is reported at once, one per line, as `FILE:LINE:COLUMN: message`, pointing at the key or value concerned; `validate`, `run` and `reload` exit with status 2. Some things are legal but probably not meant (every real at weight 0, `nat_routing: open`): they are warnings, and `xdplb validate --strict` refuses them too.",
    "Keys are lower case with `_`. A key not listed here is an error, with the key probably meant. Durations are a whole number and a unit: `500ms`, `2s`, `5m`, `1h`, `7d`. Addresses are IPv4 or IPv6 addresses written out (`198.18.0.10`, `2001:db8::10`): no host names, prefixes or ports (a key that takes a port says so; IPv6 with a port in brackets, `[2001:db8::10]:8080`). A service is of one family: its VIP's.",
];

const EXAMPLE: &str = "\
interfaces:
  - name: eth0
services:
  - name: pacs-dicom
    vip: 198.18.0.100
    ports: [104, 11112]
    protocol: tcp
    forwarding: dr
    health:
      check: dicom-echo
      called_ae: ORTHANC
    reals:
      - address: 198.18.0.11
      - address: 198.18.0.12
        weight: 50
";

/// What a value of this kind looks like and what limits it has, for the reference.
fn kind_text(kind: &Kind) -> String {
    let range = |min: &Duration, max: &Duration| format!("{} to {}", show(*min), show(*max));
    match kind {
        Kind::Text => "Text, on one line.".into(),
        Kind::Name => "A name (printable text on one line, not empty).".into(),
        Kind::Interface => "An interface name, 1 to 15 characters.".into(),
        Kind::Address => "An IPv4 or IPv6 address other hosts can reach (not unspecified, broadcast, multicast, loopback or link-local; IPv6 written without brackets).".into(),
        Kind::AddressPort => "`ADDRESS` or `ADDRESS:PORT`; IPv6 with a port as `[ADDRESS]:PORT`.".into(),
        Kind::Port => "A port, 1 to 65535.".into(),
        Kind::Ports => "A list of ports (1 to 65535), at least one, none twice.".into(),
        Kind::Whole { min, max } => format!("A whole number, {min} to {max}."),
        Kind::Duration {
            min,
            max,
            whole_seconds: false,
        } => format!("A duration, {}.", range(min, max)),
        Kind::Duration { min, max, .. } => {
            format!("A duration in whole seconds, {}.", range(min, max))
        }
        Kind::Choice(choices) => {
            let values: Vec<String> = choices.iter().map(|c| format!("`{}`", c.value)).collect();
            format!("One of {}.", values.join(", "))
        }
        Kind::Flag => "`true` or `false`.".into(),
        Kind::AeTitle => "A DICOM AE title: 1 to 16 printable ASCII characters, no backslash.".into(),
        Kind::UrlPath => "A path starting with `/`.".into(),
        Kind::StatusRange => "An HTTP status (`200`) or range (`200-399`), within 100 to 599.".into(),
        Kind::Pattern => "A regular expression (Rust regex syntax).".into(),
        Kind::Host => "A host name.".into(),
        Kind::Command => "A list: the program, then its arguments.".into(),
        Kind::Section(s) => format!("A block of keys: see {}.", title(s)),
        Kind::Sections(s) => format!("A list of blocks, each entry starting with `- `: see {}.", title(s)),
    }
}

fn title(section: &Section) -> String {
    if section.path.is_empty() {
        "the top level".into()
    } else {
        format!("`{}`", section.path)
    }
}

fn default_text(key: &Key) -> Option<String> {
    if key.required {
        Some("Required.".into())
    } else if key.default.is_empty() {
        None
    } else if matches!(key.kind, Kind::Section(_) | Kind::Sections(_)) || key.default.contains(' ')
    {
        Some(format!("Default: {}.", key.default))
    } else {
        Some(format!("Default: `{}`.", key.default))
    }
}

/// The reference as Markdown.
pub fn markdown() -> String {
    let mut out = String::new();
    out.push_str("# xdplb.yaml(5): the policy file\n\n");
    out.push_str("<!-- Generated from lb-userspace/src/policy/keys.rs by `XDPLB_WRITE_DOCS=1 cargo test -p xdplb --lib reference`; edit that file, not this one. -->\n\n");
    out.push_str(SUMMARY);
    out.push_str("\n\n");
    for paragraph in INTRODUCTION {
        out.push_str(paragraph);
        out.push_str("\n\n");
    }
    out.push_str("A small policy:\n\n```yaml\n");
    out.push_str(EXAMPLE);
    out.push_str("```\n\nMore, for DICOM, HL7, HTTPS viewers and XDS, in `packaging/examples` (installed under `/usr/share/doc/xdplb/examples`).\n");
    for section in SECTIONS {
        out.push_str(&format!(
            "\n## {}\n\n{}\n\n",
            if section.path.is_empty() {
                "Top level".to_string()
            } else {
                format!("`{}`", section.path)
            },
            section.doc
        ));
        for key in section.keys {
            out.push_str(&format!(
                "- **`{}`**: {} {}",
                key.name,
                key.doc,
                kind_text(&key.kind)
            ));
            if let Some(default) = default_text(key) {
                out.push_str(&format!(" {default}"));
            }
            out.push('\n');
            if let Kind::Choice(choices) = &key.kind {
                for choice in choices.iter().filter(|c| !c.doc.is_empty()) {
                    out.push_str(&format!("  - `{}`: {}\n", choice.value, choice.doc));
                }
            }
        }
    }
    out.push_str("\n## See also\n\nxdplb(1), xdplb-validate(1), xdplb-run(1), keepalived(8)\n");
    out
}

/// Text with `code` spans, as roff: code in bold.
fn inline(text: &str) -> Vec<roff::Inline> {
    text.split('`')
        .enumerate()
        .filter(|(_, part)| !part.is_empty())
        .map(|(i, part)| if i % 2 == 1 { bold(part) } else { roman(part) })
        .collect()
}

/// The reference as a man page, section 5.
pub fn man_page() -> String {
    let mut page = Roff::new();
    page.control("TH", ["XDPLB.YAML", "5"])
        .control("SH", ["NAME"])
        .text([roman("xdplb.yaml - the xdplb policy file")])
        .control("SH", ["SYNOPSIS"])
        .text([bold("/etc/xdplb/policy.yaml")])
        .control("SH", ["DESCRIPTION"])
        .text(inline(SUMMARY));
    for paragraph in INTRODUCTION {
        page.control("PP", [] as [&str; 0]).text(inline(paragraph));
    }
    page.control("SH", ["EXAMPLE"])
        .control("nf", [] as [&str; 0])
        .text([roman(EXAMPLE)])
        .control("fi", [] as [&str; 0]);
    for section in SECTIONS {
        let heading = if section.path.is_empty() {
            "TOP LEVEL".to_string()
        } else {
            section.path.to_string()
        };
        page.control("SH", [heading.as_str()])
            .text(inline(section.doc));
        for key in section.keys {
            page.control("TP", [] as [&str; 0]).text([bold(key.name)]);
            let mut text = format!("{} {}", key.doc, kind_text(&key.kind));
            if let Some(default) = default_text(key) {
                text.push(' ');
                text.push_str(&default);
            }
            page.text(inline(&text));
            if let Kind::Choice(choices) = &key.kind {
                for choice in choices.iter().filter(|c| !c.doc.is_empty()) {
                    page.control("RS", [] as [&str; 0])
                        .control("TP", [] as [&str; 0])
                        .text([bold(choice.value)])
                        .text(inline(choice.doc))
                        .control("RE", [] as [&str; 0]);
                }
            }
        }
    }
    page.control("SH", ["SEE ALSO"]).text([roman(
        "xdplb(1), xdplb-validate(1), xdplb-run(1), keepalived(8)",
    )]);
    page.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/policy.md is this module's output; `XDPLB_WRITE_DOCS=1` rewrites it.
    #[test]
    fn docs_policy_md_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/policy.md");
        if std::env::var_os("XDPLB_WRITE_DOCS").is_some() {
            std::fs::write(path, markdown()).unwrap();
        }
        let written = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            written == markdown(),
            "docs/policy.md is out of date: run `XDPLB_WRITE_DOCS=1 cargo test -p xdplb --lib reference`"
        );
    }

    #[test]
    fn every_key_is_in_both_renderings() {
        let (md, man) = (markdown(), man_page());
        for section in SECTIONS {
            for key in section.keys {
                assert!(md.contains(&format!("**`{}`**", key.name)), "{}", key.name);
                assert!(man.contains(key.name), "{}", key.name);
            }
        }
        assert!(man.contains("\n.TH XDPLB.YAML 5"));
    }
}
