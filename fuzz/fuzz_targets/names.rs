//! Any text as an operation name or a list parent: parsing never panics,
//! what parses is within the limits and prints back as it was written, and
//! nothing that parses can escape its path (no empty, `.` or `..`
//! segments).
#![no_main]

use libfuzzer_sys::fuzz_target;
use longrun_types::{MAX_NAME, OperationName, Parent};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let safe = |path: &str| {
        path.len() <= MAX_NAME
            && path
                .split('/')
                .all(|segment| !segment.is_empty() && segment != "." && segment != ".." && !segment.contains('%'))
    };
    if let Ok(name) = OperationName::parse(text) {
        assert_eq!(name.to_string(), text);
        assert!(safe(text), "{text:?}");
        assert!(!name.parent().has_wildcard());
        assert_eq!(OperationName::new(name.parent().clone(), name.id()).unwrap(), name);
    }
    if let Ok(parent) = Parent::parse_pattern(text) {
        assert_eq!(parent.as_str(), text);
        assert!(text.is_empty() || safe(text), "{text:?}");
        if Parent::parse(text).is_ok() {
            assert!(!parent.has_wildcard());
            assert!(parent.matches(&Parent::parse(text).unwrap()));
        }
    }
});
