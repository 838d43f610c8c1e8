//! The config file: a TOML table whose keys are long flag names. Its values
//! become the flags' defaults, so the precedence is flag > `LONGRUN_*`
//! variable > config file > built-in default.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Command;

/// Finds `--config FILE` (or `LONGRUN_CONFIG`) before clap parses, and
/// turns the file's keys into defaults of every subcommand that has them.
pub fn apply(command: Command) -> anyhow::Result<Command> {
    let Some(path) = config_path() else {
        return Ok(command);
    };
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read config file {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("config file {} is not valid TOML", path.display()))?;
    let mut command = command;
    for (key, value) in table {
        let flag = key.replace('_', "-");
        let values: Vec<String> = match value {
            toml::Value::Array(items) => items.iter().map(scalar).collect::<anyhow::Result<_>>()?,
            other => vec![scalar(&other)?],
        };
        let (updated, found) = set_default(command, &flag, &values);
        command = updated;
        if !found {
            bail!(
                "config file {}: unknown key {key:?}; keys are long flag names such as \"max-wait\"",
                path.display()
            );
        }
    }
    Ok(command)
}

fn scalar(value: &toml::Value) -> anyhow::Result<String> {
    Ok(match value {
        toml::Value::String(text) => text.clone(),
        toml::Value::Integer(number) => number.to_string(),
        toml::Value::Boolean(flag) => flag.to_string(),
        toml::Value::Float(number) => number.to_string(),
        other => bail!("config value {other} must be a string, number, boolean or a list of them"),
    })
}

/// Sets the default of every argument named `flag`, in all subcommands.
fn set_default(command: Command, flag: &str, values: &[String]) -> (Command, bool) {
    let mut found = false;
    let ids: Vec<String> = command
        .get_arguments()
        .filter(|arg| arg.get_long() == Some(flag))
        .map(|arg| arg.get_id().to_string())
        .collect();
    let mut command = command;
    for id in ids {
        found = true;
        let values: Vec<clap::builder::OsStr> = values
            .iter()
            .map(|v| clap::builder::OsStr::from(clap::builder::Str::from(v.clone())))
            .collect();
        command = command.mut_arg(id, |arg| arg.default_values(values));
    }
    let names: Vec<String> = command.get_subcommands().map(|sub| sub.get_name().to_owned()).collect();
    for name in names {
        let mut sub_found = false;
        command = command.mut_subcommand(name, |sub| {
            let (sub, hit) = set_default(sub, flag, values);
            sub_found = hit;
            sub
        });
        found |= sub_found;
    }
    (command, found)
}

fn config_path() -> Option<PathBuf> {
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        if text == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = text.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
        if text == "--" {
            break;
        }
    }
    std::env::var_os("LONGRUN_CONFIG").map(PathBuf::from)
}
