//! The front, frame by frame, and in front of a real `h2` server.

use super::*;

/// A frame: header + payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    let len = payload.len();
    f.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

const SETTINGS_EMPTY: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];

/// A gRPC request's fields with the given authority (None: absent).
fn request_fields(authority: Option<&str>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut v: Vec<(&str, &str)> = vec![(":method", "POST"), (":scheme", "http")];
    if let Some(a) = authority {
        v.push((":authority", a));
    }
    v.extend([
        (":path", "/SpiffeWorkloadAPI/FetchX509SVID"),
        ("te", "trailers"),
        ("content-type", "application/grpc"),
        ("workload.spiffe.io", "true"),
    ]);
    v.into_iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

/// HPACK of `fields` the way gRPC C-core and nghttp2 encode: Huffman
/// strings and incremental indexing (loona's encoder).
fn hpack(enc: &mut loona_hpack::Encoder<'static>, fields: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    enc.encode(fields.iter().map(|(n, v)| (n.as_slice(), v.as_slice())))
}

/// Runs `input` through a new rewriter, optionally one byte at a time.
fn rewrite(input: &[u8], bytewise: bool) -> Result<(Vec<u8>, bool), FrontError> {
    let mut r = Rewriter::new();
    let mut out = Vec::new();
    if bytewise {
        for b in input {
            r.push(std::slice::from_ref(b), &mut out)?;
        }
    } else {
        r.push(input, &mut out)?;
    }
    let passthrough = r.is_passthrough();
    r.finish(&mut out);
    Ok((out, passthrough))
}

/// A parsed frame of the rewriter's output.
#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

/// Splits `bytes` (after the preface) into frames; panics on a partial one.
fn frames(bytes: &[u8]) -> Vec<Frame> {
    assert_eq!(&bytes[..24], PREFACE);
    let mut rest = &bytes[24..];
    let mut v = Vec::new();
    while !rest.is_empty() {
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        v.push(Frame {
            kind: rest[3],
            flags: rest[4],
            stream: u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]),
            payload: rest[9..9 + len].to_vec(),
        });
        rest = &rest[9 + len..];
    }
    v
}

/// Decodes every header block of `out` with one fresh decoder (as h2 does),
/// returning (stream, end_stream, fields) per block.
/// A decoded header list.
type Fields = Vec<(Vec<u8>, Vec<u8>)>;

fn header_blocks(out: &[u8]) -> Vec<(u32, bool, Fields)> {
    let mut dec = loona_hpack::Decoder::new();
    let mut blocks = Vec::new();
    let mut cur: Option<(u32, bool, Vec<u8>)> = None;
    for f in frames(out) {
        match f.kind {
            TYPE_HEADERS => {
                assert!(cur.is_none(), "HEADERS inside a block");
                assert_eq!(f.flags & FLAG_PADDED, 0, "the front never pads");
                let mut p = f.payload.as_slice();
                if f.flags & FLAG_PRIORITY != 0 {
                    p = &p[5..];
                }
                assert!(f.payload.len() <= MAX_FRAME);
                cur = Some((f.stream, f.flags & FLAG_END_STREAM != 0, p.to_vec()));
            }
            TYPE_CONTINUATION => {
                assert!(f.payload.len() <= MAX_FRAME);
                cur.as_mut()
                    .expect("CONTINUATION in a block")
                    .2
                    .extend(&f.payload);
            }
            _ => {
                assert!(cur.is_none(), "frame inside a header block");
                continue;
            }
        }
        if f.flags & FLAG_END_HEADERS != 0 {
            let (s, es, block) = cur.take().unwrap();
            // The front never indexes: h2's dynamic table stays empty.
            let fields = dec.decode(&block).unwrap();
            blocks.push((s, es, fields));
        }
    }
    assert!(cur.is_none(), "unterminated header block");
    blocks
}

fn authority_of(fields: &[(Vec<u8>, Vec<u8>)]) -> Option<Vec<u8>> {
    fields
        .iter()
        .find(|(n, _)| n == b":authority")
        .map(|(_, v)| v.clone())
}

#[test]
fn every_authority_becomes_localhost_and_nothing_else_changes() {
    for authority in [
        Some("localhost"),
        Some("tmp%2Fx.sock"),
        Some("/tmp/x.sock"),
        Some(""),
        Some("tmp%2Frun%2Fsigil%2Fagent.sock"),
        None,
    ] {
        for bytewise in [false, true] {
            let mut enc = loona_hpack::Encoder::new();
            let fields = request_fields(authority);
            let mut input = PREFACE.to_vec();
            input.extend(SETTINGS_EMPTY);
            input.extend(frame(
                TYPE_HEADERS,
                FLAG_END_HEADERS,
                1,
                &hpack(&mut enc, &fields),
            ));
            input.extend(frame(0x0, FLAG_END_STREAM, 1, &[0, 0, 0, 0, 0]));
            let (out, passthrough) = rewrite(&input, bytewise).unwrap();
            assert!(!passthrough, "{authority:?}");
            let blocks = header_blocks(&out);
            assert_eq!(blocks.len(), 1);
            let (stream, end_stream, got) = &blocks[0];
            assert_eq!((*stream, *end_stream), (1, false));
            let want: Vec<_> = fields
                .iter()
                .map(|(n, v)| {
                    if n == b":authority" {
                        (n.clone(), AUTHORITY.to_vec())
                    } else {
                        (n.clone(), v.clone())
                    }
                })
                .collect();
            assert_eq!(got, &want, "{authority:?}");
            assert_eq!(
                authority_of(got),
                authority.map(|_| AUTHORITY.to_vec()),
                "absent stays absent"
            );
            // SETTINGS and DATA pass unchanged, in order.
            let f = frames(&out);
            assert_eq!((f[0].kind, f[0].payload.len()), (4, 0));
            assert_eq!(f.last().unwrap().kind, 0);
            assert_eq!(f.last().unwrap().payload, [0, 0, 0, 0, 0]);
        }
    }
}

#[test]
fn the_dynamic_table_is_followed_across_blocks_and_streams() {
    let mut enc = loona_hpack::Encoder::new();
    let mut input = PREFACE.to_vec();
    // Stream 1 indexes its fields; streams 3 and 5 refer to the indexes.
    for (i, stream) in [1u32, 3, 5].into_iter().enumerate() {
        let mut fields = request_fields(Some("tmp%2Fx.sock"));
        fields.push((b"x-n".to_vec(), i.to_string().into_bytes()));
        input.extend(frame(
            TYPE_HEADERS,
            FLAG_END_HEADERS | FLAG_END_STREAM,
            stream,
            &hpack(&mut enc, &fields),
        ));
    }
    let (out, _) = rewrite(&input, false).unwrap();
    let blocks = header_blocks(&out);
    assert_eq!(blocks.len(), 3);
    for (i, (stream, end_stream, fields)) in blocks.iter().enumerate() {
        assert_eq!(*stream, [1, 3, 5][i]);
        assert!(*end_stream);
        assert_eq!(authority_of(fields).unwrap(), AUTHORITY);
        assert_eq!(fields.last().unwrap().1, i.to_string().into_bytes());
        assert!(
            fields.contains(&(b"workload.spiffe.io".to_vec(), b"true".to_vec())),
            "{fields:?}"
        );
    }
}

#[test]
fn continuation_padding_and_priority_are_handled() {
    let mut enc = loona_hpack::Encoder::new();
    let mut fields = request_fields(Some("/tmp/x.sock"));
    // A big header, so the block spans several frames both ways.
    fields.push((b"x-big".to_vec(), vec![b'a'; 40_000]));
    let block = hpack(&mut enc, &fields);
    // HEADERS: padded (3 bytes) with priority, then two CONTINUATIONs.
    let (a, rest) = block.split_at(100);
    let mut continuations: Vec<&[u8]> = rest.chunks(15_000).collect();
    let c = continuations.pop().unwrap();
    let mut payload = vec![3u8];
    payload.extend([0x80, 0, 0, 1, 200]); // exclusive, depends on 1, weight 200
    payload.extend(a);
    payload.extend([0, 0, 0]);
    let mut input = PREFACE.to_vec();
    input.extend(frame(
        TYPE_HEADERS,
        FLAG_PADDED | FLAG_PRIORITY | FLAG_END_STREAM,
        7,
        &payload,
    ));
    for b in continuations {
        input.extend(frame(TYPE_CONTINUATION, 0, 7, b));
    }
    input.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 7, c));
    let (out, passthrough) = rewrite(&input, true).unwrap();
    assert!(!passthrough);
    let f = frames(&out);
    assert!(f.len() >= 3, "40 kB needs CONTINUATIONs");
    assert_eq!(f[0].kind, TYPE_HEADERS);
    assert_eq!(
        f[0].flags & (FLAG_PRIORITY | FLAG_END_STREAM),
        FLAG_PRIORITY | FLAG_END_STREAM
    );
    assert_eq!(&f[0].payload[..5], &[0x80, 0, 0, 1, 200]);
    assert!(
        f[1..]
            .iter()
            .all(|x| x.kind == TYPE_CONTINUATION && x.stream == 7)
    );
    let blocks = header_blocks(&out);
    assert_eq!(blocks.len(), 1);
    assert_eq!(authority_of(&blocks[0].2).unwrap(), AUTHORITY);
    assert_eq!(blocks[0].2.last().unwrap().1.len(), 40_000);
}

#[test]
fn malformed_input_reaches_h2_exactly_as_sent() {
    let mut enc = loona_hpack::Encoder::new();
    let block = hpack(&mut enc, &request_fields(Some("tmp%2Fx.sock")));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "HTTP/1.1 instead of the preface",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        ("garbage", vec![0xff; 64]),
        ("HEADERS interrupted by DATA", {
            let mut v = PREFACE.to_vec();
            v.extend(frame(TYPE_HEADERS, 0, 1, &block[..4]));
            v.extend(frame(0, 0, 1, b"x"));
            v
        }),
        ("CONTINUATION of another stream", {
            let mut v = PREFACE.to_vec();
            v.extend(frame(TYPE_HEADERS, 0, 1, &block[..4]));
            v.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 3, &block[4..]));
            v
        }),
        ("padding longer than the frame", {
            let mut v = PREFACE.to_vec();
            let mut p = vec![200u8];
            p.extend(&block);
            v.extend(frame(TYPE_HEADERS, FLAG_PADDED | FLAG_END_HEADERS, 1, &p));
            v
        }),
        ("priority cut short", {
            let mut v = PREFACE.to_vec();
            v.extend(frame(
                TYPE_HEADERS,
                FLAG_PRIORITY | FLAG_END_HEADERS,
                1,
                &[0, 0],
            ));
            v
        }),
        ("HEADERS over the frame size", {
            let mut v = PREFACE.to_vec();
            v.extend(frame(
                TYPE_HEADERS,
                FLAG_END_HEADERS,
                1,
                &vec![0x40; MAX_FRAME + 1],
            ));
            v
        }),
        ("index out of the table", {
            let mut v = PREFACE.to_vec();
            v.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &[0xff, 0x7f]));
            v
        }),
        ("table size update above the limit", {
            let mut v = PREFACE.to_vec();
            // Size update to 1 << 20 (prefix 5 bits), then an indexed field.
            let mut p = vec![0x3f, 0xe1, 0xff, 0x3f];
            p.push(0x82);
            v.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &p));
            v
        }),
        ("truncated frame", {
            let mut v = PREFACE.to_vec();
            v.extend(&frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &block)[..12]);
            v
        }),
    ];
    for (name, input) in cases {
        for bytewise in [false, true] {
            let (out, _) = rewrite(&input, bytewise).unwrap();
            assert_eq!(out, input, "{name}: h2 must see the client's bytes");
        }
    }
}

#[test]
fn oversized_header_blocks_end_the_connection() {
    let mut input = PREFACE.to_vec();
    input.extend(frame(TYPE_HEADERS, 0, 1, &vec![0x40; MAX_FRAME]));
    for _ in 0..(MAX_HEADER_BLOCK / MAX_FRAME) {
        input.extend(frame(TYPE_CONTINUATION, 0, 1, &vec![0x40; MAX_FRAME]));
    }
    assert_eq!(
        rewrite(&input, false).unwrap_err(),
        FrontError::BlockTooLarge
    );

    // A small block that decodes to a huge list (one indexed field repeated).
    let mut enc = loona_hpack::Encoder::new();
    let mut block = hpack(&mut enc, &[(b"x-a".to_vec(), vec![b'a'; 3000])]);
    // 62 is the first dynamic entry: 3000 bytes each time.
    block.extend(std::iter::repeat_n(0xbe, 40));
    let mut input = PREFACE.to_vec();
    input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &block));
    assert_eq!(
        rewrite(&input, false).unwrap_err(),
        FrontError::ListTooLarge
    );
}

#[test]
fn literals_decode_for_every_length_class() {
    // Lengths around the 7-bit prefix boundary and multi-octet integers.
    for len in [0usize, 1, 126, 127, 128, 255, 16_384, 70_000] {
        let mut block = Vec::new();
        encode_literal(b"x-name", &vec![b'v'; len], &mut block);
        encode_literal(b":authority", b"localhost", &mut block);
        let fields = loona_hpack::Decoder::new().decode(&block).unwrap();
        assert_eq!(fields.len(), 2);
        assert_eq!(fields[0].0, b"x-name");
        assert_eq!(fields[0].1.len(), len);
        assert_eq!(fields[1], (b":authority".to_vec(), AUTHORITY.to_vec()));
    }
}

mod h2_server {
    //! The front in front of a real `h2` server, as tonic runs it.

    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves one connection with h2 (front or not); answers 200 to every
    /// request and counts them.
    async fn serve(
        io: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
    ) -> tokio::task::JoinHandle<usize> {
        tokio::spawn(async move {
            let mut served = 0;
            let Ok(mut conn) = h2::server::handshake(io).await else {
                return served;
            };
            while let Some(Ok((_req, mut respond))) = conn.accept().await {
                served += 1;
                let resp = http::Response::builder().status(200).body(()).unwrap();
                let _ = respond.send_response(resp, true);
            }
            served
        })
    }

    /// Sends `request` as the client and reads what the server answers
    /// until it closes or 2 s pass; returns the server's frames.
    async fn exchange(front: bool, request: Vec<u8>) -> (Vec<Frame>, usize) {
        let (client, server) = tokio::io::duplex(1 << 20);
        let served = if front {
            serve(AuthorityFront::new(server)).await
        } else {
            serve(server).await
        };
        let (mut rd, mut wr) = tokio::io::split(client);
        wr.write_all(&request).await.unwrap();
        let mut got = Vec::new();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
            let mut buf = [0u8; 4096];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
                // Stop once the answer or a refusal is complete.
                let mut with_preface = PREFACE.to_vec();
                with_preface.extend(&got);
                if complete(&with_preface) {
                    let fs = frames(&with_preface);
                    if fs
                        .iter()
                        .any(|f| matches!(f.kind, 1 | 3 | 7) && f.stream <= 1)
                    {
                        break;
                    }
                }
            }
        })
        .await;
        drop(wr);
        drop(rd);
        let mut with_preface = PREFACE.to_vec();
        with_preface.extend(&got);
        let n = tokio::time::timeout(std::time::Duration::from_secs(2), served)
            .await
            .map(|r| r.unwrap())
            .unwrap_or(0);
        (frames(&with_preface), n)
    }

    fn complete(bytes: &[u8]) -> bool {
        let mut rest = &bytes[24..];
        while rest.len() >= 9 {
            let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
            if rest.len() < 9 + len {
                return false;
            }
            rest = &rest[9 + len..];
        }
        rest.is_empty()
    }

    fn request(fields: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
        let mut enc = loona_hpack::Encoder::new();
        let mut v = PREFACE.to_vec();
        v.extend(SETTINGS_EMPTY);
        v.extend(frame(
            TYPE_HEADERS,
            FLAG_END_HEADERS | FLAG_END_STREAM,
            1,
            &hpack(&mut enc, fields),
        ));
        v
    }

    /// The :status of the response on stream 1, or the RST_STREAM /
    /// GOAWAY error code.
    fn outcome(frames: &[Frame]) -> String {
        let mut dec = loona_hpack::Decoder::new();
        for f in frames {
            match f.kind {
                1 if f.stream == 1 => {
                    let fields = dec.decode(&f.payload).unwrap();
                    let status = fields.iter().find(|(n, _)| n == b":status").unwrap();
                    return format!("status {}", String::from_utf8_lossy(&status.1));
                }
                3 if f.stream == 1 => {
                    return format!(
                        "RST_STREAM {}",
                        u32::from_be_bytes(f.payload[..4].try_into().unwrap())
                    );
                }
                7 => {
                    return format!(
                        "GOAWAY {}",
                        u32::from_be_bytes(f.payload[4..8].try_into().unwrap())
                    );
                }
                _ => {}
            }
        }
        "nothing".into()
    }

    #[tokio::test]
    async fn h2_alone_refuses_the_c_core_authority_which_the_front_lets_through() {
        let req = request(&request_fields(Some("tmp%2Fx.sock")));
        // Without the front: the bug this module exists for.
        let (f, served) = exchange(false, req.clone()).await;
        assert_eq!(
            outcome(&f),
            "RST_STREAM 1",
            "PROTOCOL_ERROR without the front"
        );
        assert_eq!(served, 0);
        for authority in [
            Some("localhost"),
            Some("tmp%2Fx.sock"),
            Some("/tmp/x.sock"),
            Some(""),
            None,
        ] {
            let (f, served) = exchange(true, request(&request_fields(authority))).await;
            assert_eq!(outcome(&f), "status 200", "{authority:?}");
            assert_eq!(served, 1, "{authority:?}");
        }
    }

    #[tokio::test]
    async fn malformed_requests_are_still_refused_by_h2() {
        let mut upper = request_fields(Some("tmp%2Fx.sock"));
        upper.push((b"Content-Length".to_vec(), b"0".to_vec()));
        let mut late_pseudo = request_fields(Some("tmp%2Fx.sock"));
        late_pseudo.push((b":path".to_vec(), b"/again".to_vec()));
        let mut no_path = request_fields(Some("localhost"));
        no_path.retain(|(n, _)| n != b":path");
        let mut connection = request_fields(None);
        connection.push((b"connection".to_vec(), b"keep-alive".to_vec()));
        for (name, fields) in [
            ("upper-case name", upper),
            ("duplicate pseudo-header", late_pseudo),
            ("missing :path", no_path),
            ("connection-specific header", connection),
        ] {
            for front in [false, true] {
                let (f, served) = exchange(front, request(&fields)).await;
                let o = outcome(&f);
                assert!(
                    o.starts_with("RST_STREAM") || o.starts_with("GOAWAY"),
                    "{name} (front {front}): {o}"
                );
                assert_eq!(served, 0, "{name}");
            }
        }
        // Frame-level errors too: a HEADERS frame over the frame size.
        let mut big = PREFACE.to_vec();
        big.extend(SETTINGS_EMPTY);
        big.extend(frame(
            TYPE_HEADERS,
            FLAG_END_HEADERS,
            1,
            &vec![0x40; MAX_FRAME + 1],
        ));
        let (f, served) = exchange(true, big).await;
        assert!(outcome(&f).starts_with("GOAWAY"), "{}", outcome(&f));
        assert_eq!(served, 0);
    }
}

mod fuzz {
    //! Arbitrary client bytes, cut anywhere: the front never panics, and
    //! where the input is cut never changes what h2 receives.

    use super::*;
    use proptest::prelude::*;

    /// A plausible connection: preface, then frames of random types with
    /// random flags and payloads (header blocks from a real encoder mixed
    /// with junk).
    fn connection() -> impl Strategy<Value = Vec<u8>> {
        let frame_s = (
            prop_oneof![Just(0u8), Just(1), Just(4), Just(8), Just(9), any::<u8>()],
            any::<u8>(),
            0u32..8,
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..64),
                proptest::option::of("[a-z%/.]{0,20}").prop_map(|a| {
                    let mut enc = loona_hpack::Encoder::new();
                    hpack(&mut enc, &request_fields(a.as_deref()))
                }),
            ],
        )
            .prop_map(|(kind, flags, stream, payload)| frame(kind, flags, stream, &payload));
        proptest::collection::vec(frame_s, 0..8).prop_map(|frames| {
            let mut v = PREFACE.to_vec();
            v.extend(frames.concat());
            v
        })
    }

    fn in_pieces(input: &[u8], cuts: &[usize]) -> Result<Vec<u8>, FrontError> {
        let mut r = Rewriter::new();
        let mut out = Vec::new();
        let mut at = 0;
        for c in cuts {
            let c = (*c).min(input.len()).max(at);
            r.push(&input[at..c], &mut out)?;
            at = c;
        }
        r.push(&input[at..], &mut out)?;
        r.finish(&mut out);
        Ok(out)
    }

    proptest! {
        #[test]
        fn cut_points_do_not_matter(input in connection(), mut cuts in proptest::collection::vec(0usize..600, 0..12)) {
            cuts.sort_unstable();
            let whole = in_pieces(&input, &[]);
            let cut = in_pieces(&input, &cuts);
            prop_assert_eq!(whole, cut);
        }

        #[test]
        fn random_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..2048), prefaced in any::<bool>()) {
            let mut v = if prefaced { PREFACE.to_vec() } else { Vec::new() };
            v.extend(input);
            let _ = in_pieces(&v, &[7, 30, 100]);
        }
    }
}
