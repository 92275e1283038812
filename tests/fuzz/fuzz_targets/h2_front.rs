//! The HTTP/2 authority front of the Unix-socket servers: arbitrary client
//! bytes after the connection preface, fed whole and cut at a point the
//! input chooses. Never panics, and where the bytes are cut never changes
//! what h2 receives (or whether the connection is refused).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigil_proto::unix_h2::{FrontError, Rewriter};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn run(input: &[u8], cut: usize) -> Result<Vec<u8>, FrontError> {
    let mut r = Rewriter::new();
    let mut out = Vec::new();
    let cut = cut.min(input.len());
    r.push(&input[..cut], &mut out)?;
    r.push(&input[cut..], &mut out)?;
    r.finish(&mut out);
    Ok(out)
}

fuzz_target!(|data: &[u8]| {
    let [cut, rest @ ..] = data else {
        return;
    };
    let mut input = PREFACE.to_vec();
    input.extend_from_slice(rest);
    let cut = usize::from(*cut) * 8;
    assert_eq!(run(&input, input.len()), run(&input, cut));
});
