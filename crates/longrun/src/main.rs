//! The `longrun` binary: `serve` runs the server; `operations …` is a
//! client for it (and for any google.longrunning REST API). This file only
//! wires configuration, logging and the subcommands together.

mod cli;
mod config;
mod operations;
mod serve;
mod token;
mod worker;

use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _};

use crate::cli::{Cli, Command};

/// jemalloc: a quarter less server CPU per Get than glibc's allocator
/// (decision 50; BENCHMARKS.md, Get ÷ healthz).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Usage or server error (SPEC §6).
const EXIT_ERROR: u8 = 2;

fn main() -> ExitCode {
    let command = match config::apply(Cli::command()) {
        Ok(command) => command,
        Err(err) => {
            eprintln!("error: {err:#}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let cli = match Cli::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args).await.map(|()| ExitCode::SUCCESS),
            Command::Operations(args) => operations::run(args).await,
            Command::Worker(args) => worker::run(args).await.map(|()| ExitCode::SUCCESS),
            Command::Token(command) => token::run(command).map(|()| ExitCode::SUCCESS),
            Command::Completions { shell } => {
                clap_complete::generate(shell, &mut Cli::command(), "longrun", &mut std::io::stdout());
                Ok(ExitCode::SUCCESS)
            }
        }
    });
    result.unwrap_or_else(|err| {
        eprintln!("error: {err:#}");
        ExitCode::from(EXIT_ERROR)
    })
}
