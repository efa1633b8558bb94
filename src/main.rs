#![forbid(unsafe_code)]

use std::process::ExitCode;

use flush_conntrack::config::Settings;
use flush_conntrack::error::{report, Error, EXIT_CONFIG};
use flush_conntrack::{logging, run};

fn main() -> ExitCode {
    // Nothing is opened before the whole configuration has been read and
    // accepted.
    let configured = Settings::from_env().and_then(|s| Ok((logging::filter(&s.log_filter)?, s)));
    let (filter, settings) = match configured {
        Ok(ok) => ok,
        Err(e) => {
            eprintln!("flush-conntrack: {}", report(&Error::Config(e)));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    logging::init(settings.log_format, filter);
    match run(&settings.plan) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(exit_code = e.exit_code(), "{}", report(&e));
            ExitCode::from(e.exit_code())
        }
    }
}
