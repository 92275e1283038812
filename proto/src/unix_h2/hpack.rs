//! An HPACK decoder (RFC 7541) for the front: the client's header blocks,
//! decoded with the connection's dynamic table, within bounds. Huffman
//! strings are decoded by `httlib-huffman` (table-driven); everything else
//! is here: integers, string literals, the five field representations, the
//! static and dynamic tables, and the table size update rules.

use std::collections::VecDeque;

/// Why a header block could not be decoded (h2 would answer
/// COMPRESSION_ERROR).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HpackError {
    #[error("truncated HPACK representation")]
    Truncated,
    #[error("HPACK integer too large")]
    IntegerOverflow,
    #[error("HPACK index {0} is not in the table")]
    BadIndex(usize),
    #[error("invalid Huffman string")]
    Huffman,
    #[error("dynamic table size update to {0}, above the limit")]
    TableSizeTooLarge(usize),
    #[error("dynamic table size update after the first field of a block")]
    LateSizeUpdate,
    #[error("decoded header list larger than the limit")]
    ListTooLarge,
}

/// RFC 7541 Appendix A.
const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// Per-entry overhead in the table size (RFC 7541 §4.1).
const ENTRY_OVERHEAD: usize = 32;

/// A decoded header field.
pub type Field = (Vec<u8>, Vec<u8>);

/// The decoder of one connection's client→server header blocks.
pub struct Decoder {
    /// Newest first.
    dynamic: VecDeque<Field>,
    size: usize,
    /// The current maximum, set by size updates (≤ `limit`).
    max_size: usize,
    /// SETTINGS_HEADER_TABLE_SIZE of the server: no update may exceed it.
    limit: usize,
}

impl Decoder {
    /// A decoder whose table may grow to `limit` bytes (the server's
    /// SETTINGS_HEADER_TABLE_SIZE; 4,096 by default).
    pub fn new(limit: usize) -> Decoder {
        Decoder {
            dynamic: VecDeque::new(),
            size: 0,
            max_size: limit,
            limit,
        }
    }

    /// Decodes one complete header block, calling `field` for each field in
    /// order. Stops with an error when the decoded list (RFC 9113 §6.5.2
    /// size) would exceed `max_list`.
    pub fn decode(
        &mut self,
        mut block: &[u8],
        max_list: usize,
        mut field: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), HpackError> {
        let mut list = 0usize;
        let mut first = true;
        while let Some(&b) = block.first() {
            if b & 0x80 != 0 {
                // Indexed field (§6.1).
                let (index, rest) = integer(block, 7)?;
                block = rest;
                let (n, v) = self.get(index)?;
                list = add(list, n.len() + v.len() + ENTRY_OVERHEAD, max_list)?;
                field(n, v);
            } else if b & 0xe0 == 0x20 {
                // Dynamic table size update (§6.3): only before the first
                // field of a block (§4.2).
                if !first {
                    return Err(HpackError::LateSizeUpdate);
                }
                let (size, rest) = integer(block, 5)?;
                block = rest;
                if size > self.limit {
                    return Err(HpackError::TableSizeTooLarge(size));
                }
                self.max_size = size;
                self.evict(0);
                continue;
            } else {
                // Literal (§6.2): with incremental indexing (01), without
                // indexing (0000) or never indexed (0001).
                let (indexed, prefix) = if b & 0xc0 == 0x40 {
                    (true, 6)
                } else {
                    (false, 4)
                };
                let (index, rest) = integer(block, prefix)?;
                block = rest;
                let name = if index == 0 {
                    let (name, rest) = string(block)?;
                    block = rest;
                    name
                } else {
                    self.get(index)?.0.to_vec()
                };
                let (value, rest) = string(block)?;
                block = rest;
                list = add(list, name.len() + value.len() + ENTRY_OVERHEAD, max_list)?;
                field(&name, &value);
                if indexed {
                    self.insert(name, value);
                }
            }
            first = false;
        }
        Ok(())
    }

    /// Entry `index` of the combined static + dynamic table (1-based).
    fn get(&self, index: usize) -> Result<(&[u8], &[u8]), HpackError> {
        match index {
            0 => Err(HpackError::BadIndex(0)),
            i if i <= STATIC_TABLE.len() => {
                let (n, v) = STATIC_TABLE[i - 1];
                Ok((n.as_bytes(), v.as_bytes()))
            }
            i => self
                .dynamic
                .get(i - STATIC_TABLE.len() - 1)
                .map(|(n, v)| (n.as_slice(), v.as_slice()))
                .ok_or(HpackError::BadIndex(i)),
        }
    }

    /// Adds an entry (§4.4): evicts first; an entry larger than the table
    /// empties it and is not added.
    fn insert(&mut self, name: Vec<u8>, value: Vec<u8>) {
        let size = name.len() + value.len() + ENTRY_OVERHEAD;
        if size > self.max_size {
            self.dynamic.clear();
            self.size = 0;
            return;
        }
        self.evict(size);
        self.size += size;
        self.dynamic.push_front((name, value));
    }

    /// Evicts the oldest entries until `room` more bytes fit.
    fn evict(&mut self, room: usize) {
        while self.size + room > self.max_size {
            match self.dynamic.pop_back() {
                Some((n, v)) => self.size -= n.len() + v.len() + ENTRY_OVERHEAD,
                None => break,
            }
        }
    }
}

fn add(list: usize, more: usize, max: usize) -> Result<usize, HpackError> {
    let total = list.saturating_add(more);
    if total > max {
        return Err(HpackError::ListTooLarge);
    }
    Ok(total)
}

/// An integer with an N-bit prefix (§5.1); at most 2^28 (four continuation
/// octets), far above any size a header block can use.
fn integer(buf: &[u8], prefix: u8) -> Result<(usize, &[u8]), HpackError> {
    let (&first, mut rest) = buf.split_first().ok_or(HpackError::Truncated)?;
    let max = (1usize << prefix) - 1;
    let mut value = usize::from(first) & max;
    if value < max {
        return Ok((value, rest));
    }
    let mut shift = 0;
    loop {
        let (&b, tail) = rest.split_first().ok_or(HpackError::Truncated)?;
        rest = tail;
        if shift > 21 {
            return Err(HpackError::IntegerOverflow);
        }
        value += usize::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Ok((value, rest));
        }
    }
}

/// A string literal (§5.2), Huffman-decoded when its H bit is set.
fn string(buf: &[u8]) -> Result<(Vec<u8>, &[u8]), HpackError> {
    let huffman = buf.first().is_some_and(|b| b & 0x80 != 0);
    let (len, rest) = integer(buf, 7)?;
    if rest.len() < len {
        return Err(HpackError::Truncated);
    }
    let (raw, rest) = rest.split_at(len);
    if !huffman {
        return Ok((raw.to_vec(), rest));
    }
    let mut out = Vec::with_capacity(len * 8 / 5 + 1);
    httlib_huffman::decode(raw, &mut out, httlib_huffman::DecoderSpeed::FourBits)
        .map_err(|_| HpackError::Huffman)?;
    Ok((out, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(d: &mut Decoder, block: &[u8]) -> Result<Vec<Field>, HpackError> {
        let mut v = Vec::new();
        d.decode(block, usize::MAX, |n, val| {
            v.push((n.to_vec(), val.to_vec()))
        })?;
        Ok(v)
    }

    #[test]
    fn rfc7541_appendix_c_examples() {
        // C.3: requests without Huffman coding, one connection.
        let mut d = Decoder::new(4096);
        let c31 = hex::decode("828684410f7777772e6578616d706c652e636f6d").unwrap();
        let c32 = hex::decode("828684be58086e6f2d6361636865").unwrap();
        let c33 =
            hex::decode("828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565").unwrap();
        let f = |v: &[(&str, &str)]| -> Vec<Field> {
            v.iter()
                .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect()
        };
        assert_eq!(
            decode_all(&mut d, &c31).unwrap(),
            f(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com")
            ])
        );
        assert_eq!(
            decode_all(&mut d, &c32).unwrap(),
            f(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
                ("cache-control", "no-cache")
            ])
        );
        assert_eq!(
            decode_all(&mut d, &c33).unwrap(),
            f(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value")
            ])
        );
        assert_eq!(d.size, 164, "table size after C.3.3");
        // C.4: the same with Huffman coding.
        let mut d = Decoder::new(4096);
        let c41 = hex::decode("828684418cf1e3c2e5f23a6ba0ab90f4ff").unwrap();
        assert_eq!(
            decode_all(&mut d, &c41).unwrap(),
            f(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com")
            ])
        );
        let c42 = hex::decode("828684be5886a8eb10649cbf").unwrap();
        assert_eq!(
            decode_all(&mut d, &c42).unwrap()[4],
            f(&[("cache-control", "no-cache")])[0]
        );
    }

    #[test]
    fn refusals() {
        let mut d = Decoder::new(4096);
        assert_eq!(decode_all(&mut d, &[0x80]), Err(HpackError::BadIndex(0)));
        assert_eq!(decode_all(&mut d, &[0xbe]), Err(HpackError::BadIndex(62)));
        assert_eq!(decode_all(&mut d, &[0x41]), Err(HpackError::Truncated));
        assert_eq!(
            decode_all(&mut d, &[0x40, 0x85, 0xff]),
            Err(HpackError::Truncated)
        );
        assert_eq!(
            decode_all(&mut d, &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Err(HpackError::IntegerOverflow)
        );
        // Size update above the limit, and after a field.
        assert_eq!(
            decode_all(&mut d, &[0x3f, 0xe2, 0x1f]),
            Err(HpackError::TableSizeTooLarge(4097))
        );
        assert_eq!(
            decode_all(&mut d, &[0x82, 0x20]),
            Err(HpackError::LateSizeUpdate)
        );
        // Two updates first are fine (§4.2).
        assert_eq!(
            decode_all(&mut d, &[0x20, 0x3f, 0xe1, 0x1f, 0x82])
                .unwrap()
                .len(),
            1
        );
        // Huffman: EOS padding longer than 7 bits, or not all ones.
        assert_eq!(
            decode_all(&mut d, &[0x00, 0x81, 0xff, 0x00]),
            Err(HpackError::Huffman)
        );
        // The list limit.
        let mut d = Decoder::new(4096);
        let r = d.decode(&[0x82, 0x82, 0x82], 2 * 42 + 10, |_, _| {});
        assert_eq!(r, Err(HpackError::ListTooLarge));
    }

    #[test]
    fn eviction_follows_the_table_size() {
        let mut d = Decoder::new(100);
        // Each entry: 1 + 30 + 32 = 63 bytes: one fits, the second evicts.
        let lit = |v: u8| {
            let mut b = vec![0x40, 0x01, b'n', 30];
            b.extend(std::iter::repeat_n(v, 30));
            b
        };
        decode_all(&mut d, &lit(b'a')).unwrap();
        decode_all(&mut d, &lit(b'b')).unwrap();
        assert_eq!(d.dynamic.len(), 1);
        assert_eq!(decode_all(&mut d, &[0xbe]).unwrap()[0].1, vec![b'b'; 30]);
        assert_eq!(decode_all(&mut d, &[0xbf]), Err(HpackError::BadIndex(63)));
        // Size update to 0 empties the table.
        decode_all(&mut d, &[0x20]).unwrap();
        assert_eq!(decode_all(&mut d, &[0xbe]), Err(HpackError::BadIndex(62)));
    }

    proptest! {
        /// Differential: whatever loona-hpack's encoder (Huffman, indexing,
        /// evictions) produces, this decoder reads as loona's decoder does,
        /// across several blocks of one connection.
        #[test]
        fn agrees_with_another_implementation(
            blocks in proptest::collection::vec(
                proptest::collection::vec(
                    (
                        prop_oneof![
                            Just(":authority".to_string()),
                            Just(":path".to_string()),
                            Just("content-type".to_string()),
                            Just("user-agent".to_string()),
                            Just("accept-encoding".to_string()),
                            "[a-z-]{1,12}",
                        ],
                        "[ -~]{0,300}",
                    ),
                    0..12,
                ),
                1..6,
            )
        ) {
            let mut enc = loona_hpack::Encoder::new();
            let mut theirs = loona_hpack::Decoder::new();
            let mut ours = Decoder::new(4096);
            for fields in blocks {
                let block = enc.encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
                let want = theirs.decode(&block).unwrap();
                prop_assert_eq!(decode_all(&mut ours, &block).unwrap(), want);
            }
        }

        #[test]
        fn never_panics(block in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_all(&mut Decoder::new(4096), &block);
        }
    }

    #[test]
    fn every_static_entry_matches_another_implementation() {
        let mut theirs = loona_hpack::Decoder::new();
        for i in 1..=61u8 {
            let block = [0x80 | i];
            let want = theirs.decode(&block).unwrap();
            assert_eq!(
                decode_all(&mut Decoder::new(4096), &block).unwrap(),
                want,
                "index {i}"
            );
        }
    }
}
