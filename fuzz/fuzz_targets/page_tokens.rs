//! Page tokens under attack: any text redeems to an error, never a panic;
//! a token issued for a cursor, parent and filter redeems to that cursor;
//! and flipping any one of its characters, or asking with another parent
//! or filter, is refused.
#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use longrun_server::PageTokens;
use longrun_store::Cursor;

#[derive(Debug, Arbitrary)]
struct Input {
    key: [u8; 32],
    create_time: i64,
    seq: i64,
    parent: String,
    filter: String,
    other: String,
    flip: usize,
    forged: String,
}

fuzz_target!(|input: Input| {
    let tokens = PageTokens::new(input.key);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
    let _ = tokens.redeem(&input.forged, &input.parent, &input.filter, now);
    let cursor = Cursor {
        create_time: input.create_time,
        seq: input.seq,
    };
    let token = tokens.issue(cursor, &input.parent, &input.filter, now);
    assert_eq!(
        tokens.redeem(&token, &input.parent, &input.filter, now).unwrap(),
        cursor
    );
    if input.other != input.parent {
        assert!(tokens.redeem(&token, &input.other, &input.filter, now).is_err());
    }
    if input.other != input.filter {
        assert!(tokens.redeem(&token, &input.parent, &input.other, now).is_err());
    }
    let mut bytes = token.clone().into_bytes();
    let at = input.flip % bytes.len();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(bytes).unwrap();
    if altered != token {
        assert!(
            tokens.redeem(&altered, &input.parent, &input.filter, now).is_err(),
            "{token} altered at {at} still redeems"
        );
    }
});
