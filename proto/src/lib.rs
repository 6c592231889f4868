//! The Mesos v1 scheduler HTTP API at the wire: the protobuf messages (a
//! subset of Mesos' own `.proto` files with identical field numbers, compiled
//! at build time without `protoc`) and the RecordIO framing of the event
//! stream.

pub mod calls;
pub mod recordio;

/// `mesos.v1`
pub mod mesos {
    include!(concat!(env!("OUT_DIR"), "/mesos.v1.rs"));

    /// `mesos.v1.scheduler`
    pub mod scheduler {
        include!(concat!(env!("OUT_DIR"), "/mesos.v1.scheduler.rs"));
    }
}

pub use mesos::scheduler::{Call, Event};
pub use prost::Message;
