//! Times as microseconds since the Unix epoch: how SQLite keeps them, how
//! every backend indexes custom time fields, and how page positions carry
//! creation times. Writes and filter comparisons share this one encoding so
//! they always agree.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn micros(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_micros()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_micros()).unwrap_or(i64::MAX),
    }
}

pub fn from_micros(value: i64) -> SystemTime {
    if value >= 0 {
        UNIX_EPOCH + Duration::from_micros(value.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_micros(value.unsigned_abs())
    }
}

pub fn micros_of(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}
