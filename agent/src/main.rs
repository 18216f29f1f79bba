//! The `ts3ab-lb-agent` binary: parses the flags, sets up logging, and runs the agent until
//! SIGTERM or SIGINT. Everything else lives in the library (see `lib.rs`).

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

use ts3ab_lb_agent::config::{Args, Config};

fn main() -> ExitCode {
    let args = Args::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let result = Config::from_args(args)
        .map_err(|e| e.to_string())
        .and_then(|c| ts3ab_lb_agent::run_until_signal(c).map_err(|e| e.to_string()));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ts3ab-lb-agent: {e}");
            ExitCode::from(2)
        }
    }
}
