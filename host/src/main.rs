//! The `wasmtune` binary: parses the command line, sets up logging, and runs
//! one command. Errors end here, printed with their whole chain of causes.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;

use wasmtune::cli::{Cli, Command, LogFormat, OverrideCommand, PolicyCommand, QueryArgs, ReplayArgs, SimulationArgs};
use wasmtune::config::{AdminConfig, PolicyDigest};
use wasmtune::control::{ClientError, ControlClient, Request};
use wasmtune::runtime::engine::PolicyEngine;
use wasmtune::runtime::image::{CompiledPolicy, PolicyImage, PolicySource};
use wasmtune::simulate::{self, PolicyUnderTest, RunSettings};
use wasmtune::trust::keys::Keyring;
use wasmtune::trust::sign::Password;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let daemon_format = |asked: Option<LogFormat>| {
        asked.unwrap_or(if wasmtune::journald::stderr_is_journal() { LogFormat::Journal } else { LogFormat::Text })
    };
    let format = match &cli.command {
        Some(Command::Run(args)) => daemon_format(args.log_format),
        Some(Command::Runtime(args)) => args.log_format,
        None => daemon_format(cli.run.log_format),
        _ => LogFormat::Text,
    };
    // A simulation reports everything itself; the daemon's own lines
    // (a tunable missing "on this kernel") would only mislead there.
    let simulated = matches!(cli.command, Some(Command::Replay(_)) | Some(Command::Policy(PolicyCommand::Test { .. })));
    init_logging(format, if simulated { "error" } else { "info" });
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
        Some(Command::Runtime(args)) => runtime_process(&args),
        Some(Command::New(args)) => new_policy(&args),
        Some(Command::Generate { what, out }) => {
            let written = match what {
                wasmtune::cli::Generated::Man => vec![wasmtune::generate::man_into(&out)?],
                wasmtune::cli::Generated::Completions => wasmtune::generate::completions_into(&out)?,
            };
            for path in written {
                println!("{}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::CheckConfig { file }) => check_config(file.as_deref()),
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
        Some(Command::Policy(PolicyCommand::Test { file, events, simulation, allow_denials, allow_faults, json })) => {
            policy_test(&file, &events, &simulation, allow_denials, allow_faults, json)
        }
        Some(Command::Replay(args)) => replay(&args),
        Some(Command::Policy(PolicyCommand::Sign { file, key, password_file })) => {
            policy_sign(&file, &key, password_file.as_deref())
        }
        Some(Command::Policy(PolicyCommand::Verify { file, keys, keys_dir, config, json })) => {
            policy_verify(&file, &keys, keys_dir.as_deref(), config.as_deref(), json)
        }
        Some(Command::Policy(PolicyCommand::Keygen { secret_key, public_key, no_password, password_file })) => {
            policy_keygen(&secret_key, &public_key, no_password, password_file.as_deref())
        }
        Some(Command::Policy(PolicyCommand::List(q))) => query(&q, &Request::PolicyList),
        Some(Command::Policy(PolicyCommand::Enable { name, query: q })) => query(&q, &Request::PolicyEnable { name }),
        Some(Command::Policy(PolicyCommand::Shadow { file, stop, query: q })) => {
            let request = match (file, stop) {
                (_, Some(name)) => Request::ShadowStop { name },
                (Some(file), None) => {
                    let file = std::path::absolute(&file).with_context(|| format!("{}", file.display()))?;
                    Request::ShadowStart { file: file.to_string_lossy().into_owned() }
                }
                (None, None) => anyhow::bail!("give a policy file, or --stop NAME"),
            };
            query(&q, &request)
        }
        Some(Command::Policy(PolicyCommand::Disable { name, query: q })) => query(&q, &Request::PolicyDisable { name }),
        Some(Command::Policy(PolicyCommand::Canary {
            file,
            netns,
            prefixes,
            metric,
            margin,
            window_seconds,
            compare,
            min_connections,
            min_bytes,
            query: q,
        })) => {
            let file = std::path::absolute(&file).with_context(|| format!("{}", file.display()))?;
            let health = wasmtune::canary::health::HealthRequest {
                metric,
                margin,
                window_seconds,
                compare,
                min_connections,
                min_bytes,
            };
            query(&q, &Request::CanaryStart { file: file.to_string_lossy().into_owned(), netns, prefixes, health })
        }
        Some(Command::Policy(PolicyCommand::Promote { name, query: q })) => query(&q, &Request::CanaryPromote { name }),
        Some(Command::Policy(PolicyCommand::Abort { name, query: q })) => query(&q, &Request::CanaryAbort { name }),
        Some(Command::Status(q)) => query(&q, &Request::Status),
        Some(Command::Metrics(q)) => query(&q, &Request::Metrics),
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

/// `wasmtune check-config [FILE]`: reads FILE as `run` would (syntax,
/// every key and value, the keys signatures need) and says what it found.
fn check_config(file: Option<&Path>) -> anyhow::Result<ExitCode> {
    let path = file.map_or_else(|| PathBuf::from(wasmtune::paths::DEFAULT_CONFIG), Path::to_path_buf);
    let checked = AdminConfig::load(&path, file.is_some()).and_then(|config| {
        wasmtune::trust::Trust::from_config(&config)?;
        Ok(config)
    });
    match checked {
        Ok(_) if file.is_none() && !path.exists() => {
            println!("{}: absent; every default applies", path.display());
            Ok(ExitCode::SUCCESS)
        }
        Ok(config) => {
            println!("{}: ok ({} policy section(s))", path.display(), config.policies.len());
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("wasmtune: {error}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `wasmtune new NAME`: writes a policy crate and says what to do next.
fn new_policy(args: &wasmtune::cli::NewArgs) -> anyhow::Result<ExitCode> {
    use wasmtune::scaffold::{SdkSource, scaffold};
    let sdk = SdkSource::choose(args.sdk.as_deref())?;
    let (dir, files) = scaffold(&args.name, &args.dir, &sdk)?;
    println!("created {} ({} files)", dir.display(), files.len());
    match &sdk {
        SdkSource::Path(path) => println!("  SDK: {} (builds offline)", path.display()),
        SdkSource::Registry => {
            println!("  SDK: wasmtune-sdk {} from the registry", wasmtune::scaffold::SDK_REQUIREMENT)
        }
    }
    println!("next:");
    println!("  cd {}", dir.display());
    println!("  cargo build --release --target wasm32-wasip2   # the component");
    println!("  cargo test                                     # the decision, natively");
    let wasm = format!("target/wasm32-wasip2/release/{}.wasm", args.name.replace('-', "_"));
    println!("  wasmtune policy test {wasm} --events events.jsonl   # the component, simulated kernel");
    println!("  (README.md: then in a daemon that decides but changes nothing)");
    Ok(ExitCode::SUCCESS)
}

/// `wasmtune runtime`: the process the daemon starts to run policies, with
/// its sockets at the descriptors the daemon put them.
fn runtime_process(args: &wasmtune::cli::RuntimeArgs) -> anyhow::Result<ExitCode> {
    use std::os::fd::{FromRawFd, OwnedFd};
    if args.self_test {
        let report = wasmtune::sandbox::self_test(args.netns_fd)?;
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    // SAFETY: the daemon opened these descriptors for this process and
    // nothing else in it uses them.
    let control = unsafe { OwnedFd::from_raw_fd(wasmtune::sandbox::CONTROL_FD) };
    wasmtune::runtime::process::run(control)?;
    Ok(ExitCode::SUCCESS)
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
    let image = PolicyImage::read(&bytes, source).with_context(|| format!("{file}: not a usable policy"))?;
    CompiledPolicy::compile(&engine, &bytes).with_context(|| format!("{file}: not a usable policy"))?;
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

/// The password a secret key is made or opened with: from a file, or asked.
fn password(file: Option<&Path>) -> anyhow::Result<Password> {
    Ok(match file {
        Some(file) => Password::from_file(file)?,
        None => Password::Prompt,
    })
}

/// Signs a policy file for daemons that require signatures.
fn policy_sign(file: &Path, key: &Path, password_file: Option<&Path>) -> anyhow::Result<ExitCode> {
    let signed = wasmtune::trust::sign::sign(file, key, password(password_file)?)?;
    println!("signed  {}", file.display());
    println!("key     {}", signed.key);
    println!("comment {}", signed.trusted_comment);
    println!("wrote   {}", signed.signature.display());
    Ok(ExitCode::SUCCESS)
}

/// Makes a key pair for signing policies.
fn policy_keygen(
    secret: &Path,
    public: &Path,
    no_password: bool,
    password_file: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let password = if no_password { Password::Unprotected } else { password(password_file)? };
    let id = wasmtune::trust::sign::keygen(secret, public, password)?;
    println!("key id      {id}");
    println!("secret key  {} (keep it private)", secret.display());
    println!("public key  {} (install it in the daemon's key directory, /etc/wasmtune/keys)", public.display());
    Ok(ExitCode::SUCCESS)
}

/// Checks a policy file as the daemon would before loading it: its
/// signature by a trusted key and the configuration's pin for its name.
/// Exit 0 when both hold (no pin is no objection), 1 otherwise.
fn policy_verify(
    file: &Path,
    keys: &[PathBuf],
    keys_dir: Option<&Path>,
    config: Option<&Path>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(file).with_context(|| format!("{}: cannot read", file.display()))?;
    let digest = wasmtune::runtime::engine::hex(&Sha256::digest(&bytes));
    let config_path = config.map_or_else(|| PathBuf::from(wasmtune::paths::DEFAULT_CONFIG), Path::to_path_buf);
    let config = AdminConfig::load(&config_path, config.is_some())?;
    let manifest = wasmtune::manifest::Manifest::from_component(&bytes).map_err(|e| e.to_string());
    let keyring = match (keys, keys_dir) {
        ([], Some(dir)) => Keyring::load_dir(dir),
        ([], None) => Keyring::load_dir(&config.keys_dir()),
        (keys, _) => Keyring::load_files(keys),
    };
    let signature = keyring
        .map_err(|e| e.to_string())
        .and_then(|keyring| wasmtune::trust::verify_signature(&keyring, file, &bytes).map_err(|e| e.to_string()));
    // The daemon holds a file to the pins of the name it gives itself
    // (`NAME.wasm`) and of the name in its manifest.
    let mut names: Vec<String> = file.file_stem().map(|s| s.to_string_lossy().into_owned()).into_iter().collect();
    if let Ok(m) = &manifest
        && !names.contains(&m.policy.name)
    {
        names.push(m.policy.name.clone());
    }
    let pins: Vec<(String, PolicyDigest)> =
        names.into_iter().filter_map(|name| Some((name.clone(), config.policy(&name).digest?))).collect();
    let pin_holds = pins.iter().all(|(_, pin)| pin.matches(&digest));
    let trusted = manifest.is_ok() && signature.is_ok() && pin_holds;
    if json {
        let out = serde_json::json!({
            "file": file,
            "policy": manifest.as_ref().ok().map(|m| &m.policy.name),
            "version": manifest.as_ref().ok().map(|m| &m.policy.version),
            "manifest-error": manifest.as_ref().err(),
            "digest": format!("{}{digest}", PolicyDigest::PREFIX),
            "signature": match &signature {
                Ok(good) => serde_json::json!({
                    "ok": true,
                    "key": good.key.to_string(),
                    "key-file": good.key_file,
                    "trusted-comment": good.trusted_comment,
                }),
                Err(error) => serde_json::json!({ "ok": false, "error": error }),
            },
            "pins": pins.iter().map(|(name, pin)| serde_json::json!({
                "policy": name,
                "digest": pin.to_string(),
                "matches": pin.matches(&digest),
            })).collect::<Vec<_>>(),
            "trusted": trusted,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("file      {}", file.display());
        match &manifest {
            Ok(m) => println!("policy    {} {}", m.policy.name, m.policy.version),
            Err(e) => println!("policy    not a policy: {e}"),
        }
        println!("digest    {}{digest}", PolicyDigest::PREFIX);
        match &signature {
            Ok(good) => {
                println!("signature good: key {} ({})", good.key, good.key_file.display());
                println!("comment   {}", good.trusted_comment);
            }
            Err(error) => println!("signature BAD: {error}"),
        }
        for (name, pin) in &pins {
            if pin.matches(&digest) {
                println!("pin       matches [policies.{name}] digest in {}", config_path.display());
            } else {
                println!("pin       DOES NOT MATCH: [policies.{name}] digest in {} is {pin}", config_path.display());
            }
        }
        if pins.is_empty() {
            println!("pin       none (to pin it: digest = \"{}{digest}\")", PolicyDigest::PREFIX);
        }
        println!("verdict   {}", if trusted { "trusted" } else { "refused" });
    }
    Ok(if trusted { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn init_logging(format: LogFormat, default_level: &str) {
    let filter = EnvFilter::try_from_env("WASMTUNE_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.with_target(false).init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).with_span_list(false).init(),
        LogFormat::Journal => match wasmtune::journald::JournaldLayer::connect() {
            Ok(journal) => {
                use tracing_subscriber::layer::SubscriberExt;
                use tracing_subscriber::util::SubscriberInitExt;
                let filter = EnvFilter::try_from_env("WASMTUNE_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
                tracing_subscriber::registry().with(filter).with(journal).init();
            }
            Err(e) => {
                builder.with_target(false).init();
                tracing::warn!(
                    "cannot log to the journal at {}: {e}; logging text to stderr",
                    wasmtune::journald::JOURNAL_SOCKET
                );
            }
        },
    }
}

/// Bad input to `policy test` or `replay`: said, exit 2.
fn input_error(error: impl std::fmt::Display) -> ExitCode {
    eprintln!("wasmtune: {error}");
    ExitCode::from(2)
}

/// The simulated kernel's starting values and the settings of `name`.
fn simulation_setup(args: &SimulationArgs, name: &str) -> Result<(simulate::StartingValues, RunSettings), String> {
    let initial = args.sysctls.iter().map(|a| simulate::parse_sysctl_arg(a)).collect::<Result<Vec<_>, _>>()?;
    let config = match &args.config {
        Some(path) => AdminConfig::load(path, true).map_err(|e| e.to_string())?,
        None => AdminConfig::default(),
    };
    let learning_rate = args.learning_rate.or(config.learning_rate).map_or(4, |r| r.get());
    let settings =
        RunSettings { learning_rate, policy: config.policy(name), limits: wasmtune::grants::HostLimits::detect() };
    Ok((initial, settings))
}

fn policy_test(
    file: &str,
    events: &Path,
    args: &SimulationArgs,
    allow_denials: bool,
    allow_faults: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let engine = Arc::new(PolicyEngine::new(None)?);
    let policy = match PolicyUnderTest::load(&engine, file) {
        Ok(policy) => Arc::new(policy),
        Err(error) => return Ok(input_error(error)),
    };
    let recording = match wasmtune::recording::read_file(events, Default::default()) {
        Ok(recording) => recording,
        Err(error) => return Ok(input_error(error)),
    };
    let (initial, settings) = match simulation_setup(args, policy.name()) {
        Ok(setup) => setup,
        Err(error) => return Ok(input_error(error)),
    };
    let report = match simulate::run_recording(engine, policy, &recording, &initial, &settings) {
        Ok(report) => report,
        Err(error) => return Ok(input_error(error)),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.text());
    }
    let failed = (report.faults > 0 && !allow_faults) || (report.denials > 0 && !allow_denials);
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn replay(args: &ReplayArgs) -> anyhow::Result<ExitCode> {
    if args.policies.len() > 2 {
        return Ok(input_error("replay compares at most two policies (--policy A --policy B)"));
    }
    let engine = Arc::new(PolicyEngine::new(None)?);
    let recording = match wasmtune::recording::read_file(&args.file, Default::default()) {
        Ok(recording) => recording,
        Err(error) => return Ok(input_error(error)),
    };
    let mut reports = Vec::new();
    for spec in &args.policies {
        let policy = match PolicyUnderTest::load(&engine, spec) {
            Ok(policy) => Arc::new(policy),
            Err(error) => return Ok(input_error(error)),
        };
        let (initial, settings) = match simulation_setup(&args.simulation, policy.name()) {
            Ok(setup) => setup,
            Err(error) => return Ok(input_error(error)),
        };
        match simulate::run_recording(engine.clone(), policy, &recording, &initial, &settings) {
            Ok(report) => reports.push(report),
            Err(error) => return Ok(input_error(error)),
        }
    }
    let events: usize = recording
        .inputs
        .iter()
        .map(|i| match &i.input {
            wasmtune::recording::Input::Events(e) => e.len(),
            wasmtune::recording::Input::Sysctl { .. } => 0,
        })
        .sum();
    let span = recording.inputs.last().map_or(0, |i| i.at_ms);
    match reports.as_slice() {
        [one] if args.json => println!("{}", serde_json::to_string_pretty(one)?),
        [one] => print!("{}", one.text()),
        [a, b] => {
            let comparison = simulate::report::Comparison::new(a, b);
            if args.json {
                let out = serde_json::json!({ "recording": args.file, "events": events, "comparison": comparison, "a": a, "b": b });
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                println!(
                    "replay {}: {} inputs, {events} events over {}.{:03} s",
                    args.file.display(),
                    recording.inputs.len(),
                    span / 1000,
                    span % 1000
                );
                print!("{}", comparison.text(a, b));
            }
        }
        _ => return Ok(input_error("replay needs --policy")),
    }
    Ok(ExitCode::SUCCESS)
}
