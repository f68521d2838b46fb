//! What simulated runs did, for people (text) and programs (JSON): one run
//! step by step (`policy test`), or two runs of one recording side by side
//! with where they differ and by how much (`replay`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::simulate::{Happening, Simulation, Step};

/// One run: its steps and what the kernel held at the end.
#[derive(Debug, Serialize)]
pub struct RunReport {
    pub policy: String,
    pub label: String,
    pub steps: Vec<Step>,
    pub changes: u64,
    pub denials: u64,
    pub faults: u64,
    pub log_lines: u64,
    /// Every value the simulated kernel holds at the end.
    pub final_values: Vec<FinalValue>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FinalValue {
    pub netns: String,
    pub tunable: String,
    pub value: String,
    /// What it held before the policy's first change (none if unchanged).
    pub was: Option<String>,
    pub changed: bool,
}

impl RunReport {
    pub fn new(simulation: &Simulation, steps: Vec<Step>) -> RunReport {
        let mut first_from: BTreeMap<(String, String), Option<String>> = BTreeMap::new();
        for happening in steps.iter().flat_map(|s| &s.happened) {
            if let Happening::Change { netns, tunable, from, .. } = happening {
                first_from.entry((netns.clone(), tunable.clone())).or_insert_with(|| from.clone());
            }
        }
        let final_values = simulation
            .kernel
            .values()
            .into_iter()
            .map(|(netns, tunable, value)| {
                let was = first_from.get(&(netns.clone(), tunable.clone())).cloned().flatten();
                let changed = first_from.contains_key(&(netns.clone(), tunable.clone()));
                FinalValue { netns, tunable, value: value.to_string(), was, changed }
            })
            .collect();
        let log_lines = steps.iter().flat_map(|s| &s.happened).filter(|h| !h.is_decision()).count() as u64;
        RunReport {
            policy: simulation.name.clone(),
            label: simulation.label.clone(),
            steps,
            changes: simulation.changes,
            denials: simulation.denials,
            faults: simulation.faults,
            log_lines,
            final_values,
        }
    }

    /// Every step, then the final values and the counts.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "policy {} ({})", self.policy, self.label);
        for step in &self.steps {
            if step.happened.is_empty() && step.fault.is_none() && step.input == "tick" {
                continue;
            }
            let line = step.line.map_or_else(String::new, |l| format!(" line {l}"));
            let _ = writeln!(out, "[{}{line}] {}", seconds(step.at_ms), step.input);
            for happening in &step.happened {
                let _ = writeln!(out, "  {}", happening_text(happening));
            }
            if let Some(fault) = &step.fault {
                let _ = writeln!(out, "  FAULT   {fault}");
            }
        }
        let changed: Vec<&FinalValue> = self.final_values.iter().filter(|v| v.changed).collect();
        let _ = writeln!(out, "final values{}", if changed.is_empty() { ": none changed" } else { "" });
        for value in changed {
            let was = value.was.as_deref().unwrap_or("(missing)");
            let _ = writeln!(out, "  {} {} = {}   (was {was})", value.netns, value.tunable, value.value);
        }
        let _ = writeln!(
            out,
            "{} change{}, {} denial{}, {} fault{}, {} log line{}",
            self.changes,
            plural(self.changes),
            self.denials,
            plural(self.denials),
            self.faults,
            plural(self.faults),
            self.log_lines,
            plural(self.log_lines)
        );
        out
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn seconds(ms: u64) -> String {
    format!("{}.{:03} s", ms / 1000, ms % 1000)
}

pub fn happening_text(happening: &Happening) -> String {
    match happening {
        Happening::Change { netns, tunable, from, to, scenario, reason } => {
            let from = from.as_deref().unwrap_or("(missing)");
            format!("change  {netns} {tunable}: {from} -> {to} ({scenario}: {reason})")
        }
        Happening::Superseded { netns, tunable, found, wanted } => {
            let found = found.as_deref().unwrap_or("(missing)");
            format!("skipped {netns} {tunable} -> {wanted}: the kernel held {found} by then")
        }
        Happening::Denied { netns, target, denial, detail } => format!("DENIED  {netns} {target}: {denial}: {detail}"),
        Happening::Peer { netns, prefix, settings: Some(settings), reason } => {
            format!("peer    {netns} {prefix}: {} ({reason})", serde_json::to_string(settings).unwrap_or_default())
        }
        Happening::Peer { netns, prefix, settings: None, reason } => {
            format!("peer    {netns} {prefix}: cleared ({reason})")
        }
        Happening::Log { level, message } => format!("log     {level}: {message}"),
    }
}

/// The decisions of a step, in a form two runs can be compared by.
fn decisions(steps: &[&Step]) -> Vec<String> {
    steps
        .iter()
        .flat_map(|s| s.happened.iter().filter(|h| h.is_decision()).map(decision_text))
        .chain(steps.iter().filter_map(|s| s.fault.as_ref().map(|f| format!("FAULT {f}"))))
        .collect()
}

/// A decision without the policy's own wording (scenario, reason), which
/// two versions may put differently for the same act.
fn decision_text(happening: &Happening) -> String {
    match happening {
        Happening::Change { netns, tunable, to, .. } => format!("{netns} {tunable} -> {to}"),
        Happening::Peer { netns, prefix, settings, .. } => match settings {
            Some(s) => format!("{netns} {prefix} -> {}", serde_json::to_string(s).unwrap_or_default()),
            None => format!("{netns} {prefix} cleared"),
        },
        other => happening_text(other),
    }
}

/// Two runs of one recording, compared input by input.
#[derive(Debug, Serialize)]
pub struct Comparison {
    pub a: String,
    pub b: String,
    /// Inputs at which either decided something, with both sides.
    pub rows: Vec<ComparedRow>,
    pub rows_differing: usize,
    pub finals: Vec<ComparedValue>,
}

#[derive(Debug, Serialize)]
pub struct ComparedRow {
    pub at_ms: u64,
    pub line: Option<usize>,
    pub a: Vec<String>,
    pub b: Vec<String>,
    pub differ: bool,
}

#[derive(Debug, Serialize)]
pub struct ComparedValue {
    pub netns: String,
    pub tunable: String,
    pub a: Option<String>,
    pub b: Option<String>,
    /// Per field: (b − a) / a, in percent, where both are integers.
    pub b_vs_a_percent: Vec<Option<f64>>,
}

/// Steps grouped by the input line they led up to (ticks before a line
/// belong to it; those after the last line to the end).
fn by_input(steps: &[Step]) -> BTreeMap<usize, Vec<&Step>> {
    let mut groups: BTreeMap<usize, Vec<&Step>> = BTreeMap::new();
    let mut pending: Vec<&Step> = Vec::new();
    for step in steps {
        pending.push(step);
        if let Some(line) = step.line {
            groups.entry(line).or_default().append(&mut pending);
        }
    }
    if !pending.is_empty() {
        groups.entry(usize::MAX).or_default().append(&mut pending);
    }
    groups
}

impl Comparison {
    pub fn new(a: &RunReport, b: &RunReport) -> Comparison {
        let (groups_a, groups_b) = (by_input(&a.steps), by_input(&b.steps));
        let mut lines: Vec<usize> = groups_a.keys().chain(groups_b.keys()).copied().collect();
        lines.sort_unstable();
        lines.dedup();
        let empty = Vec::new();
        let rows: Vec<ComparedRow> = lines
            .into_iter()
            .filter_map(|line| {
                let (steps_a, steps_b) = (groups_a.get(&line).unwrap_or(&empty), groups_b.get(&line).unwrap_or(&empty));
                let (da, db) = (decisions(steps_a), decisions(steps_b));
                if da.is_empty() && db.is_empty() {
                    return None;
                }
                let at_ms = steps_a.iter().chain(steps_b.iter()).map(|s| s.at_ms).max().unwrap_or(0);
                let differ = da != db;
                Some(ComparedRow { at_ms, line: (line != usize::MAX).then_some(line), a: da, b: db, differ })
            })
            .collect();
        let rows_differing = rows.iter().filter(|r| r.differ).count();
        let mut keys: Vec<(String, String)> = a
            .final_values
            .iter()
            .chain(&b.final_values)
            .filter(|v| v.changed)
            .map(|v| (v.netns.clone(), v.tunable.clone()))
            .collect();
        keys.sort();
        keys.dedup();
        let value_in = |report: &RunReport, key: &(String, String)| {
            report.final_values.iter().find(|v| v.netns == key.0 && v.tunable == key.1).map(|v| v.value.clone())
        };
        let finals = keys
            .into_iter()
            .map(|key| {
                let (va, vb) = (value_in(a, &key), value_in(b, &key));
                let b_vs_a_percent = percent_apart(va.as_deref(), vb.as_deref());
                ComparedValue { netns: key.0, tunable: key.1, a: va, b: vb, b_vs_a_percent }
            })
            .collect();
        Comparison { a: a.label.clone(), b: b.label.clone(), rows, rows_differing, finals }
    }

    pub fn text(&self, a: &RunReport, b: &RunReport) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "A = {}\nB = {}\n", self.a, self.b);
        let width =
            self.rows.iter().flat_map(|r| r.a.iter()).map(|s| s.chars().count()).max().unwrap_or(1).clamp(1, 60);
        let _ = writeln!(out, "{:>10} {:>6}  {:<width$} | B", "at", "line", "A");
        for row in &self.rows {
            let mark = if row.differ { '*' } else { ' ' };
            let line = row.line.map_or_else(|| "end".to_string(), |l| l.to_string());
            let height = row.a.len().max(row.b.len());
            for i in 0..height {
                let left = row.a.get(i).map_or("", String::as_str);
                let right = row.b.get(i).map_or("", String::as_str);
                let (at, line) =
                    if i == 0 { (seconds(row.at_ms), line.clone()) } else { (String::new(), String::new()) };
                let _ = writeln!(out, "{at:>10} {line:>6}{mark} {left:<width$} | {right}");
            }
        }
        let _ = writeln!(out, "\nsummary");
        for (name, report) in [("A", a), ("B", b)] {
            let _ = writeln!(
                out,
                "  {name}: {} change{}, {} denial{}, {} fault{}",
                report.changes,
                plural(report.changes),
                report.denials,
                plural(report.denials),
                report.faults,
                plural(report.faults)
            );
        }
        let _ = writeln!(
            out,
            "  inputs with a decision: {}; they differ at {} (marked *)",
            self.rows.len(),
            self.rows_differing
        );
        if self.finals.is_empty() {
            let _ = writeln!(out, "  final values: neither changed anything");
        }
        for value in &self.finals {
            let apart: Vec<String> = value
                .b_vs_a_percent
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.filter(|p| *p != 0.0).map(|p| format!("[{i}] {p:+.1} %")))
                .collect();
            let apart = if apart.is_empty() { "equal".to_string() } else { format!("B vs A: {}", apart.join(", ")) };
            let _ = writeln!(
                out,
                "  {} {}: A {} | B {} ({apart})",
                value.netns,
                value.tunable,
                value.a.as_deref().unwrap_or("(missing)"),
                value.b.as_deref().unwrap_or("(missing)")
            );
        }
        out
    }
}

/// Field by field, how far B's integers are from A's, in percent.
fn percent_apart(a: Option<&str>, b: Option<&str>) -> Vec<Option<f64>> {
    let numbers = |s: Option<&str>| -> Vec<Option<i64>> {
        s.map(|s| s.split_whitespace().map(|f| f.parse().ok()).collect()).unwrap_or_default()
    };
    let (a, b) = (numbers(a), numbers(b));
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| match (x, y) {
            (Some(x), Some(y)) if *x != 0 => Some((*y - *x) as f64 * 100.0 / *x as f64),
            (Some(0), Some(0)) => Some(0.0),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_apart_field_by_field() {
        let apart = percent_apart(Some("4096 131072 100"), Some("4096 131072 150"));
        assert_eq!(apart, vec![Some(0.0), Some(0.0), Some(50.0)]);
        assert_eq!(percent_apart(Some("bbr"), Some("cubic")), vec![None]);
        assert!(percent_apart(None, Some("1")).is_empty());
    }

    #[test]
    fn ticks_belong_to_the_input_they_lead_up_to() {
        let step =
            |line: Option<usize>, at_ms| Step { at_ms, line, input: String::new(), happened: Vec::new(), fault: None };
        let steps = vec![step(None, 0), step(None, 100), step(Some(3), 150), step(None, 200)];
        let groups = by_input(&steps);
        assert_eq!(groups[&3].len(), 3);
        assert_eq!(groups[&usize::MAX].len(), 1);
    }
}
