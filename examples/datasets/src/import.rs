//! The import handler: reads a CSV file and summarises each column, with
//! progress, typed metadata and cancellation.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use longrun_runtime::{Context, Error, Handler, async_trait};
use longrun_types::Code;

use crate::proto::{Column, Dataset, ImportDatasetMetadata, ImportDatasetRequest};

/// How often the reader reports how far it got.
const REPORT_EVERY: Duration = Duration::from_millis(200);

#[derive(Debug)]
pub struct Import {
    /// Rows per second at most; 0 for no limit.
    pub throttle: u32,
}

/// How far the reader got: rows read and bytes consumed.
type Progress = (u64, u64);

#[async_trait]
impl Handler for Import {
    type Input = ImportDatasetRequest;
    type Output = Dataset;
    type Metadata = ImportDatasetMetadata;

    async fn run(&self, ctx: Context<ImportDatasetMetadata>, input: ImportDatasetRequest) -> Result<Dataset, Error> {
        let path = PathBuf::from(&input.source_path);
        let size = std::fs::metadata(&path)
            .map_err(|err| match err.kind() {
                std::io::ErrorKind::NotFound => {
                    Error::fatal(Code::NotFound, format!("{} does not exist", path.display()))
                }
                _ => Error::fatal(
                    Code::FailedPrecondition,
                    format!("cannot read {}: {err}", path.display()),
                ),
            })?
            .len()
            .max(1);
        // Parsing is blocking work: it runs on its own thread and reports
        // over a channel, and stops when `stop` is set.
        let stop = Arc::new(AtomicBool::new(false));
        let (progress, mut reports) = tokio::sync::mpsc::channel::<Progress>(8);
        let reader = tokio::task::spawn_blocking({
            let (stop, throttle, dataset) = (stop.clone(), self.throttle, input.dataset.clone());
            move || summarise(&path, &dataset, throttle, &stop, &progress)
        });
        loop {
            tokio::select! {
                report = reports.recv() => match report {
                    Some((rows, bytes)) => {
                        let percent = i32::try_from(bytes.saturating_mul(100) / size).unwrap_or(100).min(99);
                        let metadata = ImportDatasetMetadata { dataset: input.dataset.clone(), phase: "reading".into(), rows_read: i64::try_from(rows).unwrap_or(i64::MAX) };
                        ctx.set_metadata(&metadata).await?;
                        ctx.progress(percent, format!("{rows} rows read")).await?;
                    }
                    None => break,
                },
                () = ctx.cancelled() => {
                    stop.store(true, Ordering::SeqCst);
                    break;
                }
            }
        }
        let dataset = reader
            .await
            .map_err(|err| Error::fatal(Code::Internal, format!("the reader failed: {err}")))??;
        let metadata = ImportDatasetMetadata {
            dataset: input.dataset,
            phase: "done".into(),
            rows_read: dataset.row_count,
        };
        ctx.set_metadata(&metadata).await?;
        ctx.progress(
            100,
            format!("{} rows in {} columns", dataset.row_count, dataset.columns.len()),
        )
        .await?;
        Ok(dataset)
    }
}

/// One column's running statistics.
struct Stats {
    name: String,
    filled: i64,
    numeric: bool,
    min: f64,
    max: f64,
    sum: f64,
}

impl Stats {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            filled: 0,
            numeric: true,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            sum: 0.0,
        }
    }

    fn add(&mut self, value: &str) {
        let value = value.trim();
        if value.is_empty() {
            return;
        }
        self.filled += 1;
        match value.parse::<f64>() {
            Ok(number) if self.numeric && number.is_finite() => {
                self.min = self.min.min(number);
                self.max = self.max.max(number);
                self.sum += number;
            }
            _ => self.numeric = false,
        }
    }

    fn finish(self) -> Column {
        let numeric = self.numeric && self.filled > 0;
        Column {
            name: self.name,
            filled: self.filled,
            numeric,
            min: if numeric { self.min } else { 0.0 },
            max: if numeric { self.max } else { 0.0 },
            mean: if numeric { self.sum / self.filled as f64 } else { 0.0 },
        }
    }
}

fn summarise(
    path: &Path,
    dataset: &str,
    throttle: u32,
    stop: &AtomicBool,
    progress: &tokio::sync::mpsc::Sender<Progress>,
) -> Result<Dataset, Error> {
    let invalid = |err: csv::Error| {
        Error::fatal(
            Code::InvalidArgument,
            format!("{} is not valid CSV: {err}", path.display()),
        )
    };
    let mut reader = csv::Reader::from_path(path).map_err(invalid)?;
    let mut columns: Vec<Stats> = reader.headers().map_err(invalid)?.iter().map(Stats::new).collect();
    let mut record = csv::StringRecord::new();
    let mut rows: u64 = 0;
    let mut reported = Instant::now();
    while reader.read_record(&mut record).map_err(invalid)? {
        if stop.load(Ordering::SeqCst) {
            return Err(Error::cancelled());
        }
        rows += 1;
        for (stats, value) in columns.iter_mut().zip(record.iter()) {
            stats.add(value);
        }
        if throttle > 0 && rows.is_multiple_of(10) {
            std::thread::sleep(Duration::from_secs_f64(10.0 / f64::from(throttle)));
        }
        if reported.elapsed() >= REPORT_EVERY {
            // A full channel only means the last report is still being sent.
            let _ = progress.try_send((rows, reader.position().byte()));
            reported = Instant::now();
        }
    }
    Ok(Dataset {
        name: dataset.to_owned(),
        row_count: i64::try_from(rows).unwrap_or(i64::MAX),
        columns: columns.into_iter().map(Stats::finish).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_summarised() {
        let mut population = Stats::new("population");
        for value in ["10", "30", "", "20"] {
            population.add(value);
        }
        let column = population.finish();
        assert_eq!(
            (column.filled, column.numeric, column.min, column.max, column.mean),
            (3, true, 10.0, 30.0, 20.0)
        );
        let mut city = Stats::new("city");
        city.add("Lyon");
        city.add("12");
        let column = city.finish();
        assert_eq!((column.filled, column.numeric, column.mean), (2, false, 0.0));
    }
}
