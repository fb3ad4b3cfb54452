//! Checks the YAML tree against the key table (`keys`): unknown, missing and repeated keys,
//! values of the wrong kind or out of range. Every problem is collected, each at the key or
//! value it is about, in the words of the policy, with a guess at what was meant.

use std::{collections::HashMap, net::Ipv4Addr};

use super::{
    duration::parse_duration,
    keys::{Key, Kind, SECTIONS, Section},
    tree::{Node, Value},
    validate::Invalid,
};

/// Everything wrong with the file's shape, in file order; empty when the typed read can follow.
pub fn check(root: &Node, policy: &Section) -> Vec<Invalid> {
    let mut problems = Vec::new();
    section(root, policy, &mut problems);
    problems.sort_by_key(|p| (p.line, p.column));
    problems
}

fn at(node: &Node, message: impl Into<String>) -> Invalid {
    Invalid {
        line: node.line,
        column: node.column,
        message: message.into(),
    }
}

fn section(node: &Node, section: &Section, out: &mut Vec<Invalid>) {
    let entries = match &node.value {
        Value::Map(entries) => entries,
        Value::Null if section.path.is_empty() => {
            out.push(at(
                node,
                "the policy is empty: it needs at least `interfaces:`",
            ));
            return;
        }
        other => {
            out.push(at(
                node,
                format!(
                    "{} is a block of keys ({}), not {}",
                    section.noun,
                    key_list(section),
                    other.describe()
                ),
            ));
            return;
        }
    };
    let mut seen: HashMap<&str, &Node> = HashMap::new();
    for (key_node, value) in entries {
        let Some(name) = key_node.value.scalar_text() else {
            out.push(at(key_node, "a key must be a name, not a list or a block"));
            continue;
        };
        let Some(key) = section.keys.iter().find(|k| k.name == name) else {
            out.push(at(key_node, unknown_key(&name, section)));
            continue;
        };
        if let Some(first) = seen.insert(key.name, key_node) {
            out.push(at(
                key_node,
                format!(
                    "`{name}` is given twice in {} (first on line {})",
                    section.noun, first.line
                ),
            ));
            continue;
        }
        self::value(value, key, section, out);
    }
    for key in section.keys.iter().filter(|k| k.required) {
        if !seen.contains_key(key.name) {
            out.push(at(
                node,
                format!("{} needs `{}`: {}", section.noun, key.name, key.doc),
            ));
        }
    }
}

fn key_list(section: &Section) -> String {
    section
        .keys
        .iter()
        .map(|k| k.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `unknown key`, with the key meant if it is close, or where the key belongs if it is
/// another block's, or else what this block has.
fn unknown_key(name: &str, section: &Section) -> String {
    let names = section.keys.iter().map(|k| k.name);
    if let Some(meant) = did_you_mean(name, names) {
        return format!(
            "unknown key `{name}` in {}; did you mean `{meant}`?",
            section.noun
        );
    }
    if let Some(home) = SECTIONS
        .iter()
        .find(|s| s.keys.iter().any(|k| k.name == name))
    {
        return format!(
            "`{name}` is a key of {} ({}), not of {}",
            home.noun, home.path, section.noun
        );
    }
    format!(
        "unknown key `{name}` in {}; it has: {}",
        section.noun,
        key_list(section)
    )
}

/// The candidate closest to `given`, if it is close enough to be a slip of the keyboard:
/// another case, `-` for `_`, a transposition or one or two wrong letters.
pub fn did_you_mean<'a>(given: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let normal = |s: &str| s.to_ascii_lowercase().replace('-', "_");
    let given = normal(given);
    let allowed = if given.len() <= 4 { 1 } else { 2 };
    candidates
        .map(|c| (strsim::damerau_levenshtein(&given, &normal(c)), c))
        .filter(|(distance, _)| *distance <= allowed)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

fn value(node: &Node, key: &Key, within: &Section, out: &mut Vec<Invalid>) {
    let name = key.name;
    if matches!(node.value, Value::Null) {
        out.push(at(
            node,
            format!("`{name}` has no value; give one or leave the key out"),
        ));
        return;
    }
    let problem: Option<String> = match &key.kind {
        Kind::Section(inner) => {
            section(node, inner, out);
            None
        }
        Kind::Sections(inner) => match &node.value {
            Value::List(items) => {
                for item in items {
                    section(item, inner, out);
                }
                None
            }
            other => Some(format!(
                "`{name}` is a list, each entry starting with `- `; not {}",
                other.describe()
            )),
        },
        Kind::Ports => ports(node, name, out),
        Kind::Command => match &node.value {
            Value::List(items) if items.is_empty() => {
                Some(format!("`{name}` needs at least the program to run"))
            }
            Value::List(items) => {
                for item in items {
                    if item.value.scalar_text().is_none() {
                        out.push(at(item, format!("each word of `{name}` is text")));
                    }
                }
                None
            }
            _ => Some(format!(
                "`{name}` is a list, the program then its arguments: `{name}: [/usr/local/bin/check, --quick]`"
            )),
        },
        kind => scalar(
            &node.value,
            name,
            &format!("the `{name}` of {}", within.noun),
            kind,
        )
        .err(),
    };
    if let Some(message) = problem {
        out.push(at(node, message));
    }
}

fn ports(node: &Node, name: &str, out: &mut Vec<Invalid>) -> Option<String> {
    let items = match &node.value {
        Value::List(items) => items,
        other => {
            let example = other
                .scalar_text()
                .map(|t| t.replace(' ', ""))
                .filter(|t| t.split(',').all(|p| p.parse::<u16>().is_ok()))
                .map(|t| t.replace(',', ", "))
                .unwrap_or_else(|| "104, 11112".into());
            return Some(format!("`{name}` is a list: `{name}: [{example}]`"));
        }
    };
    if items.is_empty() {
        return Some(format!("`{name}` needs at least one port: `{name}: [104]`"));
    }
    let mut seen = HashMap::new();
    for item in items {
        match port(&item.value, "each port") {
            Err(message) => out.push(at(item, message)),
            Ok(port) => {
                if let Some(first) = seen.insert(port, item.line) {
                    out.push(at(
                        item,
                        format!("port {port} is listed twice (first on line {first})"),
                    ));
                }
            }
        }
    }
    None
}

/// A whole number, also quoted (`"104"`), as the typed read accepts it.
fn whole(value: &Value) -> Option<i128> {
    match value {
        Value::Whole(n) => Some(*n),
        Value::Text(t) => t.trim().parse().ok(),
        _ => None,
    }
}

fn port(value: &Value, what: &str) -> Result<u16, String> {
    whole(value)
        .and_then(|n| u16::try_from(n).ok())
        .filter(|&p| p > 0)
        .ok_or_else(|| {
            format!(
                "{what} must be a whole number from 1 to 65535, not {}",
                value.describe()
            )
        })
}

/// Checks one scalar value against its kind; the error is the whole message.
/// `whose` names the key with its block, for addresses: "the `vip` of a service".
fn scalar(value: &Value, name: &str, whose: &str, kind: &Kind) -> Result<(), String> {
    let text = || match value {
        Value::Text(t) => Ok(t.as_str()),
        other => Err(format!("`{name}` is text, not {}", other.describe())),
    };
    match kind {
        Kind::Text => value
            .scalar_text()
            .map(drop)
            .ok_or_else(|| format!("`{name}` is text, not {}", value.describe())),
        Kind::Name => match value.scalar_text() {
            Some(t) if !t.trim().is_empty() => Ok(()),
            _ => Err(format!("`{name}` must be a name, not {}", value.describe())),
        },
        Kind::Interface => {
            let t = value.scalar_text().unwrap_or_default();
            if t.is_empty()
                || t.len() >= libc::IFNAMSIZ
                || t.contains(|c: char| c == '/' || c.is_whitespace())
            {
                Err(format!(
                    "{} is not an interface name (1 to 15 characters, no spaces or /)",
                    value.describe()
                ))
            } else {
                Ok(())
            }
        }
        Kind::Address => address(text()?, whose).map(drop),
        Kind::AddressPort => {
            let t = text()?.trim();
            match t.rsplit_once(':') {
                Some((a, p)) if a.parse::<Ipv4Addr>().is_ok() => {
                    address(a, whose)?;
                    p.parse::<u16>()
                        .ok()
                        .filter(|&p| p > 0)
                        .map(drop)
                        .ok_or_else(|| {
                            format!(
                                "the port of `{name}` must be a whole number from 1 to 65535, not `{p}`"
                            )
                        })
                }
                _ => address(t, whose).map(drop).map_err(|e| {
                    format!("{e} (`{name}` is ADDRESS or ADDRESS:PORT, e.g. 198.18.0.99:8080)")
                }),
            }
        }
        Kind::Port => port(value, &format!("`{name}`")).map(drop),
        Kind::Whole { min, max } => whole(value)
            .filter(|n| (*min as i128..=*max as i128).contains(n))
            .map(drop)
            .ok_or_else(|| {
                format!(
                    "`{name}` must be a whole number from {min} to {max}, not {}",
                    value.describe()
                )
            }),
        Kind::Duration {
            min,
            max,
            whole_seconds,
        } => {
            let given = match value {
                Value::Whole(n) => {
                    return Err(format!(
                        "`{name}` needs a unit: `{n}s` (units: ms, s, m, h)"
                    ));
                }
                _ => text()?,
            };
            let d = parse_duration(given).map_err(|e| format!("`{name}`: {e}"))?;
            let show = |d: std::time::Duration| super::duration::show(d);
            if d < *min || d > *max {
                return Err(format!(
                    "`{name}` must be from {} to {}, not {given}",
                    show(*min),
                    show(*max)
                ));
            }
            if *whole_seconds && d.subsec_nanos() != 0 {
                return Err(format!("`{name}` is whole seconds, not {given}"));
            }
            Ok(())
        }
        Kind::Choice(choices) => {
            let given = value.scalar_text().unwrap_or_default();
            if choices.iter().any(|c| c.value == given) {
                return Ok(());
            }
            let values: Vec<&str> = choices.iter().map(|c| c.value).collect();
            let hint = did_you_mean(&given, values.iter().copied())
                .map(|m| format!("; did you mean `{m}`?"))
                .unwrap_or_default();
            Err(format!(
                "`{name}` is one of {}, not {}{hint}",
                values.join(", "),
                value.describe()
            ))
        }
        Kind::Flag => match value {
            Value::Bool(_) => Ok(()),
            other => Err(format!(
                "`{name}` is true or false, not {}",
                other.describe()
            )),
        },
        Kind::AeTitle => {
            let t = value.scalar_text().unwrap_or_default();
            let v = t.trim();
            if v.is_empty()
                || v.len() > 16
                || !v.chars().all(|c| c.is_ascii_graphic() || c == ' ')
                || v.contains('\\')
            {
                Err(format!(
                    "`{t}` is not a DICOM AE title (1 to 16 printable ASCII characters, no backslash)"
                ))
            } else {
                Ok(())
            }
        }
        Kind::UrlPath => match text()? {
            t if t.starts_with('/') => Ok(()),
            t => Err(format!("`{name}` must start with /, e.g. /{t}")),
        },
        Kind::StatusRange => {
            let t = value.scalar_text().unwrap_or_default();
            parse_status_range(&t).map(drop).ok_or_else(|| {
                format!("`{name}` is an HTTP status or a range like 200-399, not `{t}`")
            })
        }
        Kind::Pattern => regex::Regex::new(text()?)
            .map(drop)
            .map_err(|e| format!("`{name}` is not a valid regular expression: {e}")),
        Kind::Ports | Kind::Command | Kind::Section(_) | Kind::Sections(_) => {
            unreachable!("handled by value()")
        }
    }
}

/// An IPv4 address other hosts can reach; other notations get a message that names them.
fn address(text: &str, whose: &str) -> Result<Ipv4Addr, String> {
    let t = text.trim();
    let address = match t.parse::<Ipv4Addr>() {
        Ok(a) => a,
        Err(_) if t.parse::<std::net::Ipv6Addr>().is_ok() => {
            return Err(format!(
                "`{t}`: IPv6 addresses are not supported yet; {whose} must be an IPv4 address"
            ));
        }
        Err(_) if t.contains('/') => {
            return Err(format!(
                "`{t}` is a prefix; {whose} is a single address, without /length"
            ));
        }
        Err(_)
            if t.rsplit_once(':')
                .is_some_and(|(a, _)| a.parse::<Ipv4Addr>().is_ok()) =>
        {
            return Err(format!(
                "`{t}` has a port; {whose} is an address alone (ports have their own keys)"
            ));
        }
        Err(_) if t.chars().any(|c| c.is_ascii_alphabetic()) => {
            return Err(format!(
                "`{t}` is not an IPv4 address; {whose} must be written as one (e.g. 198.18.0.10): host names are not resolved"
            ));
        }
        Err(_) => {
            return Err(format!(
                "`{t}` is not an IPv4 address (four numbers 0-255, e.g. 198.18.0.10)"
            ));
        }
    };
    let unusable = if address.is_loopback() {
        Some("a loopback address")
    } else if address.is_unspecified() {
        Some("the unspecified address")
    } else if address.is_broadcast() {
        Some("the broadcast address")
    } else if address.is_multicast() {
        Some("a multicast address")
    } else {
        None
    };
    match unusable {
        Some(what) => Err(format!(
            "{address} is {what}; {whose} must be an address other hosts can reach"
        )),
        None => Ok(address),
    }
}

/// `200` or `200-399`, within 100 to 599.
pub fn parse_status_range(text: &str) -> Option<(u16, u16)> {
    let (lo, hi) = match text.split_once('-') {
        Some((lo, hi)) => (lo.trim().parse().ok()?, hi.trim().parse().ok()?),
        None => {
            let s = text.trim().parse().ok()?;
            (s, s)
        }
    };
    (100..=599).contains(&lo).then_some(())?;
    (lo..=599).contains(&hi).then_some((lo, hi))
}
