//! Turns the `key=value` lines `bench/run` collected into a Markdown table: per proxy the
//! median of the repeats, its spread, and the median of per-repeat ratios against the best
//! of the other proxies.

use std::collections::BTreeMap;
use std::fmt::Write;

/// The proxies, in column order.
const PROXIES: [&str; 3] = ["wss-sidecar", "nginx", "haproxy"];

/// One row of the table: which figure and key, its label, and whether more is better.
struct Row {
    figure: &'static str,
    key: &'static str,
    label: &'static str,
    higher_is_better: bool,
}

const ROWS: &[Row] = &[
    row(
        "echo-paced",
        "cpu_ms_per_1k",
        "CPU per 1,000 echoed messages, paced 10,000 msg/s × 50 conns, 64 B (ms)",
        false,
    ),
    row(
        "echo-paced",
        "msgs_per_s",
        "paced echo rate achieved (msg/s, 10,000 asked)",
        true,
    ),
    row("echo-paced", "p99_us", "paced echo latency p99 (µs)", false),
    row(
        "echo",
        "msgs_per_s",
        "echo rate, 64 B × 50 conns (msg/s)",
        true,
    ),
    row("echo", "p50_us", "echo latency p50 (µs)", false),
    row("echo", "p99_us", "echo latency p99 (µs)", false),
    row("echo", "p999_us", "echo latency p99.9 (µs)", false),
    row(
        "handshakes",
        "conns_per_s",
        "full handshakes/s, X25519 (TLS + upgrade + 1 echo + close)",
        true,
    ),
    row(
        "handshakes-pq",
        "conns_per_s",
        "full handshakes/s, client offers X25519MLKEM768 first",
        true,
    ),
    row(
        "handshakes-resume",
        "conns_per_s",
        "resumed handshakes/s, X25519 (each worker resumes its own last session)",
        true,
    ),
    row(
        "throughput",
        "mib_per_s",
        "throughput, 64 KiB × 8 conns (MiB/s echoed)",
        true,
    ),
    row(
        "idle",
        "kib_per_conn",
        "memory per idle WebSocket (KiB)",
        false,
    ),
    row(
        "start",
        "health_ms",
        "start-up: exec → health endpoint 200 (ms)",
        false,
    ),
    row(
        "start",
        "echo_ms",
        "start-up: exec → first wss echo (ms)",
        false,
    ),
    row(
        "storm",
        "secs",
        "reconnect storm, 5,000 clients moving within 2 s, full handshakes: until all echo (s)",
        false,
    ),
    row(
        "storm",
        "failures",
        "reconnect storm, full handshakes: failed attempts",
        false,
    ),
    row(
        "storm",
        "resume_secs",
        "reconnect storm back, resuming (shared ticket key): until all echo (s)",
        false,
    ),
    row(
        "storm",
        "resume_failures",
        "reconnect storm back, resuming: failed attempts",
        false,
    ),
    row(
        "reload",
        "failed",
        "failed connections during cert reloads",
        false,
    ),
];

const fn row(
    figure: &'static str,
    key: &'static str,
    label: &'static str,
    higher_is_better: bool,
) -> Row {
    Row {
        figure,
        key,
        label,
        higher_is_better,
    }
}

/// (proxy, figure, key) → value per repeat.
type Samples = BTreeMap<(String, String, String), BTreeMap<u32, f64>>;

/// Renders the table, the negotiated key-exchange groups and the noise summary.
pub fn render(results: &str) -> anyhow::Result<String> {
    let mut samples = Samples::new();
    let mut groups: BTreeMap<(String, String), String> = BTreeMap::new();
    for line in results.lines().filter(|l| l.starts_with("proxy=")) {
        let fields: BTreeMap<&str, &str> = line
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .collect();
        let (Some(proxy), Some(figure), Some(rep)) =
            (fields.get("proxy"), fields.get("figure"), fields.get("rep"))
        else {
            continue;
        };
        let rep: u32 = rep.parse()?;
        for (key, value) in &fields {
            if *key == "kx" {
                groups.insert((proxy.to_string(), figure.to_string()), value.to_string());
            }
            if let Ok(v) = value.parse::<f64>() {
                samples
                    .entry((proxy.to_string(), figure.to_string(), key.to_string()))
                    .or_default()
                    .insert(rep, v);
            }
        }
    }
    let mut out = String::new();
    writeln!(
        out,
        "| figure | {} | wss-sidecar ÷ best other |",
        PROXIES.join(" | ")
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|")?;
    let mut noise = Vec::new();
    for row in ROWS {
        let get = |p: &str| samples.get(&(p.into(), row.figure.into(), row.key.into()));
        let mut cells = Vec::new();
        for proxy in PROXIES {
            let Some(reps) = get(proxy) else {
                cells.push("—".to_owned());
                continue;
            };
            let values: Vec<f64> = reps.values().copied().collect();
            let m = median(&values);
            let (lo, hi) = min_max(&values);
            if m > 0.0 && values.len() > 1 {
                noise.push((hi - lo) / m * 100.0);
            }
            cells.push(format!("{} ({}–{})", fmt(m), fmt(lo), fmt(hi)));
        }
        // Median over repeats of sidecar / best other in the same repeat.
        let mut ratios = Vec::new();
        if let Some(ours) = get(PROXIES[0]) {
            for (rep, &v) in ours {
                let others: Vec<f64> = PROXIES[1..]
                    .iter()
                    .filter_map(|p| get(p).and_then(|r| r.get(rep)).copied())
                    .collect();
                if others.is_empty() {
                    continue;
                }
                let best = if row.higher_is_better {
                    others.iter().copied().fold(f64::MIN, f64::max)
                } else {
                    others.iter().copied().fold(f64::MAX, f64::min)
                };
                if best > 0.0 {
                    ratios.push(v / best);
                } else if v == 0.0 {
                    ratios.push(1.0);
                } else {
                    // The others had none (failures): not hidden as "no ratio".
                    ratios.push(f64::INFINITY);
                }
            }
        }
        let ratio = if ratios.is_empty() {
            "—".to_owned()
        } else {
            format!("{:.2}×", median(&ratios))
        };
        writeln!(out, "| {} | {} | {ratio} |", row.label, cells.join(" | "))?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "Cells: median of the repeats (min–max). Ratio: median over repeats of wss-sidecar's \
         figure divided by the best of NGINX and HAProxy in the same repeat (for CPU, latency, \
         memory, start time, storm time and failures lower is better, so below 1 is a lead)."
    )?;
    for (figure, what) in [
        ("handshakes", "X25519-only client"),
        ("handshakes-pq", "client offering X25519MLKEM768, X25519"),
    ] {
        let negotiated: Vec<String> = PROXIES
            .iter()
            .filter_map(|p| {
                groups
                    .get(&(p.to_string(), figure.to_string()))
                    .map(|g| format!("{p} {g}"))
            })
            .collect();
        if !negotiated.is_empty() {
            writeln!(
                out,
                "Key exchange negotiated ({what}): {}.",
                negotiated.join(", ")
            )?;
        }
    }
    for note in notes(&samples) {
        writeln!(out, "{note}")?;
    }
    if !noise.is_empty() {
        noise.sort_by(f64::total_cmp);
        writeln!(
            out,
            "Noise: spread (max−min)/median across repeats is {:.0}% at the median cell, {:.0}% at worst.",
            median(&noise),
            noise[noise.len() - 1]
        )?;
    }
    Ok(out)
}

/// What the table's cells cannot say: a proxy that did not keep the pace, and how many of the
/// handshakes meant to be resumed were.
fn notes(samples: &Samples) -> Vec<String> {
    let get = |p: &str, figure: &str, key: &str| {
        samples.get(&(p.to_owned(), figure.to_owned(), key.to_owned()))
    };
    let mut notes = Vec::new();
    let mut late = Vec::new();
    for proxy in PROXIES {
        let (Some(asked), Some(got)) = (
            get(proxy, "echo-paced", "target_per_s"),
            get(proxy, "echo-paced", "msgs_per_s"),
        ) else {
            continue;
        };
        for (rep, &target) in asked {
            if let Some(&achieved) = got.get(rep)
                && achieved < PACE_KEPT * target
            {
                late.push(format!(
                    "{proxy} in repeat {rep} ({achieved:.0} of {target:.0} msg/s)"
                ));
            }
        }
    }
    if !late.is_empty() {
        notes.push(format!(
            "Pace not kept (its CPU per message is over fewer messages): {}.",
            late.join(", ")
        ));
    }
    let share = |figure: &str, part: &str, whole: Option<&str>| -> Vec<String> {
        PROXIES
            .iter()
            .filter_map(|p| {
                let part = median(&get(p, figure, part)?.values().copied().collect::<Vec<_>>());
                let pct = match whole {
                    Some(key) => {
                        let whole =
                            median(&get(p, figure, key)?.values().copied().collect::<Vec<_>>());
                        part * 100.0 / whole.max(1.0)
                    }
                    None => part,
                };
                Some(format!("{p} {pct:.0}%"))
            })
            .collect()
    };
    let resumed = share("handshakes-resume", "resumed_pct", None);
    if !resumed.is_empty() {
        notes.push(format!(
            "Handshakes the server resumed, of those in the resumed figure: {}.",
            resumed.join(", ")
        ));
    }
    let resumed = share("storm", "resume_resumed", Some("clients"));
    if !resumed.is_empty() {
        notes.push(format!(
            "Clients resumed when the storm moved back (the instances share a ticket key): {}.",
            resumed.join(", ")
        ));
    }
    notes
}

/// A paced run that achieved less than this share of the rate asked did not keep the pace.
const PACE_KEPT: f64 = 0.98;

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn min_max(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

fn fmt(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}
