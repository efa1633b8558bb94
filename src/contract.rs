//! The environment contract, as data: every variable the binary reads, with
//! its type, its default, whether a spawned flush Job carries it, and one line
//! on what it means; and the words the environment spells (modes, protocols,
//! `local`, log formats).
//!
//! A leaf: it imports nothing of this crate. Parsing a type lives in
//! `config::values`, writing a Job's variables in `cluster::job_env`; both
//! take the rows from here, so a variable has one name, one type and one
//! default. `tests/contract.rs` holds the README's configuration table and
//! the admission policy's list of flush variables to these rows.

use std::fmt;

/// What a run does, as `MODE` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Delete the stale entries in this network namespace.
    Flush,
    /// Have a node-pinned Job delete them, and wait for it.
    Spawn,
    /// One Job for every node whose agents declare hostPorts.
    Sweep,
    /// Flush when this is the node's namespace and this process may; spawn
    /// otherwise.
    Auto,
}

impl Mode {
    /// The one spelling table: parsing and writing both read it.
    pub const SPELLED: [(Mode, &'static str); 4] =
        [(Mode::Flush, "flush"), (Mode::Spawn, "spawn"), (Mode::Sweep, "sweep"), (Mode::Auto, "auto")];

    pub fn name(self) -> &'static str {
        Self::SPELLED.iter().find(|(m, _)| *m == self).map_or("", |(_, n)| n)
    }

    /// In any case, surrounding blanks ignored.
    pub fn from_name(text: &str) -> Option<Self> {
        Self::SPELLED.iter().find(|(_, n)| n.eq_ignore_ascii_case(text.trim())).map(|(m, _)| *m)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How log lines are written on stderr (`LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    pub const SPELLED: [(LogFormat, &'static str); 2] =
        [(LogFormat::Text, "text"), (LogFormat::Json, "json")];

    pub fn from_name(text: &str) -> Option<Self> {
        Self::SPELLED.iter().find(|(_, n)| n.eq_ignore_ascii_case(text.trim())).map(|(f, _)| *f)
    }
}

/// `TARGET_IP=local`: every address of the namespace the flush runs in.
pub const LOCAL: &str = "local";

/// A yes or a no, as every boolean variable spells it; `None`: neither.
pub fn truth(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

/// `TARGET_PROTOCOL`'s words, by IP protocol number.
pub const PROTOCOLS: [(&str, u8); 3] = [("udp", 17), ("tcp", 6), ("sctp", 132)];

/// The types of the contract's values. Each is parsed by one function
/// (`config::values`), which is chosen by the type, so a row's type is the
/// parser it gets.
pub mod types {
    /// `flush`, `spawn`, `sweep` or `auto`.
    pub struct Mode;
    /// Addresses and the word `local`.
    pub struct Targets;
    /// Addresses only.
    pub struct Addresses;
    /// Ports and ranges.
    pub struct Ports;
    /// `udp`, `tcp`, `sctp`, at least one.
    pub struct Protocols;
    /// `true`/`false` (also `1`/`0`, `yes`/`no`).
    pub struct Bool;
    /// Whole seconds from 0 to `MAX`.
    pub struct Seconds<const MAX: u64>;
    /// A whole number from `MIN` to `MAX`.
    pub struct Count<const MIN: usize, const MAX: usize>;
    /// A DNS-1123 label (a namespace), or nothing.
    pub struct Label;
    /// A DNS-1123 subdomain (an object or node name), or nothing.
    pub struct Subdomain;
    /// A DNS-1123 subdomain that is always there (it has a default).
    pub struct Name;
    /// `text` or `json`.
    pub struct LogFormat;
    /// Free text, or nothing: checked by whoever reads it (a label selector,
    /// a UID, a tracing filter).
    pub struct Text;

    /// How the README and the errors name a type.
    pub trait Type {
        const SPELLED: &'static str;
    }

    macro_rules! spelled {
        ($($ty:ty => $text:literal,)*) => { $(impl Type for $ty { const SPELLED: &'static str = $text; })* };
    }

    spelled! {
        Mode => "mode",
        Targets => "addresses or local",
        Addresses => "addresses",
        Ports => "ports",
        Protocols => "protocols",
        Bool => "true or false",
        Label => "DNS-1123 label",
        Subdomain => "DNS-1123 subdomain",
        Name => "DNS-1123 subdomain",
        LogFormat => "text or json",
        Text => "text",
    }

    impl<const MAX: u64> Type for Seconds<MAX> {
        const SPELLED: &'static str = "seconds";
    }

    impl<const MIN: usize, const MAX: usize> Type for Count<MIN, MAX> {
        const SPELLED: &'static str = "count";
    }
}

/// One variable of the contract; `T` is its type in [`types`].
pub struct Variable<T> {
    pub name: &'static str,
    /// Used when the variable is unset or blank; parsed like a given value.
    pub default: &'static str,
    /// A spawned flush Job receives it from spawn or sweep (the rest of a
    /// Job's environment is the template's to say).
    pub carried: bool,
    pub doc: &'static str,
    pub ty: T,
}

/// A variable with its type erased: what the README and the admission policy
/// are held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub name: &'static str,
    pub ty: &'static str,
    pub default: &'static str,
    pub carried: bool,
    pub doc: &'static str,
}

macro_rules! contract {
    ($($name:ident / $field:ident : $ty:ident $(<$($g:literal),*>)? = $default:literal, $carried:ident, $doc:literal;)*) => {
        $(
            #[doc = $doc]
            pub const $name: Variable<types::$ty $(<$($g),*>)?> = Variable {
                name: stringify!($name),
                default: $default,
                carried: Carried::$carried.carried(),
                doc: $doc,
                ty: <types::$ty $(<$($g),*>)? as Unit>::VALUE,
            };
        )*

        /// Every variable, in the README's order; any other variable is none
        /// of our business.
        pub const ALL: &[Row] = &[$(Row {
            name: stringify!($name),
            ty: <types::$ty $(<$($g),*>)? as types::Type>::SPELLED,
            default: $default,
            carried: Carried::$carried.carried(),
            doc: $doc,
        }),*];

        /// The variables as strings, filled by envy (which lowercases
        /// names: a macro cannot, so each row says its field). Everything
        /// is parsed afterwards so that an error can quote the value.
        #[derive(Debug, Default, serde::Deserialize)]
        pub struct Raw {
            $(pub $field: Option<String>,)*
        }

        impl Raw {
            /// The value as given, by the variable's name.
            pub fn get(&self, name: &str) -> Option<&str> {
                match name {
                    $(stringify!($name) => self.$field.as_deref(),)*
                    _ => None,
                }
            }
        }
    };
}

/// Whether a spawned flush Job carries a variable, as the rows say it.
enum Carried {
    Job,
    Not,
}

impl Carried {
    const fn carried(self) -> bool {
        matches!(self, Carried::Job)
    }
}

/// The marker types are unit structs; `VALUE` lets a row hold one.
trait Unit {
    const VALUE: Self;
}

macro_rules! unit {
    ($($ty:ident),*) => { $(impl Unit for types::$ty { const VALUE: Self = types::$ty; })* };
}

unit!(Mode, Targets, Addresses, Ports, Protocols, Bool, Label, Subdomain, Name, LogFormat, Text);

impl<const MAX: u64> Unit for types::Seconds<MAX> {
    const VALUE: Self = types::Seconds;
}

impl<const MIN: usize, const MAX: usize> Unit for types::Count<MIN, MAX> {
    const VALUE: Self = types::Count;
}

contract! {
    MODE / mode: Mode = "auto", Job,
        "What a run does: flush, spawn, sweep or auto.";
    TARGET_IP / target_ip: Targets = "", Job,
        "Destination addresses of the stale flows; local for every address of the namespace the flush runs in.";
    TARGET_PORT / target_port: Ports = "", Job,
        "Destination ports and ranges (8125,8000-8100).";
    TARGET_PROTOCOL / target_protocol: Protocols = "udp", Job,
        "udp, tcp, sctp, or a list.";
    KEEP_DNAT_TO / keep_dnat_to: Addresses = "", Job,
        "Pod IPs whose flows are live: their entries stay.";
    DRY_RUN / dry_run: Bool = "false", Job,
        "List what would be deleted; delete nothing.";
    KERNEL_FLUSH / kernel_flush: Bool = "true", Not,
        "May finish large selections with the kernel's filtered flush.";
    LOG_FORMAT / log_format: LogFormat = "text", Not,
        "text or json, on stderr.";
    RUST_LOG / rust_log: Text = "info", Not,
        "The log level and filter.";
    NODE_NAME / node_name: Subdomain = "", Not,
        "The node a spawned Job is pinned to (downward API spec.nodeName).";
    POD_UID / pod_uid: Text = "", Not,
        "The trigger or sweep pod's UID: which run made a Job.";
    POD_NAME / pod_name: Subdomain = "", Not,
        "The pod's own name: Events about the flush go on it.";
    POD_NAMESPACE / pod_namespace: Label = "", Not,
        "The pod's own namespace.";
    STAY_RUNNING / stay_running: Bool = "false", Not,
        "After the outcome, run until terminated (a trigger beside the agent).";
    TARGET_NAMESPACE / target_namespace: Label = "", Not,
        "Namespace of the Job template and the Jobs; empty: the pod's own.";
    JOB_TEMPLATE / job_template: Name = "flush-conntrack-node", Not,
        "Name of the template CronJob.";
    WAIT_TIMEOUT / wait_timeout: Seconds<86400> = "120", Not,
        "Seconds to wait for the Job(s); 0: do not wait.";
    FAIL_OPEN / fail_open: Bool = "false", Not,
        "A failed spawn or sweep still exits 0.";
    SWEEP_SELECTOR / sweep_selector: Text = "", Not,
        "Label selector of the agents' pods.";
    SWEEP_NAMESPACE / sweep_namespace: Label = "", Not,
        "Namespace of the agents' pods; empty: all.";
    FULL_SWEEP / full_sweep: Bool = "false", Not,
        "Every node with an agent, not only those that changed.";
    SWEEP_CRONJOB / sweep_cronjob: Name = "flush-conntrack-sweep", Not,
        "The CronJob whose last success an incremental sweep starts from.";
    SWEEP_PARALLELISM / sweep_parallelism: Count<1, 256> = "16", Not,
        "Flush Jobs a sweep runs at once.";
}

/// The names of the variables a spawned flush Job carries, in the order a
/// Job lists them.
pub fn carried() -> impl Iterator<Item = &'static str> {
    ALL.iter().filter(|row| row.carried).map(|row| row.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_field_names_envy_fills() {
        assert_eq!(TARGET_IP.name, "TARGET_IP");
        assert_eq!(ALL.len(), 23);
        let raw: Raw =
            envy::from_iter(ALL.iter().map(|r| (r.name.to_owned(), format!("{}!", r.name)))).unwrap();
        for row in ALL {
            assert_eq!(raw.get(row.name), Some(format!("{}!", row.name).as_str()), "{}", row.name);
        }
        assert_eq!(raw.get("OTHER"), None);
    }

    #[test]
    fn rows_carry_type_default_and_job() {
        let row = |name: &str| *ALL.iter().find(|r| r.name == name).unwrap();
        assert_eq!(
            row("WAIT_TIMEOUT"),
            Row {
                name: "WAIT_TIMEOUT",
                ty: "seconds",
                default: "120",
                carried: false,
                doc: WAIT_TIMEOUT.doc
            }
        );
        assert_eq!((row("TARGET_PROTOCOL").ty, row("TARGET_PROTOCOL").default), ("protocols", "udp"));
        assert_eq!(
            carried().collect::<Vec<_>>(),
            ["MODE", "TARGET_IP", "TARGET_PORT", "TARGET_PROTOCOL", "KEEP_DNAT_TO", "DRY_RUN"]
        );
        assert!(ALL.iter().all(|r| !r.doc.is_empty()));
    }

    #[test]
    fn modes_spelled_once() {
        for (mode, name) in Mode::SPELLED {
            assert_eq!(mode.name(), name);
            assert_eq!(Mode::from_name(&format!(" {} ", name.to_uppercase())), Some(mode));
            assert_eq!(mode.to_string(), name);
        }
        assert_eq!(Mode::from_name("nuke"), None);
        assert_eq!(LogFormat::from_name("JSON"), Some(LogFormat::Json));
        assert_eq!(LogFormat::from_name("xml"), None);
    }
}
