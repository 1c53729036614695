//! `keelson`, the CNI plugin binary: reads `CNI_*` variables and the configuration on stdin, runs the
//! command and prints its result, or the CNI error JSON and exits with status 1.

use std::io::{Read, Write};
use std::process::ExitCode;

use cni_plugin::config::{self, LATEST_VERSION};
use cni_plugin::env::Invocation;
use cni_plugin::{CniError, ErrorCode};

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    let outcome = std::io::stdin()
        .read_to_end(&mut stdin)
        .map_err(|error| CniError::new(ErrorCode::Io, "failed to read the network configuration", error.to_string()))
        .and_then(|_| Invocation::from_vars(|name| std::env::var(name).ok()).map_err(CniError::from))
        .and_then(|invocation| cni_plugin::run(&invocation, &stdin));
    let mut stdout = std::io::stdout().lock();
    match outcome {
        Ok(output) => {
            if let Some(output) = output {
                let _ = writeln!(stdout, "{output}");
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            let version = config::peek_version(&stdin).unwrap_or_else(|| LATEST_VERSION.to_owned());
            let _ = writeln!(stdout, "{}", error.to_json(&version));
            let _ = writeln!(std::io::stderr(), "keelson: {error}");
            ExitCode::FAILURE
        }
    }
}
