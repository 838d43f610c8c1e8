//! `longrun operations …`: a client for the REST API.
//!
//! Operations print as JSON by default (what Google's clients receive);
//! `list` and `watch` default to a table. Tables show each operation's
//! standard state, progress, verb and times, which longrun's view of an
//! operation carries whatever the producer's metadata type. Colours and
//! progress bars appear only on a terminal (and never with `NO_COLOR`).

use std::collections::HashMap;
use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use comfy_table::{Cell, Color, Table, presets::UTF8_FULL_CONDENSED};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::cli::{Format, OperationsArgs, OperationsCommand};
use longrun_client::{
    Client, CompleteRequest, CreateRequest, ListOptions, Metadata, Operation, Status, UpdateRequest, WatchEvent,
};
use longrun_types::Code;

/// The operation failed or was cancelled (SPEC §6).
const EXIT_FAILED: u8 = 1;
/// Usage or server error, and a `wait` that timed out.
const EXIT_ERROR: u8 = 2;

pub async fn run(args: OperationsArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.endpoint, args.token)?;
    let format = args.format;
    let out = Output::new(format.unwrap_or(Format::Json));
    match args.command {
        OperationsCommand::List {
            parent,
            filter,
            page_size,
            limit,
        } => {
            let operations = list(&client, &parent, filter, page_size, limit).await?;
            let out = Output::new(format.unwrap_or(Format::Table));
            match out.format {
                Format::Table => println!("{}", out.table(&operations)),
                Format::Json | Format::Yaml => out.print(&serde_json::to_value(&operations)?)?,
            }
        }
        OperationsCommand::Watch { parent, filter } => {
            return watch(&client, &parent, &filter, Output::new(format.unwrap_or(Format::Table))).await;
        }
        OperationsCommand::Describe { name } => {
            check_name(&name)?;
            out.operation(&client.get(&name).await?)?;
        }
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
            out.operation(&client.create(&parent, &request).await?)?;
        }
        OperationsCommand::Cancel { name } => {
            check_name(&name)?;
            client.cancel(&name).await?;
            eprintln!("cancellation requested for {name}");
        }
        OperationsCommand::Delete { name } => {
            check_name(&name)?;
            client.delete(&name).await?;
            eprintln!("deleted {name}");
        }
        OperationsCommand::Wait { name, timeout } => {
            check_name(&name)?;
            return wait(&client, &name, timeout, &out).await;
        }
        OperationsCommand::Update {
            name,
            progress,
            detail,
            metadata,
            lease_token,
        } => {
            check_name(&name)?;
            if progress.is_none() && detail.is_none() && metadata.is_none() {
                bail!("nothing to update: give --progress, --detail or --metadata");
            }
            let request = UpdateRequest {
                lease_token,
                progress_percent: progress,
                status_detail: detail,
                metadata: metadata.map(|text| parse_json("--metadata", &text)).transpose()?,
            };
            let response = client.update(&name, &request).await?;
            let mut answer = json!({ "cancelRequested": response.cancel_requested });
            if let Some(expiry) = response.lease_expire_time {
                answer["leaseExpireTime"] = Value::String(expiry);
            }
            out.print(&answer)?;
        }
        OperationsCommand::Complete {
            name,
            response,
            error_code,
            error_message,
            retryable,
            lease_token,
        } => {
            check_name(&name)?;
            let error = match (error_code, error_message) {
                (Some(code), Some(message)) => Some(Status {
                    code: parse_code(&code)?,
                    message,
                    details: Vec::new(),
                }),
                _ => None,
            };
            if error.is_none() && response.is_none() {
                bail!("give --response, or --error-code and --error-message");
            }
            let request = CompleteRequest {
                lease_token,
                response: response.map(|text| parse_json("--response", &text)).transpose()?,
                error,
                retryable,
            };
            out.operation(&client.complete(&name, &request).await?)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Refuses what cannot be an operation's name (`…/operations/ID`): a
/// collection, say, which the server would read as something else.
fn check_name(name: &str) -> anyhow::Result<()> {
    let segments: Vec<&str> = name.split('/').collect();
    let is_operation = segments.len() >= 2
        && segments.len().is_multiple_of(2)
        && segments[segments.len() - 2] == "operations"
        && segments.iter().all(|segment| !segment.is_empty());
    if is_operation {
        return Ok(());
    }
    let parent = name.strip_suffix("/operations").unwrap_or(name);
    if name == "operations" || name.ends_with("/operations") {
        bail!(
            "{name:?} is a collection, not an operation; to see the operations in it run `longrun operations list {parent}`"
        );
    }
    bail!("{name:?} is not an operation name; operation names end in /operations/ID, e.g. projects/demo/operations/123")
}

/// A code by name (`NOT_FOUND`) or number (`5`).
fn parse_code(text: &str) -> anyhow::Result<i32> {
    if let Ok(number) = text.parse::<i32>() {
        return Ok(number);
    }
    Code::from_name(&text.to_ascii_uppercase())
        .map(Code::as_i32)
        .with_context(|| format!("--error-code {text:?} is neither a code name (e.g. NOT_FOUND) nor a number"))
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

/// How results are printed on stdout.
struct Output {
    format: Format,
    /// Stdout is a terminal and colours are not turned off.
    colour: bool,
}

impl Output {
    fn new(format: Format) -> Self {
        let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        Self { format, colour }
    }

    fn print(&self, value: &Value) -> anyhow::Result<()> {
        match self.format {
            Format::Yaml => print!("{}", serde_yaml_ng::to_string(value)?),
            Format::Json | Format::Table => println!("{}", serde_json::to_string_pretty(value)?),
        }
        Ok(())
    }

    /// One operation: JSON or YAML as Google's `Operation`, or a table of
    /// its standard fields.
    fn operation(&self, operation: &Operation) -> anyhow::Result<()> {
        if self.format != Format::Table {
            return self.print(&serde_json::to_value(operation)?);
        }
        let metadata = operation.standard_metadata().unwrap_or_default();
        let mut table = self.new_table();
        let mut row = |key: &str, value: Cell| {
            table.add_row([Cell::new(key), value]);
        };
        row("name", Cell::new(&operation.name));
        row("state", self.state_cell(operation));
        row("progress", Cell::new(format!("{}%", metadata.progress_percent)));
        for (key, value) in [
            ("detail", &metadata.status_detail),
            ("verb", &metadata.verb),
            ("target", &metadata.target),
        ] {
            if !value.is_empty() {
                row(key, Cell::new(value));
            }
        }
        for (key, value) in [
            ("created", &metadata.create_time),
            ("updated", &metadata.update_time),
            ("ended", &metadata.end_time),
        ] {
            if let Some(value) = value {
                row(key, Cell::new(value));
            }
        }
        if let Some(error) = &operation.error {
            let code = Code::from_i32(error.code).map_or_else(|| error.code.to_string(), |code| code.to_string());
            row("error", Cell::new(format!("{code}: {}", error.message)));
        }
        println!("{table}");
        Ok(())
    }

    fn new_table(&self) -> Table {
        let mut table = Table::new();
        table.load_preset(UTF8_FULL_CONDENSED);
        if self.colour {
            table.enforce_styling();
        } else {
            table.force_no_tty();
        }
        table
    }

    fn table(&self, operations: &[Operation]) -> Table {
        let mut table = self.new_table();
        table.set_header(["NAME", "STATE", "PROGRESS", "VERB", "TARGET", "CREATED"]);
        for operation in operations {
            let metadata = operation.standard_metadata().unwrap_or_default();
            table.add_row([
                Cell::new(&operation.name),
                self.state_cell(operation),
                Cell::new(format!("{}%", metadata.progress_percent)),
                Cell::new(metadata.verb),
                Cell::new(metadata.target),
                Cell::new(metadata.create_time.unwrap_or_default()),
            ]);
        }
        table
    }

    fn state_cell(&self, operation: &Operation) -> Cell {
        let state = state(operation);
        let colour = match state.as_str() {
            "SUCCEEDED" => Color::Green,
            "FAILED" => Color::Red,
            "CANCELLED" => Color::Yellow,
            "RUNNING" => Color::Blue,
            _ => Color::Reset,
        };
        let cell = Cell::new(state);
        if self.colour { cell.fg(colour) } else { cell }
    }
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

/// `STATE 40% detail`: one line of progress.
fn progress_line(operation: &Operation) -> String {
    let metadata = operation.standard_metadata().unwrap_or_default();
    let mut line = format!("{} {}%", state(operation), metadata.progress_percent);
    if !metadata.status_detail.is_empty() {
        line.push(' ');
        line.push_str(&metadata.status_detail);
    }
    line
}

/// What an operation does, for people: `import projects/p/datasets/d`.
fn describe_work(metadata: &Metadata) -> String {
    [metadata.verb.as_str(), metadata.target.as_str()]
        .into_iter()
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn percent(metadata: &Metadata) -> u64 {
    u64::try_from(metadata.progress_percent.clamp(0, 100)).unwrap_or(0)
}

async fn wait(client: &Client, name: &str, timeout: std::time::Duration, out: &Output) -> anyhow::Result<ExitCode> {
    let first = client.get(name).await?;
    let work = describe_work(&first.standard_metadata().unwrap_or_default());
    let what = if work.is_empty() {
        String::new()
    } else {
        format!(" ({work})")
    };
    eprintln!(
        "waiting for {name}{what}, at most {}",
        humantime::format_duration(timeout)
    );
    // A bar on a terminal; elsewhere (CI logs, pipes) a line per change.
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(100);
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{bar:40}] {pos:>3}% {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar
    });
    let mut last_line = String::new();
    let operation = if first.done {
        first
    } else {
        client
            .poll_until_done(name, timeout, |operation| {
                let metadata = operation.standard_metadata().unwrap_or_default();
                match &bar {
                    Some(bar) => {
                        bar.set_position(percent(&metadata));
                        bar.set_message(format!("{} {}", state(operation), metadata.status_detail));
                        bar.tick();
                    }
                    None => {
                        let line = progress_line(operation);
                        if line != last_line {
                            eprintln!("{name}: {line}");
                            last_line = line;
                        }
                    }
                }
            })
            .await?
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    out.operation(&operation)?;
    if !operation.done {
        eprintln!("{name} is still running after {}", humantime::format_duration(timeout));
        return Ok(ExitCode::from(EXIT_ERROR));
    }
    match &operation.error {
        Some(error) => {
            eprintln!("{name} {}: {}", state(&operation).to_lowercase(), error.message);
            Ok(ExitCode::from(EXIT_FAILED))
        }
        None => {
            eprintln!("{name} succeeded");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Follows a watch stream until Ctrl-C: on a terminal a live bar for each
/// operation not yet done and a line as each one ends; elsewhere a line per
/// change (or a JSON/YAML document per event with --format).
async fn watch(client: &Client, parent: &str, filter: &str, out: Output) -> anyhow::Result<ExitCode> {
    let mut stream = client.watch(parent, filter).await?;
    let mut screen = Screen::new(out);
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            _ = &mut interrupted => break,
            event = stream.next() => match screen.show(event?) {
                Ok(()) => {}
                // The reader went away (`watch … | head`): done, quietly.
                Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => break,
                Err(err) => return Err(err.into()),
            },
        }
    }
    screen.bars.clear().ok();
    Ok(ExitCode::SUCCESS)
}

/// What `watch` shows.
struct Screen {
    out: Output,
    /// Draws bars only when stdout is a terminal and the format is a table.
    live: bool,
    bars: MultiProgress,
    running: HashMap<String, ProgressBar>,
    synced: bool,
    /// Operations in the snapshot, and how many of them are not done.
    seen: usize,
    open: usize,
}

impl Screen {
    fn new(out: Output) -> Self {
        let live = out.format == Format::Table && std::io::stdout().is_terminal();
        let bars = MultiProgress::with_draw_target(if live {
            indicatif::ProgressDrawTarget::stdout()
        } else {
            indicatif::ProgressDrawTarget::hidden()
        });
        Self {
            out,
            live,
            bars,
            running: HashMap::new(),
            synced: false,
            seen: 0,
            open: 0,
        }
    }

    /// A line above the bars (or just a line).
    fn say(&self, line: &str) -> std::io::Result<()> {
        if self.live {
            self.bars.println(line)
        } else {
            writeln!(std::io::stdout(), "{line}")
        }
    }

    fn show(&mut self, event: WatchEvent) -> std::io::Result<()> {
        if self.out.format != Format::Table {
            return self.document(&event);
        }
        match event {
            WatchEvent::Operation(operation) => self.operation(&operation)?,
            WatchEvent::Removed { name, deleted } => {
                self.end_bar(&name);
                self.say(&format!(
                    "{name} {}",
                    if deleted { "deleted" } else { "no longer matches" }
                ))?;
            }
            WatchEvent::Synced if !self.synced => {
                self.synced = true;
                self.say(&format!(
                    "{} operations, {} not done; following changes (Ctrl-C to stop)",
                    self.seen, self.open
                ))?;
            }
            WatchEvent::Reset => {
                for (_, bar) in self.running.drain() {
                    bar.finish_and_clear();
                }
                self.synced = false;
                self.seen = 0;
                self.open = 0;
            }
            WatchEvent::Reconnecting { reason } => self.say(&format!("reconnecting: {reason}"))?,
            _ => {}
        }
        Ok(())
    }

    fn operation(&mut self, operation: &Operation) -> std::io::Result<()> {
        if !self.synced {
            self.seen += 1;
            self.open += usize::from(!operation.done);
        }
        let metadata = operation.standard_metadata().unwrap_or_default();
        if operation.done {
            let had_bar = self.end_bar(&operation.name);
            // Done ones in the snapshot are history, not news.
            if had_bar || self.synced || !self.live {
                self.say(&format!("{} {}", operation.name, progress_line(operation)))?;
            }
            return Ok(());
        }
        if !self.live {
            return self.say(&format!("{} {}", operation.name, progress_line(operation)));
        }
        let bar = self.running.entry(operation.name.clone()).or_insert_with(|| {
            let bar = self.bars.add(ProgressBar::new(100));
            bar.set_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos:>3}% {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_prefix(operation.name.clone());
            bar
        });
        bar.set_position(percent(&metadata));
        bar.set_message(format!("{} {}", state(operation), metadata.status_detail));
        Ok(())
    }

    /// Removes an operation's bar; true if it had one.
    fn end_bar(&mut self, name: &str) -> bool {
        match self.running.remove(name) {
            Some(bar) => {
                bar.finish_and_clear();
                self.bars.remove(&bar);
                true
            }
            None => false,
        }
    }

    /// `--format json|yaml`: each event as one document (JSON: one line).
    fn document(&self, event: &WatchEvent) -> std::io::Result<()> {
        let value = match event {
            WatchEvent::Operation(operation) => json!({
                "event": "operation",
                "operation": operation,
                "standard": operation.standard_metadata(),
            }),
            WatchEvent::Removed { name, deleted } => json!({"event": "removed", "name": name, "deleted": deleted}),
            WatchEvent::Synced => json!({"event": "synced"}),
            WatchEvent::Reset => json!({"event": "reset"}),
            WatchEvent::Reconnecting { reason } => json!({"event": "reconnecting", "reason": reason}),
            _ => return Ok(()),
        };
        let text = match self.out.format {
            Format::Yaml => format!(
                "---\n{}",
                serde_yaml_ng::to_string(&value).map_err(std::io::Error::other)?
            ),
            Format::Json | Format::Table => format!("{value}\n"),
        };
        std::io::stdout().write_all(text.as_bytes())
    }
}
