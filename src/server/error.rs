//! The server's error answer, [`ApiError`]: an HTTP status, an AWS exception name and a
//! message, and how the library's typed errors map onto AWS's exceptions. A leaf of the server's
//! modules: every handler returns it, and it imports none of them.

use serde_json::Value;

use crate::error::Error;

/// An error response: HTTP status, the exception's name, a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub status: u16,
    pub kind: &'static str,
    pub message: String,
    /// For a `ResourceNotFoundException` from the store: what was not found ("stream",
    /// "shard", ...) and its name, so an API can word the message as AWS does.
    pub not_found: Option<(&'static str, String)>,
}

impl ApiError {
    pub fn new(status: u16, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            kind,
            message: message.into(),
            not_found: None,
        }
    }

    /// A value the service refuses (InvalidArgumentException, 400).
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "InvalidArgumentException", message)
    }

    /// A request that breaks the model's constraints (ValidationException, 400).
    pub fn validation(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "ValidationException", message)
    }

    /// A body that is not a JSON object of the right types (SerializationException, 400).
    pub fn serialization(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "SerializationException", message)
    }

    /// The response body: `__type` and the message, under `Message` for a
    /// `SerializationException` (as AWS's JSON services send it) and `message` otherwise.
    pub fn body(&self) -> Value {
        let key = if self.kind == "SerializationException" {
            "Message"
        } else {
            "message"
        };
        serde_json::json!({ "__type": self.kind, key: self.message })
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let message = e.to_string();
        let (status, kind) = match &e {
            Error::ResourceNotFound { .. } => (400, "ResourceNotFoundException"),
            Error::ResourceInUse { .. } => (400, "ResourceInUseException"),
            Error::InvalidArgument { .. } | Error::InvalidRecord { .. } => {
                (400, "InvalidArgumentException")
            }
            Error::LimitExceeded { .. } => (400, "LimitExceededException"),
            Error::ProvisionedThroughputExceeded { .. } => {
                (400, "ProvisionedThroughputExceededException")
            }
            Error::ExpiredIterator { .. } => (400, "ExpiredIteratorException"),
            Error::ExpiredNextToken { .. } => (400, "ExpiredNextTokenException"),
            Error::ConcurrentModification { .. } => (400, "ConcurrentModificationException"),
            Error::LeaseLost { .. } => (400, "LeaseLostException"),
            // Storage trouble (I/O, a full disk, corruption, a poisoned shard): the service's
            // fault, not the caller's.
            _ => (500, "InternalFailureException"),
        };
        let not_found = match e {
            Error::ResourceNotFound { kind, name } => Some((kind, name)),
            _ => None,
        };
        ApiError {
            not_found,
            ..ApiError::new(status, kind, message)
        }
    }
}
