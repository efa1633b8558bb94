//! Parsers for the values of the environment contract, one for each type of
//! `contract::types`: a row's type chooses its parser, and a row's default is
//! parsed like a given value.
//!
//! Each returns a [`ConfigError`] that names the variable and quotes the value,
//! because the person reading it is looking at a manifest, not at this code.

use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use crate::contract::{self, types, Raw, Variable, LOCAL, PROTOCOLS};
use crate::ctnetlink::Protocol;
use crate::error::ConfigError;
use crate::flush::selection::canonical;

/// A type of the contract and what its values become.
pub trait Parse {
    type Value;
    fn parse(variable: &'static str, value: &str) -> Result<Self::Value, ConfigError>;
}

/// The variable's value, or its default when unset or blank, parsed by its
/// type's parser. A refusal quotes what was given.
pub fn read<T: Parse>(raw: &Raw, variable: &Variable<T>) -> Result<T::Value, ConfigError> {
    match raw.get(variable.name).filter(|v| !v.trim().is_empty()) {
        Some(given) => T::parse(variable.name, given),
        None => T::parse(variable.name, variable.default),
    }
}

impl Parse for types::Mode {
    type Value = contract::Mode;
    fn parse(variable: &'static str, value: &str) -> Result<contract::Mode, ConfigError> {
        contract::Mode::from_name(value).ok_or_else(|| {
            let names: Vec<&str> = contract::Mode::SPELLED.iter().map(|(_, n)| *n).collect();
            ConfigError::new(variable, value, format!("must be one of {}", names.join(", ")))
        })
    }
}

impl Parse for types::LogFormat {
    type Value = contract::LogFormat;
    fn parse(variable: &'static str, value: &str) -> Result<contract::LogFormat, ConfigError> {
        contract::LogFormat::from_name(value)
            .ok_or_else(|| ConfigError::new(variable, value, "must be json or text"))
    }
}

impl Parse for types::Targets {
    type Value = (Vec<IpAddr>, bool);
    fn parse(variable: &'static str, value: &str) -> Result<Self::Value, ConfigError> {
        targets(variable, value)
    }
}

impl Parse for types::Addresses {
    type Value = Vec<IpAddr>;
    fn parse(variable: &'static str, value: &str) -> Result<Vec<IpAddr>, ConfigError> {
        ip_list(variable, value)
    }
}

impl Parse for types::Ports {
    type Value = Vec<RangeInclusive<u16>>;
    fn parse(variable: &'static str, value: &str) -> Result<Self::Value, ConfigError> {
        port_list(variable, value)
    }
}

impl Parse for types::Protocols {
    type Value = Vec<Protocol>;
    fn parse(variable: &'static str, value: &str) -> Result<Vec<Protocol>, ConfigError> {
        protocols(variable, value)
    }
}

impl Parse for types::Bool {
    type Value = bool;
    fn parse(variable: &'static str, value: &str) -> Result<bool, ConfigError> {
        boolean(variable, value)
    }
}

impl<const MAX: u64> Parse for types::Seconds<MAX> {
    type Value = Duration;
    fn parse(variable: &'static str, value: &str) -> Result<Duration, ConfigError> {
        match value.trim().parse::<u64>() {
            Ok(secs) if secs <= MAX => Ok(Duration::from_secs(secs)),
            _ => Err(ConfigError::new(
                variable,
                value,
                format!("must be whole seconds from 0 (do not wait) to {MAX}"),
            )),
        }
    }
}

impl<const MIN: usize, const MAX: usize> Parse for types::Count<MIN, MAX> {
    type Value = usize;
    fn parse(variable: &'static str, value: &str) -> Result<usize, ConfigError> {
        match value.trim().parse::<usize>() {
            Ok(n) if (MIN..=MAX).contains(&n) => Ok(n),
            _ => {
                Err(ConfigError::new(variable, value, format!("must be a whole number from {MIN} to {MAX}")))
            }
        }
    }
}

impl Parse for types::Label {
    type Value = Option<String>;
    fn parse(variable: &'static str, value: &str) -> Result<Option<String>, ConfigError> {
        optional(value).map(|v| dns_label(variable, &v).map(|()| v)).transpose()
    }
}

impl Parse for types::Subdomain {
    type Value = Option<String>;
    fn parse(variable: &'static str, value: &str) -> Result<Option<String>, ConfigError> {
        optional(value).map(|v| dns_subdomain(variable, &v).map(|()| v)).transpose()
    }
}

impl Parse for types::Name {
    type Value = String;
    fn parse(variable: &'static str, value: &str) -> Result<String, ConfigError> {
        let name = value.trim();
        dns_subdomain(variable, name).map(|()| name.to_owned())
    }
}

impl Parse for types::Text {
    type Value = Option<String>;
    fn parse(_: &'static str, value: &str) -> Result<Option<String>, ConfigError> {
        Ok(optional(value))
    }
}

fn optional(value: &str) -> Option<String> {
    let v = value.trim();
    (!v.is_empty()).then(|| v.to_owned())
}

/// Splits on commas, trims, drops empty items (`"8125, 8126,"` is two ports).
fn items(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn ip_list(variable: &'static str, value: &str) -> Result<Vec<IpAddr>, ConfigError> {
    let (ips, local) = targets(variable, value)?;
    match local {
        true => Err(ConfigError::new(
            variable,
            value,
            format!("`{LOCAL}` is only for {}", contract::TARGET_IP.name),
        )),
        false => Ok(ips),
    }
}

/// `TARGET_IP`: addresses, and `local` for every address of the namespace
/// the flush runs in.
fn targets(variable: &'static str, value: &str) -> Result<(Vec<IpAddr>, bool), ConfigError> {
    let mut ips = Vec::new();
    let mut local = false;
    for item in items(value) {
        if item.eq_ignore_ascii_case(LOCAL) {
            local = true;
            continue;
        }
        let ip: IpAddr = item.parse().map_err(|_| {
            ConfigError::new(variable, value, format!("`{item}` is not an IPv4 or IPv6 address"))
        })?;
        let ip = canonical(ip);
        if ip.is_unspecified() {
            return Err(ConfigError::new(
                variable,
                value,
                format!("`{item}` is the unspecified address; leave the variable empty to mean any"),
            ));
        }
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    Ok((ips, local))
}

fn port_list(variable: &'static str, value: &str) -> Result<Vec<RangeInclusive<u16>>, ConfigError> {
    let mut ranges: Vec<RangeInclusive<u16>> = Vec::new();
    for item in items(value) {
        let range = match item.split_once('-') {
            Some((low, high)) => {
                let (low, high) = (port(variable, value, low)?, port(variable, value, high)?);
                if low > high {
                    return Err(ConfigError::new(
                        variable,
                        value,
                        format!("range `{item}` is inverted; write `{high}-{low}`"),
                    ));
                }
                low..=high
            }
            None => {
                let p = port(variable, value, item)?;
                p..=p
            }
        };
        ranges.push(range);
    }
    Ok(merge(ranges))
}

fn port(variable: &'static str, value: &str, item: &str) -> Result<u16, ConfigError> {
    let item = item.trim();
    match item.parse::<u32>() {
        Ok(p @ 1..=65535) => Ok(p as u16),
        Ok(_) => Err(ConfigError::new(variable, value, format!("port `{item}` is out of range 1-65535"))),
        Err(_) => Err(ConfigError::new(
            variable,
            value,
            format!("`{item}` is not a port number or a range like 8000-8100"),
        )),
    }
}

/// Sorted, non-overlapping ranges, so that `8125,8125` is one kernel dump.
/// Adjacent ports stay apart: `8125,8126` is two exact kernel filters, while
/// a merged `8125-8126` range could not be filtered in the kernel at all.
fn merge(mut ranges: Vec<RangeInclusive<u16>>) -> Vec<RangeInclusive<u16>> {
    ranges.sort_by_key(|r| *r.start());
    let mut merged: Vec<RangeInclusive<u16>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match merged.last_mut() {
            Some(last) if r.start() <= last.end() => {
                let end = (*last.end()).max(*r.end());
                *last = *last.start()..=end;
            }
            _ => merged.push(r),
        }
    }
    merged
}

fn protocols(variable: &'static str, value: &str) -> Result<Vec<Protocol>, ConfigError> {
    let mut protocols = Vec::new();
    for item in items(value) {
        let number = PROTOCOLS.iter().find(|(name, _)| name.eq_ignore_ascii_case(item)).map(|(_, n)| *n);
        let Some(protocol) = number.and_then(Protocol::from_number) else {
            return Err(ConfigError::new(
                variable,
                value,
                format!("unknown protocol `{item}`; use udp, tcp or sctp"),
            ));
        };
        if !protocols.contains(&protocol) {
            protocols.push(protocol);
        }
    }
    if protocols.is_empty() {
        return Err(ConfigError::new(variable, value, "names no protocol; use udp, tcp or sctp"));
    }
    Ok(protocols)
}

fn boolean(variable: &'static str, value: &str) -> Result<bool, ConfigError> {
    contract::truth(value).ok_or_else(|| ConfigError::new(variable, value, "must be true or false"))
}

/// A DNS-1123 label: namespaces (at most 63 characters).
fn dns_label(variable: &'static str, value: &str) -> Result<(), ConfigError> {
    let ok = value.len() <= 63
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    ok.then_some(()).ok_or_else(|| {
        ConfigError::new(
            variable,
            value,
            "must be a DNS-1123 label: lowercase letters, digits and '-', at most 63",
        )
    })
}

/// A DNS-1123 subdomain: object and node names (at most 253 characters).
fn dns_subdomain(variable: &'static str, value: &str) -> Result<(), ConfigError> {
    let ok = !value.is_empty()
        && value.len() <= 253
        && value.split('.').all(|part| !part.is_empty() && dns_label(variable, part).is_ok());
    ok.then_some(()).ok_or_else(|| {
        ConfigError::new(
            variable,
            value,
            "must be a DNS-1123 subdomain: lowercase letters, digits, '-' and '.'",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_single_list_and_ranges_merge_and_sort() {
        let got = port_list("TARGET_PORT", "8126, 8125,8000-8100,8050-8125").unwrap();
        assert_eq!(got, vec![8000..=8125, 8126..=8126]);
        let got = port_list("TARGET_PORT", "8125,8125,8126").unwrap();
        assert_eq!(got, vec![8125..=8125, 8126..=8126]);
        let got = port_list("TARGET_PORT", "53,8125").unwrap();
        assert_eq!(got, vec![53..=53, 8125..=8125]);
        assert_eq!(port_list("TARGET_PORT", "1,65535").unwrap(), vec![1..=1, 65535..=65535]);
        assert_eq!(port_list("TARGET_PORT", " , ").unwrap(), vec![]);
        // A range of one port is a range, not an inverted one.
        assert_eq!(port_list("TARGET_PORT", "8125-8125").unwrap(), vec![8125..=8125]);
    }

    #[test]
    fn ports_refuse_zero_overflow_inverted_and_garbage_naming_the_value() {
        for (value, needle) in [
            ("0", "out of range"),
            ("65536", "out of range"),
            ("8100-8000", "inverted"),
            ("udp", "not a port"),
            ("81 25", "not a port"),
            ("-5", "not a port"),
            ("99999999999", "not a port"),
        ] {
            let e = port_list("TARGET_PORT", value).unwrap_err();
            let text = e.to_string();
            assert!(text.contains("TARGET_PORT"), "{text}");
            assert!(text.contains(&format!("\"{value}\"")), "{text}");
            assert!(text.contains(needle), "{value}: {text}");
        }
    }

    #[test]
    fn ips_v4_v6_mapped_and_deduplicated() {
        let got = ip_list("TARGET_IP", "192.0.2.1, 2001:db8::1,::ffff:192.0.2.1").unwrap();
        assert_eq!(got, vec!["192.0.2.1".parse::<IpAddr>().unwrap(), "2001:db8::1".parse().unwrap()]);
        assert!(ip_list("TARGET_IP", "").unwrap().is_empty());
    }

    #[test]
    fn ips_refuse_malformed_and_unspecified() {
        for value in ["192.0.2", "10.0.0.256", "host.example", "192.0.2.1/32", "0.0.0.0", "::"] {
            let text = ip_list("KEEP_DNAT_TO", value).unwrap_err().to_string();
            assert!(text.contains("KEEP_DNAT_TO") && text.contains(value), "{text}");
        }
    }

    #[test]
    fn protocols_default_forms_and_unknown() {
        assert_eq!(
            protocols("P", "UDP,tcp, sctp,udp").unwrap(),
            vec![Protocol::Udp, Protocol::Tcp, Protocol::Sctp]
        );
        assert!(protocols("P", "icmp").unwrap_err().to_string().contains("unknown protocol `icmp`"));
        assert!(protocols("P", ",").is_err());
    }

    #[test]
    fn dns_names() {
        assert!(dns_label("V", "flush-conntrack").is_ok());
        assert!(dns_label("V", &"a".repeat(64)).is_err());
        assert!(dns_label("V", "a.b").is_err());
        assert!(dns_subdomain("V", "ip-10-0-1-7.ec2.internal").is_ok());
        assert!(dns_subdomain("V", "a..b").is_err());
        assert!(dns_subdomain("V", "").is_err());
    }

    #[test]
    fn booleans() {
        assert!(boolean("DRY_RUN", "true").unwrap());
        assert!(boolean("DRY_RUN", "TRUE").unwrap());
        assert!(!boolean("DRY_RUN", "false").unwrap());
        assert!(boolean("DRY_RUN", "").is_err(), "blank is the row's default, which read() supplies");
        assert!(boolean("DRY_RUN", "yes").unwrap() && !boolean("DRY_RUN", "0").unwrap());
        assert!(boolean("DRY_RUN", "maybe").unwrap_err().to_string().contains("\"maybe\""));
    }

    /// Every default parses, and is what a blank or unset variable gives.
    #[test]
    fn defaults_parse_and_stand_for_blank() {
        use contract::*;
        let unset = Raw::default();
        let blank: Raw = envy::from_iter(ALL.iter().map(|r| (r.name.to_owned(), " ".to_owned()))).unwrap();
        for raw in [&unset, &blank] {
            assert_eq!(read(raw, &MODE).unwrap(), Mode::Auto);
            assert_eq!(read(raw, &TARGET_IP).unwrap(), (vec![], false));
            assert_eq!(read(raw, &TARGET_PORT).unwrap(), vec![]);
            assert_eq!(read(raw, &TARGET_PROTOCOL).unwrap(), vec![Protocol::Udp]);
            assert_eq!(read(raw, &KEEP_DNAT_TO).unwrap(), Vec::<std::net::IpAddr>::new());
            assert!(!read(raw, &DRY_RUN).unwrap());
            assert!(read(raw, &KERNEL_FLUSH).unwrap());
            assert_eq!(read(raw, &LOG_FORMAT).unwrap(), LogFormat::Text);
            assert_eq!(read(raw, &RUST_LOG).unwrap().as_deref(), Some("info"));
            assert_eq!(read(raw, &NODE_NAME).unwrap(), None);
            assert_eq!(read(raw, &POD_UID).unwrap(), None);
            assert_eq!(read(raw, &POD_NAME).unwrap(), None);
            assert_eq!(read(raw, &POD_NAMESPACE).unwrap(), None);
            assert!(!read(raw, &STAY_RUNNING).unwrap());
            assert_eq!(read(raw, &TARGET_NAMESPACE).unwrap(), None);
            assert_eq!(read(raw, &JOB_TEMPLATE).unwrap(), "flush-conntrack-node");
            assert_eq!(read(raw, &WAIT_TIMEOUT).unwrap(), Duration::from_secs(120));
            assert!(!read(raw, &FAIL_OPEN).unwrap());
            assert_eq!(read(raw, &SWEEP_SELECTOR).unwrap(), None);
            assert_eq!(read(raw, &SWEEP_NAMESPACE).unwrap(), None);
            assert!(!read(raw, &FULL_SWEEP).unwrap());
            assert_eq!(read(raw, &SWEEP_CRONJOB).unwrap(), "flush-conntrack-sweep");
            assert_eq!(read(raw, &SWEEP_PARALLELISM).unwrap(), 16);
        }
    }

    #[test]
    fn bounded_numbers_take_their_bounds() {
        type Wait = types::Seconds<86400>;
        assert_eq!(Wait::parse("W", " 86400 ").unwrap(), Duration::from_secs(86_400));
        assert_eq!(Wait::parse("W", "0").unwrap(), Duration::ZERO);
        for bad in ["86401", "-1", "2m"] {
            assert_eq!(Wait::parse("W", bad).unwrap_err().value, bad);
        }
        type Parallel = types::Count<1, 256>;
        assert_eq!((Parallel::parse("P", "1").unwrap(), Parallel::parse("P", "256").unwrap()), (1, 256));
        assert!(Parallel::parse("P", "0").is_err() && Parallel::parse("P", "257").is_err());
    }
}
