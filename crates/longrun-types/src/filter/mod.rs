//! The List filter language: AIP-160, typed against the Operation's fields.
//!
//! This module is the one place that knows the language. [`Filter::parse`]
//! tokenizes, parses and type-checks a filter into an [`Expr`] tree; stores
//! compile that tree to SQL, and [`Filter::matches`] evaluates it in memory
//! (the reference the SQL must agree with).
//!
//! Grammar (AIP-160; `OR` binds tighter than `AND`, adjacency means `AND`):
//!
//! ```text
//! filter      = [expression]
//! expression  = sequence { "AND" sequence }
//! sequence    = factor { factor }
//! factor      = term { "OR" term }
//! term        = [ "NOT" | "-" ] simple
//! simple      = restriction | "(" expression ")"
//! restriction = member comparator value
//! comparator  = "=" | "!=" | "<" | "<=" | ">" | ">=" | ":"
//! ```
//!
//! Decisions where AIP-160 leaves room (see docs/api.md):
//! - A bare value without a field ("global search") is refused with a hint.
//! - `*` in a string value for `=`/`!=` matches any run of characters.
//! - `field:*` tests presence (set and not empty); `field:value` on a
//!   scalar is the same as `field = value`.
//! - Unset fields (no error, no response, no end time) never satisfy a
//!   restriction, not even `!=`; `NOT` of such a restriction holds.
//! - Timestamps are RFC 3339 strings (`"2024-05-01T00:00:00Z"`, offsets
//!   allowed); durations are seconds with an `s` suffix (`30s`, `"1.5s"`);
//!   enum values may be bare or quoted; booleans are bare.
//! - `metadata.<path>` and `response.<path>` beyond the standard fields are
//!   resolved by a [`Schema`] (the server's type registry) by their JSON
//!   names; a store answers them from the [`Indexed`] values written with
//!   each operation. A repeated field takes `:` ("contains") only.

#[cfg(any(test, feature = "arbitrary"))]
pub mod arbitrary;
mod eval;
mod parse;
mod print;

use std::time::SystemTime;

use crate::State;

pub use parse::{MAX_DEPTH, MAX_LENGTH, MAX_RESTRICTIONS};

/// A parsed, type-checked filter. The empty filter matches everything.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Filter {
    pub expr: Option<Expr>,
}

/// A filter expression, normalised: `And`/`Or` hold at least two children
/// and never a child of their own kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Restriction(Restriction),
}

/// `field comparator value`, with the value checked against the field.
#[derive(Debug, Clone, PartialEq)]
pub struct Restriction {
    pub field: Field,
    pub comparator: Comparator,
    pub value: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Comparator {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// `:`; see the module docs.
    Has,
}

/// A filterable field of the Operation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Field {
    Name,
    Done,
    ErrorCode,
    ErrorMessage,
    MetadataType,
    ResponseType,
    State,
    Verb,
    Target,
    ApiVersion,
    StatusDetail,
    CreateTime,
    UpdateTime,
    EndTime,
    ProgressPercent,
    Attempt,
    CancelRequested,
    /// A field of a registered metadata or response type.
    Custom(Box<Custom>),
}

/// A `metadata.<path>` or `response.<path>` field of a registered type, as a
/// [`Schema`] resolved it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Custom {
    /// The canonical path: `metadata.` or `response.` and JSON field names.
    pub path: String,
    pub kind: Kind,
    /// A repeated scalar: restrictions mean "some element matches", and only
    /// `:` is allowed.
    pub repeated: bool,
    /// For [`Kind::Enum`], the value names.
    pub enum_values: Vec<String>,
}

/// What kind of values a field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Text,
    Bool,
    Int,
    Float,
    State,
    /// A custom enum, compared by value name.
    Enum,
    Time,
    Duration,
    /// A message-typed custom field: only `:*` (presence) applies.
    Message,
}

/// A literal, already converted to its field's kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    /// A string with `*` wildcards (only with `=` and `!=`).
    Pattern(String),
    State(State),
    Time(SystemTime),
    /// Nanoseconds, possibly negative.
    Duration(i64),
    /// `:*`: the field is set (and, for strings, not empty). As an
    /// [`Indexed`] value: a message field that is set.
    Present,
}

/// Resolves custom `metadata.<path>` and `response.<path>` fields.
pub trait Schema {
    /// The field at `path` (which starts with `metadata.` or `response.`),
    /// or a message saying why it cannot be filtered on.
    fn custom_field(&self, path: &str) -> Result<Custom, String>;
}

/// The schema with no custom fields: only the standard ones filter.
#[derive(Debug, Clone, Copy, Default)]
pub struct StandardOnly;

impl Schema for StandardOnly {
    fn custom_field(&self, path: &str) -> Result<Custom, String> {
        Err(format!(
            "unknown field {path:?}; fields of custom metadata and responses need their types registered"
        ))
    }
}

/// One filterable value of an operation's custom metadata or response, as
/// stores keep it beside the operation: `path` as in [`Custom::path`]; a
/// repeated field gives one entry per element.
#[derive(Debug, Clone, PartialEq)]
pub struct Indexed {
    pub path: String,
    pub value: Value,
}

impl Field {
    /// Every field with its path in a filter.
    pub const ALL: [(&'static str, Field); 17] = [
        ("name", Field::Name),
        ("done", Field::Done),
        ("error.code", Field::ErrorCode),
        ("error.message", Field::ErrorMessage),
        ("metadata.@type", Field::MetadataType),
        ("response.@type", Field::ResponseType),
        ("metadata.state", Field::State),
        ("metadata.verb", Field::Verb),
        ("metadata.target", Field::Target),
        ("metadata.apiVersion", Field::ApiVersion),
        ("metadata.statusDetail", Field::StatusDetail),
        ("metadata.createTime", Field::CreateTime),
        ("metadata.updateTime", Field::UpdateTime),
        ("metadata.endTime", Field::EndTime),
        ("metadata.progressPercent", Field::ProgressPercent),
        ("metadata.attempt", Field::Attempt),
        ("metadata.cancelRequested", Field::CancelRequested),
    ];

    pub fn path(&self) -> &str {
        if let Field::Custom(custom) = self {
            return &custom.path;
        }
        Self::ALL
            .iter()
            .find(|(_, field)| field == self)
            .map_or("", |(path, _)| path)
    }

    pub fn kind(&self) -> Kind {
        match self {
            Field::Custom(custom) => custom.kind,
            Field::Name
            | Field::ErrorMessage
            | Field::MetadataType
            | Field::ResponseType
            | Field::Verb
            | Field::Target
            | Field::ApiVersion
            | Field::StatusDetail => Kind::Text,
            Field::Done | Field::CancelRequested => Kind::Bool,
            Field::ErrorCode | Field::ProgressPercent | Field::Attempt => Kind::Int,
            Field::State => Kind::State,
            Field::CreateTime | Field::UpdateTime | Field::EndTime => Kind::Time,
        }
    }
}

impl Expr {
    /// All of `items`, normalised as the parser builds it (flattened; a
    /// single item stands alone).
    pub fn all(items: Vec<Expr>) -> Expr {
        parse::combine(items, true)
    }

    /// Any of `items`, normalised likewise.
    pub fn any(items: Vec<Expr>) -> Expr {
        parse::combine(items, false)
    }
}

/// The type URL served for operations without producer metadata.
pub const STANDARD_METADATA_TYPE: &str = "type.googleapis.com/longrun.v1.OperationMetadata";

/// `@type` values may omit the `type.googleapis.com/` prefix.
pub fn type_url(value: &str) -> String {
    if value.contains('/') {
        value.to_owned()
    } else {
        format!("type.googleapis.com/{value}")
    }
}

#[cfg(test)]
mod tests;
