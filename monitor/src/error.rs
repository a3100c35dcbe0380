//! Errors the monitor returns at its boundary (gRPC, CLI).

use pgpilot_proto::ErrorCode;

/// A refused or failed monitor operation. The variants are what a caller
/// branches on; the message always names the problem and, where there is
/// one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

pub type Result<T> = std::result::Result<T, MonitorError>;

impl MonitorError {
    pub fn code(&self) -> ErrorCode {
        match self {
            MonitorError::NotFound(_) => ErrorCode::NotFound,
            MonitorError::AlreadyExists(_) => ErrorCode::AlreadyExists,
            MonitorError::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            MonitorError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            MonitorError::Other(e) if is_unavailable(e) => ErrorCode::Unavailable,
            MonitorError::Other(_) => ErrorCode::Internal,
        }
    }
}

/// The monitor's own database is unreachable: the client should retry.
fn is_unavailable(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<sqlx::Error>(),
            Some(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed)
        )
    })
}

impl From<sqlx::Error> for MonitorError {
    fn from(e: sqlx::Error) -> Self {
        // Unique violations are the only SQLSTATE a caller branches on; the
        // store checks duplicates itself first so this is a race fallback.
        if let sqlx::Error::Database(db) = &e {
            if db.code().as_deref() == Some("23505") {
                return MonitorError::AlreadyExists(format!(
                    "a node with the same name or host:port is already registered ({})",
                    db.message()
                ));
            }
        }
        MonitorError::Other(anyhow::Error::new(e))
    }
}

impl From<MonitorError> for tonic::Status {
    fn from(e: MonitorError) -> Self {
        let code = e.code();
        let message = match &e {
            MonitorError::Other(inner) => format!("{inner:#}"),
            other => other.to_string(),
        };
        code.status(message)
    }
}
