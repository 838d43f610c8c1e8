//! Operation and parent names (SPEC §1).
//!
//! A name is a path of `collection/id` pairs ending in `operations/<id>`. The
//! pairs before it form the parent, which may be empty for top-level
//! `operations/<id>`. Parents used to *list* may contain `-` as an id, which
//! matches any value (AIP-159); names of stored operations never do.

use std::fmt;

use crate::Error;

const MAX_SEGMENT: usize = 63;
/// Longest name or parent, in bytes: deep enough for any real hierarchy,
/// short enough that a name is never a payload.
pub const MAX_NAME: usize = 1024;

/// The collection under which operations live: zero or more `collection/id`
/// pairs, e.g. `projects/p/locations/l`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Parent {
    /// `collection/id/collection/id...`, validated; empty for top level.
    path: String,
}

/// `<parent>/operations/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OperationName {
    parent: Parent,
    id: String,
}

impl Parent {
    /// The top-level collection: names of the form `operations/<id>`.
    pub fn root() -> Self {
        Self::default()
    }

    /// Parses the parent of operations being created: no wildcards.
    pub fn parse(path: &str) -> Result<Self, Error> {
        Self::parse_inner(path, false)
    }

    /// Parses a parent to list under, where an id of `-` matches any value.
    pub fn parse_pattern(path: &str) -> Result<Self, Error> {
        Self::parse_inner(path, true)
    }

    fn parse_inner(path: &str, wildcards: bool) -> Result<Self, Error> {
        if path.is_empty() {
            return Ok(Self::root());
        }
        if path.len() > MAX_NAME {
            return Err(too_long(path));
        }
        let invalid = |reason: String| Error::InvalidName {
            name: path.to_owned(),
            reason,
        };
        let segments: Vec<&str> = path.split('/').collect();
        if !segments.len().is_multiple_of(2) {
            return Err(invalid(format!(
                "a parent is made of collection/id pairs, but {:?} has no id",
                segments[segments.len() - 1]
            )));
        }
        for (index, pair) in segments.chunks(2).enumerate() {
            let (collection, id) = (pair[0], pair[1]);
            check_collection(collection)
                .map_err(|why| invalid(format!("collection {:?} (segment {}) {why}", collection, 2 * index + 1)))?;
            if collection == "operations" {
                return Err(invalid(
                    "\"operations\" cannot be a parent collection; operations do not nest".into(),
                ));
            }
            if id == "-" && wildcards {
                continue;
            }
            validate_id(id).map_err(|why| invalid(format!("id {:?} (segment {}) {why}", id, 2 * index + 2)))?;
        }
        Ok(Self { path: path.to_owned() })
    }

    /// True for the top-level collection.
    pub fn is_root(&self) -> bool {
        self.path.is_empty()
    }

    /// True when some id is the `-` wildcard.
    pub fn has_wildcard(&self) -> bool {
        self.path.split('/').skip(1).step_by(2).any(|id| id == "-")
    }

    /// The parent as written, e.g. `projects/p/locations/l`.
    pub fn as_str(&self) -> &str {
        &self.path
    }

    /// True when operations of `other` lie under this parent: the same
    /// parent, one below it, or anything under the root (a claim's reach).
    pub fn covers(&self, other: &Parent) -> bool {
        self.is_root()
            || other.path == self.path
            || other
                .path
                .strip_prefix(self.path.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    }

    /// True when `other` (a concrete parent) is matched by this pattern.
    pub fn matches(&self, other: &Parent) -> bool {
        let mine = self.path.split('/');
        let theirs = other.path.split('/');
        self.path.split('/').count() == other.path.split('/').count()
            && mine
                .zip(theirs)
                .enumerate()
                .all(|(i, (m, t))| m == t || (i % 2 == 1 && m == "-"))
    }
}

impl OperationName {
    /// A name from a validated parent and an operation id.
    pub fn new(parent: Parent, id: &str) -> Result<Self, Error> {
        validate_id(id).map_err(|why| Error::InvalidName {
            name: id.to_owned(),
            reason: format!("operation id {why}"),
        })?;
        if parent.has_wildcard() {
            return Err(Error::InvalidName {
                name: parent.path,
                reason: "an operation's parent cannot contain the \"-\" wildcard".into(),
            });
        }
        if parent.path.len() + "/operations/".len() + id.len() > MAX_NAME {
            return Err(too_long(&format!("{}/operations/{id}", parent.path)));
        }
        Ok(Self {
            parent,
            id: id.to_owned(),
        })
    }

    /// Parses `<parent>/operations/<id>`.
    pub fn parse(name: &str) -> Result<Self, Error> {
        if name.len() > MAX_NAME {
            return Err(too_long(name));
        }
        let invalid = |reason: &str| Error::InvalidName {
            name: name.to_owned(),
            reason: reason.to_owned(),
        };
        let (parent, id) = match name.rsplit_once("/operations/") {
            // "/operations/x" would be another spelling of "operations/x".
            Some(("", _)) => return Err(invalid("a name does not start with \"/\"")),
            Some((parent, id)) => (parent, id),
            None => match name.strip_prefix("operations/") {
                Some(id) => ("", id),
                None => {
                    return Err(invalid(
                        "expected \"<parent>/operations/<id>\", e.g. \"projects/p/locations/l/operations/123\"",
                    ));
                }
            },
        };
        if id.contains('/') {
            return Err(invalid("the last two segments must be \"operations/<id>\""));
        }
        let parent = Parent::parse(parent).map_err(|err| match err {
            Error::InvalidName { reason, .. } => Error::InvalidName {
                name: name.to_owned(),
                reason,
            },
            other => other,
        })?;
        validate_id(id).map_err(|why| Error::InvalidName {
            name: name.to_owned(),
            reason: format!("operation id {id:?} {why}"),
        })?;
        Ok(Self {
            parent,
            id: id.to_owned(),
        })
    }

    pub fn parent(&self) -> &Parent {
        &self.parent
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

impl fmt::Display for Parent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)
    }
}

impl fmt::Display for OperationName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.parent.is_root() {
            write!(f, "operations/{}", self.id)
        } else {
            write!(f, "{}/operations/{}", self.parent, self.id)
        }
    }
}

/// Checks an id segment: 1–63 characters from `[A-Za-z0-9._~-]`, and not
/// the `-` wildcard. The error completes a sentence naming the segment.
pub fn validate_id(id: &str) -> Result<(), String> {
    check_segment(id)?;
    if id == "-" {
        return Err("is the \"-\" wildcard, which only list parents may use".into());
    }
    Ok(())
}

/// Collection ids are words (AIP-122): they start with a letter.
fn check_collection(collection: &str) -> Result<(), String> {
    check_segment(collection)?;
    if !collection.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err("must start with a letter".into());
    }
    Ok(())
}

/// The error for a name over [`MAX_NAME`], quoting only its start.
fn too_long(name: &str) -> Error {
    let start: String = name.chars().take(64).collect();
    Error::InvalidName {
        name: format!("{start}…"),
        reason: format!("is {} bytes long; the limit is {MAX_NAME}", name.len()),
    }
}

fn check_segment(segment: &str) -> Result<(), String> {
    if segment.is_empty() {
        return Err("is empty".into());
    }
    // Path segments that URLs resolve away: no resource may be named so.
    if segment == "." || segment == ".." {
        return Err("is a relative path segment (\".\" or \"..\"), which cannot name a resource".into());
    }
    if segment.len() > MAX_SEGMENT {
        return Err(format!(
            "is {} characters long; the limit is {MAX_SEGMENT}",
            segment.len()
        ));
    }
    match segment
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._~-".contains(*c)))
    {
        Some(bad) => Err(format!("contains {bad:?}; allowed are letters, digits and . _ ~ -")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_parent_shape() {
        for name in [
            "projects/p/locations/l/operations/1",
            "projects/p/locations/l/datasets/d/operations/2",
            "locations/l/operations/3",
            "operations/4",
            "operations/0198a7f0-aa.b_c~d",
        ] {
            let parsed = OperationName::parse(name).unwrap();
            assert_eq!(parsed.to_string(), name);
        }
        let parsed = OperationName::parse("projects/p/locations/l/datasets/d/operations/2").unwrap();
        assert_eq!(parsed.parent().as_str(), "projects/p/locations/l/datasets/d");
        assert_eq!(parsed.id(), "2");
        assert!(OperationName::parse("operations/4").unwrap().parent().is_root());
    }

    #[test]
    fn rejects_malformed_names_naming_the_segment() {
        let cases = [
            ("", "expected"),
            ("projects/p", "expected"),
            ("projects/p/operations", "expected"),
            ("projects/p/operations/", "is empty"),
            ("projects/p/operations/a b", "' '"),
            ("projects//operations/1", "segment 2"),
            ("projects/p/locations/operations/1", "has no id"),
            ("operations/x/operations/1", "do not nest"),
            ("projects/p/operations/-", "wildcard"),
            ("projects/-/operations/1", "wildcard"),
            ("operations/1/extra", "last two segments"),
            ("operations/..", "relative path segment"),
            ("/operations/a", "does not start with"),
            ("projects/./operations/1", "relative path segment"),
        ];
        for (name, needle) in cases {
            let err = OperationName::parse(name).unwrap_err().to_string();
            assert!(err.contains(needle), "{name:?}: {err}");
        }
        let long = format!("operations/{}", "a".repeat(64));
        assert!(
            OperationName::parse(&long)
                .unwrap_err()
                .to_string()
                .contains("limit is 63")
        );
        assert!(OperationName::parse(&format!("operations/{}", "a".repeat(63))).is_ok());
        let deep = format!("{}operations/x", "projects/p/".repeat(100));
        let err = OperationName::parse(&deep).unwrap_err().to_string();
        assert!(err.contains("the limit is 1024"), "{err}");
        assert!(err.len() < 300, "a long name is not echoed whole: {err}");
        assert!(Parent::parse_pattern(&"projects/-/".repeat(100)).is_err());
    }

    #[test]
    fn list_parents_accept_wildcards_and_match() {
        let pattern = Parent::parse_pattern("projects/-/locations/l").unwrap();
        assert!(pattern.has_wildcard());
        assert!(pattern.matches(&Parent::parse("projects/a/locations/l").unwrap()));
        assert!(!pattern.matches(&Parent::parse("projects/a/locations/m").unwrap()));
        assert!(!pattern.matches(&Parent::parse("projects/a").unwrap()));
        assert!(Parent::parse("projects/-").is_err());
        assert!(Parent::parse_pattern("-/p").is_err(), "collections are never wildcards");
    }

    #[test]
    fn a_parent_covers_itself_and_what_lies_below_it() {
        let parent = |path: &str| Parent::parse(path).unwrap();
        let projects = parent("projects/p");
        assert!(projects.covers(&parent("projects/p")));
        assert!(projects.covers(&parent("projects/p/locations/l")));
        assert!(!projects.covers(&parent("projects/pq")), "a longer id is not below");
        assert!(!projects.covers(&parent("projects/q")));
        assert!(!projects.covers(&Parent::root()));
        assert!(Parent::root().covers(&parent("projects/q/locations/l")));
    }
}
