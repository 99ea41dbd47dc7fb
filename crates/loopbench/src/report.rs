//! Results of a scenario: rows of figures, the table printed for people
//! and the JSON written for tools.
//!
//! Every row has a usertcp figure and a Linux-kernel figure measured in the
//! same run, optionally a stock-smoltcp figure (network scenarios), and an
//! optional target with its PASS/MISS verdict. A figure that could not be
//! measured is [`Figure::NotAvailable`] or [`Figure::Error`] with the reason, printed as `n/a` or
//! `error` with the reason in the notes under the table, and written as
//! `null` in JSON.
//!
//! `vs_kernel` (and `vs_smoltcp`) is always "how many times better usertcp
//! is": above 1 is better, whichever way the metric points. For a cost
//! (nanoseconds, bytes) it is `kernel / usertcp`; for a rate (requests or
//! connections per second) it is `usertcp / kernel`.

use std::fmt::Write as _;

use crate::machine::Machine;
use crate::measure::Config;

/// What a row measures, with its unit and its good direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Nanoseconds per operation (one call, or one cycle of calls).
    NsPerOp,
    /// Nanoseconds per event returned by a wait.
    NsPerEvent,
    /// Nanoseconds from a wake-up to the woken thread running (half a
    /// ping-pong round trip).
    NsPerWakeup,
    /// Bytes of memory per registered watch.
    BytesPerWatch,
    /// A ratio of two figures of the same side (lower is better).
    Ratio,
    /// A ratio of two figures of the same side (higher is better), e.g.
    /// the rate with idle connections over the rate without.
    Fraction,
    /// Request/response round trips per second (higher is better).
    ReqPerSec,
    /// Connections per second (higher is better).
    ConnsPerSec,
    /// Bytes of memory (RSS) per connection.
    BytesPerConn,
    /// Bytes of memory (RSS), in total.
    Bytes,
    /// A count of things reached (e.g. connections established).
    Count,
    /// Payload throughput, gigabits per second (higher is better).
    GbitPerSec,
}

impl Metric {
    /// The name used in JSON.
    pub fn key(self) -> &'static str {
        match self {
            Metric::NsPerOp => "ns_per_op",
            Metric::NsPerEvent => "ns_per_event",
            Metric::NsPerWakeup => "ns_per_wakeup",
            Metric::BytesPerWatch => "bytes_per_watch",
            Metric::Ratio => "ratio",
            Metric::Fraction => "fraction",
            Metric::ReqPerSec => "req_per_s",
            Metric::ConnsPerSec => "conns_per_s",
            Metric::BytesPerConn => "bytes_per_conn",
            Metric::Bytes => "bytes",
            Metric::Count => "count",
            Metric::GbitPerSec => "gbit_per_s",
        }
    }

    /// The short unit shown in the table.
    pub fn unit(self) -> &'static str {
        match self {
            Metric::NsPerOp => "ns/op",
            Metric::NsPerEvent => "ns/event",
            Metric::NsPerWakeup => "ns/wake",
            Metric::BytesPerWatch => "B/watch",
            Metric::Ratio => "ratio",
            Metric::Fraction => "fraction",
            Metric::ReqPerSec => "req/s",
            Metric::ConnsPerSec => "conn/s",
            Metric::BytesPerConn => "B/conn",
            Metric::Bytes => "bytes",
            Metric::Count => "count",
            Metric::GbitPerSec => "Gbit/s",
        }
    }

    /// True when a higher figure is better (rates); false for costs.
    pub fn higher_is_better(self) -> bool {
        matches!(
            self,
            Metric::Fraction
                | Metric::ReqPerSec
                | Metric::ConnsPerSec
                | Metric::Count
                | Metric::GbitPerSec
        )
    }
}

/// One figure of one side.
#[derive(Clone, Debug, PartialEq)]
pub enum Figure {
    /// A measured value.
    Value(f64),
    /// Not measured here, and why (e.g. `/proc/slabinfo` unreadable).
    NotAvailable(String),
    /// The measurement failed, with the error.
    Error(String),
}

impl Figure {
    /// The value, if measured.
    pub fn value(&self) -> Option<f64> {
        match self {
            Figure::Value(v) if v.is_finite() => Some(*v),
            _ => None,
        }
    }

    fn cell(&self) -> String {
        match self {
            Figure::Value(v) => format_number(*v),
            Figure::NotAvailable(_) => "n/a".to_owned(),
            Figure::Error(_) => "error".to_owned(),
        }
    }

    fn reason(&self) -> Option<String> {
        match self {
            Figure::Value(_) => None,
            Figure::NotAvailable(why) => Some(format!("n/a: {why}")),
            Figure::Error(err) => Some(format!("error: {err}")),
        }
    }
}

/// A goal for a row, checked on this run's figures.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// usertcp at least this many times better than the kernel
    /// (`vs_kernel >= x`; 1.0 means "no worse than the kernel").
    VsKernelAtLeast(f64),
    /// usertcp's own figure at most this value.
    UsertcpAtMost(f64),
    /// usertcp's own figure at least this value.
    UsertcpAtLeast(f64),
    /// usertcp at least `kernel` times better than the kernel and at least
    /// `smoltcp` times better than stock smoltcp.
    VsBothAtLeast {
        /// The least `vs_kernel`.
        kernel: f64,
        /// The least `vs_smoltcp`.
        smoltcp: f64,
    },
}

impl Target {
    fn label(self, metric: Metric) -> String {
        match self {
            Target::VsKernelAtLeast(1.0) => "no worse than kernel".to_owned(),
            Target::VsKernelAtLeast(x) => format!(">= {}x kernel", format_number(x)),
            Target::UsertcpAtMost(x) => match metric {
                Metric::Ratio | Metric::Fraction => format!("<= {}", format_number(x)),
                _ => format!("<= {} {}", format_number(x), metric.unit()),
            },
            Target::UsertcpAtLeast(x) => match metric {
                Metric::Ratio | Metric::Fraction | Metric::Count => {
                    format!(">= {}", format_number(x))
                }
                _ => format!(">= {} {}", format_number(x), metric.unit()),
            },
            Target::VsBothAtLeast { kernel, smoltcp } => format!(
                ">= {}x kernel, >= {}x smoltcp",
                format_number(kernel),
                format_number(smoltcp)
            ),
        }
    }
}

/// The verdict of a row's target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The target is met.
    Pass,
    /// The target is missed.
    Miss,
    /// A figure the target needs is missing.
    Unknown,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Miss => "MISS",
            Verdict::Unknown => "n/a",
        }
    }
}

/// One line of a report.
#[derive(Clone, Debug)]
pub struct Row {
    /// What was measured, e.g. `ctl ADD (1k eventfds)`.
    pub workload: String,
    /// The metric and its unit.
    pub metric: Metric,
    /// usertcp's figure.
    pub usertcp: Figure,
    /// The Linux kernel's figure, same work, same run.
    pub kernel: Figure,
    /// Stock smoltcp's figure, for the scenarios where it applies.
    pub smoltcp: Option<Figure>,
    /// The goal, if the row has one.
    pub target: Option<Target>,
    /// False when the two figures were measured on different set-ups (e.g.
    /// the kernel could not open as many descriptors): no ratio is given.
    pub comparable: bool,
    /// Like `comparable`, for the stock-smoltcp figure.
    pub smoltcp_comparable: bool,
    /// Remarks printed under the table (and kept in JSON).
    pub notes: Vec<String>,
    /// Where the row sits on a chart's x axis (e.g. its connection count):
    /// rows with one are drawn as curves by `--plot` (see `crate::plot`).
    pub x: Option<f64>,
}

impl Row {
    /// A row comparing usertcp with the kernel.
    pub fn new(
        workload: impl Into<String>,
        metric: Metric,
        usertcp: Figure,
        kernel: Figure,
    ) -> Row {
        Row {
            workload: workload.into(),
            metric,
            usertcp,
            kernel,
            smoltcp: None,
            target: None,
            comparable: true,
            smoltcp_comparable: true,
            notes: Vec::new(),
            x: None,
        }
    }

    /// The row placed at `x` on a chart's x axis (see [`Row::x`]).
    pub fn at(mut self, x: f64) -> Row {
        self.x = Some(x);
        self
    }

    /// The row with a stock-smoltcp figure.
    pub fn smoltcp(mut self, figure: Figure) -> Row {
        self.smoltcp = Some(figure);
        self
    }

    /// The row with a target.
    pub fn target(mut self, target: Target) -> Row {
        self.target = Some(target);
        self
    }

    /// The row with a note.
    pub fn note(mut self, note: impl Into<String>) -> Row {
        self.notes.push(note.into());
        self
    }

    /// How many times better usertcp is than the kernel (above 1 is better).
    pub fn vs_kernel(&self) -> Option<f64> {
        if !self.comparable {
            return None;
        }
        better_by(self.metric, self.usertcp.value()?, self.kernel.value()?)
    }

    /// How many times better usertcp is than stock smoltcp.
    pub fn vs_smoltcp(&self) -> Option<f64> {
        if !self.smoltcp_comparable {
            return None;
        }
        let smoltcp = self.smoltcp.as_ref()?.value()?;
        better_by(self.metric, self.usertcp.value()?, smoltcp)
    }

    /// The verdict of the target, if there is one.
    pub fn verdict(&self) -> Option<Verdict> {
        let met = match self.target? {
            Target::VsKernelAtLeast(x) => self.vs_kernel().map(|r| r >= x),
            Target::UsertcpAtMost(x) => self.usertcp.value().map(|v| v <= x),
            Target::UsertcpAtLeast(x) => self.usertcp.value().map(|v| v >= x),
            Target::VsBothAtLeast { kernel, smoltcp } => self
                .vs_kernel()
                .zip(self.vs_smoltcp())
                .map(|(k, s)| k >= kernel && s >= smoltcp),
        };
        Some(match met {
            Some(true) => Verdict::Pass,
            Some(false) => Verdict::Miss,
            None => Verdict::Unknown,
        })
    }
}

fn better_by(metric: Metric, usertcp: f64, other: f64) -> Option<f64> {
    let ratio = if metric.higher_is_better() {
        usertcp / other
    } else {
        other / usertcp
    };
    ratio.is_finite().then_some(ratio)
}

/// The results of one scenario.
#[derive(Clone, Debug)]
pub struct Report {
    /// The scenario's name (`epoll`), also the JSON file's stem.
    pub scenario: &'static str,
    /// A one-line title for the table.
    pub title: String,
    /// The machine it ran on.
    pub machine: Machine,
    /// The measurement settings.
    pub config: Config,
    /// The rows, in order.
    pub rows: Vec<Row>,
    /// Lines printed under the table (method, fairness, caveats).
    pub footer: Vec<String>,
}

impl Report {
    /// The human-readable table, with the machine line, the notes and the
    /// footer.
    pub fn table(&self) -> String {
        let with_smoltcp = self.rows.iter().any(|row| row.smoltcp.is_some());
        let mut header = vec!["workload", "unit", "usertcp", "kernel", "vs kernel"];
        if with_smoltcp {
            header.extend(["smoltcp", "vs smoltcp"]);
        }
        header.extend(["target", "result"]);
        let mut notes: Vec<String> = Vec::new();
        let mut lines: Vec<Vec<String>> = Vec::new();
        for row in &self.rows {
            let mut marks = String::new();
            let mut add_note = |text: String| {
                notes.push(text);
                let _ = write!(marks, " [{}]", notes.len());
            };
            for note in &row.notes {
                add_note(note.clone());
            }
            if let Some(why) = row.usertcp.reason() {
                add_note(format!("usertcp {why}"));
            }
            if let Some(why) = row.kernel.reason() {
                add_note(format!("kernel {why}"));
            }
            if let Some(why) = row.smoltcp.as_ref().and_then(Figure::reason) {
                add_note(format!("smoltcp {why}"));
            }
            let mut line = vec![
                format!("{}{}", row.workload, marks),
                row.metric.unit().to_owned(),
                row.usertcp.cell(),
                row.kernel.cell(),
                format_ratio(row.vs_kernel()),
            ];
            if with_smoltcp {
                line.push(row.smoltcp.as_ref().map_or("-".to_owned(), Figure::cell));
                line.push(format_ratio(row.vs_smoltcp()));
            }
            line.push(row.target.map_or("-".to_owned(), |t| t.label(row.metric)));
            line.push(row.verdict().map_or("-", Verdict::label).to_owned());
            lines.push(line);
        }
        let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
        for line in &lines {
            for (width, cell) in widths.iter_mut().zip(line) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let render = |cells: &[String]| {
            let mut out = String::new();
            for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
                // Text columns (workload, unit, target, result) align left.
                let left = i < 2 || i + 2 >= cells.len();
                if left {
                    let _ = write!(out, "{cell:<width$}  ");
                } else {
                    let _ = write!(out, "{cell:>width$}  ");
                }
            }
            out.trim_end().to_owned()
        };
        let mut out = String::new();
        let _ = writeln!(out, "{}", self.title);
        let _ = writeln!(out, "machine: {}", self.machine.summary());
        let _ = writeln!(out, "build: {}", build_summary());
        let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
        let head = render(&header);
        let _ = writeln!(out, "{head}");
        let _ = writeln!(out, "{}", "-".repeat(head.chars().count()));
        for line in &lines {
            let _ = writeln!(out, "{}", render(line));
        }
        let verdicts: Vec<Verdict> = self.rows.iter().filter_map(Row::verdict).collect();
        let count = |v: Verdict| verdicts.iter().filter(|&&x| x == v).count();
        let _ = writeln!(
            out,
            "targets: {} PASS, {} MISS, {} n/a",
            count(Verdict::Pass),
            count(Verdict::Miss),
            count(Verdict::Unknown)
        );
        for (i, note) in notes.iter().enumerate() {
            let _ = writeln!(out, "[{}] {note}", i + 1);
        }
        let _ = writeln!(
            out,
            "vs kernel = how many times better usertcp is (kernel / usertcp for costs); above 1 is better."
        );
        for line in &self.footer {
            let _ = writeln!(out, "{line}");
        }
        out
    }

    /// The report as JSON: `{"scenario", "machine", "config", "results": [...]}`.
    pub fn json(&self) -> String {
        let m = &self.machine;
        let loadavg = match m.loadavg {
            Some(l) => format!(
                "[{}, {}, {}]",
                json_num(l[0]),
                json_num(l[1]),
                json_num(l[2])
            ),
            None => "null".to_owned(),
        };
        let mut out = String::new();
        let _ = writeln!(out, "{{");
        let _ = writeln!(out, "  \"scenario\": {},", json_str(self.scenario));
        let _ = writeln!(
            out,
            "  \"machine\": {{\"cpu_model\": {}, \"arch\": {}, \"cores_online\": {}, \
             \"cores_usable\": {}, \"kernel\": {}, \"loadavg\": {}}},",
            json_str(&m.cpu_model),
            json_str(&m.arch),
            m.cores_online,
            m.cores_usable,
            json_str(&m.kernel),
            loadavg
        );
        let _ = writeln!(
            out,
            "  \"config\": {{\"quick\": {}, \"runs\": {}, \"run_ms\": {}, \"warmup_ms\": {}, \
             \"warmup_iters\": {}, \"trace_events\": {}}},",
            self.config.quick,
            self.config.runs,
            self.config.run_time.as_millis(),
            self.config.warmup.as_millis(),
            self.config.warmup_iters,
            netstack::TRACE_EVENTS
        );
        let _ = writeln!(out, "  \"results\": [");
        for (i, row) in self.rows.iter().enumerate() {
            let mut fields = vec![
                format!("\"workload\": {}", json_str(&row.workload)),
                format!("\"metric\": {}", json_str(row.metric.key())),
                format!("\"usertcp\": {}", json_opt(row.usertcp.value())),
                format!("\"kernel\": {}", json_opt(row.kernel.value())),
                format!("\"vs_kernel\": {}", json_opt(row.vs_kernel())),
            ];
            if let Some(smoltcp) = &row.smoltcp {
                fields.push(format!("\"smoltcp\": {}", json_opt(smoltcp.value())));
                fields.push(format!("\"vs_smoltcp\": {}", json_opt(row.vs_smoltcp())));
            }
            fields.push(format!(
                "\"target\": {}",
                row.target
                    .map_or("null".to_owned(), |t| json_str(&t.label(row.metric)))
            ));
            fields.push(format!(
                "\"result\": {}",
                row.verdict()
                    .map_or("null".to_owned(), |v| json_str(v.label()))
            ));
            let mut notes: Vec<String> = row.notes.clone();
            for (side, figure) in [
                ("usertcp", Some(&row.usertcp)),
                ("kernel", Some(&row.kernel)),
            ]
            .into_iter()
            .chain(std::iter::once(("smoltcp", row.smoltcp.as_ref())))
            {
                if let Some(why) = figure.and_then(Figure::reason) {
                    notes.push(format!("{side} {why}"));
                }
            }
            if let Some(x) = row.x {
                fields.push(format!("\"x\": {}", json_num(x)));
            }
            if !notes.is_empty() {
                let list: Vec<String> = notes.iter().map(|n| json_str(n)).collect();
                fields.push(format!("\"notes\": [{}]", list.join(", ")));
            }
            let comma = if i + 1 < self.rows.len() { "," } else { "" };
            let _ = writeln!(out, "    {{{}}}{comma}", fields.join(", "));
        }
        let _ = writeln!(out, "  ]");
        let _ = writeln!(out, "}}");
        out
    }
}

/// A figure for the table: more decimals for small numbers.
pub fn format_number(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".to_owned();
    }
    let abs = v.abs();
    if abs >= 1000.0 {
        format!("{v:.0}")
    } else if abs >= 10.0 {
        format!("{v:.1}")
    } else if abs >= 0.01 || v == 0.0 {
        format!("{v:.2}")
    } else {
        // Tiny ratios (stock smoltcp with 100k idle sockets) keep two
        // significant digits instead of printing as 0.00.
        format!("{v:.1e}")
    }
}

fn format_ratio(ratio: Option<f64>) -> String {
    ratio.map_or("-".to_owned(), |r| format!("{}x", format_number(r)))
}

/// The build line of every report: a release build or not, and whether
/// netstack's trace events are compiled in (`--features trace`).
fn build_summary() -> String {
    let profile = if cfg!(debug_assertions) {
        "debug build (figures are not meaningful)"
    } else {
        "release build"
    };
    let trace = if netstack::TRACE_EVENTS {
        "netstack/eventpoll trace events compiled in (disabled: no subscriber)"
    } else {
        "netstack/eventpoll trace events compiled out (`--features trace` compiles them in)"
    };
    format!("{profile}; {trace}")
}

fn json_num(v: f64) -> String {
    if v.is_finite() && v != 0.0 && v.abs() < 0.001 {
        // Tiny ratios keep four significant digits (a valid JSON number).
        format!("{v:.3e}")
    } else if v.is_finite() {
        // Three decimals are plenty for nanoseconds and bytes.
        let rounded = (v * 1000.0).round() / 1000.0;
        format!("{rounded}")
    } else {
        "null".to_owned()
    }
}

fn json_opt(v: Option<f64>) -> String {
    v.map_or("null".to_owned(), json_num)
}

/// A JSON string literal with the escapes RFC 8259 requires.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Machine {
        Machine {
            cpu_model: "Test \"CPU\"".to_owned(),
            cores_online: 2,
            cores_usable: 2,
            kernel: "Linux 6.0".to_owned(),
            arch: "x86_64".to_owned(),
            loadavg: None,
        }
    }

    fn report(rows: Vec<Row>) -> Report {
        Report {
            scenario: "test",
            title: "test".to_owned(),
            machine: machine(),
            config: Config::quick(),
            rows,
            footer: vec!["footer".to_owned()],
        }
    }

    #[test]
    fn ratios_and_verdicts() {
        let row = Row::new(
            "a",
            Metric::NsPerOp,
            Figure::Value(10.0),
            Figure::Value(150.0),
        )
        .target(Target::VsKernelAtLeast(10.0));
        assert_eq!(row.vs_kernel(), Some(15.0));
        assert_eq!(row.verdict(), Some(Verdict::Pass));
        let row = Row::new(
            "b",
            Metric::BytesPerWatch,
            Figure::Value(250.0),
            Figure::NotAvailable("no slabinfo".into()),
        )
        .target(Target::UsertcpAtMost(200.0));
        assert_eq!(row.vs_kernel(), None);
        assert_eq!(row.verdict(), Some(Verdict::Miss));
        let row = Row::new(
            "c",
            Metric::NsPerOp,
            Figure::Error("EBADF".into()),
            Figure::Value(1.0),
        )
        .target(Target::VsKernelAtLeast(1.0));
        assert_eq!(row.verdict(), Some(Verdict::Unknown));
    }

    #[test]
    fn table_and_json_carry_figures_notes_and_nulls() {
        let mut incomparable =
            Row::new("d", Metric::Ratio, Figure::Value(1.1), Figure::Value(1.0)).note("fewer fds");
        incomparable.comparable = false;
        let r = report(vec![
            Row::new(
                "a",
                Metric::NsPerOp,
                Figure::Value(10.0),
                Figure::Value(150.0),
            )
            .target(Target::VsKernelAtLeast(10.0)),
            Row::new(
                "b",
                Metric::BytesPerWatch,
                Figure::Value(120.0),
                Figure::NotAvailable("no slabinfo".into()),
            ),
            incomparable,
        ]);
        let table = r.table();
        assert!(table.contains("15.0x"), "{table}");
        assert!(table.contains("PASS"), "{table}");
        assert!(table.contains("kernel n/a: no slabinfo"), "{table}");
        assert!(
            table.contains("[2] fewer fds") || table.contains("fewer fds"),
            "{table}"
        );
        let json = r.json();
        assert!(
            json.contains("\"cpu_model\": \"Test \\\"CPU\\\"\""),
            "{json}"
        );
        assert!(
            json.contains("\"usertcp\": 10, \"kernel\": 150, \"vs_kernel\": 15"),
            "{json}"
        );
        assert!(
            json.contains("\"kernel\": null, \"vs_kernel\": null"),
            "{json}"
        );
        assert!(!json.contains("smoltcp"), "{json}");
    }

    #[test]
    fn json_carries_throughput_rows_and_chart_positions() {
        let r = report(vec![
            Row::new(
                "bulk",
                Metric::GbitPerSec,
                Figure::Value(30.0),
                Figure::Value(20.0),
            )
            .smoltcp(Figure::Value(10.0)),
            Row::new(
                "1k connections",
                Metric::ReqPerSec,
                Figure::Value(4e5),
                Figure::NotAvailable("RLIMIT_NOFILE".into()),
            )
            .at(1000.0),
        ]);
        let json = r.json();
        assert!(
            json.contains(
                "\"metric\": \"gbit_per_s\", \"usertcp\": 30, \"kernel\": 20, \"vs_kernel\": 1.5, \
                 \"smoltcp\": 10, \"vs_smoltcp\": 3"
            ),
            "{json}"
        );
        assert!(json.contains("\"x\": 1000"), "{json}");
        assert_eq!(json.matches("\"x\":").count(), 1, "{json}");
        assert!(r.table().contains("Gbit/s"));
    }

    #[test]
    fn tiny_figures_keep_their_digits() {
        assert_eq!(json_num(3.5354e-5), "3.535e-5");
        assert_eq!(json_num(0.25), "0.25");
        assert_eq!(format_number(7.1e-4), "7.1e-4");
        assert_eq!(format_number(0.0), "0.00");
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_str("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
    }
}
