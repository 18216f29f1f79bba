//! The Prometheus text exposition (format 0.0.4) of a [`Snapshot`].
//!
//! Owns: metric names, help texts, types and labels, escaping of label values and help text,
//! and which series are left out when their source is down.
//! Does not own: gathering the numbers (`snapshot`), or serving them (`http`).
//!
//! Host metrics use node_exporter's names and semantics exactly (so stock dashboards work);
//! everything else is prefixed `ts3ab_agent_`. Labels are bounded: CPU numbers, CPU modes,
//! network device names, bot states and the version; never bot ids, paths or addresses.

use std::fmt::Write;

use crate::snapshot::Snapshot;

/// The `Content-Type` of the rendered text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The node_exporter memory fields exported, as `node_memory_<field>_bytes`.
const MEMINFO_FIELDS: [&str; 7] = [
    "MemTotal",
    "MemFree",
    "MemAvailable",
    "Buffers",
    "Cached",
    "SwapTotal",
    "SwapFree",
];

/// Escapes a label value: backslash, double quote and line feed.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes help text: backslash and line feed.
pub fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Formats a sample value the way Prometheus parses it (`+Inf`, `-Inf`, `NaN` included).
fn value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// Builds exposition text one metric family at a time.
#[derive(Default)]
pub struct Writer {
    out: String,
}

impl Writer {
    /// Starts a family: its `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) -> &mut Self {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        self
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: f64) -> &mut Self {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(val));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", value(v));
        self
    }

    /// A family with one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: &str, help: &str, v: f64) -> &mut Self {
        self.family(name, kind, help).sample(name, &[], v)
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }
}

/// Renders a snapshot.
pub fn render(s: &Snapshot) -> String {
    let mut w = Writer::default();
    host(&mut w, s);
    agent(&mut w, s);
    w.finish()
}

fn host(w: &mut Writer, s: &Snapshot) {
    if let Some(stat) = &s.stat {
        if !stat.cpus.is_empty() {
            w.family(
                "node_cpu_seconds_total",
                "counter",
                "Seconds the CPUs spent in each mode.",
            );
            for (n, t) in &stat.cpus {
                let cpu = n.to_string();
                for (mode, v) in t.modes() {
                    w.sample(
                        "node_cpu_seconds_total",
                        &[("cpu", &cpu), ("mode", mode)],
                        v,
                    );
                }
            }
        }
        if let Some(b) = stat.boot_time {
            w.single(
                "node_boot_time_seconds",
                "gauge",
                "Node boot time, in unixtime.",
                b as f64,
            );
        }
    }
    for field in MEMINFO_FIELDS {
        if let Some(v) = s.meminfo.get(field) {
            let name = format!("node_memory_{field}_bytes");
            w.single(
                &name,
                "gauge",
                &format!("Memory information field {field}_bytes."),
                *v as f64,
            );
        }
    }
    if let Some(l) = &s.load {
        w.single("node_load1", "gauge", "1m load average.", l.one);
        w.single("node_load5", "gauge", "5m load average.", l.five);
        w.single("node_load15", "gauge", "15m load average.", l.fifteen);
    }
    if !s.net.is_empty() {
        type Field = fn(&crate::procfs::NetDev) -> u64;
        let families: [(&str, &str, Field); 4] = [
            (
                "node_network_receive_bytes_total",
                "Network device statistic receive_bytes.",
                |d| d.receive_bytes,
            ),
            (
                "node_network_receive_packets_total",
                "Network device statistic receive_packets.",
                |d| d.receive_packets,
            ),
            (
                "node_network_transmit_bytes_total",
                "Network device statistic transmit_bytes.",
                |d| d.transmit_bytes,
            ),
            (
                "node_network_transmit_packets_total",
                "Network device statistic transmit_packets.",
                |d| d.transmit_packets,
            ),
        ];
        for (name, help, get) in families {
            w.family(name, "counter", help);
            for d in &s.net {
                w.sample(name, &[("device", &d.device)], get(d) as f64);
            }
        }
    }
}

fn agent(w: &mut Writer, s: &Snapshot) {
    let p = s.process.as_ref();
    w.single(
        "ts3ab_agent_process_up",
        "gauge",
        "Whether the TS3AudioBot process was found and read (1) or not (0).",
        if p.is_some() { 1.0 } else { 0.0 },
    );
    if let Some(p) = p {
        w.single(
            "ts3ab_agent_process_cpu_seconds_total",
            "counter",
            "User and system CPU time of the TS3AudioBot process, in seconds.",
            p.cpu_seconds,
        );
        if let Some(rss) = p.resident_bytes {
            w.single(
                "ts3ab_agent_process_resident_memory_bytes",
                "gauge",
                "Resident memory of the TS3AudioBot process, in bytes.",
                rss as f64,
            );
        }
        if let Some(vs) = p.virtual_bytes {
            w.single(
                "ts3ab_agent_process_virtual_memory_bytes",
                "gauge",
                "Virtual memory of the TS3AudioBot process, in bytes.",
                vs as f64,
            );
        }
        if let Some(t) = p.threads {
            w.single(
                "ts3ab_agent_process_threads",
                "gauge",
                "Threads of the TS3AudioBot process.",
                t as f64,
            );
        }
        if let Some(start) = s.process_start_time() {
            w.single(
                "ts3ab_agent_process_start_time_seconds",
                "gauge",
                "Start time of the TS3AudioBot process, in seconds since the epoch.",
                start,
            );
        }
    }
    w.single(
        "ts3ab_agent_api_up",
        "gauge",
        "Whether the local TS3AudioBot API answered bot/list (1) or not (0).",
        if s.bots.is_some() { 1.0 } else { 0.0 },
    );
    if let Some(b) = &s.bots {
        w.family(
            "ts3ab_agent_bots",
            "gauge",
            "Bots on this node by status (from bot/list; offline = templates not running).",
        );
        for (status, n) in b.by_status() {
            w.sample("ts3ab_agent_bots", &[("status", status)], n as f64);
        }
    }
    w.single(
        "ts3ab_agent_scrape_duration_seconds",
        "gauge",
        "Time this scrape took to gather its values, in seconds.",
        s.duration.as_secs_f64(),
    );
    w.family(
        "ts3ab_agent_build_info",
        "gauge",
        "The agent's version; the value is always 1.",
    )
    .sample(
        "ts3ab_agent_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bots::BotCounts;
    use crate::procfs::{parse_meminfo, parse_net_dev, parse_stat, LoadAvg, ProcessStat};

    #[test]
    fn escaping() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
        assert_eq!(escape_help("a\\b\nc \"q\""), "a\\\\b\\nc \"q\"");
        let mut w = Writer::default();
        w.family("m", "gauge", "two\nlines")
            .sample("m", &[("device", "we\"ird\\dev\n")], 1.5);
        assert_eq!(
            w.finish(),
            "# HELP m two\\nlines\n# TYPE m gauge\nm{device=\"we\\\"ird\\\\dev\\n\"} 1.5\n"
        );
    }

    #[test]
    fn values() {
        assert_eq!(value(1.0), "1");
        assert_eq!(value(0.25), "0.25");
        assert_eq!(value(f64::NAN), "NaN");
        assert_eq!(value(f64::INFINITY), "+Inf");
        assert_eq!(value(1e21), "1000000000000000000000");
    }

    fn full() -> Snapshot {
        Snapshot {
            stat: parse_stat(
                "cpu 2 0 0 8 0 0 0 0\ncpu0 1 0 0 4 0 0 0 0\ncpu1 1 0 0 4 0 0 0 0\nbtime 100\n",
            ),
            meminfo: parse_meminfo("MemTotal: 1000 kB\nMemAvailable: 500 kB\nActive: 3 kB\n"),
            load: Some(LoadAvg {
                one: 0.5,
                five: 0.25,
                fifteen: 0.125,
            }),
            net: parse_net_dev("eth0: 10 1 0 0 0 0 0 0 20 2 0 0 0 0 0 0\n"),
            process: Some(ProcessStat {
                pid: 42,
                cpu_seconds: 3.5,
                resident_bytes: Some(4096),
                virtual_bytes: None,
                start_since_boot: 10.0,
                threads: Some(3),
            }),
            bots: Some(BotCounts {
                offline: 1,
                connecting: 2,
                connected: 3,
            }),
            ..Snapshot::default()
        }
    }

    #[test]
    fn full_snapshot_renders_every_family_with_help_and_type() {
        let text = render(&full());
        for line in [
            "node_cpu_seconds_total{cpu=\"1\",mode=\"user\"} 0.01",
            "node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} 0.04",
            "node_boot_time_seconds 100",
            "node_memory_MemTotal_bytes 1024000",
            "node_memory_MemAvailable_bytes 512000",
            "node_load1 0.5",
            "node_load15 0.125",
            "node_network_receive_bytes_total{device=\"eth0\"} 10",
            "node_network_transmit_bytes_total{device=\"eth0\"} 20",
            "ts3ab_agent_process_up 1",
            "ts3ab_agent_process_cpu_seconds_total 3.5",
            "ts3ab_agent_process_resident_memory_bytes 4096",
            "ts3ab_agent_process_start_time_seconds 110",
            "ts3ab_agent_api_up 1",
            "ts3ab_agent_bots{status=\"offline\"} 1",
            "ts3ab_agent_bots{status=\"connecting\"} 2",
            "ts3ab_agent_bots{status=\"connected\"} 3",
            &format!(
                "ts3ab_agent_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            ),
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(
            !text.contains("node_memory_Active_bytes"),
            "only the listed fields"
        );
        assert!(!text.contains("42"), "no pid anywhere");
        // Every sample's family has HELP and TYPE before it, exactly once.
        let mut declared = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap_or_default();
                assert!(declared.insert(name.to_string()), "{name} declared twice");
                assert!(
                    text.contains(&format!("# HELP {name} ")),
                    "{name} without HELP"
                );
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap_or_default();
                assert!(declared.contains(name), "{name} sampled before its TYPE");
            }
        }
    }

    #[test]
    fn down_sources_say_so_and_leave_their_series_out() {
        let s = Snapshot {
            process: None,
            bots: None,
            ..full()
        };
        let text = render(&s);
        assert!(text.contains("\nts3ab_agent_process_up 0\n"), "{text}");
        assert!(text.contains("\nts3ab_agent_api_up 0\n"), "{text}");
        assert!(!text.contains("ts3ab_agent_bots"), "{text}");
        assert!(
            !text.contains("ts3ab_agent_process_cpu_seconds_total"),
            "{text}"
        );
        assert!(text.contains("node_load1 0.5"), "host metrics stay");
        // Nothing readable at all still renders the agent's own families.
        let text = render(&Snapshot::default());
        assert!(text.contains("ts3ab_agent_build_info"));
        assert!(!text.contains("node_"));
    }
}
