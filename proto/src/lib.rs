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

impl mesos::scheduler::event::Subscribed {
    /// The master's heartbeat interval as a timer can use it. The field is a
    /// double straight off the wire: NaN, infinite, negative or absurd values
    /// (which `Duration::from_secs_f64` panics on) mean "not given", and it is
    /// capped at an hour.
    pub fn heartbeat_interval(&self) -> Option<std::time::Duration> {
        let secs = self.heartbeat_interval_seconds?;
        (secs.is_finite() && secs > 0.0)
            .then(|| std::time::Duration::from_secs_f64(secs.min(3600.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::mesos::scheduler::event::Subscribed;
    use super::mesos::FrameworkId;

    fn with(secs: f64) -> Option<std::time::Duration> {
        Subscribed {
            framework_id: FrameworkId { value: "f".into() },
            heartbeat_interval_seconds: Some(secs),
            master_info: None,
        }
        .heartbeat_interval()
    }

    // Found by the mesos_stream fuzz target: an infinite interval made the
    // connection task panic in Duration::from_secs_f64.
    #[test]
    fn hostile_heartbeat_intervals_do_not_panic() {
        assert_eq!(with(f64::INFINITY), None);
        assert_eq!(with(f64::NAN), None);
        assert_eq!(with(-1.0), None);
        assert_eq!(with(1e300), Some(std::time::Duration::from_secs(3600)));
        assert_eq!(with(15.0), Some(std::time::Duration::from_secs(15)));
    }
}
