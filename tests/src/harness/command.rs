//! Running the system tools the harness drives (`ip`, `ethtool`, ...) and
//! turning their failures into errors that show the command line.

use std::process::{Command, Stdio};

use super::HarnessError;

/// The command line of `cmd` as a shell would show it.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// Runs `cmd` to completion and returns its standard output; a non-zero exit
/// is an error carrying its standard error.
pub fn run(cmd: &mut Command) -> Result<String, HarnessError> {
    let command = describe(cmd);
    let output =
        cmd.stdin(Stdio::null()).output().map_err(|source| HarnessError::Spawn { command: command.clone(), source })?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    Err(HarnessError::CommandFailed {
        command,
        status: output.status,
        stderr: if stderr.is_empty() { stdout.trim().to_string() } else { stderr },
    })
}

/// `run` for a program and its arguments.
pub(crate) fn run_args(program: &str, args: &[&str]) -> Result<String, HarnessError> {
    run(Command::new(program).args(args))
}
