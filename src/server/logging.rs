//! Setting up the log: `RUST_LOG` as the operator gives it, except where a library would
//! print secrets.
//!
//! Owns: the log filter. Pingora logs whole request and response heads and bodies at `debug`
//! and `trace` (its HTTP/1 client and server, its HTTP apps, the proxy): node tokens in the upstream
//! `Authorization`, client keys, server passwords and identity keys in targets and bodies.
//! Those modules are capped at `info` whatever `RUST_LOG` says (checked by
//! `tests/leaks.rs`, which runs a workload at `RUST_LOG=trace`). Does not own: what the
//! router's own modules log (they never log a secret).

use log::LevelFilter;

/// Modules that print request heads or bodies below `info`.
pub const CAPPED: [&str; 2] = ["pingora_core", "pingora_proxy"];

/// Starts the logger (`RUST_LOG`, default `info`, with [`CAPPED`] at most `info`).
pub fn init() {
    let spec = std::env::var("RUST_LOG").unwrap_or_default();
    let mut b = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    // Added after the environment's directives, so these win for their modules even when
    // RUST_LOG names them.
    for m in CAPPED {
        b.filter_module(m, capped_level(&spec, m));
    }
    // Failover, fencing and polls are told apart by milliseconds.
    b.format_timestamp_millis();
    b.init();
}

/// The level `RUST_LOG` (`spec`) gives module `module` (its own directive, else the global
/// one, else `info`), but never more than `info`.
fn capped_level(spec: &str, module: &str) -> LevelFilter {
    let spec = spec.split('/').next().unwrap_or_default();
    let mut global = None;
    let mut own = None;
    for d in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        match d.split_once('=') {
            None => {
                if let Ok(l) = d.parse::<LevelFilter>() {
                    global = Some(l);
                }
            }
            Some((name, level)) if module.starts_with(name) => {
                if let Ok(l) = level.parse::<LevelFilter>() {
                    own = Some(l);
                }
            }
            Some(_) => {}
        }
    }
    own.or(global)
        .unwrap_or(LevelFilter::Info)
        .min(LevelFilter::Info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_modules_never_go_below_info_but_follow_a_quieter_setting() {
        let m = "pingora_proxy";
        assert_eq!(capped_level("trace", m), LevelFilter::Info);
        assert_eq!(capped_level("", m), LevelFilter::Info);
        assert_eq!(capped_level("warn", m), LevelFilter::Warn);
        assert_eq!(
            capped_level("warn,pingora_proxy=trace", m),
            LevelFilter::Info
        );
        assert_eq!(
            capped_level("debug,pingora_proxy=error", m),
            LevelFilter::Error
        );
        assert_eq!(capped_level("off", m), LevelFilter::Off);
        assert_eq!(capped_level("ts3ab_lb=trace", m), LevelFilter::Info);
    }
}
