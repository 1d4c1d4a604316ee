//! The frame codec: a versioned, length-bounded header and a bincode body.
//!
//! ```text
//! +------+------+---------+-------+----------------+-----------------+
//! | 'C'  | 'M'  | version | kind  | body length u32 (big endian) | body (bincode) |
//! +------+------+---------+-------+----------------+-----------------+
//! ```
//! `kind` 1 = [`Envelope`], 2 = persisted state (which adds a CRC-32 after the body).
//! Decoding never panics: every error is a [`DecodeError`] saying what was wrong.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::msg::Envelope;

/// Frame magic.
pub const MAGIC: [u8; 2] = *b"CM";
/// Current protocol version.
pub const VERSION: u8 = 1;
/// Header length in bytes.
pub const HEADER_LEN: usize = 8;
/// The largest body accepted (whole-state snapshots are far smaller).
pub const MAX_BODY_LEN: usize = 4 << 20;

const KIND_ENVELOPE: u8 = 1;
const KIND_PERSISTED: u8 = 2;

type Config = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_BODY_LEN>,
>;

fn config() -> Config {
    bincode::config::standard().with_limit::<MAX_BODY_LEN>()
}

/// Why a frame could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The first two bytes are not `CM`: not our protocol, or a desynchronised stream.
    #[error("bad magic {0:02x?}: not a cluster-manager frame")]
    BadMagic([u8; 2]),
    /// A version this build does not speak.
    #[error("unsupported protocol version {0} (this build speaks {VERSION})")]
    UnsupportedVersion(u8),
    /// A frame kind other than the one expected.
    #[error("unexpected frame kind {0}")]
    UnexpectedKind(u8),
    /// The declared body is longer than [`MAX_BODY_LEN`].
    #[error("frame body of {len} bytes exceeds the limit of {MAX_BODY_LEN}")]
    TooLarge {
        /// Declared length.
        len: usize,
    },
    /// The buffer ends before the frame does.
    #[error("truncated frame: need {needed} bytes, have {have}")]
    Truncated {
        /// Bytes the frame needs.
        needed: usize,
        /// Bytes present.
        have: usize,
    },
    /// The body is not a valid encoding of the expected type.
    #[error("malformed frame body: {0}")]
    Body(String),
    /// The body decoded but did not use all its bytes.
    #[error("frame body has {0} trailing bytes")]
    TrailingBytes(usize),
    /// A persisted state's checksum does not match (torn or corrupt write).
    #[error("checksum mismatch in persisted state")]
    Checksum,
}

/// Why a value could not be encoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The encoded body would exceed [`MAX_BODY_LEN`].
    #[error("encoded body exceeds {MAX_BODY_LEN} bytes")]
    TooLarge,
    /// The serializer failed.
    #[error("cannot encode: {0}")]
    Serialize(String),
}

fn encode_kind<T: Serialize>(kind: u8, value: &T) -> Result<Vec<u8>, EncodeError> {
    let mut out = vec![MAGIC[0], MAGIC[1], VERSION, kind, 0, 0, 0, 0];
    let body = bincode::serde::encode_to_vec(value, config())
        .map_err(|e| EncodeError::Serialize(e.to_string()))?;
    if body.len() > MAX_BODY_LEN {
        return Err(EncodeError::TooLarge);
    }
    let len = u32::try_from(body.len()).map_err(|_| EncodeError::TooLarge)?;
    out[4..8].copy_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Reads a header; returns (kind, body length).
fn read_header(buf: &[u8]) -> Result<Option<(u8, usize)>, DecodeError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    if buf[..2] != MAGIC {
        return Err(DecodeError::BadMagic([buf[0], buf[1]]));
    }
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    if buf[2] != VERSION {
        return Err(DecodeError::UnsupportedVersion(buf[2]));
    }
    let len = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
    if len > MAX_BODY_LEN {
        return Err(DecodeError::TooLarge { len });
    }
    Ok(Some((buf[3], len)))
}

fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
    let (value, used) = bincode::serde::decode_from_slice::<T, _>(body, config())
        .map_err(|e| DecodeError::Body(e.to_string()))?;
    if used != body.len() {
        return Err(DecodeError::TrailingBytes(body.len() - used));
    }
    Ok(value)
}

/// Encodes one envelope as a frame.
pub fn encode(envelope: &Envelope) -> Result<Vec<u8>, EncodeError> {
    encode_kind(KIND_ENVELOPE, envelope)
}

/// Decodes the first frame of a stream buffer.
///
/// `Ok(None)`: the buffer holds only part of a frame (read more). `Ok(Some((env, n)))`: one
/// envelope and the `n` bytes it used. `Err`: the stream is broken; close the connection.
pub fn decode_frame(buf: &[u8]) -> Result<Option<(Envelope, usize)>, DecodeError> {
    let Some((kind, len)) = read_header(buf)? else {
        return Ok(None);
    };
    if kind != KIND_ENVELOPE {
        return Err(DecodeError::UnexpectedKind(kind));
    }
    let total = HEADER_LEN + len;
    if buf.len() < total {
        return Ok(None);
    }
    let env = decode_body(&buf[HEADER_LEN..total])?;
    Ok(Some((env, total)))
}

/// Decodes exactly one frame that must fill `buf`.
pub fn decode(buf: &[u8]) -> Result<Envelope, DecodeError> {
    match decode_frame(buf)? {
        Some((env, used)) if used == buf.len() => Ok(env),
        Some((_, used)) => Err(DecodeError::TrailingBytes(buf.len() - used)),
        None => Err(DecodeError::Truncated {
            needed: read_header(buf)
                .ok()
                .flatten()
                .map_or(HEADER_LEN, |(_, l)| HEADER_LEN + l),
            have: buf.len(),
        }),
    }
}

/// Encodes a machine's persisted state (what a `PersistState` command carries): a frame of kind
/// "persisted" followed by a CRC-32 of the body, so a torn write is detected on restore.
pub fn encode_persisted<T: Serialize>(value: &T) -> Result<Vec<u8>, EncodeError> {
    let mut out = encode_kind(KIND_PERSISTED, value)?;
    let crc = crc32(&out[HEADER_LEN..]);
    out.extend_from_slice(&crc.to_be_bytes());
    Ok(out)
}

/// Decodes what [`encode_persisted`] wrote.
pub fn decode_persisted<T: DeserializeOwned>(buf: &[u8]) -> Result<T, DecodeError> {
    let body = persisted_body(buf)?;
    decode_body(body)
}

/// Checks a persisted state's frame (magic, version, kind, length, checksum) without decoding
/// the body, so a driver can reject a torn or corrupt state file before any machine sees it.
pub fn check_persisted(buf: &[u8]) -> Result<(), DecodeError> {
    persisted_body(buf).map(|_| ())
}

/// The body of a persisted-state frame whose framing and checksum are valid.
fn persisted_body(buf: &[u8]) -> Result<&[u8], DecodeError> {
    let Some((kind, len)) = read_header(buf)? else {
        return Err(DecodeError::Truncated {
            needed: HEADER_LEN,
            have: buf.len(),
        });
    };
    if kind != KIND_PERSISTED {
        return Err(DecodeError::UnexpectedKind(kind));
    }
    let total = HEADER_LEN + len + 4;
    if buf.len() < total {
        return Err(DecodeError::Truncated {
            needed: total,
            have: buf.len(),
        });
    }
    if buf.len() > total {
        return Err(DecodeError::TrailingBytes(buf.len() - total));
    }
    let body = &buf[HEADER_LEN..HEADER_LEN + len];
    let stored = [
        buf[total - 4],
        buf[total - 3],
        buf[total - 2],
        buf[total - 1],
    ];
    if crc32(body) != u32::from_be_bytes(stored) {
        return Err(DecodeError::Checksum);
    }
    Ok(body)
}

/// CRC-32 (IEEE), bitwise: persisted states are small and written rarely.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
