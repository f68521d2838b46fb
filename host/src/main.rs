//! The `wasmtune` binary: parses the command line, sets up logging, and runs
//! one command. Errors end here, printed with their whole chain of causes.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;

use wasmtune::cli::{Cli, Command, LogFormat, OverrideCommand, PolicyCommand, QueryArgs};
use wasmtune::control::{ClientError, ControlClient, Request};
use wasmtune::runtime::engine::PolicyEngine;
use wasmtune::runtime::image::{PolicyImage, PolicySource};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = match &cli.command {
        Some(Command::Run(args)) => args.log_format,
        None => cli.run.log_format,
        _ => LogFormat::Text,
    };
    init_logging(format);
    let daemon = matches!(cli.command, None | Some(Command::Run(_)));
    match dispatch(cli) {
        Ok(code) => code,
        // The daemon's log is where its operator looks; other commands answer on stderr.
        Err(e) if daemon => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("wasmtune: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        None => wasmtune::daemon::run(cli.run.into_options()).map(|()| ExitCode::SUCCESS),
        Some(Command::Run(args)) => wasmtune::daemon::run(args.into_options()).map(|()| ExitCode::SUCCESS),
        Some(Command::Support) => {
            let lines = wasmtune::support::probe();
            print!("{}", wasmtune::support::render(&lines));
            Ok(match wasmtune::support::verdict(&lines) {
                wasmtune::support::Support::Full => ExitCode::from(0),
                wasmtune::support::Support::Partial => ExitCode::from(1),
                wasmtune::support::Support::None => ExitCode::from(2),
            })
        }
        Some(Command::Policy(PolicyCommand::Info { file, json })) => policy_info(&file, json),
        Some(Command::Policy(PolicyCommand::List(q))) => query(&q, &Request::PolicyList),
        Some(Command::Policy(PolicyCommand::Enable { name, query: q })) => query(&q, &Request::PolicyEnable { name }),
        Some(Command::Policy(PolicyCommand::Disable { name, query: q })) => query(&q, &Request::PolicyDisable { name }),
        Some(Command::Status(q)) => query(&q, &Request::Status),
        Some(Command::Summary(q)) => query(&q, &Request::Summary),
        Some(Command::Override(OverrideCommand::Clear { tunable, netns, query: q })) => {
            query(&q, &Request::OverrideClear { tunable, netns })
        }
        Some(Command::Rollback { state_dir, query: q }) => match daemon_for_journal(&q, &state_dir) {
            Ok(Some(client)) => ask(client, &q, &Request::Rollback),
            Ok(None) => {
                let report = wasmtune::ledger::rollback_offline(&state_dir)
                    .with_context(|| format!("cannot roll back from {}", state_dir.display()))?;
                if q.json {
                    let answer = wasmtune::control::Response::ok(wasmtune::control::queries::rollback_json(&report));
                    println!("{}", serde_json::to_string_pretty(&answer)?);
                } else {
                    for line in report.lines() {
                        println!("{line}");
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => Err(e.into()),
        },
    }
}

/// A connection to the daemon that owns the journal in `state_dir`, or
/// `None` when no daemon answers or the one that does keeps its journal
/// elsewhere (then the rollback is done here, from `state_dir`).
fn daemon_for_journal(q: &QueryArgs, state_dir: &std::path::Path) -> Result<Option<ControlClient>, ClientError> {
    let mut client = match ControlClient::connect(&q.socket) {
        Ok(client) => client,
        Err(ClientError::NotRunning { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let status = client.ask(&Request::Status)?;
    let theirs = status.result.as_ref().and_then(|r| r["state-dir"].as_str()).map(std::path::PathBuf::from);
    let same = |a: &std::path::Path, b: &std::path::Path| match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    };
    Ok(theirs.filter(|theirs| same(theirs, state_dir)).map(|_| client))
}

/// Asks the running daemon and prints its answer.
fn query(q: &QueryArgs, request: &Request) -> anyhow::Result<ExitCode> {
    let client = ControlClient::connect(&q.socket)?;
    ask(client, q, request)
}

fn ask(mut client: ControlClient, q: &QueryArgs, request: &Request) -> anyhow::Result<ExitCode> {
    let response = client.ask(request)?;
    if q.json {
        println!("{}", serde_json::to_string_pretty(&response)?);
    } else if let Some(result) = &response.result {
        for line in wasmtune::control::render::lines(request, result) {
            println!("{line}");
        }
    }
    match (response.ok, response.error) {
        (true, _) => Ok(ExitCode::SUCCESS),
        (false, error) => {
            if !q.json {
                eprintln!("wasmtune: {}", error.unwrap_or_else(|| "the daemon refused the request".into()));
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Checks a policy completely (contract, world, version, manifest) without
/// running it, and prints what it may do.
fn policy_info(file: &str, json: bool) -> anyhow::Result<ExitCode> {
    let (bytes, source) = match file.strip_prefix("builtin:") {
        Some(name) => {
            let bytes = wasmtune::builtin::bytes_of(name).with_context(|| format!("no built-in policy {name:?}"))?;
            (bytes.to_vec(), PolicySource::Builtin("builtin"))
        }
        None => (std::fs::read(file).with_context(|| format!("{file}: cannot read"))?, PolicySource::File(file.into())),
    };
    let engine = PolicyEngine::new(None)?;
    let image = PolicyImage::load(&engine, &bytes, source).with_context(|| format!("{file}: not a usable policy"))?;
    if json {
        let out = serde_json::json!({
            "file": file,
            "sha256": image.digest,
            "contract": wasmtune::runtime::image::HANDLER_EXPORT,
            "manifest": image.manifest,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("file    {file}");
        println!("sha256  {}", image.digest);
        println!("exports {}", wasmtune::runtime::image::HANDLER_EXPORT);
        print!("{}", image.manifest);
    }
    Ok(ExitCode::SUCCESS)
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("WASMTUNE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.with_target(false).init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).with_span_list(false).init(),
    }
}
