//! Turns the raw results of `benches/run` into a markdown report and an SVG chart.
//!
//! usage: bench-report --tsv RESULTS.tsv --meta META.tsv --md OUT.md --svg OUT.svg
//!
//! RESULTS.tsv: `round  target  scenario  metric  value` (one measurement per line).
//! META.tsv:    `key  value` lines, printed in order as the "Machine and settings" table.
//!              `targets` (space-separated, e.g. "edge nginx haproxy") fixes the column order.
//!
//! Every figure is the median over rounds; ratios are ratios of medians, for every pair of targets.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::collections::BTreeMap;
use std::error::Error;
use std::fmt::Write as _;

type Res<T> = Result<T, Box<dyn Error>>;

/// (scenario, title). Throughput scenarios first, then memory.
const SCENARIOS: &[(&str, &str)] = &[
    ("http", "HTTP/1.1 keep-alive, plain"),
    ("https", "HTTP/1.1 keep-alive over TLS"),
    ("tls_new", "new TLS connection per request, full handshake"),
    (
        "tls_resume",
        "new TLS connection per request, resumed handshake",
    ),
    ("h2", "HTTP/2 over TLS"),
    ("mem_idle", "memory, idle (just started)"),
];

/// (metric, label, lower-is-better)
const METRICS: &[(&str, &str, bool)] = &[
    ("rps", "req/s ↑", false),
    ("p50_ms", "p50 ms ↓", true),
    ("p99_ms", "p99 ms ↓", true),
    ("p999_ms", "p99.9 ms ↓", true),
    ("cpu_us_per_req", "proxy CPU µs/req ↓", true),
    ("cpu_pct", "proxy CPU % of a core", true),
    ("errors", "errors", true),
    (
        "proxy_core_busy_pct",
        "proxy CPU(s) busy %, all processes",
        true,
    ),
    (
        "load_core_busy_pct",
        "load CPU(s) busy %, all processes",
        true,
    ),
    ("rss_mb", "RSS MB ↓", true),
    ("pss_mb", "PSS MB ↓", true),
    ("kb_per_conn", "RSS KB per idle conn ↓", true),
];

struct Data {
    /// (target, scenario, metric) -> values over rounds
    vals: BTreeMap<(String, String, String), Vec<f64>>,
    meta: Vec<(String, String)>,
    targets: Vec<String>,
    rounds: usize,
}

impl Data {
    fn median(&self, t: &str, s: &str, m: &str) -> Option<f64> {
        let v = self
            .vals
            .get(&(t.to_string(), s.to_string(), m.to_string()))?;
        let mut v = v.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        if n == 0 {
            return None;
        }
        Some(if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        })
    }
    fn spread(&self, t: &str, s: &str, m: &str) -> Option<(f64, f64, usize)> {
        let v = self
            .vals
            .get(&(t.to_string(), s.to_string(), m.to_string()))?;
        let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        Some((lo, hi, v.len()))
    }
    fn meta(&self, k: &str) -> Option<&str> {
        self.meta
            .iter()
            .find(|(a, _)| a == k)
            .map(|(_, b)| b.as_str())
    }
    /// Memory scenarios with N idle connections, sorted by N.
    fn conn_scenarios(&self) -> Vec<(String, usize)> {
        let mut v: Vec<(String, usize)> = self
            .vals
            .keys()
            .filter_map(|(_, s, _)| Some((s.clone(), s.strip_prefix("mem_conns_")?.parse().ok()?)))
            .collect();
        v.sort_by_key(|x| x.1);
        v.dedup();
        v
    }
}

fn load(tsv: &str, meta: &str) -> Res<Data> {
    let mut vals: BTreeMap<(String, String, String), Vec<f64>> = BTreeMap::new();
    let mut rounds = 0;
    for (i, line) in std::fs::read_to_string(tsv)?.lines().enumerate() {
        let f: Vec<&str> = line.split('\t').collect();
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        if f.len() != 5 {
            return Err(format!("{tsv}:{}: want 5 tab-separated fields", i + 1).into());
        }
        let v: f64 = f[4]
            .parse()
            .map_err(|_| format!("{tsv}:{}: bad value {:?}", i + 1, f[4]))?;
        rounds = rounds.max(f[0].parse().unwrap_or(0));
        vals.entry((f[1].into(), f[2].into(), f[3].into()))
            .or_default()
            .push(v);
    }
    let meta: Vec<(String, String)> = std::fs::read_to_string(meta)?
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let targets = meta
        .iter()
        .find(|(k, _)| k == "targets")
        .map(|(_, v)| v.split_whitespace().map(String::from).collect())
        .unwrap_or_else(|| vec!["edge".into(), "nginx".into(), "haproxy".into()]);
    Ok(Data {
        vals,
        meta,
        targets,
        rounds,
    })
}

fn fmt_val(metric: &str, v: f64) -> String {
    match metric {
        "rps" | "errors" => thousands(v.round() as i64),
        "cpu_pct" => format!("{v:.0}"),
        "p50_ms" | "p99_ms" | "p999_ms" => format!("{v:.2}"),
        _ => format!("{v:.1}"),
    }
}

fn thousands(n: i64) -> String {
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

fn short(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1}k", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn markdown(d: &Data) -> String {
    let mut o = String::new();
    let t = &d.targets;
    let _ = writeln!(
        o,
        "# Edge vs peers — {}\n",
        d.meta("title").unwrap_or("benches/run")
    );
    if let Some(note) = d.meta("note") {
        let _ = writeln!(o, "> {note}\n");
    }
    let _ = writeln!(
        o,
        "Medians over {} round(s){}; ratios are ratios of medians (for ↑ metrics >1 means the left one is better, for ↓ metrics <1 means the left one is better). Absolute numbers are only comparable within one run.\n",
        d.rounds,
        if d.rounds > 1 { ", req/s with (min–max)" } else { "" }
    );
    let pairs: Vec<(usize, usize)> = (0..t.len())
        .flat_map(|i| (i + 1..t.len()).map(move |j| (i, j)))
        .collect();
    let _ = write!(o, "| scenario | metric |");
    for x in t {
        let _ = write!(o, " {x} |");
    }
    for (i, j) in &pairs {
        let _ = write!(o, " {}÷{} |", t[*i], t[*j]);
    }
    let _ = write!(o, "\n| --- | --- |");
    for _ in t.iter().chain(pairs.iter().map(|_| &t[0])) {
        let _ = write!(o, " ---: |");
    }
    o.push('\n');

    let mut scen: Vec<(String, String)> = SCENARIOS
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    for (s, n) in d.conn_scenarios() {
        scen.push((
            s,
            format!("memory, {} idle HTTP keep-alive conns", thousands(n as i64)),
        ));
    }
    for (s, title) in &scen {
        let title = match (s.as_str(), d.meta(&format!("load_{s}"))) {
            (_, Some(l)) => format!("{title} ({l})"),
            _ => title.clone(),
        };
        let mut first = true;
        for (m, label, _) in METRICS {
            let meds: Vec<Option<f64>> = t.iter().map(|x| d.median(x, s, m)).collect();
            if meds.iter().all(Option::is_none) {
                continue;
            }
            let _ = write!(
                o,
                "| {} | {label} |",
                if first {
                    format!("**{title}**")
                } else {
                    String::new()
                }
            );
            first = false;
            for (k, x) in t.iter().enumerate() {
                let cell = match meds[k] {
                    None => "–".to_string(),
                    Some(v) => {
                        let mut c = fmt_val(m, v);
                        if *m == "rps" && d.rounds > 1 {
                            if let Some((lo, hi, _)) = d.spread(x, s, m) {
                                let _ = write!(c, " ({}–{})", short(lo), short(hi));
                            }
                        }
                        c
                    }
                };
                let _ = write!(o, " {cell} |");
            }
            for (i, j) in &pairs {
                let r = match (meds[*i], meds[*j]) {
                    (Some(a), Some(b))
                        if b > 0.0
                            && !matches!(
                                *m,
                                "cpu_pct"
                                    | "errors"
                                    | "kb_per_conn"
                                    | "proxy_core_busy_pct"
                                    | "load_core_busy_pct"
                            ) =>
                    {
                        format!("{:.2}", a / b)
                    }
                    _ => String::new(),
                };
                let _ = write!(o, " {r} |");
            }
            o.push('\n');
        }
    }
    for (k, v) in &d.meta {
        if k == "skipped" {
            let _ = writeln!(o, "\nSkipped: {v}.");
        }
    }
    let _ = writeln!(
        o,
        "\nReading the CPU rows: \"proxy CPU %\" is the proxy's own processes; \"proxy CPU(s) busy %\" is everything on the proxy's CPUs. A gap between them is other work on the machine taking the proxy's core; a proxy well under 100 % with its core not saturated was not the bottleneck (prefer µs/req then)."
    );
    if let Some(v) = d.median("direct", "http", "rps") {
        let _ = writeln!(
            o,
            "\nCeiling: wrk straight to the upstream (no proxy, {}): **{} req/s**, p50 {} ms, p99 {} ms.",
            d.meta("load_direct").unwrap_or("same load as http"),
            thousands(v.round() as i64),
            d.median("direct", "http", "p50_ms").map(|x| format!("{x:.2}")).unwrap_or_default(),
            d.median("direct", "http", "p99_ms").map(|x| format!("{x:.2}")).unwrap_or_default(),
        );
    }
    let _ = writeln!(
        o,
        "\n## Machine and settings\n\n| item | value |\n| --- | --- |"
    );
    for (k, v) in &d.meta {
        if k == "title" || k == "note" || k.starts_with("load_") {
            continue;
        }
        let _ = writeln!(o, "| {k} | {} |", v.replace('|', "\\|"));
    }
    let loads: Vec<&(String, String)> = d
        .meta
        .iter()
        .filter(|(k, _)| k.starts_with("load_"))
        .collect();
    if !loads.is_empty() {
        let _ = writeln!(o, "\nLoad per scenario:\n");
        for (k, v) in loads {
            let _ = writeln!(o, "- `{}`: {v}", &k[5..]);
        }
    }
    o
}

fn color(i: usize) -> RGBColor {
    [
        RGBColor(214, 96, 39),
        RGBColor(44, 160, 44),
        RGBColor(31, 119, 180),
        RGBColor(148, 103, 189),
    ][i % 4]
}

/// One panel of grouped bars: value ÷ reference target's value, with the absolute median on top.
fn panel(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    d: &Data,
    caption: &str,
    groups: &[(String, String, String)], // (scenario, metric, x label)
    reference: &str,
    log: bool,
    unit: &str,
) -> Res<()> {
    let t = &d.targets;
    let n = groups.len().max(1);
    let ratio = |x: &str, s: &str, m: &str| -> Option<(f64, f64)> {
        let v = d.median(x, s, m)?;
        let r = d.median(reference, s, m).filter(|r| *r > 0.0)?;
        Some((v / r, v))
    };
    let mut ymax: f64 = 1.2;
    let mut ymin: f64 = 1.0;
    for (s, m, _) in groups {
        for x in t {
            if let Some((r, _)) = ratio(x, s, m) {
                ymax = ymax.max(r * 1.45);
                ymin = ymin.min(r);
            }
        }
    }
    let xr = -0.5f64..(n as f64 - 0.5);
    let labels: Vec<String> = groups.iter().map(|g| g.2.clone()).collect();
    let fmt_x = move |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 0.01 && i >= 0.0 {
            labels.get(i as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    let width = 0.8 / t.len() as f64;
    let label_style =
        TextStyle::from(("sans-serif", 11).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));

    macro_rules! draw {
        ($chart:expr, $base:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(n)
                .x_label_formatter(&fmt_x)
                .y_desc(format!("{unit} relative to {reference} = 1"))
                .y_labels(8)
                .light_line_style(WHITE)
                .draw()?;
            for (k, x) in t.iter().enumerate() {
                let c = color(k);
                let bars: Vec<(f64, f64, f64)> = groups
                    .iter()
                    .enumerate()
                    .filter_map(|(g, (s, m, _))| {
                        let (r, v) = ratio(x, s, m)?;
                        Some((g as f64 - 0.4 + width * k as f64, r, v))
                    })
                    .collect();
                chart
                    .draw_series(bars.iter().map(|(x0, r, _)| {
                        Rectangle::new([(*x0 + 0.01, $base), (*x0 + width - 0.01, *r)], c.filled())
                    }))?
                    .label(x.as_str())
                    .legend(move |(a, b)| {
                        Rectangle::new([(a, b - 5), (a + 12, b + 5)], c.filled())
                    });
                chart.draw_series(bars.iter().map(|(x0, r, v)| {
                    Text::new(short(*v), (*x0 + width / 2.0, *r), label_style.clone())
                }))?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()?;
        }};
    }
    let mut b = ChartBuilder::on(area);
    b.caption(caption, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60);
    if log {
        let lo = (ymin * 0.5).min(0.5);
        draw!(b.build_cartesian_2d(xr, (lo..ymax * 2.0).log_scale())?, lo);
    } else {
        draw!(b.build_cartesian_2d(xr, 0f64..ymax)?, 0.0);
    }
    Ok(())
}

fn svg(d: &Data, path: &str) -> Res<()> {
    let root = SVGBackend::new(path, (1100, 1200)).into_drawing_area();
    root.fill(&WHITE)?;
    let (head, body) = root.split_vertically(40);
    head.draw(&Text::new(
        format!("Edge vs peers — {}", d.meta("title").unwrap_or("")),
        (12, 10),
        ("sans-serif", 18).into_font(),
    ))?;
    let (top, rest) = body.split_vertically(390);
    let (middle, bottom) = rest.split_vertically(390);
    let reference = if d.targets.iter().any(|x| x == "nginx") {
        "nginx".to_string()
    } else {
        d.targets[0].clone()
    };
    let tp: Vec<(String, String, String)> = [
        ("http", "HTTP keep-alive"),
        ("https", "HTTPS keep-alive"),
        ("tls_new", "new TLS (full)"),
        ("tls_resume", "new TLS (resumed)"),
        ("h2", "HTTP/2 TLS"),
    ]
    .iter()
    .filter(|(s, _)| d.targets.iter().any(|x| d.median(x, s, "rps").is_some()))
    .map(|(s, l)| (s.to_string(), "rps".to_string(), l.to_string()))
    .collect();
    panel(
        &top,
        d,
        "Throughput, median req/s (bar labels) — higher is better",
        &tp,
        &reference,
        false,
        "req/s",
    )?;
    let cpu: Vec<(String, String, String)> = tp
        .iter()
        .map(|(s, _, l)| (s.clone(), "cpu_us_per_req".to_string(), l.clone()))
        .collect();
    panel(
        &middle,
        d,
        "Proxy CPU time per request, median µs (bar labels) — lower is better; the robust number on a busy machine",
        &cpu,
        &reference,
        false,
        "µs/req",
    )?;
    let mut mem = vec![(
        "mem_idle".to_string(),
        "rss_mb".to_string(),
        "idle".to_string(),
    )];
    for (s, n) in d.conn_scenarios() {
        mem.push((
            s,
            "rss_mb".into(),
            format!("{} idle conns", thousands(n as i64)),
        ));
    }
    panel(
        &bottom,
        d,
        "Resident memory, median RSS MB (bar labels) — lower is better, log scale",
        &mem,
        &reference,
        true,
        "RSS",
    )?;
    root.present()?;
    Ok(())
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let (Some(tsv), Some(meta)) = (get("--tsv"), get("--meta")) else {
        eprintln!(
            "usage: bench-report --tsv RESULTS.tsv --meta META.tsv [--md OUT.md] [--svg OUT.svg]"
        );
        std::process::exit(2);
    };
    let d = load(&tsv, &meta)?;
    let md = markdown(&d);
    match get("--md") {
        Some(p) => std::fs::write(p, &md)?,
        None => print!("{md}"),
    }
    if let Some(p) = get("--svg") {
        svg(&d, &p)?;
    }
    Ok(())
}
