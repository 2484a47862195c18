//! Ranges of the numbers a config may hold. Every number that reaches a timer, an
//! allocation or a loop bound is checked here, while it is parsed, so that what the
//! rest of the proxy holds is already safe to use: `1e308` seconds is a 422 naming the
//! field, never a panic in a timer later.

use std::fmt::Display;
use std::time::Duration;

use serde::de::{Deserializer, Error};
use serde::{Deserialize, Serialize, Serializer};

/// The longest duration a config may give in seconds (a week).
pub const MAX_SECONDS: f64 = 7.0 * 24.0 * 3600.0;
/// The most attempts a retry policy may add.
pub const MAX_RETRIES: u32 = 100;
/// Functions an uploaded component may have by default (`admin.plugin_max_functions`).
pub const DEFAULT_MAX_FUNCTIONS: u32 = 50_000;
/// The longest one connect attempt may take, in milliseconds (an hour).
pub const MAX_TIMEOUT_MS: u64 = 3_600_000;
/// The largest endpoint weight.
pub const MAX_WEIGHT: f64 = 10_000.0;
/// The largest message a WebSocket may carry.
pub const MAX_MESSAGE_SIZE: usize = 256 << 20;

/// `value` if it lies in `lo..=hi`, else an error naming the range.
pub fn in_range<T: PartialOrd + Display>(value: T, lo: T, hi: T, unit: &str) -> Result<T, String> {
    if value >= lo && value <= hi {
        Ok(value)
    } else {
        Err(format!("{value} is out of range ({lo}..={hi}{unit})"))
    }
}

/// A non-negative, finite number of seconds of at most [`MAX_SECONDS`], as configs
/// write durations (`track: 5`, `idle_timeout: 0.5`).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Seconds(f64);

/// In the API's OpenAPI document: a number from 0 to [`MAX_SECONDS`].
impl utoipa::PartialSchema for Seconds {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Number)
            .minimum(Some(0.0))
            .maximum(Some(MAX_SECONDS))
            .description(Some("Seconds"))
            .into()
    }
}

impl utoipa::ToSchema for Seconds {}

impl Seconds {
    pub fn new(secs: f64) -> Result<Seconds, String> {
        if !secs.is_finite() {
            return Err(format!("{secs} is not a number of seconds"));
        }
        in_range(secs, 0.0, MAX_SECONDS, " seconds").map(Seconds)
    }

    /// Whole seconds (a `u16` is always in range).
    pub const fn whole(secs: u16) -> Seconds {
        Seconds(secs as f64)
    }

    pub fn get(self) -> f64 {
        self.0
    }

    pub fn duration(self) -> Duration {
        // In range by construction, so this cannot overflow.
        Duration::from_secs_f64(self.0)
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Seconds::new(f64::deserialize(d)?).map_err(D::Error::custom)
    }
}

impl Serialize for Seconds {
    /// Whole seconds come back as integers, as they were most likely written.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.fract() == 0.0 {
            s.serialize_u64(self.0 as u64)
        } else {
            s.serialize_f64(self.0)
        }
    }
}

/// `retry.num_retries`: at most [`MAX_RETRIES`].
pub fn retries<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    in_range(u32::deserialize(d)?, 0, MAX_RETRIES, "").map_err(D::Error::custom)
}

/// `retry.timeout`: milliseconds, at least 1 and at most [`MAX_TIMEOUT_MS`].
pub fn timeout_ms<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    in_range(u64::deserialize(d)?, 1, MAX_TIMEOUT_MS, " ms").map_err(D::Error::custom)
}

/// An endpoint weight: finite, `0..=MAX_WEIGHT`.
pub fn weight(w: f64) -> Result<f64, String> {
    if !w.is_finite() {
        return Err(format!("{w} is not a weight"));
    }
    in_range(w, 0.0, MAX_WEIGHT, "")
}

/// `max_message_size`: `1..=MAX_MESSAGE_SIZE` bytes.
pub fn message_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    match Option::<usize>::deserialize(d)? {
        None => Ok(None),
        Some(n) => in_range(n, 1, MAX_MESSAGE_SIZE, " bytes")
            .map(Some)
            .map_err(D::Error::custom),
    }
}

/// `admin.http.max_connections`: `1..=65536`.
pub fn connections<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    in_range(u32::deserialize(d)?, 1, 65536, "").map_err(D::Error::custom)
}

/// `admin.http.max_body`: 1 KiB to 256 MiB.
pub fn body_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    in_range(u64::deserialize(d)?, 1 << 10, 256 << 20, " bytes").map_err(D::Error::custom)
}

/// `admin.fd_reserve`: 16 to 4096 descriptors.
pub fn fd_reserve<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    in_range(u32::deserialize(d)?, 16, 4096, "").map_err(D::Error::custom)
}

/// `admin.plugin_memory_mb`: 1 MiB to 1 TiB.
pub fn plugin_memory_mb<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    in_range(u64::deserialize(d)?, 1, 1 << 20, " MiB")
        .map(Some)
        .map_err(D::Error::custom)
}

/// `admin.plugin_max_functions`: 1 to 10 million.
pub fn max_functions<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    in_range(u32::deserialize(d)?, 1, 10_000_000, "").map_err(D::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_bounded_and_read_back_as_written() {
        assert!(Seconds::new(1e308).unwrap_err().contains("out of range"));
        assert!(Seconds::new(-1.0).is_err());
        assert!(Seconds::new(f64::NAN).is_err());
        assert_eq!(
            Seconds::new(0.25).unwrap().duration(),
            Duration::from_millis(250)
        );
        let s: Seconds = serde_json::from_str("5").unwrap();
        assert_eq!(serde_json::to_string(&s).unwrap(), "5");
        assert_eq!(serde_json::to_string(&Seconds(0.5)).unwrap(), "0.5");
    }

    #[test]
    fn ranges_name_the_bounds() {
        assert_eq!(weight(2.0), Ok(2.0));
        assert!(weight(1e9).unwrap_err().contains("0..=10000"));
        assert!(weight(f64::INFINITY).is_err());
    }
}
