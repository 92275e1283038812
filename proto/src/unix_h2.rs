//! The HTTP/2 front of Sigil's Unix-socket gRPC servers (the Workload API,
//! the admin API): it makes every `:authority` a client sends acceptable.
//!
//! On a Unix socket the authority names nothing, yet clients fill it in:
//! gRPC C-core (Python, C++, Ruby, PHP) sends the percent-encoded socket
//! path (`tmp%2Frun%2Fagent.sock`), others the path itself, `localhost`, or
//! nothing. `h2` parses it as a URI authority and resets the stream with
//! `PROTOCOL_ERROR` when it does not parse, before any Sigil code runs. This
//! front sits on the accepted connection, between the socket and `h2`, and
//! rewrites the client's header blocks so that every `:authority` reaching
//! `h2` is `localhost`. The authority never feeds a decision in Sigil.
//!
//! What it does, exactly (client → server bytes only; the server's bytes
//! pass untouched):
//! - the connection preface and every frame that is not HEADERS or
//!   CONTINUATION pass through byte for byte, payloads streamed, not held;
//! - a header block (HEADERS plus its CONTINUATIONs, at most
//!   [`MAX_HEADER_BLOCK`] bytes compressed and [`MAX_HEADER_LIST`] decoded)
//!   is decoded with HPACK state kept across the connection, `:authority`
//!   values are replaced, and the list is re-encoded without Huffman coding
//!   or indexing (so `h2`'s dynamic table stays empty) into frames of at most
//!   16,384 bytes — the frame size `h2` accepts by default — with the same
//!   stream id, END_STREAM and priority;
//! - anything it cannot make sense of (a bad preface, a frame larger than
//!   16,384 bytes, a HEADERS interrupted by another frame, bad padding,
//!   HPACK it cannot decode) is handed to `h2` exactly as the client sent
//!   it, and the front steps aside for the rest of the connection: `h2`
//!   then refuses it as it would have without the front. Every other HTTP/2
//!   rule (header names, pseudo-header order, stream states, flow control,
//!   frame sizes) is still `h2`'s to enforce.
//! - a header block or list over the limits ends the connection (gRPC's own
//!   default metadata limit is 8 KiB; the limits here are 8 times that).
//!
//! HPACK is decoded by [`hpack`] (this module's own decoder, with the
//! RFC 7541 rules `h2` applies: index bounds, table size updates only at
//! the start of a block and within the server's table size, Huffman
//! padding).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::Stream;
use tokio_stream::wrappers::UnixListenerStream;

mod hpack;

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Frame header length (RFC 9113 §4.1).
const FRAME_HEADER: usize = 9;
/// The largest frame payload the front rewrites and emits: the protocol's
/// initial SETTINGS_MAX_FRAME_SIZE, which `h2` (under tonic) keeps.
pub const MAX_FRAME: usize = 16_384;
/// The largest compressed header block (all fragments) the front accepts.
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// The largest decoded header list (RFC 9113 §6.5.2 size: name + value + 32
/// per field) the front accepts.
pub const MAX_HEADER_LIST: usize = 64 * 1024;
/// The HPACK dynamic table size a client may use: the protocol default,
/// which `h2` advertises (tonic does not change it).
const HPACK_TABLE_SIZE: usize = 4096;
/// The value every `:authority` becomes.
pub const AUTHORITY: &[u8] = b"localhost";

const TYPE_HEADERS: u8 = 0x1;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

/// Why the front ended a connection.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrontError {
    #[error("HTTP/2 header block of more than {MAX_HEADER_BLOCK} bytes refused")]
    BlockTooLarge,
    #[error("HTTP/2 header list of more than {MAX_HEADER_LIST} bytes (decoded) refused")]
    ListTooLarge,
}

/// Where the rewriter is in the client's byte stream.
#[derive(Debug)]
enum State {
    /// Expecting the 24-byte connection preface.
    Preface,
    /// Expecting a 9-byte frame header.
    FrameHeader,
    /// Forwarding this many more payload bytes unchanged.
    Forward(usize),
    /// Collecting the payload of a HEADERS or CONTINUATION frame.
    HeaderPayload {
        header: [u8; FRAME_HEADER],
        len: usize,
    },
    /// Stepped aside: everything passes unchanged.
    Passthrough,
}

/// A header block being collected.
struct Block {
    /// The stream id bytes, as received (reserved bit included).
    stream: [u8; 4],
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
    /// The frames as received, for handing them to `h2` unchanged.
    raw: Vec<u8>,
}

/// The pure, synchronous core of the front: client bytes in, bytes for `h2`
/// out. Unit-tested frame by frame; [`AuthorityFront`] drives it.
pub struct Rewriter {
    state: State,
    pending: Vec<u8>,
    block: Option<Block>,
    decoder: hpack::Decoder,
}

impl Default for Rewriter {
    fn default() -> Self {
        Self::new()
    }
}

impl Rewriter {
    pub fn new() -> Rewriter {
        Rewriter {
            state: State::Preface,
            pending: Vec::new(),
            block: None,
            decoder: hpack::Decoder::new(HPACK_TABLE_SIZE),
        }
    }

    /// True once the front has stepped aside for this connection.
    pub fn is_passthrough(&self) -> bool {
        matches!(self.state, State::Passthrough)
    }

    /// Takes `input` from the client and appends what `h2` should read to
    /// `out`. Bytes of an incomplete frame are kept for the next call.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), FrontError> {
        if let State::Passthrough = self.state {
            out.extend_from_slice(input);
            return Ok(());
        }
        self.pending.extend_from_slice(input);
        let mut at = 0;
        let result = self.run(&mut at, out);
        self.pending.drain(..at);
        result
    }

    /// The client closed its side: whatever is held goes to `h2` as it was
    /// received (an incomplete frame is `h2`'s to refuse).
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if let Some(b) = self.block.take() {
            out.extend_from_slice(&b.raw);
        }
        if let State::HeaderPayload { header, .. } = self.state {
            out.extend_from_slice(&header);
        }
        out.append(&mut self.pending);
        self.state = State::Passthrough;
    }

    fn run(&mut self, at: &mut usize, out: &mut Vec<u8>) -> Result<(), FrontError> {
        loop {
            let avail = &self.pending[*at..];
            match self.state {
                State::Passthrough => {
                    out.extend_from_slice(avail);
                    *at = self.pending.len();
                    return Ok(());
                }
                State::Preface => {
                    let n = avail.len().min(PREFACE.len());
                    if avail[..n] != PREFACE[..n] {
                        self.state = State::Passthrough;
                        continue;
                    }
                    if n < PREFACE.len() {
                        return Ok(());
                    }
                    out.extend_from_slice(PREFACE);
                    *at += PREFACE.len();
                    self.state = State::FrameHeader;
                }
                State::FrameHeader => {
                    if avail.len() < FRAME_HEADER {
                        return Ok(());
                    }
                    let mut header = [0u8; FRAME_HEADER];
                    header.copy_from_slice(&avail[..FRAME_HEADER]);
                    *at += FRAME_HEADER;
                    self.on_frame_header(header, out);
                }
                State::Forward(n) => {
                    let take = n.min(avail.len());
                    out.extend_from_slice(&avail[..take]);
                    *at += take;
                    if take < n {
                        self.state = State::Forward(n - take);
                        return Ok(());
                    }
                    self.state = State::FrameHeader;
                }
                State::HeaderPayload { header, len } => {
                    if avail.len() < len {
                        return Ok(());
                    }
                    let payload = avail[..len].to_vec();
                    *at += len;
                    self.on_header_frame(header, &payload, out)?;
                }
            }
        }
    }

    /// Decides what to do with a frame from its header.
    fn on_frame_header(&mut self, header: [u8; FRAME_HEADER], out: &mut Vec<u8>) {
        let len =
            usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
        let kind = header[3];
        let stream = &header[5..9];
        let header_frame = match &self.block {
            // Only a CONTINUATION of the same stream may follow a HEADERS
            // without END_HEADERS (RFC 9113 §6.10).
            Some(b) => kind == TYPE_CONTINUATION && b.stream == stream,
            None => kind == TYPE_HEADERS,
        };
        if self.block.is_some() && !header_frame {
            self.step_aside(&header, out);
            return;
        }
        if !header_frame {
            out.extend_from_slice(&header);
            self.state = State::Forward(len);
            return;
        }
        if len > MAX_FRAME {
            // h2 refuses it (FRAME_SIZE_ERROR); let it.
            self.step_aside(&header, out);
            return;
        }
        self.state = State::HeaderPayload { header, len };
    }

    /// Hands everything held, then `extra`, to `h2` unchanged and stops
    /// rewriting this connection.
    fn step_aside(&mut self, extra: &[u8], out: &mut Vec<u8>) {
        if let Some(b) = self.block.take() {
            out.extend_from_slice(&b.raw);
        }
        out.extend_from_slice(extra);
        self.state = State::Passthrough;
    }

    fn on_header_frame(
        &mut self,
        header: [u8; FRAME_HEADER],
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), FrontError> {
        let flags = header[4];
        self.state = State::FrameHeader;
        let mut raw = Vec::with_capacity(FRAME_HEADER + payload.len());
        raw.extend_from_slice(&header);
        raw.extend_from_slice(payload);
        match self.block.as_mut() {
            Some(b) => {
                // CONTINUATION: no padding, no priority.
                b.raw.extend_from_slice(&raw);
                b.fragment.extend_from_slice(payload);
            }
            None => {
                let Some((priority, fragment)) = split_headers_payload(flags, payload) else {
                    // Bad padding or a truncated priority: h2's to refuse.
                    self.step_aside(&raw, out);
                    return Ok(());
                };
                let mut stream = [0u8; 4];
                stream.copy_from_slice(&header[5..9]);
                self.block = Some(Block {
                    stream,
                    end_stream: flags & FLAG_END_STREAM != 0,
                    priority,
                    fragment: fragment.to_vec(),
                    raw,
                });
            }
        }
        let too_large = self
            .block
            .as_ref()
            .is_some_and(|b| b.fragment.len() > MAX_HEADER_BLOCK);
        if too_large {
            return Err(FrontError::BlockTooLarge);
        }
        if flags & FLAG_END_HEADERS == 0 {
            return Ok(());
        }
        let Some(block) = self.block.take() else {
            return Ok(());
        };
        // Decoded and re-encoded in one pass: literal, no Huffman, no
        // indexing; every `:authority` becomes [`AUTHORITY`].
        let mut encoded = Vec::with_capacity(block.fragment.len() * 2);
        let decoded = self
            .decoder
            .decode(&block.fragment, MAX_HEADER_LIST, |name, value| {
                let value = if name == b":authority" {
                    AUTHORITY
                } else {
                    value
                };
                encode_literal(name, value, &mut encoded);
            });
        match decoded {
            Ok(()) => {}
            Err(hpack::HpackError::ListTooLarge) => return Err(FrontError::ListTooLarge),
            Err(_) => {
                // h2 decodes the original and refuses it (COMPRESSION_ERROR).
                out.extend_from_slice(&block.raw);
                self.state = State::Passthrough;
                return Ok(());
            }
        }
        emit_block(&block, &encoded, out);
        Ok(())
    }
}

/// Splits a HEADERS payload into its priority fields and its header block
/// fragment, removing padding. `None` when padding or priority do not fit.
fn split_headers_payload(flags: u8, payload: &[u8]) -> Option<(Option<[u8; 5]>, &[u8])> {
    let mut body = payload;
    if flags & FLAG_PADDED != 0 {
        let (&pad, rest) = body.split_first()?;
        let keep = rest.len().checked_sub(usize::from(pad))?;
        body = &rest[..keep];
    }
    let mut priority = None;
    if flags & FLAG_PRIORITY != 0 {
        if body.len() < 5 {
            return None;
        }
        let mut p = [0u8; 5];
        p.copy_from_slice(&body[..5]);
        priority = Some(p);
        body = &body[5..];
    }
    Some((priority, body))
}

/// Appends an HPACK "literal header field without indexing — new name"
/// (RFC 7541 §6.2.2) with both strings raw (no Huffman coding).
fn encode_literal(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.push(0x00);
    encode_string(name, out);
    encode_string(value, out);
}

/// An HPACK string literal, H = 0 (RFC 7541 §5.2).
fn encode_string(s: &[u8], out: &mut Vec<u8>) {
    encode_integer(s.len(), 7, 0x00, out);
    out.extend_from_slice(s);
}

/// An HPACK integer with an `prefix_bits`-bit prefix, the first octet's
/// other bits taken from `first` (RFC 7541 §5.1).
fn encode_integer(mut value: usize, prefix_bits: u8, first: u8, out: &mut Vec<u8>) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        // Fits in the prefix: `value < max <= 127`.
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 0x80 {
        out.push((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Writes `encoded` as a HEADERS frame and as many CONTINUATION frames as
/// needed, each payload at most [`MAX_FRAME`] bytes.
fn emit_block(block: &Block, encoded: &[u8], out: &mut Vec<u8>) {
    let prio_len = if block.priority.is_some() { 5 } else { 0 };
    let first_len = encoded.len().min(MAX_FRAME - prio_len);
    let (first, mut rest) = encoded.split_at(first_len);
    let mut flags = 0;
    if block.end_stream {
        flags |= FLAG_END_STREAM;
    }
    if block.priority.is_some() {
        flags |= FLAG_PRIORITY;
    }
    if rest.is_empty() {
        flags |= FLAG_END_HEADERS;
    }
    frame_header(
        prio_len + first.len(),
        TYPE_HEADERS,
        flags,
        block.stream,
        out,
    );
    if let Some(p) = block.priority {
        out.extend_from_slice(&p);
    }
    out.extend_from_slice(first);
    while !rest.is_empty() {
        let n = rest.len().min(MAX_FRAME);
        let (chunk, tail) = rest.split_at(n);
        let flags = if tail.is_empty() { FLAG_END_HEADERS } else { 0 };
        frame_header(n, TYPE_CONTINUATION, flags, block.stream, out);
        out.extend_from_slice(chunk);
        rest = tail;
    }
}

fn frame_header(len: usize, kind: u8, flags: u8, stream: [u8; 4], out: &mut Vec<u8>) {
    // len <= MAX_FRAME < 2^24: three bytes hold it.
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&stream);
}

/// An accepted connection with the front on its read side. Writes pass
/// straight through. `T` is what the server knows of the connection:
/// nothing (`()`: the inner stream's own `ConnectInfo` reaches the handlers)
/// or a [`Tag`] (its value reaches them instead).
pub struct AuthorityFront<S, T = ()> {
    inner: S,
    tag: T,
    rewriter: Rewriter,
    /// Bytes ready for `h2`, from `out_pos` on.
    out: Vec<u8>,
    out_pos: usize,
    eof: bool,
}

/// A value the server attached to a connection when it accepted it (who
/// is at the other end); handlers find it in each request's extensions.
#[derive(Debug, Clone)]
pub struct Tag<T>(pub T);

impl<S> AuthorityFront<S> {
    pub fn new(inner: S) -> Self {
        AuthorityFront::tagged(inner, ())
    }
}

impl<S, T> AuthorityFront<S, T> {
    /// The front on `inner`, carrying `tag`.
    pub fn tagged(inner: S, tag: T) -> Self {
        AuthorityFront {
            inner,
            tag,
            rewriter: Rewriter::new(),
            out: Vec::new(),
            out_pos: 0,
            eof: false,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

/// The read buffer size of the front.
const READ_CHUNK: usize = 16 * 1024;

impl<S: AsyncRead + Unpin, T: Unpin> AsyncRead for AuthorityFront<S, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.out_pos < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.out_pos);
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            if this.rewriter.is_passthrough() {
                // Nothing held: read straight into the caller's buffer.
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut chunk = [0u8; READ_CHUNK];
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            let filled = rb.filled();
            if filled.is_empty() {
                this.eof = true;
                this.rewriter.finish(&mut this.out);
                continue;
            }
            if let Err(e) = this.rewriter.push(filled, &mut this.out) {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
            }
        }
    }
}

impl<S: AsyncWrite + Unpin, T: Unpin> AsyncWrite for AuthorityFront<S, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected
    for AuthorityFront<S>
{
    type ConnectInfo = S::ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<S, T: Clone + Send + Sync + 'static> tonic::transport::server::Connected
    for AuthorityFront<S, Tag<T>>
{
    type ConnectInfo = T;
    fn connect_info(&self) -> T {
        self.tag.0.clone()
    }
}

/// The accepted connections of `listener`, each behind the front: what
/// tonic's `serve_with_incoming` takes for a Unix-socket server.
pub fn incoming(
    listener: UnixListener,
) -> impl Stream<Item = io::Result<AuthorityFront<UnixStream>>> {
    use tokio_stream::StreamExt;
    UnixListenerStream::new(listener).map(|r| r.map(AuthorityFront::new))
}

#[cfg(test)]
mod tests;
