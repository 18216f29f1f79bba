//! The `ts3ab-lb` binary: parses arguments and starts things. Nothing else lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ts3ab_lb::config::Config;

/// mimalloc: the router allocates per request (parsing, planning); measured +8-12 % throughput
/// over glibc malloc in the proxy-overhead benchmark (BENCHMARKS.md, tuning).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "ts3ab-lb",
    version,
    about = "One TS3AudioBot API in front of many TS3AudioBot nodes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum KeyAction {
    /// Create a key in the store (the router must be stopped: the embedded store is locked
    /// while it runs; use the admin API then). Prints the secret once.
    Create {
        /// The key name (the Basic user id).
        #[arg(long)]
        name: String,
        /// `user` or `admin`.
        #[arg(long, default_value = "user")]
        role: String,
        /// The YAML configuration file (for the store's location).
        #[arg(short, long, default_value = "conf/ts3ab-lb.yaml")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum StoreAction {
    /// Copy a cluster's state (every record and the id counter) from one store to another,
    /// then verify counts and a checksum read back from the target. Stop the routers first.
    Copy {
        /// The source: a config file (its `storage`), a mongodb:// URI (database from its
        /// path, default ts3ab_lb) or an embedded store's directory.
        #[arg(long)]
        from: String,
        /// The target, named the same ways.
        #[arg(long)]
        to: String,
        /// Replace what the target holds (refused otherwise when it is not empty).
        #[arg(long)]
        overwrite: bool,
    },
    /// Write a new random secrets key (for `secrets.key_file`) to a new file, mode 0600.
    NewKey {
        /// The file to create (an existing one is never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Seal every secret of the configured store with a new key (stop the routers first),
    /// then point `secrets.key_file` at the new file. Safe to run again if cut short.
    Rekey {
        /// The YAML configuration file (its `storage` and current `secrets` key).
        #[arg(short, long, default_value = "conf/ts3ab-lb.yaml")]
        config: PathBuf,
        /// The new key's file (made with `store new-key`).
        #[arg(long)]
        new_key_file: PathBuf,
    },
}

#[derive(Subcommand)]
enum CertAction {
    /// Write a self-signed certificate and key (cert.pem, key.pem 0600) for trying HTTPS
    /// locally; use a real certificate (Let's Encrypt) in production.
    SelfSigned {
        /// A host name or IP address it is valid for (repeat for more; the first is the
        /// common name).
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        /// The directory to write into (created 0700 if missing; existing files are kept).
        #[arg(long, default_value = "tls")]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum Command {
    /// TLS certificates.
    Cert {
        #[command(subcommand)]
        action: CertAction,
    },
    /// Manage the store.
    Store {
        #[command(subcommand)]
        action: StoreAction,
    },
    /// Manage API keys.
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
    /// Run the router (production entry).
    Serve {
        /// The YAML configuration file.
        #[arg(short, long, default_value = "conf/ts3ab-lb.yaml")]
        config: PathBuf,
        /// Take over from the running router (graceful upgrade): start this, then send the
        /// old process SIGQUIT; its listening sockets and store are handed over.
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate a configuration file and exit (1 with a message naming the bad key).
    CheckConfig {
        /// The YAML configuration file.
        #[arg(short, long, default_value = "conf/ts3ab-lb.yaml")]
        config: PathBuf,
    },
    /// Run the router on the embedded store with three local fake TS3AudioBot nodes.
    #[cfg(feature = "demo")]
    Demo {
        /// Where the router listens.
        #[arg(long, default_value = "127.0.0.1:58913")]
        listen: String,
        /// Where the admin panel and API listen.
        #[arg(long, default_value = "127.0.0.1:58914")]
        admin: String,
        /// Directory of the demo's embedded store.
        #[arg(long, default_value = "data/demo")]
        data: PathBuf,
    },
}

fn load(path: &PathBuf) -> Result<Config, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Config::from_yaml(&text, &|k| std::env::var(k).ok())
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn main() -> ExitCode {
    ts3ab_lb::server::logging::init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::CheckConfig { config } => load(&config)
            .and_then(|c| {
                // The key file is read at start, not by the (pure) config check: read it too.
                ts3ab_lb::server::sync::secrets_key(&c)
                    .map(|_| c)
                    .map_err(|e| format!("{}: secrets: {e}", config.display()))
            })
            .map(|c| {
            println!(
                "{}: ok ({} nodes, {} keys, listening on {})",
                config.display(),
                c.nodes.len(),
                c.keys.len(),
                c.listen
            );
        }),
        Command::Serve { config, upgrade } => load(&config).and_then(|c| {
            ts3ab_lb::server::serve(c, ts3ab_lb::server::Launch { upgrade })
                .map_err(|e| e.to_string())
        }),
        #[cfg(feature = "demo")]
        Command::Demo {
            listen,
            admin,
            data,
        } => ts3ab_lb::server::demo::run(&listen, &admin, &data),
        Command::Cert {
            action: CertAction::SelfSigned { hosts, out },
        } => ts3ab_lb::server::cert::self_signed(&hosts, &out).map(|w| {
            println!("certificate: {}", w.cert.display());
            println!("private key: {} (mode 0600)", w.key.display());
            println!("set `tls: {{ cert: {}, key: {} }}` (or `admin.tls`) and trust the certificate in your client", w.cert.display(), w.key.display());
        }),
        Command::Store {
            action:
                StoreAction::Copy {
                    from,
                    to,
                    overwrite,
                },
        } => ts3ab_lb::server::store_cmd::run(&from, &to, overwrite),
        Command::Store {
            action: StoreAction::NewKey { out },
        } => ts3ab_lb::server::secrets_cmd::new_key(&out).map(|id| {
            println!("wrote secrets key {id} to {}", out.display());
        }),
        Command::Store {
            action:
                StoreAction::Rekey {
                    config,
                    new_key_file,
                },
        } => load(&config).and_then(|c| {
            let r =
                ts3ab_lb::server::secrets_cmd::rekey(&c, &new_key_file, &mut |l| eprintln!("{l}"))?;
            println!(
                "sealed {} records with key {} (was {}); now set secrets.key_file: {} in {}",
                r.records,
                r.new,
                r.old.as_deref().unwrap_or("plain text"),
                new_key_file.display(),
                config.display()
            );
            Ok(())
        }),
        Command::Key {
            action: KeyAction::Create { name, role, config },
        } => load(&config).and_then(|c| {
            let secret = ts3ab_lb::server::keys::create_key(&c, &name, &role)?;
            println!("key `{name}` ({role}) created; its secret (shown only now):");
            println!("{secret}");
            println!("use it as Basic {name}:<secret>, or log in to the admin panel with it");
            Ok(())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
