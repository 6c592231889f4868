//! A Mesos event stream as the dispatcher reads it: RecordIO records cut
//! into arbitrary chunks, each decoded as a scheduler `Event`. Nothing may
//! panic or hold more than the decoder's bound, and however the bytes are
//! chunked the same records come out.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::recordio::Decoder;
use proto::{Event, Message};

const MAX: usize = 1 << 16;

fn records(data: &[u8], chunk: usize) -> (Vec<Vec<u8>>, bool) {
    let mut d = Decoder::new(MAX);
    let mut out = Vec::new();
    for c in data.chunks(chunk.max(1)) {
        d.feed(c);
        loop {
            match d.next_record() {
                Ok(Some(r)) => out.push(r.to_vec()),
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
        // Pending bytes are at most one record and its length prefix.
        assert!(d.pending() <= MAX + 64 + c.len(), "{}", d.pending());
    }
    (out, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let (whole, whole_failed) = records(rest, rest.len());
    let (chunked, chunked_failed) = records(rest, first as usize % 17 + 1);
    if !whole_failed && !chunked_failed {
        assert_eq!(whole, chunked);
    }
    for r in &whole {
        if let Ok(ev) = Event::decode(&r[..]) {
            // What decodes re-encodes to something that decodes the same.
            // (Compared as bytes: a NaN double is not equal to itself.)
            let bytes = ev.encode_to_vec();
            let again = Event::decode(&bytes[..]).expect("re-encoded event decodes");
            assert_eq!(again.encode_to_vec(), bytes);
            // What the connection does with a SUBSCRIBED must not panic.
            if let Some(s) = &ev.subscribed {
                let _ = s.heartbeat_interval();
            }
        }
    }
});
