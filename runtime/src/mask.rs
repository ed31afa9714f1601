//! Secret masking: every secret value a run resolves is registered with the
//! run's [`Masker`], and text leaving the runtime (log lines and log files,
//! events, step outputs and errors in the state store, notification payloads)
//! passes through it; the CLI masks graph output, errors and panics with it.
//!
//! Covered forms of a secret: the raw value; each line of a multi-line value
//! (lines shorter than [`MIN_SECRET_LEN`] are ignored); base64 in all three
//! alignments, standard and URL-safe alphabets (for each alignment, only the
//! inner characters that do not depend on the surrounding bytes); percent
//! (URL) encoding, and form encoding (space as `+`); lower- and upper-case
//! hex. Matches become [`REPLACEMENT`].
//! A secret shorter than [`MIN_SECRET_LEN`] characters is refused: masking it
//! would mangle ordinary output and still leak it.

use std::fmt;
use std::sync::{Arc, RwLock};

use aho_corasick::{AhoCorasick, MatchKind};

/// What a masked occurrence becomes.
pub const REPLACEMENT: &str = "***";

/// The shortest secret (in characters) that can be masked.
pub const MIN_SECRET_LEN: usize = 4;

/// A masker shared by the scheduler and the executors of one run.
pub type SharedMasker = Arc<RwLock<Masker>>;

/// A secret too short to be masked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a secret shorter than {MIN_SECRET_LEN} characters cannot be masked (it would match ordinary text)"
)]
pub struct Unmaskable;

/// Replaces registered secrets, in every covered form, with [`REPLACEMENT`].
#[derive(Default)]
pub struct Masker {
    secrets: Vec<String>,
    patterns: Vec<Vec<u8>>,
    automaton: Option<AhoCorasick>,
    max_len: usize,
}

impl fmt::Debug for Masker {
    // Never prints the secrets themselves.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Masker")
            .field("secrets", &self.secrets.len())
            .field("patterns", &self.patterns.len())
            .field("max_len", &self.max_len)
            .finish_non_exhaustive()
    }
}

impl Masker {
    pub fn new() -> Masker {
        Masker::default()
    }

    /// A new masker behind a lock, for sharing.
    pub fn shared() -> SharedMasker {
        Arc::new(RwLock::new(Masker::new()))
    }

    /// Registers a secret. Refuses one shorter than [`MIN_SECRET_LEN`]
    /// characters; registering the same value twice is a no-op.
    pub fn add(&mut self, secret: &str) -> Result<(), Unmaskable> {
        if secret.chars().count() < MIN_SECRET_LEN {
            return Err(Unmaskable);
        }
        if self.secrets.iter().any(|s| s == secret) {
            return Ok(());
        }
        self.secrets.push(secret.to_string());
        let mut forms = forms(secret.as_bytes());
        for line in secret.lines() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.len() != secret.len() && line.chars().count() >= MIN_SECRET_LEN {
                forms.extend(self::forms(line.as_bytes()));
            }
        }
        for f in forms {
            if f.len() >= MIN_SECRET_LEN && !self.patterns.contains(&f) {
                self.patterns.push(f);
            }
        }
        self.max_len = self.patterns.iter().map(Vec::len).max().unwrap_or(0);
        self.automaton = Some(
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&self.patterns)
                .expect("literal patterns always build"),
        );
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// The longest pattern, in bytes: the stream window is one less.
    pub fn max_pattern_len(&self) -> usize {
        self.max_len
    }

    /// `text` with every covered form of every secret replaced.
    pub fn mask(&self, text: &str) -> String {
        match &self.automaton {
            Some(ac) if !text.is_empty() => {
                ac.replace_all(text, &vec![REPLACEMENT; self.patterns.len()])
            }
            _ => text.to_string(),
        }
    }

    /// Bytes with every covered form of every secret replaced.
    pub fn mask_bytes(&self, bytes: &[u8]) -> Vec<u8> {
        match &self.automaton {
            Some(ac) => {
                ac.replace_all_bytes(bytes, &vec![REPLACEMENT.as_bytes(); self.patterns.len()])
            }
            None => bytes.to_vec(),
        }
    }
}

/// Masks a chunked stream: a secret split across chunks (even one byte per
/// write) is still masked. Up to `max_pattern_len - 1` bytes are held back
/// until more data arrives or [`Stream::finish`] is called.
#[derive(Debug, Default)]
pub struct Stream {
    pending: Vec<u8>,
}

impl Stream {
    pub fn new() -> Stream {
        Stream::default()
    }

    /// Adds a chunk; returns the bytes that are now safe to write.
    pub fn push(&mut self, masker: &Masker, chunk: &[u8]) -> Vec<u8> {
        self.pending.extend_from_slice(chunk);
        let Some(ac) = &masker.automaton else {
            return std::mem::take(&mut self.pending);
        };
        let len = self.pending.len();
        // A match starting before `cut` is at most `max_len` long, so it ends
        // inside the buffer: everything before `cut` is decided.
        let cut = len.saturating_sub(masker.max_len.saturating_sub(1));
        let mut out = Vec::with_capacity(len);
        let mut pos = 0;
        for m in ac.find_iter(&self.pending) {
            if m.start() >= cut {
                break;
            }
            out.extend_from_slice(&self.pending[pos..m.start()]);
            out.extend_from_slice(REPLACEMENT.as_bytes());
            pos = m.end();
        }
        let keep_from = pos.max(cut);
        out.extend_from_slice(&self.pending[pos..keep_from]);
        self.pending.drain(..keep_from);
        out
    }

    /// The end of the stream: the held-back bytes, masked.
    pub fn finish(&mut self, masker: &Masker) -> Vec<u8> {
        let rest = std::mem::take(&mut self.pending);
        masker.mask_bytes(&rest)
    }
}

/// A writer that masks what passes through it, for output too large to build
/// as one string first (`pipe graph --format json` of a big plan): a secret
/// split across writes is still masked, as with [`Stream`]. Call
/// [`MaskingWriter::finish`] at the end: it writes the held-back bytes.
pub struct MaskingWriter<W: std::io::Write> {
    masker: SharedMasker,
    stream: Stream,
    inner: W,
}

impl<W: std::io::Write> MaskingWriter<W> {
    pub fn new(masker: SharedMasker, inner: W) -> MaskingWriter<W> {
        MaskingWriter {
            masker,
            stream: Stream::new(),
            inner,
        }
    }

    /// Writes the held-back tail, masked, flushes and returns the inner writer.
    pub fn finish(mut self) -> std::io::Result<W> {
        let rest = {
            let m = self
                .masker
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            self.stream.finish(&m)
        };
        self.inner.write_all(&rest)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: std::io::Write> std::io::Write for MaskingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let out = {
            let m = self
                .masker
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            self.stream.push(&m, buf)
        };
        self.inner.write_all(&out)?;
        Ok(buf.len())
    }

    /// Flushes what is decided; the held-back tail waits for more bytes or
    /// [`MaskingWriter::finish`], so a secret is never written in halves.
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Masks `text` with a shared masker (a poisoned lock still masks).
pub fn mask_with(masker: &SharedMasker, text: &str) -> String {
    let m = masker
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    m.mask(text)
}

const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Every encoded form of one value.
fn forms(v: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![v.to_vec()];
    for k in 0..3 {
        for alphabet in [STD, URL] {
            out.push(base64_inner(v, k, alphabet));
        }
    }
    out.push(percent(v, false));
    out.push(percent(v, true));
    if v.contains(&b' ') {
        // Form encoding (`application/x-www-form-urlencoded`): space as `+`.
        for lower in [false, true] {
            let p = percent(v, lower);
            out.push(String::from_utf8_lossy(&p).replace("%20", "+").into_bytes());
        }
    }
    out.push(hex(v, false));
    out.push(hex(v, true));
    out
}

/// Base64 without padding.
fn base64(v: &[u8], alphabet: &[u8; 64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len().div_ceil(3) * 4);
    for c in v.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(c.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(c.get(2).copied().unwrap_or(0));
        let chars = c.len() + 1;
        for i in 0..chars {
            out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize]);
        }
    }
    out
}

/// The characters of the base64 encoding of `v`, preceded by `k` unknown
/// bytes, that depend on `v` alone: whatever comes before or after it, an
/// encoded stream containing `v` at that alignment contains these.
fn base64_inner(v: &[u8], k: usize, alphabet: &[u8; 64]) -> Vec<u8> {
    let mut padded = vec![0u8; k];
    padded.extend_from_slice(v);
    let enc = base64(&padded, alphabet);
    // One prefix byte taints 2 characters, two taint 3.
    let skip = [0, 2, 3][k];
    // A trailing partial group's last character depends on the next byte.
    let drop_end = usize::from(!padded.len().is_multiple_of(3));
    if enc.len() < skip + drop_end {
        return Vec::new();
    }
    enc[skip..enc.len() - drop_end].to_vec()
}

/// Percent-encoding of everything but RFC 3986 unreserved characters.
fn percent(v: &[u8], lower: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * 3);
    for &b in v {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b);
        } else {
            out.push(b'%');
            out.extend_from_slice(&hex(&[b], lower));
        }
    }
    out
}

fn hex(v: &[u8], lower: bool) -> Vec<u8> {
    let digits: &[u8; 16] = if lower {
        b"0123456789abcdef"
    } else {
        b"0123456789ABCDEF"
    };
    v.iter()
        .flat_map(|&b| [digits[usize::from(b >> 4)], digits[usize::from(b & 15)]])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cr3t value/42!";

    fn masker() -> Masker {
        let mut m = Masker::new();
        m.add(SECRET).unwrap();
        m
    }

    fn b64(v: &[u8], alphabet: &[u8; 64]) -> String {
        let mut s = String::from_utf8(base64(v, alphabet)).unwrap();
        while !s.len().is_multiple_of(4) {
            s.push('=');
        }
        s
    }

    #[test]
    fn a_masking_writer_masks_a_secret_split_across_writes_and_at_the_end() {
        use std::io::Write;
        let shared = Arc::new(RwLock::new(masker()));
        let text = format!("{{\"a\": \"{SECRET}\", \"b\": 1}}\ntail {SECRET}");
        let mut w = MaskingWriter::new(shared, Vec::new());
        // One byte per write: every secret straddles a write boundary.
        for b in text.as_bytes() {
            w.write_all(&[*b]).unwrap();
        }
        w.flush().unwrap();
        let out = String::from_utf8(w.finish().unwrap()).unwrap();
        assert_eq!(out, "{\"a\": \"***\", \"b\": 1}\ntail ***");
    }

    #[test]
    fn base64_matches_the_reference_encoding() {
        assert_eq!(b64(b"", STD), "");
        assert_eq!(b64(b"f", STD), "Zg==");
        assert_eq!(b64(b"fo", STD), "Zm8=");
        assert_eq!(b64(b"foo", STD), "Zm9v");
        assert_eq!(b64(b"foobar", STD), "Zm9vYmFy");
        assert_eq!(b64(&[0xfb, 0xff], STD), "+/8=");
        assert_eq!(b64(&[0xfb, 0xff], URL), "-_8=");
    }

    #[test]
    fn masks_the_raw_value() {
        let m = masker();
        assert_eq!(
            m.mask(&format!("token={SECRET}; again {SECRET}")),
            "token=***; again ***"
        );
        assert_eq!(m.mask("nothing here"), "nothing here");
    }

    #[test]
    fn refuses_short_secrets() {
        let mut m = Masker::new();
        assert_eq!(m.add("abc"), Err(Unmaskable));
        assert_eq!(m.add(""), Err(Unmaskable));
        assert_eq!(m.add("é€ü"), Err(Unmaskable));
        assert!(m.is_empty());
        assert!(m.add("abcd").is_ok());
        assert_eq!(m.mask("xabcdx abc"), "x***x abc");
    }

    #[test]
    fn masks_each_line_of_a_multiline_value() {
        let mut m = Masker::new();
        m.add("-----BEGIN KEY-----\nAAAAbbbbCCCC\nab\n-----END KEY-----")
            .unwrap();
        assert_eq!(m.mask("line: AAAAbbbbCCCC"), "line: ***");
        assert_eq!(m.mask("-----END KEY-----"), "***");
        // Trivially short lines are not patterns of their own.
        assert_eq!(m.mask("ab cd"), "ab cd");
    }

    #[test]
    fn masks_base64_at_every_alignment_in_both_alphabets() {
        let m = masker();
        for prefix in ["", "x", "xy", "xyz", "wxyz"] {
            for suffix in ["", "a", "ab", "abc"] {
                let plain = format!("{prefix}{SECRET}{suffix}");
                for alphabet in [STD, URL] {
                    let enc = b64(plain.as_bytes(), alphabet);
                    let masked = m.mask(&enc);
                    assert!(
                        masked.contains(REPLACEMENT),
                        "{plain:?} -> {enc} not masked"
                    );
                    // What is left encodes the neighbours (and the characters
                    // they share with the secret), never the secret itself.
                    let left = masked.len() - REPLACEMENT.len();
                    assert!(
                        left <= 4 * (prefix.len() + suffix.len()) / 3 + 6,
                        "{enc} -> {masked}"
                    );
                }
            }
        }
    }

    #[test]
    fn masks_a_secret_with_url_alphabet_characters() {
        // Encodes to `Pz8+Pj8/Pj4/Pz4/`: `+` and `/` (standard) or `-` and `_` (URL).
        let secret = "??>>??>>??>?";
        let mut m = Masker::new();
        m.add(secret).unwrap();
        for alphabet in [STD, URL] {
            let enc = b64(secret.as_bytes(), alphabet);
            assert_eq!(m.mask(&enc), REPLACEMENT, "{enc}");
        }
    }

    #[test]
    fn masks_url_encoding() {
        let m = masker();
        assert_eq!(m.mask("q=s3cr3t%20value%2F42%21&x=1"), "q=***&x=1");
        assert_eq!(m.mask("q=s3cr3t%20value%2f42%21"), "q=***");
    }

    #[test]
    fn masks_form_encoding_with_plus_for_space() {
        let m = masker();
        assert_eq!(m.mask("q=s3cr3t+value%2F42%21&x=1"), "q=***&x=1");
        assert_eq!(m.mask("q=s3cr3t+value%2f42%21"), "q=***");
    }

    #[test]
    fn masks_hex_in_both_cases() {
        let m = masker();
        let lower = String::from_utf8(hex(SECRET.as_bytes(), true)).unwrap();
        assert_eq!(&lower[..6], "733363");
        let upper = lower.to_uppercase();
        assert_eq!(m.mask(&format!("0x{lower}")), "0x***");
        assert_eq!(m.mask(&format!("{upper}\n")), "***\n");
    }

    #[test]
    fn masks_several_secrets_preferring_the_longest() {
        let mut m = Masker::new();
        m.add("abcd").unwrap();
        m.add("abcdefgh").unwrap();
        assert_eq!(m.mask("abcdefgh abcd abcdxyz"), "*** *** ***xyz");
    }

    fn stream_all(m: &Masker, chunks: &[&[u8]]) -> String {
        let mut s = Stream::new();
        let mut out = Vec::new();
        for c in chunks {
            out.extend(s.push(m, c));
        }
        out.extend(s.finish(m));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn stream_masks_a_secret_written_one_byte_at_a_time() {
        let m = masker();
        let text = format!("before {SECRET} middle {SECRET}{SECRET} after");
        let chunks: Vec<&[u8]> = text.as_bytes().chunks(1).collect();
        assert_eq!(stream_all(&m, &chunks), "before *** middle ****** after");
    }

    #[test]
    fn stream_masks_every_chunking_and_holds_back_little() {
        let m = masker();
        let hex = String::from_utf8(hex(SECRET.as_bytes(), true)).unwrap();
        let text = format!("a {SECRET} b {hex} c {} d", b64(SECRET.as_bytes(), STD));
        let want = m.mask(&text);
        assert!(!want.contains(SECRET) && !want.contains(&hex));
        for size in 1..text.len() {
            let chunks: Vec<&[u8]> = text.as_bytes().chunks(size).collect();
            assert_eq!(stream_all(&m, &chunks), want, "chunks of {size}");
        }
        // Held back: less than the longest pattern.
        let mut s = Stream::new();
        let out = s.push(&m, "x".repeat(100).as_bytes());
        assert_eq!(out.len(), 100 - (m.max_pattern_len() - 1));
        assert_eq!(s.finish(&m).len(), m.max_pattern_len() - 1);
    }

    #[test]
    fn stream_without_secrets_passes_through() {
        let m = Masker::new();
        let mut s = Stream::new();
        assert_eq!(s.push(&m, b"abc"), b"abc");
        assert!(s.finish(&m).is_empty());
    }

    #[test]
    fn debug_never_shows_secrets() {
        let m = masker();
        assert!(!format!("{m:?}").contains("s3cr3t"));
    }
}
