//! Error codes of the API, mapped to gRPC status codes in one place.

/// What a caller can branch on when the monitor refuses a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// The request names something that does not exist (node, formation).
    NotFound,
    /// The request would create a duplicate (node name, host:port).
    AlreadyExists,
    /// The request is well-formed but the cluster is not in a state that allows it.
    FailedPrecondition,
    /// The request itself is malformed.
    InvalidArgument,
    /// The monitor cannot serve now (its database is down); retry.
    Unavailable,
    /// A bug or an unexpected failure on the monitor.
    Internal,
}

impl From<ErrorCode> for tonic::Code {
    fn from(code: ErrorCode) -> Self {
        match code {
            ErrorCode::NotFound => tonic::Code::NotFound,
            ErrorCode::AlreadyExists => tonic::Code::AlreadyExists,
            ErrorCode::FailedPrecondition => tonic::Code::FailedPrecondition,
            ErrorCode::InvalidArgument => tonic::Code::InvalidArgument,
            ErrorCode::Unavailable => tonic::Code::Unavailable,
            ErrorCode::Internal => tonic::Code::Internal,
        }
    }
}

impl ErrorCode {
    /// The code a client sees in a status; unknown codes read as `Internal`.
    pub fn from_status(status: &tonic::Status) -> Self {
        match status.code() {
            tonic::Code::NotFound => ErrorCode::NotFound,
            tonic::Code::AlreadyExists => ErrorCode::AlreadyExists,
            tonic::Code::FailedPrecondition => ErrorCode::FailedPrecondition,
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => ErrorCode::InvalidArgument,
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => ErrorCode::Unavailable,
            _ => ErrorCode::Internal,
        }
    }

    /// A status with this code and message.
    pub fn status(self, message: impl Into<String>) -> tonic::Status {
        tonic::Status::new(self.into(), message)
    }
}
