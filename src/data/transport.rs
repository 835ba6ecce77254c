//! The live stream's transport (docs/format.md "Live stream messages"): ZeroMQ (libzmq
//! through the `zmq` crate), a PUSH socket at the detector side — `ptytile stream` or a
//! detector's own streamer — bound to the endpoint, and a PULL socket in ptytile connected
//! to it. Every message has two parts: the header (JSON) and the payload (empty for start
//! and end messages). Messages are decoded by [`super::stream::decode`]; this module only
//! moves bytes, with bounded sizes and queues:
//!
//! - the receiver refuses, inside libzmq, any part larger than the largest the limits allow
//!   (`ZMQ_MAXMSGSIZE`: the start header of the largest plan, or the largest frame), and
//!   a message of more than two parts is rejected after reading at most two parts' worth;
//! - at most `queue` messages wait in each socket's queue (`ZMQ_RCVHWM`, `ZMQ_SNDHWM`);
//!   past that the sender blocks (ZeroMQ's PUSH never drops): frames are delayed, not
//!   lost, and `ptytile stream` reports how far behind its rate it fell.
//!
//! Nothing in a message chooses an endpoint, a file or a size to allocate beyond those
//! bounds: the endpoint is the user's, and only `tcp://`, `ipc://` and `inproc://` are
//! accepted.

use super::stream::Limits;
use crate::error::{Error, Result};
use std::time::Duration;

/// Messages queued per socket before the sender blocks (about 1 s at 1000 frames/s).
pub const DEFAULT_QUEUE: usize = 1000;

/// Check that `endpoint` is a ZeroMQ endpoint ptytile accepts (`tcp://host:port`,
/// `ipc://path`, `inproc://name`). Errors name `option`.
pub fn check_endpoint(option: &str, endpoint: &str) -> Result<()> {
    let ok = ["tcp://", "ipc://", "inproc://"]
        .iter()
        .any(|p| endpoint.starts_with(p) && endpoint.len() > p.len());
    if ok
        && !endpoint
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        Ok(())
    } else {
        Err(Error::new(
            option,
            format!(
                "'{}' is not a ZeroMQ endpoint (e.g. tcp://127.0.0.1:5555)",
                endpoint.chars().take(80).collect::<String>()
            ),
        ))
    }
}

/// The largest message part a receiver with `lim` accepts: the start header of the
/// largest plan, or the largest frame (f32 samples).
pub fn max_part_bytes(lim: &Limits) -> usize {
    let start = super::stream::start_header_cap(lim);
    let frame = lim.max_detector_px.saturating_mul(lim.max_detector_px) * 4;
    start.max(frame).max(lim.max_header_bytes)
}

/// One message as received: header and payload parts.
#[derive(Debug, Clone, PartialEq)]
pub struct Parts {
    /// The header (JSON bytes).
    pub header: Vec<u8>,
    /// The payload (empty for start and end messages).
    pub payload: Vec<u8>,
}

/// What [`Receiver::next`] returns.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// A message of one or two parts.
    Message(Parts),
    /// A message of another shape (more than two parts): its reason, for the log.
    Malformed(String),
    /// Nothing arrived within the wait.
    Idle,
}

/// The receiving end: a PULL socket connected to the endpoint.
pub struct Receiver {
    sock: zmq::Socket,
    _ctx: zmq::Context,
}

impl Receiver {
    /// Connect a PULL socket to `endpoint`, accepting parts up to [`max_part_bytes`] of
    /// `lim` and queueing at most `queue` messages.
    ///
    /// Errors (naming `option`): an endpoint ptytile does not accept; a ZeroMQ failure.
    pub fn connect(option: &str, endpoint: &str, lim: &Limits, queue: usize) -> Result<Self> {
        check_endpoint(option, endpoint)?;
        let zerr = |e: zmq::Error| Error::new(option, format!("{endpoint}: {e}"));
        let ctx = zmq::Context::new();
        let sock = ctx.socket(zmq::PULL).map_err(zerr)?;
        sock.set_maxmsgsize(max_part_bytes(lim).min(i64::MAX as usize) as i64)
            .map_err(zerr)?;
        sock.set_rcvhwm(queue.clamp(1, i32::MAX as usize) as i32)
            .map_err(zerr)?;
        sock.set_linger(0).map_err(zerr)?;
        sock.connect(endpoint).map_err(zerr)?;
        Ok(Receiver { sock, _ctx: ctx })
    }

    /// The next message, waiting at most `wait`.
    ///
    /// Errors: a ZeroMQ failure other than the wait running out.
    pub fn next(&self, wait: Duration) -> Result<Received> {
        let ms = wait.as_millis().min(i32::MAX as u128) as i32;
        let zerr = |e: zmq::Error| Error::new("live", format!("receiving: {e}"));
        self.sock.set_rcvtimeo(ms.max(0)).map_err(zerr)?;
        let header = match self.sock.recv_bytes(0) {
            Ok(h) => h,
            Err(zmq::Error::EAGAIN) => return Ok(Received::Idle),
            Err(e) => return Err(zerr(e)),
        };
        let mut payload = Vec::new();
        let mut parts = 1usize;
        while self.sock.get_rcvmore().map_err(zerr)? {
            // the rest of a message is already here (ZeroMQ delivers messages whole)
            let p = self.sock.recv_bytes(0).map_err(zerr)?;
            parts += 1;
            if parts == 2 {
                payload = p;
            }
        }
        if parts > 2 {
            return Ok(Received::Malformed(format!(
                "a message of {parts} parts (header and payload expected)"
            )));
        }
        Ok(Received::Message(Parts { header, payload }))
    }
}

/// The sending end: a PUSH socket bound to the endpoint (what a detector's streamer does).
pub struct Sender {
    sock: zmq::Socket,
    _ctx: zmq::Context,
}

impl Sender {
    /// Bind a PUSH socket to `endpoint`, queueing at most `queue` messages.
    ///
    /// Errors (naming `option`): an endpoint ptytile does not accept, one in use; a
    /// ZeroMQ failure.
    pub fn bind(option: &str, endpoint: &str, queue: usize) -> Result<Self> {
        check_endpoint(option, endpoint)?;
        let zerr = |e: zmq::Error| Error::new(option, format!("{endpoint}: {e}"));
        let ctx = zmq::Context::new();
        let sock = ctx.socket(zmq::PUSH).map_err(zerr)?;
        sock.set_sndhwm(queue.clamp(1, i32::MAX as usize) as i32)
            .map_err(zerr)?;
        // on close, give the queued messages 10 s to leave
        sock.set_linger(10_000).map_err(zerr)?;
        sock.bind(endpoint).map_err(zerr)?;
        Ok(Sender { sock, _ctx: ctx })
    }

    /// Send one message (header, payload), blocking while the queue is full.
    ///
    /// Errors: a ZeroMQ failure.
    pub fn send(&self, header: &[u8], payload: &[u8]) -> Result<()> {
        let zerr = |e: zmq::Error| Error::new("stream", format!("sending: {e}"));
        self.sock.send(header, zmq::SNDMORE).map_err(zerr)?;
        self.sock.send(payload, 0).map_err(zerr)
    }

    /// Send raw parts as given (tests: malformed messages).
    ///
    /// Errors: a ZeroMQ failure.
    pub fn send_parts(&self, parts: &[&[u8]]) -> Result<()> {
        let zerr = |e: zmq::Error| Error::new("stream", format!("sending: {e}"));
        self.sock.send_multipart(parts, 0).map_err(zerr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_checked() {
        for good in ["tcp://127.0.0.1:5555", "ipc:///tmp/x", "inproc://a"] {
            check_endpoint("--live", good).unwrap();
        }
        for bad in [
            "127.0.0.1:5555",
            "tcp://",
            "file:///etc/passwd",
            "tcp://a b:1",
            "",
        ] {
            assert_eq!(check_endpoint("--live", bad).unwrap_err().what, "--live");
        }
    }

    #[test]
    fn messages_cross_a_loopback_socket() {
        let lim = Limits::default();
        let port = free_port();
        let ep = format!("tcp://127.0.0.1:{port}");
        let tx = Sender::bind("--endpoint", &ep, 16).unwrap();
        let rx = Receiver::connect("--live", &ep, &lim, 16).unwrap();
        tx.send(b"{\"type\":\"end\",\"frames\":0}", b"").unwrap();
        tx.send(b"h", &[1, 2, 3]).unwrap();
        tx.send_parts(&[b"a", b"b", b"c"]).unwrap();
        let mut got = Vec::new();
        while got.len() < 3 {
            match rx.next(Duration::from_secs(5)).unwrap() {
                Received::Idle => panic!("nothing arrived in 5 s"),
                r => got.push(r),
            }
        }
        assert_eq!(
            got[0],
            Received::Message(Parts {
                header: b"{\"type\":\"end\",\"frames\":0}".to_vec(),
                payload: Vec::new()
            })
        );
        assert_eq!(
            got[1],
            Received::Message(Parts {
                header: b"h".to_vec(),
                payload: vec![1, 2, 3]
            })
        );
        assert!(matches!(got[2], Received::Malformed(_)));
        assert_eq!(rx.next(Duration::from_millis(50)).unwrap(), Received::Idle);
    }

    #[test]
    fn oversized_parts_never_arrive() {
        let lim = Limits {
            max_header_bytes: 64,
            max_frames: 4,
            max_detector_px: 4,
        };
        let port = free_port();
        let ep = format!("tcp://127.0.0.1:{port}");
        let tx = Sender::bind("--endpoint", &ep, 16).unwrap();
        let rx = Receiver::connect("--live", &ep, &lim, 16).unwrap();
        let big = vec![0u8; 10 * max_part_bytes(&lim)];
        // libzmq drops the connection of a peer that sends a part over ZMQ_MAXMSGSIZE
        tx.send(b"{}", &big).unwrap();
        assert_eq!(rx.next(Duration::from_millis(300)).unwrap(), Received::Idle);
    }

    /// A TCP port free on 127.0.0.1 now.
    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}
