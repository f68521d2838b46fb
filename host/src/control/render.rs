//! Plain-text rendering of control answers for `wasmtune status`, `policy
//! list`, `summary` and `rollback` without `--json`.

use serde_json::Value as Json;

use super::protocol::Request;

fn text(value: &Json) -> String {
    match value {
        Json::String(s) => s.clone(),
        Json::Null => "-".to_string(),
        other => other.to_string(),
    }
}

fn policies(result: &Json, out: &mut Vec<String>) {
    out.push(format!(
        "{:<16} {:<10} {:<12} {:>10} {:>8} {:>7}  {}",
        "POLICY", "VERSION", "STATE", "HANDLED", "LOST", "FAULTS", "SOURCE"
    ));
    for p in result["policies"].as_array().into_iter().flatten() {
        out.push(format!(
            "{:<16} {:<10} {:<12} {:>10} {:>8} {:>7}  {}",
            text(&p["name"]),
            text(&p["version"]),
            text(&p["state"]),
            text(&p["events-handled"]),
            text(&p["events-lost"]),
            text(&p["faults"]),
            text(&p["source"]),
        ));
        let owned: Vec<String> = p["owned-tunables"].as_array().into_iter().flatten().map(text).collect();
        if !owned.is_empty() {
            out.push(format!("  owns: {}", owned.join(", ")));
        }
        if let Some(kind) = p["last-fault"].as_str() {
            out.push(format!("  last fault: {kind}"));
        }
        if p["runtime-failures"].as_u64().is_some_and(|n| n > 0) {
            out.push(format!("  runtime process failed during its calls: {}", text(&p["runtime-failures"])));
        }
    }
}

fn shadows(result: &Json, out: &mut Vec<String>) {
    let list = result["shadows"].as_array().into_iter().flatten();
    for s in list {
        let beside = if s["live"].as_bool() == Some(true) { "beside the live version" } else { "alone" };
        out.push(format!(
            "shadow {} {} ({beside}, {}): {} decisions, {} agreed, {} differed, {} changes dropped; {}",
            text(&s["name"]),
            text(&s["version"]),
            text(&s["state"]),
            text(&s["decisions"]),
            text(&s["agreements"]),
            text(&s["disagreements"]),
            text(&s["changes-dropped"]),
            text(&s["source"]),
        ));
        for d in s["last-differences"].as_array().into_iter().flatten() {
            let side = |key: &str| {
                let list: Vec<String> = d[key]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| format!("{} {} -> {}", text(&c["netns"]), text(&c["tunable"]), text(&c["value"])))
                    .collect();
                if list.is_empty() { "nothing".to_string() } else { list.join(", ") }
            };
            out.push(format!("  batch {}: shadow {} | live {}", text(&d["batch"]), side("shadow"), side("live")));
        }
    }
}

fn canaries(result: &Json, out: &mut Vec<String>) {
    for c in result["canaries"]["running"].as_array().into_iter().flatten() {
        out.push(format!(
            "canary {} {} in {} ({}, {} s): {} change(s), {} denied, {} fault(s); judged by {} (margin {}, {} over {} s); {}",
            text(&c["name"]),
            text(&c["version"]),
            text(&c["scope"]),
            text(&c["state"]),
            c["running-ms"].as_u64().unwrap_or(0) / 1000,
            text(&c["changes-accepted"]),
            text(&c["changes-denied"]),
            text(&c["faults"]),
            text(&c["metric"]),
            text(&c["margin"]),
            text(&c["compare"]),
            text(&c["window-s"]),
            text(&c["source"]),
        ));
        let verdict = &c["verdict"];
        let said = match verdict["verdict"].as_str() {
            Some("waiting") => format!(
                "waiting: {} canary and {} reference connection(s), {} needed",
                text(&verdict["canary-samples"]),
                text(&verdict["reference-samples"]),
                text(&verdict["needed"])
            ),
            Some(kind) => format!(
                "{kind}: {} {} against {} ({:+.0} %)",
                text(&verdict["metric"]),
                text(&verdict["canary"]),
                text(&verdict["reference"]),
                verdict["change"].as_f64().unwrap_or(0.0) * 100.0
            ),
            None => "not judged yet".to_string(),
        };
        out.push(format!("  health {said}"));
    }
    for r in result["canaries"]["reverted"].as_array().into_iter().flatten() {
        out.push(format!("canary {} reverted: {} ({})", text(&r["name"]), text(&r["why"]), text(&r["source"])));
    }
}

/// The lines to print for the answer to `request`.
pub fn lines(request: &Request, result: &Json) -> Vec<String> {
    let mut out = Vec::new();
    match request {
        Request::Status => {
            out.push(format!(
                "wasmtune pid {}, up {} ms, {} event(s) lost before routing",
                text(&result["pid"]),
                text(&result["uptime-ms"]),
                text(&result["events-lost-upstream"])
            ));
            let runtime = &result["runtime"];
            out.push(format!(
                "policies run in process {} as uid {} {}, restarted {} time(s)",
                text(&runtime["pid"]),
                text(&runtime["uid"]),
                text(&runtime["user"]),
                text(&runtime["restarts"])
            ));
            policies(result, &mut out);
            shadows(result, &mut out);
            canaries(result, &mut out);
            out.push(String::new());
            out.push(format!(
                "{:<10} {:<28} {:<28} {:<28} {}",
                "NETNS", "TUNABLE", "ORIGINAL", "CURRENT", "LAST CHANGE"
            ));
            for t in result["tunables"].as_array().into_iter().flatten() {
                let last = &t["last-change"];
                out.push(format!(
                    "{:<10} {:<28} {:<28} {:<28} {} ({}): {}",
                    text(&t["netns"]),
                    text(&t["tunable"]),
                    text(&t["original"]),
                    text(&t["current"]),
                    text(&last["policy"]),
                    text(&last["scenario"]),
                    text(&last["reason"]),
                ));
            }
            let overrides: Vec<String> = result["overrides"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|o| format!("{}/{}", text(&o["netns"]), text(&o["tunable"])))
                .collect();
            if !overrides.is_empty() {
                out.push(format!("taken over by the administrator: {}", overrides.join(", ")));
            }
            for o in result["overrides"].as_array().into_iter().flatten() {
                out.push(format!(
                    "  {}/{}: ({}) by {}",
                    text(&o["netns"]),
                    text(&o["tunable"]),
                    text(&o["value"]),
                    text(&o["who"])
                ));
            }
            let missing = result["missing-tunables"].as_array().into_iter().flatten().collect::<Vec<_>>();
            if !missing.is_empty() {
                out.push(String::new());
                out.push("not on this kernel (the decisions that need them are off):".to_string());
                for m in missing {
                    out.push(format!(
                        "  {} in netns {} (policy {}): without it, {} is off",
                        text(&m["tunable"]),
                        text(&m["netns"]),
                        text(&m["policy"]),
                        text(&m["lost"])
                    ));
                }
            }
            let peers = result["peers"].as_array().into_iter().flatten().collect::<Vec<_>>();
            if !peers.is_empty() {
                out.push(String::new());
                out.push(format!("{:<10} {:<24} {:<16} {}", "NETNS", "PEER", "POLICY", "PER-DESTINATION SETTINGS"));
                for p in peers {
                    out.push(format!(
                        "{:<10} {:<24} {:<16} {}",
                        text(&p["netns"]),
                        text(&p["peer"]),
                        text(&p["policy"]),
                        text(&p["settings"]),
                    ));
                }
            }
        }
        Request::PolicyList => policies(result, &mut out),
        Request::ShadowStart { file } => out.push(format!(
            "shadow of {} running from {file}: its changes are logged as shadow-change, never made",
            text(&result["name"])
        )),
        Request::ShadowStop { name } => out.push(format!("shadow of {name} stopped")),
        Request::CanaryStart { file, .. } => out.push(format!(
            "canary of {} running from {file} in {}: it acts there only, and is reverted on a regression",
            text(&result["name"]),
            text(&result["scope"])
        )),
        Request::CanaryPromote { name } => {
            out.push(format!("canary of {name} promoted: version {} runs everywhere", text(&result["version"])))
        }
        Request::CanaryAbort { name } => out.push(format!("canary of {name} aborted: {}", text(&result["said"]))),
        Request::PolicyEnable { name } | Request::PolicyDisable { name } => {
            let enabled = result["enabled"].as_bool().unwrap_or(false);
            let running = result["running"].as_bool().unwrap_or(false);
            out.push(format!(
                "policy {name} {}{}",
                if enabled { "enabled" } else { "disabled" },
                if running { ", running" } else { "" }
            ));
        }
        Request::OverrideClear { tunable, .. } => {
            let cleared: Vec<String> = result["cleared"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|o| format!("{}/{}", text(&o["netns"]), text(&o["tunable"])))
                .collect();
            if cleared.is_empty() {
                out.push(format!("{tunable} was not the administrator's anywhere"));
            } else {
                out.push(format!("handed back to the policies: {}", cleared.join(", ")));
            }
        }
        Request::Summary | Request::Rollback => {
            out.extend(result["lines"].as_array().into_iter().flatten().map(text));
        }
        Request::Metrics => out.extend(result["text"].as_str().unwrap_or("").lines().map(str::to_string)),
    }
    out
}
