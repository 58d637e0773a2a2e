//! The `keygate` binary: parse the command line, dispatch, exit with the command's code.

use std::process::ExitCode;

use clap::Parser as _;
use keygate_server::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            // The whole context chain on one line: "reading --jwks x: No such file".
            eprintln!("keygate: error: {}", cli::error_message(&err));
            ExitCode::from(cli::EXIT_USAGE)
        }
    }
}
