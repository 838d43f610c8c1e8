//! Any text: the filter parser never panics, stays within its limits, and
//! what it accepts prints to text that parses back to the same filter
//! (when that text is within the length limit).
#![no_main]

use libfuzzer_sys::fuzz_target;
use longrun_types::filter::arbitrary::FixtureSchema;
use longrun_types::filter::{Filter, MAX_LENGTH};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(filter) = Filter::parse_with(text, &FixtureSchema) else {
        return;
    };
    assert!(text.len() <= MAX_LENGTH);
    let printed = filter.to_string();
    // The canonical text can be longer than the input (`AND` for adjacency,
    // full type URLs); past the length limit it is refused like any input.
    if printed.len() > MAX_LENGTH {
        return;
    }
    match Filter::parse_with(&printed, &FixtureSchema) {
        Ok(reparsed) => assert_eq!(reparsed, filter, "{text:?} printed as {printed:?}"),
        Err(err) => panic!("{text:?} printed as {printed:?}, which does not parse: {err}"),
    }
});
