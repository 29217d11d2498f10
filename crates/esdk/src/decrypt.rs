//! Decryption and structure inspection (`client-apis/decrypt.md`, `data-format/message-body.md`,
//! `message-footer.md`).
//!
//! [`Decryptor`] is push-based and holds at most the header plus one frame (or, for a non-framed body, the body)
//! however long the message: [`Decryptor::push`] consumes only the bytes of the unit it is working on and
//! returns how many it took. Plaintext of regular frames is released as soon as the frame authenticates; for
//! signing suites the final frame (or non-framed body) is held back until the signature verifies, so a caller
//! that stops at the first error never sees plaintext the signature did not cover — except regular frames, which
//! the caller must discard unless [`Decryptor::finish`] succeeds (the spec allows releasing them early).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ddbguard_dbe::EncryptionContext;

use crate::crypto::{
    AAD_FINAL_FRAME, AAD_FRAME, AAD_SINGLE_BLOCK, FINAL_FRAME_MARKER, IV_LEN, MAX_NON_FRAMED_LEN, MessageDigest,
    MessageKeys, TAG_LEN, sequence_iv,
};
use crate::error::{EsdkError, Part};
use crate::header::{ContentType, Header, serialize_context};
use crate::keyring::{Keyring, check_decrypted};
use crate::suite::AlgorithmSuite;

/// The encryption context key of the signing suites' verification key.
pub const EC_PUBLIC_KEY: &str = "aws-crypto-public-key";
/// Encryption context keys with this prefix are reserved for the format.
pub const RESERVED_EC_PREFIX: &str = "aws-crypto-";
/// Default limit on what a [`Decryptor`] buffers: the header, a frame, or a non-framed body (16 MiB).
pub const DEFAULT_MAX_BUFFER: usize = 16 << 20;

/// What decryption and inspection hold a message to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecryptOptions {
    /// Reject non-committing suites (and so every version-1 message) as `policy_violation`, as the official SDKs'
    /// default commitment policy `REQUIRE_ENCRYPT_REQUIRE_DECRYPT` does. Default: true.
    pub require_commitment: bool,
    /// Reject messages under any other suite (`policy_violation`, `wrong_suite`).
    pub require_suite: Option<AlgorithmSuite>,
    /// Pairs the message must carry: a stored pair with another value is `context_mismatch`; a pair the header
    /// does not store is authenticated with the header (the official SDKs' required encryption context), so a
    /// message written without it fails header authentication.
    pub expected_context: EncryptionContext,
    /// Most bytes buffered at once (header, frame, non-framed body); beyond it `policy_violation`, `too_large`.
    pub max_buffer: usize,
    /// Most encrypted data keys a header may carry (the official SDKs' `max_encrypted_data_keys`).
    pub max_encrypted_data_keys: Option<usize>,
}

impl Default for DecryptOptions {
    fn default() -> DecryptOptions {
        DecryptOptions {
            require_commitment: true,
            require_suite: None,
            expected_context: EncryptionContext::new(),
            max_buffer: DEFAULT_MAX_BUFFER,
            max_encrypted_data_keys: None,
        }
    }
}

impl DecryptOptions {
    /// The policy checks that need only the header: suite, commitment, EDK count, frame size.
    fn check_header(&self, header: &Header) -> Result<(), EsdkError> {
        if self.require_commitment && !header.suite.is_committing() {
            return Err(EsdkError::NotCommitting(header.suite));
        }
        if let Some(expected) = self.require_suite
            && expected != header.suite
        {
            return Err(EsdkError::WrongSuite {
                expected,
                found: header.suite,
            });
        }
        if let Some(max) = self.max_encrypted_data_keys
            && header.encrypted_data_keys.len() > max
        {
            return Err(EsdkError::TooLarge {
                what: "encrypted data key count",
                len: header.encrypted_data_keys.len() as u64,
                max: max as u64,
            });
        }
        let frame_unit = header.frame_length as u64 + 32 + 4;
        if header.content_type == ContentType::Framed && frame_unit > self.max_buffer as u64 {
            return Err(EsdkError::TooLarge {
                what: "frame",
                len: frame_unit,
                max: self.max_buffer as u64,
            });
        }
        Ok(())
    }
}

/// A decrypted message.
#[derive(Debug)]
pub struct Decrypted {
    /// The header (suite, encryption context, EDKs, framing).
    pub header: Header,
    /// The plaintext.
    pub plaintext: Vec<u8>,
}

/// What [`inspect`] learns from a message without its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    /// The header.
    pub header: Header,
    /// Number of frames including the final one (1 for a non-framed body).
    pub frames: u32,
    /// Plaintext length (the sum of the content lengths).
    pub plaintext_len: u64,
    /// Length of the footer's signature, for signing suites.
    pub signature_len: Option<usize>,
    /// Total message length.
    pub message_len: u64,
}

/// Decrypts and verifies a whole message in memory: commitment, header tag, every frame, signature.
pub async fn decrypt(keyring: &dyn Keyring, options: &DecryptOptions, message: &[u8]) -> Result<Decrypted, EsdkError> {
    let mut d = Decryptor::new(options.clone());
    let mut plaintext = Vec::with_capacity(message.len());
    let mut rest = message;
    loop {
        let n = d.push(rest, &mut plaintext)?;
        rest = &rest[n..];
        if d.needs_key() {
            d.unlock(keyring).await?;
        } else if rest.is_empty() || n == 0 {
            break;
        }
    }
    let header = d.finish()?;
    Ok(Decrypted { header, plaintext })
}

/// Checks a message's structure without its key: header layout and policy, frame order, lengths and IVs, the
/// footer's presence, no trailing bytes. Nothing is authenticated: a passing message is `ok_structural`.
pub fn inspect(options: &DecryptOptions, message: &[u8]) -> Result<MessageInfo, EsdkError> {
    let mut d = Decryptor::new(options.clone());
    d.structural = true;
    let mut sink = Vec::new();
    let n = d.push(message, &mut sink)?;
    if n != message.len() {
        // Only a locked decryptor stops consuming, and a structural one never locks.
        return Err(EsdkError::Crypto("structural reader stopped early"));
    }
    let signature_len = d.signature_len;
    let (frames, plaintext_len) = match &d.state {
        State::Body(b) | State::Footer(b) => (b.frames, b.plaintext_len),
        State::Done(_, frames, len) => (*frames, *len),
        _ => (0, 0),
    };
    let header = d.finish()?;
    Ok(MessageInfo {
        header,
        frames,
        plaintext_len,
        signature_len,
        message_len: message.len() as u64,
    })
}

#[derive(Debug)]
enum State {
    /// Reading the header into the buffer.
    Header,
    /// Header parsed (its bytes are in the buffer); waiting for [`Decryptor::unlock`].
    Locked(Box<Header>),
    /// Reading frames (or the non-framed body).
    Body(Box<Body>),
    /// Reading the footer.
    Footer(Box<Body>),
    /// Complete: header, frames, plaintext length.
    Done(Box<Header>, u32, u64),
    /// An earlier call failed; nothing more is accepted.
    Failed,
}

#[derive(Debug)]
struct Body {
    header: Header,
    /// None when only inspecting the structure.
    keys: Option<MessageKeys>,
    digest: Option<MessageDigest>,
    public_key: Option<Vec<u8>>,
    next_sequence: u32,
    frames: u32,
    plaintext_len: u64,
    /// Plaintext held until the signature verifies (final frame or non-framed body of signing suites).
    held: Vec<u8>,
}

/// The size of the next body unit, as far as the bytes at hand tell.
enum Need {
    /// The unit is this long.
    Total(usize),
    /// At least this many bytes are needed to learn the length.
    Prefix(usize),
}

/// A push-based, bounded-memory decryptor for one message.
///
/// ```text
/// let mut d = Decryptor::new(options);
/// loop {
///     let n = d.push(chunk, &mut out)?;        // consumes what the current unit needs
///     if d.needs_key() { d.unlock(keyring).await?; }
///     chunk = &chunk[n..]; /* refill when empty, stop at end of input */
/// }
/// let header = d.finish()?;                    // the message is authentic only if this succeeds
/// ```
#[derive(Debug)]
pub struct Decryptor {
    options: DecryptOptions,
    state: State,
    buf: Vec<u8>,
    structural: bool,
    signature_len: Option<usize>,
}

impl Decryptor {
    /// A decryptor for one message.
    pub fn new(options: DecryptOptions) -> Decryptor {
        Decryptor {
            options,
            state: State::Header,
            buf: Vec::new(),
            structural: false,
            signature_len: None,
        }
    }

    /// The header, once parsed.
    pub fn header(&self) -> Option<&Header> {
        match &self.state {
            State::Locked(h) | State::Done(h, ..) => Some(h),
            State::Body(b) | State::Footer(b) => Some(&b.header),
            State::Header | State::Failed => None,
        }
    }

    /// Bytes held for the unit in progress (header, frame, footer): never more than the header or one frame (or
    /// the non-framed body), whatever the message length.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Whether the header is parsed and the data key is needed ([`Decryptor::unlock`]) before more input.
    pub fn needs_key(&self) -> bool {
        matches!(self.state, State::Locked(_))
    }

    /// Feeds message bytes; appends released plaintext to `out`; returns how many bytes of `input` it consumed.
    ///
    /// It consumes less than all of `input` only when the header is complete and the key is needed, or when the
    /// message is complete (then any further byte is an error).
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, EsdkError> {
        match self.push_inner(input, out) {
            Ok(n) => Ok(n),
            Err(e) => {
                // A unit that fails leaves no plaintext behind (see `process_body_unit`); earlier units of this
                // call authenticated.
                self.state = State::Failed;
                self.buf = Vec::new();
                Err(e)
            }
        }
    }

    /// Obtains the data key from `keyring` and authenticates the header (commitment, header tag).
    pub async fn unlock(&mut self, keyring: &dyn Keyring) -> Result<(), EsdkError> {
        let State::Locked(header) = std::mem::replace(&mut self.state, State::Failed) else {
            return Err(EsdkError::InvalidRequest("unlock without a parsed header".into()));
        };
        let body = self.unlock_inner(*header, keyring).await?;
        self.buf.clear();
        self.state = State::Body(Box::new(body));
        Ok(())
    }

    /// Ends the message: succeeds only if it was complete and every check passed; releases held plaintext.
    pub fn finish(self) -> Result<Header, EsdkError> {
        match self.state {
            State::Done(h, ..) => Ok(*h),
            State::Header => Err(EsdkError::Truncated {
                part: Part::Header,
                what: "header",
            }),
            State::Locked(_) => Err(EsdkError::InvalidRequest(
                "finish before the data key was obtained".into(),
            )),
            State::Body(_) => Err(EsdkError::Truncated {
                part: Part::Body,
                what: "frame",
            }),
            State::Footer(_) => Err(EsdkError::Truncated {
                part: Part::Footer,
                what: "signature",
            }),
            State::Failed => Err(EsdkError::InvalidRequest("the decryptor failed earlier".into())),
        }
    }

    async fn unlock_inner(&self, header: Header, keyring: &dyn Keyring) -> Result<Body, EsdkError> {
        // The pairs the caller requires: stored ones must agree, the others are authenticated with the header.
        let mut auth_only = EncryptionContext::new();
        for (k, v) in &self.options.expected_context {
            match header.encryption_context.get(k) {
                Some(stored) if stored == v => {}
                Some(_) => {
                    return Err(EsdkError::ContextMismatch {
                        key: k.clone(),
                        problem: "has another value",
                    });
                }
                None => {
                    auth_only.insert(k.clone(), v.clone());
                }
            }
        }
        let public_key = verification_key(&header)?;
        let mut full_ec = header.encryption_context.clone();
        full_ec.extend(auth_only.iter().map(|(k, v)| (k.clone(), v.clone())));
        let got = keyring
            .decrypt_data_key(header.suite, &header.encrypted_data_keys, &full_ec)
            .await?;
        check_decrypted(header.suite, header.encrypted_data_keys.len(), &got)?;
        let keys = MessageKeys::derive(header.suite, &got.key, &header.message_id)?;
        keys.check_commitment(header.commitment.as_ref())?;
        let mut aad = Vec::with_capacity(header.body_len + 64);
        aad.extend_from_slice(self.buf.get(..header.body_len).unwrap_or_default());
        aad.extend_from_slice(&serialize_context(&auth_only)?);
        if !keys.content.open(header.header_iv, &aad, &mut [], &header.header_tag) {
            return Err(EsdkError::HeaderAuthenticationFailed);
        }
        let digest = header.suite.signature().map(|alg| {
            let mut d = MessageDigest::new(alg);
            d.update(self.buf.get(..header.len).unwrap_or_default());
            d
        });
        Ok(Body {
            header,
            keys: Some(keys),
            digest,
            public_key,
            next_sequence: 1,
            frames: 0,
            plaintext_len: 0,
            held: Vec::new(),
        })
    }

    fn push_inner(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, EsdkError> {
        let mut consumed = 0;
        loop {
            match &mut self.state {
                State::Header => return self.push_header(input),
                State::Locked(_) => return Ok(consumed),
                State::Failed => return Err(EsdkError::InvalidRequest("the decryptor failed earlier".into())),
                State::Done(..) => {
                    if consumed < input.len() {
                        return Err(EsdkError::malformed(Part::Footer, "bytes after the end of the message"));
                    }
                    return Ok(consumed);
                }
                State::Body(_) | State::Footer(_) => {}
            }
            let rest = &input[consumed..];
            // Fast path: a whole unit in the input, nothing buffered.
            if self.buf.is_empty()
                && let Need::Total(n) = self.need(rest)?
                && rest.len() >= n
            {
                self.process(&rest[..n], out)?;
                consumed += n;
                continue;
            }
            let need = self.need(&self.buf)?;
            let target = match need {
                Need::Total(n) | Need::Prefix(n) => n,
            };
            if target > self.options.max_buffer.saturating_add(64) {
                return Err(EsdkError::TooLarge {
                    what: "message body unit",
                    len: target as u64,
                    max: self.options.max_buffer as u64,
                });
            }
            let take = target.saturating_sub(self.buf.len()).min(rest.len());
            self.buf.extend_from_slice(&rest[..take]);
            consumed += take;
            if let Need::Total(n) = need
                && self.buf.len() == n
            {
                let unit = std::mem::take(&mut self.buf);
                let r = self.process(&unit, out);
                self.buf = unit;
                self.buf.clear();
                r?;
                continue;
            }
            if take == 0 && rest.is_empty() {
                return Ok(consumed);
            }
        }
    }

    fn push_header(&mut self, input: &[u8]) -> Result<usize, EsdkError> {
        // A header wholly in the input is copied alone, not the body after it.
        let parsed = if self.buf.is_empty() {
            Header::parse(input).ok()
        } else {
            None
        };
        let (header, used) = match parsed {
            Some(header) => {
                self.buf.extend_from_slice(&input[..header.len]);
                let used = header.len;
                (header, used)
            }
            None => {
                let room = self.options.max_buffer.saturating_sub(self.buf.len());
                let take = room.min(input.len());
                self.buf.extend_from_slice(&input[..take]);
                match Header::parse(&self.buf) {
                    Ok(header) => {
                        let extra = self.buf.len() - header.len;
                        self.buf.truncate(header.len);
                        (header, take - extra)
                    }
                    Err(EsdkError::Truncated { .. }) if self.buf.len() >= self.options.max_buffer => {
                        return Err(EsdkError::TooLarge {
                            what: "header",
                            len: self.buf.len() as u64,
                            max: self.options.max_buffer as u64,
                        });
                    }
                    Err(EsdkError::Truncated { .. }) => return Ok(take),
                    Err(e) => return Err(e),
                }
            }
        };
        self.options.check_header(&header)?;
        if !self.structural {
            self.state = State::Locked(Box::new(header));
            return Ok(used);
        }
        let public_key = verification_key(&header)?;
        self.state = State::Body(Box::new(Body {
            header,
            keys: None,
            digest: None,
            public_key,
            next_sequence: 1,
            frames: 0,
            plaintext_len: 0,
            held: Vec::new(),
        }));
        self.buf.clear();
        let mut sink = Vec::new();
        Ok(used + self.push_inner(&input[used..], &mut sink)?)
    }

    /// How long the next unit is, from its first bytes.
    fn need(&self, prefix: &[u8]) -> Result<Need, EsdkError> {
        let body = match &self.state {
            State::Body(b) => b,
            State::Footer(_) => {
                let Some(len) = prefix.first_chunk::<2>() else {
                    return Ok(Need::Prefix(2));
                };
                return Ok(Need::Total(2 + u16::from_be_bytes(*len) as usize));
            }
            _ => return Err(EsdkError::Crypto("body read outside the body")),
        };
        match body.header.content_type {
            ContentType::NonFramed => {
                let Some(head) = prefix.first_chunk::<{ IV_LEN + 8 }>() else {
                    return Ok(Need::Prefix(IV_LEN + 8));
                };
                let mut len = [0u8; 8];
                len.copy_from_slice(&head[IV_LEN..]);
                let len = u64::from_be_bytes(len);
                if len > MAX_NON_FRAMED_LEN {
                    return Err(EsdkError::malformed(
                        Part::Body,
                        "non-framed content longer than 2^36 - 32",
                    ));
                }
                if len > self.options.max_buffer as u64 {
                    return Err(EsdkError::TooLarge {
                        what: "non-framed body",
                        len,
                        max: self.options.max_buffer as u64,
                    });
                }
                Ok(Need::Total(IV_LEN + 8 + len as usize + TAG_LEN))
            }
            ContentType::Framed => {
                let Some(seq) = prefix.first_chunk::<4>() else {
                    return Ok(Need::Prefix(4));
                };
                if u32::from_be_bytes(*seq) != FINAL_FRAME_MARKER {
                    return Ok(Need::Total(4 + IV_LEN + body.header.frame_length as usize + TAG_LEN));
                }
                let Some(head) = prefix.first_chunk::<{ 8 + IV_LEN + 4 }>() else {
                    return Ok(Need::Prefix(8 + IV_LEN + 4));
                };
                let mut len = [0u8; 4];
                len.copy_from_slice(&head[8 + IV_LEN..]);
                let len = u32::from_be_bytes(len);
                if len > body.header.frame_length {
                    return Err(EsdkError::malformed(
                        Part::Body,
                        format!(
                            "final frame content length {len} exceeds the frame length {}",
                            body.header.frame_length
                        ),
                    ));
                }
                Ok(Need::Total(8 + IV_LEN + 4 + len as usize + TAG_LEN))
            }
        }
    }

    /// Processes one complete unit (frame, non-framed body, or footer).
    fn process(&mut self, unit: &[u8], out: &mut Vec<u8>) -> Result<(), EsdkError> {
        let state = std::mem::replace(&mut self.state, State::Failed);
        let (next, result) = match state {
            State::Body(mut body) => match process_body_unit(&mut body, unit, out) {
                Ok(true) if body.header.suite.signature().is_some() => (State::Footer(body), Ok(())),
                Ok(true) => (
                    State::Done(Box::new(body.header), body.frames, body.plaintext_len),
                    Ok(()),
                ),
                Ok(false) => (State::Body(body), Ok(())),
                Err(e) => (State::Failed, Err(e)),
            },
            State::Footer(body) => {
                self.signature_len = Some(unit.len() - 2);
                match verify_footer(*body, unit, out) {
                    Ok((header, frames, len)) => (State::Done(Box::new(header), frames, len), Ok(())),
                    Err(e) => (State::Failed, Err(e)),
                }
            }
            other => (other, Err(EsdkError::Crypto("unit outside the body"))),
        };
        self.state = next;
        result
    }
}

/// The verification key a signing suite's context must carry (and a non-signing one must not).
fn verification_key(header: &Header) -> Result<Option<Vec<u8>>, EsdkError> {
    let stored = header.encryption_context.get(EC_PUBLIC_KEY);
    match (header.suite.signature(), stored) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(EsdkError::PublicKeyInvalid("present for a suite without signatures")),
        (Some(_), None) => Err(EsdkError::PublicKeyInvalid("missing from the encryption context")),
        (Some(_), Some(b64)) => STANDARD
            .decode(b64)
            .map(Some)
            .map_err(|_| EsdkError::PublicKeyInvalid("not base64")),
    }
}

/// Decrypts one frame (or the non-framed body) into `out` (or the held buffer); true if it was the last.
fn process_body_unit(body: &mut Body, unit: &[u8], out: &mut Vec<u8>) -> Result<bool, EsdkError> {
    if let Some(d) = &mut body.digest {
        d.update(unit);
    }
    let frame_length = body.header.frame_length as usize;
    let (sequence, iv, content, tag, aad_label, last) = match body.header.content_type {
        ContentType::NonFramed => {
            let (iv, rest) = unit.split_at(IV_LEN);
            let (content, tag) = rest[8..].split_at(rest.len() - 8 - TAG_LEN);
            (1, iv, content, tag, AAD_SINGLE_BLOCK, true)
        }
        ContentType::Framed => {
            let (seq, rest) = unit.split_at(4);
            let seq = u32::from_be_bytes([seq[0], seq[1], seq[2], seq[3]]);
            if seq == FINAL_FRAME_MARKER {
                let (seq, rest) = rest.split_at(4);
                let seq = u32::from_be_bytes([seq[0], seq[1], seq[2], seq[3]]);
                let (iv, rest) = rest.split_at(IV_LEN);
                let (content, tag) = rest[4..].split_at(rest.len() - 4 - TAG_LEN);
                (seq, iv, content, tag, AAD_FINAL_FRAME, true)
            } else {
                let (iv, rest) = rest.split_at(IV_LEN);
                let (content, tag) = rest.split_at(frame_length);
                (seq, iv, content, tag, AAD_FRAME, false)
            }
        }
    };
    if sequence != body.next_sequence {
        return Err(EsdkError::malformed(
            Part::Body,
            format!("frame sequence number {sequence}, expected {}", body.next_sequence),
        ));
    }
    if iv != sequence_iv(sequence) {
        return Err(EsdkError::malformed(
            Part::Body,
            format!("frame {sequence} has an IV other than its sequence number"),
        ));
    }
    if !last {
        body.next_sequence = body
            .next_sequence
            .checked_add(1)
            .ok_or_else(|| EsdkError::malformed(Part::Body, "more frames than the format allows"))?;
    }
    body.frames += 1;
    body.plaintext_len += content.len() as u64;
    let Some(keys) = &body.keys else {
        return Ok(last);
    };
    let mut aad = Vec::with_capacity(body.header.message_id.len() + aad_label.len() + 12);
    aad.extend_from_slice(&body.header.message_id);
    aad.extend_from_slice(aad_label);
    aad.extend_from_slice(&sequence.to_be_bytes());
    aad.extend_from_slice(&(content.len() as u64).to_be_bytes());
    // Signed suites hold the last unit back until the footer verifies.
    let target = if last && body.digest.is_some() {
        &mut body.held
    } else {
        out
    };
    let start = target.len();
    target.extend_from_slice(content);
    if !keys
        .content
        .open(sequence_iv(sequence), &aad, &mut target[start..], tag)
    {
        target.truncate(start);
        return Err(EsdkError::ContentAuthenticationFailed { sequence });
    }
    Ok(last)
}

/// Verifies the footer's signature and releases the held plaintext.
fn verify_footer(body: Body, unit: &[u8], out: &mut Vec<u8>) -> Result<(Header, u32, u64), EsdkError> {
    let signature = &unit[2..];
    if let (Some(digest), Some(pk)) = (body.digest, &body.public_key) {
        digest.verify(pk, signature)?;
        out.extend_from_slice(&body.held);
    }
    Ok((body.header, body.frames, body.plaintext_len))
}
