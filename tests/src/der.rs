//! A strict DER checker (X.690 §10–11, plus the RFC 5280 and RFC 2986
//! profile rules that concern encodings) for the certificates and CSRs Sigil
//! emits. It walks any DER blob and refuses, with the byte offset and the
//! rule, what a lenient parser lets through: indefinite or non-minimal
//! lengths, BOOLEANs other than 00/FF, non-minimal INTEGERs, BIT STRINGs
//! with bad unused bits (and, for named bit lists such as keyUsage, trailing
//! zero bits), non-canonical times, unsorted SET OFs, trailing data, and —
//! knowing the X.509 and PKCS#10 structures — encoded DEFAULT values
//! (version v1, `critical FALSE`, basicConstraints `cA FALSE`).
//!
//! [`check_certificate`] and [`check_csr`] also return an audit: one line
//! per field with its encoding, for reports.

use std::fmt;

/// Which DER (or profile) rule a blob breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// The value runs past the end of its container.
    Truncated,
    /// Length octet 0x80 (X.690 §10.1: definite form only).
    IndefiniteLength,
    /// Long form where the short form fits, or leading zero length octets
    /// (X.690 §10.1).
    NonMinimalLength,
    /// Length octet 0xFF or a length wider than 4 octets.
    UnsupportedLength,
    /// High-tag-number form used for a tag below 31, or with a leading 0x80.
    NonMinimalTag,
    /// Constructed encoding of a primitive type or primitive SEQUENCE/SET
    /// (X.690 §10.2, §8.9, §8.11).
    WrongForm,
    /// BOOLEAN contents other than one octet 00 or FF (X.690 §11.1).
    BadBoolean,
    /// INTEGER with no contents octets (X.690 §8.3.1).
    EmptyInteger,
    /// INTEGER with a redundant leading 00 or FF octet (X.690 §8.3.2).
    NonMinimalInteger,
    /// NULL with contents.
    BadNull,
    /// OBJECT IDENTIFIER with a non-minimal or unterminated subidentifier.
    BadOid,
    /// BIT STRING initial octet above 7, or non-zero for an empty string
    /// (X.690 §8.6.2).
    BitStringUnusedBits,
    /// BIT STRING unused (padding) bits not zero (X.690 §11.2.1).
    BitStringPadding,
    /// Named bit list with trailing zero bits (X.690 §11.2.2).
    BitStringTrailingZeros,
    /// UTCTime/GeneralizedTime not in the canonical form (X.690 §11.7–11.8,
    /// RFC 5280 §4.1.2.5.1–2: `Z`, seconds present, no fractions).
    BadTime,
    /// UTCTime for a year outside 1950–2049, or GeneralizedTime for a year
    /// that UTCTime can express (RFC 5280 §4.1.2.5).
    TimeTypeForYear,
    /// Characters not allowed in the string type.
    BadString,
    /// Bytes after the value (or after the last field of a structure).
    TrailingData,
    /// A DEFAULT value encoded (X.690 §11.5).
    EncodedDefault(&'static str),
    /// SET OF components not in ascending order of their encodings
    /// (X.690 §11.6).
    SetOrder,
    /// The structure is not the one the type requires.
    Structure(String),
    /// An RFC 5280 / RFC 2986 profile rule about encodings.
    Profile(String),
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Truncated => write!(f, "value runs past the end of its container"),
            Rule::IndefiniteLength => write!(f, "indefinite length (X.690 10.1)"),
            Rule::NonMinimalLength => write!(f, "non-minimal length encoding (X.690 10.1)"),
            Rule::UnsupportedLength => write!(f, "reserved or oversized length octets"),
            Rule::NonMinimalTag => write!(f, "non-minimal tag encoding (X.690 8.1.2)"),
            Rule::WrongForm => write!(f, "wrong primitive/constructed form (X.690 10.2)"),
            Rule::BadBoolean => write!(f, "BOOLEAN contents must be 00 or FF (X.690 11.1)"),
            Rule::EmptyInteger => write!(f, "INTEGER with no contents (X.690 8.3.1)"),
            Rule::NonMinimalInteger => write!(f, "non-minimal INTEGER (X.690 8.3.2)"),
            Rule::BadNull => write!(f, "NULL with contents (X.690 8.8)"),
            Rule::BadOid => write!(f, "malformed OBJECT IDENTIFIER (X.690 8.19)"),
            Rule::BitStringUnusedBits => {
                write!(f, "BIT STRING unused-bits octet out of range (X.690 8.6.2)")
            }
            Rule::BitStringPadding => {
                write!(f, "BIT STRING unused bits not zero (X.690 11.2.1)")
            }
            Rule::BitStringTrailingZeros => {
                write!(
                    f,
                    "named-bit BIT STRING with trailing zero bits (X.690 11.2.2)"
                )
            }
            Rule::BadTime => write!(
                f,
                "non-canonical time (X.690 11.7/11.8, RFC 5280 4.1.2.5: Z, seconds, no fraction)"
            ),
            Rule::TimeTypeForYear => write!(
                f,
                "UTCTime for 1950-2049, GeneralizedTime otherwise (RFC 5280 4.1.2.5)"
            ),
            Rule::BadString => write!(f, "characters not allowed in the string type"),
            Rule::TrailingData => write!(f, "trailing data"),
            Rule::EncodedDefault(what) => {
                write!(f, "DEFAULT value encoded: {what} (X.690 11.5)")
            }
            Rule::SetOrder => write!(f, "SET OF components not sorted (X.690 11.6)"),
            Rule::Structure(s) => write!(f, "structure: {s}"),
            Rule::Profile(s) => write!(f, "profile: {s}"),
        }
    }
}

/// A refusal: where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerError {
    /// Byte offset in the checked blob (of the tag of the offending value,
    /// or of the offending octet).
    pub offset: usize,
    /// Field path, e.g. `tbs.extensions[2].basicConstraints.cA`.
    pub path: String,
    pub rule: Rule,
}

impl fmt::Display for DerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "offset {} ({}): {}", self.offset, self.path, self.rule)
    }
}

impl std::error::Error for DerError {}

fn err<T>(offset: usize, path: &str, rule: Rule) -> Result<T, DerError> {
    Err(DerError {
        offset,
        path: path.to_string(),
        rule,
    })
}

/// One audit line: a field, where it is, and how it is encoded.
#[derive(Debug, Clone)]
pub struct Field {
    pub path: String,
    pub offset: usize,
    pub encoding: String,
}

// Universal tags.
const BOOLEAN: u32 = 1;
const INTEGER: u32 = 2;
const BIT_STRING: u32 = 3;
const OCTET_STRING: u32 = 4;
const NULL: u32 = 5;
const OID: u32 = 6;
const UTF8_STRING: u32 = 12;
const SEQUENCE: u32 = 16;
const SET: u32 = 17;
const PRINTABLE_STRING: u32 = 19;
const IA5_STRING: u32 = 22;
const UTC_TIME: u32 = 23;
const GENERALIZED_TIME: u32 = 24;

const UNIVERSAL: u8 = 0;
const CONTEXT: u8 = 2;

/// One decoded tag-length-value, with absolute offsets.
#[derive(Debug, Clone, Copy)]
struct Tlv<'a> {
    class: u8,
    constructed: bool,
    number: u32,
    /// Offset of the first tag octet.
    offset: usize,
    /// Offset of the first contents octet.
    body: usize,
    /// The whole encoding (tag, length, contents).
    raw: &'a [u8],
    contents: &'a [u8],
}

impl Tlv<'_> {
    fn is(&self, class: u8, constructed: bool, number: u32) -> bool {
        self.class == class && self.constructed == constructed && self.number == number
    }
    fn end(&self) -> usize {
        self.body + self.contents.len()
    }
}

/// Reads consecutive TLVs from `data[pos..end]`.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Reader<'a> {
        Reader {
            data,
            pos: 0,
            end: data.len(),
        }
    }

    /// A reader over the contents of `t`.
    fn inside(data: &'a [u8], t: &Tlv<'a>) -> Reader<'a> {
        Reader {
            data,
            pos: t.body,
            end: t.end(),
        }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.end
    }

    fn octet(&mut self, path: &str) -> Result<u8, DerError> {
        if self.pos >= self.end {
            return err(self.pos, path, Rule::Truncated);
        }
        let b = self.data[self.pos];
        self.pos += 1;
        Ok(b)
    }

    /// The next TLV, with its header checked (tag and length rules).
    fn next(&mut self, path: &str) -> Result<Tlv<'a>, DerError> {
        let offset = self.pos;
        let first = self.octet(path)?;
        let class = first >> 6;
        let constructed = first & 0x20 != 0;
        let mut number = u32::from(first & 0x1f);
        if number == 0x1f {
            let start = self.pos;
            number = 0;
            loop {
                let b = self.octet(path)?;
                if self.pos - 1 == start && b == 0x80 {
                    return err(start, path, Rule::NonMinimalTag);
                }
                if number > (u32::MAX >> 7) {
                    return err(start, path, Rule::NonMinimalTag);
                }
                number = (number << 7) | u32::from(b & 0x7f);
                if b & 0x80 == 0 {
                    break;
                }
            }
            if number < 0x1f {
                return err(offset, path, Rule::NonMinimalTag);
            }
        }
        let len_off = self.pos;
        let l = self.octet(path)?;
        let len = if l < 0x80 {
            usize::from(l)
        } else if l == 0x80 {
            return err(len_off, path, Rule::IndefiniteLength);
        } else if l == 0xff || l > 0x84 {
            return err(len_off, path, Rule::UnsupportedLength);
        } else {
            let n = usize::from(l & 0x7f);
            let mut v = 0usize;
            for i in 0..n {
                let b = self.octet(path)?;
                if i == 0 && b == 0 {
                    return err(len_off, path, Rule::NonMinimalLength);
                }
                v = (v << 8) | usize::from(b);
            }
            if v < 0x80 {
                return err(len_off, path, Rule::NonMinimalLength);
            }
            v
        };
        let body = self.pos;
        if len > self.end - body {
            return err(offset, path, Rule::Truncated);
        }
        self.pos = body + len;
        Ok(Tlv {
            class,
            constructed,
            number,
            offset,
            body,
            raw: &self.data[offset..body + len],
            contents: &self.data[body..body + len],
        })
    }

    /// The next TLV, which must have this class, form and number.
    fn expect(
        &mut self,
        class: u8,
        constructed: bool,
        number: u32,
        path: &str,
    ) -> Result<Tlv<'a>, DerError> {
        let at = self.pos;
        if self.at_end() {
            return err(at, path, Rule::Structure(format!("{path} missing")));
        }
        let t = self.next(path)?;
        if !t.is(class, constructed, number) {
            return err(
                at,
                path,
                Rule::Structure(format!(
                    "expected tag {} got {}",
                    tag_name(class, constructed, number),
                    tag_name(t.class, t.constructed, t.number)
                )),
            );
        }
        Ok(t)
    }

    /// The class/constructed/number of the next TLV, if any (no checks).
    fn peek(&self) -> Option<(u8, bool, u32)> {
        if self.at_end() {
            return None;
        }
        let b = self.data[self.pos];
        Some((b >> 6, b & 0x20 != 0, u32::from(b & 0x1f)))
    }

    fn finish(&self, path: &str) -> Result<(), DerError> {
        if !self.at_end() {
            return err(self.pos, path, Rule::TrailingData);
        }
        Ok(())
    }
}

fn tag_name(class: u8, constructed: bool, number: u32) -> String {
    let c = if constructed { "c" } else { "p" };
    match class {
        UNIVERSAL => format!("UNIVERSAL {number} ({c})"),
        CONTEXT => format!("[{number}] ({c})"),
        1 => format!("APPLICATION {number} ({c})"),
        _ => format!("PRIVATE {number} ({c})"),
    }
}

/// X.690 §11.6: components sorted as octet strings, the shorter padded at
/// its end with zero octets.
fn der_set_le(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().max(b.len());
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        if x != y {
            return x < y;
        }
    }
    true
}

fn check_time(t: &Tlv<'_>, path: &str) -> Result<i32, DerError> {
    let s = t.contents;
    let (year, rest) = match t.number {
        UTC_TIME => {
            if s.len() != 13 {
                return err(t.offset, path, Rule::BadTime);
            }
            let Some(yy) = digits(&s[0..2]) else {
                return err(t.offset, path, Rule::BadTime);
            };
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &s[2..])
        }
        _ => {
            if s.len() != 15 {
                return err(t.offset, path, Rule::BadTime);
            }
            let Some(y) = digits(&s[0..4]) else {
                return err(t.offset, path, Rule::BadTime);
            };
            (y, &s[4..])
        }
    };
    // rest = MMDDHHMMSSZ
    if rest[10] != b'Z' {
        return err(t.offset, path, Rule::BadTime);
    }
    let field = |i: usize| digits(&rest[i..i + 2]);
    let (Some(mo), Some(d), Some(h), Some(mi), Some(sec)) =
        (field(0), field(2), field(4), field(6), field(8))
    else {
        return err(t.offset, path, Rule::BadTime);
    };
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match mo {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return err(t.offset, path, Rule::BadTime),
    };
    if d == 0 || d > days || h > 23 || mi > 59 || sec > 59 {
        return err(t.offset, path, Rule::BadTime);
    }
    Ok(year)
}

fn digits(s: &[u8]) -> Option<i32> {
    let mut v = 0i32;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i32::from(c - b'0');
    }
    Some(v)
}

/// Checks the contents of a primitive universal value.
fn check_primitive(t: &Tlv<'_>, path: &str) -> Result<(), DerError> {
    let c = t.contents;
    match t.number {
        0 => return err(t.offset, path, Rule::Structure("end-of-contents octets".into())),
        BOOLEAN if c.len() != 1 || (c[0] != 0 && c[0] != 0xff) => {
            return err(t.offset, path, Rule::BadBoolean);
        }
        INTEGER | 10 /* ENUMERATED */ => {
            if c.is_empty() {
                return err(t.offset, path, Rule::EmptyInteger);
            }
            if c.len() > 1
                && ((c[0] == 0 && c[1] & 0x80 == 0) || (c[0] == 0xff && c[1] & 0x80 != 0))
            {
                return err(t.body, path, Rule::NonMinimalInteger);
            }
        }
        BIT_STRING => {
            let Some(&unused) = c.first() else {
                return err(t.offset, path, Rule::BitStringUnusedBits);
            };
            if unused > 7 || (c.len() == 1 && unused != 0) {
                return err(t.body, path, Rule::BitStringUnusedBits);
            }
            if unused > 0 {
                let last = c[c.len() - 1];
                if last & ((1u8 << unused) - 1) != 0 {
                    return err(t.end() - 1, path, Rule::BitStringPadding);
                }
            }
        }
        NULL if !c.is_empty() => return err(t.offset, path, Rule::BadNull),
        OID => {
            if c.is_empty() || c[c.len() - 1] & 0x80 != 0 {
                return err(t.offset, path, Rule::BadOid);
            }
            let mut start = true;
            for (i, &b) in c.iter().enumerate() {
                if start && b == 0x80 {
                    return err(t.body + i, path, Rule::BadOid);
                }
                start = b & 0x80 == 0;
            }
        }
        UTC_TIME | GENERALIZED_TIME => {
            check_time(t, path)?;
        }
        UTF8_STRING if std::str::from_utf8(c).is_err() => {
            return err(t.offset, path, Rule::BadString);
        }
        PRINTABLE_STRING => {
            let ok = |b: u8| b.is_ascii_alphanumeric() || b" '()+,-./:=?".contains(&b);
            if !c.iter().all(|&b| ok(b)) {
                return err(t.offset, path, Rule::BadString);
            }
        }
        IA5_STRING if !c.is_ascii() => return err(t.offset, path, Rule::BadString),
        _ => {}
    }
    Ok(())
}

/// Walks every TLV in `r` (recursively) checking the rules that need no
/// schema.
fn walk(data: &[u8], r: &mut Reader<'_>, path: &str, depth: usize) -> Result<(), DerError> {
    if depth > 64 {
        return err(
            r.pos,
            path,
            Rule::Structure("nesting deeper than 64".into()),
        );
    }
    while !r.at_end() {
        let t = r.next(path)?;
        if t.class == UNIVERSAL {
            let must_construct = matches!(t.number, SEQUENCE | SET);
            if t.constructed != must_construct {
                return err(t.offset, path, Rule::WrongForm);
            }
            if !t.constructed {
                check_primitive(&t, path)?;
            }
        }
        if t.constructed {
            let mut inner = Reader::inside(data, &t);
            walk(data, &mut inner, path, depth + 1)?;
            if t.class == UNIVERSAL && t.number == SET {
                check_set_order(data, &t, path)?;
            }
        }
    }
    Ok(())
}

fn check_set_order(data: &[u8], t: &Tlv<'_>, path: &str) -> Result<(), DerError> {
    let mut r = Reader::inside(data, t);
    let mut prev: Option<&[u8]> = None;
    while !r.at_end() {
        let e = r.next(path)?;
        if let Some(p) = prev
            && !der_set_le(p, e.raw)
        {
            return err(e.offset, path, Rule::SetOrder);
        }
        prev = Some(e.raw);
    }
    Ok(())
}

/// Checks that `der` is exactly one DER value with no schema-free rule
/// broken (trailing data included).
pub fn check_der(der: &[u8]) -> Result<(), DerError> {
    let mut r = Reader::new(der);
    if r.at_end() {
        return err(0, "", Rule::Truncated);
    }
    let t = r.next("")?;
    r.finish("")?;
    let mut one = Reader {
        data: der,
        pos: t.offset,
        end: t.end(),
    };
    walk(der, &mut one, "", 0)
}

fn oid_string(c: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut v = 0u64;
    for &b in c {
        v = (v << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (v / 40).min(2);
                arcs.push(first);
                arcs.push(v - first * 40);
            } else {
                arcs.push(v);
            }
            v = 0;
        }
    }
    arcs.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn short_hex(b: &[u8]) -> String {
    if b.len() <= 24 {
        hex(b)
    } else {
        format!("{}… ({} octets)", hex(&b[..16]), b.len())
    }
}

fn oid_name(oid: &str) -> &'static str {
    match oid {
        "1.2.840.10045.4.3.2" => "ecdsa-with-SHA256",
        "1.2.840.10045.4.3.3" => "ecdsa-with-SHA384",
        "1.2.840.10045.4.3.4" => "ecdsa-with-SHA512",
        "1.2.840.113549.1.1.1" => "rsaEncryption",
        "1.2.840.113549.1.1.11" => "sha256WithRSAEncryption",
        "1.2.840.113549.1.1.12" => "sha384WithRSAEncryption",
        "1.2.840.113549.1.1.13" => "sha512WithRSAEncryption",
        "1.2.840.113549.1.1.10" => "rsassa-pss",
        "1.3.101.112" => "Ed25519",
        "1.2.840.10045.2.1" => "id-ecPublicKey",
        "1.2.840.10045.3.1.7" => "prime256v1",
        "1.3.132.0.34" => "secp384r1",
        "1.3.132.0.35" => "secp521r1",
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.29.14" => "subjectKeyIdentifier",
        "2.5.29.15" => "keyUsage",
        "2.5.29.17" => "subjectAltName",
        "2.5.29.19" => "basicConstraints",
        "2.5.29.30" => "nameConstraints",
        "2.5.29.35" => "authorityKeyIdentifier",
        "2.5.29.37" => "extKeyUsage",
        "1.3.6.1.5.5.7.3.1" => "serverAuth",
        "1.3.6.1.5.5.7.3.2" => "clientAuth",
        "1.2.840.113549.1.9.14" => "extensionRequest",
        _ => "",
    }
}

fn named(oid: &str) -> String {
    match oid_name(oid) {
        "" => oid.to_string(),
        n => format!("{n} ({oid})"),
    }
}

/// Schema-aware walk of a certificate or CSR; collects audit lines.
struct Audit<'a> {
    data: &'a [u8],
    fields: Vec<Field>,
}

impl<'a> Audit<'a> {
    fn note(&mut self, path: &str, offset: usize, encoding: String) {
        self.fields.push(Field {
            path: path.to_string(),
            offset,
            encoding,
        });
    }

    /// AlgorithmIdentifier: ECDSA parameters absent, RSA PKCS#1 v1.5 NULL.
    fn algorithm(&mut self, r: &mut Reader<'a>, path: &str) -> Result<String, DerError> {
        let t = r.expect(UNIVERSAL, true, SEQUENCE, path)?;
        let mut a = Reader::inside(self.data, &t);
        let oid_t = a.expect(UNIVERSAL, false, OID, &format!("{path}.algorithm"))?;
        let oid = oid_string(oid_t.contents);
        let params = if a.at_end() {
            None
        } else {
            Some(a.next(&format!("{path}.parameters"))?)
        };
        a.finish(path)?;
        let p = format!("{path}.parameters");
        let desc = match (oid.as_str(), params) {
            (o, None) if o.starts_with("1.2.840.10045.4.3.") => "parameters absent".to_string(),
            (o, Some(_)) if o.starts_with("1.2.840.10045.4.3.") => {
                return err(
                    t.offset,
                    &p,
                    Rule::Profile(
                        "ECDSA AlgorithmIdentifier parameters must be absent (RFC 5758 3.2)".into(),
                    ),
                );
            }
            ("1.3.101.112", None) => "parameters absent".to_string(),
            ("1.3.101.112", Some(_)) => {
                return err(
                    t.offset,
                    &p,
                    Rule::Profile("Ed25519 parameters must be absent (RFC 8410 3)".into()),
                );
            }
            (o, Some(n))
                if o.starts_with("1.2.840.113549.1.1.") && o != "1.2.840.113549.1.1.10" =>
            {
                if !n.is(UNIVERSAL, false, NULL) {
                    return err(
                        n.offset,
                        &p,
                        Rule::Profile(
                            "RSA AlgorithmIdentifier parameters must be NULL (RFC 4055 5)".into(),
                        ),
                    );
                }
                "parameters NULL".to_string()
            }
            (o, None) if o.starts_with("1.2.840.113549.1.1.") && o != "1.2.840.113549.1.1.10" => {
                return err(
                    t.offset,
                    &p,
                    Rule::Profile(
                        "RSA AlgorithmIdentifier parameters must be NULL (RFC 4055 5)".into(),
                    ),
                );
            }
            ("1.2.840.10045.2.1", Some(n)) if n.is(UNIVERSAL, false, OID) => {
                format!("namedCurve {}", named(&oid_string(n.contents)))
            }
            ("1.2.840.10045.2.1", _) => {
                return err(
                    t.offset,
                    &p,
                    Rule::Profile("id-ecPublicKey needs a namedCurve OID (RFC 5480 2.1.1)".into()),
                );
            }
            (_, None) => "parameters absent".to_string(),
            (_, Some(n)) => format!("parameters {}", short_hex(n.raw)),
        };
        let s = format!("{} {desc}: {}", named(&oid), hex(t.raw));
        self.note(path, t.offset, s.clone());
        Ok(oid)
    }

    /// Name ::= SEQUENCE OF RDN; RDN ::= SET SIZE (1..MAX) OF
    /// AttributeTypeAndValue (SET order is checked by the generic walk).
    fn name(&mut self, r: &mut Reader<'a>, path: &str) -> Result<(), DerError> {
        let t = r.expect(UNIVERSAL, true, SEQUENCE, path)?;
        let mut rdns = Reader::inside(self.data, &t);
        let mut parts = Vec::new();
        while !rdns.at_end() {
            let set = rdns.expect(UNIVERSAL, true, SET, &format!("{path}.rdn"))?;
            let mut avas = Reader::inside(self.data, &set);
            if avas.at_end() {
                return err(
                    set.offset,
                    path,
                    Rule::Structure("empty RelativeDistinguishedName".into()),
                );
            }
            let mut rdn = Vec::new();
            while !avas.at_end() {
                let ava = avas.expect(UNIVERSAL, true, SEQUENCE, &format!("{path}.ava"))?;
                let mut a = Reader::inside(self.data, &ava);
                let ty = a.expect(UNIVERSAL, false, OID, &format!("{path}.ava.type"))?;
                let v = a.next(&format!("{path}.ava.value"))?;
                a.finish(path)?;
                let kind = match v.number {
                    UTF8_STRING => "UTF8String",
                    PRINTABLE_STRING => "PrintableString",
                    IA5_STRING => "IA5String",
                    _ => "other",
                };
                let key = match oid_name(&oid_string(ty.contents)) {
                    "" => oid_string(ty.contents),
                    n => n.to_string(),
                };
                rdn.push(format!(
                    "{key}={} ({kind})",
                    String::from_utf8_lossy(v.contents)
                ));
            }
            parts.push(rdn.join("+"));
        }
        let s = if parts.is_empty() {
            "empty SEQUENCE".to_string()
        } else {
            format!("{} RDNs, one SET each: {}", parts.len(), parts.join(", "))
        };
        self.note(path, t.offset, s);
        Ok(())
    }

    fn spki(&mut self, r: &mut Reader<'a>, path: &str) -> Result<(), DerError> {
        let t = r.expect(UNIVERSAL, true, SEQUENCE, path)?;
        let mut s = Reader::inside(self.data, &t);
        let alg = self.algorithm(&mut s, &format!("{path}.algorithm"))?;
        let key = s.expect(
            UNIVERSAL,
            false,
            BIT_STRING,
            &format!("{path}.subjectPublicKey"),
        )?;
        s.finish(path)?;
        if key.contents.first() != Some(&0) {
            return err(
                key.body,
                path,
                Rule::Profile("subjectPublicKey must be whole octets".into()),
            );
        }
        let point = &key.contents[1..];
        let form = if alg == "1.2.840.10045.2.1" {
            match point.first() {
                Some(4) => "uncompressed EC point",
                Some(2 | 3) => "compressed EC point",
                _ => {
                    return err(
                        key.body + 1,
                        path,
                        Rule::Profile("EC point form unknown".into()),
                    );
                }
            }
        } else {
            "key"
        };
        if alg == "1.2.840.113549.1.1.1" {
            // RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }
            let mut k = Reader {
                data: self.data,
                pos: key.body + 1,
                end: key.end(),
            };
            let seq = k.expect(UNIVERSAL, true, SEQUENCE, &format!("{path}.rsaPublicKey"))?;
            k.finish(path)?;
            walk(
                self.data,
                &mut Reader {
                    data: self.data,
                    pos: seq.offset,
                    end: seq.end(),
                },
                path,
                0,
            )?;
        }
        self.note(
            &format!("{path}.subjectPublicKey"),
            key.offset,
            format!("BIT STRING, 0 unused bits, {form}, {} octets", point.len()),
        );
        Ok(())
    }

    /// The signature BIT STRING; for ECDSA its Ecdsa-Sig-Value is checked
    /// as DER too (two minimal INTEGERs).
    fn signature(&mut self, r: &mut Reader<'a>, alg: &str, path: &str) -> Result<(), DerError> {
        let t = r.expect(UNIVERSAL, false, BIT_STRING, path)?;
        if t.contents.first() != Some(&0) {
            return err(
                t.body,
                path,
                Rule::Profile("signature must be whole octets".into()),
            );
        }
        let mut desc = format!("BIT STRING, 0 unused bits, {} octets", t.contents.len() - 1);
        if alg.starts_with("1.2.840.10045.4.3.") {
            let mut s = Reader {
                data: self.data,
                pos: t.body + 1,
                end: t.end(),
            };
            let seq = s.expect(
                UNIVERSAL,
                true,
                SEQUENCE,
                &format!("{path}.Ecdsa-Sig-Value"),
            )?;
            s.finish(path)?;
            let mut rs = Reader::inside(self.data, &seq);
            let rr = rs.expect(UNIVERSAL, false, INTEGER, &format!("{path}.r"))?;
            let ss = rs.expect(UNIVERSAL, false, INTEGER, &format!("{path}.s"))?;
            rs.finish(path)?;
            for (v, n) in [(rr, "r"), (ss, "s")] {
                check_primitive(&v, &format!("{path}.{n}"))?;
                if v.contents[0] & 0x80 != 0 {
                    return err(
                        v.offset,
                        path,
                        Rule::Profile("ECDSA r/s must be positive".into()),
                    );
                }
            }
            desc.push_str(&format!(
                "; Ecdsa-Sig-Value r {} octets, s {} octets, minimal",
                rr.contents.len(),
                ss.contents.len()
            ));
        }
        self.note(path, t.offset, desc);
        Ok(())
    }

    /// Extensions ::= SEQUENCE SIZE (1..MAX) OF Extension
    fn extensions(&mut self, t: &Tlv<'a>, path: &str, in_cert: bool) -> Result<(), DerError> {
        let mut r = Reader::inside(self.data, t);
        if r.at_end() {
            return err(
                t.offset,
                path,
                Rule::Structure("empty Extensions (SIZE 1..MAX)".into()),
            );
        }
        let mut seen: Vec<String> = Vec::new();
        let mut i = 0;
        while !r.at_end() {
            let p = format!("{path}[{i}]");
            let e = r.expect(UNIVERSAL, true, SEQUENCE, &p)?;
            let mut x = Reader::inside(self.data, &e);
            let oid_t = x.expect(UNIVERSAL, false, OID, &format!("{p}.extnID"))?;
            let oid = oid_string(oid_t.contents);
            let name = match oid_name(&oid) {
                "" => oid.clone(),
                n => n.to_string(),
            };
            let p = format!("{path}[{i}]={name}");
            if seen.contains(&oid) {
                return err(
                    e.offset,
                    &p,
                    Rule::Profile("extension present twice (RFC 5280 4.2)".into()),
                );
            }
            seen.push(oid.clone());
            let mut critical = "absent (FALSE by DEFAULT)";
            if x.peek() == Some((UNIVERSAL, false, BOOLEAN)) {
                let c = x.next(&format!("{p}.critical"))?;
                if c.contents == [0] {
                    return err(
                        c.offset,
                        &format!("{p}.critical"),
                        Rule::EncodedDefault("Extension.critical FALSE"),
                    );
                }
                critical = "TRUE";
            }
            let v = x.expect(UNIVERSAL, false, OCTET_STRING, &format!("{p}.extnValue"))?;
            x.finish(&p)?;
            // extnValue holds exactly one DER value.
            let mut inner = Reader::inside(self.data, &v);
            let val = inner.next(&format!("{p}.extnValue"))?;
            inner.finish(&format!("{p}.extnValue"))?;
            walk(
                self.data,
                &mut Reader {
                    data: self.data,
                    pos: val.offset,
                    end: val.end(),
                },
                &format!("{p}.extnValue"),
                0,
            )?;
            let detail = self.extension_value(&oid, &val, &p, in_cert)?;
            self.note(
                &p,
                e.offset,
                format!("critical {critical}; value {}{detail}", short_hex(val.raw)),
            );
            i += 1;
        }
        Ok(())
    }

    /// Rules of particular extensions.
    fn extension_value(
        &mut self,
        oid: &str,
        val: &Tlv<'a>,
        p: &str,
        _in_cert: bool,
    ) -> Result<String, DerError> {
        Ok(match oid {
            "2.5.29.19" => {
                if !val.is(UNIVERSAL, true, SEQUENCE) {
                    return err(
                        val.offset,
                        p,
                        Rule::Structure("BasicConstraints is a SEQUENCE".into()),
                    );
                }
                let mut b = Reader::inside(self.data, val);
                let mut ca = "cA absent (FALSE by DEFAULT)".to_string();
                if b.peek() == Some((UNIVERSAL, false, BOOLEAN)) {
                    let c = b.next(&format!("{p}.cA"))?;
                    if c.contents == [0] {
                        return err(
                            c.offset,
                            &format!("{p}.cA"),
                            Rule::EncodedDefault("BasicConstraints.cA FALSE"),
                        );
                    }
                    ca = "cA TRUE".into();
                }
                if !b.at_end() {
                    let n =
                        b.expect(UNIVERSAL, false, INTEGER, &format!("{p}.pathLenConstraint"))?;
                    ca.push_str(&format!(", pathLen {}", hex(n.contents)));
                }
                b.finish(p)?;
                format!(" ({ca})")
            }
            "2.5.29.15" => {
                if !val.is(UNIVERSAL, false, BIT_STRING) {
                    return err(
                        val.offset,
                        p,
                        Rule::Structure("KeyUsage is a BIT STRING".into()),
                    );
                }
                named_bits(val, p)?;
                format!(" ({})", key_usage_names(val.contents))
            }
            "2.5.29.14" => {
                if !val.is(UNIVERSAL, false, OCTET_STRING) {
                    return err(
                        val.offset,
                        p,
                        Rule::Structure("SubjectKeyIdentifier is an OCTET STRING".into()),
                    );
                }
                format!(" (keyIdentifier {} octets)", val.contents.len())
            }
            "2.5.29.35" => {
                if !val.is(UNIVERSAL, true, SEQUENCE) {
                    return err(
                        val.offset,
                        p,
                        Rule::Structure("AuthorityKeyIdentifier is a SEQUENCE".into()),
                    );
                }
                let mut a = Reader::inside(self.data, val);
                let mut parts = Vec::new();
                while !a.at_end() {
                    let f = a.next(p)?;
                    parts.push(format!("[{}] {} octets", f.number, f.contents.len()));
                }
                format!(" ({})", parts.join(", "))
            }
            "2.5.29.17" => {
                if !val.is(UNIVERSAL, true, SEQUENCE) {
                    return err(
                        val.offset,
                        p,
                        Rule::Structure("GeneralNames is a SEQUENCE".into()),
                    );
                }
                let mut g = Reader::inside(self.data, val);
                if g.at_end() {
                    return err(val.offset, p, Rule::Structure("empty GeneralNames".into()));
                }
                let mut names = Vec::new();
                while !g.at_end() {
                    let n = g.next(p)?;
                    match (n.class, n.constructed, n.number) {
                        (CONTEXT, false, 1 | 2 | 6) => {
                            if !n.contents.is_ascii() {
                                return err(n.offset, p, Rule::BadString);
                            }
                            let k =
                                ["", "rfc822Name", "dNSName", "", "", "", "URI"][n.number as usize];
                            names.push(format!("{k} {}", String::from_utf8_lossy(n.contents)));
                        }
                        _ => names.push(tag_name(n.class, n.constructed, n.number)),
                    }
                }
                format!(" ({})", names.join(", "))
            }
            "2.5.29.37" => {
                let mut g = Reader::inside(self.data, val);
                let mut names = Vec::new();
                while !g.at_end() {
                    let n = g.expect(UNIVERSAL, false, OID, p)?;
                    names.push(named(&oid_string(n.contents)));
                }
                format!(" ({})", names.join(", "))
            }
            _ => String::new(),
        })
    }

    /// Validity ::= SEQUENCE { notBefore Time, notAfter Time }
    fn validity(&mut self, r: &mut Reader<'a>, path: &str) -> Result<(), DerError> {
        let t = r.expect(UNIVERSAL, true, SEQUENCE, path)?;
        let mut v = Reader::inside(self.data, &t);
        for name in ["notBefore", "notAfter"] {
            let p = format!("{path}.{name}");
            let tm = v.next(&p)?;
            if tm.class != UNIVERSAL || !matches!(tm.number, UTC_TIME | GENERALIZED_TIME) {
                return err(
                    tm.offset,
                    &p,
                    Rule::Structure("Time is UTCTime or GeneralizedTime".into()),
                );
            }
            let year = check_time(&tm, &p)?;
            let utc = tm.number == UTC_TIME;
            if utc != (1950..=2049).contains(&year) {
                return err(tm.offset, &p, Rule::TimeTypeForYear);
            }
            self.note(
                &p,
                tm.offset,
                format!(
                    "{} {}",
                    if utc { "UTCTime" } else { "GeneralizedTime" },
                    String::from_utf8_lossy(tm.contents)
                ),
            );
        }
        v.finish(path)
    }
}

/// X.690 §11.2.2: a named bit list ends on a one bit (or is empty, 03 01 00).
fn named_bits(t: &Tlv<'_>, path: &str) -> Result<(), DerError> {
    let c = t.contents;
    if c.len() > 1 {
        let unused = c[0];
        let last = c[c.len() - 1];
        if unused > 7 || (last >> unused) & 1 == 0 {
            return err(t.end() - 1, path, Rule::BitStringTrailingZeros);
        }
    }
    Ok(())
}

fn key_usage_names(c: &[u8]) -> String {
    const NAMES: [&str; 9] = [
        "digitalSignature",
        "nonRepudiation",
        "keyEncipherment",
        "dataEncipherment",
        "keyAgreement",
        "keyCertSign",
        "cRLSign",
        "encipherOnly",
        "decipherOnly",
    ];
    let mut v = Vec::new();
    for (i, n) in NAMES.iter().enumerate() {
        if let Some(&b) = c.get(1 + i / 8)
            && b & (0x80 >> (i % 8)) != 0
        {
            v.push(*n);
        }
    }
    v.join("+")
}

/// Checks a DER X.509 certificate: the generic rules everywhere, then the
/// schema rules (no encoded DEFAULT, canonical validity, algorithm
/// parameters, named bits of keyUsage, one instance per extension).
/// Returns one audit line per field.
pub fn check_certificate(der: &[u8]) -> Result<Vec<Field>, DerError> {
    check_der(der)?;
    let mut a = Audit {
        data: der,
        fields: Vec::new(),
    };
    let mut top = Reader::new(der);
    let cert = top.expect(UNIVERSAL, true, SEQUENCE, "Certificate")?;
    top.finish("Certificate")?;
    let mut c = Reader::inside(der, &cert);
    let tbs = c.expect(UNIVERSAL, true, SEQUENCE, "tbs")?;
    let mut t = Reader::inside(der, &tbs);

    // version [0] EXPLICIT Version DEFAULT v1
    let mut version = 0u8;
    if t.peek() == Some((CONTEXT, true, 0)) {
        let v = t.next("tbs.version")?;
        let mut vr = Reader::inside(der, &v);
        let n = vr.expect(UNIVERSAL, false, INTEGER, "tbs.version")?;
        vr.finish("tbs.version")?;
        if n.contents == [0] {
            return err(
                v.offset,
                "tbs.version",
                Rule::EncodedDefault("Certificate version v1"),
            );
        }
        if n.contents != [1] && n.contents != [2] {
            return err(
                n.offset,
                "tbs.version",
                Rule::Structure("unknown version".into()),
            );
        }
        version = n.contents[0];
        a.note(
            "tbs.version",
            v.offset,
            format!(
                "[0] {{ INTEGER {version} }} (v{}): {}",
                version + 1,
                hex(v.raw)
            ),
        );
    } else {
        a.note("tbs.version", tbs.body, "absent (v1)".into());
    }

    let serial = t.expect(UNIVERSAL, false, INTEGER, "tbs.serialNumber")?;
    if serial.contents[0] & 0x80 != 0 || serial.contents.iter().all(|&b| b == 0) {
        return err(
            serial.offset,
            "tbs.serialNumber",
            Rule::Profile("serial must be positive (RFC 5280 4.1.2.2)".into()),
        );
    }
    if serial.contents.len() > 20 {
        return err(
            serial.offset,
            "tbs.serialNumber",
            Rule::Profile("serial longer than 20 octets (RFC 5280 4.1.2.2)".into()),
        );
    }
    a.note(
        "tbs.serialNumber",
        serial.offset,
        format!(
            "INTEGER {} octets, positive, minimal: {}",
            serial.contents.len(),
            hex(serial.contents)
        ),
    );
    let tbs_alg_start = t.pos;
    let tbs_alg = a.algorithm(&mut t, "tbs.signature")?;
    let tbs_alg_raw = &der[tbs_alg_start..t.pos];
    a.name(&mut t, "tbs.issuer")?;
    a.validity(&mut t, "tbs.validity")?;
    a.name(&mut t, "tbs.subject")?;
    a.spki(&mut t, "tbs.subjectPublicKeyInfo")?;
    for (n, what) in [(1, "issuerUniqueID"), (2, "subjectUniqueID")] {
        if matches!(t.peek(), Some((CONTEXT, _, x)) if x == n) {
            let u = t.next(what)?;
            return err(
                u.offset,
                what,
                Rule::Profile(format!(
                    "{what} present (RFC 5280 4.1.2.8: conforming CAs MUST NOT)"
                )),
            );
        }
    }
    if t.peek() == Some((CONTEXT, true, 3)) {
        let e = t.next("tbs.extensions")?;
        if version != 2 {
            return err(
                e.offset,
                "tbs.extensions",
                Rule::Profile("extensions need version v3".into()),
            );
        }
        let mut er = Reader::inside(der, &e);
        let seq = er.expect(UNIVERSAL, true, SEQUENCE, "tbs.extensions")?;
        er.finish("tbs.extensions")?;
        a.extensions(&seq, "tbs.extensions", true)?;
    }
    t.finish("tbs")?;

    let alg_start = c.pos;
    let alg = a.algorithm(&mut c, "signatureAlgorithm")?;
    if &der[alg_start..c.pos] != tbs_alg_raw || alg != tbs_alg {
        return err(
            alg_start,
            "signatureAlgorithm",
            Rule::Profile("differs from tbs.signature (RFC 5280 4.1.1.2)".into()),
        );
    }
    a.signature(&mut c, &alg, "signatureValue")?;
    c.finish("Certificate")?;
    Ok(a.fields)
}

/// Checks a DER PKCS#10 CertificationRequest (RFC 2986): generic rules,
/// version 0, attributes sorted, extensionRequest extensions checked like a
/// certificate's. Returns one audit line per field.
pub fn check_csr(der: &[u8]) -> Result<Vec<Field>, DerError> {
    check_der(der)?;
    let mut a = Audit {
        data: der,
        fields: Vec::new(),
    };
    let mut top = Reader::new(der);
    let req = top.expect(UNIVERSAL, true, SEQUENCE, "CertificationRequest")?;
    top.finish("CertificationRequest")?;
    let mut c = Reader::inside(der, &req);
    let info = c.expect(UNIVERSAL, true, SEQUENCE, "info")?;
    let mut t = Reader::inside(der, &info);
    let v = t.expect(UNIVERSAL, false, INTEGER, "info.version")?;
    if v.contents != [0] {
        return err(
            v.offset,
            "info.version",
            Rule::Structure("CSR version must be v1 (0)".into()),
        );
    }
    a.note(
        "info.version",
        v.offset,
        format!("INTEGER 0 (v1, no DEFAULT): {}", hex(v.raw)),
    );
    a.name(&mut t, "info.subject")?;
    a.spki(&mut t, "info.subjectPKInfo")?;
    // attributes [0] IMPLICIT SET OF Attribute: a SET OF, so sorted.
    let attrs = t.expect(CONTEXT, true, 0, "info.attributes")?;
    check_set_order(der, &attrs, "info.attributes")?;
    let mut ar = Reader::inside(der, &attrs);
    let mut n = 0;
    while !ar.at_end() {
        let p = format!("info.attributes[{n}]");
        let at = ar.expect(UNIVERSAL, true, SEQUENCE, &p)?;
        let mut x = Reader::inside(der, &at);
        let ty = x.expect(UNIVERSAL, false, OID, &format!("{p}.type"))?;
        let vals = x.expect(UNIVERSAL, true, SET, &format!("{p}.values"))?;
        x.finish(&p)?;
        let oid = oid_string(ty.contents);
        if oid == "1.2.840.113549.1.9.14" {
            let mut vr = Reader::inside(der, &vals);
            let ext = vr.expect(UNIVERSAL, true, SEQUENCE, &format!("{p}.extensionRequest"))?;
            vr.finish(&p)?;
            a.extensions(&ext, &format!("{p}.extensionRequest"), false)?;
        }
        a.note(
            &p,
            at.offset,
            format!("{} {}", named(&oid), short_hex(at.raw)),
        );
        n += 1;
    }
    a.note(
        "info.attributes",
        attrs.offset,
        format!(
            "[0] IMPLICIT SET OF, {n} attributes: {}",
            short_hex(attrs.raw)
        ),
    );
    t.finish("info")?;
    let alg = a.algorithm(&mut c, "signatureAlgorithm")?;
    a.signature(&mut c, &alg, "signature")?;
    c.finish("CertificationRequest")?;
    Ok(a.fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TLV with a minimal definite length.
    fn tlv(tag: u8, c: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        let n = c.len();
        if n < 0x80 {
            v.push(n as u8);
        } else if n < 0x100 {
            v.extend([0x81, n as u8]);
        } else {
            v.extend([0x82, (n >> 8) as u8, n as u8]);
        }
        v.extend_from_slice(c);
        v
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    fn seq(parts: &[&[u8]]) -> Vec<u8> {
        tlv(0x30, &cat(parts))
    }

    fn oid(arcs: &[u8]) -> Vec<u8> {
        tlv(0x06, arcs)
    }

    // 1.2.840.10045.4.3.2 ecdsa-with-SHA256
    const ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
    // 1.2.840.10045.2.1 id-ecPublicKey, 1.2.840.10045.3.1.7 prime256v1
    const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    // 1.2.840.113549.1.1.11 sha256WithRSAEncryption
    const RSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
    const CN: &[u8] = &[0x55, 0x04, 0x03];
    const O: &[u8] = &[0x55, 0x04, 0x0a];
    const BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];
    const KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x0f];
    const SAN: &[u8] = &[0x55, 0x1d, 0x11];

    fn ext(id: &[u8], critical: Option<bool>, value: &[u8]) -> Vec<u8> {
        let crit = match critical {
            None => vec![],
            Some(true) => vec![0x01, 0x01, 0xff],
            Some(false) => vec![0x01, 0x01, 0x00],
        };
        seq(&[&oid(id), &crit, &tlv(0x04, value)])
    }

    fn name(rdns: &[&[(&[u8], &str)]]) -> Vec<u8> {
        let sets: Vec<Vec<u8>> = rdns
            .iter()
            .map(|rdn| {
                let avas: Vec<Vec<u8>> = rdn
                    .iter()
                    .map(|(t, v)| seq(&[&oid(t), &tlv(0x0c, v.as_bytes())]))
                    .collect();
                tlv(0x31, &avas.concat())
            })
            .collect();
        tlv(0x30, &sets.concat())
    }

    fn ecdsa_sig() -> Vec<u8> {
        let mut r = vec![0x00, 0x80];
        r.extend([1u8; 31]);
        let s = [0x11u8; 32];
        let sig = seq(&[&tlv(0x02, &r), &tlv(0x02, &s)]);
        let mut bits = vec![0u8];
        bits.extend(sig);
        tlv(0x03, &bits)
    }

    /// A well-formed certificate, piece by piece, to break one rule at a
    /// time.
    #[derive(Clone)]
    struct Cert {
        version: Vec<u8>,
        serial: Vec<u8>,
        tbs_alg: Vec<u8>,
        issuer: Vec<u8>,
        validity: Vec<u8>,
        subject: Vec<u8>,
        spki: Vec<u8>,
        exts: Vec<Vec<u8>>,
        alg: Vec<u8>,
        sig: Vec<u8>,
        trailing: Vec<u8>,
    }

    impl Cert {
        fn good() -> Cert {
            let alg = seq(&[&oid(ECDSA_SHA256)]);
            let mut point = vec![0u8, 0x04];
            point.extend([7u8; 64]);
            Cert {
                version: tlv(0xa0, &tlv(0x02, &[2])),
                serial: tlv(0x02, &[0x01, 0x02, 0x03]),
                tbs_alg: alg.clone(),
                issuer: name(&[&[(O, "Sigil")], &[(CN, "CA")]]),
                validity: seq(&[&tlv(0x17, b"250101000000Z"), &tlv(0x18, b"20500101000000Z")]),
                subject: name(&[&[(O, "Sigil")]]),
                spki: seq(&[&seq(&[&oid(EC_PUBLIC_KEY), &oid(P256)]), &tlv(0x03, &point)]),
                exts: vec![
                    ext(BASIC_CONSTRAINTS, Some(true), &seq(&[])),
                    ext(KEY_USAGE, Some(true), &[0x03, 0x02, 0x07, 0x80]),
                    ext(SAN, None, &seq(&[&tlv(0x86, b"spiffe://example.org/w")])),
                ],
                alg,
                sig: ecdsa_sig(),
                trailing: vec![],
            }
        }
    }

    impl Cert {
        fn der(&self) -> Vec<u8> {
            let exts = if self.exts.is_empty() {
                vec![]
            } else {
                tlv(0xa3, &tlv(0x30, &self.exts.concat()))
            };
            let tbs = seq(&[
                &self.version,
                &self.serial,
                &self.tbs_alg,
                &self.issuer,
                &self.validity,
                &self.subject,
                &self.spki,
                &exts,
            ]);
            let mut c = seq(&[&tbs, &self.alg, &self.sig]);
            c.extend(&self.trailing);
            c
        }
    }

    fn rule_of(r: Result<Vec<Field>, DerError>) -> Rule {
        match r {
            Ok(_) => panic!("accepted"),
            Err(e) => {
                // Every refusal names an offset inside the blob and prints.
                assert!(!e.to_string().is_empty());
                e.rule
            }
        }
    }

    fn generic(b: &[u8]) -> Rule {
        check_der(b).expect_err("accepted").rule
    }

    #[test]
    fn good_values_pass() {
        for b in [
            &[0x02, 0x01, 0x00][..],
            &[0x02, 0x01, 0xff],
            &[0x02, 0x02, 0x00, 0x80],
            &[0x02, 0x02, 0xff, 0x7f],
            &[0x01, 0x01, 0xff],
            &[0x01, 0x01, 0x00],
            &[0x03, 0x01, 0x00],
            &[0x03, 0x02, 0x01, 0x06],
            &[0x05, 0x00],
            &[0x06, 0x03, 0x55, 0x1d, 0x13],
            &[0x30, 0x00],
            &[0x31, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x02],
            &[0x31, 0x05, 0x04, 0x00, 0x04, 0x01, 0x00],
            &[0x9f, 0x1f, 0x00],
        ] {
            check_der(b).unwrap_or_else(|e| panic!("{b:02x?}: {e}"));
        }
        let mut long = vec![0x04, 0x81, 0x80];
        long.extend([0u8; 0x80]);
        check_der(&long).unwrap();
        let fields = check_certificate(&Cert::good().der()).unwrap();
        assert!(
            fields
                .iter()
                .any(|f| f.path.contains("basicConstraints") && f.encoding.contains("cA absent"))
        );
    }

    #[test]
    fn lengths() {
        assert_eq!(generic(&[0x30, 0x80, 0x00, 0x00]), Rule::IndefiniteLength);
        // Long form where the short form fits.
        assert_eq!(generic(&[0x04, 0x81, 0x01, 0x00]), Rule::NonMinimalLength);
        // Leading zero length octet.
        let mut b = vec![0x04, 0x82, 0x00, 0x80];
        b.extend([0u8; 0x80]);
        assert_eq!(generic(&b), Rule::NonMinimalLength);
        assert_eq!(generic(&[0x04, 0xff]), Rule::UnsupportedLength);
        assert_eq!(generic(&[0x04, 0x05, 0x00]), Rule::Truncated);
        assert_eq!(generic(&[]), Rule::Truncated);
        // A nested length beyond its container.
        assert_eq!(generic(&[0x30, 0x02, 0x04, 0x05]), Rule::Truncated);
        let e = check_der(&[0x30, 0x05, 0x04, 0x81, 0x01, 0x00, 0x00]).unwrap_err();
        assert_eq!((e.offset, e.rule), (3, Rule::NonMinimalLength));
    }

    #[test]
    fn tags_and_forms() {
        assert_eq!(generic(&[0x1f, 0x05, 0x00]), Rule::NonMinimalTag);
        assert_eq!(generic(&[0x9f, 0x80, 0x21, 0x00]), Rule::NonMinimalTag);
        // Constructed OCTET STRING, primitive SEQUENCE.
        assert_eq!(generic(&[0x24, 0x03, 0x04, 0x01, 0x00]), Rule::WrongForm);
        assert_eq!(generic(&[0x10, 0x00]), Rule::WrongForm);
    }

    #[test]
    fn trailing_data() {
        assert_eq!(generic(&[0x05, 0x00, 0x00]), Rule::TrailingData);
        let mut c = Cert::good();
        c.trailing = vec![0x00];
        assert_eq!(rule_of(check_certificate(&c.der())), Rule::TrailingData);
    }

    #[test]
    fn booleans_integers_nulls_oids() {
        assert_eq!(generic(&[0x01, 0x01, 0x01]), Rule::BadBoolean);
        assert_eq!(generic(&[0x01, 0x02, 0x00, 0x00]), Rule::BadBoolean);
        assert_eq!(generic(&[0x01, 0x00]), Rule::BadBoolean);
        assert_eq!(generic(&[0x02, 0x00]), Rule::EmptyInteger);
        assert_eq!(generic(&[0x02, 0x02, 0x00, 0x7f]), Rule::NonMinimalInteger);
        assert_eq!(generic(&[0x02, 0x02, 0xff, 0x80]), Rule::NonMinimalInteger);
        assert_eq!(generic(&[0x05, 0x01, 0x00]), Rule::BadNull);
        assert_eq!(generic(&[0x06, 0x02, 0x80, 0x01]), Rule::BadOid);
        assert_eq!(generic(&[0x06, 0x01, 0x81]), Rule::BadOid);
        // A non-minimal serial inside a certificate.
        let mut c = Cert::good();
        c.serial = tlv(0x02, &[0x00, 0x01]);
        assert_eq!(
            rule_of(check_certificate(&c.der())),
            Rule::NonMinimalInteger
        );
        // A non-minimal r inside the ECDSA signature.
        let mut c = Cert::good();
        let sig = seq(&[&tlv(0x02, &[0x00, 0x01]), &tlv(0x02, &[0x01])]);
        c.sig = tlv(0x03, &[&[0u8][..], &sig].concat());
        assert_eq!(
            rule_of(check_certificate(&c.der())),
            Rule::NonMinimalInteger
        );
    }

    #[test]
    fn bit_strings() {
        assert_eq!(generic(&[0x03, 0x00]), Rule::BitStringUnusedBits);
        assert_eq!(generic(&[0x03, 0x01, 0x01]), Rule::BitStringUnusedBits);
        assert_eq!(
            generic(&[0x03, 0x02, 0x08, 0x00]),
            Rule::BitStringUnusedBits
        );
        assert_eq!(generic(&[0x03, 0x02, 0x01, 0x01]), Rule::BitStringPadding);
        // keyUsage digitalSignature with 7 trailing zero bits kept.
        let mut c = Cert::good();
        c.exts[1] = ext(KEY_USAGE, Some(true), &[0x03, 0x02, 0x00, 0x80]);
        assert_eq!(
            rule_of(check_certificate(&c.der())),
            Rule::BitStringTrailingZeros
        );
        // keyCertSign+cRLSign with a zero octet appended.
        c.exts[1] = ext(KEY_USAGE, Some(true), &[0x03, 0x03, 0x00, 0x06, 0x00]);
        assert_eq!(
            rule_of(check_certificate(&c.der())),
            Rule::BitStringTrailingZeros
        );
        c.exts[1] = ext(KEY_USAGE, Some(true), &[0x03, 0x02, 0x01, 0x06]);
        check_certificate(&c.der()).unwrap();
    }

    #[test]
    fn times() {
        for bad in [
            &b"2501010000Z"[..],  // no seconds
            b"250101000000+0100", // offset, not Z
            b"250101000000",      // no Z
            b"251301000000Z",     // month 13
            b"250230000000Z",     // 30 February
            b"250101240000Z",     // hour 24
        ] {
            assert_eq!(generic(&tlv(0x17, bad)), Rule::BadTime, "{bad:?}");
        }
        for bad in [
            &b"20500101000000.5Z"[..],
            b"205001010000Z",
            b"20500101000000",
        ] {
            assert_eq!(generic(&tlv(0x18, bad)), Rule::BadTime, "{bad:?}");
        }
        generic_ok(&tlv(0x18, b"20240229000000Z"));
        // GeneralizedTime for a year UTCTime covers.
        let mut c = Cert::good();
        c.validity = seq(&[
            &tlv(0x18, b"20250101000000Z"),
            &tlv(0x18, b"20500101000000Z"),
        ]);
        assert_eq!(rule_of(check_certificate(&c.der())), Rule::TimeTypeForYear);
        // UTCTime 49 is 2049; UTCTime 50 would be 1950, which is fine too.
        c.validity = seq(&[&tlv(0x17, b"500101000000Z"), &tlv(0x17, b"491231235959Z")]);
        check_certificate(&c.der()).unwrap();
        // GeneralizedTime before 1950 is the right type.
        c.validity = seq(&[&tlv(0x18, b"19490101000000Z"), &tlv(0x17, b"491231235959Z")]);
        check_certificate(&c.der()).unwrap();
    }

    fn generic_ok(b: &[u8]) {
        check_der(b).unwrap_or_else(|e| panic!("{b:02x?}: {e}"));
    }

    #[test]
    fn set_of_order() {
        assert_eq!(
            generic(&[0x31, 0x06, 0x02, 0x01, 0x02, 0x02, 0x01, 0x01]),
            Rule::SetOrder
        );
        // The shorter encoding padded with zeros sorts first.
        assert_eq!(
            generic(&[0x31, 0x05, 0x04, 0x01, 0x00, 0x04, 0x00]),
            Rule::SetOrder
        );
        // A multi-valued RDN out of order: O=Sigil (30 0c …) sorts after
        // CN=x (30 08 …).
        let mut c = Cert::good();
        c.subject = name(&[&[(O, "Sigil"), (CN, "x")]]);
        assert_eq!(rule_of(check_certificate(&c.der())), Rule::SetOrder);
        c.subject = name(&[&[(CN, "x"), (O, "Sigil")]]);
        check_certificate(&c.der()).unwrap();
    }

    #[test]
    fn encoded_defaults() {
        let mut c = Cert::good();
        c.exts[0] = ext(BASIC_CONSTRAINTS, Some(true), &seq(&[&[0x01, 0x01, 0x00]]));
        let e = check_certificate(&c.der()).unwrap_err();
        assert_eq!(e.rule, Rule::EncodedDefault("BasicConstraints.cA FALSE"));
        assert!(e.path.contains("basicConstraints.cA"), "{e}");
        // The same bytes as Sigil's leaves before the fix: 30 03 01 01 00.
        assert!(
            c.der()
                .windows(5)
                .any(|w| w == [0x30, 0x03, 0x01, 0x01, 0x00])
        );
        let mut c = Cert::good();
        c.exts[2] = ext(
            SAN,
            Some(false),
            &seq(&[&tlv(0x86, b"spiffe://example.org/w")]),
        );
        assert_eq!(
            rule_of(check_certificate(&c.der())),
            Rule::EncodedDefault("Extension.critical FALSE")
        );
        let mut c = Cert::good();
        c.version = tlv(0xa0, &tlv(0x02, &[0]));
        c.exts.clear();
        assert_eq!(
            rule_of(check_certificate(&c.der())),
            Rule::EncodedDefault("Certificate version v1")
        );
        // cA TRUE is not a default.
        let mut c = Cert::good();
        c.exts[0] = ext(BASIC_CONSTRAINTS, Some(true), &seq(&[&[0x01, 0x01, 0xff]]));
        check_certificate(&c.der()).unwrap();
    }

    #[test]
    fn profile_rules() {
        // ECDSA with NULL parameters.
        let mut c = Cert::good();
        c.tbs_alg = seq(&[&oid(ECDSA_SHA256), &[0x05, 0x00]]);
        c.alg = c.tbs_alg.clone();
        assert!(
            matches!(rule_of(check_certificate(&c.der())), Rule::Profile(m) if m.contains("ECDSA"))
        );
        // RSA without NULL parameters.
        let mut c = Cert::good();
        c.tbs_alg = seq(&[&oid(RSA_SHA256)]);
        c.alg = c.tbs_alg.clone();
        c.sig = tlv(0x03, &[0, 1, 2, 3]);
        assert!(
            matches!(rule_of(check_certificate(&c.der())), Rule::Profile(m) if m.contains("RSA"))
        );
        c.tbs_alg = seq(&[&oid(RSA_SHA256), &[0x05, 0x00]]);
        c.alg = c.tbs_alg.clone();
        check_certificate(&c.der()).unwrap();
        // Outer and inner algorithms differ.
        let mut c = Cert::good();
        c.alg = seq(&[&oid(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03])]);
        assert!(
            matches!(rule_of(check_certificate(&c.der())), Rule::Profile(m) if m.contains("tbs.signature"))
        );
        // Negative serial; an extension twice.
        let mut c = Cert::good();
        c.serial = tlv(0x02, &[0x80]);
        assert!(
            matches!(rule_of(check_certificate(&c.der())), Rule::Profile(m) if m.contains("positive"))
        );
        let mut c = Cert::good();
        c.exts.push(c.exts[0].clone());
        assert!(
            matches!(rule_of(check_certificate(&c.der())), Rule::Profile(m) if m.contains("twice"))
        );
        // An extnValue with trailing data.
        let mut c = Cert::good();
        c.exts[0] = ext(BASIC_CONSTRAINTS, Some(true), &[0x30, 0x00, 0x00]);
        assert_eq!(rule_of(check_certificate(&c.der())), Rule::TrailingData);
    }

    fn csr(attrs: &[&[u8]], version: u8) -> Vec<u8> {
        let c = Cert::good();
        let info = seq(&[
            &tlv(0x02, &[version]),
            &c.subject,
            &c.spki,
            &tlv(0xa0, &attrs.concat()),
        ]);
        seq(&[&info, &c.alg, &c.sig])
    }

    #[test]
    fn csrs() {
        const EXT_REQ: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x0e];
        const CHALLENGE: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x07];
        check_csr(&csr(&[], 0)).unwrap();
        assert!(matches!(
            rule_of(check_csr(&csr(&[], 1))),
            Rule::Structure(_)
        ));
        let good_ext = seq(&[
            &oid(EXT_REQ),
            &tlv(
                0x31,
                &seq(&[&ext(SAN, None, &seq(&[&tlv(0x86, b"spiffe://x/y")]))]),
            ),
        ]);
        check_csr(&csr(&[&good_ext], 0)).unwrap();
        let bad_ext = seq(&[
            &oid(EXT_REQ),
            &tlv(
                0x31,
                &seq(&[&ext(BASIC_CONSTRAINTS, None, &seq(&[&[0x01, 0x01, 0x00]]))]),
            ),
        ]);
        assert_eq!(
            rule_of(check_csr(&csr(&[&bad_ext], 0))),
            Rule::EncodedDefault("BasicConstraints.cA FALSE")
        );
        // Attributes are a SET OF: sorted by encoding.
        let pw = seq(&[&oid(CHALLENGE), &tlv(0x31, &tlv(0x0c, b"pw"))]);
        let (a, b) = if der_set_le(&pw, &good_ext) {
            (pw, good_ext)
        } else {
            (good_ext, pw)
        };
        check_csr(&csr(&[&a, &b], 0)).unwrap();
        assert_eq!(rule_of(check_csr(&csr(&[&b, &a], 0))), Rule::SetOrder);
    }
}
