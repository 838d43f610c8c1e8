//! Authentication and authorization (SPEC §5), decided here and nowhere
//! else.
//!
//! Without `--tokens` the server is open: every caller is anonymous and may
//! do everything (the binary then refuses to listen beyond loopback unless
//! told to). With a tokens file, every call carries `authorization: Bearer
//! <secret>`; the secret's SHA-256 is compared, in constant time, with every
//! token's, and the matching token's grants decide: a grant is a name prefix
//! and a role, and a role is a set of actions.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::{Caller, Error};
use longrun_types::{Code, Parent};

/// What a caller is trying to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Get,
    List,
    Wait,
    Cancel,
    Delete,
    Create,
    Update,
    Complete,
    Claim,
    Release,
}

impl Action {
    /// The calls that change something, which the audit log records.
    pub fn mutates(self) -> bool {
        !matches!(self, Action::Get | Action::List | Action::Wait)
    }

    fn verb(self) -> &'static str {
        match self {
            Action::Get => "get",
            Action::List => "list",
            Action::Wait => "wait on",
            Action::Cancel => "cancel",
            Action::Delete => "delete",
            Action::Create => "create",
            Action::Update => "update",
            Action::Complete => "complete",
            Action::Claim => "claim",
            Action::Release => "release",
        }
    }
}

/// What a grant lets its holder do (SPEC §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Get, List, Wait.
    Viewer,
    /// A viewer who may also Cancel and Delete.
    Editor,
    /// A viewer who may also Create, Update and Complete: a service that
    /// starts operations and finishes external ones.
    Producer,
    /// A viewer who may also Claim, Update, Complete and Release.
    Worker,
    /// Everything.
    Admin,
}

impl Role {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "viewer" => Role::Viewer,
            "editor" => Role::Editor,
            "producer" => Role::Producer,
            "worker" => Role::Worker,
            "admin" => Role::Admin,
            _ => return None,
        })
    }

    pub fn allows(self, action: Action) -> bool {
        use Action::*;
        match self {
            Role::Admin => true,
            _ if matches!(action, Get | List | Wait) => true,
            Role::Viewer => false,
            Role::Editor => matches!(action, Cancel | Delete),
            Role::Producer => matches!(action, Create | Update | Complete),
            Role::Worker => matches!(action, Claim | Update | Complete | Release),
        }
    }
}

/// A role on every resource whose name starts with a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Path segments of the prefix; empty for `*` (everything).
    prefix: Vec<String>,
    role: Role,
}

impl Grant {
    /// Parses `prefix=role`; `*=role` grants the role on everything.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (prefix, role) = text
            .rsplit_once('=')
            .ok_or_else(|| format!("grant {text:?} is not prefix=role, e.g. \"projects/demo=viewer\""))?;
        let role = Role::parse(role.trim()).ok_or_else(|| {
            format!("grant {text:?}: unknown role {role:?}; roles are viewer, editor, producer, worker, admin")
        })?;
        let prefix = prefix.trim();
        if prefix == "*" {
            return Ok(Self {
                prefix: Vec::new(),
                role,
            });
        }
        let segments: Vec<String> = prefix.split('/').map(str::to_owned).collect();
        let valid = |segment: &String| {
            !segment.is_empty()
                && segment != "-"
                && segment.chars().all(|c| c.is_ascii_alphanumeric() || "._~-".contains(c))
        };
        if !segments.iter().all(valid) {
            return Err(format!(
                "grant {text:?}: the prefix must be \"*\" or a resource path such as \"projects/demo\""
            ));
        }
        Ok(Self { prefix: segments, role })
    }

    /// True when the grant applies to the resource `name`: it is the prefix
    /// or lies below it, segment by segment (`projects/a` covers
    /// `projects/a/operations/x`, not `projects/ab`).
    fn covers(&self, name: &[&str]) -> bool {
        self.prefix.len() <= name.len() && self.prefix.iter().zip(name).all(|(mine, theirs)| mine == theirs)
    }

    /// Whether the grant covers some name matching `pattern` (segments,
    /// `*` matching any one), and whether it covers all of them. With
    /// `deeper`, the pattern also matches every name below it.
    fn reach(&self, pattern: &[&str], deeper: bool) -> Reach {
        let common = self.prefix.len().min(pattern.len());
        let agrees = self.prefix[..common]
            .iter()
            .zip(&pattern[..common])
            .all(|(mine, theirs)| *theirs == "*" || mine == theirs);
        if !agrees || (self.prefix.len() > pattern.len() && !deeper) {
            return Reach::None;
        }
        let literal = self.prefix[..common]
            .iter()
            .zip(&pattern[..common])
            .all(|(mine, theirs)| mine == theirs);
        if self.prefix.len() <= pattern.len() && literal {
            Reach::All
        } else {
            Reach::Some
        }
    }

    /// The prefix as a name (empty for `*`).
    fn as_prefix(&self) -> String {
        self.prefix.join("/")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    None,
    Some,
    All,
}

/// Who is calling: a token's name and grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    grants: Vec<Grant>,
}

impl Principal {
    pub fn new(name: impl Into<String>, grants: Vec<Grant>) -> Self {
        Self {
            name: name.into(),
            grants,
        }
    }
}

/// The names a caller may see (or act on) among those a call reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// All of them.
    All,
    /// Those covered by one of these prefixes (names, segment-wise; never
    /// empty).
    Within(Vec<String>),
}

/// One `[[token]]` of the tokens file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    sha256: Option<String>,
    /// Development only: the secret itself, hashed when loaded.
    secret: Option<String>,
    #[serde(default)]
    grants: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    token: Vec<Entry>,
}

/// The tokens of a `--tokens` file.
#[derive(Debug, Clone)]
pub struct Tokens {
    entries: Vec<([u8; 32], Arc<Principal>)>,
}

impl Tokens {
    /// Parses a tokens file (SPEC §5); errors name the token at fault.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: File = toml::from_str(text).map_err(|err| err.to_string())?;
        let mut entries = Vec::new();
        for entry in file.token {
            let name = entry.name.trim().to_owned();
            if name.is_empty() {
                return Err("a [[token]] has an empty name".into());
            }
            let hash = match (entry.sha256, entry.secret) {
                (Some(hex), None) => parse_hex(&hex)
                    .ok_or_else(|| format!("token {name:?}: sha256 must be 64 hex digits (sha256sum of the secret)"))?,
                (None, Some(secret)) if !secret.is_empty() => Sha256::digest(secret.as_bytes()).into(),
                (None, Some(_)) => return Err(format!("token {name:?}: the secret is empty")),
                (Some(_), Some(_)) => return Err(format!("token {name:?}: give sha256 or secret, not both")),
                (None, None) => {
                    return Err(format!(
                        "token {name:?}: needs sha256 = \"<hex>\" (or secret, for development)"
                    ));
                }
            };
            if entries
                .iter()
                .any(|(known, _): &([u8; 32], Arc<Principal>)| *known == hash)
            {
                return Err(format!("token {name:?}: another token has the same secret"));
            }
            let grants = entry
                .grants
                .iter()
                .map(|grant| Grant::parse(grant).map_err(|why| format!("token {name:?}: {why}")))
                .collect::<Result<Vec<_>, _>>()?;
            entries.push((hash, Arc::new(Principal::new(name, grants))));
        }
        Ok(Self { entries })
    }

    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|err| format!("cannot read {}: {err}", path.display()))?;
        Self::parse(&text).map_err(|err| format!("{}: {err}", path.display()))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The principal whose secret this is. Every token is compared, in
    /// constant time, so the time taken says nothing about which matched.
    fn authenticate(&self, secret: &str) -> Option<Arc<Principal>> {
        let hash: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let mut found = None;
        for (known, principal) in &self.entries {
            if bool::from(known.ct_eq(&hash)) {
                found = Some(principal.clone());
            }
        }
        found
    }
}

fn parse_hex(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// How the server admits callers: open, or by the tokens of a file that
/// can be reloaded while it serves (SIGHUP).
#[derive(Debug)]
pub struct Access {
    path: Option<PathBuf>,
    /// A std lock: held to swap or clone an `Arc`, never across `.await`.
    tokens: RwLock<Option<Arc<Tokens>>>,
}

impl Access {
    /// Everyone may do everything.
    pub fn open() -> Self {
        Self {
            path: None,
            tokens: RwLock::new(None),
        }
    }

    /// Callers need a token from the file at `path`.
    pub fn from_file(path: impl Into<PathBuf>) -> Result<Self, String> {
        let path = path.into();
        let tokens = Tokens::load(&path)?;
        Ok(Self {
            path: Some(path),
            tokens: RwLock::new(Some(Arc::new(tokens))),
        })
    }

    /// Callers need one of `tokens` (which cannot be reloaded).
    pub fn with_tokens(tokens: Tokens) -> Self {
        Self {
            path: None,
            tokens: RwLock::new(Some(Arc::new(tokens))),
        }
    }

    pub fn is_open(&self) -> bool {
        self.current().is_none()
    }

    /// Reads the tokens file again. A file that no longer parses changes
    /// nothing: the error is returned (and callers keep the old tokens).
    pub fn reload(&self) -> Result<usize, String> {
        let Some(path) = &self.path else {
            return Err("no tokens file to reload".into());
        };
        let tokens = Tokens::load(path)?;
        let count = tokens.len();
        *self.tokens.write().unwrap_or_else(|poison| poison.into_inner()) = Some(Arc::new(tokens));
        Ok(count)
    }

    fn current(&self) -> Option<Arc<Tokens>> {
        self.tokens.read().unwrap_or_else(|poison| poison.into_inner()).clone()
    }

    /// Who sent `authorization` (the header's value, if any): `None` on an
    /// open server; `UNAUTHENTICATED` for a missing, malformed or unknown
    /// token.
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Option<Arc<Principal>>, Error> {
        let Some(tokens) = self.current() else { return Ok(None) };
        let unauthenticated = |why: &str| Error::new(Code::Unauthenticated, "UNAUTHENTICATED", why);
        let header = authorization.ok_or_else(|| {
            unauthenticated(
                "this server needs a token: send \"authorization: Bearer <token>\" (CLI: --token or LONGRUN_TOKEN)",
            )
        })?;
        let header =
            std::str::from_utf8(header).map_err(|_| unauthenticated("the authorization header is not text"))?;
        let (scheme, secret) = header
            .split_once(' ')
            .ok_or_else(|| unauthenticated("the authorization header must be \"Bearer <token>\""))?;
        if !scheme.eq_ignore_ascii_case("bearer") || secret.trim().is_empty() {
            return Err(unauthenticated("the authorization header must be \"Bearer <token>\""));
        }
        tokens
            .authenticate(secret.trim())
            .map(Some)
            .ok_or_else(|| unauthenticated("the token is not valid for this server"))
    }
}

/// Decides whether `caller` may perform `action` on the resource `name` (an
/// operation's name, or a parent). Called by the service core before it
/// touches the store, so a refusal says nothing about existence.
pub(crate) fn authorize(caller: &Caller, action: Action, name: &str) -> Result<(), Error> {
    let Some(principal) = &caller.principal else {
        return Ok(());
    };
    let segments: Vec<&str> = name.split('/').filter(|segment| !segment.is_empty()).collect();
    let allowed = principal
        .grants
        .iter()
        .any(|grant| grant.role.allows(action) && grant.covers(&segments));
    if allowed {
        Ok(())
    } else {
        Err(denied(principal, action, name))
    }
}

/// The operations a caller may `action` among those a List (`deeper` false:
/// the operations of `parent`, wildcards allowed) or a Claim (`deeper`
/// true: those of `parent` and below) reaches. `PERMISSION_DENIED` when no
/// grant reaches any of them.
pub(crate) fn scope(caller: &Caller, action: Action, parent: &Parent, deeper: bool) -> Result<Scope, Error> {
    let Some(principal) = &caller.principal else {
        return Ok(Scope::All);
    };
    let mut pattern: Vec<&str> = parent
        .as_str()
        .split('/')
        .filter(|segment| !segment.is_empty())
        .enumerate()
        .map(|(i, segment)| if i % 2 == 1 && segment == "-" { "*" } else { segment })
        .collect();
    if !deeper {
        pattern.extend(["operations", "*"]);
    }
    let mut within = Vec::new();
    for grant in principal.grants.iter().filter(|grant| grant.role.allows(action)) {
        match grant.reach(&pattern, deeper) {
            Reach::All => return Ok(Scope::All),
            Reach::Some => within.push(grant.as_prefix()),
            Reach::None => {}
        }
    }
    if within.is_empty() {
        return Err(denied(principal, action, parent.as_str()));
    }
    Ok(Scope::Within(within))
}

fn denied(principal: &Principal, action: Action, name: &str) -> Error {
    let what = if name.is_empty() { "top-level operations" } else { name };
    Error::new(
        Code::PermissionDenied,
        "PERMISSION_DENIED",
        format!("{:?} may not {} {what}", principal.name, action.verb()),
    )
}

#[cfg(test)]
mod tests;
