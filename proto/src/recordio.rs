//! RecordIO, as the Mesos HTTP API frames its event stream: each record is
//! its length in ASCII decimal, a newline, then that many bytes. The decoder
//! is incremental: feed it whatever chunks the connection delivers (a record
//! split across chunks, many records in one) and take whole records out.

use bytes::{Buf, Bytes, BytesMut};

/// Encodes one record.
pub fn encode(record: &[u8]) -> Vec<u8> {
    let mut out = format!("{}\n", record.len()).into_bytes();
    out.extend_from_slice(record);
    out
}

#[derive(Debug, PartialEq, Eq)]
pub enum Error {
    /// The length prefix is not a decimal number.
    BadLength(String),
    /// A record larger than the decoder accepts.
    TooLarge { len: u64, max: usize },
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::BadLength(s) => write!(f, "RecordIO: bad record length {s:?}"),
            Error::TooLarge { len, max } => write!(
                f,
                "RecordIO: record of {len} bytes exceeds the limit of {max}"
            ),
        }
    }
}

impl std::error::Error for Error {}

/// Longest length prefix we accept: 20 digits is more than any u64.
const MAX_PREFIX: usize = 20;

pub struct Decoder {
    buf: BytesMut,
    max: usize,
    /// The length of the record being read, once its prefix is complete.
    want: Option<usize>,
}

impl Decoder {
    /// A decoder that refuses records over `max` bytes.
    pub fn new(max: usize) -> Decoder {
        Decoder {
            buf: BytesMut::new(),
            max,
            want: None,
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next whole record, if one has arrived.
    pub fn next_record(&mut self) -> Result<Option<Bytes>, Error> {
        if self.want.is_none() {
            let Some(nl) = self.buf.iter().position(|b| *b == b'\n') else {
                if self.buf.len() > MAX_PREFIX {
                    return Err(Error::BadLength(
                        String::from_utf8_lossy(&self.buf[..MAX_PREFIX]).into_owned(),
                    ));
                }
                return Ok(None);
            };
            let text = std::str::from_utf8(&self.buf[..nl]).map_err(|_| {
                Error::BadLength(String::from_utf8_lossy(&self.buf[..nl]).into_owned())
            })?;
            let len: u64 = text
                .trim()
                .parse()
                .map_err(|_| Error::BadLength(text.to_string()))?;
            if len > self.max as u64 {
                return Err(Error::TooLarge { len, max: self.max });
            }
            self.buf.advance(nl + 1);
            self.want = Some(len as usize);
        }
        let want = self.want.expect("set above");
        if self.buf.len() < want {
            return Ok(None);
        }
        self.want = None;
        Ok(Some(self.buf.split_to(want).freeze()))
    }

    /// Bytes received but not yet returned as a record.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_split_across_chunks_and_many_in_one_chunk() {
        let mut stream = encode(b"hello");
        stream.extend(encode(b""));
        stream.extend(encode(&[7u8; 300]));
        for split in 1..stream.len() {
            let mut d = Decoder::new(1024);
            let mut got = vec![];
            for chunk in stream.chunks(split) {
                d.feed(chunk);
                while let Some(r) = d.next_record().unwrap() {
                    got.push(r);
                }
            }
            assert_eq!(got.len(), 3, "chunk size {split}");
            assert_eq!(&got[0][..], b"hello");
            assert!(got[1].is_empty());
            assert_eq!(got[2].len(), 300);
            assert_eq!(d.pending(), 0);
        }
    }

    #[test]
    fn oversized_and_garbled_records_are_errors() {
        let mut d = Decoder::new(10);
        d.feed(b"11\nxxxxxxxxxxx");
        assert_eq!(d.next_record(), Err(Error::TooLarge { len: 11, max: 10 }));
        let mut d = Decoder::new(10);
        d.feed(b"1x\nx");
        assert!(matches!(d.next_record(), Err(Error::BadLength(_))));
        let mut d = Decoder::new(10);
        d.feed(&[b'9'; 30]);
        assert!(matches!(d.next_record(), Err(Error::BadLength(_))));
    }
}
