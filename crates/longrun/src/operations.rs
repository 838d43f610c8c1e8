//! `longrun operations …`: a client for the REST API.

use std::process::ExitCode;

use anyhow::Context as _;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::cli::{Format, OperationsArgs, OperationsCommand};
use longrun_client::{Client, CreateRequest, ListOptions, Operation};

/// The operation failed or was cancelled (SPEC §6).
const EXIT_FAILED: u8 = 1;
/// Usage or server error, and a `wait` that timed out.
const EXIT_ERROR: u8 = 2;

pub async fn run(args: OperationsArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.endpoint, args.token)?;
    match args.command {
        OperationsCommand::List {
            parent,
            filter,
            page_size,
            limit,
            format,
        } => {
            let operations = list(&client, &parent, filter, page_size, limit).await?;
            match format {
                Format::Json => print_json(&serde_json::to_value(&operations)?),
                Format::Table => println!("{}", table(&operations)),
            }
        }
        OperationsCommand::Describe { name } => print_json(&serde_json::to_value(client.get(&name).await?)?),
        OperationsCommand::Create {
            parent,
            queue,
            input,
            metadata,
            operation_id,
            request_id,
            verb,
            target,
            api_version,
            max_attempts,
            timeout,
        } => {
            let request = CreateRequest {
                operation_id,
                request_id,
                queue,
                input: input.map(|text| parse_json("--input", &text)).transpose()?,
                metadata: metadata.map(|text| parse_json("--metadata", &text)).transpose()?,
                verb,
                target,
                api_version,
                max_attempts,
                timeout: timeout.map(longrun_client::duration_json),
            };
            print_json(&serde_json::to_value(client.create(&parent, &request).await?)?);
        }
        OperationsCommand::Cancel { name } => {
            client.cancel(&name).await?;
            eprintln!("cancellation requested for {name}");
        }
        OperationsCommand::Delete { name } => {
            client.delete(&name).await?;
            eprintln!("deleted {name}");
        }
        OperationsCommand::Wait { name, timeout } => return wait(&client, &name, timeout).await,
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(
    client: &Client,
    parent: &str,
    filter: String,
    page_size: i32,
    limit: usize,
) -> anyhow::Result<Vec<Operation>> {
    let mut options = ListOptions {
        filter,
        page_size,
        page_token: String::new(),
    };
    let mut operations = Vec::new();
    loop {
        let page = client.list(parent, &options).await?;
        operations.extend(page.operations);
        if page.next_page_token.is_empty() || operations.len() >= limit {
            operations.truncate(limit);
            return Ok(operations);
        }
        options.page_token = page.next_page_token;
    }
}

fn parse_json(flag: &str, text: &str) -> anyhow::Result<Value> {
    serde_json::from_str(text).with_context(|| format!("{flag} is not valid JSON"))
}

fn print_json(value: &Value) {
    // Serialising a Value cannot fail.
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

fn state(operation: &Operation) -> String {
    match (operation.standard_metadata(), &operation.error) {
        (Some(metadata), _) if !metadata.state.is_empty() => metadata.state,
        (_, Some(_)) if operation.cancelled() => "CANCELLED".into(),
        (_, Some(_)) => "FAILED".into(),
        _ if operation.done => "SUCCEEDED".into(),
        _ => "RUNNING".into(),
    }
}

fn table(operations: &[Operation]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(["NAME", "STATE", "PROGRESS", "VERB", "TARGET", "CREATED"]);
    for operation in operations {
        let metadata = operation.standard_metadata().unwrap_or_default();
        table.add_row([
            operation.name.clone(),
            state(operation),
            format!("{}%", metadata.progress_percent),
            metadata.verb,
            metadata.target,
            metadata.create_time.unwrap_or_default(),
        ]);
    }
    table
}

async fn wait(client: &Client, name: &str, timeout: std::time::Duration) -> anyhow::Result<ExitCode> {
    let bar = ProgressBar::new(100);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:40}] {pos:>3}% {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let operation = client
        .poll_until_done(name, timeout, |operation| {
            let metadata = operation.standard_metadata().unwrap_or_default();
            bar.set_position(u64::try_from(metadata.progress_percent.clamp(0, 100)).unwrap_or(0));
            bar.set_message(format!("{} {}", state(operation), metadata.status_detail));
            bar.tick();
        })
        .await?;
    bar.finish_and_clear();
    print_json(&serde_json::to_value(&operation)?);
    if !operation.done {
        eprintln!("{name} is still running after {}", humantime::format_duration(timeout));
        return Ok(ExitCode::from(EXIT_ERROR));
    }
    match &operation.error {
        Some(error) => {
            eprintln!("{name} {}: {}", state(&operation).to_lowercase(), error.message);
            Ok(ExitCode::from(EXIT_FAILED))
        }
        None => Ok(ExitCode::SUCCESS),
    }
}
