//! List page tokens: opaque, tamper-evident, bound to the parent and filter
//! they were issued for, valid on every node sharing the store (the key is
//! the store's), and expiring after [`LIFETIME`].
//!
//! Layout before base64url: version (1) | cursor: creation time (8), sequence
//! (8) | issued, seconds since the epoch (8) | SHA-256 of parent and filter,
//! first 16 bytes | HMAC-SHA256 of all that under the store's key, first 16
//! bytes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac as _};
use sha2::{Digest as _, Sha256};

use crate::Error;
use longrun_store::Cursor;

/// How long a page token stays valid.
pub const LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
/// Version 1 tokens (a sequence number only) came before lists were ordered
/// by creation time; they are refused like any foreign token.
const VERSION: u8 = 2;
const BODY: usize = 1 + 16 + 8 + 16;
const TAG: usize = 16;

/// Issues and redeems page tokens under one key (the store's).
#[derive(Debug, Clone)]
pub struct PageTokens {
    key: [u8; 32],
}

impl PageTokens {
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    pub fn issue(&self, cursor: Cursor, parent: &str, filter: &str, now: SystemTime) -> String {
        let mut body = Vec::with_capacity(BODY + TAG);
        body.push(VERSION);
        body.extend_from_slice(&cursor.create_time.to_be_bytes());
        body.extend_from_slice(&cursor.seq.to_be_bytes());
        body.extend_from_slice(&seconds(now).to_be_bytes());
        body.extend_from_slice(&scope(parent, filter));
        let tag = self.tag(&body);
        body.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(body)
    }

    pub fn redeem(&self, token: &str, parent: &str, filter: &str, now: SystemTime) -> Result<Cursor, Error> {
        let invalid = |why: &str| Error::invalid("INVALID_PAGE_TOKEN", format!("invalid page token: {why}"));
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| invalid("not a token this server issued"))?;
        if bytes.len() != BODY + TAG || bytes[0] != VERSION {
            return Err(invalid("not a token this server issued"));
        }
        let (body, tag) = bytes.split_at(BODY);
        let mut mac = self.mac();
        mac.update(body);
        mac.verify_truncated_left(tag)
            .map_err(|_| invalid("it has been altered or was issued by another deployment"))?;
        if body[25..BODY] != scope(parent, filter) {
            return Err(invalid(
                "it was issued for a different parent or filter; start again without a page token",
            ));
        }
        let field = |range: std::ops::Range<usize>| -> [u8; 8] {
            // The ranges are 8 bytes inside a body of checked length.
            body[range].try_into().unwrap_or_default()
        };
        let issued = u64::from_be_bytes(field(17..25));
        if seconds(now).saturating_sub(issued) > LIFETIME.as_secs() {
            return Err(invalid("it has expired; start the listing again"));
        }
        Ok(Cursor {
            create_time: i64::from_be_bytes(field(1..9)),
            seq: i64::from_be_bytes(field(9..17)),
        })
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length.
        Hmac::<Sha256>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!())
    }

    fn tag(&self, body: &[u8]) -> [u8; TAG] {
        let mut mac = self.mac();
        mac.update(body);
        let full = mac.finalize().into_bytes();
        let mut tag = [0; TAG];
        tag.copy_from_slice(&full[..TAG]);
        tag
    }
}

fn seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs())
}

fn scope(parent: &str, filter: &str) -> [u8; 16] {
    let digest = Sha256::new()
        .chain_update(parent)
        .chain_update([0])
        .chain_update(filter)
        .finalize();
    let mut scope = [0; 16];
    scope.copy_from_slice(&digest[..16]);
    scope
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CURSOR: Cursor = Cursor {
        create_time: 1_750_000_000_000_000,
        seq: 42,
    };

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_750_000_000)
    }

    #[test]
    fn round_trips_for_the_same_parent_and_filter() {
        let tokens = PageTokens::new([7; 32]);
        let token = tokens.issue(CURSOR, "projects/p", "done = true", now());
        assert_eq!(
            tokens.redeem(&token, "projects/p", "done = true", now()).unwrap(),
            CURSOR
        );
    }

    #[test]
    fn refuses_changed_scope_expiry_and_other_keys() {
        let tokens = PageTokens::new([7; 32]);
        let token = tokens.issue(CURSOR, "projects/p", "done = true", now());
        let message = |result: Result<Cursor, Error>| result.unwrap_err().message;
        assert!(
            message(tokens.redeem(&token, "projects/p", "done = false", now())).contains("different parent or filter")
        );
        assert!(
            message(tokens.redeem(&token, "projects/q", "done = true", now())).contains("different parent or filter")
        );
        assert!(message(tokens.redeem(&token, "projects/p", "done = true", now() + LIFETIME * 2)).contains("expired"));
        assert!(
            message(PageTokens::new([8; 32]).redeem(&token, "projects/p", "done = true", now())).contains("altered")
        );
        assert!(message(tokens.redeem("garbage!", "projects/p", "", now())).contains("not a token"));
    }

    proptest! {
        #[test]
        fn any_edit_is_detected(time in any::<i64>(), seq in any::<i64>(), index in 0usize..(BODY + TAG), flip in 1u8..=255) {
            let cursor = Cursor { create_time: time, seq };
            let tokens = PageTokens::new([3; 32]);
            let token = tokens.issue(cursor, "p", "f", now());
            let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
            bytes[index] ^= flip;
            let edited = URL_SAFE_NO_PAD.encode(bytes);
            let result = tokens.redeem(&edited, "p", "f", now());
            prop_assert!(result.is_err());
            prop_assert_eq!(result.unwrap_err().code, longrun_types::Code::InvalidArgument);
        }
    }
}
