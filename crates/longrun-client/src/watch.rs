//! Watching operations: longrun's Server-Sent Events stream
//! (`GET /v1/{parent}/operations:watch`), read as typed events, resumed
//! from the last event id whenever the connection drops or the server ends
//! the stream (a shutdown, a client that read too slowly).

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::{Client, Error, Operation, View};

/// What a watch reports.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum WatchEvent {
    /// An operation as it is now (with its [standard view](Operation::standard)):
    /// in the snapshot, newly created, or changed.
    Operation(Box<Operation>),
    /// An operation left the view: deleted, or no longer matching the filter.
    Removed { name: String, deleted: bool },
    /// The snapshot is complete: what follows are changes as they commit.
    Synced,
    /// The server could not resume where the stream stopped: forget what
    /// was shown; a fresh snapshot follows.
    Reset,
    /// The stream was cut (`reason`); the watch reconnects by itself and
    /// resumes where it stopped.
    Reconnecting { reason: String },
}

/// A watch stream on the operations under a parent. See [`Client::watch`].
#[derive(Debug)]
pub struct Watch {
    client: Client,
    path: String,
    query: Vec<(&'static str, String)>,
    response: Option<reqwest::Response>,
    /// Bytes received and not yet parsed into lines.
    buffer: Vec<u8>,
    /// The event being read: its `event:` type, `data:` lines, `id:`.
    kind: String,
    data: String,
    id: Option<String>,
    /// Where to resume from: the id of the last event read.
    last_id: Option<String>,
    /// How long to wait before the next reconnection.
    backoff: Duration,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl Client {
    /// Watches the operations under `parent` that match `filter`: a snapshot
    /// of them, [`WatchEvent::Synced`], then each change. Errors in the
    /// request (an invalid filter, a permission) come back here; once it is
    /// open the watch reconnects by itself.
    pub async fn watch(&self, parent: &str, filter: &str) -> Result<Watch, Error> {
        let path = format!("{}:watch", crate::collection(parent));
        let mut query = Vec::new();
        if !filter.is_empty() {
            query.push(("filter", filter.to_owned()));
        }
        let mut watch = Watch {
            client: self.clone(),
            path,
            query,
            response: None,
            buffer: Vec::new(),
            kind: String::new(),
            data: String::new(),
            id: None,
            last_id: None,
            backoff: FIRST_BACKOFF,
        };
        watch.connect().await?;
        Ok(watch)
    }
}

impl Watch {
    /// The position to resume from (the last event id seen).
    pub fn resume_token(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    async fn connect(&mut self) -> Result<(), Error> {
        let url = format!("{}/v1/{}", self.client.endpoint, self.path);
        let mut request = self
            .client
            .http
            .get(&url)
            .query(&self.query)
            .header("accept", "text/event-stream");
        if let Some(token) = &self.client.token {
            request = request.bearer_auth(token);
        }
        if let Some(id) = &self.last_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.map_err(|err| self.client.transport(&err))?;
        let response = self.client.check(response).await?;
        self.response = Some(response);
        self.buffer.clear();
        self.kind.clear();
        self.data.clear();
        self.id = None;
        Ok(())
    }

    /// The next event, reconnecting after a cut stream. An error is one the
    /// server gave on reconnecting (the token was revoked, say).
    pub async fn next(&mut self) -> Result<WatchEvent, Error> {
        loop {
            if self.response.is_some()
                && let Some(event) = self.parse_buffered()?
            {
                return Ok(event);
            }
            let Some(response) = self.response.as_mut() else {
                tokio::time::sleep(self.backoff).await;
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                match self.connect().await {
                    Ok(()) => continue,
                    Err(err @ Error::Transport { .. }) => {
                        return Ok(WatchEvent::Reconnecting {
                            reason: err.to_string(),
                        });
                    }
                    Err(err) => return Err(err),
                }
            };
            match response.chunk().await {
                Ok(Some(bytes)) => self.buffer.extend_from_slice(&bytes),
                Ok(None) => {
                    self.response = None;
                    return Ok(WatchEvent::Reconnecting {
                        reason: "the server closed the stream".into(),
                    });
                }
                Err(err) => {
                    let reason = self.client.transport(&err).to_string();
                    self.response = None;
                    return Ok(WatchEvent::Reconnecting { reason });
                }
            }
        }
    }

    /// Consumes complete lines from the buffer until one finishes an event.
    fn parse_buffered(&mut self) -> Result<Option<WatchEvent>, Error> {
        while let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if let Some(event) = self.dispatch()? {
                    return Ok(Some(event));
                }
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => value.clone_into(&mut self.kind),
                "data" => {
                    if !self.data.is_empty() {
                        self.data.push('\n');
                    }
                    self.data.push_str(value);
                }
                "id" => self.id = Some(value.to_owned()),
                // A comment (a heartbeat) or a field this client ignores.
                _ => {}
            }
        }
        Ok(None)
    }

    /// The event just read, once a blank line ends it.
    fn dispatch(&mut self) -> Result<Option<WatchEvent>, Error> {
        if let Some(id) = self.id.take() {
            self.last_id = Some(id);
        }
        let kind = std::mem::take(&mut self.kind);
        let data = std::mem::take(&mut self.data);
        let decode = |data: &str| serde_json::from_str::<Value>(data).map_err(|err| Error::Decode(err.to_string()));
        let event = match kind.as_str() {
            "operation" => {
                let view: View = serde_json::from_str(&data).map_err(|err| Error::Decode(err.to_string()))?;
                WatchEvent::Operation(Box::new(view.into()))
            }
            "removed" => {
                #[derive(Deserialize)]
                struct Removed {
                    name: String,
                    #[serde(default)]
                    deleted: bool,
                }
                let removed: Removed = serde_json::from_str(&data).map_err(|err| Error::Decode(err.to_string()))?;
                WatchEvent::Removed {
                    name: removed.name,
                    deleted: removed.deleted,
                }
            }
            "synced" => {
                self.backoff = FIRST_BACKOFF;
                WatchEvent::Synced
            }
            "reset" => WatchEvent::Reset,
            "end" => {
                // The server ended the stream and says why; resume after it.
                let body = decode(&data)?;
                let message = body
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("the server ended the stream");
                self.response = None;
                WatchEvent::Reconnecting {
                    reason: message.to_owned(),
                }
            }
            // A heartbeat (a comment), or an event type from a newer server.
            _ => return Ok(None),
        };
        Ok(Some(event))
    }
}
