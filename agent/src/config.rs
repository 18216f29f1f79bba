//! The agent's command line and the configuration made from it.
//!
//! Owns: the flags and their defaults (documented in README.md), reading secrets from
//! environment variables, parsing the TS3AudioBot URL, and the checks that name the bad flag.
//! Does not own: what the settings are used for (the other modules), or logging setup (`main`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::procfs::ProcessLocator;

/// The default listen address: loopback, port 58915 (TS3AudioBot's API is 58913 and the
/// router's admin API 58914, so the agent takes the next one).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:58915";

/// The command line of `ts3ab-lb-agent`.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "ts3ab-lb-agent",
    version,
    about = "Serves a node's host and TS3AudioBot metrics (/metrics, Prometheus text) and a JSON summary (/summary)"
)]
pub struct Args {
    /// Address to listen on. Bind to the node's private address, not a public one.
    #[arg(long, default_value = DEFAULT_LISTEN, value_name = "ADDR:PORT")]
    pub listen: SocketAddr,

    /// The local TS3AudioBot Web API (http only; it is expected on the same host).
    #[arg(long, default_value = "http://127.0.0.1:58913", value_name = "URL")]
    pub api: String,

    /// TS3AudioBot API token as `uid:token`, sent as `Authorization: Basic`. Visible in the
    /// process list; prefer --api-auth-env.
    #[arg(long, value_name = "UID:TOKEN", conflicts_with = "api_auth_env")]
    pub api_auth: Option<String>,

    /// Name of an environment variable holding the TS3AudioBot API token as `uid:token`.
    #[arg(long, value_name = "VAR")]
    pub api_auth_env: Option<String>,

    /// Timeout of one TS3AudioBot API request, in seconds.
    #[arg(long, default_value_t = 2.0, value_name = "SECONDS")]
    pub api_timeout: f64,

    /// File holding the TS3AudioBot process's pid (instead of looking it up by name).
    #[arg(long, value_name = "FILE", conflicts_with = "process_name")]
    pub pid_file: Option<PathBuf>,

    /// Name of the TS3AudioBot process: its `comm`, or the file name of its first two
    /// command-line arguments without `.dll`/`.exe` (so `dotnet TS3AudioBot.dll` matches).
    #[arg(long, default_value = "TS3AudioBot", value_name = "NAME")]
    pub process_name: String,

    /// Name of an environment variable holding the bearer token that /metrics and /summary
    /// then require (`Authorization: Bearer <token>`). Without it they are open.
    #[arg(long, value_name = "VAR")]
    pub token_env: Option<String>,

    /// Root of the proc file system (tests point it at a fixture directory).
    #[arg(long, default_value = "/proc", value_name = "DIR")]
    pub proc_root: PathBuf,

    /// How often CPU times are sampled for the summary's CPU ratios, in seconds.
    #[arg(long, default_value_t = 5.0, value_name = "SECONDS")]
    pub sample_interval: f64,
}

/// A bad flag or a missing secret.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--api` is not `http://host:port[/path]`.
    #[error("--api {url:?}: {why}")]
    Api {
        /// The value given.
        url: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// An environment variable named by a flag is unset, empty or not Unicode.
    #[error("{flag} {var}: environment variable is unset or empty")]
    Env {
        /// The flag naming the variable.
        flag: &'static str,
        /// The variable.
        var: String,
    },
    /// `--api-auth` (or its variable) is not `uid:token`.
    #[error("{flag}: expected uid:token")]
    ApiAuth {
        /// The flag it came from.
        flag: &'static str,
    },
    /// A duration flag is not a positive finite number of seconds.
    #[error("{flag} {value}: expected a positive number of seconds")]
    Duration {
        /// The flag.
        flag: &'static str,
        /// The value given.
        value: f64,
    },
}

/// Where the TS3AudioBot API is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiUrl {
    /// `host:port` to connect to (and to send as `Host`).
    pub authority: String,
    /// Path prefix without a trailing `/` (empty for the root).
    pub base_path: String,
}

/// The agent's settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Listen address.
    pub listen: SocketAddr,
    /// TS3AudioBot API location.
    pub api: ApiUrl,
    /// `uid:token` for `Authorization: Basic`.
    pub api_auth: Option<String>,
    /// Timeout of one API request.
    pub api_timeout: Duration,
    /// How to find the TS3AudioBot process.
    pub process: ProcessLocator,
    /// Bearer token required on /metrics and /summary.
    pub token: Option<String>,
    /// Proc root.
    pub proc_root: PathBuf,
    /// CPU sampling interval.
    pub sample_interval: Duration,
}

impl ApiUrl {
    /// Parses `http://host[:port][/path]` (port 80 when absent).
    pub fn parse(url: &str) -> Result<ApiUrl, ConfigError> {
        let bad = |why| ConfigError::Api {
            url: url.to_string(),
            why,
        };
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some(_) => return Err(bad("only http:// is supported (the API is local)")),
            None => return Err(bad("expected http://host:port")),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(bad("expected host:port without user info"));
        }
        if path.contains('?') || path.contains('#') {
            return Err(bad("no query or fragment allowed"));
        }
        let has_port = match authority.rfind(':') {
            Some(i) => !authority[i..].contains(']'),
            None => false,
        };
        let authority = if has_port {
            let port = &authority[authority.rfind(':').map_or(0, |i| i + 1)..];
            if port.parse::<u16>().is_err() {
                return Err(bad("bad port"));
            }
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let mut base_path = path.trim_end_matches('/').to_string();
        if base_path.ends_with("/api") {
            // `--api http://host:58913/api` means the same as without `/api`.
            base_path.truncate(base_path.len() - 4);
        }
        Ok(ApiUrl {
            authority,
            base_path,
        })
    }
}

fn env_secret(flag: &'static str, var: &str) -> Result<String, ConfigError> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(v),
        _ => Err(ConfigError::Env {
            flag,
            var: var.to_string(),
        }),
    }
}

fn seconds(flag: &'static str, value: f64) -> Result<Duration, ConfigError> {
    if value.is_finite() && value > 0.0 && value < 1e9 {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(ConfigError::Duration { flag, value })
    }
}

impl Config {
    /// Checks the flags and reads the secrets they name from the environment.
    pub fn from_args(args: Args) -> Result<Config, ConfigError> {
        let api = ApiUrl::parse(&args.api)?;
        let api_auth = match (&args.api_auth, &args.api_auth_env) {
            (Some(a), _) => Some(("--api-auth", a.clone())),
            (None, Some(var)) => Some(("--api-auth-env", env_secret("--api-auth-env", var)?)),
            (None, None) => None,
        };
        if let Some((flag, a)) = &api_auth {
            if !a.contains(':') {
                return Err(ConfigError::ApiAuth { flag });
            }
        }
        let token = match &args.token_env {
            Some(var) => Some(env_secret("--token-env", var)?),
            None => None,
        };
        let process = match args.pid_file {
            Some(f) => ProcessLocator::PidFile(f),
            None => ProcessLocator::Name(args.process_name),
        };
        Ok(Config {
            listen: args.listen,
            api,
            api_auth: api_auth.map(|(_, a)| a),
            api_timeout: seconds("--api-timeout", args.api_timeout)?,
            process,
            token,
            proc_root: args.proc_root,
            sample_interval: seconds("--sample-interval", args.sample_interval)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Result<Config, String> {
        let mut v = vec!["ts3ab-lb-agent"];
        v.extend_from_slice(extra);
        let a = Args::try_parse_from(v).map_err(|e| e.to_string())?;
        Config::from_args(a).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults() {
        let c = args(&[]).expect("defaults parse");
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.api.authority, "127.0.0.1:58913");
        assert_eq!(c.api.base_path, "");
        assert_eq!(c.process, ProcessLocator::Name("TS3AudioBot".into()));
        assert_eq!(c.proc_root, PathBuf::from("/proc"));
        assert_eq!(c.token, None);
        assert_eq!(c.api_auth, None);
        assert_eq!(c.sample_interval, Duration::from_secs(5));
    }

    #[test]
    fn api_urls() {
        let p = |u: &str| ApiUrl::parse(u).map(|a| (a.authority, a.base_path));
        assert_eq!(p("http://h:1").ok(), Some(("h:1".into(), "".into())));
        assert_eq!(p("http://h").ok(), Some(("h:80".into(), "".into())));
        assert_eq!(
            p("http://h:1/ts3/api/").ok(),
            Some(("h:1".into(), "/ts3".into()))
        );
        assert_eq!(p("http://[::1]").ok(), Some(("[::1]:80".into(), "".into())));
        assert_eq!(
            p("http://[::1]:9").ok(),
            Some(("[::1]:9".into(), "".into()))
        );
        for bad in [
            "https://h:1",
            "h:1",
            "http://",
            "http://u@h:1",
            "http://h:x",
            "http://h:1/?a",
        ] {
            let e = p(bad).expect_err(bad).to_string();
            assert!(e.starts_with("--api "), "{bad}: {e}");
        }
    }

    #[test]
    fn errors_name_the_flag() {
        let e = args(&["--api-auth", "nocolon"]).expect_err("bad auth");
        assert!(e.contains("--api-auth"), "{e}");
        let e = args(&["--token-env", "TS3AB_AGENT_TEST_SURELY_UNSET"]).expect_err("unset");
        assert!(
            e.contains("--token-env TS3AB_AGENT_TEST_SURELY_UNSET"),
            "{e}"
        );
        let e = args(&["--api-auth-env", "TS3AB_AGENT_TEST_SURELY_UNSET"]).expect_err("unset");
        assert!(e.contains("--api-auth-env"), "{e}");
        let e = args(&["--sample-interval", "0"]).expect_err("zero");
        assert!(e.contains("--sample-interval"), "{e}");
        let e = args(&["--listen", "nope"]).expect_err("bad listen");
        assert!(e.contains("--listen"), "{e}");
        let e = args(&["--pid-file", "/x", "--process-name", "y"]).expect_err("both");
        assert!(
            e.contains("--pid-file") || e.contains("--process-name"),
            "{e}"
        );
    }

    #[test]
    fn pid_file_and_auth() {
        let c = args(&["--pid-file", "/run/ts3ab.pid", "--api-auth", "u:t"]).expect("parses");
        assert_eq!(c.process, ProcessLocator::PidFile("/run/ts3ab.pid".into()));
        assert_eq!(c.api_auth.as_deref(), Some("u:t"));
    }
}
