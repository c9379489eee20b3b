//! Correlation ids tie a request to its job row, its log lines and its dead-letter row.
//! Callers may bring their own; they must be short printable ASCII so that they are safe
//! to put in logs and headers unchanged.

use thiserror::Error;

pub const MAX_LEN: usize = 128;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CorrelationIdError {
    #[error("correlation id must not be empty")]
    Empty,
    #[error("correlation id is {0} bytes long; the limit is {MAX_LEN}")]
    TooLong(usize),
    #[error("correlation id contains a character that is not printable ASCII at byte {0}")]
    NotTextSafe(usize),
}

pub fn validate(id: &str) -> Result<(), CorrelationIdError> {
    if id.is_empty() {
        return Err(CorrelationIdError::Empty);
    }
    if id.len() > MAX_LEN {
        return Err(CorrelationIdError::TooLong(id.len()));
    }
    // Visible ASCII only: no spaces, control characters or anything a log parser could trip on.
    if let Some(pos) = id.bytes().position(|b| !(0x21..=0x7e).contains(&b)) {
        return Err(CorrelationIdError::NotTextSafe(pos + 1));
    }
    Ok(())
}

/// Formats 16 random bytes as an RFC 4122 version 4 uuid string.
pub fn uuid_v4(mut bytes: [u8; 16]) -> String {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_ids() {
        assert_eq!(validate("req-42"), Ok(()));
        assert_eq!(validate("celery:3f2a/retry=1"), Ok(()));
        assert_eq!(validate(&"x".repeat(MAX_LEN)), Ok(()));
    }

    #[test]
    fn rejects_unsafe_ids() {
        assert_eq!(validate(""), Err(CorrelationIdError::Empty));
        assert_eq!(validate(&"x".repeat(MAX_LEN + 1)), Err(CorrelationIdError::TooLong(MAX_LEN + 1)));
        assert_eq!(validate("a b"), Err(CorrelationIdError::NotTextSafe(2)));
        assert_eq!(validate("a\nb"), Err(CorrelationIdError::NotTextSafe(2)));
        assert_eq!(validate("é"), Err(CorrelationIdError::NotTextSafe(1)));
    }

    #[test]
    fn uuid_v4_shape() {
        let id = uuid_v4([0xff; 16]);
        assert_eq!(id, "ffffffff-ffff-4fff-bfff-ffffffffffff");
        assert_eq!(validate(&id), Ok(()));
    }
}
