//! The pgpilot keeper. It lands with its own issue; for now this crate only
//! pins the shared protocol it will speak.
pub use pgpilot_proto as proto;
