//! The server's errors and the one place domain errors become canonical
//! codes. REST turns a [`Code`] into an HTTP status in `rest`, gRPC into a
//! `tonic::Code` in `grpc`; nothing else decides codes.

use std::sync::Arc;

use longrun_types::Code;

/// An error as callers see it: a canonical code, a message, and the
/// AIP-193 `ErrorInfo` reason; and, for the log only, what caused it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Error {
    pub code: Code,
    pub message: String,
    /// UPPER_SNAKE_CASE, stable: clients may match on it.
    pub reason: &'static str,
    /// More for `ErrorInfo.metadata` besides the request id, e.g. an
    /// invalid filter's `column`.
    pub metadata: Vec<(&'static str, String)>,
    /// The fault underneath (a database error, say): logged with the
    /// request id, never sent to the caller.
    #[source]
    pub source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    pub fn new(code: Code, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            metadata: Vec::new(),
            source: None,
        }
    }

    /// `ErrorInfo.metadata` for a caller: the request id and this error's own.
    pub fn info_metadata(&self, request_id: &str) -> std::collections::HashMap<String, String> {
        std::iter::once(("requestId".to_owned(), request_id.to_owned()))
            .chain(
                self.metadata
                    .iter()
                    .map(|(key, value)| ((*key).to_owned(), value.clone())),
            )
            .collect()
    }

    /// The same error with `key: value` in its `ErrorInfo.metadata`.
    #[must_use]
    pub fn with_metadata(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.metadata.push((key, value.into()));
        self
    }

    /// The same error, caused by `source`.
    pub fn caused_by(self, source: Arc<dyn std::error::Error + Send + Sync>) -> Self {
        Self {
            source: Some(source),
            ..self
        }
    }

    pub fn invalid(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, reason, message)
    }

    /// A server fault. The message goes to the log, never to the caller.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::Internal, "INTERNAL", message)
    }

    /// True for faults of the server rather than of the request.
    pub fn is_fault(&self) -> bool {
        matches!(
            self.code,
            Code::Internal | Code::Unknown | Code::DataLoss | Code::Unavailable
        )
    }

    /// Logs the error under the request's id: faults as errors with their
    /// full message and every cause, refusals at debug level.
    pub fn log(&self, request_id: &str) {
        if self.is_fault() {
            let mut causes = Vec::new();
            let mut cause = self
                .source
                .as_deref()
                .map(|source| source as &(dyn std::error::Error + 'static));
            while let Some(error) = cause {
                causes.push(error.to_string());
                cause = error.source();
            }
            let causes = causes.join(": ");
            tracing::error!(request_id, code = %self.code, reason = self.reason, error = %self.message, cause = %causes, "server fault");
        } else {
            tracing::debug!(request_id, code = %self.code, reason = self.reason, error = %self.message, "request refused");
        }
    }

    /// Logs why a stream ended: a shutdown or a slow client is news, not
    /// a fault; anything else is logged as [`Error::log`] does.
    pub fn log_ending(&self, request_id: &str) {
        match self.reason {
            "SHUTTING_DOWN" | "WATCH_TOO_SLOW" => {
                tracing::info!(request_id, reason = self.reason, "watch stream ended");
            }
            _ => self.log(request_id),
        }
    }

    /// The `google.rpc.Status` a caller gets, with its `ErrorInfo`: the
    /// same as gRPC's `grpc-status-details-bin`, and an item's error in a
    /// batch's answer.
    pub fn to_rpc_status(&self, request_id: &str) -> longrun_proto::google::rpc::Status {
        use prost::Message as _;
        let info = longrun_proto::google::rpc::ErrorInfo {
            reason: self.reason.to_owned(),
            domain: crate::grpc::ERROR_DOMAIN.to_owned(),
            metadata: self.info_metadata(request_id),
        };
        longrun_proto::google::rpc::Status {
            code: self.code.as_i32(),
            message: self.public_message(request_id),
            details: vec![prost_types::Any {
                type_url: format!("{}google.rpc.ErrorInfo", longrun_proto::TYPE_URL_PREFIX),
                value: info.encode_to_vec(),
            }],
        }
    }

    /// The message a caller may see: internals are replaced by a pointer to
    /// the log entry.
    pub fn public_message(&self, request_id: &str) -> String {
        match self.code {
            Code::Internal | Code::Unknown | Code::DataLoss => {
                format!("internal error; the server log has the details under request id {request_id}")
            }
            _ => self.message.clone(),
        }
    }
}

impl From<longrun_types::Error> for Error {
    fn from(err: longrun_types::Error) -> Self {
        let reason = match &err {
            longrun_types::Error::InvalidName { .. } => "INVALID_NAME",
            longrun_types::Error::InvalidFilter { column, .. } => {
                // Where the problem is, for a console to point at.
                return Self::invalid("INVALID_FILTER", err.to_string()).with_metadata("column", column.to_string());
            }
            longrun_types::Error::InvalidTransition { .. } => {
                return Self::new(Code::FailedPrecondition, "INVALID_TRANSITION", err.to_string());
            }
            // `longrun_types::Error` is non-exhaustive; a new variant is a
            // caller mistake until mapped here.
            _ => "INVALID_ARGUMENT",
        };
        Self::invalid(reason, err.to_string())
    }
}

impl From<longrun_store::Error> for Error {
    fn from(err: longrun_store::Error) -> Self {
        use longrun_store::Error as Store;
        let message = err.to_string();
        match err {
            Store::NotFound(_) => Self::new(Code::NotFound, "OPERATION_NOT_FOUND", message),
            Store::AlreadyExists(_) => Self::new(Code::AlreadyExists, "OPERATION_EXISTS", message),
            Store::FailedPrecondition { .. } => Self::new(Code::FailedPrecondition, "OPERATION_DONE", message),
            Store::Aborted { .. } => Self::new(Code::Aborted, "LEASE_MISMATCH", message),
            // What the database said stays in the log.
            Store::Unavailable { cause } => Self::new(
                Code::Unavailable,
                "STORE_UNAVAILABLE",
                "the store is unavailable; try again",
            )
            .caused_by(cause),
            Store::Internal { cause } => Self::internal("the store failed").caused_by(cause),
            Store::Corrupt(_) => Self::internal(message),
            // Non-exhaustive across crates: anything unmapped is our fault.
            _ => Self::internal(message),
        }
    }
}

impl From<longrun_proto::Error> for Error {
    fn from(err: longrun_proto::Error) -> Self {
        let reason = match &err {
            longrun_proto::Error::UnknownType { .. } => "UNKNOWN_PAYLOAD_TYPE",
            longrun_proto::Error::Json { .. } => "INVALID_JSON",
            longrun_proto::Error::Binary { .. } => "INVALID_PAYLOAD",
            longrun_proto::Error::Descriptors(_) => return Self::internal(err.to_string()),
            _ => "INVALID_ARGUMENT",
        };
        Self::invalid(reason, err.to_string())
    }
}
