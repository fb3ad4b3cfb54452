//! Checks the YAML tree against the key table (`keys`): unknown, missing and repeated keys,
//! values of the wrong kind or out of range. Every problem is collected, each at the key or
//! value it is about, in the words of the policy, with a guess at what was meant.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr},
};

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
        _ => {
            out.push(at(
                node,
                format!(
                    "{} is a block of keys ({}), not {}",
                    section.noun,
                    key_list(section),
                    node.describe()
                ),
            ));
            return;
        }
    };
    let mut seen: HashMap<&str, &Node> = HashMap::new();
    // Required keys a mistyped key was probably meant as: not reported missing as well.
    let mut meant = Vec::new();
    for (key_node, value) in entries {
        let name = match &key_node.value {
            Value::Null => {
                out.push(at(key_node, "a key is missing before this `:`"));
                continue;
            }
            other => match other.scalar_text() {
                Some(name) => name,
                None => {
                    out.push(at(key_node, "a key must be a name, not a list or a block"));
                    continue;
                }
            },
        };
        let Some(key) = section.keys.iter().find(|k| k.name == name) else {
            let (message, guess) = unknown_key(&name, section);
            meant.extend(guess);
            out.push(at(key_node, message));
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
        if !seen.contains_key(key.name) && !meant.contains(&key.name) {
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
/// another block's, or else what this block has; and the key meant, if any.
fn unknown_key(name: &str, section: &Section) -> (String, Option<&'static str>) {
    let shown = name.escape_debug();
    if name.contains(char::is_whitespace) {
        return (
            format!(
                "unknown key `{shown}`: keys have no spaces (is the line indented with something other than plain spaces?)"
            ),
            None,
        );
    }
    let names = section.keys.iter().map(|k| k.name);
    if let Some(meant) = did_you_mean(name, names) {
        return (
            format!(
                "unknown key `{shown}` in {}; did you mean `{meant}`?",
                section.noun
            ),
            Some(meant),
        );
    }
    if let Some(home) = SECTIONS
        .iter()
        .find(|s| s.keys.iter().any(|k| k.name == name))
    {
        return (
            format!(
                "`{shown}` is a key of {} ({}), not of {}",
                home.noun, home.path, section.noun
            ),
            None,
        );
    }
    (
        format!(
            "unknown key `{shown}` in {}; it has: {}",
            section.noun,
            key_list(section)
        ),
        None,
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
        let message = if key.required {
            format!("`{name}` needs a value: {}", key.doc)
        } else {
            format!("`{name}` has no value; give one or leave the key out")
        };
        out.push(at(node, message));
        return;
    }
    let problem: Option<String> = match &key.kind {
        Kind::Section(inner) => {
            section(node, inner, out);
            None
        }
        Kind::Sections(inner) => match &node.value {
            // A required list must have something in it (interfaces, reals).
            Value::List(items) if items.is_empty() && key.required => Some(format!(
                "`{name}` needs at least one entry, not an empty list"
            )),
            Value::List(items) => {
                for item in items {
                    section(item, inner, out);
                }
                None
            }
            _ => Some(format!(
                "`{name}` is a list, each entry starting with `- `; not {}",
                node.describe()
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
            node,
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
        match port(item, "each port") {
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
fn whole(node: &Node) -> Option<i128> {
    match &node.value {
        Value::Whole(n) => Some(*n),
        Value::Text(t) => t.parse().ok(),
        _ => None,
    }
}

fn port(node: &Node, what: &str) -> Result<u16, String> {
    whole(node)
        .and_then(|n| u16::try_from(n).ok())
        .filter(|&p| p > 0)
        .ok_or_else(|| {
            format!(
                "{what} must be a whole number from 1 to 65535, not {}",
                node.describe()
            )
        })
}

/// Text meant as one line of printable characters: a newline would forge lines of `status`
/// and of these messages, a CR or LF inject HTTP headers.
fn printable(t: &str) -> bool {
    !t.chars().any(char::is_control)
}

/// Checks one scalar value against its kind; the error is the whole message.
/// `whose` names the key with its block, for addresses: "the `vip` of a service".
fn scalar(node: &Node, name: &str, whose: &str, kind: &Kind) -> Result<(), String> {
    let value = &node.value;
    let text = || match value {
        Value::Text(t) => Ok(t.as_str()),
        _ => Err(format!("`{name}` is text, not {}", node.describe())),
    };
    // An address is read as the file spells it, whatever YAML made of it (`10.1` is a number).
    let spelled = || match value {
        Value::Text(t) => Ok(t.clone()),
        _ if !node.raw.is_empty() => Ok(node.raw.clone()),
        _ => Err(format!("`{name}` is an address, not {}", node.describe())),
    };
    match kind {
        Kind::Text => match value.scalar_text() {
            Some(t) if !t.trim().is_empty() && printable(&t) => Ok(()),
            Some(_) => Err(format!(
                "`{name}` must be one line of printable text, not {}",
                node.describe()
            )),
            None => Err(format!("`{name}` is text, not {}", node.describe())),
        },
        Kind::Name => match value.scalar_text() {
            Some(t) if !t.trim().is_empty() && printable(&t) => Ok(()),
            _ => Err(format!(
                "`{name}` must be a name (printable, on one line), not {}",
                node.describe()
            )),
        },
        Kind::Interface => {
            let t = value.scalar_text().unwrap_or_default();
            if t.is_empty()
                || t.len() >= libc::IFNAMSIZ
                || t.contains(|c: char| c == '/' || c.is_whitespace() || c.is_control())
            {
                Err(format!(
                    "{} is not an interface name (1 to 15 characters, no spaces or /)",
                    node.describe()
                ))
            } else {
                Ok(())
            }
        }
        Kind::Address => address(&spelled()?, whose).map(drop),
        Kind::AddressPort => {
            let t = spelled()?;
            let t = t.as_str();
            match split_address_port(t) {
                Some((a, p)) => {
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
                    format!(
                        "{e} (`{name}` is ADDRESS or ADDRESS:PORT, e.g. 198.18.0.99:8080 or [2001:db8::99]:8080)"
                    )
                }),
            }
        }
        Kind::Port => port(node, &format!("`{name}`")).map(drop),
        Kind::Whole { min, max } => whole(node)
            .filter(|n| (*min as i128..=*max as i128).contains(n))
            .map(drop)
            .ok_or_else(|| {
                format!(
                    "`{name}` must be a whole number from {min} to {max}, not {}",
                    node.describe()
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
                        "`{name}` needs a unit: `{n}s` (units: ms, s, m, h, d)"
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
                node.describe()
            ))
        }
        Kind::Flag => match value {
            Value::Bool(_) => Ok(()),
            Value::Text(t) if t == "true" || t == "false" => {
                Err(format!("`{name}` is true or false, written without quotes"))
            }
            _ => Err(format!(
                "`{name}` is true or false, not {}",
                node.describe()
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
            t if t.contains(|c: char| c.is_whitespace() || c.is_control()) => Err(format!(
                "`{name}` must have no spaces or control characters (write a space as %20)"
            )),
            t if t.starts_with('/') => Ok(()),
            t => Err(format!("`{name}` must start with /, e.g. /{t}")),
        },
        Kind::Host => match text()? {
            t if t.is_empty() || t.contains(|c: char| c.is_whitespace() || c.is_control()) => {
                Err(format!(
                    "`{name}` is a host name (no spaces or control characters), not {}",
                    node.describe()
                ))
            }
            _ => Ok(()),
        },
        Kind::StatusRange => match value.scalar_text() {
            Some(t) if parse_status_range(&t).is_some() => Ok(()),
            _ => Err(format!(
                "`{name}` is an HTTP status or a range like 200-399, not {}",
                node.describe()
            )),
        },
        Kind::Pattern => regex::Regex::new(text()?).map(drop).map_err(|e| {
            // The regex crate explains over several lines; the last says what is wrong.
            let text = e.to_string();
            let why = text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            format!("`{name}` is not a valid regular expression: {}", why.trim())
        }),
        Kind::Ports | Kind::Command | Kind::Section(_) | Kind::Sections(_) => {
            unreachable!("handled by value()")
        }
    }
}

/// An IPv4 or IPv6 address other hosts can reach; other notations get a message that names
/// them.
fn address(text: &str, whose: &str) -> Result<IpAddr, String> {
    let shown = text.escape_debug().to_string();
    let t = shown.as_str();
    if text.trim() != text {
        return Err(format!(
            "`{t}` has spaces around it; {whose} is the address alone"
        ));
    }
    let address = match text.parse::<IpAddr>() {
        Ok(a) => a,
        Err(_) if t.parse::<std::net::SocketAddrV6>().is_ok() => {
            return Err(format!(
                "`{t}` has a port; {whose} is an address alone (ports have their own keys)"
            ));
        }
        Err(_) if t.starts_with('[') && t.ends_with(']') => {
            return Err(format!(
                "`{t}`: write {whose} without brackets (brackets only go around an IPv6 address followed by a port)"
            ));
        }
        Err(_) if t.contains('/') => {
            return Err(format!(
                "`{t}` is a prefix; {whose} is a single address, without /length"
            ));
        }
        Err(_) if t.contains('%') => {
            return Err(format!(
                "`{t}` has a zone (%interface); {whose} must be a global address, not a link-local one"
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
        Err(_) if t.contains(':') => {
            return Err(format!(
                "`{t}` is not an IPv6 address (eight groups of hex digits, :: for a run of zeros, e.g. 2001:db8::10)"
            ));
        }
        Err(_) if t.chars().any(|c| c.is_ascii_alphabetic()) => {
            return Err(format!(
                "`{t}` is not an IP address; {whose} must be written as one (e.g. 198.18.0.10 or 2001:db8::10): host names are not resolved"
            ));
        }
        Err(_) => {
            return Err(format!(
                "`{t}` is not an IPv4 address (four numbers 0-255, e.g. 198.18.0.10)"
            ));
        }
    };
    let unusable = match address {
        IpAddr::V4(v4) => {
            let first = v4.octets()[0];
            if v4.is_loopback() {
                Some("a loopback address")
            } else if first == 0 {
                Some("in 0.0.0.0/8 (this network, no host's address)")
            } else if v4.is_broadcast() {
                Some("the broadcast address")
            } else if v4.is_multicast() {
                Some("a multicast address")
            } else if first >= 240 {
                Some("in 240.0.0.0/4 (reserved)")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return Err(format!(
                    "{address} is an IPv4-mapped address; write the IPv4 address itself ({v4})"
                ));
            }
            if v6.is_unspecified() {
                Some("the unspecified address")
            } else if v6.is_loopback() {
                Some("the loopback address")
            } else if v6.is_multicast() {
                Some("a multicast address")
            } else if v6.is_unicast_link_local() {
                Some("link-local (fe80::/10), valid on one link only")
            } else if v6.segments()[..6] == [0; 6] {
                Some("in ::/96 (IPv4-compatible, deprecated)")
            } else {
                None
            }
        }
    };
    match unusable {
        Some(what) => Err(format!(
            "{address} is {what}; {whose} must be an address other hosts can reach"
        )),
        None => Ok(address),
    }
}

/// `ADDRESS:PORT` (IPv6: `[ADDRESS]:PORT`) split, if it has a port.
pub fn split_address_port(text: &str) -> Option<(&str, &str)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (address, port) = rest.split_once("]:")?;
        return Some((address, port));
    }
    match text.rsplit_once(':') {
        Some((a, p)) if a.parse::<Ipv4Addr>().is_ok() => Some((a, p)),
        _ => None,
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
