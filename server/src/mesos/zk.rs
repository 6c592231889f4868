//! Just enough of the ZooKeeper client protocol to follow Mesos' leader
//! election: a session, `getChildren` and `getData` (with watches), pings,
//! and watch notifications. Jute encoding, big-endian, each packet
//! prefixed with its length. Read-only: the dispatcher never writes to
//! ZooKeeper.

use std::io::{Error, ErrorKind, Result};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const OP_CREATE: i32 = 1;
const OP_DELETE: i32 = 2;
const OP_GET_DATA: i32 = 4;
const OP_GET_CHILDREN: i32 = 8;
const OP_PING: i32 = 11;
const XID_WATCH: i32 = -1;
const XID_PING: i32 = -2;
const MAX_PACKET: usize = 16 << 20;

pub struct Client {
    stream: TcpStream,
    xid: i32,
    ping_every: Duration,
    /// A watch fired while a request was in flight.
    watch_fired: bool,
}

fn put_str(buf: &mut Vec<u8>, s: &[u8]) {
    buf.extend_from_slice(&(s.len() as i32).to_be_bytes());
    buf.extend_from_slice(s);
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        if self.0.len() < n {
            return Err(Error::new(ErrorKind::InvalidData, "short ZooKeeper packet"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn bytes(&mut self) -> Result<Vec<u8>> {
        let n = self.i32()?;
        if n < 0 {
            return Ok(vec![]);
        }
        Ok(self.take(n as usize)?.to_vec())
    }
}

impl Client {
    pub async fn connect(server: &str, session_timeout: Duration) -> Result<Client> {
        let mut stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(server))
            .await
            .map_err(|_| Error::new(ErrorKind::TimedOut, format!("connecting to {server}")))??;
        let mut req = Vec::new();
        req.extend_from_slice(&0i32.to_be_bytes()); // protocol version
        req.extend_from_slice(&0i64.to_be_bytes()); // last zxid seen
        req.extend_from_slice(&(session_timeout.as_millis() as i32).to_be_bytes());
        req.extend_from_slice(&0i64.to_be_bytes()); // session id: new
        put_str(&mut req, &[0u8; 16]); // password
        req.push(0); // read-only: no
        send(&mut stream, &req).await?;
        let resp = tokio::time::timeout(Duration::from_secs(5), recv(&mut stream))
            .await
            .map_err(|_| {
                Error::new(
                    ErrorKind::TimedOut,
                    "ZooKeeper did not answer the handshake",
                )
            })??;
        let mut r = Reader(&resp);
        let _version = r.i32()?;
        let timeout_ms = r.i32()?;
        if timeout_ms <= 0 {
            return Err(Error::new(
                ErrorKind::ConnectionRefused,
                "ZooKeeper refused the session",
            ));
        }
        Ok(Client {
            stream,
            xid: 0,
            ping_every: Duration::from_millis(timeout_ms as u64 / 3),
            watch_fired: false,
        })
    }

    async fn request(&mut self, op: i32, path: &str, watch: bool) -> Result<Vec<u8>> {
        let mut body = Vec::new();
        put_str(&mut body, path.as_bytes());
        body.push(watch as u8);
        self.call(op, path, &body).await
    }

    /// Creates a sequential node (`ephemeral`: it dies with the session);
    /// returns its path.
    pub async fn create_sequential(
        &mut self,
        path: &str,
        data: &[u8],
        ephemeral: bool,
    ) -> Result<String> {
        let mut body = Vec::new();
        put_str(&mut body, path.as_bytes());
        put_str(&mut body, data);
        body.extend_from_slice(&1i32.to_be_bytes()); // one ACL: world:anyone, all
        body.extend_from_slice(&31i32.to_be_bytes());
        put_str(&mut body, b"world");
        put_str(&mut body, b"anyone");
        let flags: i32 = if ephemeral { 3 } else { 2 };
        body.extend_from_slice(&flags.to_be_bytes());
        let resp = self.call(OP_CREATE, path, &body).await?;
        Ok(String::from_utf8_lossy(&Reader(&resp).bytes()?).into_owned())
    }

    /// Creates a plain persistent node; an existing one is fine.
    pub async fn ensure(&mut self, path: &str) -> Result<()> {
        let mut body = Vec::new();
        put_str(&mut body, path.as_bytes());
        put_str(&mut body, b"");
        body.extend_from_slice(&1i32.to_be_bytes());
        body.extend_from_slice(&31i32.to_be_bytes());
        put_str(&mut body, b"world");
        put_str(&mut body, b"anyone");
        body.extend_from_slice(&0i32.to_be_bytes());
        match self.call(OP_CREATE, path, &body).await {
            Ok(_) => Ok(()),
            Err(e) if e.to_string().contains("(-110)") => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn delete(&mut self, path: &str) -> Result<()> {
        let mut body = Vec::new();
        put_str(&mut body, path.as_bytes());
        body.extend_from_slice(&(-1i32).to_be_bytes());
        self.call(OP_DELETE, path, &body).await.map(|_| ())
    }

    async fn call(&mut self, op: i32, path: &str, body: &[u8]) -> Result<Vec<u8>> {
        self.xid += 1;
        let xid = self.xid;
        let mut req = Vec::new();
        req.extend_from_slice(&xid.to_be_bytes());
        req.extend_from_slice(&op.to_be_bytes());
        req.extend_from_slice(body);
        send(&mut self.stream, &req).await?;
        loop {
            let resp = tokio::time::timeout(self.ping_every * 2, recv(&mut self.stream))
                .await
                .map_err(|_| Error::new(ErrorKind::TimedOut, "ZooKeeper did not answer"))??;
            let mut r = Reader(&resp);
            let got = r.i32()?;
            let _zxid = r.i64()?;
            let err = r.i32()?;
            match got {
                XID_WATCH => self.watch_fired = true,
                XID_PING => {}
                x if x == xid => {
                    if err != 0 {
                        let what = if err == -101 { "no such node" } else { "error" };
                        return Err(Error::other(format!("ZooKeeper {what} ({err}) for {path}")));
                    }
                    return Ok(r.0.to_vec());
                }
                _ => {}
            }
        }
    }

    pub async fn children(&mut self, path: &str, watch: bool) -> Result<Vec<String>> {
        let body = self.request(OP_GET_CHILDREN, path, watch).await?;
        let mut r = Reader(&body);
        let n = r.i32()?.max(0) as usize;
        let mut out = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            out.push(String::from_utf8_lossy(&r.bytes()?).into_owned());
        }
        Ok(out)
    }

    pub async fn data(&mut self, path: &str, watch: bool) -> Result<Vec<u8>> {
        let body = self.request(OP_GET_DATA, path, watch).await?;
        Reader(&body).bytes()
    }

    /// Keeps the session alive with pings until a watch fires.
    pub async fn wait_for_watch(&mut self) -> Result<()> {
        if std::mem::take(&mut self.watch_fired) {
            return Ok(());
        }
        loop {
            match tokio::time::timeout(self.ping_every, recv(&mut self.stream)).await {
                Err(_) => {
                    let mut ping = Vec::new();
                    ping.extend_from_slice(&XID_PING.to_be_bytes());
                    ping.extend_from_slice(&OP_PING.to_be_bytes());
                    send(&mut self.stream, &ping).await?;
                }
                Ok(resp) => {
                    let resp = resp?;
                    if Reader(&resp).i32()? == XID_WATCH {
                        return Ok(());
                    }
                }
            }
        }
    }
}

async fn send(stream: &mut TcpStream, body: &[u8]) -> Result<()> {
    let mut framed = Vec::with_capacity(body.len() + 4);
    framed.extend_from_slice(&(body.len() as i32).to_be_bytes());
    framed.extend_from_slice(body);
    stream.write_all(&framed).await
}

async fn recv(stream: &mut TcpStream) -> Result<Vec<u8>> {
    let len = stream.read_i32().await?;
    if len < 0 || len as usize > MAX_PACKET {
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!("ZooKeeper packet of {len} bytes"),
        ));
    }
    let mut buf = vec![0u8; len as usize];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}
